package versionstore

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// FuzzCommitScript feeds the compare-and-set script odd inputs — bytes of
// every kind in aggregate and command IDs, huge and negative versions, empty
// and large snapshots and records — and checks what must always hold: no
// panic, a change applies only from the version Redis holds, and what was
// written reads back exactly. It runs the script on miniredis (gopher-lua);
// the integration tests run the same script on a real redis-server.
func FuzzCommitScript(f *testing.F) {
	f.Add("prod-123", "c-1", int64(0), int64(1), []byte(`{"price":22}`), []byte(`{"id":"e"}`), int32(3), int64(42))
	f.Add("}", "{", int64(0), int64(9007199254740993), []byte{}, []byte{}, int32(0), int64(0))
	f.Add("a\x00b\xff", "c\r\n:d:", int64(-1), int64(-5), []byte{0, 1, 2}, []byte{0xff}, int32(-1), int64(-9))
	f.Add(`\]`, "命令", int64(1), int64(1), bytes.Repeat([]byte("s"), 70000), bytes.Repeat([]byte("r"), 70000), int32(2147483647), int64(9223372036854775807))
	f.Fuzz(func(t *testing.T, aggregateID, commandID string, from, to int64, state, record []byte, partition int32, offset int64) {
		if aggregateID == "" || commandID == "" {
			return // the processor never commits an empty ID: commands.Decode refuses it
		}
		store, _ := newMiniStore(t, Options{})
		ctx := context.Background()
		outcome := Outcome{CommandID: commandID, Partition: partition, Offset: offset, Applied: true, Version: to,
			Records: []OutcomeRecord{{Kind: KindEvent, Value: record}}}
		err := store.Commit(ctx, []Change{{AggregateID: aggregateID, FromVersion: from, ToVersion: to, Type: "T", State: state, Outcomes: []Outcome{outcome}}})
		got, err2 := store.Get(ctx, aggregateID)
		if err2 != nil {
			if to < 0 && err == nil {
				// A negative version is written but not readable back as a
				// version: the processor never produces one.
				return
			}
			t.Fatalf("Get after Commit: %v", err2)
		}
		if from != 0 {
			if !errors.Is(err, ErrFenced) {
				t.Fatalf("a change from version %d on a new aggregate returned %v, want ErrFenced", from, err)
			}
			if got.Version != 0 {
				t.Fatalf("a fenced change wrote version %d", got.Version)
			}
			return
		}
		if err != nil {
			t.Fatalf("Commit from version 0 of a new aggregate: %v", err)
		}
		wantVersion := to
		if to == from {
			wantVersion = 0 // a conflict-only change leaves the aggregate as it was
		}
		if got.Version != wantVersion {
			t.Fatalf("aggregate %q at version %d after a change to %d", aggregateID, got.Version, to)
		}
		if to != from && !bytes.Equal(got.State, state) {
			t.Fatalf("state %q read back as %q", state, got.State)
		}
		loaded, ok := mustOutcome(t, store, aggregateID, commandID)
		if !ok || loaded.Decision() != outcome.Decision() || !bytes.Equal(loaded.Records[0].Value, record) {
			t.Fatalf("outcome of %q read back as %+v (found %v), want %+v", commandID, loaded, ok, outcome)
		}
		// A second decision on the same command is refused.
		err = store.Commit(ctx, []Change{{AggregateID: aggregateID, FromVersion: got.Version, ToVersion: got.Version, Outcomes: []Outcome{outcome}}})
		if !errors.Is(err, ErrFenced) {
			t.Fatalf("a second decision on command %q returned %v, want ErrFenced", commandID, err)
		}
	})
}
