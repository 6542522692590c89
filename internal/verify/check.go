package verify

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/processor"
)

// Kind names a kind of anomaly.
type Kind string

// The kinds of anomaly Check reports.
const (
	// KindNoOutcome: a command record has neither events nor a conflict.
	KindNoOutcome Kind = "no_outcome"
	// KindMultipleOutcomes: a command record has more than one outcome
	// (events and a conflict, two conflicts), or a command's event set was
	// published more than once.
	KindMultipleOutcomes Kind = "multiple_outcomes"
	// KindVersionGap: an aggregate's event versions skip one or more
	// versions (or do not start at 1).
	KindVersionGap Kind = "version_gap"
	// KindVersionRepeat: an aggregate's event version is not above the one
	// before it.
	KindVersionRepeat Kind = "version_repeat"
	// KindSplitAggregate: an aggregate's events are in more than one
	// partition, so their order is not defined.
	KindSplitAggregate Kind = "split_aggregate"
	// KindLostUpdate: a command applied with expectedVersion N >= 0 whose
	// first event is not version N+1, or one applied with -2 (must exist)
	// whose first event is version 1.
	KindLostUpdate Kind = "lost_update"
	// KindBadConflict: a conflict that cannot be right: a version_conflict
	// whose actual version is missing or equals the expected one (or that
	// the expected version could not have caused), or a conflict other than
	// invalid for a record that is not a command.
	KindBadConflict Kind = "bad_conflict"
	// KindOrphanEvent: an event whose (aggregateId, commandId) matches no
	// command record.
	KindOrphanEvent Kind = "orphan_event"
	// KindOrphanConflict: a conflict whose source is not a command record,
	// or is the record of another command.
	KindOrphanConflict Kind = "orphan_conflict"
	// KindAbortedVisible: a record of an aborted transaction was returned
	// by the read_committed read.
	KindAbortedVisible Kind = "aborted_visible"
	// KindTornCommand: a command's events are not one contiguous run:
	// versions are missing inside it, or another command's events are
	// interleaved with it.
	KindTornCommand Kind = "torn_command"
	// KindRedisMismatch: Redis holds a version other than the aggregate's
	// last event version (Redis ahead or behind), or a version above 0 for
	// an aggregate without events.
	KindRedisMismatch Kind = "redis_mismatch"
	// KindUndecodable: an event or conflict record whose value does not
	// decode.
	KindUndecodable Kind = "undecodable"
)

// CheckOptions configures Check.
type CheckOptions struct {
	// RedisVersions maps aggregate IDs to the versions Redis holds (see
	// RedisVersions). nil skips the Redis comparison.
	RedisVersions map[string]int64
	// RebasePolicies are, per command type, the event types its decision
	// depends on, as its handler declared them (processor.Registry's
	// RebasePolicies of the workers' registry). A command applied at a
	// version above its expectedVersion + 1 is a rebase, not a lost update,
	// only when its first event carries rebasedFrom = expectedVersion, it
	// opted in with onConflict "rebase", its type is listed here, and no
	// event of a type it depends on lies between. For a type whose policy
	// is Custom (a resolver decided) the intervening events' types cannot
	// be checked; the rest is. nil: every such command is a lost update.
	RebasePolicies map[string]processor.RebasePolicy
}

// Anomaly is one violation found in a history.
type Anomaly struct {
	Kind        Kind
	AggregateID string
	CommandID   string
	// Commands, Events and Conflicts are the positions of the records
	// involved, in their topics.
	Commands  []Position
	Events    []Position
	Conflicts []Position
	// Detail says what is wrong, for people.
	Detail string
}

