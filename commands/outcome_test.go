package commands

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/cockroachdb/errors"
)

func TestOutcomeOfConflict(t *testing.T) {
	v := events.Version
	tests := []struct {
		name         string
		conflict     events.Conflict
		wantApplied  Applied
		wantIs       error
		wantExpected int64
		wantActual   int64
		wantDup      bool
	}{
		{
			name:     "version conflict",
			conflict: events.Conflict{CommandID: "c-2", AggregateID: "prod-123", Reason: events.ReasonVersionConflict, ExpectedVersion: v(5), ActualVersion: v(6), Message: "expected version 5, but found 6"},
			wantIs:   ErrVersionConflict, wantExpected: 5, wantActual: 6,
		},
		{
			name:     "rejected",
			conflict: events.Conflict{CommandID: "c-3", AggregateID: "prod-123", Reason: events.ReasonRejected, ExpectedVersion: v(6), ActualVersion: v(6), Message: "price must be greater than 0"},
			wantIs:   ErrRejected, wantExpected: 6, wantActual: 6,
		},
		{
			name:     "invalid",
			conflict: events.Conflict{CommandID: "c-4", AggregateID: "prod-123", Reason: events.ReasonInvalid, Message: "expectedVersion is missing"},
			wantIs:   ErrInvalid,
		},
		{
			name:     "unknown type",
			conflict: events.Conflict{CommandID: "c-5", AggregateID: "prod-123", Reason: events.ReasonUnknownType, ExpectedVersion: v(7), Message: "no handler"},
			wantIs:   ErrUnknownType, wantExpected: 7,
		},
		{
			name:        "duplicate of an applied command is its applied outcome",
			conflict:    events.Conflict{CommandID: "c-1", AggregateID: "prod-123", Reason: events.ReasonDuplicate, ExpectedVersion: v(5), ActualVersion: v(7), OriginalReason: events.OriginalApplied, OriginalVersion: v(6)},
			wantApplied: Applied{CommandID: "c-1", AggregateID: "prod-123", Version: 6, Duplicate: true},
		},
		{
			name:     "duplicate of a conflicted command is the original's error",
			conflict: events.Conflict{CommandID: "c-2", AggregateID: "prod-123", Reason: events.ReasonDuplicate, ExpectedVersion: v(5), ActualVersion: v(7), OriginalReason: string(events.ReasonVersionConflict), OriginalVersion: v(6)},
			wantIs:   ErrVersionConflict, wantExpected: 5, wantActual: 6, wantDup: true,
		},
		{
			name:     "duplicate of a rejected command",
			conflict: events.Conflict{CommandID: "c-3", AggregateID: "prod-123", Reason: events.ReasonDuplicate, ExpectedVersion: v(6), ActualVersion: v(7), OriginalReason: string(events.ReasonRejected), OriginalVersion: v(6)},
			wantIs:   ErrRejected, wantExpected: 6, wantActual: 6, wantDup: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			applied, err := OutcomeOfConflict(tt.conflict)
			if tt.wantIs == nil {
				if err != nil || applied.Version != tt.wantApplied.Version || applied.Duplicate != tt.wantApplied.Duplicate || applied.CommandID != tt.wantApplied.CommandID {
					t.Fatalf("got %+v, %v; want %+v", applied, err, tt.wantApplied)
				}
				return
			}
			if !errors.Is(err, tt.wantIs) {
				t.Fatalf("errors.Is(%v, %v) is false", err, tt.wantIs)
			}
			for _, other := range []error{ErrVersionConflict, ErrRejected, ErrInvalid, ErrUnknownType} {
				if other != tt.wantIs && errors.Is(err, other) {
					t.Fatalf("error %v also matches %v", err, other)
				}
			}
			var conflict *ConflictError
			if !errors.As(err, &conflict) {
				t.Fatalf("errors.As(*ConflictError) is false for %v", err)
			}
			if conflict.ExpectedVersion != tt.wantExpected || conflict.ActualVersion != tt.wantActual || conflict.Duplicate != tt.wantDup {
				t.Fatalf("details: expected %d actual %d duplicate %v; want %d %d %v", conflict.ExpectedVersion, conflict.ActualVersion, conflict.Duplicate, tt.wantExpected, tt.wantActual, tt.wantDup)
			}
			if !strings.Contains(err.Error(), tt.conflict.CommandID) {
				t.Fatalf("message %q does not name the command", err)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name       string
		line       string
		wantErr    string
		wantID     string
		wantExpect int64
	}{
		{name: "valid", line: `{"id":"c-1","aggregateId":"prod-123","type":"ChangePrice","expectedVersion":5,"payload":{"newPrice":22}}`, wantID: "c-1", wantExpect: 5},
		{name: "missing expectedVersion", line: `{"id":"c-1","aggregateId":"prod-123","type":"ChangePrice"}`, wantErr: "expectedVersion is missing"},
		{name: "fractional version", line: `{"id":"c-1","aggregateId":"prod-123","type":"ChangePrice","expectedVersion":5.5}`, wantErr: "not an integer"},
		{name: "no aggregate", line: `{"id":"c-1","type":"ChangePrice","expectedVersion":5}`, wantErr: "aggregateId is missing"},
		{name: "not JSON", line: `id=c-1`, wantErr: "not a JSON command object"},
		{name: "aggregate ID not a string", line: `{"id":"c-1","aggregateId":5,"type":"T","expectedVersion":1}`, wantErr: "not a JSON command object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := Parse([]byte(tt.line))
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an invalid error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || cmd.ID != tt.wantID || cmd.ExpectedVersion != tt.wantExpect {
				t.Fatalf("got %+v, %v", cmd, err)
			}
		})
	}
}

func TestNewIDIsAUUIDAndFresh(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id := NewID()
		if len(id) != 36 || id[14] != '4' || strings.Count(id, "-") != 4 || seen[id] {
			t.Fatalf("NewID gave %q (len %d, seen before: %v)", id, len(id), seen[id])
		}
		seen[id] = true
	}
}

