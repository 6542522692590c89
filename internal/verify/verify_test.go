package verify

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"pgregory.net/rapid"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	commandsTopic  = "commands"
	eventsTopic    = "events"
	conflictsTopic = "conflicts"
)

// historyBuilder writes records into a History the way the topics would hold
// them, each topic partition with its own offsets.
type historyBuilder struct {
	t       fataler
	h       History
	offsets map[string]map[int32]int64
}

// fataler is what historyBuilder needs of a *testing.T or *rapid.T.
type fataler interface {
	Fatalf(format string, args ...any)
}

func newHistoryBuilder(t fataler) *historyBuilder {
	return &historyBuilder{t: t, h: History{CommandsTopic: commandsTopic}, offsets: make(map[string]map[int32]int64)}
}

func (b *historyBuilder) next(topic string, partition int32) Position {
	if b.offsets[topic] == nil {
		b.offsets[topic] = make(map[int32]int64)
	}
	offset := b.offsets[topic][partition]
	b.offsets[topic][partition]++
	return Position{Partition: partition, Offset: offset}
}

// command appends a command record, encoded and decoded as Read would.
func (b *historyBuilder) command(partition int32, id, aggregateID, commandType string, expectedVersion int64) Position {
	cmd := commands.Command{ID: id, AggregateID: aggregateID, Type: commandType, ExpectedVersion: expectedVersion}
	value, err := cmd.Encode()
	if err != nil {
		b.t.Fatalf("encode command: %v", err)
	}
	return b.raw(partition, aggregateID, string(value))
}

// raw appends a command record with any key and value.
func (b *historyBuilder) raw(partition int32, key, value string) Position {
	position := b.next(commandsTopic, partition)
	decoded, err := commands.Decode([]byte(key), []byte(value), 0)
	b.h.Commands = append(b.h.Commands, CommandRecord{Position: position, Key: key, Command: decoded, Err: err})
	return position
}

func (b *historyBuilder) commandAt(source Position) CommandRecord {
	for _, rec := range b.h.Commands {
		if rec.Position == source {
			return rec
		}
	}
	b.t.Fatalf("no command record at %s", source)
	return CommandRecord{}
}

// events appends the events of the command at source, one per type, from
// version firstVersion on, in the command's partition.
func (b *historyBuilder) events(source Position, firstVersion int64, types ...string) []Position {
	cmd := b.commandAt(source).Command
	var positions []Position
	for k, eventType := range types {
		positions = append(positions, b.event(source.Partition, cmd.AggregateID, cmd.ID, eventType, firstVersion+int64(k)))
	}
	return positions
}

func (b *historyBuilder) event(partition int32, aggregateID, commandID, eventType string, version int64) Position {
	position := b.next(eventsTopic, partition)
	b.h.Events = append(b.h.Events, EventRecord{Position: position, Event: events.Event{
		ID: events.EventID(aggregateID, version), AggregateID: aggregateID, Type: eventType, Version: version, CommandID: commandID,
	}})
	return position
}

// conflict appends the conflict answering the command at source, in its
// partition. expectedVersion and actualVersion < -2 are left out.
func (b *historyBuilder) conflict(source Position, reason events.Reason, expectedVersion, actualVersion int64) Position {
	rec := b.commandAt(source)
	conflict := events.Conflict{
		CommandID:   rec.Command.ID,
		AggregateID: aggregateOf(rec),
		Reason:      reason,
		Source:      events.Source{Topic: commandsTopic, Partition: source.Partition, Offset: source.Offset},
	}
	if expectedVersion >= commands.MustExist {
		conflict.ExpectedVersion = events.Version(expectedVersion)
	}
	if actualVersion >= 0 {
		conflict.ActualVersion = events.Version(actualVersion)
	}
	return b.rawConflict(source.Partition, conflict)
}

func (b *historyBuilder) rawConflict(partition int32, conflict events.Conflict) Position {
	position := b.next(conflictsTopic, partition)
	b.h.Conflicts = append(b.h.Conflicts, ConflictRecord{Position: position, Conflict: conflict})
	return position
}