// String returns the anomaly on one line.
func (a Anomaly) String() string {
	var b strings.Builder
	b.WriteString(string(a.Kind))
	if a.AggregateID != "" {
		fmt.Fprintf(&b, " aggregate=%q", a.AggregateID)
	}
	if a.CommandID != "" {
		fmt.Fprintf(&b, " command=%q", a.CommandID)
	}
	for _, positions := range []struct {
		topic     string
		positions []Position
	}{{"commands", a.Commands}, {"events", a.Events}, {"conflicts", a.Conflicts}} {
		if len(positions.positions) == 0 {
			continue
		}
		texts := make([]string, 0, min(len(positions.positions), 6))
		for i, p := range positions.positions {
			if i == 5 {
				texts = append(texts, fmt.Sprintf("…(%d)", len(positions.positions)))
				break
			}
			texts = append(texts, p.String())
		}
		fmt.Fprintf(&b, " %s=%s", positions.topic, strings.Join(texts, ","))
	}
	if a.Detail != "" {
		b.WriteString(": ")
		b.WriteString(a.Detail)
	}
	return b.String()
}

// Report is what Check found.
type Report struct {
	// Commands is the number of command records.
	Commands int
	// Outcomes is the number of event sets plus conflict records; it
	// equals Commands in a history without anomalies.
	Outcomes int
	// Applied is the number of event sets: runs of one command's
	// consecutive events.
	Applied int
	// Rebased is the number of applied commands that were rebased: first
	// event past expectedVersion + 1, with a valid rebasedFrom.
	Rebased int
	// Conflicts counts the conflict records by reason.
	Conflicts map[events.Reason]int
	// Events is the number of event records.
	Events int
	// Anomalies are the violations found, grouped by kind.
	Anomalies []Anomaly
}

// OK reports whether the history has no anomaly.
func (r Report) OK() bool { return len(r.Anomalies) == 0 }

// Summary returns a few lines for people: the counts, the anomalies by kind
// and their total.
func (r Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "commands %d, outcomes %d: applied %d", r.Commands, r.Outcomes, r.Applied)
	if r.Rebased > 0 {
		fmt.Fprintf(&b, " (rebased %d)", r.Rebased)
	}
	fmt.Fprintf(&b, ", conflicts %d", sumCounts(r.Conflicts))
	if len(r.Conflicts) > 0 {
		reasons := make([]string, 0, len(r.Conflicts))
		for reason := range r.Conflicts {
			reasons = append(reasons, string(reason))
		}
		sort.Strings(reasons)
		for i, reason := range reasons {
			reasons[i] = fmt.Sprintf("%s %d", reason, r.Conflicts[events.Reason(reason)])
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(reasons, ", "))
	}
	fmt.Fprintf(&b, "; events %d\n", r.Events)
	if len(r.Anomalies) > 0 {
		var kinds []string
		counts := make(map[Kind]int)
		for _, a := range r.Anomalies {
			if counts[a.Kind] == 0 {
				kinds = append(kinds, string(a.Kind))
			}
			counts[a.Kind]++
		}
		for i, kind := range kinds {
			kinds[i] = fmt.Sprintf("%s %d", kind, counts[Kind(kind)])
		}
		fmt.Fprintf(&b, "anomalies by kind: %s\n", strings.Join(kinds, ", "))
		fmt.Fprintf(&b, "first: %s\n", r.Anomalies[0])
	}
	fmt.Fprintf(&b, "anomalies = %d", len(r.Anomalies))
	return b.String()
}

func sumCounts[K comparable](counts map[K]int) int {
	total := 0
	for _, n := range counts {
		total += n
	}
	return total
}

// ref names an applied command: command IDs are scoped per aggregate.
type ref struct {
	aggregateID string
	commandID   string
}

// eventSet is a run of one command's consecutive events in an aggregate's
// partition, as indices into History.Events.
type eventSet []int

// checker holds the indexes Check builds over one history.
type checker struct {
	h      *History
	opts   CheckOptions
	report Report

	commandAt   map[Position]int // command index by position
	commandsOf  map[ref][]int    // decoded command indices by (aggregate, command), in position order
	conflictsOf [][]int          // per command: the conflicts answering it
	appliedOf   []int            // per command: the event sets attributed to it

	refOrder    []ref
	eventSetsOf map[ref][]eventSet
	lastVersion map[string]int64 // per aggregate: its highest event version

	typesByVersion map[string]map[int64]string // per aggregate: event type by version, for rebases
}

