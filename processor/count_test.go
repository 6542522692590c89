package processor

import (
	"testing"

	"github.com/arbiter-cqrs/arbiter/events"
)

// TestReplaysCountByRecordedOutcome: a replay publishes the outcome of an
// aborted transaction, which the Observer never counted; it counts by the
// recorded reason, so every command is counted once, when its outcome
// commits (arbiter_commands_total).
func TestReplaysCountByRecordedOutcome(t *testing.T) {
	b := &batch{outcomes: []decided{
		{kind: outcomeApplied},
		{kind: outcomeReplayed},
		{kind: outcomeReplayed, reason: events.ReasonVersionConflict},
		{kind: outcomeConflict, reason: events.ReasonDuplicate},
	}}
	var params BatchParams
	b.count(&params)
	want := OutcomeCounts{Applied: 2, VersionConflict: 1, Duplicate: 1}
	if b.counts != want {
		t.Errorf("counts %+v, want %+v", b.counts, want)
	}
	if params.Applied != 1 || params.Conflicts != 1 || params.Replayed != 2 {
		t.Errorf("params %+v: want 1 applied, 1 conflict, 2 replayed", params)
	}
}
