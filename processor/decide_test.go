package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
)

// counter is a tiny aggregate for the decider's tests: Add appends one Added
// event per amount, so one command can produce several events.
type counter struct {
	Total int `json:"total"`
}

type addCommand struct {
	Amounts []int `json:"amounts"`
}

var counterType = AggregateType[counter]{
	Name: "Counter",
	Evolve: func(state counter, e events.Event) (counter, error) {
		if e.Type == "Added" {
			amount, err := events.DecodePayload[int](e)
			if err != nil {
				return state, err
			}
			state.Total += amount
		}
		return state, nil
	},
}

func testRegistry(t *testing.T) *Registry {
	t.Helper()
	r := NewRegistry()
	MustRegister(r, counterType, "Add", func(_ context.Context, p DecideParams[counter, addCommand]) ([]events.Draft, error) {
		if len(p.Payload.Amounts) == 0 {
			return nil, Reject("nothing to add")
		}
		drafts := make([]events.Draft, len(p.Payload.Amounts))
		for i, amount := range p.Payload.Amounts {
			if amount <= 0 {
				return nil, Reject("amount %d must be positive (total is %d)", amount, p.State.Total)
			}
			drafts[i] = events.Draft{Type: "Added", Payload: amount}
		}
		return drafts, nil
	})
	MustRegister(r, counterType, "Touch", func(_ context.Context, p DecideParams[counter, struct{}]) ([]events.Draft, error) {
		return []events.Draft{{Type: "Touched"}}, nil
	}, AllowRelaxedVersions())
	MustRegister(r, counterType, "Panic", func(_ context.Context, p DecideParams[counter, struct{}]) ([]events.Draft, error) {
		panic("boom")
	})
	return r
}

type harness struct {
	t       *testing.T
	decider *decider
	store   *versionstore.Store
	offset  int64
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	server := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: server.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	store := versionstore.New(client, versionstore.Options{KeyPrefix: "test"})
	if err := store.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &harness{
		t: t,
		decider: &decider{registry: testRegistry(t), maxRecordBytes: 1 << 20, maxEventBytes: 1 << 16,
			eventsSinceLimit: store.Options().RecentEvents, recentPayloadBytes: store.Options().RecentPayloadBytes},
		store: store,
	}
}

// record makes a command record at the next offset of partition 0.
func (h *harness) record(key, value string) *kgo.Record {
	h.offset++
	return &kgo.Record{Topic: "commands", Partition: 0, Offset: h.offset, Key: []byte(key), Value: []byte(value)}
}

func command(id, aggregateID, commandType string, expectedVersion int64, payload string) string {
	if payload == "" {
		return fmt.Sprintf(`{"id":%q,"aggregateId":%q,"type":%q,"expectedVersion":%d}`, id, aggregateID, commandType, expectedVersion)
	}
	return fmt.Sprintf(`{"id":%q,"aggregateId":%q,"type":%q,"expectedVersion":%d,"payload":%s}`, id, aggregateID, commandType, expectedVersion, payload)
}

// load reads what a decided batch needs and decides it, as a worker does.
func (h *harness) load(b *batch) {
	h.t.Helper()
	ctx := context.Background()
	aggregateIDs, refs := b.loadRequest()
	aggregates, recorded, err := h.store.Load(ctx, aggregateIDs, refs)
	if err != nil {
		h.t.Fatalf("load: %v", err)
	}
	replays, err := h.store.LoadOutcomes(ctx, b.replayRefs(recorded))
	if err != nil {
		h.t.Fatalf("load outcomes to replay: %v", err)
	}
	if b.recent, err = h.store.LoadRecent(ctx, b.recentNeeded(aggregates)); err != nil {
		h.t.Fatalf("load recent events: %v", err)
	}
	if err := h.decider.decide(ctx, b, aggregates, recorded, replays); err != nil {
		h.t.Fatalf("decide: %v", err)
	}
}