// aborted skips n records of an aborted transaction and its marker in a
// topic, and lists them as aborted.
func (b *historyBuilder) aborted(topic string, partition int32, n int) []Position {
	var positions []Position
	for range n {
		positions = append(positions, b.next(topic, partition))
	}
	b.next(topic, partition) // the abort marker
	switch topic {
	case eventsTopic:
		b.h.AbortedEvents = append(b.h.AbortedEvents, positions...)
	case conflictsTopic:
		b.h.AbortedConflicts = append(b.h.AbortedConflicts, positions...)
	}
	return positions
}

const none = -100 // an absent expectedVersion or actualVersion

// found is the part of an anomaly a test expects.
type found struct {
	kind        Kind
	aggregateID string
	commandID   string
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name  string
		build func(b *historyBuilder)
		redis map[string]int64
		want  []found // every anomaly kind reported must be listed
	}{
		{
			name: "clean history",
			build: func(b *historyBuilder) {
				// Aggregate a, partition 0.
				create := b.command(0, "c1", "a", "Create", 0)
				b.events(create, 1, "Created", "Named") // a multi-event command
				duplicate := b.command(0, "c1", "a", "Create", 0)
				b.conflict(duplicate, events.ReasonDuplicate, 0, 2)
				stale := b.command(0, "c3", "a", "Rename", 0)
				b.conflict(stale, events.ReasonVersionConflict, 0, 2)
				relaxed := b.command(0, "c4", "a", "Rename", commands.AnyVersion)
				b.conflict(relaxed, events.ReasonRejected, commands.AnyVersion, 2)
				invalid := b.raw(0, "a", "{not json")
				b.conflict(invalid, events.ReasonInvalid, none, none)
				unknown := b.command(0, "c6", "a", "Teleport", 2)
				b.conflict(unknown, events.ReasonUnknownType, 2, none)
				// A replay: the first attempt's transaction was aborted.
				b.aborted(eventsTopic, 0, 1)
				b.aborted(conflictsTopic, 0, 1)
				rename := b.command(0, "c7", "a", "Rename", 2)
				b.events(rename, 3, "Renamed")
				// Aggregate b, partition 1: command IDs are per aggregate.
				createB := b.command(1, "c1", "b", "Create", 0)
				b.events(createB, 1, "Created")
				mustExist := b.command(1, "c9", "b", "Rename", commands.MustExist)
				b.events(mustExist, 2, "Renamed")
				missing := b.command(1, "c10", "new", "Rename", commands.MustExist)
				b.conflict(missing, events.ReasonVersionConflict, commands.MustExist, 0)
			},
			redis: map[string]int64{"a": 3, "b": 2, "never-written": 0},
		},
		{
			name: "command without outcome",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Create", 0), 1, "Created")
				b.command(0, "c2", "a", "Rename", 1)
			},
			want: []found{{KindNoOutcome, "a", "c2"}},
		},
		{
			name: "invalid record without outcome",
			build: func(b *historyBuilder) {
				b.raw(0, "a", "{not json")
			},
			want: []found{{KindNoOutcome, "a", ""}},
		},
		{
			name: "events and a conflict",
			build: func(b *historyBuilder) {
				create := b.command(0, "c1", "a", "Create", 0)
				b.events(create, 1, "Created")
				b.conflict(create, events.ReasonVersionConflict, 0, 1)
			},
			want: []found{{KindMultipleOutcomes, "a", "c1"}},
		},
		{
			name: "two conflicts for one record",
			build: func(b *historyBuilder) {
				create := b.command(0, "c1", "a", "Create", 0)
				b.conflict(create, events.ReasonRejected, 0, 0)
				b.conflict(create, events.ReasonRejected, 0, 0)
			},
			want: []found{{KindMultipleOutcomes, "a", "c1"}},
		},
		{
			name: "event set published twice",
			build: func(b *historyBuilder) {
				create := b.command(0, "c1", "a", "Create", 0)
				b.events(create, 1, "Created", "Named")
				b.events(create, 1, "Created", "Named")
			},
			want: []found{{KindMultipleOutcomes, "a", "c1"}, {KindVersionRepeat, "a", "c1"}},
		},
		{
			name: "duplicate send applied twice",
			build: func(b *historyBuilder) {
				first := b.command(0, "c1", "a", "Rename", commands.AnyVersion)
				b.command(0, "c1", "a", "Rename", commands.AnyVersion)
				other := b.command(0, "c2", "a", "Rename", commands.AnyVersion)
				b.events(first, 1, "Renamed")
				b.events(other, 2, "Renamed")
				b.events(first, 3, "Renamed")
			},
			want: []found{{KindMultipleOutcomes, "a", "c1"}},
		},
		{
			name: "version gap",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Create", 0), 1, "Created")
				b.events(b.command(0, "c2", "a", "Rename", commands.AnyVersion), 3, "Renamed")
			},
			want: []found{{KindVersionGap, "a", "c2"}},
		},
		{
			name: "versions not starting at 1",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Rename", commands.AnyVersion), 2, "Renamed")
			},
			want: []found{{KindVersionGap, "a", "c1"}},
		},
		{
			name: "version repeat",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Create", 0), 1, "Created")
				b.events(b.command(0, "c2", "a", "Rename", commands.AnyVersion), 1, "Renamed")
			},
			want: []found{{KindVersionRepeat, "a", "c2"}},
		},
		{
			name: "aggregate in two partitions",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Create", 0), 1, "Created")
				b.events(b.command(1, "c2", "a", "Rename", commands.AnyVersion), 2, "Renamed")
			},
			want: []found{{KindSplitAggregate, "a", ""}},
		},
		{
			name: "lost update",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Create", 0), 1, "Created")
				b.events(b.command(0, "c2", "a", "Create", 0), 2, "Created")
			},
			want: []found{{KindLostUpdate, "a", "c2"}},
		},
		{
			name: "must-exist command creating its aggregate",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Rename", commands.MustExist), 1, "Renamed")
			},
			want: []found{{KindLostUpdate, "a", "c1"}},
		},
		{
			name: "version conflict at the expected version",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Create", 0), 1, "Created")
				b.conflict(b.command(0, "c2", "a", "Rename", 1), events.ReasonVersionConflict, 1, 1)
			},
			want: []found{{KindBadConflict, "a", "c2"}},
		},
		{
			name: "version conflict without actual version",
			build: func(b *historyBuilder) {
				b.conflict(b.command(0, "c1", "a", "Rename", 3), events.ReasonVersionConflict, 3, none)
			},
			want: []found{{KindBadConflict, "a", "c1"}},
		},
		{
			name: "version conflict of an any-version command",
			build: func(b *historyBuilder) {
				b.conflict(b.command(0, "c1", "a", "Rename", commands.AnyVersion), events.ReasonVersionConflict, commands.AnyVersion, 0)
			},
			want: []found{{KindBadConflict, "a", "c1"}},
		},
		{
			name: "invalid record answered as rejected",
			build: func(b *historyBuilder) {
				b.conflict(b.raw(0, "a", "[]"), events.ReasonRejected, none, none)
			},
			want: []found{{KindBadConflict, "a", ""}},
		},
		{
			name: "orphan event",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Create", 0), 1, "Created")
				b.event(0, "a", "ghost", "Renamed", 2)
			},
			want: []found{{KindOrphanEvent, "a", "ghost"}},
		},
		{
			name: "event of a command of another aggregate",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Create", 0), 1, "Created")
				b.event(1, "b", "c1", "Created", 1)
			},
			want: []found{{KindOrphanEvent, "b", "c1"}},
		},
		{
			name: "conflict without command record",
			build: func(b *historyBuilder) {
				b.rawConflict(0, events.Conflict{CommandID: "c9", AggregateID: "a", Reason: events.ReasonRejected,
					Source: events.Source{Topic: commandsTopic, Partition: 0, Offset: 7}})
			},
			want: []found{{KindOrphanConflict, "a", "c9"}},
		},
		{
			name: "conflict naming another command",
			build: func(b *historyBuilder) {
				source := b.command(0, "c1", "a", "Create", 0)
				b.rawConflict(0, events.Conflict{CommandID: "c2", AggregateID: "a", Reason: events.ReasonRejected,
					Source: events.Source{Topic: commandsTopic, Partition: source.Partition, Offset: source.Offset}})
			},
			want: []found{{KindOrphanConflict, "a", "c2"}, {KindNoOutcome, "a", "c1"}},
		},
		{
			name: "conflict from another topic",
			build: func(b *historyBuilder) {
				source := b.command(0, "c1", "a", "Create", 0)
				b.rawConflict(0, events.Conflict{CommandID: "c1", AggregateID: "a", Reason: events.ReasonRejected,
					Source: events.Source{Topic: "other", Partition: source.Partition, Offset: source.Offset}})
			},
			want: []found{{KindOrphanConflict, "a", "c1"}, {KindNoOutcome, "a", "c1"}},
		},
		{
			name: "aborted event visible",
			build: func(b *historyBuilder) {
				positions := b.events(b.command(0, "c1", "a", "Create", 0), 1, "Created")
				b.h.AbortedEvents = append(b.h.AbortedEvents, positions...)
			},
			want: []found{{KindAbortedVisible, "a", "c1"}},
		},
		{
			name: "aborted conflict visible",
			build: func(b *historyBuilder) {
				position := b.conflict(b.command(0, "c1", "a", "Rename", 4), events.ReasonVersionConflict, 4, 0)
				b.h.AbortedConflicts = append(b.h.AbortedConflicts, position)
			},
			want: []found{{KindAbortedVisible, "a", "c1"}},
		},
		{
			name: "torn command: event missing inside its run",
			build: func(b *historyBuilder) {
				b.command(0, "c1", "a", "Create", 0)
				b.event(0, "a", "c1", "Created", 1)
				b.event(0, "a", "c1", "Priced", 3)
			},
			want: []found{{KindTornCommand, "a", "c1"}, {KindVersionGap, "a", "c1"}},
		},
		{
			name: "torn command: interleaved with another command",
			build: func(b *historyBuilder) {
				b.command(0, "c1", "a", "Create", 0)
				b.command(0, "c2", "a", "Rename", commands.AnyVersion)
				b.event(0, "a", "c1", "Created", 1)
				b.event(0, "a", "c2", "Renamed", 2)
				b.event(0, "a", "c1", "Priced", 3)
			},
			want: []found{{KindTornCommand, "a", "c1"}},
		},
		{
			name: "Redis ahead of the events",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Create", 0), 1, "Created")
			},
			redis: map[string]int64{"a": 2},
			want:  []found{{KindRedisMismatch, "a", ""}},
		},
		{
			name: "Redis behind the events",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Create", 0), 1, "Created", "Named")
			},
			redis: map[string]int64{},
			want:  []found{{KindRedisMismatch, "a", ""}},
		},
		{
			name:  "Redis version without events",
			build: func(b *historyBuilder) {},
			redis: map[string]int64{"z": 5},
			want:  []found{{KindRedisMismatch, "z", ""}},
		},
		{
			name: "undecodable event",
			build: func(b *historyBuilder) {
				b.events(b.command(0, "c1", "a", "Create", 0), 1, "Created")
				b.h.Events = append(b.h.Events, EventRecord{Position: b.next(eventsTopic, 0), Err: fmt.Errorf("not JSON")})
			},
			want: []found{{KindUndecodable, "", ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newHistoryBuilder(t)
			tt.build(b)
			report := Check(&b.h, CheckOptions{RedisVersions: tt.redis})

			for _, want := range tt.want {
				if !slices.ContainsFunc(report.Anomalies, func(a Anomaly) bool {
					return a.Kind == want.kind && a.AggregateID == want.aggregateID && a.CommandID == want.commandID
				}) {
					t.Errorf("missed anomaly %s of aggregate %q, command %q", want.kind, want.aggregateID, want.commandID)
				}
			}
			for _, a := range report.Anomalies {
				if !slices.ContainsFunc(tt.want, func(want found) bool { return want.kind == a.Kind }) {
					t.Errorf("unexpected anomaly: %s", a)
				}
			}
			if t.Failed() {
				t.Logf("report:\n%s", report.Summary())
			}
			if report.OK() != (len(tt.want) == 0) {
				t.Errorf("OK() = %v with %d anomalies", report.OK(), len(report.Anomalies))
			}
		})
	}
}

