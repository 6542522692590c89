package processor

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
)

// rebaseRegistry is the seed's product in miniature: SetPrice depends on
// price events, AddStock on stock events, and Guarded has a resolver that
// accepts only intervening Stocked events with a payload below 100.
func rebaseRegistry() *Registry {
	type item struct {
		Price int `json:"price"`
		Stock int `json:"stock"`
	}
	itemType := AggregateType[item]{Name: "Item", Evolve: func(s item, e events.Event) (item, error) {
		n, err := events.DecodePayload[int](e)
		switch e.Type {
		case "Priced":
			s.Price = n
		case "Stocked":
			s.Stock += n
		}
		return s, err
	}}
	r := NewRegistry()
	MustRegister(r, itemType, "SetPrice", func(_ context.Context, p DecideParams[item, int]) ([]events.Draft, error) {
		return []events.Draft{{Type: "Priced", Payload: p.Payload}}, nil
	}, RebaseOn("Priced"))
	MustRegister(r, itemType, "AddStock", func(_ context.Context, p DecideParams[item, int]) ([]events.Draft, error) {
		return []events.Draft{{Type: "Stocked", Payload: p.Payload}}, nil
	}, RebaseOn("Stocked"))
	MustRegister(r, itemType, "Undeclared", func(_ context.Context, p DecideParams[item, int]) ([]events.Draft, error) {
		return []events.Draft{{Type: "Priced", Payload: p.Payload}}, nil
	})
	MustRegister(r, itemType, "Guarded", func(_ context.Context, p DecideParams[item, int]) ([]events.Draft, error) {
		return []events.Draft{{Type: "Priced", Payload: p.Payload}}, nil
	}, ResolveConflicts(func(_ context.Context, p ConflictParams) Resolution {
		for _, e := range p.Intervening {
			if added, err := strconv.Atoi(string(e.Payload)); e.Type != "Stocked" || err != nil || added >= 100 {
				return KeepConflict
			}
		}
		return RebaseCommand
	}))
	return r
}

func rebaseCommand(id, commandType string, expectedVersion int64, payload int, onConflict string) string {
	value := fmt.Sprintf(`{"id":%q,"aggregateId":"p","type":%q,"expectedVersion":%d,"payload":%d`, id, commandType, expectedVersion, payload)
	if onConflict != "" {
		value += fmt.Sprintf(`,"onConflict":%q`, onConflict)
	}
	return value + "}"
}

