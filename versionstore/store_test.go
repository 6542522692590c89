package versionstore

import (
	"bytes"
	"context"
	stderrors "errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"pgregory.net/rapid"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The tests in this file run against miniredis, which runs the commit script
// with gopher-lua. The scenarios they share with integration_test.go (the
// run* functions) take a store and run again against a real redis-server
// there.

// newMiniStore returns a store over a new miniredis server, both closed when
// the test ends.
func newMiniStore(t *testing.T, opts Options) (*Store, *miniredis.Miniredis) {
	t.Helper()
	server := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: server.Addr()})
	t.Cleanup(func() {
		if err := client.Close(); err != nil {
			t.Errorf("close Redis client: %v", err)
		}
	})
	return initialized(t, New(client, opts)), server
}

// initialized writes the store's amnesia marker, as a worker does on a fresh
// deployment, and returns the store.
func initialized(t testing.TB, store *Store) *Store {
	t.Helper()
	if err := store.Init(context.Background()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	return store
}

// miniStores makes a new miniredis-backed store for each call.
func miniStores(t *testing.T) *Store {
	store, _ := newMiniStore(t, Options{})
	return store
}

// testOutcome is the outcome of an applied command, with one record that
// names it.
func testOutcome(commandID string, version int64) Outcome {
	return Outcome{
		CommandID: commandID,
		Partition: 2,
		Offset:    version * 10,
		Applied:   true,
		Version:   version,
		Records:   []OutcomeRecord{{Kind: KindEvent, Value: []byte(`{"commandId":"` + commandID + `"}`)}},
	}
}

// testChange advances aggregateID from one version to another, with a state
// that names the new version and an applied outcome for each command ID.
func testChange(aggregateID string, from, to int64, commandIDs ...string) Change {
	change := Change{
		AggregateID: aggregateID,
		FromVersion: from,
		ToVersion:   to,
		Type:        "Product",
		State:       []byte(fmt.Sprintf(`{"id":%q,"version":%d}`, aggregateID, to)),
	}
	for _, commandID := range commandIDs {
		change.Outcomes = append(change.Outcomes, testOutcome(commandID, to))
	}
	return change
}

func mustCommit(t testing.TB, store *Store, changes ...Change) {
	t.Helper()
	if err := store.Commit(context.Background(), changes); err != nil {
		t.Fatalf("Commit(%d changes) failed: %v", len(changes), err)
	}
}

func mustGet(t testing.TB, store *Store, aggregateID string) Aggregate {
	t.Helper()
	aggregate, err := store.Get(context.Background(), aggregateID)
	if err != nil {
		t.Fatalf("Get(%q) failed: %v", aggregateID, err)
	}
	return aggregate
}

// mustOutcome loads the recorded outcome of a command; ok is false when none
// is recorded.
func mustOutcome(t testing.TB, store *Store, aggregateID, commandID string) (outcome Outcome, ok bool) {
	t.Helper()
	ref := CommandRef{AggregateID: aggregateID, CommandID: commandID}
	_, decisions, err := store.Load(context.Background(), nil, []CommandRef{ref})
	if err != nil {
		t.Fatalf("Load decision of %+v failed: %v", ref, err)
	}
	decision, ok := decisions[ref]
	if !ok {
		return Outcome{}, false
	}
	outcomes, err := store.LoadOutcomes(context.Background(), []CommandRef{ref})
	if err != nil {
		t.Fatalf("LoadOutcomes of %+v failed: %v", ref, err)
	}
	outcome = outcomes[ref]
	if outcome.Decision() != decision {
		t.Fatalf("the decision %+v and the outcome %+v of %+v disagree", decision, outcome.Decision(), ref)
	}
	return outcome, true
}

// sameAggregate reports how got differs from want, "" when it does not.
func sameAggregate(got, want Aggregate) string {
	if got.ID != want.ID || got.Version != want.Version || got.Type != want.Type || !bytes.Equal(got.State, want.State) {
		return fmt.Sprintf("got {ID:%q Version:%d Type:%q State:%q}, want {ID:%q Version:%d Type:%q State:%q}",
			got.ID, got.Version, got.Type, got.State, want.ID, want.Version, want.Type, want.State)
	}
	return ""
}

// fencedErrors returns every *FencedError in an error tree, in order.
func fencedErrors(err error) []*FencedError {
	if err == nil {
		return nil
	}
	if fenced, ok := err.(*FencedError); ok {
		return []*FencedError{fenced}
	}
	var found []*FencedError
	switch wrapper := err.(type) {
	case interface{ Unwrap() []error }:
		for _, inner := range wrapper.Unwrap() {
			found = append(found, fencedErrors(inner)...)
		}
	case interface{ Unwrap() error }:
		found = fencedErrors(wrapper.Unwrap())
	}
	return found
}

func TestGetMissingAggregate(t *testing.T) {
	store, _ := newMiniStore(t, Options{})
	got := mustGet(t, store, "prod-404")
	if diff := sameAggregate(got, Aggregate{ID: "prod-404"}); diff != "" {
		t.Errorf("an aggregate that does not exist must be at version 0 with no type or state: %s", diff)
	}
}

func TestLoadNothing(t *testing.T) {
	store, _ := newMiniStore(t, Options{})
	aggregates, outcomes, err := store.Load(context.Background(), nil, nil)
	if err != nil || aggregates == nil || outcomes == nil || len(aggregates) != 0 || len(outcomes) != 0 {
		t.Errorf("Load(nil, nil) = %v, %v, %v; want two empty maps and no error", aggregates, outcomes, err)
	}
	if err := store.Commit(context.Background(), nil); err != nil {
		t.Errorf("Commit(nil) = %v, want nil", err)
	}
	if err := store.Put(context.Background(), nil); err != nil {
		t.Errorf("Put(nil) = %v, want nil", err)
	}
}

func TestCommitThenLoad(t *testing.T) { runCommitThenLoad(t, miniStores(t)) }

func runCommitThenLoad(t *testing.T, store *Store) {
	ctx := context.Background()
	created := testChange("prod-123", 0, 1, "c-create")
	advanced := testChange("prod-456", 0, 3, "c-1", "c-2")
	untyped := Change{AggregateID: "orders/7", FromVersion: 0, ToVersion: 2, Outcomes: []Outcome{testOutcome("c-append", 2)}}
	mustCommit(t, store, created, advanced, untyped)

	ids := []string{"prod-123", "prod-456", "orders/7", "prod-404"}
	refs := []CommandRef{
		{AggregateID: "prod-123", CommandID: "c-create"},
		{AggregateID: "prod-456", CommandID: "c-1"},
		{AggregateID: "prod-456", CommandID: "c-2"},
		{AggregateID: "orders/7", CommandID: "c-append"},
		{AggregateID: "prod-123", CommandID: "c-never-sent"},
		{AggregateID: "prod-456", CommandID: "c-create"}, // recorded, but for another aggregate
	}
	aggregates, outcomes, err := store.Load(ctx, ids, refs)
	if err != nil {
		t.Fatalf("Load failed: %v", err)
	}
	wantAggregates := map[string]Aggregate{
		"prod-123": {ID: "prod-123", Version: 1, Type: "Product", State: created.State},
		"prod-456": {ID: "prod-456", Version: 3, Type: "Product", State: advanced.State},
		"orders/7": {ID: "orders/7", Version: 2},
		"prod-404": {ID: "prod-404"},
	}
	if len(aggregates) != len(wantAggregates) {
		t.Errorf("Load returned %d aggregates, want %d", len(aggregates), len(wantAggregates))
	}
	for id, want := range wantAggregates {
		if diff := sameAggregate(aggregates[id], want); diff != "" {
			t.Errorf("aggregate %s after Commit: %s", id, diff)
		}
	}
	wantOutcomes := map[CommandRef]Outcome{
		refs[0]: created.Outcomes[0],
		refs[1]: advanced.Outcomes[0],
		refs[2]: advanced.Outcomes[1],
		refs[3]: untyped.Outcomes[0],
	}
	if len(outcomes) != len(wantOutcomes) {
		t.Errorf("Load returned %d outcomes, want %d (commands without a recorded outcome must be absent): %v", len(outcomes), len(wantOutcomes), outcomes)
	}
	full, err := store.LoadOutcomes(ctx, refs[:4])
	if err != nil {
		t.Fatalf("LoadOutcomes failed: %v", err)
	}
	for ref, want := range wantOutcomes {
		decision, ok := outcomes[ref]
		if !ok {
			t.Errorf("outcome of %+v was committed but Load does not return its decision", ref)
			continue
		}
		if decision != want.Decision() {
			t.Errorf("decision on %+v is %+v, committed %+v", ref, decision, want.Decision())
		}
		if diff := sameOutcome(full[ref], want); diff != "" {
			t.Errorf("outcome of %+v is not what was committed: %s", ref, diff)
		}
	}
	if _, err := store.LoadOutcomes(ctx, refs[4:5]); !errors.Is(err, ErrOutcomeExpired) {
		t.Errorf("LoadOutcomes of a command never decided = %v, want ErrOutcomeExpired", err)
	}
}

// seedFencing puts aggregate "a" at version 3 with a recorded command
// "c-seed", and returns its state.
func seedFencing(t *testing.T, store *Store) Aggregate {
	t.Helper()
	mustCommit(t, store, testChange("a", 0, 1, "c-create"))
	mustCommit(t, store, testChange("a", 1, 3, "c-seed"))
	return mustGet(t, store, "a")
}

var fencingCases = []struct {
	name   string
	change Change
	want   FencedError
}{
	{
		name:   "decided on an older version",
		change: testChange("a", 2, 3, "c-stale"),
		want:   FencedError{AggregateID: "a", ExpectedVersion: 2, ActualVersion: 3},
	},
	{
		name:   "decided on a version Redis never had",
		change: testChange("a", 4, 5, "c-ahead"),
		want:   FencedError{AggregateID: "a", ExpectedVersion: 4, ActualVersion: 3},
	},
	{
		name:   "created again",
		change: testChange("a", 0, 1, "c-create-again"),
		want:   FencedError{AggregateID: "a", ExpectedVersion: 0, ActualVersion: 3},
	},
	{
		name:   "missing aggregate decided on version 1",
		change: testChange("missing", 1, 2, "c-missing"),
		want:   FencedError{AggregateID: "missing", ExpectedVersion: 1, ActualVersion: 0},
	},
	{
		name:   "conflict-only change decided on an older version",
		change: testChange("a", 2, 2, "c-stale-conflict"),
		want:   FencedError{AggregateID: "a", ExpectedVersion: 2, ActualVersion: 3},
	},
	{
		name:   "command already decided",
		change: testChange("a", 3, 4, "c-new", "c-seed"),
		want:   FencedError{AggregateID: "a", ExpectedVersion: 3, ActualVersion: 3, CommandID: "c-seed"},
	},
	{
		name:   "command already decided, on a conflict-only change",
		change: testChange("a", 3, 3, "c-seed"),
		want:   FencedError{AggregateID: "a", ExpectedVersion: 3, ActualVersion: 3, CommandID: "c-seed"},
	},
	{
		name:   "stale version and a decided command: the version is reported",
		change: testChange("a", 1, 2, "c-seed"),
		want:   FencedError{AggregateID: "a", ExpectedVersion: 1, ActualVersion: 3},
	},
}

func TestCommitFencing(t *testing.T) { runCommitFencing(t, miniStores) }

// runCommitFencing commits each fenced change between two changes of other
// aggregates: the fenced one must write nothing, the others everything.
func runCommitFencing(t *testing.T, newStore func(*testing.T) *Store) {
	for _, tt := range fencingCases {
		t.Run(tt.name, func(t *testing.T) {
			store := newStore(t)
			ctx := context.Background()
			seeded := seedFencing(t, store)
			before := mustGet(t, store, tt.change.AggregateID)
			seedOutcome, _ := mustOutcome(t, store, "a", "c-seed")
			mustCommit(t, store, testChange("b", 0, 1, "c-b1"))

			err := store.Commit(ctx, []Change{
				testChange("b", 1, 2, "c-b2"),
				tt.change,
				testChange("c", 0, 1, "c-seed"), // same command ID, other aggregate: not a duplicate
			})

			if !errors.Is(err, ErrFenced) || !stderrors.Is(err, ErrFenced) {
				t.Fatalf("Commit = %v; want an error that errors.Is ErrFenced (cockroachdb and standard library)", err)
			}
			var fenced *FencedError
			if !errors.As(err, &fenced) || !stderrors.As(err, &fenced) {
				t.Fatalf("Commit = %v; want an error that errors.As a *FencedError", err)
			}
			if *fenced != tt.want {
				t.Errorf("fenced error = %+v, want %+v", *fenced, tt.want)
			}
			if all := fencedErrors(err); len(all) != 1 {
				t.Errorf("Commit returned %d fenced errors (%v), want exactly one: only one aggregate was refused", len(all), err)
			}
			if !strings.Contains(err.Error(), tt.want.AggregateID) {
				t.Errorf("error %q does not name the refused aggregate %q", err, tt.want.AggregateID)
			}

			// Nothing of the refused change was written.
			if diff := sameAggregate(mustGet(t, store, tt.change.AggregateID), before); diff != "" {
				t.Errorf("the refused change moved aggregate %s: %s", tt.change.AggregateID, diff)
			}
			for _, outcome := range tt.change.Outcomes {
				got, ok := mustOutcome(t, store, tt.change.AggregateID, outcome.CommandID)
				switch {
				case outcome.CommandID == "c-seed":
					if diff := sameOutcome(got, seedOutcome); !ok || diff != "" {
						t.Errorf("the refused change overwrote the recorded outcome of c-seed (recorded: %t): %s", ok, diff)
					}
				case ok:
					t.Errorf("the refused change recorded an outcome for %s: %+v", outcome.CommandID, got)
				}
			}
			if tt.change.AggregateID != "a" {
				if diff := sameAggregate(mustGet(t, store, "a"), seeded); diff != "" {
					t.Errorf("aggregate a changed though nothing was committed to it: %s", diff)
				}
			}

			// The other aggregates' changes were written.
			if got := mustGet(t, store, "b"); got.Version != 2 {
				t.Errorf("aggregate b at version %d, want 2: a refused change must not stop the other aggregates' changes", got.Version)
			}
			if got := mustGet(t, store, "c"); got.Version != 1 {
				t.Errorf("aggregate c at version %d, want 1: a refused change must not stop the other aggregates' changes", got.Version)
			}
			for _, ref := range []CommandRef{{"b", "c-b2"}, {"c", "c-seed"}} {
				if _, ok := mustOutcome(t, store, ref.AggregateID, ref.CommandID); !ok {
					t.Errorf("outcome of %+v was not recorded: a refused change must not stop the other aggregates' changes", ref)
				}
			}
		})
	}
}

func TestCommitFencesEachAggregate(t *testing.T) { runCommitFencesEachAggregate(t, miniStores(t)) }

// runCommitFencesEachAggregate: several refused aggregates in one Commit give
// one FencedError each; two changes of one aggregate in a batch run in order.
func runCommitFencesEachAggregate(t *testing.T, store *Store) {
	mustCommit(t, store, testChange("x", 0, 2), testChange("y", 0, 5))
	err := store.Commit(context.Background(), []Change{
		testChange("x", 1, 2, "c-x"),
		testChange("z", 0, 1, "c-z1"),
		testChange("y", 4, 5, "c-y"),
		testChange("z", 0, 1, "c-z2"), // decided on the same version as c-z1, which got there first
		testChange("z", 1, 2, "c-z3"), // decided on c-z1's version: applies
	})
	want := []FencedError{
		{AggregateID: "x", ExpectedVersion: 1, ActualVersion: 2},
		{AggregateID: "y", ExpectedVersion: 4, ActualVersion: 5},
		{AggregateID: "z", ExpectedVersion: 0, ActualVersion: 1},
	}
	got := fencedErrors(err)
	if len(got) != len(want) {
		t.Fatalf("Commit = %v; want %d fenced errors, one per refused change", err, len(want))
	}
	for i := range want {
		if *got[i] != want[i] {
			t.Errorf("fenced error %d = %+v, want %+v", i, *got[i], want[i])
		}
	}
	if z := mustGet(t, store, "z"); z.Version != 2 {
		t.Errorf("aggregate z at version %d, want 2: changes of one aggregate in a batch apply in order", z.Version)
	}
	if _, ok := mustOutcome(t, store, "z", "c-z2"); ok {
		t.Errorf("the refused change c-z2 recorded an outcome")
	}
}

func TestCommitConflictOnly(t *testing.T) { runCommitConflictOnly(t, miniStores(t)) }

// runCommitConflictOnly: a change with FromVersion == ToVersion records its
// outcomes and leaves the version, type and state alone.
func runCommitConflictOnly(t *testing.T, store *Store) {
	mustCommit(t, store, testChange("a", 0, 3, "c-1"))
	before := mustGet(t, store, "a")
	rejected := Outcome{CommandID: "c-rejected", Reason: "rejected", Version: 3, Records: []OutcomeRecord{{Kind: KindConflict, Value: []byte(`{"reason":"rejected"}`)}}}
	conflict := Outcome{CommandID: "c-conflict", Reason: "version_conflict", Version: 0, Records: []OutcomeRecord{{Kind: KindConflict, Value: []byte(`{"reason":"version_conflict"}`)}}}
	mustCommit(t, store,
		Change{AggregateID: "a", FromVersion: 3, ToVersion: 3, Type: "Other", State: []byte("must not be written"), Outcomes: []Outcome{rejected}},
		Change{AggregateID: "never-created", FromVersion: 0, ToVersion: 0, Type: "Product", State: []byte("must not be written"), Outcomes: []Outcome{conflict}},
	)
	if diff := sameAggregate(mustGet(t, store, "a"), before); diff != "" {
		t.Errorf("a conflict-only change must keep the version, type and state: %s", diff)
	}
	if diff := sameAggregate(mustGet(t, store, "never-created"), Aggregate{ID: "never-created"}); diff != "" {
		t.Errorf("a conflict-only change must not create the aggregate: %s", diff)
	}
	exists, err := store.Client().Exists(context.Background(), store.aggregateKey("never-created")).Result()
	if err != nil || exists != 0 {
		t.Errorf("EXISTS %s = %d, %v; a conflict-only change of a missing aggregate must not create its hash", store.aggregateKey("never-created"), exists, err)
	}
	for _, ref := range []struct {
		aggregateID string
		want        Outcome
	}{{"a", rejected}, {"never-created", conflict}} {
		got, ok := mustOutcome(t, store, ref.aggregateID, ref.want.CommandID)
		if !ok {
			t.Errorf("a conflict-only change must record its outcome; %s of %s is missing", ref.want.CommandID, ref.aggregateID)
			continue
		}
		if diff := sameOutcome(got, ref.want); diff != "" {
			t.Errorf("outcome of %s: %s", ref.want.CommandID, diff)
		}
	}
	// The recorded conflict fences a replay of the same command.
	err = store.Commit(context.Background(), []Change{{AggregateID: "a", FromVersion: 3, ToVersion: 4, Outcomes: []Outcome{testOutcome("c-rejected", 4)}}})
	var fenced *FencedError
	if !errors.As(err, &fenced) || fenced.CommandID != "c-rejected" {
		t.Errorf("Commit of an already rejected command = %v, want a *FencedError naming c-rejected", err)
	}
}

func TestPut(t *testing.T) { runPut(t, miniStores(t)) }

func runPut(t *testing.T, store *Store) {
	ctx := context.Background()
	mustCommit(t, store, testChange("a", 0, 9, "c-1"))
	put := []Aggregate{
		{ID: "a", Version: 4, Type: "Product", State: []byte(`{"rebuilt":true}`)},
		{ID: "b", Version: 12, Type: "", State: nil},
		{ID: "c", Version: 1, Type: "Product", State: []byte{0, 0xff, '\n'}},
	}
	if err := store.Put(ctx, put); err != nil {
		t.Fatalf("Put failed: %v", err)
	}
	for _, want := range put {
		if diff := sameAggregate(mustGet(t, store, want.ID), want); diff != "" {
			t.Errorf("after Put, aggregate %s: %s", want.ID, diff)
		}
	}
	// Put does not touch recorded outcomes, and the store goes on from the
	// version Put wrote.
	if _, ok := mustOutcome(t, store, "a", "c-1"); !ok {
		t.Errorf("Put removed the recorded outcome of c-1")
	}
	mustCommit(t, store, testChange("a", 4, 5, "c-2"))
	if err := store.Commit(ctx, []Change{testChange("b", 0, 1)}); !errors.Is(err, ErrFenced) {
		t.Errorf("Commit from version 0 of an aggregate Put at version 12 = %v, want ErrFenced", err)
	}
}

func TestLoadCorruptData(t *testing.T) {
	tests := []struct {
		name             string
		prepare          func(ctx context.Context, store *Store) error
		isCorruptOutcome bool
	}{
		{
			name: "version not a number",
			prepare: func(ctx context.Context, store *Store) error {
				return store.Client().HSet(ctx, store.aggregateKey("a"), "v", "three").Err()
			},
		},
		{
			name: "negative version",
			prepare: func(ctx context.Context, store *Store) error {
				return store.Client().HSet(ctx, store.aggregateKey("a"), "v", "-1").Err()
			},
		},
		{
			name: "aggregate key of the wrong type",
			prepare: func(ctx context.Context, store *Store) error {
				return store.Client().Set(ctx, store.aggregateKey("a"), "x", 0).Err()
			},
		},
		{
			name: "corrupt outcome",
			prepare: func(ctx context.Context, store *Store) error {
				bucket, _ := store.decisionBuckets("a")
				return store.Client().HSet(ctx, store.decisionKey("a", bucket), "c-1", []byte{'x', 0, 0, 0}).Err()
			},
			isCorruptOutcome: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, _ := newMiniStore(t, Options{})
			ctx := context.Background()
			if err := tt.prepare(ctx, store); err != nil {
				t.Fatal(err)
			}
			_, _, err := store.Load(ctx, []string{"a"}, []CommandRef{{AggregateID: "a", CommandID: "c-1"}})
			if err == nil {
				t.Fatalf("Load of corrupt data returned no error")
			}
			if !strings.Contains(err.Error(), "a") {
				t.Errorf("error %q does not name the aggregate", err)
			}
			if got := errors.Is(err, errCorruptOutcome); got != tt.isCorruptOutcome {
				t.Errorf("errors.Is(%v, errCorruptOutcome) = %t, want %t", err, got, tt.isCorruptOutcome)
			}
		})
	}
}

