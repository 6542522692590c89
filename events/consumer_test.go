package events

import (
	"testing"
)

func TestVersionTrackerEvictsTheLeastRecentlySeen(t *testing.T) {
	tr := newVersionTracker(2)
	tr.set("a", 1, 0)
	tr.set("b", 1, 0)
	tr.set("a", 2, 0) // a is now the most recent
	tr.set("c", 1, 1) // evicts b
	for _, tt := range []struct {
		id      string
		want    int64
		present bool
	}{{"a", 2, true}, {"b", 0, false}, {"c", 1, true}} {
		if got, ok := tr.last(tt.id); ok != tt.present || got != tt.want {
			t.Fatalf("last(%s) = %d, %v; want %d, %v", tt.id, got, ok, tt.want, tt.present)
		}
	}
	tr.forgetPartitions([]int32{1})
	if _, ok := tr.last("c"); ok {
		t.Fatal("an aggregate of a revoked partition is still tracked")
	}
	if _, ok := tr.last("a"); !ok {
		t.Fatal("an aggregate of a kept partition was forgotten")
	}
}
