package processor

import (
	"context"
	"sync"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The stages of processBatch after the records are decoded: load, decide
// (decider.decide), commitToRedis and publish.

// loaded is what a batch's commands are decided against.
type loaded struct {
	// aggregates are the versions, types and state snapshots Redis holds.
	aggregates map[string]versionstore.Aggregate
	// recorded are the decisions Redis holds for the batch's command IDs.
	recorded map[versionstore.CommandRef]versionstore.Decision
	// replays are the outcome records of the decisions that are replays of
	// this batch's own records.
	replays map[versionstore.CommandRef]versionstore.Outcome
}

// load reads what the batch needs from Redis in one round trip, forgetting
// the outcome records of committed transactions and recording the committed
// watermarks on the way; then, only when needed, the outcomes to replay and
// the recent events of the aggregates whose commands may be rebased.
func (w *Worker) load(ctx context.Context, l *lane, b *batch, aggregateIDs []string, refs []versionstore.CommandRef) (loaded, error) {
	var out loaded
	err := w.redisRoundTrip(ctx, RedisLoad, func(ctx context.Context) (err error) {
		out.aggregates, out.recorded, err = w.cfg.Store.LoadBatch(ctx, versionstore.LoadRequest{
			AggregateIDs: aggregateIDs, Commands: refs, Forget: l.forget, Committed: l.recovery.committed,
			Floors: l.recovery.committedFloors,
		})
		return err
	})
	if err != nil {
		return out, errors.Wrapf(err, "load %d aggregates from redis", len(aggregateIDs))
	}
	l.forget = l.forget[:0]
	clear(l.recovery.committed)
	clear(l.recovery.committedFloors)
	if err := w.checkWindows(l, b, out.recorded); err != nil {
		return out, err
	}
	if out.replays, err = w.loadReplays(ctx, b, out.recorded); err != nil {
		return out, err
	}
	if err := w.loadRecent(ctx, b, out.aggregates); err != nil {
		return out, err
	}
	return out, nil
}

// loadReplays loads the outcome records of the batch's records that Redis
// already decided: only after an aborted transaction, whose outcomes are
// re-published exactly as recorded.
func (w *Worker) loadReplays(ctx context.Context, b *batch, recorded map[versionstore.CommandRef]versionstore.Decision) (map[versionstore.CommandRef]versionstore.Outcome, error) {
	replayRefs := b.replayRefs(recorded)
	if len(replayRefs) == 0 {
		return nil, nil
	}
	var replays map[versionstore.CommandRef]versionstore.Outcome
	err := w.redisRoundTrip(ctx, RedisLoadOutcomes, func(ctx context.Context) (err error) {
		replays, err = w.cfg.Store.LoadOutcomes(ctx, replayRefs)
		return err
	})
	if err != nil {
		return nil, errors.Wrapf(err, "load %d recorded outcomes to replay", len(replayRefs))
	}
	return replays, nil
}

// commitToRedis advances the versions of the batch's changed aggregates
// with the compare-and-set.
func (w *Worker) commitToRedis(ctx context.Context, b *batch) error {
	if len(b.changes) == 0 {
		return nil
	}
	if w.cfg.Hooks.BeforeRedisCommit != nil {
		w.cfg.Hooks.BeforeRedisCommit(ctx, BatchParams{Records: len(b.records), Applied: len(b.changes)})
	}
	err := w.redisRoundTrip(ctx, RedisCommit, func(ctx context.Context) error {
		return w.cfg.Store.Commit(ctx, b.changes)
	})
	if err != nil {
		// A timeout is ambiguous (the scripts may have run): the abort and
		// the replay of the recorded outcomes settle it.
		return errors.Wrapf(err, "advance %d aggregate versions in redis", len(b.changes))
	}
	return nil
}

// redisRoundTrip runs one Redis round trip within Config.RedisTimeout,
// counting and observing it.
func (w *Worker) redisRoundTrip(ctx context.Context, operation RedisOperation, roundTrip func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.RedisTimeout)
	defer cancel()
	start := time.Now()
	err := roundTrip(ctx)
	w.observeRedis(operation, start, err)
	w.stats.RedisRoundTrips.Add(1)
	return err
}