func TestCheckCleanCounts(t *testing.T) {
	b := newHistoryBuilder(t)
	create := b.command(0, "c1", "a", "Create", 0)
	b.events(create, 1, "Created", "Named")
	b.conflict(b.command(0, "c1", "a", "Create", 0), events.ReasonDuplicate, 0, 2)
	b.conflict(b.raw(1, "b", "nope"), events.ReasonInvalid, none, none)

	report := Check(&b.h, CheckOptions{})
	want := Report{Commands: 3, Outcomes: 3, Applied: 1, Events: 2,
		Conflicts: map[events.Reason]int{events.ReasonDuplicate: 1, events.ReasonInvalid: 1}}
	if report.Commands != want.Commands || report.Outcomes != want.Outcomes || report.Applied != want.Applied ||
		report.Events != want.Events || fmt.Sprint(report.Conflicts) != fmt.Sprint(want.Conflicts) || !report.OK() {
		t.Errorf("Check counted %+v, want %+v", report, want)
	}
	summary := report.Summary()
	for _, part := range []string{"commands 3", "outcomes 3", "applied 1", "duplicate 1", "invalid 1", "events 2", "anomalies = 0"} {
		if !strings.Contains(summary, part) {
			t.Errorf("Summary() = %q, want it to contain %q", summary, part)
		}
	}
}