func TestOutcomeTTL(t *testing.T) {
	tests := []struct {
		name    string
		ttl     time.Duration
		wantTTL time.Duration
	}{
		{name: "default", ttl: 0, wantTTL: 24 * time.Hour},
		{name: "negative means the default", ttl: -time.Minute, wantTTL: 24 * time.Hour},
		{name: "one hour", ttl: time.Hour, wantTTL: time.Hour},
		{name: "seconds", ttl: 90 * time.Second, wantTTL: 90 * time.Second},
		// Redis refuses PX 0 after the script has written the version: the
		// TTL must never round down to 0.
		{name: "under a millisecond", ttl: 500 * time.Microsecond, wantTTL: time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, server := newMiniStore(t, Options{OutcomeTTL: tt.ttl, DedupeTTL: tt.ttl})
			clock := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
			store.now = func() time.Time { return clock }
			server.SetTime(clock)
			mustCommit(t, store, testChange("a", 0, 1, "c-1"))
			if got := server.TTL(store.outcomeKey("a", "c-1")); got != tt.wantTTL {
				t.Errorf("TTL of the outcome key = %s, want %s", got, tt.wantTTL)
			}
			bucket, _ := store.decisionBuckets("a")
			decisionTTL := server.TTL(store.decisionKey("a", bucket))
			if decisionTTL < tt.wantTTL || decisionTTL > 2*tt.wantTTL {
				t.Errorf("TTL of the decision hash = %s, want between %s and %s", decisionTTL, tt.wantTTL, 2*tt.wantTTL)
			}
			if got := server.TTL(store.aggregateKey("a")); got != 0 {
				t.Errorf("TTL of the aggregate hash = %s, want none: versions must never expire", got)
			}

			server.FastForward(tt.wantTTL - time.Millisecond)
			if _, ok := mustOutcome(t, store, "a", "c-1"); !ok {
				t.Fatalf("the outcome expired before its TTL of %s", tt.wantTTL)
			}
			server.FastForward(2 * time.Millisecond)
			if _, err := store.LoadOutcomes(context.Background(), []CommandRef{{AggregateID: "a", CommandID: "c-1"}}); !errors.Is(err, ErrOutcomeExpired) {
				t.Fatalf("the outcome records are still there after their TTL of %s: %v", tt.wantTTL, err)
			}
			// Within DedupeTTL the command is still a duplicate (the server's
			// clock went 1 ms past the outcome TTL above: only measurable
			// for TTLs of more than a few milliseconds).
			clock = clock.Add(tt.wantTTL - time.Millisecond)
			if tt.wantTTL > 2*time.Millisecond {
				if err := store.Commit(context.Background(), []Change{testChange("a", 1, 2, "c-1")}); !errors.Is(err, ErrFenced) {
					t.Fatalf("a second decision on c-1 within the dedupe window returned %v, want ErrFenced", err)
				}
			}
			if got := mustGet(t, store, "a"); got.Version != 1 {
				t.Errorf("aggregate at version %d after the outcome expired, want 1", got.Version)
			}
			// Past twice DedupeTTL, the command ID is no longer a duplicate.
			clock = clock.Add(tt.wantTTL + decisionTTL)
			server.SetTime(clock)
			server.FastForward(decisionTTL + tt.wantTTL)
			mustCommit(t, store, testChange("a", 1, 2, "c-1"))
		})
	}
}

