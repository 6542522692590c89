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

func TestAppendConflictJSONMatchesMarshal(t *testing.T) {
	base := events.Conflict{
		CommandID: "c-9", AggregateID: "prod-123", Reason: events.ReasonVersionConflict,
		ExpectedVersion: events.Version(5), ActualVersion: events.Version(7),
		Message: "expected version 5, found 7",
		EventsSince: []events.EventSummary{
			{Version: 6, Type: "StockIncreased", ID: "prod-123@6", Payload: json.RawMessage(`{"oldStock":100,"newStock":120}`)},
			{Version: 7, Type: "PriceReduced", ID: "prod-123@7", PayloadOmitted: true},
		},
		EventsSinceCount: 2,
		Command:          json.RawMessage(`{"id":"c-9","aggregateId":"prod-123","type":"ChangePrice","expectedVersion":5,"payload":{"newPrice":22}}`),
		Source:           events.Source{Topic: "commands", Partition: 3, Offset: 12345},
		Timestamp:        time.Date(2026, 11, 29, 21, 30, 0, 123_400_000, time.UTC),
	}
	tests := []struct {
		name   string
		change func(c *events.Conflict)
		fast   bool
	}{
		{"version conflict with eventsSince", func(c *events.Conflict) {}, true},
		{"duplicate", func(c *events.Conflict) {
			c.Reason, c.EventsSince, c.EventsSinceCount, c.ActualVersion = events.ReasonDuplicate, nil, 0, nil
			c.OriginalReason, c.OriginalVersion = events.OriginalApplied, events.Version(6)
		}, true},
		{"invalid without IDs or versions", func(c *events.Conflict) {
			c.CommandID, c.ExpectedVersion, c.ActualVersion, c.EventsSince, c.EventsSinceCount, c.Command = "", nil, nil, nil, 0, nil
			c.Reason = events.ReasonInvalid
		}, true},
		{"negative and zero versions", func(c *events.Conflict) { c.ExpectedVersion, c.ActualVersion = events.Version(-1), events.Version(0) }, true},
		{"other zone", func(c *events.Conflict) { c.Timestamp = c.Timestamp.In(time.FixedZone("x", -3*3600)) }, true},
		{"payload with escapes", func(c *events.Conflict) { c.EventsSince[0].Payload = json.RawMessage(`["a b","\"q\"","\u00e9"]`) }, true},
		{"quote in message", func(c *events.Conflict) { c.Message = `not rebased: "PriceReduced" intervened` }, false},
		{"html in message", func(c *events.Conflict) { c.Message = "a < b" }, false},
		{"command with whitespace", func(c *events.Conflict) { c.Command = json.RawMessage(`{ "id": "c-9" }`) }, false},
		{"payload with html", func(c *events.Conflict) { c.EventsSince[0].Payload = json.RawMessage(`{"a":"<b>"}`) }, false},
		{"raw value", func(c *events.Conflict) { c.Command, c.RawValue = nil, []byte{0xff, 0x00} }, false},
		{"cut field", func(c *events.Conflict) { c.Cut = []events.Cut{{Field: "message", Length: 5000, SHA256: "ab"}} }, false},
		{"invalid UTF-8 in the aggregate ID", func(c *events.Conflict) { c.AggregateID = "p\xff" }, false},
		{"newline in an event type", func(c *events.Conflict) { c.EventsSince[1].Type = "A\nB" }, false},
		{"year 10000", func(c *events.Conflict) { c.Timestamp = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			c.EventsSince = append([]events.EventSummary(nil), base.EventsSince...)
			tt.change(&c)
			got, fast := appendConflictJSON(nil, &c)
			if fast != tt.fast {
				t.Fatalf("fast path: %v, want %v", fast, tt.fast)
			}
			checkConflictJSON(t, &c)
			if !fast && len(got) != 0 {
				t.Errorf("the refused fast path appended %q", got)
			}
		})
	}
}

func checkConflictJSON(t *testing.T, c *events.Conflict) {
	t.Helper()
	got, ok := appendConflictJSON([]byte("prefix"), c)
	if !ok {
		return
	}
	want, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("the fast path encoded a conflict json.Marshal refuses (%v): %#v", err, c)
	}
	if !bytes.Equal(got[len("prefix"):], want) {
		t.Fatalf("the fast path differs from json.Marshal:\n got %s\nwant %s", got[len("prefix"):], want)
	}
}

// FuzzAppendConflictJSON checks the fast conflict encoder against
// json.Marshal.
func FuzzAppendConflictJSON(f *testing.F) {
	f.Add("c-9", "prod-123", "version_conflict", "expected 5, found 6", "StockIncreased", []byte(`{"newStock":120}`), []byte(`{"id":"c-9"}`), "commands", int64(5), int64(1764451800123000000), false)
	f.Add("", "a\u2028", "invalid", "<", "T", []byte(`"x y"`), []byte(nil), "t&", int64(-1), int64(0), true)
	f.Fuzz(func(t *testing.T, commandID, aggregateID, reason, message, eventType string, payload, command []byte, topic string, version, unixNano int64, omitted bool) {
		if (len(payload) > 0 && !json.Valid(payload)) || (len(command) > 0 && !json.Valid(command)) {
			return
		}
		c := events.Conflict{
			CommandID: commandID, AggregateID: aggregateID, Reason: events.Reason(reason), Message: message,
			ExpectedVersion: events.Version(version), ActualVersion: events.Version(version + 1),
			EventsSince:      []events.EventSummary{{Version: version + 1, Type: eventType, ID: events.EventID(aggregateID, version+1), Payload: payload, PayloadOmitted: omitted}},
			EventsSinceCount: 1, Command: command,
			Source:    events.Source{Topic: topic, Partition: int32(version), Offset: version},
			Timestamp: time.Unix(0, unixNano).UTC(),
		}
		checkConflictJSON(t, &c)
		c.EventsSince, c.ActualVersion, c.OriginalReason, c.OriginalVersion = nil, nil, reason, events.Version(version)
		checkConflictJSON(t, &c)
	})
}