func TestSummaryListsAnomaliesByKind(t *testing.T) {
	b := newHistoryBuilder(t)
	b.command(0, "c1", "a", "Create", 0)
	b.command(0, "c2", "a", "Create", 0)
	b.event(0, "a", "ghost", "Created", 1)
	summary := Check(&b.h, CheckOptions{}).Summary()
	for _, part := range []string{"no_outcome 2", "orphan_event 1", "anomalies = 3"} {
		if !strings.Contains(summary, part) {
			t.Errorf("Summary() = %q, want it to contain %q", summary, part)
		}
	}
}

// simulation is a model of a correct processor: it decides each command
// record the way processor/decide.go does and writes the outcomes to a
// history.
type simulation struct {
	b          *historyBuilder
	partitions int32
	aggregates []string
	versions   map[string]int64
	decided    map[ref]bool // commands with a recorded outcome
	ids        map[string][]string
	// outcomes lists each outcome: the events of one command, or one
	// conflict (as indices into the history).
	outcomes []simulatedOutcome
}

type simulatedOutcome struct {
	events   []int
	conflict int // -1 for events
}

func (s *simulation) partitionOf(aggregateID string) int32 {
	return int32(slices.Index(s.aggregates, aggregateID)) % s.partitions
}

func (s *simulation) addConflict(source Position, reason events.Reason, expectedVersion, actualVersion int64) {
	s.b.conflict(source, reason, expectedVersion, actualVersion)
	s.outcomes = append(s.outcomes, simulatedOutcome{conflict: len(s.b.h.Conflicts) - 1})
}

