package processor

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
)

func TestAppendEventJSONMatchesMarshal(t *testing.T) {
	base := events.Event{
		ID: "prod-1@7", AggregateID: "prod-1", AggregateType: "Product", Type: "PriceReduced", Version: 7,
		CommandID: "c-9", Payload: json.RawMessage(`{"oldPrice":25,"newPrice":22.5}`),
		Metadata:  map[string]string{"user": "alice", "correlationId": "x-9", "Ünï": "cödé"},
		Timestamp: time.Date(2026, 11, 25, 17, 30, 0, 123_000_000, time.UTC),
	}
	tests := []struct {
		name   string
		change func(e *events.Event)
		fast   bool
	}{
		{"typical", func(e *events.Event) {}, true},
		{"untyped aggregate, no payload, no metadata", func(e *events.Event) { e.AggregateType, e.Payload, e.Metadata = "", nil, nil }, true},
		{"rebased", func(e *events.Event) { e.RebasedFrom = events.Version(5) }, true},
		{"whole second", func(e *events.Event) { e.Timestamp = e.Timestamp.Truncate(time.Second) }, true},
		{"other zone", func(e *events.Event) { e.Timestamp = e.Timestamp.In(time.FixedZone("x", 5*3600+30*60)) }, true},
		{"payload string with spaces and escapes", func(e *events.Event) { e.Payload = json.RawMessage(`["a b","\"q\"","\u00e9"]`) }, true},
		{"payload scalar", func(e *events.Event) { e.Payload = json.RawMessage(`42`) }, true},
		{"payload with whitespace", func(e *events.Event) { e.Payload = json.RawMessage(`{ "a": 1 }`) }, false},
		{"payload with html", func(e *events.Event) { e.Payload = json.RawMessage(`{"a":"<b>"}`) }, false},
		{"payload with line separator", func(e *events.Event) { e.Payload = json.RawMessage("{\"a\":\"\u2028\"}") }, false},
		{"quote in type", func(e *events.Event) { e.Type = `Price"Reduced` }, false},
		{"ampersand in metadata", func(e *events.Event) { e.Metadata = map[string]string{"a": "b&c"} }, false},
		{"newline in metadata key", func(e *events.Event) { e.Metadata = map[string]string{"a\n": "b"} }, false},
		{"invalid UTF-8 in command ID", func(e *events.Event) { e.CommandID = "c\xff" }, false},
		{"year 10000", func(e *events.Event) { e.Timestamp = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := base
			tt.change(&e)
			got, fast := appendEventJSON(nil, &e)
			if fast != tt.fast {
				t.Fatalf("fast path: %v, want %v", fast, tt.fast)
			}
			checkEventJSON(t, &e)
			if !fast && len(got) != 0 {
				t.Errorf("the refused fast path appended %q", got)
			}
		})
	}
}

func checkEventJSON(t *testing.T, e *events.Event) {
	t.Helper()
	got, ok := appendEventJSON([]byte("prefix"), e)
	if !ok {
		return
	}
	want, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("the fast path encoded an event json.Marshal refuses (%v): %#v", err, e)
	}
	if !bytes.Equal(got[len("prefix"):], want) {
		t.Fatalf("the fast path differs from json.Marshal:\n got %s\nwant %s", got[len("prefix"):], want)
	}
}

// FuzzAppendEventJSON checks the fast encoder against json.Marshal.
func FuzzAppendEventJSON(f *testing.F) {
	f.Add("prod-1", "Product", "PriceReduced", "c-9", []byte(`{"oldPrice":25,"newPrice":22.5}`), "user", "alice", int64(7), int64(1764091800123000000))
	f.Add("a\u2028", "", "T", "c", []byte(`"x y"`), "k\u00e9", "<", int64(-1), int64(0))
	f.Fuzz(func(t *testing.T, aggregateID, aggregateType, eventType, commandID string, payload []byte, metaKey, metaValue string, version, unixNano int64) {
		if len(payload) > 0 && !json.Valid(payload) {
			return
		}
		e := events.Event{
			ID: events.EventID(aggregateID, version), AggregateID: aggregateID, AggregateType: aggregateType, Type: eventType,
			Version: version, CommandID: commandID, Payload: payload, Metadata: map[string]string{metaKey: metaValue},
			Timestamp: time.Unix(0, unixNano).UTC(),
		}
		checkEventJSON(t, &e)
		e.RebasedFrom = events.Version(version - 2)
		checkEventJSON(t, &e)
	})
}
