package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
)

// decided is the outcome of one command record in a batch: the records to
// publish, in order.
type decided struct {
	records []versionstore.OutcomeRecord
	kind    outcomeKind
	// reason is a conflict's reason, for the Observer.
	reason events.Reason
	// cloudEvents are the records' CloudEvents attributes, one per record;
	// nil for a replay, whose attributes are read from the recorded values.
	cloudEvents []cloudEvent
}

type outcomeKind uint8

const (
	outcomeApplied outcomeKind = iota
	outcomeConflict
	outcomeReplayed
)

// batch is one poll's worth of command records on their way to outcomes.
type batch struct {
	records  []*kgo.Record
	commands []commands.Command
	invalid  []error
	outcomes []decided
	changes  []versionstore.Change
	now      time.Time
	// counts and produceStart are for the Observer.
	counts       OutcomeCounts
	produceStart time.Time

	timestampOnce sync.Once
	timestampText string
	// recent holds the recent-events lists of the aggregates recentNeeded
	// named.
	recent map[string][]versionstore.RecentEvent
}

// timestamp returns the batch's decision time as its records encode it.
func (b *batch) timestamp() string {
	b.timestampOnce.Do(func() { b.timestampText = b.now.Format(time.RFC3339Nano) })
	return b.timestampText
}

// aggregateRun is the running state of one aggregate while a batch is
// decided: it starts at the version Redis holds and moves with each applied
// command, so later commands of the batch are decided on it.
type aggregateRun struct {
	loaded      versionstore.Aggregate
	version     int64
	typeName    string
	codec       aggregateCodec
	state       any
	stateLoaded bool
	stateDirty  bool
	decided     map[string]versionstore.Decision
	outcomes    []versionstore.Outcome
	// encodeEach encodes the state after each applied command, so that a
	// state that does not encode refuses the command that made it; snapshot
	// is then the last encoding. Only used once encoding the state at the
	// end of the batch failed.
	encodeEach bool
	snapshot   []byte
	// recent is the aggregate's recent-events list as loaded (when a
	// command needed it); applied are the events of this batch.
	recent  []versionstore.RecentEvent
	applied []versionstore.RecentEvent
}

// decider turns a batch of command records into outcomes and Redis changes.
type decider struct {
	registry       *Registry
	maxRecordBytes int
	maxEventBytes  int
	// maxEvents and maxBytes are the per-command limits
	// (Config.MaxCommandEvents, Config.MaxCommandOutcomeBytes); 0 takes
	// the default.
	maxEvents, maxBytes int
	// eventsSinceLimit bounds a version conflict's eventsSince, and
	// recentPayloadBytes the payloads in it: the store's RecentEvents and
	// RecentPayloadBytes.
	eventsSinceLimit   int
	recentPayloadBytes int
	// partitions is the commands topic's partition count, for checkPartition;
	// 0 while unknown.
	partitions atomic.Int32
}

// decode decodes every record; invalid ones are answered at once.
func (d *decider) decode(b *batch) {
	b.commands = make([]commands.Command, len(b.records))
	b.invalid = make([]error, len(b.records))
	b.outcomes = make([]decided, len(b.records))
	parallel(len(b.records), func(i int) {
		rec := b.records[i]
		cmd, err := commands.Decode(rec.Key, rec.Value, d.maxRecordBytes)
		if err == nil {
			err = checkPartition(rec, cmd, d.partitions.Load())
		}
		b.commands[i] = cmd
		if err != nil {
			b.invalid[i] = err
			var invalid *commands.InvalidError
			errors.As(err, &invalid)
			b.outcomes[i] = d.conflict(b, i, events.Conflict{
				CommandID:   invalid.CommandID,
				AggregateID: invalid.AggregateID,
				Reason:      events.ReasonInvalid,
				Message:     invalid.Reason,
			})
			return
		}
		if _, ok := d.registry.handlers[cmd.Type]; !ok {
			b.invalid[i] = commands.ErrUnknownType
			b.outcomes[i] = d.conflict(b, i, events.Conflict{
				CommandID:       cmd.ID,
				AggregateID:     cmd.AggregateID,
				Reason:          events.ReasonUnknownType,
				ExpectedVersion: events.Version(cmd.ExpectedVersion),
				Message:         fmt.Sprintf("no handler is registered for command type %q; check the type's spelling or deploy a worker that handles it", cmd.Type),
			})
		}
	})
}