// step draws one command record and decides it.
func (s *simulation) step(t *rapid.T) {
	aggregateID := rapid.SampledFrom(s.aggregates).Draw(t, "aggregate")
	partition := s.partitionOf(aggregateID)
	version := s.versions[aggregateID]
	if rapid.IntRange(0, 9).Draw(t, "invalid") == 0 {
		s.addConflict(s.b.raw(partition, aggregateID, `{"id": 1}`), events.ReasonInvalid, none, none)
		return
	}
	commandID := fmt.Sprintf("c%d", len(s.b.h.Commands))
	if ids := s.ids[aggregateID]; len(ids) > 0 && rapid.IntRange(0, 4).Draw(t, "duplicate") == 0 {
		commandID = rapid.SampledFrom(ids).Draw(t, "duplicated")
	}
	s.ids[aggregateID] = append(s.ids[aggregateID], commandID)
	commandType := rapid.SampledFrom([]string{"Strict", "Relaxed", "Refuse", "Unknown"}).Draw(t, "type")
	expectedVersion := rapid.Int64Range(commands.MustExist, version+1).Draw(t, "expectedVersion")
	source := s.b.command(partition, commandID, aggregateID, commandType, expectedVersion)

	r := ref{aggregateID: aggregateID, commandID: commandID}
	reject := func(reason events.Reason) {
		s.addConflict(source, reason, expectedVersion, version)
		s.decided[r] = true
	}
	switch {
	case commandType == "Unknown":
		s.addConflict(source, events.ReasonUnknownType, expectedVersion, none)
	case s.decided[r]:
		s.addConflict(source, events.ReasonDuplicate, expectedVersion, version)
	case expectedVersion >= 0 && expectedVersion != version:
		reject(events.ReasonVersionConflict)
	case expectedVersion < 0 && commandType != "Relaxed":
		reject(events.ReasonRejected)
	case expectedVersion == commands.MustExist && version == 0:
		reject(events.ReasonVersionConflict)
	case commandType == "Refuse":
		reject(events.ReasonRejected)
	default:
		if rapid.Bool().Draw(t, "abortedAttempt") {
			// The first attempt's transaction was aborted; the replay
			// follows.
			s.b.aborted(eventsTopic, partition, 2)
		}
		count := rapid.IntRange(1, 3).Draw(t, "events")
		types := []string{"Created", "Named", "Priced"}[:count]
		s.b.events(source, version+1, types...)
		var indices []int
		for k := range count {
			indices = append(indices, len(s.b.h.Events)-count+k)
		}
		s.outcomes = append(s.outcomes, simulatedOutcome{events: indices, conflict: -1})
		s.versions[aggregateID] = version + int64(count)
		s.decided[r] = true
	}
}