// TestDecideRebase runs the seed's scenario and its variations through the
// decider: which stale commands are decided again, which conflict, and what
// their records say.
func TestDecideRebase(t *testing.T) {
	tests := []struct {
		name string
		// setup is applied first, in batches of one record, from version 0.
		setup []string
		// batch is decided in one batch; the last record is checked.
		batch        []string
		wantVersion  int64 // of the first event; 0 for a conflict
		wantMessage  string
		wantSince    []string // "type@version" of eventsSince
		wantSinceCnt int64
	}{
		{name: "strict stale command conflicts with eventsSince",
			setup:       []string{rebaseCommand("s1", "SetPrice", 0, 10, ""), rebaseCommand("bob", "AddStock", 1, 120, "")},
			batch:       []string{rebaseCommand("alice", "SetPrice", 1, 22, "")},
			wantMessage: "expected version 1, but found 2", wantSince: []string{"Stocked@2"}, wantSinceCnt: 1},
		{name: "rebase past events of other types",
			setup: []string{rebaseCommand("s1", "SetPrice", 0, 10, ""), rebaseCommand("bob", "AddStock", 1, 120, "")},
			batch: []string{rebaseCommand("alice", "SetPrice", 1, 22, "rebase")}, wantVersion: 3},
		{name: "no rebase past an event of a type it depends on",
			setup:       []string{rebaseCommand("s1", "SetPrice", 0, 10, ""), rebaseCommand("bob", "AddStock", 1, 120, ""), rebaseCommand("alice", "SetPrice", 1, 22, "rebase")},
			batch:       []string{rebaseCommand("carol", "SetPrice", 1, 19, "rebase")},
			wantMessage: "not rebased: Priced at version 3 is of a type SetPrice depends on", wantSince: []string{"Stocked@2", "Priced@3"}, wantSinceCnt: 2},
		{name: "rebase past events of the same batch",
			setup:       []string{rebaseCommand("s1", "SetPrice", 0, 10, "")},
			batch:       []string{rebaseCommand("bob", "AddStock", 1, 1, ""), rebaseCommand("bob2", "AddStock", 2, 1, ""), rebaseCommand("alice", "SetPrice", 1, 22, "rebase")},
			wantVersion: 4},
		{name: "no rebase past an event of the same batch it depends on",
			setup:       []string{rebaseCommand("s1", "AddStock", 0, 10, "")},
			batch:       []string{rebaseCommand("bob", "SetPrice", 1, 1, ""), rebaseCommand("alice", "SetPrice", 1, 22, "rebase")},
			wantMessage: "Priced at version 2", wantSince: []string{"Priced@2"}, wantSinceCnt: 1},
		{name: "a handler that declared nothing does not rebase",
			setup:       []string{rebaseCommand("s1", "AddStock", 0, 10, ""), rebaseCommand("bob", "AddStock", 1, 1, "")},
			batch:       []string{rebaseCommand("alice", "Undeclared", 1, 22, "rebase")},
			wantMessage: "declares no event types", wantSince: []string{"Stocked@2"}, wantSinceCnt: 1},
		{name: "an expected version ahead never rebases",
			setup:       []string{rebaseCommand("s1", "AddStock", 0, 10, "")},
			batch:       []string{rebaseCommand("alice", "SetPrice", 5, 22, "rebase")},
			wantMessage: "expected version 5, but found 1"},
		{name: "resolver accepts",
			setup: []string{rebaseCommand("s1", "AddStock", 0, 10, ""), rebaseCommand("bob", "AddStock", 1, 5, "")},
			batch: []string{rebaseCommand("alice", "Guarded", 1, 22, "rebase")}, wantVersion: 3},
		{name: "resolver refuses",
			setup:       []string{rebaseCommand("s1", "AddStock", 0, 10, ""), rebaseCommand("bob", "AddStock", 1, 500, "")},
			batch:       []string{rebaseCommand("alice", "Guarded", 1, 22, "rebase")},
			wantMessage: "resolver of Guarded refused", wantSince: []string{"Stocked@2"}, wantSinceCnt: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.decider.registry = rebaseRegistry()
			for _, value := range tt.setup {
				b := h.run(h.record("p", value))
				if _, conflict := decodeOutcome(t, b.outcomes[0]); conflict != nil {
					t.Fatalf("setup %s: %s", value, conflict.Message)
				}
			}
			records := h.records(tt.batch...)
			b := h.run(records...)
			evts, conflict := decodeOutcome(t, b.outcomes[len(records)-1])
			if tt.wantVersion != 0 {
				if conflict != nil {
					t.Fatalf("want a rebase, got %s: %s", conflict.Reason, conflict.Message)
				}
				const expected = 1 // every rebase case expects version 1
				if evts[0].Version != tt.wantVersion || evts[0].RebasedFrom == nil || *evts[0].RebasedFrom != expected {
					t.Fatalf("the rebased event is at version %d with rebasedFrom %v, want version %d rebasedFrom %d", evts[0].Version, evts[0].RebasedFrom, tt.wantVersion, expected)
				}
				return
			}
			if conflict == nil || conflict.Reason != events.ReasonVersionConflict {
				t.Fatalf("want a version conflict, got events %+v conflict %+v", evts, conflict)
			}
			if !strings.Contains(conflict.Message, tt.wantMessage) {
				t.Errorf("message %q does not say %q", conflict.Message, tt.wantMessage)
			}
			var since []string
			for _, e := range conflict.EventsSince {
				since = append(since, fmt.Sprintf("%s@%d", e.Type, e.Version))
				if e.ID != events.EventID("p", e.Version) || len(e.Payload) == 0 {
					t.Errorf("eventsSince entry %+v lacks its ID or payload", e)
				}
			}
			if !reflect.DeepEqual(since, tt.wantSince) || conflict.EventsSinceCount != tt.wantSinceCnt {
				t.Errorf("eventsSince %v (count %d), want %v (count %d)", since, conflict.EventsSinceCount, tt.wantSince, tt.wantSinceCnt)
			}
		})
	}
}