// run takes records through the batch cycle a worker runs, minus Kafka.
func (h *harness) run(records ...*kgo.Record) *batch {
	h.t.Helper()
	ctx := context.Background()
	b := &batch{records: records, now: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	h.decider.decode(b)
	h.load(b)
	if err := h.store.Commit(ctx, b.changes); err != nil {
		h.t.Fatalf("commit: %v", err)
	}
	return b
}

func decodeOutcome(t *testing.T, d decided) ([]events.Event, *events.Conflict) {
	t.Helper()
	var evts []events.Event
	var conflict *events.Conflict
	for _, r := range d.records {
		switch r.Kind {
		case versionstore.KindEvent:
			var e events.Event
			if err := json.Unmarshal(r.Value, &e); err != nil {
				t.Fatalf("event does not decode: %v", err)
			}
			evts = append(evts, e)
		case versionstore.KindConflict:
			if conflict != nil {
				t.Fatalf("one command got two conflict records")
			}
			conflict = new(events.Conflict)
			if err := json.Unmarshal(r.Value, conflict); err != nil {
				t.Fatalf("conflict does not decode: %v", err)
			}
		}
	}
	if (len(evts) > 0) == (conflict != nil) {
		t.Fatalf("a command must get events or one conflict, got %d events and conflict %v", len(evts), conflict)
	}
	return evts, conflict
}

func TestDecideOutcomes(t *testing.T) {
	tests := []struct {
		name string
		// setup runs first, in its own batch.
		setup []string
		// value is the record under test (key "a-1" unless keyed).
		value        string
		key          string
		wantReason   events.Reason
		wantVersions []int64
		wantActual   int64
		wantMessage  string
	}{
		{name: "create at version 0", value: command("c1", "a-1", "Add", 0, `{"amounts":[1]}`), wantVersions: []int64{1}},
		{name: "several events in order", value: command("c1", "a-1", "Add", 0, `{"amounts":[1,2,3]}`), wantVersions: []int64{1, 2, 3}},
		{name: "stale expected version", setup: []string{command("s1", "a-1", "Add", 0, `{"amounts":[1]}`)},
			value: command("c1", "a-1", "Add", 0, `{"amounts":[1]}`), wantReason: events.ReasonVersionConflict, wantActual: 1, wantMessage: "expected version 0, but found 1"},
		{name: "expected version ahead", value: command("c1", "a-1", "Add", 3, `{"amounts":[1]}`), wantReason: events.ReasonVersionConflict, wantActual: 0},
		{name: "domain rejection", value: command("c1", "a-1", "Add", 0, `{"amounts":[-1]}`), wantReason: events.ReasonRejected, wantMessage: "amount -1 must be positive"},
		{name: "handler panic is a rejection", value: command("c1", "a-1", "Panic", 0, ""), wantReason: events.ReasonRejected, wantMessage: "boom"},
		{name: "payload that does not decode", value: command("c1", "a-1", "Add", 0, `{"amounts":"x"}`), wantReason: events.ReasonInvalid},
		{name: "missing expectedVersion", value: `{"id":"c1","aggregateId":"a-1","type":"Add","payload":{"amounts":[1]}}`, wantReason: events.ReasonInvalid, wantMessage: "expectedVersion is missing"},
		{name: "key differs from aggregateId", key: "a-2", value: command("c1", "a-1", "Add", 0, `{"amounts":[1]}`), wantReason: events.ReasonInvalid, wantMessage: "does not equal aggregateId"},
		{name: "not JSON", value: "\x00\x01binary", wantReason: events.ReasonInvalid},
		{name: "unknown type", value: command("c1", "a-1", "Nope", 0, ""), wantReason: events.ReasonUnknownType},
		{name: "relaxed version not allowed", value: command("c1", "a-1", "Add", -1, `{"amounts":[1]}`), wantReason: events.ReasonRejected, wantMessage: "does not allow expectedVersion -1"},
		{name: "relaxed any version allowed", setup: []string{command("s1", "a-1", "Add", 0, `{"amounts":[1]}`)},
			value: command("c1", "a-1", "Touch", -1, ""), wantVersions: []int64{2}},
		{name: "must exist on a missing aggregate", value: command("c1", "a-1", "Touch", -2, ""), wantReason: events.ReasonVersionConflict, wantActual: 0},
		{name: "must exist on an existing aggregate", setup: []string{command("s1", "a-1", "Add", 0, `{"amounts":[1,1]}`)},
			value: command("c1", "a-1", "Touch", -2, ""), wantVersions: []int64{3}},
		{name: "append events any version", value: command("c1", "a-1", AppendEventsType, -1, `{"events":[{"type":"X","payload":{"n":1}},{"type":"Y"}]}`), wantVersions: []int64{1, 2}},
		{name: "append events exact version conflict", setup: []string{command("s1", "a-1", "Add", 0, `{"amounts":[1]}`)},
			value: command("c1", "a-1", AppendEventsType, 0, `{"events":[{"type":"X"}]}`), wantReason: events.ReasonVersionConflict, wantActual: 1},
		{name: "append events empty list", value: command("c1", "a-1", AppendEventsType, 0, `{"events":[]}`), wantReason: events.ReasonInvalid},
		{name: "duplicate of an applied command", setup: []string{command("c1", "a-1", "Add", 0, `{"amounts":[1]}`)},
			value: command("c1", "a-1", "Add", 1, `{"amounts":[1]}`), wantReason: events.ReasonDuplicate},
		{name: "over the size limit", value: command("c1", "a-1", "Add", 0, `{"amounts":[1],"pad":"`+strings.Repeat("x", 1<<20)+`"}`), wantReason: events.ReasonInvalid, wantMessage: "over the"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			for _, value := range tt.setup {
				h.run(h.record("a-1", value))
			}
			key := tt.key
			if key == "" {
				key = "a-1"
			}
			b := h.run(h.record(key, tt.value))
			evts, conflict := decodeOutcome(t, b.outcomes[0])
			if tt.wantReason != "" {
				if conflict == nil {
					t.Fatalf("want a %s conflict, got %d events", tt.wantReason, len(evts))
				}
				if conflict.Reason != tt.wantReason {
					t.Fatalf("want reason %s, got %s (%s)", tt.wantReason, conflict.Reason, conflict.Message)
				}
				if !strings.Contains(conflict.Message, tt.wantMessage) {
					t.Errorf("message %q does not say %q", conflict.Message, tt.wantMessage)
				}
				if tt.wantReason == events.ReasonVersionConflict && (conflict.ActualVersion == nil || *conflict.ActualVersion != tt.wantActual) {
					t.Errorf("want actual version %d, got %v", tt.wantActual, conflict.ActualVersion)
				}
				if conflict.Source.Offset != h.offset || conflict.Source.Topic != "commands" {
					t.Errorf("conflict source %+v does not point at the command record", conflict.Source)
				}
				return
			}
			if conflict != nil {
				t.Fatalf("want events %v, got conflict %s: %s", tt.wantVersions, conflict.Reason, conflict.Message)
			}
			if len(evts) != len(tt.wantVersions) {
				t.Fatalf("want %d events, got %d", len(tt.wantVersions), len(evts))
			}
			for i, e := range evts {
				if e.Version != tt.wantVersions[i] || e.ID != events.EventID("a-1", e.Version) || e.CommandID != "c1" {
					t.Errorf("event %d: version %d id %s command %s; want version %d", i, e.Version, e.ID, e.CommandID, tt.wantVersions[i])
				}
			}
			aggregate, err := h.store.Get(context.Background(), "a-1")
			if err != nil {
				t.Fatal(err)
			}
			if last := tt.wantVersions[len(tt.wantVersions)-1]; aggregate.Version != last {
				t.Errorf("redis holds version %d after the command, want %d", aggregate.Version, last)
			}
		})
	}
}