// Check looks for anomalies in a history. It does no I/O; its result depends
// only on h and opts.
func Check(h *History, opts CheckOptions) Report {
	if h == nil {
		h = &History{}
	}
	c := &checker{
		h:           h,
		opts:        opts,
		report:      Report{Commands: len(h.Commands), Events: len(h.Events), Conflicts: make(map[events.Reason]int)},
		commandAt:   make(map[Position]int, len(h.Commands)),
		commandsOf:  make(map[ref][]int, len(h.Commands)),
		conflictsOf: make([][]int, len(h.Commands)),
		appliedOf:   make([]int, len(h.Commands)),
		eventSetsOf: make(map[ref][]eventSet),
		lastVersion: make(map[string]int64),
	}
	c.indexCommands()
	c.matchConflicts()
	c.checkAggregates()
	c.matchEventSets()
	c.checkOutcomes()
	c.checkAborted()
	if opts.RedisVersions != nil {
		c.checkRedis(opts.RedisVersions)
	}
	// Grouped by kind; within a kind, in the order found, which follows
	// the topics.
	sort.SliceStable(c.report.Anomalies, func(i, j int) bool {
		return c.report.Anomalies[i].Kind < c.report.Anomalies[j].Kind
	})
	return c.report
}

func (c *checker) add(a Anomaly) { c.report.Anomalies = append(c.report.Anomalies, a) }

func (c *checker) indexCommands() {
	order := make([]int, len(c.h.Commands))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return comparePositions(c.h.Commands[a].Position, c.h.Commands[b].Position)
	})
	for _, i := range order {
		rec := c.h.Commands[i]
		c.commandAt[rec.Position] = i
		if rec.Err == nil {
			r := ref{aggregateID: rec.Command.AggregateID, commandID: rec.Command.ID}
			c.commandsOf[r] = append(c.commandsOf[r], i)
		}
	}
}

// aggregateOf returns the aggregate a command record is for: its decoded
// aggregate ID, or else its key.
func aggregateOf(rec CommandRecord) string {
	if rec.Command.AggregateID != "" {
		return rec.Command.AggregateID
	}
	return rec.Key
}

func (c *checker) matchConflicts() {
	for j, rec := range c.h.Conflicts {
		if rec.Err != nil {
			c.add(Anomaly{Kind: KindUndecodable, Conflicts: []Position{rec.Position}, Detail: rec.Err.Error()})
			continue
		}
		conflict := rec.Conflict
		c.report.Conflicts[conflict.Reason]++
		c.report.Outcomes++
		anomaly := func(kind Kind, format string, args ...any) Anomaly {
			return Anomaly{Kind: kind, AggregateID: conflict.AggregateID, CommandID: conflict.CommandID, Conflicts: []Position{rec.Position}, Detail: fmt.Sprintf(format, args...)}
		}
		if conflict.Reason == events.ReasonVersionConflict {
			if detail := badVersionConflict(conflict); detail != "" {
				c.add(anomaly(KindBadConflict, "%s", detail))
			}
		}

		source := Position{Partition: conflict.Source.Partition, Offset: conflict.Source.Offset}
		if c.h.CommandsTopic != "" && conflict.Source.Topic != c.h.CommandsTopic {
			c.add(anomaly(KindOrphanConflict, "its source is in topic %q, not the commands topic %q", conflict.Source.Topic, c.h.CommandsTopic))
			continue
		}
		i, ok := c.commandAt[source]
		if !ok {
			c.add(anomaly(KindOrphanConflict, "no command record at its source %s", source))
			continue
		}
		cmd := c.h.Commands[i]
		a := anomaly(KindOrphanConflict, "")
		a.Commands = []Position{cmd.Position}
		if cmd.Err == nil && (conflict.CommandID != cmd.Command.ID || conflict.AggregateID != cmd.Command.AggregateID) {
			a.Detail = fmt.Sprintf("it answers command %q of aggregate %q, but the record at its source is command %q of aggregate %q",
				conflict.CommandID, conflict.AggregateID, cmd.Command.ID, cmd.Command.AggregateID)
			c.add(a)
			continue
		}
		if cmd.Err != nil && conflict.Reason != events.ReasonInvalid {
			a.Kind = KindBadConflict
			a.Detail = fmt.Sprintf("the record at its source is not a valid command (%v), so its conflict must be %s, not %s", cmd.Err, events.ReasonInvalid, conflict.Reason)
			c.add(a)
		}
		c.conflictsOf[i] = append(c.conflictsOf[i], j)
	}
}

