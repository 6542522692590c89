package commands

import (
	"fmt"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/cockroachdb/errors"
)

// Errors that SendAndWait and RetryOnConflict return for a command that was
// not applied. Each is matched with errors.Is; errors.As with *ConflictError
// gives the details (the versions, the message, the conflict record). A
// command the worker found invalid matches ErrInvalid, like one that
// Validate refuses before sending.
var (
	// ErrVersionConflict: the aggregate was not at the command's
	// expectedVersion. Read the aggregate again, decide again, and send a new
	// command with a new ID (RetryOnConflict does this).
	ErrVersionConflict = errors.New("version conflict")
	// ErrRejected: the handler refused the command (a domain rule), or the
	// command used a relaxed expectedVersion its handler does not allow.
	// Retrying the same decision is pointless.
	ErrRejected = errors.New("command rejected")
	// ErrUnknownType: no worker handles the command type.
	ErrUnknownType = errors.New("unknown command type")
	// ErrClosed is returned for commands sent or awaited after Close.
	ErrClosed = errors.New("producer closed")
)

// Applied is the outcome of a command that was applied.
type Applied struct {
	// CommandID and AggregateID name the command.
	CommandID   string
	AggregateID string
	// Version is the aggregate's version after the command: its last
	// event's version.
	Version int64
	// Events are the command's events, in version order. Empty when
	// Duplicate is set.
	Events []events.Event
	// Duplicate is set when this send was a resend of a command ID that was
	// already applied: Version is the version the original left, and this
	// record had no effect.
	Duplicate bool
}

// ConflictError is the error for a command that was not applied, built from
// its conflict record. Its Is method makes errors.Is match ErrVersionConflict,
// ErrRejected, ErrInvalid or ErrUnknownType by Reason.
type ConflictError struct {
	// Reason says why the command was not applied; never
	// events.ReasonDuplicate: a duplicate reports its original's reason and
	// sets Duplicate.
	Reason events.Reason
	// CommandID and AggregateID name the command.
	CommandID   string
	AggregateID string
	// ExpectedVersion is the command's expectedVersion.
	ExpectedVersion int64
	// ActualVersion is the aggregate's version when the command was
	// decided (for a duplicate: when the original was); 0 when the record
	// has none (invalid, unknown_type).
	ActualVersion int64
	// Message says what happened, for people.
	Message string
	// Duplicate is set when this send was a resend of a command ID whose
	// original was decided with Reason.
	Duplicate bool
	// EventsSince are, for a version conflict, the events written after
	// ExpectedVersion up to ActualVersion (the last ones of them when there
	// are more than the worker keeps); EventsSinceCount counts all of
	// them. See EventsSinceComplete.
	EventsSince      []events.EventSummary
	EventsSinceCount int64
	// Record is the conflict record as published.
	Record events.Conflict
}

// Error implements error.
func (e *ConflictError) Error() string {
	duplicate := ""
	if e.Duplicate {
		duplicate = " (a resend; the original record got this outcome)"
	}
	return fmt.Sprintf("command %s for aggregate %s not applied: %s: %s%s", e.CommandID, e.AggregateID, e.Reason, e.Message, duplicate)
}

// EventsSinceComplete reports whether EventsSince holds every event since
// ExpectedVersion with its payload: enough to bring a state read at
// ExpectedVersion to ActualVersion without reading the aggregate again.
func (e *ConflictError) EventsSinceComplete() bool { return e.Record.EventsSinceComplete() }

// Is matches the sentinel of the error's Reason.
func (e *ConflictError) Is(target error) bool {
	switch e.Reason {
	case events.ReasonVersionConflict:
		return target == ErrVersionConflict
	case events.ReasonRejected:
		return target == ErrRejected
	case events.ReasonInvalid:
		return target == ErrInvalid
	case events.ReasonUnknownType:
		return target == ErrUnknownType
	}
	return false
}

// OutcomeOfConflict turns a conflict record into the outcome SendAndWait
// reports: a *ConflictError, or, for a duplicate of a command that was
// applied, the Applied outcome of the original (Duplicate set), since a
// resend after a timeout must not look like a failure.
func OutcomeOfConflict(c events.Conflict) (Applied, error) {
	e := &ConflictError{
		Reason:      c.Reason,
		CommandID:   c.CommandID,
		AggregateID: c.AggregateID,
		Message:     c.Message,
		Record:      c,
	}
	if c.Reason == events.ReasonVersionConflict {
		e.EventsSince, e.EventsSinceCount = c.EventsSince, c.EventsSinceCount
	}
	if c.ExpectedVersion != nil {
		e.ExpectedVersion = *c.ExpectedVersion
	}
	if c.ActualVersion != nil {
		e.ActualVersion = *c.ActualVersion
	}
	if c.Reason == events.ReasonDuplicate {
		var originalVersion int64
		if c.OriginalVersion != nil {
			originalVersion = *c.OriginalVersion
		}
		if c.OriginalReason == events.OriginalApplied {
			return Applied{CommandID: c.CommandID, AggregateID: c.AggregateID, Version: originalVersion, Duplicate: true}, nil
		}
		e.Reason = events.Reason(c.OriginalReason)
		e.ActualVersion = originalVersion
		e.Duplicate = true
	}
	return Applied{}, e
}