// TestDecideSequencesWithinBatch: commands for one aggregate in one batch are
// decided one after the other on the running version and state, and the
// snapshot written is the state after the last one.
func TestDecideSequencesWithinBatch(t *testing.T) {
	h := newHarness(t)
	b := h.run(
		h.record("a-1", command("c1", "a-1", "Add", 0, `{"amounts":[5]}`)),
		h.record("a-1", command("c2", "a-1", "Add", 0, `{"amounts":[1]}`)), // Bob was first: stale
		h.record("a-1", command("c3", "a-1", "Add", 1, `{"amounts":[2,3]}`)),
		h.record("a-2", command("c1", "a-2", "Add", 0, `{"amounts":[7]}`)), // same command ID, other aggregate
		h.record("a-1", command("c3", "a-1", "Add", 3, `{"amounts":[2]}`)), // duplicate within the batch
	)
	wantVersions := [][]int64{{1}, nil, {2, 3}, {1}, nil}
	wantReasons := []events.Reason{"", events.ReasonVersionConflict, "", "", events.ReasonDuplicate}
	for i := range b.records {
		evts, conflict := decodeOutcome(t, b.outcomes[i])
		if wantReasons[i] != "" {
			if conflict == nil || conflict.Reason != wantReasons[i] {
				t.Fatalf("record %d: want %s, got events %v conflict %v", i, wantReasons[i], evts, conflict)
			}
			continue
		}
		for k, e := range evts {
			if e.Version != wantVersions[i][k] {
				t.Fatalf("record %d event %d: version %d, want %d", i, k, e.Version, wantVersions[i][k])
			}
		}
	}
	aggregate, err := h.store.Get(context.Background(), "a-1")
	if err != nil {
		t.Fatal(err)
	}
	if aggregate.Version != 3 || string(aggregate.State) != `{"total":10}` || aggregate.Type != "Counter" {
		t.Fatalf("redis holds %d %s %s, want version 3, Counter {\"total\":10}", aggregate.Version, aggregate.Type, aggregate.State)
	}
}