// badVersionConflict says what is wrong with a version_conflict, or "".
func badVersionConflict(conflict events.Conflict) string {
	switch {
	case conflict.ActualVersion == nil:
		return "version_conflict without an actualVersion"
	case conflict.ExpectedVersion == nil:
		return "version_conflict without an expectedVersion"
	}
	expectedVersion, actualVersion := *conflict.ExpectedVersion, *conflict.ActualVersion
	switch {
	case expectedVersion == actualVersion:
		return fmt.Sprintf("version_conflict whose actualVersion equals its expectedVersion %d: the command should have been applied", expectedVersion)
	case expectedVersion == commands.AnyVersion:
		return "version_conflict of a command with expectedVersion -1 (any), which cannot conflict"
	case expectedVersion == commands.MustExist && actualVersion != 0:
		return fmt.Sprintf("version_conflict of a command with expectedVersion -2 (must exist) at version %d: the aggregate existed", actualVersion)
	}
	return ""
}

// checkAggregates checks each aggregate's versions and cuts its events into
// event sets.
func (c *checker) checkAggregates() {
	order := make([]int, 0, len(c.h.Events))
	for i, rec := range c.h.Events {
		if rec.Err != nil {
			c.add(Anomaly{Kind: KindUndecodable, Events: []Position{rec.Position}, Detail: rec.Err.Error()})
			continue
		}
		order = append(order, i)
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return comparePositions(c.h.Events[a].Position, c.h.Events[b].Position)
	})
	var aggregates []string
	eventsOf := make(map[string][]int)
	for _, i := range order {
		aggregateID := c.h.Events[i].Event.AggregateID
		if _, ok := eventsOf[aggregateID]; !ok {
			aggregates = append(aggregates, aggregateID)
		}
		eventsOf[aggregateID] = append(eventsOf[aggregateID], i)
	}
	for _, aggregateID := range aggregates {
		indices := eventsOf[aggregateID]
		var partitions []int32
		var firsts []Position
		for _, i := range indices {
			p := c.h.Events[i].Position
			if !slices.Contains(partitions, p.Partition) {
				partitions = append(partitions, p.Partition)
				firsts = append(firsts, p)
			}
		}
		ordered := indices
		if len(partitions) > 1 {
			c.add(Anomaly{Kind: KindSplitAggregate, AggregateID: aggregateID, Events: firsts,
				Detail: fmt.Sprintf("its events are in partitions %v (first event of each listed); their versions are checked as a set", partitions)})
			// Across partitions there is no order, so check the
			// versions as a set.
			ordered = slices.Clone(indices)
			slices.SortStableFunc(ordered, func(a, b int) int {
				va, vb := c.h.Events[a].Event.Version, c.h.Events[b].Event.Version
				switch {
				case va < vb:
					return -1
				case va > vb:
					return 1
				}
				return 0
			})
		}
		c.checkVersions(aggregateID, ordered)
		c.cutEventSets(aggregateID, indices)
	}
}

func (c *checker) checkVersions(aggregateID string, indices []int) {
	var previous int64
	for _, i := range indices {
		event := c.h.Events[i].Event
		a := Anomaly{AggregateID: aggregateID, CommandID: event.CommandID, Events: []Position{c.h.Events[i].Position}}
		switch {
		case event.Version <= previous:
			a.Kind = KindVersionRepeat
			a.Detail = fmt.Sprintf("version %d comes after version %d", event.Version, previous)
			c.add(a)
		case event.Version > previous+1:
			a.Kind = KindVersionGap
			switch {
			case previous == 0:
				a.Detail = fmt.Sprintf("the aggregate's first event is version %d, not 1", event.Version)
			case event.Version == previous+2:
				a.Detail = fmt.Sprintf("version %d comes after version %d: version %d is missing", event.Version, previous, previous+1)
			default:
				a.Detail = fmt.Sprintf("version %d comes after version %d: versions %d to %d are missing", event.Version, previous, previous+1, event.Version-1)
			}
			c.add(a)
		}
		previous = max(previous, event.Version)
	}
	c.lastVersion[aggregateID] = previous
}