// TestCommitReloadsScript: after SCRIPT FLUSH (as after a restart), Commit
// loads the script again and succeeds.
func TestCommitReloadsScript(t *testing.T) {
	store, _ := newMiniStore(t, Options{})
	mustCommit(t, store, testChange("a", 0, 1, "c-1"))
	if err := store.Client().ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	mustCommit(t, store, testChange("a", 1, 2, "c-2"), testChange("b", 0, 1, "c-3"))
	if got := mustGet(t, store, "a"); got.Version != 2 {
		t.Errorf("aggregate a at version %d after a Commit following SCRIPT FLUSH, want 2", got.Version)
	}
}

func TestConcurrentAdvance(t *testing.T) { runConcurrentAdvance(t, miniStores(t), 5) }

// runConcurrentAdvance races 8 workers to advance one aggregate from the same
// loaded version, rounds times: exactly one wins each round.
func runConcurrentAdvance(t *testing.T, store *Store, rounds int) {
	const workers = 8
	ctx := context.Background()
	for round := range rounds {
		loaded := mustGet(t, store, "hot")
		start := make(chan struct{})
		errs := make([]error, workers)
		var wg sync.WaitGroup
		for worker := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				change := Change{
					AggregateID: "hot",
					FromVersion: loaded.Version,
					ToVersion:   loaded.Version + 1,
					Type:        "Product",
					State:       []byte(fmt.Sprintf("worker %d", worker)),
					Outcomes:    []Outcome{testOutcome(fmt.Sprintf("r%d-w%d", round, worker), loaded.Version+1)},
				}
				<-start
				errs[worker] = store.Commit(ctx, []Change{change})
			}()
		}
		close(start)
		wg.Wait()

		winner := -1
		for worker, err := range errs {
			var fenced *FencedError
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: workers %d and %d both advanced the aggregate from version %d: the compare-and-set let two writers through", round, winner, worker, loaded.Version)
			case err == nil:
				winner = worker
			case !errors.As(err, &fenced):
				t.Fatalf("round %d: worker %d: Commit = %v, want nil or a *FencedError", round, worker, err)
			case fenced.ActualVersion != loaded.Version+1 || fenced.ExpectedVersion != loaded.Version:
				t.Errorf("round %d: worker %d fenced with %+v, want expected %d and actual %d", round, worker, *fenced, loaded.Version, loaded.Version+1)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no worker advanced the aggregate from version %d", round, loaded.Version)
		}
		got := mustGet(t, store, "hot")
		if got.Version != loaded.Version+1 || string(got.State) != fmt.Sprintf("worker %d", winner) {
			t.Fatalf("round %d: aggregate at version %d with state %q, want version %d with the winner's state %q",
				round, got.Version, got.State, loaded.Version+1, fmt.Sprintf("worker %d", winner))
		}
		for worker := range workers {
			_, ok := mustOutcome(t, store, "hot", fmt.Sprintf("r%d-w%d", round, worker))
			if ok != (worker == winner) {
				t.Errorf("round %d: outcome of worker %d recorded = %t, want %t: only the winner's outcome may be recorded", round, worker, ok, worker == winner)
			}
		}
	}
}

