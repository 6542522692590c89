package events_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func eventRecord(t *testing.T, topic, aggregateID string, version int64) *kgo.Record {
	t.Helper()
	value, err := json.Marshal(events.Event{ID: events.EventID(aggregateID, version), AggregateID: aggregateID, Type: "Ticked", Version: version,
		CommandID: fmt.Sprintf("c-%s-%d", aggregateID, version), Timestamp: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(aggregateID), Value: value}
}

// handled records what a Consumer handed over, and cancels ctx once it has
// seen want events.
type handled struct {
	mu      sync.Mutex
	byID    map[string][]int64
	n, want int
	cancel  context.CancelFunc
}

func (h *handled) handle(_ context.Context, p events.EventParams) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byID[p.Event.AggregateID] = append(h.byID[p.Event.AggregateID], p.Event.Version)
	if h.n++; h.n == h.want {
		h.cancel()
	}
	return nil
}

func TestConsumerSkipsRedeliveriesAndReportsGaps(t *testing.T) {
	brokers := testenv.Brokers(t)
	topic := testenv.Name(t, "events")
	testenv.CreateTopics(t, brokers, 2, topic)
	// a: 1 2 2 1 4 5 (a redelivery of 2 and of 1; 3 is missing)
	// b: 1 2 3
	var records []*kgo.Record
	for _, v := range []int64{1, 2, 2, 1, 4, 5} {
		records = append(records, eventRecord(t, topic, "a", v))
	}
	for _, v := range []int64{1, 2, 3} {
		records = append(records, eventRecord(t, topic, "b", v))
	}
	testkit.Produce(t, brokers, records...)

	t.Run("OnGap accepts the gap", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		h := &handled{byID: make(map[string][]int64), want: 7, cancel: cancel}
		var gaps []events.GapParams
		consumer, err := events.NewConsumer(events.ConsumerConfig{
			Brokers: brokers, Topic: topic, Handle: h.handle,
			OnGap: func(_ context.Context, p events.GapParams) error {
				gaps = append(gaps, p)
				return nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := consumer.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(h.byID["a"], h.byID["b"]); got != "[1 2 4 5] [1 2 3]" {
			t.Fatalf("handled %s; want a [1 2 4 5] and b [1 2 3]: redeliveries skipped, order kept", got)
		}
		if len(gaps) != 1 || gaps[0].AggregateID != "a" || gaps[0].Expected != 3 || gaps[0].Got != 4 {
			t.Fatalf("gaps %+v; want one in a: expected 3, got 4", gaps)
		}
		if stats := consumer.Stats(); stats.Duplicates != 2 || stats.Gaps != 1 || stats.Handled != 7 {
			t.Fatalf("stats %+v; want 7 handled, 2 duplicates, 1 gap", stats)
		}
	})

	t.Run("without OnGap Run stops with a GapError", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		h := &handled{byID: make(map[string][]int64), want: -1, cancel: cancel}
		consumer, err := events.NewConsumer(events.ConsumerConfig{Brokers: brokers, Topic: topic, Handle: h.handle})
		if err != nil {
			t.Fatal(err)
		}
		err = consumer.Run(ctx)
		var gap *events.GapError
		if !errors.Is(err, events.ErrVersionGap) || !errors.As(err, &gap) || gap.AggregateID != "a" || gap.Expected != 3 || gap.Got != 4 {
			t.Fatalf("Run returned %v; want a GapError for a, expected 3 got 4", err)
		}
		if got := fmt.Sprint(h.byID["a"]); got != "[1 2]" {
			t.Fatalf("handled %s of a; the gapped event must not be handled", got)
		}
	})

	t.Run("a group resumes after its committed offsets, LastVersion seeds the check", func(t *testing.T) {
		group := testenv.Name(t, "group")
		// The service's own store of last applied versions.
		var mu sync.Mutex
		applied := map[string]int64{}
		run := func(want int) (*handled, events.ConsumerStats) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			h := &handled{byID: make(map[string][]int64), want: want, cancel: cancel}
			consumer, err := events.NewConsumer(events.ConsumerConfig{
				Brokers: brokers, Topic: topic, Group: group,
				Handle: func(ctx context.Context, p events.EventParams) error {
					mu.Lock()
					applied[p.Event.AggregateID] = p.Event.Version
					mu.Unlock()
					return h.handle(ctx, p)
				},
				OnGap: func(context.Context, events.GapParams) error { return nil },
				LastVersion: func(_ context.Context, id string) (int64, error) {
					mu.Lock()
					defer mu.Unlock()
					return applied[id], nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := consumer.Run(ctx); err != nil {
				t.Fatal(err)
			}
			return h, consumer.Stats()
		}
		run(7)
		testkit.Produce(t, brokers, eventRecord(t, topic, "a", 5), eventRecord(t, topic, "a", 6), eventRecord(t, topic, "b", 4))
		second, stats := run(2)
		if got := fmt.Sprint(second.byID["a"], second.byID["b"]); got != "[6] [4]" {
			t.Fatalf("the second run handled %s; want only the new events a [6] and b [4]", got)
		}
		// Only the redelivered a@5 is skipped: the first run's offsets were
		// committed, and LastVersion knew a was at 5.
		if stats.Duplicates != 1 {
			t.Fatalf("the second run skipped %d duplicates; want 1 (a@5): it did not resume at the committed offsets", stats.Duplicates)
		}
	})
}
