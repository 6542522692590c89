package processor

import (
	"encoding/json"
	"fmt"

	"github.com/arbiter-cqrs/arbiter/events"
)

// recoverAs turns a panic of user code (a handler, Evolve, a state's or
// payload's JSON methods) into an error carrying the panic's message, so that
// the command is refused instead of the worker crashing and crash-looping on
// the same batch. Call it deferred: defer recoverAs(&err, "…").
func recoverAs(err *error, format string, args ...any) {
	if r := recover(); r != nil {
		*err = Reject("%s panicked: %v", fmt.Sprintf(format, args...), r)
	}
}

// encodePayload encodes a draft's payload, whose MarshalJSON is user code.
func encodePayload(draft events.Draft) (payload json.RawMessage, err error) {
	defer recoverAs(&err, "encoding the payload of event %s", draft.Type)
	return draft.EncodePayload()
}
