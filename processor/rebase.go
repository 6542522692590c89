package processor

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
)

// A command that arrives stale — its expectedVersion N >= 0 below the
// aggregate's version — is a version_conflict whose record lists the events
// written since N (eventsSince). When the command opted in with onConflict
// "rebase" and its handler declared what its decision depends on, it is
// instead decided again on the current state, provided none of those events
// is of a type it depends on (RebaseOn) or its resolver accepts them
// (ResolveConflicts); its events carry rebasedFrom N.
//
// Why this is safe: the handler's decision is a function of the state, and
// the state after N differs from the state at N only by the intervening
// events. A handler that declares which event types its decision reads
// promises that events of other types do not change it; deciding on the
// current state then gives the decision it would have given at N, now
// applied after the others — no update is lost. The rebase is decided from
// the aggregate's recent-events list as Redis holds it at the version the
// compare-and-set then checks, so it is as deterministic as any decision, and
// it is recorded and replayed like any other outcome.

// RebaseOn declares the event types a handler's decision depends on, so that
// a stale command of its type that opted in with onConflict "rebase" is
// decided again on the current state when none of the events written since
// its expectedVersion is of one of these types. A handler that declares
// nothing (and sets no ResolveConflicts) never rebases: its stale commands
// are version conflicts. Declare every event type whose effect on the state
// the decision reads — ChangePrice depends on PriceReduced and
// PriceIncreased, not on StockIncreased — and the creation event when the
// decision checks existence.
func RebaseOn(eventTypes ...string) HandlerOption {
	return func(c *handlerConfig) {
		c.rebaseOn = append(c.rebaseOn, eventTypes...)
	}
}

// Resolution is a ConflictResolver's answer.
type Resolution bool

// The answers of a ConflictResolver.
const (
	// RebaseCommand decides the command again on the current state.
	RebaseCommand Resolution = true
	// KeepConflict answers it with a version_conflict.
	KeepConflict Resolution = false
)

// ConflictParams is what a ConflictResolver decides on.
type ConflictParams struct {
	// Command is the stale command; it opted in with onConflict "rebase".
	Command commands.Command
	// ActualVersion is the aggregate's version now.
	ActualVersion int64
	// Intervening are the events written after the command's
	// expectedVersion up to ActualVersion, every one of them, in version
	// order; a payload over the recent-events payload limit is left out
	// (PayloadOmitted).
	Intervening []events.EventSummary
}

// ConflictResolver decides whether a stale command may be decided again on
// the current state, given the events written since its expectedVersion. It
// must be a pure function of its parameters, like a handler.
type ConflictResolver func(ctx context.Context, params ConflictParams) Resolution

// ResolveConflicts gives a handler a resolver: the general form of RebaseOn,
// for decisions that depend on what an event says, not only on its type.
// It is called only for stale commands that opted in, and only when every
// intervening event is known (the recent-events list still holds them). A
// resolver takes the place of RebaseOn types.
func ResolveConflicts(resolve ConflictResolver) HandlerOption {
	return func(c *handlerConfig) { c.resolver = resolve }
}

// RebasePolicy is what a command type declared about rebasing: the event
// types its decision depends on, or that a resolver decides.
type RebasePolicy struct {
	// DependsOn are the event types declared with RebaseOn.
	DependsOn []string
	// Custom is set when a ConflictResolver decides; DependsOn is then
	// empty, and which rebases were right cannot be checked from the
	// events alone.
	Custom bool
}

// RebasePolicies returns the policy of every command type that can rebase,
// for checkers (`arbiter verify`) that must tell a rebase from a lost
// update.
func (r *Registry) RebasePolicies() map[string]RebasePolicy {
	policies := make(map[string]RebasePolicy)
	for commandType, h := range r.handlers {
		switch {
		case h.resolver != nil:
			policies[commandType] = RebasePolicy{Custom: true}
		case len(h.rebaseOn) > 0:
			policies[commandType] = RebasePolicy{DependsOn: slices.Sorted(maps.Keys(h.rebaseOn))}
		}
	}
	return policies
}

// recentNeeded lists the aggregates of which a command of the batch expects
// a version below the one Redis holds, with how many of their last events
// answer the stalest of those commands: their recent-events lists must be
// loaded. Stale against a version reached within the batch needs no list:
// those events are the batch's own.
func (b *batch) recentNeeded(aggregates map[string]versionstore.Aggregate) []versionstore.RecentWant {
	var wants []versionstore.RecentWant
	index := make(map[string]int)
	for i, cmd := range b.commands {
		if b.invalid[i] != nil || cmd.ExpectedVersion < 0 {
			continue
		}
		loaded := aggregates[cmd.AggregateID].Version
		if cmd.ExpectedVersion >= loaded {
			continue
		}
		last := loaded - cmd.ExpectedVersion
		if j, ok := index[cmd.AggregateID]; ok {
			wants[j].Last = max(wants[j].Last, last)
			continue
		}
		index[cmd.AggregateID] = len(wants)
		wants = append(wants, versionstore.RecentWant{AggregateID: cmd.AggregateID, Last: last})
	}
	return wants
}

// since returns the events after version expected up to the aggregate's
// running version, from the list loaded from Redis and the events of this
// batch, and whether it holds every one of them.
func (run *aggregateRun) since(expected int64) ([]versionstore.RecentEvent, bool) {
	var found []versionstore.RecentEvent
	for _, e := range run.recent {
		// Entries past the loaded version were written by another worker
		// since the load; the compare-and-set will refuse this batch.
		if e.Version > expected && e.Version <= run.loaded.Version {
			found = append(found, e)
		}
	}
	for _, e := range run.applied {
		if e.Version > expected {
			found = append(found, e)
		}
	}
	complete := int64(len(found)) == run.version-expected
	for k, e := range found {
		complete = complete && e.Version == expected+1+int64(k)
	}
	return found, complete
}

