package app

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Tests of commands produced by clients that are not Arbiter's: kcat and
// Python's confluent-kafka, both on librdkafka, through the scripts in
// examples/. scripts/stack.sh installs kcat (apt) and confluent-kafka (pip,
// into a virtualenv it exports as ARBITER_TEST_PYTHON).

// needTool fails the test under CI=true and skips it otherwise.
func needTool(t *testing.T, format string, args ...any) {
	t.Helper()
	message := fmt.Sprintf(format, args...) + "; scripts/stack.sh up installs it"
	if testenv.InCI() {
		t.Fatal(message)
	}
	t.Skip(message)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..")
}

// foreignCommands returns JSONL lines for a product per aggregate (created
// at version 0), then a stale ChangePrice and a valid IncreaseStock for the
// first one.
func foreignCommands(prefix string, aggregates int) (lines []string, keys []string) {
	for a := range aggregates {
		key := fmt.Sprintf("%s-prod-%d", prefix, a)
		keys = append(keys, key)
		lines = append(lines, fmt.Sprintf(`{"id":"%s-create-%d","aggregateId":"%s","type":"CreateProduct","expectedVersion":0,"payload":{"name":"Cup %d","price":10,"stock":5}}`, prefix, a, key, a))
	}
	lines = append(lines,
		fmt.Sprintf(`{"id":"%s-stale","aggregateId":"%s","type":"ChangePrice","expectedVersion":0,"payload":{"newPrice":9}}`, prefix, keys[0]),
		fmt.Sprintf(`{"id":"%s-stock","aggregateId":"%s","type":"IncreaseStock","expectedVersion":1,"payload":{"newStock":50}}`, prefix, keys[0]),
	)
	return lines, keys
}

// checkPartitions checks that the commands librdkafka produced (with
// partitioner=murmur2_random) sit on the partitions franz-go's default
// partitioner (the Java client's murmur2) picks for their keys.
func (s *cliStack) checkPartitions(t *testing.T, keys []string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	consumer, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...), kgo.ConsumeTopics(s.topics.Commands), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	got := make(map[string]int32)
	for len(got) < len(keys) && ctx.Err() == nil {
		consumer.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got[string(r.Key)] = r.Partition })
	}
	scratch := s.topics.Commands + "-scratch"
	testenv.CreateTopics(t, s.brokers, partitions, scratch)
	producer, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...), kgo.DefaultProduceTopic(scratch))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	for _, key := range keys {
		results := producer.ProduceSync(ctx, &kgo.Record{Key: []byte(key), Value: []byte("{}")})
		record, err := results.First()
		if err != nil {
			t.Fatal(err)
		}
		if got[key] != record.Partition {
			t.Fatalf("key %s: librdkafka with partitioner=murmur2_random wrote partition %d, franz-go picks %d: the partitioners differ", key, got[key], record.Partition)
		}
	}
}