func TestStoreMatchesModel(t *testing.T) { runStoreMatchesModel(t, miniStores(t)) }

// storeModel is what the store should hold: versions, states and the first
// outcome recorded for each command.
type storeModel struct {
	versions map[string]int64
	states   map[string][]byte
	outcomes map[CommandRef][]byte // encoded, as first recorded
}

// runStoreMatchesModel runs random sequences of Commit and Load against the
// store and a model: the store's versions always equal the model's, fenced
// changes are exactly the model's, and no recorded outcome is ever
// overwritten.
func runStoreMatchesModel(t *testing.T, store *Store) {
	ctx := context.Background()
	run := 0
	rapid.Check(t, func(rt *rapid.T) {
		run++
		// Each run has aggregate IDs of its own, so runs share the store
		// without seeing each other's keys.
		aggregateIDs := make([]string, 3)
		for i := range aggregateIDs {
			aggregateIDs[i] = fmt.Sprintf("run%d-agg%d", run, i)
		}
		commandIDs := []string{"c0", "c1", "c2", "c3", "c4", "c5"}
		model := storeModel{versions: map[string]int64{}, states: map[string][]byte{}, outcomes: map[CommandRef][]byte{}}

		check := func(rt *rapid.T) {
			var refs []CommandRef
			for _, aggregateID := range aggregateIDs {
				for _, commandID := range commandIDs {
					refs = append(refs, CommandRef{AggregateID: aggregateID, CommandID: commandID})
				}
			}
			aggregates, outcomes, err := store.Load(ctx, aggregateIDs, refs)
			if err != nil {
				rt.Fatalf("Load failed: %v", err)
			}
			for _, aggregateID := range aggregateIDs {
				got := aggregates[aggregateID]
				if got.Version != model.versions[aggregateID] || !bytes.Equal(got.State, model.states[aggregateID]) {
					rt.Fatalf("aggregate %s at version %d with state %q; the model says version %d with state %q",
						aggregateID, got.Version, got.State, model.versions[aggregateID], model.states[aggregateID])
				}
			}
			for _, ref := range refs {
				got, ok := outcomes[ref]
				want, recorded := model.outcomes[ref]
				switch {
				case ok != recorded:
					rt.Fatalf("outcome of %+v present = %t; the model says %t", ref, ok, recorded)
				case ok && got.CommandID != ref.CommandID:
					rt.Fatalf("outcome of %+v has CommandID %q", ref, got.CommandID)
				case ok && !bytes.Equal(mustLoadOutcome(rt, store, ref), want):
					rt.Fatalf("outcome of %+v was overwritten: it is %x, the first recorded was %x", ref, mustLoadOutcome(rt, store, ref), want)
				}
			}
		}

		rt.Repeat(map[string]func(*rapid.T){
			"commit": func(rt *rapid.T) {
				changes := rapid.SliceOfN(rapid.Custom(func(rt *rapid.T) Change {
					aggregateID := rapid.SampledFrom(aggregateIDs).Draw(rt, "aggregate")
					from := model.versions[aggregateID]
					if rapid.IntRange(0, 3).Draw(rt, "stale") == 0 {
						from = rapid.Int64Range(0, 6).Draw(rt, "from")
					}
					to := from + rapid.Int64Range(0, 2).Draw(rt, "advance")
					ids := rapid.SliceOfNDistinct(rapid.SampledFrom(commandIDs), 0, 3, rapid.ID[string]).Draw(rt, "commands")
					change := Change{AggregateID: aggregateID, FromVersion: from, ToVersion: to, Type: "T",
						State: rapid.SliceOfN(rapid.Byte(), 1, 8).Draw(rt, "state")}
					for _, commandID := range ids {
						outcome := outcomeGenerator().Draw(rt, "outcome")
						outcome.CommandID = commandID
						change.Outcomes = append(change.Outcomes, outcome)
					}
					return change
				}), 1, 4).Draw(rt, "changes")

				var wantFenced []FencedError
				for _, change := range changes {
					current := model.versions[change.AggregateID]
					if current != change.FromVersion {
						wantFenced = append(wantFenced, FencedError{AggregateID: change.AggregateID, ExpectedVersion: change.FromVersion, ActualVersion: current})
						continue
					}
					duplicate := ""
					for _, outcome := range change.Outcomes {
						if _, ok := model.outcomes[CommandRef{change.AggregateID, outcome.CommandID}]; ok {
							duplicate = outcome.CommandID
							break
						}
					}
					if duplicate != "" {
						wantFenced = append(wantFenced, FencedError{AggregateID: change.AggregateID, ExpectedVersion: current, ActualVersion: current, CommandID: duplicate})
						continue
					}
					if change.ToVersion != change.FromVersion {
						model.versions[change.AggregateID] = change.ToVersion
						model.states[change.AggregateID] = change.State
					}
					for _, outcome := range change.Outcomes {
						model.outcomes[CommandRef{change.AggregateID, outcome.CommandID}] = encodeOutcome(outcome)
					}
				}

				err := store.Commit(ctx, changes)
				got := fencedErrors(err)
				if err != nil && len(got) == 0 {
					rt.Fatalf("Commit failed: %v", err)
				}
				if len(got) != len(wantFenced) {
					rt.Fatalf("Commit = %v; the model expects %d fenced changes: %+v", err, len(wantFenced), wantFenced)
				}
				for i := range wantFenced {
					if *got[i] != wantFenced[i] {
						rt.Fatalf("fenced change %d = %+v; the model expects %+v", i, *got[i], wantFenced[i])
					}
				}
			},
			"load": check,
			"":     check,
		})
	})
}

