package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/cockroachdb/errors"
)

// thermostatMain is the whole worker binary of a user with an aggregate type
// of their own: a Thermostat whose target temperature stays within 5..30.
const thermostatMain = `package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/arbiter-cqrs/arbiter/app"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/processor"
)

type State struct {
	Target  int ` + "`json:\"target\"`" + `
	Changes int ` + "`json:\"changes\"`" + `
}

type SetTarget struct {
	Target int ` + "`json:\"target\"`" + `
}

type TargetSet struct {
	From int ` + "`json:\"from\"`" + `
	To   int ` + "`json:\"to\"`" + `
}

var Thermostat = processor.AggregateType[State]{Name: "Thermostat", Evolve: func(state State, event events.Event) (State, error) {
	if event.Type != "TargetSet" {
		return state, nil
	}
	set, err := events.DecodePayload[TargetSet](event)
	if err != nil {
		return state, err
	}
	state.Target, state.Changes = set.To, state.Changes+1
	return state, nil
}}

func main() {
	registry := processor.NewRegistry()
	processor.MustRegister(registry, Thermostat, "SetTarget", func(_ context.Context, p processor.DecideParams[State, SetTarget]) ([]events.Draft, error) {
		if p.Payload.Target < 5 || p.Payload.Target > 30 {
			return nil, processor.Reject("target %d is outside 5..30", p.Payload.Target)
		}
		return []events.Draft{{Type: "TargetSet", Payload: TargetSet{From: p.State.Target, To: p.Payload.Target}}}, nil
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Main(ctx, registry, os.Args[1:], app.Name("thermostat"))
	stop()
	os.Exit(code)
}
`

// buildOwnBinary builds thermostatMain in a temporary module of its own that
// requires this one through a replace directive, as a user's repository
// would, and returns the binary's path.
func buildOwnBinary(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	dir := t.TempDir()
	goMod := "module example.com/thermostat\n\ngo 1.26.0\n\n" +
		"require github.com/arbiter-cqrs/arbiter v0.0.0\n\n" +
		"replace github.com/arbiter-cqrs/arbiter => " + root + "\n"
	goSum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"go.mod": []byte(goMod), "go.sum": goSum, "main.go": []byte(thermostatMain)} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	binary := filepath.Join(dir, "thermostat")
	build := exec.Command("go", "build", "-mod=mod", "-o", binary, ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a worker binary of one's own in a module of its own: %v\n%s", err, out)
	}
	return binary
}

// TestOwnBinaryDecidesAndRebuildsItsAggregateType is the proof that Arbiter
// is a library: a binary of a module of its own, with an aggregate type the
// arbiter binary does not know, decides that type's commands against the
// real stack; after its Redis keys are gone (the test deletes its key
// prefix: other tests share the Redis), the arbiter binary refuses to
// rebuild the type it has no Evolve for, naming it, and the own binary's
// rebuild-versions restores every version and snapshot.
func TestOwnBinaryDecidesAndRebuildsItsAggregateType(t *testing.T) {
	s := newCLIStack(t, 3)
	s.binary = buildOwnBinary(t)
	worker := s.startWorker()

	producer, err := commands.NewProducer(context.Background(), commands.ProducerConfig{
		Brokers: s.brokers, CommandsTopic: s.topics.Commands, EventsTopic: s.topics.Events, ConflictsTopic: s.topics.Conflicts,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	setTarget := func(id string, expectedVersion int64, target int) (commands.Applied, error) {
		t.Helper()
		return producer.SendAndWait(ctx, commands.Command{ID: id, AggregateID: "room-1", Type: "SetTarget", ExpectedVersion: expectedVersion,
			Payload: json.RawMessage(fmt.Sprintf(`{"target":%d}`, target))})
	}
	for i, target := range []int{20, 22} {
		if applied, err := setTarget(fmt.Sprintf("set-%d", i), int64(i), target); err != nil || applied.Version != int64(i+1) {
			t.Fatalf("SetTarget %d: %+v, %v; want applied at version %d", target, applied, err, i+1)
		}
	}
	if _, err := setTarget("too-hot", 2, 99); !errors.Is(err, commands.ErrRejected) || !strings.Contains(err.Error(), "outside 5..30") {
		t.Fatalf("SetTarget 99: %v; want the handler's rejection", err)
	}
	before := s.arbiter(time.Minute, nil, "get", "room-1")
	if before.code != 0 || !strings.Contains(before.stdout, `"type": "Thermostat"`) || !strings.Contains(before.stdout, `"target": 22`) {
		t.Fatalf("get room-1: exit %d\n%s%s\nwant a Thermostat at target 22", before.code, before.stdout, before.stderr)
	}

	stopWorker(t, worker)
	deleteKeys(t, s.redisURL, s.keyPrefix)
	if gone := s.arbiter(time.Minute, nil, "get", "room-1"); !strings.Contains(gone.stdout, `"version": 0`) {
		t.Fatalf("after deleting the test's keys redis still holds room-1:\n%s%s", gone.stdout, gone.stderr)
	}

	productOnly := *s
	productOnly.binary = arbiterBinary
	refused := productOnly.arbiter(time.Minute, nil, "rebuild-versions")
	if refused.code != exitFailure || !strings.Contains(refused.stderr, `"Thermostat"`) || !strings.Contains(refused.stderr, processor.ErrUnknownAggregateType.Error()) {
		t.Fatalf("arbiter rebuild-versions of Thermostat events: exit %d\n%s%s\nwant exit %d naming the type it cannot evolve", refused.code, refused.stdout, refused.stderr, exitFailure)
	}
	if still := s.arbiter(time.Minute, nil, "get", "room-1"); !strings.Contains(still.stdout, `"version": 0`) {
		t.Fatalf("the refused rebuild wrote room-1:\n%s", still.stdout)
	}

	rebuilt := s.arbiter(time.Minute, nil, "rebuild-versions")
	if rebuilt.code != 0 || !strings.Contains(rebuilt.stdout, "read 2 events of 1 aggregates; rewrote 1 aggregates") {
		t.Fatalf("thermostat rebuild-versions: exit %d\n%s%s", rebuilt.code, rebuilt.stdout, rebuilt.stderr)
	}
	if after := s.arbiter(time.Minute, nil, "get", "room-1"); after.stdout != before.stdout {
		t.Fatalf("rebuilt room-1:\n%s\nwant what redis held before:\n%s", after.stdout, before.stdout)
	}

	s.startWorker()
	if applied, err := setTarget("after-rebuild", 2, 18); err != nil || applied.Version != 3 {
		t.Fatalf("SetTarget after the rebuild: %+v, %v; want applied at version 3", applied, err)
	}
	if _, err := setTarget("stale", 2, 19); !errors.Is(err, commands.ErrVersionConflict) {
		t.Fatalf("a stale SetTarget after the rebuild: %v; want a version conflict", err)
	}
	if got := s.arbiter(time.Minute, nil, "get", "room-1"); !strings.Contains(got.stdout, `"changes": 3`) {
		t.Fatalf("room-1 after the rebuild and one more change:\n%s\nwant 3 changes: the worker decided on the rebuilt state", got.stdout)
	}
}