// mutate removes or duplicates one outcome of a copy of the history.
func (s *simulation) mutate(t *rapid.T) History {
	h := s.b.h
	h.Events = slices.Clone(h.Events)
	h.Conflicts = slices.Clone(h.Conflicts)
	outcome := rapid.SampledFrom(s.outcomes).Draw(t, "outcome")
	after := func(records int, positionOf func(int) Position, partition int32) Position {
		var next int64
		for i := range records {
			if p := positionOf(i); p.Partition == partition {
				next = max(next, p.Offset+1)
			}
		}
		return Position{Partition: partition, Offset: next}
	}
	if rapid.Bool().Draw(t, "remove") {
		if outcome.conflict >= 0 {
			h.Conflicts = slices.Delete(h.Conflicts, outcome.conflict, outcome.conflict+1)
		} else {
			h.Events = slices.Delete(h.Events, outcome.events[0], outcome.events[len(outcome.events)-1]+1)
		}
		return h
	}
	if outcome.conflict >= 0 {
		rec := h.Conflicts[outcome.conflict]
		rec.Position = after(len(h.Conflicts), func(i int) Position { return h.Conflicts[i].Position }, rec.Partition)
		h.Conflicts = append(h.Conflicts, rec)
		return h
	}
	for _, i := range outcome.events {
		rec := h.Events[i]
		rec.Position = after(len(h.Events), func(i int) Position { return h.Events[i].Position }, rec.Partition)
		h.Events = append(h.Events, rec)
	}
	return h
}

func TestCheckSimulatedHistories(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := &simulation{
			b:          newHistoryBuilder(t),
			partitions: rapid.Int32Range(1, 3).Draw(t, "partitions"),
			aggregates: rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"a", "b", "c", "d", "e"}), 1, 4, rapid.ID).Draw(t, "aggregates"),
			versions:   make(map[string]int64),
			decided:    make(map[ref]bool),
			ids:        make(map[string][]string),
		}
		records := rapid.IntRange(1, 40).Draw(t, "records")
		for range records {
			s.step(t)
		}
		var opts CheckOptions
		if rapid.Bool().Draw(t, "checkRedis") {
			opts.RedisVersions = s.versions
		}

		report := Check(&s.b.h, opts)
		if !report.OK() {
			t.Fatalf("a correct processor's history has anomalies:\n%s\n%v", report.Summary(), report.Anomalies)
		}
		if report.Commands != records || report.Outcomes != records {
			t.Fatalf("%d command records, Check counted %d commands and %d outcomes", records, report.Commands, report.Outcomes)
		}

		mutated := s.mutate(t)
		if report := Check(&mutated, opts); report.OK() {
			t.Fatalf("a history with one outcome removed or duplicated has no anomaly:\n%s", report.Summary())
		}
	})
}