// bitwiseCRC16 is the CRC16-CCITT (XMODEM) that Redis Cluster hashes keys with.
func bitwiseCRC16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// keySlot is the Redis Cluster slot of a key: the hash of its hash tag,
// the part between the first '{' and the first '}' after it, when that part
// is not empty; of the whole key otherwise.
func keySlot(key string) int {
	if start := strings.IndexByte(key, '{'); start >= 0 {
		if end := strings.IndexByte(key[start+1:], '}'); end > 0 {
			key = key[start+1 : start+1+end]
		}
	}
	return int(bitwiseCRC16(key) % 16384)
}

func TestClusterSlot(t *testing.T) {
	if got := bitwiseCRC16("123456789"); got != 0x31c3 {
		t.Fatalf("bitwiseCRC16(123456789) = %#x, want 0x31c3 (the Redis Cluster specification's check value)", got)
	}
	tests := []struct {
		key  string
		want string // a key with the same slot
	}{
		{key: "{user1000}.following", want: "user1000"},
		{key: "foo{}{bar}", want: "foo{}{bar}"},
		{key: "foo{{bar}}zap", want: "{bar"},
		{key: "foo{bar}{zap}", want: "bar"},
	}
	for _, tt := range tests {
		if got, want := keySlot(tt.key), int(bitwiseCRC16(tt.want)%16384); got != want {
			t.Errorf("keySlot(%q) = %d, want %d, the slot of %q (Redis Cluster specification examples)", tt.key, got, want, tt.want)
		}
		if got, want := slotOfKey(tt.key), keySlot(tt.key); got != want {
			t.Errorf("slotOfKey(%q) = %d, want %d", tt.key, got, want)
		}
	}
	if got := keySlot("foo"); got != 12182 {
		t.Errorf("keySlot(foo) = %d, want 12182 (CLUSTER KEYSLOT foo)", got)
	}
}

