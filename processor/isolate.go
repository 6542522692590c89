package processor

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// isolateAfter is how many times in a row a batch must fail for a reason
// tied to its records before the session narrows it down.
const isolateAfter = 2

// recordTied tells whether a batch failed for a reason tied to some of its
// records, which fails the same way on every retry: a record the broker
// refuses (too large, invalid, such as a keyless record on a compacted
// topic), or a command older than the dedupe window. Redis or Kafka being
// unreachable, amnesia and fencing are everyone's problem: narrowing the
// batch would not help.
func recordTied(err error) bool {
	if err == nil {
		return false
	}
	for _, refusal := range []error{kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord, kerr.CorruptMessage, kerr.InvalidTimestamp} {
		if errors.Is(err, refusal) {
			return true
		}
	}
	return errors.Is(err, ErrWindowExceeded)
}

// isolation keeps one record from holding a session's other partitions
// hostage. A batch polls several partitions; when it fails again and again
// for a reason tied to its records (recordTied), the session narrows it by
// bisection: it pauses half of the failing batch's partitions
// (PauseFetchPartitions) and polls the rest. A batch that commits clears its
// partitions, and the next half of the suspects is tried; a batch that fails
// is split again. A partition whose batch fails alone is stuck: it stays
// paused for Config.IsolationInterval and is tried again after it, reported
// once per interval, while every other partition keeps deciding.
//
// Narrowing keeps exactly-once. An aborted transaction rewinds every
// partition, paused or not, to its committed offset; outcomes already
// recorded in Redis for a paused partition's commands are replayed byte for
// byte once it is polled again, by this session or by the next owner. The
// stuck partition's commands therefore fail the same way until the cause is
// removed (the topic's limit raised); the partition then moves again on its
// next retry. Pauses belong to the session's client: a partition revoked,
// lost or assigned anew is resumed and forgotten, so that a partition
// reassigned later is never left paused by mistake. Only the lane's
// goroutine touches the state, except the changed list the group's
// callbacks add to.
type isolation struct {
	// failures counts the batches in a row that failed for a reason tied
	// to their records while nothing was narrowed.
	failures int
	// suspects are the partitions one of which makes the batch fail, while
	// narrowing; held are the partitions paused for it.
	suspects, held []int32
	// stuck are the partitions found to fail alone.
	stuck map[int32]*stuckPartition

	mu sync.Mutex
	// changed lists the partitions revoked, lost or assigned since the last
	// poll.
	changed []int32
}

// stuckPartition is a partition paused because its batches fail alone.
type stuckPartition struct {
	err      error
	retryAt  time.Time
	reports  int
	retrying bool
}

// reset starts a new session's isolation: a new client has nothing paused.
func (iso *isolation) reset() {
	iso.failures, iso.suspects, iso.held = 0, nil, nil
	iso.stuck = make(map[int32]*stuckPartition)
	iso.mu.Lock()
	iso.changed = nil
	iso.mu.Unlock()
}

// onChanged is called by the group's callbacks with the partitions revoked,
// lost or assigned.
func (iso *isolation) onChanged(partitions map[string][]int32) {
	iso.mu.Lock()
	defer iso.mu.Unlock()
	for _, ps := range partitions {
		iso.changed = append(iso.changed, ps...)
	}
}

// isolator is the isolation of one session: its state, and the client
// whose fetches it pauses.
type isolator struct {
	*isolation
	w      *Worker
	client *kgo.Client
	lane   string
	// now is the clock: time.Now, or a test's.
	now func() time.Time
}

// beforePoll forgets the partitions whose ownership changed and resumes the
// stuck partitions whose interval is over. It returns when the next stuck
// partition is due, zero when none is.
func (iso isolator) beforePoll() time.Time {
	now := iso.now()
	iso.mu.Lock()
	changed := iso.changed
	iso.changed = nil
	iso.mu.Unlock()
	if len(changed) > 0 {
		for _, partition := range changed {
			if _, ok := iso.stuck[partition]; ok {
				delete(iso.stuck, partition)
				iso.observe(SessionPartitionMoving, partition, nil)
			}
		}
		iso.suspects = slices.DeleteFunc(iso.suspects, func(p int32) bool { return slices.Contains(changed, p) })
		iso.held = slices.DeleteFunc(iso.held, func(p int32) bool { return slices.Contains(changed, p) })
		iso.resume(changed...)
	}
	var next time.Time
	for partition, stuck := range iso.stuck {
		switch {
		case stuck.retrying:
		case !now.Before(stuck.retryAt):
			stuck.retrying = true
			iso.resume(partition)
		case next.IsZero() || stuck.retryAt.Before(next):
			next = stuck.retryAt
		}
	}
	return next
}