// fakeSender answers each command with the next scripted outcome.
type fakeSender struct {
	sent     []Command
	outcomes []error
}

func (f *fakeSender) SendAndWait(_ context.Context, cmd Command) (Applied, error) {
	f.sent = append(f.sent, cmd)
	err := f.outcomes[len(f.sent)-1]
	if err != nil {
		return Applied{}, err
	}
	return Applied{CommandID: cmd.ID, AggregateID: cmd.AggregateID, Version: cmd.ExpectedVersion + 1}, nil
}

// fakeReader returns the versions in turn.
type fakeReader struct {
	versions []int64
	reads    int
}

func (f *fakeReader) Get(_ context.Context, id string) (Aggregate, error) {
	v := f.versions[min(f.reads, len(f.versions)-1)]
	f.reads++
	return Aggregate{ID: id, Version: v}, nil
}

func TestRetryOnConflictPolicy(t *testing.T) {
	conflict := &ConflictError{Reason: events.ReasonVersionConflict, CommandID: "x", AggregateID: "a"}
	rejected := &ConflictError{Reason: events.ReasonRejected, CommandID: "x", AggregateID: "a"}
	invalid := &ConflictError{Reason: events.ReasonInvalid, CommandID: "x", AggregateID: "a"}
	unknown := &ConflictError{Reason: events.ReasonUnknownType, CommandID: "x", AggregateID: "a"}
	timeout := errors.Wrap(context.DeadlineExceeded, "wait")
	fast := RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	tests := []struct {
		name      string
		outcomes  []error
		wantSends int
		wantIs    error
		wantVer   int64
	}{
		{name: "applied at once", outcomes: []error{nil}, wantSends: 1, wantVer: 6},
		{name: "applied after two conflicts", outcomes: []error{conflict, conflict, nil}, wantSends: 3, wantVer: 8},
		{name: "gives up after MaxAttempts", outcomes: []error{conflict, conflict, conflict, nil}, wantSends: 3, wantIs: ErrVersionConflict},
		{name: "never retries rejected", outcomes: []error{rejected, nil}, wantSends: 1, wantIs: ErrRejected},
		{name: "never retries invalid", outcomes: []error{invalid, nil}, wantSends: 1, wantIs: ErrInvalid},
		{name: "never retries unknown_type", outcomes: []error{unknown, nil}, wantSends: 1, wantIs: ErrUnknownType},
		{name: "never retries a timeout", outcomes: []error{timeout, nil}, wantSends: 1, wantIs: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sender := &fakeSender{outcomes: tt.outcomes}
			reader := &fakeReader{versions: []int64{5, 6, 7}}
			applied, err := RetryOnConflict(context.Background(), sender, reader, fast, "a", func(_ context.Context, p RetryParams) (Command, error) {
				return Command{Type: "T", ExpectedVersion: p.Current.Version}, nil
			})
			if len(sender.sent) != tt.wantSends {
				t.Fatalf("sent %d commands, want %d", len(sender.sent), tt.wantSends)
			}
			ids := make(map[string]bool)
			for i, cmd := range sender.sent {
				if ids[cmd.ID] || !strings.HasSuffix(cmd.ID, "-a"+string(rune('1'+i))) || cmd.AggregateID != "a" {
					t.Fatalf("attempt %d sent ID %q for %q: want a fresh <base>-a%d for a", i+1, cmd.ID, cmd.AggregateID, i+1)
				}
				ids[cmd.ID] = true
				if cmd.ExpectedVersion != int64(5+i) {
					t.Fatalf("attempt %d was not decided on a fresh read: expected version %d", i+1, cmd.ExpectedVersion)
				}
			}
			if tt.wantIs == nil {
				if err != nil || applied.Version != tt.wantVer {
					t.Fatalf("got %+v, %v; want applied at %d", applied, err, tt.wantVer)
				}
				return
			}
			if !errors.Is(err, tt.wantIs) {
				t.Fatalf("got %v, want %v", err, tt.wantIs)
			}
		})
	}
}