// count adds the batch's outcomes by kind to params and to the batch's
// counts for the Observer.
func (b *batch) count(params *BatchParams) {
	for _, outcome := range b.outcomes {
		switch outcome.kind {
		case outcomeApplied:
			params.Applied++
			b.counts.Applied++
		case outcomeConflict:
			params.Conflicts++
			b.counts.add(outcome.reason)
		case outcomeReplayed:
			// A replay publishes the outcome of an aborted transaction,
			// which was not counted: count it by its recorded reason
			// (none: applied).
			params.Replayed++
			if outcome.reason == "" {
				b.counts.Applied++
			} else {
				b.counts.add(outcome.reason)
			}
		}
	}
}

// publish produces the batch's outcome records, with their headers, into
// the open transaction and flushes them; the first failed record's error is
// returned.
func (w *Worker) publish(ctx context.Context, sess *kgo.GroupTransactSession, b *batch, params BatchParams) error {
	var (
		mu         sync.Mutex
		produceErr error
	)
	promise := func(r *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if produceErr == nil {
				produceErr = errors.Wrapf(err, "produce outcome record for aggregate %s to %s", capField(string(r.Key)), r.Topic)
			}
			mu.Unlock()
		}
	}
	b.produceStart = time.Now()
	outs := w.outcomeRecords(b)
	for i := range outs {
		sess.Produce(ctx, &outs[i], promise)
	}
	if err := sess.Client().Flush(ctx); err != nil {
		return errors.Wrap(err, "flush outcome records")
	}
	mu.Lock()
	defer mu.Unlock()
	if produceErr == nil && w.cfg.Hooks.BeforeEnd != nil {
		w.cfg.Hooks.BeforeEnd(ctx, params)
	}
	return produceErr
}

// outcomeRecords builds the batch's outcome records in order: events to the
// events topic, conflicts to the conflicts topic, each with the kind, the
// command ID, the command's trace context and the CloudEvents headers. The
// records share one allocation and their headers another; header values
// are shared by the records (the client only reads them).
func (w *Worker) outcomeRecords(b *batch) []kgo.Record {
	total := 0
	for _, outcome := range b.outcomes {
		total += len(outcome.records)
	}
	outs := make([]kgo.Record, 0, total)
	// Per record at most: kind, command ID, traceparent, tracestate and
	// the seven CloudEvents headers.
	headers := make([]kgo.RecordHeader, 0, 11*total)
	ceSource := []byte(w.cfg.CloudEventsSource)
	for i, outcome := range b.outcomes {
		key, commandID := b.outcomeIdentity(i)
		trace := traceHeaders(b.records[i])
		for k, rec := range outcome.records {
			outs = append(outs, kgo.Record{Key: key, Value: rec.Value, Topic: w.cfg.EventsTopic})
			out := &outs[len(outs)-1]
			kind := headerKindEvent
			if rec.Kind == versionstore.KindConflict {
				kind = headerKindConflict
				out.Topic = w.cfg.ConflictsTopic
			}
			start := len(headers)
			headers = append(headers, kgo.RecordHeader{Key: events.HeaderKind, Value: kind})
			if commandID != nil {
				headers = append(headers, kgo.RecordHeader{Key: events.HeaderCommandID, Value: commandID})
			}
			headers = append(headers, trace...)
			var ce cloudEvent
			if outcome.cloudEvents != nil {
				ce = outcome.cloudEvents[k]
			} else {
				ce = cloudEventOf(rec)
			}
			headers = appendCloudEventHeaders(headers, ceSource, key, ce)
			out.Headers = headers[start:len(headers):len(headers)]
		}
	}
	return outs
}
