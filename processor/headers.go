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
func traceHeaders(rec *kgo.Record) []kgo.RecordHeader {
	var found []kgo.RecordHeader
	for _, h := range rec.Headers {
		if h.Key == events.HeaderTraceparent || h.Key == events.HeaderTracestate {
			found = append(found, h)
		}
	}
	return found
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
