package versionstore

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
)

// TestCommitRefusesARedisThatWentBackInTime: a change whose floor is above
// the decided watermark Redis holds is refused with a *RollbackError (which
// is ErrAmnesia) and writes nothing; at or below it goes through and raises
// the watermark.
func TestCommitRefusesARedisThatWentBackInTime(t *testing.T) {
	ctx := context.Background()
	store, _ := newMiniStore(t, Options{})
	first := testChange("a", 0, 1, "c-1")
	first.Partition, first.NextOffset = 2, 11
	if err := store.Commit(ctx, []Change{first}); err != nil {
		t.Fatal(err)
	}
	decided, _, err := store.Watermarks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if decided[2] != 11 {
		t.Fatalf("decided watermark of partition 2 is %d, want 11", decided[2])
	}
	tests := []struct {
		name    string
		floor   int64
		refused bool
	}{
		{"floor below the watermark", 5, false},
		{"floor at the watermark", 11, false},
		{"floor above the watermark: redis went back in time", 30, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			aggregateID := "b" + string(rune('0'+i))
			change := testChange(aggregateID, 0, 1, "c-"+aggregateID)
			change.Partition, change.Floor = 2, tt.floor // NextOffset 0: the watermark stays
			err := store.Commit(ctx, []Change{change})
			var rollback *RollbackError
			if got := errors.As(err, &rollback); got != tt.refused {
				t.Fatalf("refused = %v (%v), want %v", got, err, tt.refused)
			}
			if !tt.refused {
				return
			}
			if !errors.Is(err, ErrAmnesia) || rollback.Held != 11 || rollback.Expected != 30 {
				t.Fatalf("want ErrAmnesia holding 11 expecting 30, got %+v", rollback)
			}
			if got, _ := store.Get(ctx, aggregateID); got.Version != 0 {
				t.Fatalf("a refused change wrote version %d", got.Version)
			}
		})
	}
}

func TestCheckWindows(t *testing.T) {
	ctx := context.Background()
	store, _ := newMiniStore(t, Options{})
	client := store.Client()
	tests := []struct {
		name    string
		opts    Options
		wantErr bool
	}{
		{"first worker records its dedupe TTL", Options{DedupeTTL: time.Hour, OutcomeTTL: time.Hour}, false},
		{"the same windows", Options{DedupeTTL: time.Hour, OutcomeTTL: time.Minute}, false},
		{"outcome TTL above dedupe TTL", Options{DedupeTTL: time.Hour, OutcomeTTL: 2 * time.Hour}, true},
		{"another dedupe TTL than redis holds", Options{DedupeTTL: 2 * time.Hour, OutcomeTTL: time.Hour}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := New(client, tt.opts).CheckWindows(ctx)
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrWindowMismatch)) {
				t.Fatalf("CheckWindows = %v, want an error: %v", err, tt.wantErr)
			}
		})
	}
}

// TestForgetUnpublished: the rebuild keeps the decisions of committed
// records, drops those at or after the committed offsets and every outcome
// record, and resets the watermarks.
func TestForgetUnpublished(t *testing.T) {
	ctx := context.Background()
	store, _ := newMiniStore(t, Options{})
	published := testChange("a", 0, 1, "c-published") // partition 2, offset 10
	unpublished := testChange("b", 0, 1, "c-unpublished")
	unpublished.Outcomes[0].Offset = 50
	unpublished.Partition, unpublished.NextOffset = 2, 51
	if err := store.Commit(ctx, []Change{published, unpublished}); err != nil {
		t.Fatal(err)
	}
	report, err := store.ForgetUnpublished(ctx, map[int32]int64{2: 20})
	if err != nil {
		t.Fatal(err)
	}
	if report.Decisions != 1 || report.Outcomes != 2 {
		t.Fatalf("dropped %d decisions and %d outcome records, want 1 and 2", report.Decisions, report.Outcomes)
	}
	_, recorded, err := store.Load(ctx, nil, []CommandRef{{AggregateID: "a", CommandID: "c-published"}, {AggregateID: "b", CommandID: "c-unpublished"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := recorded[CommandRef{AggregateID: "a", CommandID: "c-published"}]; !ok {
		t.Error("the decision of a committed record was dropped: its duplicate would be decided again")
	}
	if _, ok := recorded[CommandRef{AggregateID: "b", CommandID: "c-unpublished"}]; ok {
		t.Error("the decision of an unpublished record was kept: its replay would publish a version redis no longer holds")
	}
	decided, committed, err := store.Watermarks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if decided[2] != 20 || committed[2] != 20 {
		t.Fatalf("watermarks after the rebuild: decided %d, committed %d; want both at the committed offset 20", decided[2], committed[2])
	}
}

// TestCommittedFloorsOnOneServer: a single Redis keeps no committed floors
// (its one decided watermark is read with Watermarks).
func TestCommittedFloorsOnOneServer(t *testing.T) {
	ctx := context.Background()
	store, _ := newMiniStore(t, Options{})
	if err := store.RaiseCommitted(ctx, map[int32]int64{0: 3}, map[ShardFloor]int64{{Shard: 0, Partition: 0}: 3}); err != nil {
		t.Fatal(err)
	}
	if floors, err := store.CommittedFloors(ctx, []int32{0}); err != nil || floors != nil {
		t.Errorf("CommittedFloors = %v, %v on one server, want nil, nil", floors, err)
	}
}
