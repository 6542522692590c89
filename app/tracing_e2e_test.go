package app

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestWorkerExportsSpans: with OTEL_EXPORTER_OTLP_ENDPOINT set, the worker
// process exports its batch spans over OTLP/HTTP to that endpoint.
func TestWorkerExportsSpans(t *testing.T) {
	spanNames := make(chan string, 1000)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var request collectortrace.ExportTraceServiceRequest
		if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &request) != nil {
			http.Error(w, "not an OTLP/HTTP trace export", http.StatusBadRequest)
			return
		}
		for _, resourceSpans := range request.ResourceSpans {
			for _, scopeSpans := range resourceSpans.ScopeSpans {
				for _, span := range scopeSpans.Spans {
					select {
					case spanNames <- span.Name:
					default:
					}
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(nil)
	}))
	defer collector.Close()

	s := newCLIStack(t, 1)
	s.workers++
	worker := testkit.StartProcess(t, "traced-worker", arbiterBinary,
		[]string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL, "OTEL_BSP_SCHEDULE_DELAY=100"},
		append([]string{"worker", "--group", s.group, "--session-timeout", "6s", "--log-format", "json"}, s.flags()...)...)
	create := s.arbiter(time.Minute, nil, "send", "--id", "c-1", "--aggregate", "prod-1", "--type", product.CreateProductType,
		"--expected-version", "0", "--payload", `{"name":"Cup","price":2,"stock":1}`, "--wait")
	if create.code != 0 {
		t.Fatalf("send --wait: exit %d, stderr:\n%s", create.code, create.stderr)
	}
	want := "process " + s.topics.Commands
	deadline := time.After(time.Minute)
	var seen []string
	for {
		select {
		case name := <-spanNames:
			if name == want {
				stopWorker(t, worker)
				return
			}
			seen = append(seen, name)
		case <-deadline:
			t.Fatalf("no %q span exported within a minute; spans seen: %q", want, seen)
		}
	}
}