// records makes command records for aggregate p at the next offsets.
func (h *harness) records(values ...string) []*kgo.Record {
	records := make([]*kgo.Record, len(values))
	for i, value := range values {
		records[i] = h.record("p", value)
	}
	return records
}

// TestDecideRebaseIsReplayedAsRecorded: a rebase is an outcome like any
// other: the same record again (an aborted transaction) re-publishes its
// bytes, rebasedFrom and all, and is not decided again.
func TestDecideRebaseIsReplayedAsRecorded(t *testing.T) {
	h := newHarness(t)
	h.decider.registry = rebaseRegistry()
	h.run(h.record("p", rebaseCommand("s1", "SetPrice", 0, 10, "")))
	h.run(h.record("p", rebaseCommand("bob", "AddStock", 1, 120, "")))
	alice := h.record("p", rebaseCommand("alice", "SetPrice", 1, 22, "rebase"))
	first := h.run(alice)
	replay := &batch{records: []*kgo.Record{alice}, now: first.now.Add(time.Minute)}
	h.decider.decode(replay)
	h.load(replay)
	if replay.outcomes[0].kind != outcomeReplayed || !reflect.DeepEqual(replay.outcomes[0].records, first.outcomes[0].records) {
		t.Fatalf("the replay of a rebased command is %v %q, want the recorded %q", replay.outcomes[0].kind, replay.outcomes[0].records, first.outcomes[0].records)
	}
}

// TestDecideEventsSinceIsBounded: a command far behind gets the last
// eventsSinceLimit events and the count of all.
func TestDecideEventsSinceIsBounded(t *testing.T) {
	h := newHarness(t)
	h.decider.registry = rebaseRegistry()
	for v := int64(0); v < 30; v++ {
		h.run(h.record("p", rebaseCommand(fmt.Sprintf("s%d", v), "AddStock", v, 1, "")))
	}
	b := h.run(h.record("p", rebaseCommand("late", "SetPrice", 2, 22, "rebase")))
	_, conflict := decodeOutcome(t, b.outcomes[0])
	if conflict == nil || conflict.EventsSinceCount != 28 || len(conflict.EventsSince) != 20 || conflict.EventsSince[0].Version != 11 || conflict.EventsSinceComplete() {
		t.Fatalf("want the last 20 of 28 events (versions 11-30), incomplete; got %+v", conflict)
	}
	if !strings.Contains(conflict.Message, "no longer all kept") {
		t.Errorf("message %q does not say why it was not rebased", conflict.Message)
	}
}

func TestRebasePolicies(t *testing.T) {
	got := rebaseRegistry().RebasePolicies()
	want := map[string]RebasePolicy{
		"SetPrice": {DependsOn: []string{"Priced"}},
		"AddStock": {DependsOn: []string{"Stocked"}},
		"Guarded":  {Custom: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RebasePolicies() = %+v, want %+v", got, want)
	}
}

func TestRecentNeededAsksForTheStalestCommandsEvents(t *testing.T) {
	cmd := func(aggregateID string, expected int64) commands.Command {
		return commands.Command{AggregateID: aggregateID, ExpectedVersion: expected}
	}
	b := &batch{
		commands: []commands.Command{
			cmd("a", 9), cmd("a", 7), cmd("a", 8), // stalest read 7 of 10: three events
			cmd("b", 4),  // current
			cmd("c", -1), // no version check
			cmd("d", 0),  // invalid below
			cmd("e", 2),  // ahead of Redis: not stale
		},
		invalid: make([]error, 7),
	}
	b.invalid[5] = errors.New("bad record")
	aggregates := map[string]versionstore.Aggregate{
		"a": {ID: "a", Version: 10}, "b": {ID: "b", Version: 4}, "c": {ID: "c", Version: 3}, "d": {ID: "d", Version: 5},
	}
	got := b.recentNeeded(aggregates)
	want := []versionstore.RecentWant{{AggregateID: "a", Last: 3}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("recentNeeded = %+v, want %+v", got, want)
	}
}