// cutEventSets cuts an aggregate's events, in partition and offset order,
// into event sets: a set ends where the command changes, the partition
// changes, or the version does not go up (the same events again).
func (c *checker) cutEventSets(aggregateID string, indices []int) {
	var current eventSet
	flush := func() {
		if len(current) == 0 {
			return
		}
		r := ref{aggregateID: aggregateID, commandID: c.h.Events[current[0]].Event.CommandID}
		if _, ok := c.eventSetsOf[r]; !ok {
			c.refOrder = append(c.refOrder, r)
		}
		c.eventSetsOf[r] = append(c.eventSetsOf[r], current)
		c.report.Applied++
		c.report.Outcomes++
		current = nil
	}
	for _, i := range indices {
		rec := c.h.Events[i]
		if len(current) > 0 {
			last := c.h.Events[current[len(current)-1]]
			if rec.Event.CommandID != last.Event.CommandID || rec.Partition != last.Partition || rec.Event.Version <= last.Event.Version {
				flush()
			}
		}
		current = append(current, i)
	}
	flush()
}

func (c *checker) positions(set eventSet) []Position {
	positions := make([]Position, len(set))
	for k, i := range set {
		positions[k] = c.h.Events[i].Position
	}
	return positions
}

func (c *checker) versionRange(set eventSet) string {
	first, last := c.h.Events[set[0]].Event.Version, c.h.Events[set[len(set)-1]].Event.Version
	if first == last {
		return fmt.Sprintf("%d", first)
	}
	return fmt.Sprintf("%d-%d", first, last)
}

// matchEventSets attributes each command's event sets to its command records
// and checks each set.
func (c *checker) matchEventSets() {
	for _, r := range c.refOrder {
		sets := c.eventSetsOf[r]
		var all []Position
		for _, set := range sets {
			all = append(all, c.positions(set)...)
		}
		candidates := c.commandsOf[r]
		if r.commandID == "" || len(candidates) == 0 {
			c.add(Anomaly{Kind: KindOrphanEvent, AggregateID: r.aggregateID, CommandID: r.commandID, Events: all,
				Detail: "no command record has this aggregate and command ID"})
			continue
		}
		commandPositions := make([]Position, len(candidates))
		for k, i := range candidates {
			commandPositions[k] = c.h.Commands[i].Position
		}

		for _, set := range sets {
			for k := 1; k < len(set); k++ {
				previous, version := c.h.Events[set[k-1]].Event.Version, c.h.Events[set[k]].Event.Version
				if version > previous+1 {
					c.add(Anomaly{Kind: KindTornCommand, AggregateID: r.aggregateID, CommandID: r.commandID, Commands: commandPositions, Events: c.positions(set),
						Detail: fmt.Sprintf("the command's events jump from version %d to %d: some of its events are missing", previous, version)})
					break
				}
			}
		}
		if len(sets) > 1 {
			ranges := make([]string, len(sets))
			for k, set := range sets {
				ranges[k] = c.versionRange(set)
			}
			a := Anomaly{AggregateID: r.aggregateID, CommandID: r.commandID, Commands: commandPositions, Events: all}
			if c.sameShape(sets) {
				a.Kind = KindMultipleOutcomes
				a.Detail = fmt.Sprintf("the command's events were published %d times (versions %s)", len(sets), strings.Join(ranges, ", "))
			} else {
				a.Kind = KindTornCommand
				a.Detail = fmt.Sprintf("the command's events are split in %d runs interleaved with other events (versions %s)", len(sets), strings.Join(ranges, ", "))
			}
			c.add(a)
		}

		// Exactly one of the records sharing the command ID should have
		// the events; the others answer with a duplicate conflict. The
		// events go to the records without a conflict, in order; if every
		// record has one, to the original (its conflict is not a
		// duplicate), which then has two outcomes.
		var free []int
		for _, i := range candidates {
			if len(c.conflictsOf[i]) == 0 {
				free = append(free, i)
			}
		}
		for k, set := range sets {
			var owner int
			switch {
			case k < len(free):
				owner = free[k]
			case len(free) > 0:
				owner = free[0]
			default:
				owner = c.original(candidates)
			}
			c.appliedOf[owner]++
			if c.appliedOf[owner] == 1 {
				c.checkFirstVersion(owner, set)
			}
		}
	}
}