// TestKeyLayout checks that every key of one aggregate carries the hash tag
// {<escaped aggregateId>} and so lands in one cluster slot, which a script
// call needs on Redis Cluster.
func TestKeyLayout(t *testing.T) {
	tests := []struct {
		aggregateID string
		prefix      string
	}{
		{aggregateID: "prod-123"},
		{aggregateID: "prod-123", prefix: "tenant-7:arbiter"},
		{aggregateID: "a:b:c"},
		{aggregateID: "a:c:b"},
		{aggregateID: "a{b"},
		{aggregateID: "a}b"},
		{aggregateID: "{a}"},
		{aggregateID: "{}"},
		{aggregateID: "{"},
		{aggregateID: "a}:c:b}"},
		{aggregateID: "produit-é-✓-商品-🚀"},
		{aggregateID: "}"},
		{aggregateID: "}x"},
		{aggregateID: `a\]b`},
		{aggregateID: `\`},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+"|"+tt.aggregateID, func(t *testing.T) {
			store, server := newMiniStore(t, Options{KeyPrefix: tt.prefix})
			commandIDs := []string{"c-1", "c:2}", "{c-3}", "命令"}
			mustCommit(t, store, testChange(tt.aggregateID, 0, 1, commandIDs...))

			prefix := tt.prefix
			if prefix == "" {
				prefix = "arbiter"
			}
			// In keys, '\\' and '}' of the ID are escaped, so that the tag
			// spans the whole ID.
			escaped := strings.NewReplacer(`\`, `\\`, "}", `\]`).Replace(tt.aggregateID)
			tag := prefix + ":{" + escaped + "}"
			if strings.Count(tag, "}") != 1 {
				t.Fatalf("the hash tag %q holds a '}' of the ID: it ends early", tag)
			}
			var keys []string
			for _, key := range server.Keys() {
				if key != prefix+":initialized" { // the marker, one per Redis
					keys = append(keys, key)
				}
			}
			if len(keys) != 2+len(commandIDs) {
				t.Fatalf("keys = %q, want the aggregate hash, its decision hash and %d outcome keys", keys, len(commandIDs))
			}
			var problems []string
			slot := keySlot(tag)
			for _, key := range keys {
				if !strings.HasPrefix(key, tag) {
					problems = append(problems, fmt.Sprintf("key %q does not start with %q", key, tag))
				}
				if got := keySlot(key); got != slot {
					problems = append(problems, fmt.Sprintf("key %q is in cluster slot %d, the aggregate hash %q in slot %d", key, got, tag, slot))
				}
			}
			broken := ""
			if len(problems) > 0 {
				broken = "every key of an aggregate must share its hash tag and slot: " + strings.Join(problems, "; ")
			}
			checkBroken(t, broken)

			// The store reads back what it wrote, whatever the ID holds.
			if got := mustGet(t, store, tt.aggregateID); got.Version != 1 {
				t.Errorf("aggregate %q at version %d after Commit, want 1", tt.aggregateID, got.Version)
			}
			for _, commandID := range commandIDs {
				if _, ok := mustOutcome(t, store, tt.aggregateID, commandID); !ok {
					t.Errorf("outcome of command %q of aggregate %q not found", commandID, tt.aggregateID)
				}
			}
		})
	}
}

func TestKeysOfDifferentAggregatesDoNotCollide(t *testing.T) {
	runKeysOfDifferentAggregatesDoNotCollide(t, miniStores)
}

// runKeysOfDifferentAggregatesDoNotCollide: aggregate and command IDs are
// free text, so the key layout must keep every aggregate's keys apart.
func runKeysOfDifferentAggregatesDoNotCollide(t *testing.T, newStore func(*testing.T) *Store) {
	tests := []struct {
		name  string
		first Change // committed first
		then  Change // must apply: it shares no aggregate or command with first
	}{
		{
			name:  "aggregate hash then another aggregate's outcome",
			first: testChange("x}:c:y", 0, 1),
			then:  testChange("x", 0, 1, "y}"),
		},
		{
			name:  "an outcome then another aggregate's hash",
			first: testChange("x", 0, 1, "y}"),
			then:  testChange("x}:c:y", 0, 1),
		},
		{
			name:  "outcomes of two aggregates",
			first: testChange("x", 0, 1, "y}:c:z"),
			then:  testChange("x}:c:y", 0, 1, "z"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newStore(t)
			mustCommit(t, store, tt.first)
			broken := ""
			if err := store.Commit(context.Background(), []Change{tt.then}); err != nil {
				broken = fmt.Sprintf("after committing %q, Commit of unrelated aggregate %q = %v; keys of different aggregates must never collide",
					tt.first.AggregateID, tt.then.AggregateID, err)
			}
			checkBroken(t, broken)
		})
	}
}

func TestEscapeRoundTrip(t *testing.T) {
	for _, id := range []string{"", "a", "a}b", `a\b`, `\]`, `}}\\`, "商品}"} {
		var b strings.Builder
		writeEscaped(&b, id)
		if strings.Contains(b.String(), "}") {
			t.Errorf("escaped %q as %q, which holds a '}'", id, b.String())
		}
		if got, ok := unescapeAggregateID(b.String()); !ok || got != id {
			t.Errorf("unescape(escape(%q)) = %q, %v", id, got, ok)
		}
	}
}

func TestVersions(t *testing.T) {
	store, _ := newMiniStore(t, Options{KeyPrefix: "p[1]"})
	mustCommit(t, store, testChange("a}b", 0, 3, "c-1}"))
	mustCommit(t, store, testChange("plain", 0, 1, "x"))
	versions, err := store.Versions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) != 2 || versions["a}b"] != 3 || versions["plain"] != 1 {
		t.Fatalf("Versions = %v, want a}b at 3 and plain at 1 (and no outcome keys)", versions)
	}
}

// TestSlotFunctions checks the store's table-driven CRC16 against the
// test's bitwise one, and that every slot gets a marker tag in its slot.
func TestSlotFunctions(t *testing.T) {
	for _, s := range []string{"", "a", "foo", "prod-123", "商品", "\x00\xff", strings.Repeat("z", 300)} {
		if got, want := crc16(s), bitwiseCRC16(s); got != want {
			t.Errorf("crc16(%q) = %d, the bitwise CRC16 says %d", s, got, want)
		}
	}
	tags := slotTags()
	for slot, tag := range tags {
		if clusterSlot(tag) != slot || strings.ContainsAny(tag, "{}") {
			t.Fatalf("the marker tag %q of slot %d hashes to slot %d", tag, slot, clusterSlot(tag))
		}
	}
}

// mustLoadOutcome returns the encoded outcome recorded for ref.
func mustLoadOutcome(rt *rapid.T, store *Store, ref CommandRef) []byte {
	outcomes, err := store.LoadOutcomes(context.Background(), []CommandRef{ref})
	if err != nil {
		rt.Fatalf("LoadOutcomes of %+v: %v", ref, err)
	}
	return encodeOutcome(outcomes[ref])
}

// TestDecisionBuckets: a decision stays a duplicate across the boundary of
// its time bucket, and a worker whose clock runs behind still cannot decide
// a command again that a worker ahead of it recorded in the next bucket.
func TestDecisionBuckets(t *testing.T) {
	ttl := time.Minute
	store, server := newMiniStore(t, Options{DedupeTTL: ttl})
	start := time.Date(2026, 11, 25, 10, 0, 59, 0, time.UTC) // a second before a bucket ends
	clock := start
	store.now = func() time.Time { return clock }
	server.SetTime(clock)
	mustCommit(t, store, testChange("a", 0, 1, "c-1"))

	for _, tt := range []struct {
		name string
		skew time.Duration
	}{
		{"the next bucket", 2 * time.Second},
		{"the end of the next bucket", ttl},
	} {
		clock = start.Add(tt.skew)
		_, decisions, err := store.Load(context.Background(), nil, []CommandRef{{AggregateID: "a", CommandID: "c-1"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := decisions[CommandRef{AggregateID: "a", CommandID: "c-1"}]; !ok {
			t.Fatalf("in %s the decision on c-1 is no longer loaded", tt.name)
		}
	}

	// A worker ahead records c-2 in the next bucket; one behind loads nothing
	// but its compare-and-set refuses.
	clock = start.Add(2 * time.Second)
	mustCommit(t, store, testChange("a", 1, 2, "c-2"))
	clock = start
	if err := store.Commit(context.Background(), []Change{testChange("a", 2, 2, "c-2")}); !errors.Is(err, ErrFenced) {
		t.Fatalf("a worker behind decided c-2 again: %v, want ErrFenced", err)
	}
}
