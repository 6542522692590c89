package processor

import (
	"encoding/json"

	"github.com/arbiter-cqrs/arbiter/events"
)

// recoverAs turns a panic of user code (a handler, Evolve, a state's or
// payload's JSON methods) into an error carrying the panic's message, so that
// the command is refused instead of the worker crashing and crash-looping on
// the same batch. Call it deferred: defer recoverAs(&err, "Evolve of",
// name). It takes plain strings and formats only after a panic: it runs for
// every event.
func recoverAs(err *error, action, subject string) {
	if r := recover(); r != nil {
		*err = Reject("%s %s panicked: %v", action, subject, r)
	}
}

// encodePayload encodes a draft's payload, whose MarshalJSON is user code.
func encodePayload(draft events.Draft) (payload json.RawMessage, err error) {
	defer recoverAs(&err, "encoding the payload of event", draft.Type)
	return draft.EncodePayload()
}