// stale decides what becomes of a stale command: rebasedFrom is set when it
// is decided again; otherwise conflict is its version_conflict, with
// eventsSince.
func (d *decider) stale(ctx context.Context, h *handler, cmd commands.Command, run *aggregateRun) (rebasedFrom *int64, conflict events.Conflict) {
	conflict = events.Conflict{
		CommandID:       cmd.ID,
		AggregateID:     cmd.AggregateID,
		Reason:          events.ReasonVersionConflict,
		ExpectedVersion: events.Version(cmd.ExpectedVersion),
		ActualVersion:   events.Version(run.version),
		Message:         fmt.Sprintf("expected version %d, but found %d", cmd.ExpectedVersion, run.version),
	}
	if cmd.ExpectedVersion > run.version {
		return nil, conflict
	}
	found, complete := run.since(cmd.ExpectedVersion)
	conflict.EventsSinceCount = run.version - cmd.ExpectedVersion
	summaries := make([]events.EventSummary, len(found))
	for k, e := range found {
		summaries[k] = d.summary(cmd.AggregateID, e)
	}
	conflict.EventsSince = summaries
	if limit := d.eventsSinceLimit; len(conflict.EventsSince) > limit {
		conflict.EventsSince = conflict.EventsSince[len(conflict.EventsSince)-limit:]
	}
	if !cmd.Rebase() {
		return nil, conflict
	}
	why := ""
	switch {
	case h.resolver == nil && len(h.rebaseOn) == 0:
		why = fmt.Sprintf("command type %s declares no event types its decision depends on", cmd.Type)
	case !complete:
		why = fmt.Sprintf("the events since version %d are no longer all kept", cmd.ExpectedVersion)
	case h.resolver != nil:
		if safeResolve(ctx, h, ConflictParams{Command: cmd, ActualVersion: run.version, Intervening: summaries}) {
			return events.Version(cmd.ExpectedVersion), conflict
		}
		why = fmt.Sprintf("the conflict resolver of %s refused the events since version %d", cmd.Type, cmd.ExpectedVersion)
	default:
		for _, e := range found {
			if _, ok := h.rebaseOn[e.Type]; ok {
				why = fmt.Sprintf("%s at version %d is of a type %s depends on", e.Type, e.Version, cmd.Type)
				break
			}
		}
		if why == "" {
			return events.Version(cmd.ExpectedVersion), conflict
		}
	}
	conflict.Message += "; not rebased: " + why
	return nil, conflict
}

// safeResolve runs a resolver, taking a panic for KeepConflict.
func safeResolve(ctx context.Context, h *handler, params ConflictParams) (resolution Resolution) {
	defer func() {
		if recover() != nil {
			resolution = KeepConflict
		}
	}()
	return h.resolver(ctx, params)
}

// summary is a recent event as eventsSince shows it, its payload cut at the
// store's limit.
func (d *decider) summary(aggregateID string, e versionstore.RecentEvent) events.EventSummary {
	s := events.EventSummary{Version: e.Version, Type: e.Type, ID: events.EventID(aggregateID, e.Version), Payload: e.Payload, PayloadOmitted: e.PayloadOmitted}
	if len(s.Payload) > d.recentPayloadBytes {
		s.Payload, s.PayloadOmitted = nil, true
	}
	return s
}

// eventsSinceLimit bounds a version conflict's eventsSince: what the store
// keeps, or, when it keeps none, as many of the batch's own events.
func eventsSinceLimit(opts versionstore.Options) int {
	if opts.RecentEvents > 0 {
		return opts.RecentEvents
	}
	return versionstore.DefaultRecentEvents
}

// loadRecent loads, in one more round trip, the recent-events lists of the
// aggregates that stale commands of the batch need: only batches with such
// commands pay for it.
func (w *Worker) loadRecent(ctx context.Context, b *batch, aggregates map[string]versionstore.Aggregate) error {
	wants := b.recentNeeded(aggregates)
	if len(wants) == 0 || w.cfg.Store.Options().RecentEvents <= 0 {
		return nil
	}
	loadCtx, cancel := context.WithTimeout(ctx, w.cfg.RedisTimeout)
	defer cancel()
	recent, err := w.cfg.Store.LoadRecent(loadCtx, wants)
	w.stats.RedisRoundTrips.Add(1)
	if err != nil {
		return errors.Wrapf(err, "load the recent events of %d aggregates with stale commands", len(wants))
	}
	b.recent = recent
	return nil
}

// Advance brings an aggregate, as read at some version, forward by the
// events a version conflict listed since that version, with the registered
// aggregate type's Evolve: commands.RetryPolicy.Advance, so that a retry
// decides again without reading the aggregate. It returns false when it
// cannot: an untyped or unregistered aggregate, events that do not follow
// the aggregate's version one by one, a payload left out, or an Evolve
// error.
func (r *Registry) Advance(aggregate versionstore.Aggregate, eventsSince []events.EventSummary) (versionstore.Aggregate, bool) {
	if _, ok := r.aggregates[aggregate.Type]; !ok {
		return aggregate, false
	}
	for _, summary := range eventsSince {
		if summary.Version != aggregate.Version+1 || summary.PayloadOmitted {
			return aggregate, false
		}
		event := events.Event{
			ID:            summary.ID,
			AggregateID:   aggregate.ID,
			AggregateType: aggregate.Type,
			Type:          summary.Type,
			Version:       summary.Version,
			Payload:       summary.Payload,
		}
		state, err := r.Evolve(aggregate.Type, aggregate.State, event)
		if err != nil {
			return aggregate, false
		}
		aggregate.State, aggregate.Version = state, summary.Version
	}
	return aggregate, true
}
