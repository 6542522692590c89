package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// rounds makes, for each aggregate, commands expecting versions from..to-1
// in order: what a well-behaved sender sends.
func rounds(prefix string, aggregates int, from, to int64) []commands.Command {
	var cmds []commands.Command
	for version := from; version < to; version++ {
		for a := 0; a < aggregates; a++ {
			cmds = append(cmds, commands.Command{
				ID:              fmt.Sprintf("%s-%d-v%d", prefix, a, version),
				AggregateID:     fmt.Sprintf("%s-agg-%d", prefix, a),
				Type:            processor.AppendEventsType,
				ExpectedVersion: version,
				Payload:         []byte(`{"events":[{"type":"Ticked"}]}`),
			})
		}
	}
	return cmds
}

// TestRedisRollback: redis-server goes back in time with its marker intact
// (an older dump.rdb is restored). Commands expecting the true version and
// commands expecting the rolled-back one arrive: nothing may be decided
// against the old data (no version repeat, no wrong conflict); the worker
// says to rebuild, and after the workers stop, rebuild-versions runs and a
// worker starts again, every command has exactly one outcome and
// 'arbiter verify' finds no anomaly.
func TestRedisRollback(t *testing.T) {
	e := newE2E(t, 4)
	redisServer := testenv.StartRedisServer(t, testenv.RedisServerOptions{})
	e.redisURL = redisServer.URL()
	client := redisServer.Client()
	e.store = versionstore.New(client, versionstore.Options{KeyPrefix: e.keyPrefix})
	const aggregates = 20
	prefix := "rb"
	worker := e.startWorker()

	before := rounds(prefix, aggregates, 0, 3)
	e.send(before)
	e.out.WaitFor(90*time.Second, ids(before)...)
	ctx := context.Background()
	if err := client.Save(ctx).Err(); err != nil {
		t.Fatalf("SAVE: %v", err)
	}
	snapshot := filepath.Join(t.TempDir(), "old-dump.rdb")
	copyFile(t, filepath.Join(redisServer.Dir(), "dump.rdb"), snapshot)

	after := rounds(prefix, aggregates, 3, 6)
	e.send(after)
	e.out.WaitFor(90*time.Second, ids(after)...)

	redisServer.Stop()
	copyFile(t, snapshot, filepath.Join(redisServer.Dir(), "dump.rdb"))
	redisServer.Start()
	rolledBack, err := e.store.Get(ctx, prefix+"-agg-0")
	if err != nil {
		t.Fatal(err)
	}
	if rolledBack.Version != 3 {
		t.Fatalf("the restored snapshot holds version %d of %s-agg-0, want 3: the test did not roll redis back", rolledBack.Version, prefix)
	}

	// Senders that read the true version 6, and senders that read the
	// rolled-back version 3.
	var truth []commands.Command
	var stale []commands.Command
	for a := 0; a < aggregates; a++ {
		aggregateID := fmt.Sprintf("%s-agg-%d", prefix, a)
		truth = append(truth, commands.Command{ID: fmt.Sprintf("%s-%d-true", prefix, a), AggregateID: aggregateID,
			Type: processor.AppendEventsType, ExpectedVersion: 6, Payload: []byte(`{"events":[{"type":"Ticked"}]}`)})
		stale = append(stale, commands.Command{ID: fmt.Sprintf("%s-%d-stale", prefix, a), AggregateID: aggregateID,
			Type: processor.AppendEventsType, ExpectedVersion: 3, Payload: []byte(`{"events":[{"type":"Ticked"}]}`)})
	}
	settledBefore := settled(e.out, time.Second)
	e.send(append(append([]commands.Command{}, truth...), stale...))
	waitFor(t, worker, "redis went back in time")
	waitFor(t, worker, "run 'arbiter rebuild-versions'")
	time.Sleep(2 * time.Second) // anything wrongly decided would be published by now
	if got := settled(e.out, 2*time.Second); got != settledBefore {
		snapshot := e.out.Snapshot()
		for _, cmd := range append(truth, stale...) {
			if o, ok := snapshot[cmd.ID]; ok {
				t.Errorf("command %s was decided against the rolled-back redis: %d events, %d conflicts", cmd.ID, len(o.Events), len(o.Conflicts))
			}
		}
		t.Fatalf("outcomes were published after redis went back in time: %d, then %d", settledBefore, got)
	}

	worker.Signal(syscall.SIGTERM)
	if code := worker.Wait(60 * time.Second); code != 0 {
		t.Fatalf("the waiting worker exited with %d after SIGTERM, want 0", code)
	}
	rebuild := testkit.StartProcess(t, "rebuild-versions", arbiterBinary, nil, "rebuild-versions",
		"--brokers", e.brokers[0], "--redis", e.redisURL, "--events-topic", e.topics.Events,
		"--commands-topic", e.topics.Commands, "--group", e.group, "--key-prefix", e.keyPrefix)
	if code := rebuild.Wait(120 * time.Second); code != 0 {
		t.Fatalf("rebuild-versions exited with %d:\n%s", code, rebuild.Output())
	}
	e.startWorker()
	all := append(append(append([]commands.Command{}, before...), after...), truth...)
	e.checkExactlyOnce(append(all, stale...), 120*time.Second)
	got := e.out.Snapshot()
	for _, cmd := range truth {
		if o := got[cmd.ID]; len(o.Events) != 1 || o.Events[0].Version != 7 {
			t.Errorf("command %s expected the true version 6: want it applied at 7, got %+v", cmd.ID, o)
		}
	}
	for _, cmd := range stale {
		if o := got[cmd.ID]; len(o.Conflicts) != 1 || o.Conflicts[0].Reason != events.ReasonVersionConflict || *o.Conflicts[0].ActualVersion < 6 {
			t.Errorf("command %s expected the rolled-back version 3: want a version conflict at version 6 or more, got %+v", cmd.ID, o)
		}
	}

	verifyRun := testkit.StartProcess(t, "verify", arbiterBinary, nil, "verify",
		"--brokers", e.brokers[0], "--redis", e.redisURL, "--key-prefix", e.keyPrefix, "--cross-check=false",
		"--commands-topic", e.topics.Commands, "--events-topic", e.topics.Events, "--conflicts-topic", e.topics.Conflicts)
	if code := verifyRun.Wait(120 * time.Second); code != 0 {
		t.Fatalf("arbiter verify exited with %d:\n%s", code, verifyRun.Output())
	}
	t.Logf("rebuild said: %s; verify said: %s", lastLine(rebuild.Output()), lastLine(verifyRun.Output()))
}

