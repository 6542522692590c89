package processor

import (
	"encoding/json"
	"strconv"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/twmb/franz-go/pkg/kgo"
)

// traceHeaders returns the W3C trace context headers of a command record,
// which its outcome records carry on. A replay reads the same command record,
// so it carries the same ones.
//
// Only the first well-formed header of each is carried: the header values
// come from any producer, and a 900 KB "traceparent" copied onto every event
// would make the outcome records too large to publish and stall the
// partition. A traceparent is at most maxTraceparentBytes of the W3C form
// (version-traceid-parentid-flags, lowercase hex), a tracestate at most
// maxTracestateBytes of printable ASCII; anything else is dropped.
func traceHeaders(rec *kgo.Record) []kgo.RecordHeader {
	var found []kgo.RecordHeader
	var parent, state bool
	for _, h := range rec.Headers {
		switch {
		case h.Key == events.HeaderTraceparent && !parent && validTraceparent(h.Value):
			parent = true
			found = append(found, h)
		case h.Key == events.HeaderTracestate && !state && validTracestate(h.Value):
			state = true
			found = append(found, h)
		}
	}
	return found
}

// The largest trace context header values carried from a command record to
// its outcome records. W3C's traceparent version 00 is 55 bytes (later
// versions may append fields); a tracestate holds at most 32 members and
// vendors are asked to keep it within 512 bytes.
const (
	maxTraceparentBytes = 128
	maxTracestateBytes  = 512
)

// validTraceparent reports whether v has the W3C traceparent form:
// 2 hex version, 32 hex trace ID, 16 hex parent ID, 2 hex flags, dashes
// between, and for versions after 00 anything after a further dash.
func validTraceparent(v []byte) bool {
	if len(v) < 55 || len(v) > maxTraceparentBytes || (len(v) > 55 && v[55] != '-') {
		return false
	}
	for i, c := range v[:55] {
		switch i {
		case 2, 35, 52:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return string(v[:2]) != "ff" && (len(v) == 55 || string(v[:2]) != "00")
}

// validTracestate reports whether v is short printable ASCII.
func validTracestate(v []byte) bool {
	if len(v) > maxTracestateBytes {
		return false
	}
	for _, c := range v {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// The CloudEvents header values shared by every record.
var (
	ceSpecVersion   = []byte("1.0")
	ceContentType   = []byte("application/json")
	ceConflictIDTag = "conflict:"
)

// cloudEvent holds the CloudEvents attributes of one outcome record that
// vary from record to record.
type cloudEvent struct {
	id, eventType, time string
}

// cloudEventOf reads the attributes of an outcome record from its value, as
// recorded: for a replay, whose outcome exists only as those bytes. Outcomes
// decided in the batch in hand carry theirs (decided.cloudEvents), computed
// from the same fields the value is encoded from; TestCloudEventsOfDecided
// checks both agree.
func cloudEventOf(rec versionstore.OutcomeRecord) cloudEvent {
	var fields struct {
		ID        string        `json:"id"`
		Type      string        `json:"type"`
		Reason    string        `json:"reason"`
		Source    events.Source `json:"source"`
		Timestamp string        `json:"timestamp"`
	}
	// The value is Arbiter's own encoding: it decodes. Should it not, the
	// record still goes out, with what could be read.
	_ = json.Unmarshal(rec.Value, &fields)
	if rec.Kind == versionstore.KindConflict {
		return conflictCloudEvent(fields.Source, events.Reason(fields.Reason), fields.Timestamp)
	}
	return cloudEvent{id: fields.ID, eventType: fields.Type, time: fields.Timestamp}
}

// conflictCloudEvent returns the attributes of a conflict record.
func conflictCloudEvent(source events.Source, reason events.Reason, timestamp string) cloudEvent {
	return cloudEvent{
		id:        ceConflictIDTag + source.Topic + "/" + strconv.FormatInt(int64(source.Partition), 10) + "/" + strconv.FormatInt(source.Offset, 10),
		eventType: events.CloudEventsConflictTypePrefix + string(reason),
		time:      timestamp,
	}
}

// appendCloudEventHeaders appends the CloudEvents binary-mode headers of an
// outcome record (see events.HeaderCEID and the others). They depend on the
// record's value, its key and the configured source only, so the replay of
// a recorded outcome gets the very headers its first publication had.
func appendCloudEventHeaders(headers []kgo.RecordHeader, source, key []byte, ce cloudEvent) []kgo.RecordHeader {
	return append(headers,
		kgo.RecordHeader{Key: events.HeaderCESpecVersion, Value: ceSpecVersion},
		kgo.RecordHeader{Key: events.HeaderCEID, Value: []byte(ce.id)},
		kgo.RecordHeader{Key: events.HeaderCESource, Value: source},
		kgo.RecordHeader{Key: events.HeaderCEType, Value: []byte(ce.eventType)},
		kgo.RecordHeader{Key: events.HeaderCESubject, Value: key},
		kgo.RecordHeader{Key: events.HeaderCETime, Value: []byte(ce.time)},
		kgo.RecordHeader{Key: events.HeaderContentType, Value: ceContentType},
	)
}