// committed notes a batch that committed: its partitions move.
func (iso isolator) committed(partitions []int32) {
	iso.failures = 0
	for _, partition := range partitions {
		if stuck, ok := iso.stuck[partition]; ok {
			delete(iso.stuck, partition)
			iso.w.log.Info("partition moves again: its batch committed", zap.String("transactional_id", iso.lane),
				zap.Int32("partition", partition), zap.Int("times_reported", stuck.reports))
			iso.observe(SessionPartitionMoving, partition, nil)
		}
	}
	if iso.suspects == nil {
		return
	}
	iso.suspects = slices.DeleteFunc(iso.suspects, func(p int32) bool { return slices.Contains(partitions, p) })
	if len(iso.suspects) == 0 {
		// What failed does not fail any more.
		iso.endNarrowing()
		return
	}
	iso.split()
}

// failed notes a batch that was aborted because of err.
func (iso isolator) failed(partitions []int32, err error) {
	if !recordTied(err) || len(partitions) == 0 {
		return
	}
	var retried []int32
	for _, partition := range partitions {
		if stuck, ok := iso.stuck[partition]; ok && stuck.retrying {
			retried = append(retried, partition)
		}
	}
	switch {
	case len(retried) > 0:
		// A stuck partition tried again after its interval is the suspect
		// at once.
		iso.narrow(retried, err)
	case iso.suspects != nil:
		iso.narrow(partitions, err)
	default:
		if iso.failures++; iso.failures >= isolateAfter {
			iso.narrow(partitions, err)
		}
	}
}

// narrow makes the failing batch's partitions the suspects: one alone is
// stuck, more are split.
func (iso isolator) narrow(partitions []int32, err error) {
	iso.failures = 0
	if len(partitions) == 1 {
		iso.isolate(partitions[0], err)
		iso.endNarrowing()
		return
	}
	iso.suspects = slices.Clone(partitions)
	slices.Sort(iso.suspects)
	iso.split()
}

// split polls the first half of the suspects and holds the others.
func (iso isolator) split() {
	half := (len(iso.suspects) + 1) / 2
	probe, rest := iso.suspects[:half], iso.suspects[half:]
	for _, partition := range rest {
		if !slices.Contains(iso.held, partition) {
			iso.held = append(iso.held, partition)
		}
	}
	iso.held = slices.DeleteFunc(iso.held, func(p int32) bool { return slices.Contains(probe, p) })
	iso.pause(rest...)
	iso.resume(probe...)
}

// endNarrowing resumes the partitions held while narrowing.
func (iso isolator) endNarrowing() {
	iso.resume(iso.held...)
	iso.suspects, iso.held = nil, nil
}

// isolate pauses a partition that fails alone until the interval is over,
// and reports it.
func (iso isolator) isolate(partition int32, err error) {
	stuck := iso.stuck[partition]
	if stuck == nil {
		stuck = &stuckPartition{}
		iso.stuck[partition] = stuck
	}
	stuck.err, stuck.retrying, stuck.reports = err, false, stuck.reports+1
	stuck.retryAt = iso.now().Add(iso.w.cfg.IsolationInterval)
	iso.pause(partition)
	iso.w.log.Error("partition isolated: its batches fail alone for a reason tied to its records, so it is paused and tried again after the interval while the session's other partitions keep deciding; its commands get no outcome until the cause is removed",
		zap.String("transactional_id", iso.lane), zap.String("topic", iso.w.cfg.CommandsTopic), zap.Int32("partition", partition),
		zap.Duration("interval", iso.w.cfg.IsolationInterval), zap.Int("times_reported", stuck.reports), errorField(err))
	iso.observe(SessionPartitionStuck, partition, err)
}

func (iso isolator) pause(partitions ...int32) {
	if len(partitions) > 0 {
		iso.client.PauseFetchPartitions(map[string][]int32{iso.w.cfg.CommandsTopic: partitions})
	}
}

// resume resumes partitions, except the stuck ones still waiting for their
// interval.
func (iso isolator) resume(partitions ...int32) {
	partitions = slices.DeleteFunc(slices.Clone(partitions), func(p int32) bool {
		stuck, ok := iso.stuck[p]
		return ok && !stuck.retrying
	})
	if len(partitions) > 0 {
		iso.client.ResumeFetchPartitions(map[string][]int32{iso.w.cfg.CommandsTopic: partitions})
	}
}

func (iso isolator) observe(state SessionState, partition int32, err error) {
	iso.w.cfg.Observer.ObserveSession(SessionObservation{
		TransactionalID: iso.lane, State: state, Topic: iso.w.cfg.CommandsTopic, Partitions: []int32{partition}, Err: err,
	})
}

// pollContext bounds a poll by the time the next stuck partition is due, so
// that it is retried on time even when no other partition has records.
func pollContext(ctx context.Context, due time.Time) (context.Context, context.CancelFunc) {
	if due.IsZero() {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, due)
}
