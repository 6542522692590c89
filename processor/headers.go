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

// cloudEventFields are the fields of an event or conflict value that its
// CloudEvents headers come from.
type cloudEventFields struct {
	ID        string        `json:"id"`
	Type      string        `json:"type"`
	Reason    string        `json:"reason"`
	Source    events.Source `json:"source"`
	Timestamp string        `json:"timestamp"`
}

// appendCloudEventHeaders appends the CloudEvents binary-mode headers of an
// outcome record (see events.HeaderCEID and the others). They are computed
// from the recorded value, the record key and the configured source only, so
// the replay of a recorded outcome gets the very headers its first
// publication had.
func appendCloudEventHeaders(headers []kgo.RecordHeader, source []byte, key []byte, rec versionstore.OutcomeRecord) []kgo.RecordHeader {
	var fields cloudEventFields
	// The value is Arbiter's own encoding: it decodes. Should it not, the
	// record still goes out, with what could be read.
	_ = json.Unmarshal(rec.Value, &fields)
	id, ceType := fields.ID, fields.Type
	if rec.Kind == versionstore.KindConflict {
		id = ceConflictIDTag + fields.Source.Topic + "/" + strconv.FormatInt(int64(fields.Source.Partition), 10) + "/" + strconv.FormatInt(fields.Source.Offset, 10)
		ceType = events.CloudEventsConflictTypePrefix + fields.Reason
	}
	return append(headers,
		kgo.RecordHeader{Key: events.HeaderCESpecVersion, Value: ceSpecVersion},
		kgo.RecordHeader{Key: events.HeaderCEID, Value: []byte(id)},
		kgo.RecordHeader{Key: events.HeaderCESource, Value: source},
		kgo.RecordHeader{Key: events.HeaderCEType, Value: []byte(ceType)},
		kgo.RecordHeader{Key: events.HeaderCESubject, Value: key},
		kgo.RecordHeader{Key: events.HeaderCETime, Value: []byte(fields.Timestamp)},
		kgo.RecordHeader{Key: events.HeaderContentType, Value: ceContentType},
	)
}