// loadRequest lists what a batch needs from Redis.
func (b *batch) loadRequest() ([]string, []versionstore.CommandRef) {
	seenAggregate := make(map[string]struct{}, len(b.commands))
	seenRef := make(map[versionstore.CommandRef]struct{}, len(b.commands))
	var aggregateIDs []string
	var refs []versionstore.CommandRef
	for i, cmd := range b.commands {
		if b.invalid[i] != nil {
			continue
		}
		if _, ok := seenAggregate[cmd.AggregateID]; !ok {
			seenAggregate[cmd.AggregateID] = struct{}{}
			aggregateIDs = append(aggregateIDs, cmd.AggregateID)
		}
		ref := versionstore.CommandRef{AggregateID: cmd.AggregateID, CommandID: cmd.ID}
		if _, ok := seenRef[ref]; !ok {
			seenRef[ref] = struct{}{}
			refs = append(refs, ref)
		}
	}
	return aggregateIDs, refs
}

// decide decides every valid command of the batch against the loaded
// aggregates and recorded outcomes, aggregates in parallel and each
// aggregate's commands in record order.
//
// recorded holds the decisions Redis already has; replays holds the outcome
// records of those that are replays of this batch's own records.
func (d *decider) decide(ctx context.Context, b *batch, aggregates map[string]versionstore.Aggregate, recorded map[versionstore.CommandRef]versionstore.Decision, replays map[versionstore.CommandRef]versionstore.Outcome) error {
	byAggregate := make(map[string][]int, len(b.commands))
	var order []string
	for i, cmd := range b.commands {
		if b.invalid[i] != nil {
			continue
		}
		if _, ok := byAggregate[cmd.AggregateID]; !ok {
			order = append(order, cmd.AggregateID)
		}
		byAggregate[cmd.AggregateID] = append(byAggregate[cmd.AggregateID], i)
	}
	changes := make([]*versionstore.Change, len(order))
	errs := make([]error, len(order))
	parallel(len(order), func(j int) {
		aggregateID := order[j]
		changes[j], errs[j] = d.decideAggregate(ctx, b, byAggregate[aggregateID], aggregates[aggregateID], recorded, replays, false)
		if errors.Is(errs[j], errStateEncode) {
			// Decided again, deterministically, with the state encoded after
			// each command: the command that made it unencodable is refused
			// and the others keep their outcomes.
			changes[j], errs[j] = d.decideAggregate(ctx, b, byAggregate[aggregateID], aggregates[aggregateID], recorded, replays, true)
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, change := range changes {
		if change != nil {
			b.changes = append(b.changes, *change)
		}
	}
	return nil
}

// errStateEncode marks an aggregate whose state did not encode at the end of
// its batch.
var errStateEncode = errors.New("state does not encode")

// decideAggregate decides one aggregate's commands of a batch (the record
// indexes in order) and returns its Redis change, nil when there is nothing
// to write.
func (d *decider) decideAggregate(ctx context.Context, b *batch, indexes []int, loaded versionstore.Aggregate, recorded map[versionstore.CommandRef]versionstore.Decision, replays map[versionstore.CommandRef]versionstore.Outcome, encodeEach bool) (*versionstore.Change, error) {
	aggregateID := loaded.ID
	run := &aggregateRun{loaded: loaded, encodeEach: encodeEach, recent: b.recent[loaded.ID]}
	run.version = run.loaded.Version
	run.typeName = run.loaded.Type
	for _, i := range indexes {
		aggregateID = b.commands[i].AggregateID
		ref := versionstore.CommandRef{AggregateID: aggregateID, CommandID: b.commands[i].ID}
		if decision, ok := recorded[ref]; ok {
			if isReplay(b.records[i], decision) {
				// The recorded decision's reason: the replay is this
				// command's outcome, counted once its transaction commits.
				replayed := decided{records: replays[ref].Records, kind: outcomeReplayed, reason: decision.Reason}
				if decision.Applied {
					replayed.reason = ""
				}
				b.outcomes[i] = replayed
			} else {
				b.outcomes[i] = d.duplicate(b, i, decision, run.version)
			}
			continue
		}
		if decision, ok := run.decision(ref.CommandID); ok {
			b.outcomes[i] = d.duplicate(b, i, decision, run.version)
			continue
		}
		outcome, err := d.decideOne(ctx, b, i, run)
		if err != nil {
			return nil, err
		}
		b.outcomes[i] = outcome
	}
	if len(run.outcomes) == 0 {
		return nil, nil
	}
	change := &versionstore.Change{
		AggregateID: aggregateID,
		FromVersion: run.loaded.Version,
		ToVersion:   run.version,
		Type:        run.typeName,
		State:       run.loaded.State,
		Outcomes:    run.outcomes,
		Events:      run.applied,
	}
	switch {
	case run.stateDirty && encodeEach:
		change.State = run.snapshot
	case run.stateDirty:
		snapshot, err := run.codec.encodeState(run.state)
		if err != nil {
			return nil, errors.Mark(errors.Wrapf(err, "aggregate %s", aggregateID), errStateEncode)
		}
		change.State = snapshot
	}
	return change, nil
}

// forgettable appends the commands whose outcome records this batch wrote
// to Redis: once its transaction committed, a replay can no longer need them.
func (b *batch) forgettable(refs []versionstore.CommandRef) []versionstore.CommandRef {
	for _, change := range b.changes {
		for _, outcome := range change.Outcomes {
			refs = append(refs, versionstore.CommandRef{AggregateID: change.AggregateID, CommandID: outcome.CommandID})
		}
	}
	for i, outcome := range b.outcomes {
		if outcome.kind == outcomeReplayed {
			refs = append(refs, versionstore.CommandRef{AggregateID: b.commands[i].AggregateID, CommandID: b.commands[i].ID})
		}
	}
	return refs
}

// isReplay tells whether a decided command's record is the very record that
// was decided: a replay after an aborted transaction, which re-publishes the
// recorded outcome byte for byte. Another record with the same command ID is
// a duplicate.
func isReplay(rec *kgo.Record, decision versionstore.Decision) bool {
	return decision.Partition == rec.Partition && decision.Offset == rec.Offset
}

// replayRefs lists the batch's records whose decision Redis holds for that
// very record: their outcome records must be loaded to be re-published.
func (b *batch) replayRefs(recorded map[versionstore.CommandRef]versionstore.Decision) []versionstore.CommandRef {
	var refs []versionstore.CommandRef
	for i, cmd := range b.commands {
		if b.invalid[i] != nil {
			continue
		}
		ref := versionstore.CommandRef{AggregateID: cmd.AggregateID, CommandID: cmd.ID}
		if decision, ok := recorded[ref]; ok && isReplay(b.records[i], decision) {
			refs = append(refs, ref)
		}
	}
	return refs
}

func (d *decider) duplicate(b *batch, i int, original versionstore.Decision, actualVersion int64) decided {
	cmd := b.commands[i]
	originalReason := events.OriginalApplied
	if !original.Applied {
		originalReason = string(original.Reason)
	}
	conflict := events.Conflict{
		CommandID:       cmd.ID,
		AggregateID:     cmd.AggregateID,
		Reason:          events.ReasonDuplicate,
		ExpectedVersion: events.Version(cmd.ExpectedVersion),
		Message: fmt.Sprintf("command %s was already decided (%s at version %d, from partition %d offset %d); this record is not applied",
			cmd.ID, originalReason, original.Version, original.Partition, original.Offset),
		ActualVersion:   events.Version(actualVersion),
		OriginalReason:  originalReason,
		OriginalVersion: events.Version(original.Version),
	}
	return d.conflict(b, i, conflict)
}

// decideOne decides one new command against the aggregate's running state:
// its expected version is checked (a stale one may be rebased), the state is
// loaded, the handler decides, its drafts become events within the limits,
// and the outcome is recorded on the running state. A command refused at
// any stage is answered with a conflict record, recorded too.
func (d *decider) decideOne(ctx context.Context, b *batch, i int, run *aggregateRun) (decided, error) {
	// run is passed to each stage rather than kept in c: escape analysis
	// follows c as a whole, and c's strings reach the conflict records.
	c := deciding{decider: d, b: b, i: i, cmd: b.commands[i], h: d.registry.handlers[b.commands[i].Type]}
	rebasedFrom, refused := c.checkVersion(ctx, run)
	if refused != nil {
		return *refused, nil
	}
	codec, refused := c.loadState(run)
	if refused != nil {
		return *refused, nil
	}
	drafts, refused := c.callHandler(ctx, run, codec)
	if refused != nil {
		return *refused, nil
	}
	built, refused := c.buildEvents(run, codec, drafts, rebasedFrom)
	if refused != nil {
		return *refused, nil
	}
	return c.apply(run, codec, built), nil
}

// deciding is one command on its way through decideOne.
type deciding struct {
	*decider
	b   *batch
	i   int
	cmd commands.Command
	h   *handler
}

// reject answers the command with a conflict record of the reason and
// records it.
func (c *deciding) reject(run *aggregateRun, reason events.Reason, message string) *decided {
	conflict := events.Conflict{
		CommandID:       c.cmd.ID,
		AggregateID:     c.cmd.AggregateID,
		Reason:          reason,
		ExpectedVersion: events.Version(c.cmd.ExpectedVersion),
		Message:         message,
	}
	if reason != events.ReasonInvalid {
		conflict.ActualVersion = events.Version(run.version)
	}
	// An invalid payload is recorded too: a worker that takes the
	// partition over tells a Redis that went back in time by finding no
	// decision for a committed command (checkTaken).
	return c.refuse(run, conflict)
}

// refuse answers the command with the conflict record and records it.
func (c *deciding) refuse(run *aggregateRun, conflict events.Conflict) *decided {
	out := c.conflict(c.b, c.i, conflict)
	run.record(c.b, c.i, versionstore.Outcome{Reason: conflict.Reason, Version: run.version, Records: out.records})
	return &out
}

// checkVersion checks the command's expected version against the running
// one. A stale version is refused with the events since, or rebased when
// the command type allows it: rebasedFrom is then the version it expected.
func (c *deciding) checkVersion(ctx context.Context, run *aggregateRun) (rebasedFrom *int64, refused *decided) {
	cmd := c.cmd
	if cmd.ExpectedVersion >= 0 && cmd.ExpectedVersion != run.version {
		var conflict events.Conflict
		if rebasedFrom, conflict = c.stale(ctx, c.h, cmd, run); rebasedFrom == nil {
			return nil, c.refuse(run, conflict)
		}
	}
	switch {
	case cmd.ExpectedVersion < 0 && !c.h.relaxedVersions:
		return nil, c.reject(run, events.ReasonRejected, fmt.Sprintf("command type %s does not allow expectedVersion %d; send the exact version you read", cmd.Type, cmd.ExpectedVersion))
	case cmd.ExpectedVersion == commands.MustExist && run.version == 0:
		return nil, c.reject(run, events.ReasonVersionConflict, "expected an existing aggregate (expectedVersion -2), but it does not exist")
	}
	return rebasedFrom, nil
}

// loadState picks the codec of the handler's aggregate type, nil for an
// untyped handler, and decodes the stored state the first time an
// aggregate's command needs it.
func (c *deciding) loadState(run *aggregateRun) (aggregateCodec, *decided) {
	cmd := c.cmd
	codec, refusal := c.codecFor(c.h, cmd, run)
	if refusal != "" {
		return nil, c.reject(run, events.ReasonRejected, refusal)
	}
	if codec != nil && !run.stateLoaded {
		state, err := codec.decodeState(run.loaded.State)
		if err != nil {
			// A snapshot that does not decode cannot be decided on; failing
			// the batch would stall the partition on every retry, so the
			// command is refused and its sender told why.
			return nil, c.reject(run, events.ReasonRejected, fmt.Sprintf("the stored %s state of aggregate %s at version %d does not decode (%v): deploy a handler that reads it, or rebuild it with 'arbiter rebuild-versions'",
				codec.name(), cmd.AggregateID, run.version, err))
		}
		run.codec, run.state, run.stateLoaded = codec, state, true
	}
	return codec, nil
}

// callHandler runs the handler on the running state; an error, a panic or
// no events refuse the command.
func (c *deciding) callHandler(ctx context.Context, run *aggregateRun, codec aggregateCodec) ([]events.Draft, *decided) {
	var state any
	if codec != nil {
		state = run.state
	}
	drafts, err := safeDecide(ctx, c.h, state, run.version, c.cmd)
	var invalidPayload *payloadError
	switch {
	case errors.As(err, &invalidPayload):
		return nil, c.reject(run, events.ReasonInvalid, invalidPayload.Error())
	case err != nil:
		return nil, c.reject(run, events.ReasonRejected, err.Error())
	case len(drafts) == 0:
		return nil, c.reject(run, events.ReasonRejected, fmt.Sprintf("command type %s decided no events: nothing to apply", c.cmd.Type))
	}
	return drafts, nil
}

// builtEvents are an applied command's events: their records, CloudEvents
// attributes and recent-events entries, the version and state after them
// and, when every command's state is encoded, that state's snapshot.
type builtEvents struct {
	records       []versionstore.OutcomeRecord
	cloudEvents   []cloudEvent
	appliedEvents []versionstore.RecentEvent
	version       int64
	state         any
	snapshot      []byte
}

// buildEvents turns the handler's drafts into events on top of the running
// version and state, within the per-event and per-command limits. A draft
// that does not encode or apply, or a limit crossed, refuses the command.
func (c *deciding) buildEvents(run *aggregateRun, codec aggregateCodec, drafts []events.Draft, rebasedFrom *int64) (builtEvents, *decided) {
	cmd := c.cmd
	budget := c.budget()
	if err := budget.checkEvents(cmd.Type, len(drafts)); err != nil {
		return builtEvents{}, c.reject(run, events.ReasonRejected, err.Error())
	}
	overhead := recordOverhead(cmd.AggregateID, cmd.ID)
	built := builtEvents{
		records:       make([]versionstore.OutcomeRecord, len(drafts)),
		cloudEvents:   make([]cloudEvent, len(drafts)),
		appliedEvents: make([]versionstore.RecentEvent, 0, len(drafts)),
		version:       run.version,
		state:         run.state,
	}
	aggregateType := run.typeName
	if codec != nil {
		aggregateType = codec.name()
	}
	for k, draft := range drafts {
		payload, err := encodePayload(draft)
		if err != nil || draft.Type == "" {
			return builtEvents{}, c.reject(run, events.ReasonRejected, fmt.Sprintf("handler of %s produced an unusable event %d: %v", cmd.Type, k, err))
		}
		built.version++
		event := events.Event{
			ID:            events.EventID(cmd.AggregateID, built.version),
			AggregateID:   cmd.AggregateID,
			AggregateType: aggregateType,
			Type:          draft.Type,
			Version:       built.version,
			CommandID:     cmd.ID,
			RebasedFrom:   rebasedFrom,
			Payload:       payload,
			Metadata:      cmd.Metadata,
			Timestamp:     c.b.now,
		}
		value, refusal := c.encodeEvent(k, &event)
		if refusal != "" {
			return builtEvents{}, c.reject(run, events.ReasonRejected, refusal)
		}
		built.records[k] = versionstore.OutcomeRecord{Kind: versionstore.KindEvent, Value: value}
		if err := budget.add(cmd.Type, built.records[k], overhead); err != nil {
			return builtEvents{}, c.reject(run, events.ReasonRejected, err.Error())
		}
		if codec != nil {
			built.state, err = codec.evolve(built.state, event)
			if err != nil {
				return builtEvents{}, c.reject(run, events.ReasonRejected, fmt.Sprintf("event %s of %s cannot be applied to the %s state: %v", draft.Type, cmd.Type, codec.name(), err))
			}
		}
		built.cloudEvents[k] = cloudEvent{id: event.ID, eventType: event.Type, time: c.b.timestamp()}
		built.appliedEvents = append(built.appliedEvents, versionstore.RecentEvent{Version: built.version, Type: draft.Type, Payload: payload})
	}
	if codec != nil && run.encodeEach {
		var err error
		if built.snapshot, err = codec.encodeState(built.state); err != nil {
			return builtEvents{}, c.reject(run, events.ReasonRejected, fmt.Sprintf("the %s state after command type %s does not encode: %v", codec.name(), cmd.Type, err))
		}
	}
	return built, nil
}

// encodeEvent encodes the command's event k within the per-event size
// limit; refusal says why it cannot be published.
func (c *deciding) encodeEvent(k int, event *events.Event) (value []byte, refusal string) {
	value, fast := appendEventJSON(make([]byte, 0, eventSizeHint(event)), event)
	if !fast {
		var err error
		if value, err = json.Marshal(*event); err != nil {
			return nil, fmt.Sprintf("event %d of %s does not encode: %v", k, c.cmd.Type, err)
		}
	}
	if len(value) > c.maxEventBytes {
		return nil, fmt.Sprintf("event %d of %s is %d bytes, over the %d-byte limit", k, c.cmd.Type, len(value), c.maxEventBytes)
	}
	return value, ""
}

// apply moves the running version and state past the command's events and
// records it as applied.
func (c *deciding) apply(run *aggregateRun, codec aggregateCodec, built builtEvents) decided {
	run.applied = append(run.applied, built.appliedEvents...)
	run.version = built.version
	if codec != nil {
		run.state, run.stateDirty = built.state, true
		run.typeName = codec.name()
		run.snapshot = built.snapshot
	}
	run.record(c.b, c.i, versionstore.Outcome{Applied: true, Version: built.version, Records: built.records})
	return decided{records: built.records, kind: outcomeApplied, cloudEvents: built.cloudEvents}
}

// record keeps a decided outcome for the aggregate's Redis change.
func (run *aggregateRun) record(b *batch, i int, outcome versionstore.Outcome) {
	rec := b.records[i]
	outcome.CommandID = b.commands[i].ID
	outcome.Partition = rec.Partition
	outcome.Offset = rec.Offset
	run.outcomes = append(run.outcomes, outcome)
	switch {
	case run.decided != nil:
		run.decided[outcome.CommandID] = outcome.Decision()
	case len(run.outcomes) > decidedScanLimit:
		run.decided = make(map[string]versionstore.Decision, 2*len(run.outcomes))
		for _, o := range run.outcomes {
			run.decided[o.CommandID] = o.Decision()
		}
	}
}

// decidedScanLimit is how many outcomes of one aggregate in one batch are
// searched one by one before they get a map: most aggregates see one or two
// commands per batch, and a map per aggregate was a twentieth of the
// worker's allocations.
const decidedScanLimit = 8

// decision returns the decision made earlier in this batch for a command ID.
func (run *aggregateRun) decision(commandID string) (versionstore.Decision, bool) {
	if run.decided != nil {
		d, ok := run.decided[commandID]
		return d, ok
	}
	for i := range run.outcomes {
		if run.outcomes[i].CommandID == commandID {
			return run.outcomes[i].Decision(), true
		}
	}
	return versionstore.Decision{}, false
}

// eventSizeHint is a capacity for an event's encoding that is rarely
// exceeded.
func eventSizeHint(e *events.Event) int {
	n := 160 + 2*len(e.AggregateID) + len(e.AggregateType) + len(e.Type) + len(e.CommandID) + len(e.Payload)
	for key, value := range e.Metadata {
		n += len(key) + len(value) + 6
	}
	return n
}

// safeDecide runs a handler, turning a panic into a rejection so that one
// bad command never crash-loops a worker.
func safeDecide(ctx context.Context, h *handler, state any, version int64, cmd commands.Command) (drafts []events.Draft, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Reject("handler of %s failed: %v", cmd.Type, r)
		}
	}()
	return h.decide(ctx, state, version, cmd)
}

// conflict encodes a conflict record for record i. The command record's
// value is kept in it (as JSON, or base64 when it is not UTF-8 JSON) unless
// that would make the record larger than the output limit: a conflict that
// cannot be produced would block its partition.
func (d *decider) conflict(b *batch, i int, conflict events.Conflict) decided {
	rec := b.records[i]
	conflict.Source = events.Source{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset}
	conflict.Timestamp = b.now
	message := conflict.Message
	boundConflict(&conflict)
	if utf8.Valid(rec.Value) && json.Valid(rec.Value) {
		conflict.Command = rec.Value
	} else {
		conflict.RawValue = rec.Value
	}
	value, fast := appendConflictJSON(make([]byte, 0, conflictSizeHint(&conflict)), &conflict)
	var err error
	if !fast {
		value, err = json.Marshal(conflict)
	}
	if err != nil || len(value) > d.maxEventBytes {
		conflict.Command, conflict.RawValue = nil, nil
		setMessage(&conflict, fmt.Sprintf("%s (the command record, %d bytes, is left out of this conflict record; read it at its source offset)", message, len(rec.Value)))
		value, _ = json.Marshal(conflict)
	}
	return decided{
		records:     []versionstore.OutcomeRecord{{Kind: versionstore.KindConflict, Value: value}},
		kind:        outcomeConflict,
		reason:      conflict.Reason,
		cloudEvents: []cloudEvent{conflictCloudEvent(conflict.Source, conflict.Reason, b.timestamp())},
	}
}

// conflictSizeHint estimates a conflict record's encoded size, to allocate
// it once.
func conflictSizeHint(c *events.Conflict) int {
	n := 256 + len(c.CommandID) + len(c.AggregateID) + len(c.Message) + len(c.Command) + len(c.Source.Topic)
	for i := range c.EventsSince {
		n += 64 + len(c.EventsSince[i].Type) + len(c.EventsSince[i].ID) + len(c.EventsSince[i].Payload)
	}
	return n
}

// parallel runs fn(0..n-1) on up to GOMAXPROCS goroutines.
func parallel(n int, fn func(i int)) {
	workers := runtime.GOMAXPROCS(0)
	if n < 64 || workers == 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	if workers > n {
		workers = n
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for start := 0; start < n; start += chunk {
		end := min(start+chunk, n)
		wg.Add(1)
		go func(start, end int) {
			defer wg.Done()
			for i := start; i < end; i++ {
				fn(i)
			}
		}(start, end)
	}
	wg.Wait()
}