func TestRetryOnConflictRefusesAReusedID(t *testing.T) {
	conflict := &ConflictError{Reason: events.ReasonVersionConflict}
	sender := &fakeSender{outcomes: []error{conflict, nil}}
	_, err := RetryOnConflict(context.Background(), sender, &fakeReader{versions: []int64{5, 6}}, RetryPolicy{InitialBackoff: time.Millisecond}, "a",
		func(_ context.Context, p RetryParams) (Command, error) {
			return Command{ID: "alice-1", Type: "T", ExpectedVersion: p.Current.Version}, nil
		})
	if err == nil || !strings.Contains(err.Error(), "fresh ID") || len(sender.sent) != 1 {
		t.Fatalf("a reused command ID must be refused before sending: sent %d, err %v", len(sender.sent), err)
	}
}

func TestRetryBackoffGrowsWithJitterUpToTheCap(t *testing.T) {
	p := RetryPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	p.setDefaults()
	for attempt, ceiling := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 30: time.Second} {
		for range 100 {
			if d := p.backoff(attempt); d < ceiling/2 || d > ceiling {
				t.Fatalf("backoff after attempt %d is %v, want within [%v, %v]", attempt, d, ceiling/2, ceiling)
			}
		}
	}
}

func TestProducerConfigValidate(t *testing.T) {
	cfg := ProducerConfig{EventsTopic: "x", ConflictsTopic: "x", OnConflict: "merge"}
	cfg.setDefaults()
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "no Kafka brokers") || !strings.Contains(err.Error(), "must differ") || !strings.Contains(err.Error(), `OnConflict "merge"`) {
		t.Fatalf("Validate must report every problem at once, got %v", err)
	}
}

