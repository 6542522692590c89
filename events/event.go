// Package events holds the records Arbiter publishes: the Event envelope on
// the events topic and the Conflict record on the conflicts topic, plus the
// helpers downstream services use to read them.
package events

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/cockroachdb/errors"
)

// Record header names set on every published record, so consumers can route
// and correlate without decoding the value.
const (
	// HeaderKind is "event" or "conflict".
	HeaderKind = "arbiter-kind"
	// HeaderCommandID carries the ID of the command the record answers.
	HeaderCommandID = "arbiter-command-id"
)

// W3C trace context headers (https://www.w3.org/TR/trace-context/). A
// command record that carries them (commands.Producer injects the caller's
// span context) passes them on, unchanged, to its event and conflict
// records, so one trace follows a request through its command to its
// events.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// CloudEvents headers of the Kafka protocol binding, binary content mode
// (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/kafka-protocol-binding.md):
// every event and conflict record carries them, and its value is the
// CloudEvent's data, unchanged. They are derived from the record's value
// alone, so a record re-published after an aborted transaction has the same
// headers byte for byte.
const (
	// HeaderCESpecVersion is "1.0".
	HeaderCESpecVersion = "ce_specversion"
	// HeaderCEID is the event's ID ("<aggregateId>@<version>"), or for a
	// conflict "conflict:<topic>/<partition>/<offset>" of the command
	// record it answers.
	HeaderCEID = "ce_id"
	// HeaderCESource is the worker group's source, by default
	// "/arbiter/<group>" (processor.Config.CloudEventsSource).
	HeaderCESource = "ce_source"
	// HeaderCEType is the event's type, or for a conflict
	// "arbiter.conflict.<reason>".
	HeaderCEType = "ce_type"
	// HeaderCESubject is the aggregate ID (the record key).
	HeaderCESubject = "ce_subject"
	// HeaderCETime is the record's timestamp field, RFC 3339.
	HeaderCETime = "ce_time"
	// HeaderContentType is "application/json".
	HeaderContentType = "content-type"
)

// CloudEventsConflictTypePrefix starts the CloudEvents type of a conflict
// record; its reason follows.
const CloudEventsConflictTypePrefix = "arbiter.conflict."

// Header values of HeaderKind.
const (
	KindEvent    = "event"
	KindConflict = "conflict"
)

// Event is the envelope of one event on the events topic. Its record key is
// the aggregate ID. Versions per aggregate are contiguous, starting at 1.
type Event struct {
	// ID identifies the event: "<aggregateId>@<version>", unique because
	// an aggregate's versions never repeat.
	ID string `json:"id"`
	// AggregateID names the aggregate the event belongs to.
	AggregateID string `json:"aggregateId"`
	// AggregateType names the aggregate's type (e.g. "Product"); empty for
	// events appended to an untyped aggregate with AppendEvents.
	AggregateType string `json:"aggregateType,omitempty"`
	// Type names the event type.
	Type string `json:"type"`
	// Version is the aggregate's version once this event is applied.
	Version int64 `json:"version"`
	// CommandID is the ID of the command that produced the event.
	CommandID string `json:"commandId"`
	// RebasedFrom is set on the events of a command that arrived stale,
	// opted in with onConflict "rebase", and was decided again on the
	// current state because none of the events written after its
	// expectedVersion was of a type its handler depends on: it is that
	// expectedVersion. The first event's version is then above
	// RebasedFrom + 1.
	RebasedFrom *int64 `json:"rebasedFrom,omitempty"`
	// Payload is the event's data.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Metadata is carried over from the command.
	Metadata map[string]string `json:"metadata,omitempty"`
	// Timestamp is when the command was decided, in UTC.
	Timestamp time.Time `json:"timestamp"`
}

// EventID returns the ID of an aggregate's event at a version.
func EventID(aggregateID string, version int64) string {
	return aggregateID + "@" + strconv.FormatInt(version, 10)
}

// Draft is an event a handler decides on, before it has a version.
type Draft struct {
	// Type names the event type. Required.
	Type string
	// Payload is encoded as JSON; a json.RawMessage or []byte holding JSON
	// is used as it is.
	Payload any
}

// EncodePayload returns the draft's payload as JSON.
func (d Draft) EncodePayload() (json.RawMessage, error) {
	switch p := d.Payload.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		if !json.Valid(p) {
			return nil, errors.Newf("payload of event %s is not valid JSON", d.Type)
		}
		return p, nil
	case []byte:
		if !json.Valid(p) {
			return nil, errors.Newf("payload of event %s is not valid JSON", d.Type)
		}
		return json.RawMessage(p), nil
	default:
		raw, err := json.Marshal(p)
		if err != nil {
			return nil, errors.Wrapf(err, "encode payload of event %s", d.Type)
		}
		return raw, nil
	}
}

