package commands

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// TestFollowerCompletesACommandAtItsProducersNextRecord feeds the follower
// partition streams as read_committed delivers them and checks when an
// applied command's events are complete.
func TestFollowerCompletesACommandAtItsProducersNextRecord(t *testing.T) {
	event := func(producerID int64, aggregateID, commandID string, version int64) *kgo.Record {
		value, _ := json.Marshal(events.Event{ID: events.EventID(aggregateID, version), AggregateID: aggregateID, Type: "T", Version: version, CommandID: commandID})
		return &kgo.Record{Topic: "events", Key: []byte(aggregateID), Value: value, ProducerID: producerID,
			Headers: []kgo.RecordHeader{{Key: events.HeaderKind, Value: []byte(events.KindEvent)}, {Key: events.HeaderCommandID, Value: []byte(commandID)}}}
	}
	commit := func(producerID int64) *kgo.Record {
		return &kgo.Record{Topic: "events", Key: []byte{0, 0, 0, 1}, ProducerID: producerID, Attrs: controlAttrs()}
	}
	tests := []struct {
		name string
		// records are one partition's, in offset order.
		records []*kgo.Record
		// wantAfter is the index of the record whose reading completes
		// the awaited command a/c1; -1 for never.
		wantAfter   int
		wantVersion int64
		wantEvents  int
	}{
		{
			name:      "ended by the commit marker",
			records:   []*kgo.Record{event(1, "a", "c1", 1), event(1, "a", "c1", 2), event(1, "a", "c1", 3), commit(1)},
			wantAfter: 3, wantVersion: 3, wantEvents: 3,
		},
		{
			name:      "ended by the next command in the same transaction",
			records:   []*kgo.Record{event(1, "a", "c1", 1), event(1, "a", "c1", 2), event(1, "b", "c9", 1), commit(1)},
			wantAfter: 2, wantVersion: 2, wantEvents: 2,
		},
		{
			name:      "the same command ID on another aggregate ends it",
			records:   []*kgo.Record{event(1, "a", "c1", 4), event(1, "z", "c1", 1), commit(1)},
			wantAfter: 1, wantVersion: 4, wantEvents: 1,
		},
		{
			name: "another producer's records in between do not end it",
			records: []*kgo.Record{event(1, "a", "c1", 1), event(2, "b", "c9", 1), commit(2),
				event(1, "a", "c1", 2), commit(1)},
			wantAfter: 4, wantVersion: 2, wantEvents: 2,
		},
		{
			name:      "not complete while the fetch stopped inside the transaction",
			records:   []*kgo.Record{event(1, "a", "c1", 1), event(1, "a", "c1", 2)},
			wantAfter: -1,
		},
		{
			name:      "records of commands nobody awaits are passed over",
			records:   []*kgo.Record{event(1, "b", "c2", 1), commit(1), event(3, "a", "c1", 1), commit(3)},
			wantAfter: 3, wantVersion: 1, wantEvents: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &follower{
				log:     zap.NewNop(),
				topics:  ProducerConfig{EventsTopic: "events", ConflictsTopic: "conflicts"},
				waiters: make(map[waitKey][]*waiter),
				open:    make(map[openKey]*collecting),
			}
			var got *Applied
			f.register(context.Background(), "a", "c1", func(applied Applied, err error) {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				got = &applied
			})
			completedAfter := -1
			for i, rec := range tt.records {
				f.handle(rec)
				if got != nil && completedAfter < 0 {
					completedAfter = i
				}
			}
			if completedAfter != tt.wantAfter {
				t.Fatalf("the command completed after record %d, want after record %d (-1: never)", completedAfter, tt.wantAfter)
			}
			if tt.wantAfter < 0 {
				return
			}
			if got.Version != tt.wantVersion || len(got.Events) != tt.wantEvents {
				t.Fatalf("got version %d with %d events, want version %d with %d", got.Version, len(got.Events), tt.wantVersion, tt.wantEvents)
			}
		})
	}
}

// controlAttrs returns record attributes marking a transaction marker.
func controlAttrs() kgo.RecordAttrs {
	return kgo.NewRecordAttrs(kgo.RecordAttrsOpts{Transactional: true, Control: true})
}
