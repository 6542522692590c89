package processor

import (
	"strings"
	"testing"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/cockroachdb/errors"
)

// TestOneSentinelPerMeaning: a handler's refusal and a sender's rejected
// outcome match the same sentinel, whichever package the caller imports.
func TestOneSentinelPerMeaning(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		target error
	}{
		{"Reject is commands.ErrRejected", Reject("no"), commands.ErrRejected},
		{"a rejected outcome is processor.ErrRejected", &commands.ConflictError{Reason: events.ReasonRejected}, ErrRejected},
		{"an unknown_type outcome is commands.ErrUnknownType", &commands.ConflictError{Reason: events.ReasonUnknownType}, commands.ErrUnknownType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, tt.target) {
				t.Fatalf("errors.Is(%v, %v) = false", tt.err, tt.target)
			}
		})
	}
}

// TestEvolveRefusesAnUnknownAggregateType: the events of an aggregate type
// the registry has no Evolve for cannot be rebuilt; leaving the snapshot as it
// is would write empty state.
func TestEvolveRefusesAnUnknownAggregateType(t *testing.T) {
	registry := testRegistry(t)
	event := events.Event{ID: "e-1", AggregateID: "acct-1", AggregateType: "Account", Type: "Opened", Version: 1}

	_, err := registry.Evolve("Account", nil, event)
	if !errors.Is(err, ErrUnknownAggregateType) || !strings.Contains(err.Error(), `"Account"`) {
		t.Fatalf("Evolve of an unregistered type: %v; want ErrUnknownAggregateType naming \"Account\"", err)
	}
	if snapshot, err := registry.Evolve("", []byte(`{"x":1}`), event); err != nil || string(snapshot) != `{"x":1}` {
		t.Fatalf("Evolve of an untyped (AppendEvents) aggregate: %s, %v; want the snapshot unchanged", snapshot, err)
	}
}
