package versionstore

import (
	"context"
	"encoding/json"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/cockroachdb/errors"
)

// Reader reads one aggregate's version and state snapshot. *Store satisfies
// it; clients take a Reader so that tests can pass a fake, and so that a
// read model or cache can stand in for Redis in the decide step of a retry.
type Reader interface {
	// Get returns the aggregate at its current version; an aggregate that
	// does not exist is returned at version 0 with no state.
	Get(ctx context.Context, aggregateID string) (Aggregate, error)
}

var (
	_ Reader          = (*Store)(nil)
	_ commands.Reader = Reader(nil)
)

// DecodeState decodes an aggregate's state snapshot into an S. An aggregate
// without a snapshot (version 0, or an untyped aggregate that only received
// AppendEvents) decodes to S's zero value.
func DecodeState[S any](aggregate Aggregate) (S, error) {
	var state S
	if len(aggregate.State) == 0 {
		return state, nil
	}
	if err := json.Unmarshal(aggregate.State, &state); err != nil {
		return state, errors.Wrapf(err, "decode the state snapshot of aggregate %s (type %q) at version %d", aggregate.ID, aggregate.Type, aggregate.Version)
	}
	return state, nil
}

// GetState reads an aggregate's version and decodes its state snapshot into
// an S, for the decide step of a client that is about to send a command:
//
//	version, state, err := versionstore.GetState[product.State](ctx, store, "prod-123")
//
// The command it then sends carries version as its expectedVersion. A
// snapshot is the JSON of the aggregate type's state as the worker's Evolve
// left it; S must decode it (the handler's own state type does).
func GetState[S any](ctx context.Context, reader Reader, aggregateID string) (int64, S, error) {
	aggregate, err := reader.Get(ctx, aggregateID)
	if err != nil {
		var zero S
		return 0, zero, errors.Wrapf(err, "read aggregate %s", aggregateID)
	}
	state, err := DecodeState[S](aggregate)
	return aggregate.Version, state, err
}
