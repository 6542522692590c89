package processor

import (
	"context"
	"testing"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/twmb/franz-go/pkg/kgo"
)

// FuzzRecord takes whole command records (key, value, a header) through
// decode, decide and the encoding of their outcome records, followed by a
// valid command on the same key: no panic, exactly one outcome per record,
// every outcome record (value, key and headers) within the output limit.
// Its seed corpus in testdata/fuzz/FuzzRecord runs as an ordinary test.
func FuzzRecord(f *testing.F) {
	f.Add([]byte("a-1"), []byte(command("c1", "a-1", "Add", 0, `{"amounts":[1,2]}`)), "h", []byte("v"))
	f.Add([]byte("\xff\xff\xff"), []byte("x"), "", []byte(nil))
	f.Add([]byte("f-1"), []byte(command("c1", "f-1", "Set", 0, `{"mode":"evolve-panic"}`)), "arbiter-kind", []byte("event"))
	f.Add([]byte("a-1"), []byte(command("c1", "a-1", AppendEventsType, -1, `{"events":[{"type":"E","payload":{}}]}`)), "", []byte(nil))
	f.Fuzz(func(t *testing.T, key, value []byte, headerKey string, headerValue []byte) {
		h := newHarness(t)
		registry := fragileRegistry()
		for commandType, handler := range testRegistry(t).handlers {
			if _, taken := registry.handlers[commandType]; !taken {
				registry.handlers[commandType] = handler
			}
		}
		registry.aggregates[counterType.Name] = counterType
		h.decider.registry = registry
		hostile := h.record(string(key), string(value))
		hostile.Headers = []kgo.RecordHeader{{Key: headerKey, Value: headerValue}}
		follower := h.record(string(key), command("follower", string(key), AppendEventsType, -1, `{"events":[{"type":"After"}]}`))

		b := &batch{records: []*kgo.Record{hostile, follower}}
		h.decider.decode(b)
		h.load(b)
		if err := h.store.Commit(context.Background(), b.changes); err != nil {
			t.Fatalf("commit: %v", err)
		}
		limit := h.decider.maxEventBytes + 2*events.MaxEchoedIDBytes + 64
		for i, outcome := range b.outcomes {
			decodeOutcome(t, outcome) // exactly one outcome: events, or one conflict
			recordKey, commandID := b.outcomeIdentity(i)
			overhead := len(recordKey) + len(events.HeaderKind) + len(events.KindConflict) + len(events.HeaderCommandID) + len(commandID)
			for _, rec := range outcome.records {
				if size := len(rec.Value) + overhead; size > limit {
					t.Fatalf("record %d: an outcome record of %d bytes, over the %d-byte limit", i, size, limit)
				}
			}
		}
	})
}