// sameShape reports whether event sets have the same event types in the same
// order: one event set published several times, rather than one torn apart.
func (c *checker) sameShape(sets []eventSet) bool {
	for _, set := range sets[1:] {
		if len(set) != len(sets[0]) {
			return false
		}
		for k := range set {
			if c.h.Events[set[k]].Event.Type != c.h.Events[sets[0][k]].Event.Type {
				return false
			}
		}
	}
	return true
}

// original returns the first record whose conflicts are not duplicates.
func (c *checker) original(candidates []int) int {
	for _, i := range candidates {
		duplicate := false
		for _, j := range c.conflictsOf[i] {
			duplicate = duplicate || c.h.Conflicts[j].Conflict.Reason == events.ReasonDuplicate
		}
		if !duplicate {
			return i
		}
	}
	return candidates[0]
}

func (c *checker) checkFirstVersion(owner int, set eventSet) {
	cmd := c.h.Commands[owner]
	first := c.h.Events[set[0]].Event.Version
	a := Anomaly{Kind: KindLostUpdate, AggregateID: cmd.Command.AggregateID, CommandID: cmd.Command.ID, Commands: []Position{cmd.Position}, Events: c.positions(set)}
	switch expectedVersion := cmd.Command.ExpectedVersion; {
	case expectedVersion >= 0 && first != expectedVersion+1:
		a.Detail = c.badRebase(cmd, set)
		if a.Detail == "" {
			c.report.Rebased++
			return
		}
		c.add(a)
	case expectedVersion == commands.MustExist && first < 2:
		a.Detail = fmt.Sprintf("the command expected an existing aggregate (-2), but its first event is version %d", first)
		c.add(a)
	}
}

// badRebase says why a command applied past its expectedVersion + 1 is not
// a rebase, "" when it is one.
func (c *checker) badRebase(cmd CommandRecord, set eventSet) string {
	first := c.h.Events[set[0]].Event
	expectedVersion := cmd.Command.ExpectedVersion
	lost := fmt.Sprintf("the command expected version %d, but its first event is version %d, not %d", expectedVersion, first.Version, expectedVersion+1)
	policy, declared := c.opts.RebasePolicies[cmd.Command.Type]
	switch {
	case first.RebasedFrom == nil:
		return lost
	case *first.RebasedFrom != expectedVersion:
		return fmt.Sprintf("%s; its rebasedFrom %d is not that expectedVersion", lost, *first.RebasedFrom)
	case !cmd.Command.Rebase():
		return lost + "; it carries rebasedFrom but did not opt in with onConflict rebase"
	case first.Version <= expectedVersion:
		return lost + "; a rebase can only move a command later"
	case !declared:
		return fmt.Sprintf("%s; it carries rebasedFrom, but command type %s declares no event types its decision depends on", lost, cmd.Command.Type)
	case policy.Custom:
		return ""
	}
	versions := c.versionTypes(cmd.Command.AggregateID)
	for v := expectedVersion + 1; v < first.Version; v++ {
		eventType, ok := versions[v]
		if !ok {
			return fmt.Sprintf("%s; version %d, between them, is not in the events topic", lost, v)
		}
		if slices.Contains(policy.DependsOn, eventType) {
			return fmt.Sprintf("%s; it was rebased past %s at version %d, a type %s depends on", lost, eventType, v, cmd.Command.Type)
		}
	}
	return ""
}

