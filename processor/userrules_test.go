package processor_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
)

// bombState is the state of a test aggregate whose user code panics on
// demand: its decoder on a snapshot in mode "bad", its Evolve on an
// Exploded event.
type bombState struct {
	Mode string `json:"mode"`
}

func (b *bombState) UnmarshalJSON(data []byte) error {
	var plain struct{ Mode string }
	if err := json.Unmarshal(data, &plain); err != nil {
		return err
	}
	if plain.Mode == "bad" {
		panic("bomb state decoder panicked")
	}
	b.Mode = plain.Mode
	return nil
}

type bombCommand struct {
	Mode string `json:"mode"`
}

var bombType = processor.AggregateType[bombState]{
	Name: "Bomb",
	Evolve: func(state bombState, e events.Event) (bombState, error) {
		if e.Type == "Exploded" {
			panic("bomb Evolve panicked")
		}
		mode, err := events.DecodePayload[string](e)
		state.Mode = mode
		return state, err
	},
}

func bombRegistry(t *testing.T) *processor.Registry {
	t.Helper()
	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		t.Fatal(err)
	}
	processor.MustRegister(registry, bombType, "Arm", func(_ context.Context, p processor.DecideParams[bombState, bombCommand]) ([]events.Draft, error) {
		if p.Payload.Mode == "explode" {
			return []events.Draft{{Type: "Exploded"}}, nil
		}
		return []events.Draft{{Type: "Armed", Payload: p.Payload.Mode}}, nil
	})
	return registry
}

// TestUserCodeAndTypeRulesOnAWorker drives, through a real worker, the
// commands that used to crash it or bend an aggregate's rules: a panicking
// Evolve and state decoder (the command is rejected, the worker lives, the
// next command is applied), AppendEvents on a Product (refused, the price
// unchanged), a command of another aggregate type on a Product (refused).
func TestUserCodeAndTypeRulesOnAWorker(t *testing.T) {
	s := newStack(t, 2)
	s.startWorker(func(cfg *processor.Config) { cfg.Registry = bombRegistry(t) })
	ctx := context.Background()
	arm := func(id, aggregateID string, version int64, mode string) commands.Command {
		payload, _ := json.Marshal(bombCommand{Mode: mode})
		return commands.Command{ID: id, AggregateID: aggregateID, Type: "Arm", ExpectedVersion: version, Payload: payload}
	}
	if err := s.store.Put(ctx, []versionstore.Aggregate{{ID: "bomb-bad", Version: 3, Type: "Bomb", State: []byte(`{"mode":"bad"}`)}}); err != nil {
		t.Fatal(err)
	}
	s.productAtVersion5("p-typed")
	s.send(
		arm("u-arm", "bomb-1", 0, "ready"),
		arm("u-explode", "bomb-1", 1, "explode"),
		arm("u-after-explode", "bomb-1", 1, "steady"),
		arm("u-bad-snapshot", "bomb-bad", 3, "x"),
		commands.Command{ID: "u-append", AggregateID: "p-typed", Type: processor.AppendEventsType, ExpectedVersion: commands.AnyVersion,
			Payload: []byte(`{"events":[{"type":"PriceReduced","payload":{"newPrice":-5}}]}`)},
		arm("u-other-type", "p-typed", 5, "x"),
		arm("u-after-all", "bomb-2", 0, "fine"),
	)
	got := s.out.WaitFor(60*time.Second, "u-arm", "u-explode", "u-after-explode", "u-bad-snapshot", "u-append", "u-other-type", "u-after-all")

	rejected := func(id, contains string) {
		t.Helper()
		o := got[id]
		if len(o.Events) != 0 || len(o.Conflicts) != 1 || o.Conflicts[0].Reason != events.ReasonRejected || !strings.Contains(o.Conflicts[0].Message, contains) {
			t.Fatalf("%s: want one rejection saying %q, got %+v", id, contains, o)
		}
	}
	applied := func(id string, version int64) {
		t.Helper()
		if o := got[id]; len(o.Events) != 1 || o.Events[0].Version != version {
			t.Fatalf("%s: want one event at version %d, got %+v", id, version, o)
		}
	}
	applied("u-arm", 1)
	rejected("u-explode", "bomb Evolve panicked")
	applied("u-after-explode", 2)
	rejected("u-bad-snapshot", "bomb state decoder panicked")
	rejected("u-append", "may not append events")
	rejected("u-other-type", "is a Product; command type Arm is for Bomb aggregates")
	applied("u-after-all", 1)

	typed, err := s.store.Get(ctx, "p-typed")
	if err != nil {
		t.Fatal(err)
	}
	var state product.State
	if err := json.Unmarshal(typed.State, &state); err != nil {
		t.Fatal(err)
	}
	if typed.Version != 5 || state.Price != 25 {
		t.Fatalf("p-typed must stay at version 5, price 25; redis holds version %d, price %v", typed.Version, state.Price)
	}
}