// TestRetryOnConflictAdvances: after a conflict whose eventsSince is
// complete, the next attempt is decided on the aggregate Advance computed,
// without a read; otherwise it reads.
func TestRetryOnConflictAdvances(t *testing.T) {
	since := []events.EventSummary{{Version: 6, Type: "Stocked", ID: "a@6", Payload: []byte(`1`)}}
	complete := &ConflictError{Reason: events.ReasonVersionConflict, ExpectedVersion: 5, ActualVersion: 6,
		Record: events.Conflict{Reason: events.ReasonVersionConflict, EventsSince: since, EventsSinceCount: 1}}
	complete.EventsSince, complete.EventsSinceCount = since, 1
	incomplete := &ConflictError{Reason: events.ReasonVersionConflict, ExpectedVersion: 5, ActualVersion: 7,
		Record: events.Conflict{Reason: events.ReasonVersionConflict, EventsSince: since, EventsSinceCount: 2}}
	incomplete.EventsSince, incomplete.EventsSinceCount = since, 2
	advance := func(a Aggregate, s []events.EventSummary) (Aggregate, bool) {
		a.Version = s[len(s)-1].Version
		a.State = []byte("advanced")
		return a, true
	}
	tests := []struct {
		name      string
		conflict  error
		advance   func(Aggregate, []events.EventSummary) (Aggregate, bool)
		wantReads int
		wantVer   int64
	}{
		{"complete eventsSince: no read", complete, advance, 1, 6},
		{"incomplete eventsSince: read", incomplete, advance, 2, 9},
		{"no Advance: read", complete, nil, 2, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sender := &fakeSender{outcomes: []error{tt.conflict, nil}}
			reader := &fakeReader{versions: []int64{5, 9}}
			var seen []RetryParams
			policy := RetryPolicy{InitialBackoff: time.Millisecond, Advance: tt.advance}
			_, err := RetryOnConflict(context.Background(), sender, reader, policy, "a", func(_ context.Context, p RetryParams) (Command, error) {
				seen = append(seen, p)
				return Command{Type: "T", ExpectedVersion: p.Current.Version}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if reader.reads != tt.wantReads || len(seen) != 2 || seen[1].Current.Version != tt.wantVer {
				t.Fatalf("%d reads, second attempt at version %d; want %d reads, version %d", reader.reads, seen[1].Current.Version, tt.wantReads, tt.wantVer)
			}
			if advanced := tt.wantReads == 1; seen[1].Advanced != advanced || (advanced && string(seen[1].Current.State) != "advanced") {
				t.Errorf("second attempt: Advanced %v state %q", seen[1].Advanced, seen[1].Current.State)
			}
			if len(seen[1].EventsSince) != 1 || seen[1].EventsSince[0].Version != 6 {
				t.Errorf("second attempt's EventsSince %+v, want the conflict's", seen[1].EventsSince)
			}
		})
	}
}

func TestOutcomeOfConflictExposesEventsSince(t *testing.T) {
	since := []events.EventSummary{{Version: 6, Type: "StockIncreased", ID: "p@6", Payload: []byte(`{"newStock":120}`)}}
	_, err := OutcomeOfConflict(events.Conflict{Reason: events.ReasonVersionConflict, CommandID: "c", AggregateID: "p",
		ExpectedVersion: events.Version(5), ActualVersion: events.Version(6), EventsSince: since, EventsSinceCount: 1})
	var conflict *ConflictError
	if !errors.As(err, &conflict) || !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("got %v, want a *ConflictError matching ErrVersionConflict", err)
	}
	if len(conflict.EventsSince) != 1 || conflict.EventsSinceCount != 1 || !conflict.EventsSinceComplete() {
		t.Fatalf("the conflict error shows eventsSince %+v (count %d, complete %v)", conflict.EventsSince, conflict.EventsSinceCount, conflict.EventsSinceComplete())
	}
}

func TestProducerSetsOnConflict(t *testing.T) {
	tests := []struct {
		name, config, command, want string
	}{
		{"strict by default", "", "", ""},
		{"the producer's rebase", OnConflictRebase, "", OnConflictRebase},
		{"the command's own wins", OnConflictRebase, OnConflictStrict, OnConflictStrict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Producer{cfg: ProducerConfig{OnConflict: tt.config, MaxRecordBytes: DefaultMaxRecordBytes}}
			rec, err := p.record(Command{ID: "c", AggregateID: "a", Type: "T", ExpectedVersion: 5, OnConflict: tt.command})
			if err != nil {
				t.Fatal(err)
			}
			cmd, err := Decode(rec.Key, rec.Value, 0)
			if err != nil || cmd.OnConflict != tt.want {
				t.Fatalf("sent %s (%v), want onConflict %q", rec.Value, err, tt.want)
			}
		})
	}
}