func TestCommandsFromKcat(t *testing.T) {
	if _, err := exec.LookPath("kcat"); err != nil {
		needTool(t, "kcat is not installed")
	}
	const partitions = 6
	s := newCLIStack(t, partitions)
	s.startWorker()
	root := repoRoot(t)
	env := append(os.Environ(),
		"ARBITER_BROKERS="+strings.Join(s.brokers, ","),
		"ARBITER_COMMANDS_TOPIC="+s.topics.Commands,
		"ARBITER_EVENTS_TOPIC="+s.topics.Events,
		"ARBITER_CONFLICTS_TOPIC="+s.topics.Conflicts,
	)
	lines, keys := foreignCommands("kcat", 12)
	send := exec.Command(filepath.Join(root, "examples/kcat/send.sh"))
	send.Env, send.Stdin = env, strings.NewReader(strings.Join(lines, "\n")+"\n")
	if out, err := send.CombinedOutput(); err != nil {
		t.Fatalf("examples/kcat/send.sh: %v\n%s", err, out)
	}
	outcome := func(commandID string) (string, int) {
		t.Helper()
		cmd := exec.Command(filepath.Join(root, "examples/kcat/outcome.sh"), commandID, "60")
		cmd.Env = env
		out, err := cmd.Output()
		code := 0
		if exit, ok := err.(*exec.ExitError); ok {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	for _, tt := range []struct {
		commandID string
		wantCode  int
		want      string
	}{
		{"kcat-create-0", 0, `"version":1,"commandId":"kcat-create-0"`},
		{"kcat-create-11", 0, `"type":"ProductCreated","version":1`},
		{"kcat-stale", 5, `"reason":"version_conflict","expectedVersion":0,"actualVersion":1`},
		{"kcat-stock", 0, `"type":"StockIncreased","version":2`},
	} {
		out, code := outcome(tt.commandID)
		if code != tt.wantCode || !strings.Contains(out, tt.want) {
			t.Fatalf("examples/kcat/outcome.sh %s: exit %d, output %q; want exit %d with %s", tt.commandID, code, out, tt.wantCode, tt.want)
		}
	}
	if r := s.arbiter(time.Minute, nil, "tail", "events", "--from-start", "--limit", "13"); r.code != 0 || strings.Count(r.stdout, "\n") != 13 {
		t.Fatalf("tail events: exit %d, %d lines; want the 13 events of the kcat commands", r.code, strings.Count(r.stdout, "\n"))
	}
	s.checkPartitions(t, keys, partitions)
}

func TestCommandsFromPythonConfluentKafka(t *testing.T) {
	python := os.Getenv("ARBITER_TEST_PYTHON")
	if python == "" {
		python = "python3"
	}
	if out, err := exec.Command(python, "-c", "import confluent_kafka").CombinedOutput(); err != nil {
		needTool(t, "%s cannot import confluent_kafka (ARBITER_TEST_PYTHON=%q): %v: %s", python, os.Getenv("ARBITER_TEST_PYTHON"), err, out)
	}
	const partitions = 6
	s := newCLIStack(t, partitions)
	s.startWorker()
	lines, keys := foreignCommands("py", 12)
	// The first command again, with its ID: a resend reports the original
	// outcome.
	lines = append(lines, lines[0], "not json")
	cmd := exec.Command(python, filepath.Join(repoRoot(t), "examples/python/producer.py"),
		"--brokers", strings.Join(s.brokers, ","),
		"--commands-topic", s.topics.Commands, "--events-topic", s.topics.Events, "--conflicts-topic", s.topics.Conflicts,
		"--wait", "--wait-timeout", "60")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	exit, _ := err.(*exec.ExitError)
	if exit == nil || exit.ExitCode() != 1 || !strings.Contains(stderr.String(), "line 16: not a command") {
		t.Fatalf("producer.py: %v; want exit 1 for the bad line 16; stderr:\n%s\nstdout:\n%s", err, stderr.String(), stdout.String())
	}
	out := stdout.String()
	// py-create-0's line is checked below: the original's event and the
	// resend's duplicate record are on two topics, and either may be read
	// first.
	for _, want := range []string{
		"py-create-11 py-prod-11: applied at version 1\n",
		"py-stale py-prod-0: version_conflict: expected version 0, but found 1\n",
		"py-stock py-prod-0: applied at version 2\n",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("producer.py printed:\n%s\nmissing %q", out, want)
		}
	}
	// The resend and the original share a command ID: one of the two lines
	// reports the resend.
	if strings.Count(out, "py-create-0 py-prod-0: applied at version 1") != 1 {
		t.Fatalf("producer.py printed:\n%s\nwant one outcome line for py-create-0 (the resend shares its waiter)", out)
	}
	if r := s.arbiter(time.Minute, nil, "tail", "conflicts", "--from-start", "--limit", "2"); r.code != 0 ||
		!strings.Contains(r.stdout, "command py-stale version_conflict") || !strings.Contains(r.stdout, "command py-create-0 duplicate") {
		t.Fatalf("tail conflicts: exit %d:\n%s\nwant the stale command's conflict and the resend's duplicate", r.code, r.stdout)
	}
	s.checkPartitions(t, keys, partitions)
}
