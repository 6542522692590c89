package app

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/testkit"
)

// TestWorkerHTTPListener: --http-addr serves /healthz, /readyz and /metrics
// (and /debug/pprof/ with --pprof); ARBITER_HTTP_ADDR= turns the listener
// off.
func TestWorkerHTTPListener(t *testing.T) {
	e := newE2E(t, 2)
	worker := e.startWorker("ARBITER_PPROF=true")
	waitFor(t, worker, "serving /metrics, /healthz and /readyz")
	match := regexp.MustCompile(`"addr":"([^"]+)"`).FindStringSubmatch(worker.Output()[strings.Index(worker.Output(), "serving /metrics"):])
	if match == nil {
		t.Fatalf("the worker did not log its listen address:\n%s", worker.Output())
	}
	url := "http://" + match[1]
	deadline := time.Now().Add(60 * time.Second)
	for {
		status, body := httpGet(t, url+"/readyz")
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %s", status, body)
		}
		time.Sleep(200 * time.Millisecond) // an endpoint to poll: nothing to await
	}
	for path, want := range map[string]string{
		"/healthz":             "ok",
		"/metrics":             `arbiter_commands_total{outcome="applied"} 0`,
		"/debug/pprof/cmdline": "worker",
	} {
		if status, body := httpGet(t, url+path); status != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, want 200 with %q:\n%.500s", path, status, want, body)
		}
	}
	worker.Signal(syscall.SIGTERM)
	if code := worker.Wait(60 * time.Second); code != 0 {
		t.Fatalf("worker exited with %d after SIGTERM", code)
	}

	off := testkit.StartProcess(t, "worker without listener", arbiterBinary, []string{"ARBITER_HTTP_ADDR="},
		"worker", "--brokers", e.brokers[0], "--redis", e.redisURL,
		"--commands-topic", e.topics.Commands, "--events-topic", e.topics.Events, "--conflicts-topic", e.topics.Conflicts,
		"--group", e.group, "--key-prefix", e.keyPrefix, "--log-format", "json")
	waitFor(t, off, "http listener off")
	off.Signal(syscall.SIGTERM)
	if code := off.Wait(60 * time.Second); code != 0 {
		t.Fatalf("worker exited with %d after SIGTERM", code)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}