// DecodePayload decodes an event's payload into a T.
func DecodePayload[T any](e Event) (T, error) {
	var payload T
	if len(e.Payload) == 0 {
		return payload, nil
	}
	if err := json.Unmarshal(e.Payload, &payload); err != nil {
		return payload, errors.Wrapf(err, "decode payload of event %s (%s) of aggregate %s", e.ID, e.Type, e.AggregateID)
	}
	return payload, nil
}

// Reason says why a command was not applied.
type Reason string

// The reasons a Conflict record carries.
const (
	// ReasonVersionConflict: the aggregate was not at the expected version.
	ReasonVersionConflict Reason = "version_conflict"
	// ReasonRejected: the handler refused the command (a domain rule), or
	// the command used a relaxed expectedVersion its handler does not allow.
	ReasonRejected Reason = "rejected"
	// ReasonInvalid: the record could not be read as a command.
	ReasonInvalid Reason = "invalid"
	// ReasonUnknownType: no handler is registered for the command type.
	ReasonUnknownType Reason = "unknown_type"
	// ReasonDuplicate: another record with the same command ID was already
	// decided.
	ReasonDuplicate Reason = "duplicate"
)

// Source locates the command record a conflict answers.
type Source struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Conflict is the record on the conflicts topic for a command that was not
// applied. Its record key is the aggregate ID (or the command record's key
// when no aggregate ID could be read).
type Conflict struct {
	// CommandID is the command's ID; empty when it could not be read.
	CommandID string `json:"commandId,omitempty"`
	// AggregateID is the aggregate's ID, or the record key.
	AggregateID string `json:"aggregateId"`
	// Reason says why the command was not applied.
	Reason Reason `json:"reason"`
	// ExpectedVersion is the command's expectedVersion, when it had one.
	ExpectedVersion *int64 `json:"expectedVersion,omitempty"`
	// ActualVersion is the aggregate's version when the command was
	// decided; absent for invalid and unknown_type.
	ActualVersion *int64 `json:"actualVersion,omitempty"`
	// Message says what happened, for people.
	Message string `json:"message"`
	// EventsSince is set on version conflicts: the events written after
	// the command's expectedVersion, up to ActualVersion, in version order
	// — the last ones of them when there are more than the worker keeps
	// (see EventsSinceCount).
	EventsSince []EventSummary `json:"eventsSince,omitempty"`
	// EventsSinceCount is set on version conflicts whose expectedVersion
	// N >= 0 is below ActualVersion: how many events were written after
	// it (ActualVersion - N). EventsSince holds fewer when the worker no
	// longer keeps the older ones.
	EventsSinceCount int64 `json:"eventsSinceCount,omitempty"`
	// OriginalReason is set on duplicates: what the first record with this
	// command ID became ("applied" or a Reason).
	OriginalReason string `json:"originalReason,omitempty"`
	// OriginalVersion is set on duplicates: the aggregate version the
	// original outcome left (the last event's version when it was applied).
	OriginalVersion *int64 `json:"originalVersion,omitempty"`
	// Command is the original command record's value when it is JSON.
	Command json.RawMessage `json:"command,omitempty"`
	// RawValue is the original record's value, base64, when it is not JSON.
	RawValue []byte `json:"rawValue,omitempty"`
	// Cut lists the fields above that hold a shortened copy of an
	// over-long or non-UTF-8 original (see CutString), with what identifies
	// the original.
	Cut []Cut `json:"cut,omitempty"`
	// Source locates the command record.
	Source Source `json:"source"`
	// Timestamp is when the command was decided, in UTC.
	Timestamp time.Time `json:"timestamp"`
}

// EventsSinceComplete reports whether EventsSince holds every event written
// after the command's expectedVersion, each with its payload (an event
// without a payload counts): enough to advance a state read at that version
// to ActualVersion without reading the aggregate again.
func (c Conflict) EventsSinceComplete() bool {
	if c.EventsSinceCount <= 0 || int64(len(c.EventsSince)) != c.EventsSinceCount {
		return false
	}
	for _, e := range c.EventsSince {
		if e.PayloadOmitted {
			return false
		}
	}
	return true
}

// EventSummary is one event of a version conflict's EventsSince.
type EventSummary struct {
	// Version is the event's version.
	Version int64 `json:"version"`
	// Type names the event type.
	Type string `json:"type"`
	// ID is the event's ID, "<aggregateId>@<version>".
	ID string `json:"id"`
	// Payload is the event's payload when it is small (the worker's limit,
	// 128 bytes by default); read the event from the events topic for a
	// larger one.
	Payload json.RawMessage `json:"payload,omitempty"`
	// PayloadOmitted is set when the event has a payload over that limit.
	PayloadOmitted bool `json:"payloadOmitted,omitempty"`
}

// OriginalApplied is the OriginalReason of a duplicate whose first record was
// applied.
const OriginalApplied = "applied"

// Version returns a pointer to v, for the optional version fields.
func Version(v int64) *int64 { return &v }