// TestDecideReplayIsByteForByte: after an aborted transaction the same
// records come again; their recorded outcomes are published unchanged (same
// IDs, same timestamps), while a new record with a decided command ID is a
// duplicate, and the version does not move again.
func TestDecideReplayIsByteForByte(t *testing.T) {
	h := newHarness(t)
	first := []*kgo.Record{
		h.record("a-1", command("c1", "a-1", "Add", 0, `{"amounts":[1,2]}`)),
		h.record("a-1", command("c2", "a-1", "Add", 0, `{"amounts":[1]}`)),
		h.record("a-1", command("c3", "a-1", "Add", 2, `{"amounts":[-4]}`)),
	}
	original := h.run(first...)
	// A later clock on the replay must not leak into the replayed records.
	replay := &batch{records: first, now: original.now.Add(time.Hour)}
	h.decider.decode(replay)
	h.load(replay)
	if len(replay.changes) != 0 {
		t.Fatalf("a replay wrote %d changes to redis; it must only re-publish", len(replay.changes))
	}
	for i := range first {
		if replay.outcomes[i].kind != outcomeReplayed {
			t.Fatalf("record %d was decided again instead of replayed", i)
		}
		if len(replay.outcomes[i].records) != len(original.outcomes[i].records) {
			t.Fatalf("record %d: replay has %d records, original %d", i, len(replay.outcomes[i].records), len(original.outcomes[i].records))
		}
		for k := range original.outcomes[i].records {
			if string(replay.outcomes[i].records[k].Value) != string(original.outcomes[i].records[k].Value) {
				t.Fatalf("record %d: replayed bytes differ:\n%s\n%s", i, replay.outcomes[i].records[k].Value, original.outcomes[i].records[k].Value)
			}
			// A replay's CloudEvents attributes are read from the recorded
			// value; they must be those first published.
			if replayed, published := cloudEventOf(replay.outcomes[i].records[k]), original.outcomes[i].cloudEvents[k]; replayed != published {
				t.Fatalf("record %d: replayed CloudEvents attributes differ:\n%+v\n%+v", i, replayed, published)
			}
		}
	}
	again := h.run(h.record("a-1", command("c1", "a-1", "Add", 2, `{"amounts":[1]}`)))
	_, conflict := decodeOutcome(t, again.outcomes[0])
	if conflict == nil || conflict.Reason != events.ReasonDuplicate || conflict.OriginalReason != events.OriginalApplied ||
		conflict.OriginalVersion == nil || *conflict.OriginalVersion != 2 {
		t.Fatalf("a resend of an applied command must be a duplicate carrying the original version 2, got %+v", conflict)
	}
}

// TestDecideFencedByAnotherWorker: a worker that decided on a version another
// worker has since advanced must not write; Commit refuses the change.
func TestDecideFencedByAnotherWorker(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	stale := &batch{records: []*kgo.Record{h.record("a-1", command("c1", "a-1", "Add", 0, `{"amounts":[1]}`))}, now: time.Now()}
	h.decider.decode(stale)
	h.load(stale)
	// Meanwhile the partition's new owner decides another command.
	h.run(h.record("a-1", command("c9", "a-1", "Add", 0, `{"amounts":[9]}`)))
	err := h.store.Commit(ctx, stale.changes)
	if err == nil {
		t.Fatal("a change decided on version 0 was written over version 1")
	}
	aggregate, _ := h.store.Get(ctx, "a-1")
	if aggregate.Version != 1 || string(aggregate.State) != `{"total":9}` {
		t.Fatalf("the fenced change leaked: redis holds version %d state %s", aggregate.Version, aggregate.State)
	}
}

// TestDecideUndecodableSnapshot: a snapshot the handler's state type cannot
// read makes the command a rejection saying so, not a failed batch that
// would stall the partition on every retry.
func TestDecideUndecodableSnapshot(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.store.Put(ctx, []versionstore.Aggregate{{ID: "a-1", Version: 4, Type: "Counter", State: []byte(`{"total":"not a number"}`)}}); err != nil {
		t.Fatal(err)
	}
	b := h.run(h.record("a-1", command("c1", "a-1", "Add", 4, `{"amounts":[1]}`)))
	_, conflict := decodeOutcome(t, b.outcomes[0])
	if conflict == nil || conflict.Reason != events.ReasonRejected || !strings.Contains(conflict.Message, "does not decode") {
		t.Fatalf("a command on an undecodable snapshot: want a rejection naming the problem, got %+v", conflict)
	}
	if aggregate, _ := h.store.Get(ctx, "a-1"); aggregate.Version != 4 {
		t.Fatalf("the rejection moved the version to %d", aggregate.Version)
	}
}
