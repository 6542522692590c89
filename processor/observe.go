package processor

import (
	"context"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Observer is told what a worker does: the outcomes and timings of its
// batches, its Redis round trips, and the state of its sessions. It keeps
// metrics and health checks (internal/metrics implements it with
// Prometheus) out of this package's imports. A worker's sessions call it
// concurrently, on the hot path: its methods must be safe for concurrent use
// and must not block.
type Observer interface {
	// ObserveBatch is called once per polled batch, after its transaction
	// ended (committed or not).
	ObserveBatch(BatchObservation)
	// ObserveRedis is called after each Redis round trip of a batch.
	ObserveRedis(RedisObservation)
	// ObserveSession is called when a session's group membership or state
	// changes.
	ObserveSession(SessionObservation)
}

// BatchObservation describes one batch whose transaction ended.
type BatchObservation struct {
	// TransactionalID names the session (Config.Concurrency) that
	// processed the batch.
	TransactionalID string
	// Topic is the commands topic; Partitions lists the partitions the
	// batch's records came from.
	Topic      string
	Partitions []int32
	// Records is the number of command records in the batch.
	Records int
	// Outcomes counts the commands decided in the batch by outcome.
	// Replayed commands (re-published recorded outcomes) are counted in
	// Replayed only.
	Outcomes OutcomeCounts
	// Replayed counts the commands whose recorded outcome was re-published.
	Replayed int
	// Result is how the transaction ended.
	Result TransactionResult
	// Err is why the batch was aborted or the transaction failed, when
	// known. It wraps versionstore.ErrAmnesia when Redis had lost Arbiter's
	// data.
	Err error
	// Duration runs from the poll's return to the end of the transaction.
	Duration time.Duration
	// KafkaDuration runs from the first outcome record produced (or, for a
	// batch aborted before producing, from the transaction's start) to the
	// end of the transaction: the Kafka share of Duration.
	KafkaDuration time.Duration
}

// OutcomeCounts counts commands by outcome.
type OutcomeCounts struct {
	Applied, VersionConflict, Rejected, Invalid, UnknownType, Duplicate int
}

// add counts one conflict record's reason.
func (c *OutcomeCounts) add(reason events.Reason) {
	switch reason {
	case events.ReasonVersionConflict:
		c.VersionConflict++
	case events.ReasonRejected:
		c.Rejected++
	case events.ReasonInvalid:
		c.Invalid++
	case events.ReasonUnknownType:
		c.UnknownType++
	case events.ReasonDuplicate:
		c.Duplicate++
	}
}

// TransactionResult is how a batch's transaction ended.
type TransactionResult string

const (
	// TransactionCommitted: the outcomes and offsets are published.
	TransactionCommitted TransactionResult = "committed"
	// TransactionAborted: the worker aborted the batch (a Redis error, a
	// fenced compare-and-set, a produce error, amnesia); its records come
	// again.
	TransactionAborted TransactionResult = "aborted"
	// TransactionFailed: the commit did not go through (a rebalance, a
	// fenced producer, the broker unreachable); the session is replaced.
	TransactionFailed TransactionResult = "failed"
)

// RedisOperation names a Redis round trip of the batch cycle.
type RedisOperation string

const (
	// RedisLoad reads the batch's aggregates and recorded decisions, and
	// the watermarks when a session first decides on a partition.
	RedisLoad RedisOperation = "load"
	// RedisLoadOutcomes reads recorded outcome records for a replay.
	RedisLoadOutcomes RedisOperation = "load_outcomes"
	// RedisCommit runs the compare-and-set scripts.
	RedisCommit RedisOperation = "commit"
)

// RedisObservation describes one Redis round trip.
type RedisObservation struct {
	Operation RedisOperation
	Duration  time.Duration
	Err       error
}

// SessionState is what a session is doing.
type SessionState string

const (
	// SessionJoining: the session is (re)joining the group.
	SessionJoining SessionState = "joining"
	// SessionAssigned: the group gave the session partitions (Partitions,
	// added to any it had) or confirmed it has none; it is deciding.
	SessionAssigned SessionState = "assigned"
	// SessionRevoked: the session lost Partitions (a rebalance, or the
	// group dropped it).
	SessionRevoked SessionState = "revoked"
	// SessionWaitingForRebuild: Redis has lost Arbiter's data; the session
	// (or, with an empty TransactionalID, the worker before its sessions
	// start) waits for 'arbiter rebuild-versions'.
	SessionWaitingForRebuild SessionState = "waiting_for_rebuild"
	// SessionResumed: the wait for the rebuild is over.
	SessionResumed SessionState = "resumed"
	// SessionClosed: the session left the group (shutdown, or an error
	// after which a new session rejoins).
	SessionClosed SessionState = "closed"
	// SessionPartitionStuck: a partition's batches failed alone, again and
	// again, for a reason tied to its records (Err): the session paused it
	// for Config.IsolationInterval and decides on its other partitions.
	// Reported once per interval while the partition stays stuck.
	SessionPartitionStuck SessionState = "partition_stuck"
	// SessionPartitionMoving: a partition reported stuck committed again,
	// or left the session.
	SessionPartitionMoving SessionState = "partition_moving"
)

// SessionObservation describes a change of a session's state.
type SessionObservation struct {
	// TransactionalID names the session; empty for the worker as a whole.
	TransactionalID string
	State           SessionState
	// Topic and Partitions are the partitions assigned, revoked, stuck or
	// moving again.
	Topic      string
	Partitions []int32
	// Err is why a partition is stuck (SessionPartitionStuck).
	Err error
}

// nopObserver is the Observer of a worker configured without one.
type nopObserver struct{}

func (nopObserver) ObserveBatch(BatchObservation)     {}
func (nopObserver) ObserveRedis(RedisObservation)     {}
func (nopObserver) ObserveSession(SessionObservation) {}

// observeRedis reports a Redis round trip that started at start.
func (w *Worker) observeRedis(operation RedisOperation, start time.Time, err error) {
	w.cfg.Observer.ObserveRedis(RedisObservation{Operation: operation, Duration: time.Since(start), Err: err})
}

// groupObserverOpts reports the session's assignments to the Observer, and
// tells onChanged the partitions assigned, revoked or lost (isolation). A
// GroupTransactSession calls OnPartitionsAssigned after every join, with
// nothing new as well, so "assigned" also means "in the group".
func (w *Worker) groupObserverOpts(transactionalID string, onAssigned func(context.Context, *kgo.Client, map[string][]int32), onChanged func(map[string][]int32)) []kgo.Opt {
	report := func(state SessionState, assigned map[string][]int32) {
		observation := SessionObservation{TransactionalID: transactionalID, State: state, Topic: w.cfg.CommandsTopic}
		observation.Partitions = assigned[w.cfg.CommandsTopic]
		w.cfg.Observer.ObserveSession(observation)
	}
	return []kgo.Opt{
		// One callback of each kind per client (the last option wins): the
		// recovery check's is called from this one.
		kgo.OnPartitionsAssigned(func(ctx context.Context, client *kgo.Client, assigned map[string][]int32) {
			onAssigned(ctx, client, assigned)
			onChanged(assigned)
			report(SessionAssigned, assigned)
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
			onChanged(revoked)
			report(SessionRevoked, revoked)
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
			onChanged(lost)
			report(SessionRevoked, lost)
		}),
	}
}

// observeBatch reports a batch whose transaction ended: committed is what
// End returned, produceErr why the worker aborted the batch, endErr End's
// error.
func (w *Worker) observeBatch(l *lane, b *batch, params BatchParams, polled time.Time, produceErr error, committed bool, endErr error) {
	observation := BatchObservation{
		TransactionalID: l.transactionalID,
		Topic:           w.cfg.CommandsTopic,
		Partitions:      batchPartitions(b.records),
		Records:         len(b.records),
		Duration:        time.Since(polled),
		KafkaDuration:   time.Since(b.produceStart),
	}
	switch {
	case committed:
		observation.Result = TransactionCommitted
		observation.Outcomes = b.counts
		observation.Replayed = params.Replayed
		observation.Err = endErr
	case produceErr != nil:
		observation.Result = TransactionAborted
		observation.Err = errors.Join(produceErr, endErr)
	default:
		// A commit refused by the broker, or a rebalance during the
		// batch (End then aborts without an error).
		observation.Result = TransactionFailed
		observation.Err = endErr
	}
	w.cfg.Observer.ObserveBatch(observation)
}