func ids(cmds []commands.Command) []string {
	out := make([]string, len(cmds))
	for i, cmd := range cmds {
		out[i] = cmd.ID
	}
	return out
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTopicsCreateKeepsEveryEvent: 'arbiter topics create' makes the events
// topic with retention.ms=-1 (rebuild-versions reads it from offset 0) and
// the conflicts topic with the configured retention.
func TestTopicsCreateKeepsEveryEvent(t *testing.T) {
	brokers := testenv.Brokers(t)
	name := testenv.Name(t, "")
	topics := []string{name + "-commands", name + "-events", name + "-conflicts"}
	stdout, stderr, code := runMain(t, nil, "topics", "create", "--brokers", brokers[0], "--partitions", "1",
		"--commands-topic", topics[0], "--events-topic", topics[1], "--conflicts-topic", topics[2], "--conflicts-retention", "48h")
	if code != 0 {
		t.Fatalf("topics create exited with %d: %s%s", code, stdout, stderr)
	}
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	t.Cleanup(func() { _, _ = admin.DeleteTopics(context.Background(), topics...) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	configs, err := admin.DescribeTopicConfigs(ctx, topics[1], topics[2])
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{topics[1]: "-1", topics[2]: "172800000"}
	for _, config := range configs {
		for _, entry := range config.Configs {
			if entry.Key == "retention.ms" && (entry.Value == nil || *entry.Value != want[config.Name]) {
				t.Errorf("topic %s has retention.ms=%v, want %s", config.Name, entry.Value, want[config.Name])
			}
		}
	}
}