// versionTypes returns an aggregate's event types by version, built on
// first use.
func (c *checker) versionTypes(aggregateID string) map[int64]string {
	if c.typesByVersion == nil {
		c.typesByVersion = make(map[string]map[int64]string)
		for _, rec := range c.h.Events {
			if rec.Err != nil {
				continue
			}
			byVersion, ok := c.typesByVersion[rec.Event.AggregateID]
			if !ok {
				byVersion = make(map[int64]string)
				c.typesByVersion[rec.Event.AggregateID] = byVersion
			}
			byVersion[rec.Event.Version] = rec.Event.Type
		}
	}
	return c.typesByVersion[aggregateID]
}

func (c *checker) checkOutcomes() {
	for i, rec := range c.h.Commands {
		conflicts := c.conflictsOf[i]
		outcomes := len(conflicts)
		if c.appliedOf[i] > 0 {
			outcomes++
		}
		if outcomes == 1 {
			continue
		}
		a := Anomaly{AggregateID: aggregateOf(rec), CommandID: rec.Command.ID, Commands: []Position{rec.Position}}
		if outcomes == 0 {
			a.Kind = KindNoOutcome
			a.Detail = "the command record has neither events nor a conflict"
			c.add(a)
			continue
		}
		a.Kind = KindMultipleOutcomes
		var parts []string
		if c.appliedOf[i] > 0 {
			parts = append(parts, "events")
			for _, set := range c.eventSetsOf[ref{aggregateID: rec.Command.AggregateID, commandID: rec.Command.ID}] {
				a.Events = append(a.Events, c.positions(set)...)
			}
		}
		for _, j := range conflicts {
			parts = append(parts, string(c.h.Conflicts[j].Conflict.Reason)+" conflict")
			a.Conflicts = append(a.Conflicts, c.h.Conflicts[j].Position)
		}
		a.Detail = fmt.Sprintf("the command record has %d outcomes: %s", outcomes, strings.Join(parts, ", "))
		c.add(a)
	}
}

func (c *checker) checkAborted() {
	aborted := make(map[Position]struct{}, len(c.h.AbortedEvents))
	for _, p := range c.h.AbortedEvents {
		aborted[p] = struct{}{}
	}
	for _, rec := range c.h.Events {
		if _, ok := aborted[rec.Position]; ok {
			c.add(Anomaly{Kind: KindAbortedVisible, AggregateID: rec.Event.AggregateID, CommandID: rec.Event.CommandID, Events: []Position{rec.Position},
				Detail: "the read_committed read returned this event, but its transaction was aborted"})
		}
	}
	aborted = make(map[Position]struct{}, len(c.h.AbortedConflicts))
	for _, p := range c.h.AbortedConflicts {
		aborted[p] = struct{}{}
	}
	for _, rec := range c.h.Conflicts {
		if _, ok := aborted[rec.Position]; ok {
			c.add(Anomaly{Kind: KindAbortedVisible, AggregateID: rec.Conflict.AggregateID, CommandID: rec.Conflict.CommandID, Conflicts: []Position{rec.Position},
				Detail: "the read_committed read returned this conflict, but its transaction was aborted"})
		}
	}
}

func (c *checker) checkRedis(versions map[string]int64) {
	var aggregates []string
	for aggregateID := range c.lastVersion {
		aggregates = append(aggregates, aggregateID)
	}
	for aggregateID, version := range versions {
		if _, ok := c.lastVersion[aggregateID]; !ok && version > 0 {
			aggregates = append(aggregates, aggregateID)
		}
	}
	sort.Strings(aggregates)
	for _, aggregateID := range aggregates {
		redisVersion, eventVersion := versions[aggregateID], c.lastVersion[aggregateID]
		if redisVersion == eventVersion {
			continue
		}
		direction := "ahead of"
		if redisVersion < eventVersion {
			direction = "behind"
		}
		c.add(Anomaly{Kind: KindRedisMismatch, AggregateID: aggregateID,
			Detail: fmt.Sprintf("Redis holds version %d, the events end at version %d: Redis is %s the events topic", redisVersion, eventVersion, direction)})
	}
}
