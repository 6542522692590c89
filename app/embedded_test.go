package app

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/internal/freeport"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/arbiter-cqrs/arbiter/processor"
)

func freePort(t *testing.T) string {
	t.Helper()
	port, err := freeport.Pick()
	if err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(port)
}

// TestEmbeddedWorker is the README's first command: a worker with no servers
// given runs on an embedded Kafka and Redis, says where to connect, applies
// commands, and after a restart still knows the versions.
func TestEmbeddedWorker(t *testing.T) {
	kafkaAddr := "127.0.0.1:" + freePort(t)
	redisAddr := "127.0.0.1:" + freePort(t)
	dataDir := t.TempDir()
	args := []string{"worker", "--embedded-kafka-addr", kafkaAddr, "--embedded-redis-addr", redisAddr, "--data-dir", dataDir, "--log-format", "json", "--http-addr", "127.0.0.1:0"}
	env := []string{"ARBITER_BROKERS=", "ARBITER_REDIS_URL="}
	brokers := []string{kafkaAddr}
	topics := testkit.Topics{Commands: "commands", Events: "events", Conflicts: "conflicts"}

	start := func() *testkit.Process {
		worker := testkit.StartProcess(t, "embedded worker", arbiterBinary, env, args...)
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(worker.Output(), "worker starting") {
			if time.Now().After(deadline) || worker.Exited() {
				t.Fatalf("the embedded worker did not start:\n%s", worker.Output())
			}
			time.Sleep(100 * time.Millisecond)
		}
		return worker
	}
	stop := func(worker *testkit.Process) {
		worker.Signal(syscall.SIGINT)
		if code := worker.Wait(30 * time.Second); code != 0 {
			t.Fatalf("the embedded worker exited with %d on SIGINT, want 0:\n%s", code, worker.Output())
		}
	}
	send := func(cmd commands.Command) {
		testkit.Produce(t, brokers, testkit.CommandRecord(t, topics.Commands, cmd))
	}
	appendOne := func(id string, expectedVersion int64) commands.Command {
		return commands.Command{ID: id, AggregateID: "stream-1", Type: processor.AppendEventsType, ExpectedVersion: expectedVersion,
			Payload: []byte(`{"events":[{"type":"Noted"}]}`)}
	}

	worker := start()
	for _, want := range []string{"EMBEDDED", "Kafka brokers: " + kafkaAddr, "redis://" + redisAddr, "kcat -P -b " + kafkaAddr} {
		if !strings.Contains(worker.Output(), want) {
			t.Fatalf("the embedded worker's banner does not say %q:\n%s", want, worker.Output())
		}
	}
	out := testkit.Collect(t, brokers, topics)
	send(appendOne("e-1", 0))
	if got := out.WaitFor(30*time.Second, "e-1")["e-1"]; len(got.Events) != 1 || got.Events[0].Version != 1 {
		t.Fatalf("first command: want version 1, got %+v", got)
	}
	stop(worker)

	worker = start()
	send(appendOne("e-2", 0)) // stale: version 1 survived the restart
	send(appendOne("e-3", 1))
	got := out.WaitFor(30*time.Second, "e-2", "e-3")
	if o := got["e-2"]; len(o.Conflicts) != 1 || *o.Conflicts[0].ActualVersion != 1 {
		t.Fatalf("after a restart the embedded worker forgot version 1: %+v", o)
	}
	if o := got["e-3"]; len(o.Events) != 1 || o.Events[0].Version != 2 {
		t.Fatalf("after a restart: want version 2, got %+v", o)
	}
	stop(worker)
}
