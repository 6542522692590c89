package versionstore

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestRecentEventRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		event RecentEvent
		limit int
		want  RecentEvent
	}{
		{"payload kept", RecentEvent{Version: 6, Type: "StockIncreased", Payload: json.RawMessage(`{"added":120}`)}, 128,
			RecentEvent{Version: 6, Type: "StockIncreased", Payload: json.RawMessage(`{"added":120}`)}},
		{"no payload", RecentEvent{Version: 1, Type: "Created"}, 128, RecentEvent{Version: 1, Type: "Created"}},
		{"payload over the limit", RecentEvent{Version: 300, Type: "Big", Payload: json.RawMessage(`"` + strings.Repeat("x", 200) + `"`)}, 128,
			RecentEvent{Version: 300, Type: "Big", PayloadOmitted: true}},
		{"payload at the limit", RecentEvent{Version: 2, Type: "T", Payload: json.RawMessage(`"ab"`)}, 4,
			RecentEvent{Version: 2, Type: "T", Payload: json.RawMessage(`"ab"`)}},
		{"empty type", RecentEvent{Version: 3}, 128, RecentEvent{Version: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeRecent(encodeRecent(tt.event, tt.limit))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("round trip gave %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeRecentRefusesGarbage(t *testing.T) {
	for _, buf := range [][]byte{nil, {0}, {2, 5, 'a'}, {2, 1, 'a', 9}} {
		if e, err := decodeRecent(buf); err == nil {
			t.Errorf("decodeRecent(%v) = %+v, want an error", buf, e)
		}
	}
}

func TestCommitKeepsRecentEvents(t *testing.T) {
	runCommitKeepsRecentEvents(t, func(t *testing.T, opts Options) *Store {
		store, _ := newMiniStore(t, opts)
		return store
	})
}

// recentChange advances an aggregate by one event per version from..to, of
// the given type, each with a small payload.
func recentChange(aggregateID string, from, to int64, eventType string) Change {
	change := testChange(aggregateID, from, to, fmt.Sprintf("c-%s-%d", aggregateID, to))
	for v := from + 1; v <= to; v++ {
		change.Events = append(change.Events, RecentEvent{Version: v, Type: eventType, Payload: json.RawMessage(fmt.Sprintf(`{"v":%d}`, v))})
	}
	return change
}

func runCommitKeepsRecentEvents(t *testing.T, newStore func(*testing.T, Options) *Store) {
	ctx := context.Background()
	store := newStore(t, Options{RecentEvents: 4})
	mustCommit(t, store, recentChange("a", 0, 3, "Created"))
	mustCommit(t, store, recentChange("a", 3, 6, "Changed"))
	conflictOnly := testChange("a", 6, 6, "c-conflict")
	conflictOnly.Outcomes[0].Applied, conflictOnly.Outcomes[0].Reason = false, "version_conflict"
	mustCommit(t, store, conflictOnly)
	recent, err := store.LoadRecent(ctx, []RecentWant{{AggregateID: "a"}, {AggregateID: "new"}})
	if err != nil {
		t.Fatal(err)
	}
	var versions []int64
	for _, e := range recent["a"] {
		versions = append(versions, e.Version)
	}
	if want := []int64{3, 4, 5, 6}; !reflect.DeepEqual(versions, want) {
		t.Errorf("the list holds versions %v, want the last four %v", versions, want)
	}
	if got := recent["a"][3]; got.Type != "Changed" || string(got.Payload) != `{"v":6}` {
		t.Errorf("the last entry is %+v, want Changed with its payload", got)
	}
	if len(recent["new"]) != 0 {
		t.Errorf("an aggregate without events has recent events %+v", recent["new"])
	}
	// Only the wanted last entries: a command that read version 4 needs 5 and 6.
	last, err := store.LoadRecent(ctx, []RecentWant{{AggregateID: "a", Last: 2}, {AggregateID: "new", Last: 3}})
	if err != nil {
		t.Fatal(err)
	}
	versions = versions[:0]
	for _, e := range last["a"] {
		versions = append(versions, e.Version)
	}
	if want := []int64{5, 6}; !reflect.DeepEqual(versions, want) {
		t.Errorf("the last two entries are versions %v, want %v", versions, want)
	}
	if len(last["new"]) != 0 {
		t.Errorf("an aggregate without events has recent events %+v", last["new"])
	}

	// A refused change leaves the list alone.
	if err := store.Commit(ctx, []Change{recentChange("a", 5, 7, "Stale")}); err == nil {
		t.Fatal("a change from a moved version was not fenced")
	}
	// Put rewrites a version: the list no longer matches it and goes.
	if err := store.Put(ctx, []Aggregate{{ID: "a", Version: 6, Type: "Product"}}); err != nil {
		t.Fatal(err)
	}
	recent, err = store.LoadRecent(ctx, []RecentWant{{AggregateID: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(recent["a"]) != 0 {
		t.Errorf("after Put the list still holds %+v", recent["a"])
	}
}

func TestCommitWithoutRecentEvents(t *testing.T) {
	store, _ := newMiniStore(t, Options{RecentEvents: -1})
	mustCommit(t, store, recentChange("a", 0, 3, "Created"))
	recent, err := store.LoadRecent(context.Background(), []RecentWant{{AggregateID: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(recent["a"]) != 0 {
		t.Errorf("RecentEvents -1 kept %+v", recent["a"])
	}
	if got := mustGet(t, store, "a").Version; got != 3 {
		t.Errorf("version %d, want 3", got)
	}
}
