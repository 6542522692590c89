package processor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// recovery is what one lane remembers to tell a Redis that went back in
// time: the decided watermarks it saw or wrote (floors), the partitions it
// has checked since it got them, and the committed watermarks and (on Redis
// Cluster) committed floors still to be written. Only the lane's goroutine
// touches it.
type recovery struct {
	generation      string
	floors          map[versionstore.ShardFloor]int64
	checked         map[int32]bool
	committed       map[int32]int64
	committedFloors map[versionstore.ShardFloor]int64
	// assigned collects the partitions the group gave the session since
	// the last batch; the client's callback goroutine adds to it.
	mu       sync.Mutex
	assigned []int32
}

// onAssigned is the session's OnPartitionsAssigned: a partition given again
// is checked again, since another worker may have decided on it meanwhile.
func (r *recovery) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, partitions := range assigned {
		r.assigned = append(r.assigned, partitions...)
	}
}

// reset forgets what was learnt about Redis: after a rebuild, or when the
// session that held the partitions ends.
func (r *recovery) reset(generation string) {
	r.generation = generation
	r.floors = make(map[versionstore.ShardFloor]int64)
	r.checked = make(map[int32]bool)
	// Floors of before a rebuild would outbid the watermarks it reset.
	r.committedFloors = make(map[versionstore.ShardFloor]int64)
}

// ErrLostDecision is the cause of the amnesia found when a partition is
// taken: a committed command record of the last DedupeTTL has no decision
// in Redis, so Redis went back in time before it was decided.
var ErrLostDecision = errors.New("redis holds no decision for a command whose outcome is committed")

// checkTaken checks, for each partition the lane decides on for the first
// time since it took it, that Redis holds the decisions of every record
// before the batch: its watermarks reach the batch's first offset, or each
// record in between needed no decision (invalid records, duplicates). An
// error wrapping versionstore.ErrAmnesia means Redis went back in time.
func (w *Worker) checkTaken(ctx context.Context, l *lane, b *batch) error {
	l.recovery.mu.Lock()
	for _, partition := range l.recovery.assigned {
		delete(l.recovery.checked, partition)
	}
	l.recovery.assigned = l.recovery.assigned[:0]
	l.recovery.mu.Unlock()
	first := make(map[int32]int64)
	for _, rec := range b.records {
		if l.recovery.checked[rec.Partition] {
			continue
		}
		if start, ok := first[rec.Partition]; !ok || rec.Offset < start {
			first[rec.Partition] = rec.Offset
		}
	}
	if len(first) == 0 {
		return nil
	}
	// Part of loading what the batch needs: a failure counts as a failed
	// load.
	var decided, committed map[int32]int64
	err := w.redisRoundTrip(ctx, RedisLoad, func(ctx context.Context) (err error) {
		decided, committed, err = w.cfg.Store.Watermarks(ctx)
		return err
	})
	if err != nil {
		return err
	}
	for partition, start := range first {
		held := max(decided[partition], committed[partition])
		if held < start {
			if err := w.verifyDecided(ctx, partition, held, start); err != nil {
				return err
			}
		}
		if decided != nil {
			key := versionstore.ShardFloor{Shard: 0, Partition: partition}
			l.recovery.floors[key] = max(l.recovery.floors[key], decided[partition])
		}
	}
	// On Redis Cluster, what each slot must hold: a slot whose shard went
	// back in time refuses the compare-and-sets from now on.
	partitions := make([]int32, 0, len(first))
	for partition := range first {
		partitions = append(partitions, partition)
	}
	var floors map[versionstore.ShardFloor]int64
	err = w.redisRoundTrip(ctx, RedisLoad, func(ctx context.Context) (err error) {
		floors, err = w.cfg.Store.CommittedFloors(ctx, partitions)
		return err
	})
	if err != nil {
		return err
	}
	for key, floor := range floors {
		l.recovery.floors[key] = max(l.recovery.floors[key], floor)
	}
	for _, partition := range partitions {
		l.recovery.checked[partition] = true
	}
	return nil
}

// verifyDecided reads the commands partition from offset from up to (not
// including) to and checks that every valid command of the last DedupeTTL
// there has a decision in Redis. Older records are skipped: their decisions
// may have expired.
func (w *Worker) verifyDecided(ctx context.Context, partition int32, from, to int64) error {
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(w.cfg.Brokers...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	}, w.cfg.KafkaOptions...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return errors.Wrap(err, "create a Kafka client to check redis's decisions")
	}
	defer client.Close()
	// A minute of margin for clocks that differ.
	recent := time.Now().Add(-w.cfg.Store.Options().DedupeTTL + time.Minute)
	listed, err := kadm.NewClient(client).ListOffsetsAfterMilli(ctx, recent.UnixMilli(), w.cfg.CommandsTopic)
	if err != nil {
		return errors.Wrapf(err, "find the records of the last dedupe TTL in topic %s", w.cfg.CommandsTopic)
	}
	if o, ok := listed.Lookup(w.cfg.CommandsTopic, partition); ok && o.Err == nil && o.Offset > from {
		from = o.Offset
	}
	if from >= to {
		return nil
	}
	w.log.Info("checking that redis holds the decisions of the records before this partition's position",
		zap.Int32("partition", partition), zap.Int64("from", from), zap.Int64("to", to))
	client.AddConsumePartitions(map[string]map[int32]kgo.Offset{w.cfg.CommandsTopic: {partition: kgo.NewOffset().At(from)}})
	for {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := fetches.Err(); err != nil {
			return errors.Wrapf(err, "read partition %d of topic %s", partition, w.cfg.CommandsTopic)
		}
		var records []*kgo.Record
		done := false
		fetches.EachRecord(func(rec *kgo.Record) {
			if rec.Offset >= to-1 {
				done = true
			}
			if rec.Offset < to && !rec.Attrs.IsControl() && rec.Timestamp.After(recent) {
				records = append(records, rec)
			}
		})
		if err := w.checkDecided(ctx, records); err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// checkDecided checks that every valid command among records has a decision.
func (w *Worker) checkDecided(ctx context.Context, records []*kgo.Record) error {
	if len(records) == 0 {
		return nil
	}
	b := &batch{records: records}
	w.decider.decode(b)
	_, refs := b.loadRequest()
	loadCtx, cancel := context.WithTimeout(ctx, w.cfg.RedisTimeout)
	_, recorded, err := w.cfg.Store.Load(loadCtx, nil, refs)
	cancel()
	if err != nil {
		return err
	}
	for i, cmd := range b.commands {
		if b.invalid[i] != nil {
			continue
		}
		if _, ok := recorded[versionstore.CommandRef{AggregateID: cmd.AggregateID, CommandID: cmd.ID}]; !ok {
			rec := records[i]
			return errors.Mark(errors.Wrapf(ErrLostDecision,
				"command %s of aggregate %s (partition %d, offset %d) was decided and committed before, but redis has no record of it: %s",
				cmd.ID, cmd.AggregateID, rec.Partition, rec.Offset, versionstore.ErrAmnesia), versionstore.ErrAmnesia)
		}
	}
	return nil
}

// setWatermarks gives each change of a decided batch its partition, the
// offset after its last record, and the floor the lane expects Redis to hold.
func (w *Worker) setWatermarks(l *lane, b *batch) {
	for i := range b.changes {
		change := &b.changes[i]
		if len(change.Outcomes) == 0 {
			continue
		}
		change.Partition = change.Outcomes[0].Partition
		for _, outcome := range change.Outcomes {
			if outcome.Partition == change.Partition {
				change.NextOffset = max(change.NextOffset, outcome.Offset+1)
			}
		}
		change.Floor = l.recovery.floors[versionstore.ShardFloor{Shard: w.cfg.Store.WatermarkShard(change.AggregateID), Partition: change.Partition}]
	}
}

// noteCommitted remembers what a committed batch wrote: Redis must hold its
// decided watermarks from now on, and the committed watermarks are raised
// with the next load.
func (w *Worker) noteCommitted(l *lane, b *batch) {
	for _, change := range b.changes {
		if change.NextOffset == 0 {
			continue
		}
		key := versionstore.ShardFloor{Shard: w.cfg.Store.WatermarkShard(change.AggregateID), Partition: change.Partition}
		l.recovery.floors[key] = max(l.recovery.floors[key], change.NextOffset)
		l.recovery.committedFloors[key] = max(l.recovery.committedFloors[key], change.NextOffset)
	}
	if l.recovery.committed == nil {
		l.recovery.committed = make(map[int32]int64)
	}
	for _, rec := range b.records {
		l.recovery.committed[rec.Partition] = max(l.recovery.committed[rec.Partition], rec.Offset+1)
	}
}

// startAfterDecisions is the session's AdjustFetchOffsetsFn: a partition the
// group has no committed offset for (a new group on existing topics, offsets
// the broker expired) starts where Redis's committed watermark says the
// outcomes end, instead of at the start of the topic, where every command
// would be taken for a replay or decided a second time.
func (w *Worker) startAfterDecisions(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	var committed map[int32]int64
	for topic, partitions := range offsets {
		for partition, offset := range partitions {
			if offset.EpochOffset().Offset >= 0 {
				continue // the group committed an offset: it is the truth
			}
			if committed == nil {
				readCtx, cancel := context.WithTimeout(ctx, w.cfg.RedisTimeout)
				_, read, err := w.cfg.Store.Watermarks(readCtx)
				cancel()
				if err != nil {
					return nil, err
				}
				committed = read
			}
			if next, ok := committed[partition]; ok && next > 0 {
				w.log.Info("the group has no committed offset for this partition; starting after the last outcome redis records for it",
					zap.String("topic", topic), zap.Int32("partition", partition), zap.Int64("offset", next))
				partitions[partition] = kgo.NewOffset().At(next).WithEpoch(-1)
			}
		}
	}
	return offsets, nil
}

// endedUnclearly tells whether ending a transaction left its fate unknown to
// this session: a commit was wanted but not reported. franz-go reports a
// failed EndTxn that may have committed (UNKNOWN_SERVER_ERROR) as not
// committed without an error and rewinds to the offsets it last knew; a
// replay from there could publish outcomes the broker did commit. Only a
// new session, which fetches the committed offsets from the broker, knows.
func endedUnclearly(wanted kgo.TransactionEndTry, committed bool, err error) bool {
	return err == nil && wanted == kgo.TryCommit && !committed
}

// committedOnBroker tells whether a transaction that ended unclearly (see
// endedUnclearly) did commit: whether the group's committed offsets, once
// the broker resolved any pending transactional offset commit
// (RequireStable), reach past a record of the batch. franz-go also reports a
// transaction it aborted on purpose as not committed without an error —
// every transaction during which the group took a partition from the
// member, which in a cooperative group happens whenever a member joins or
// leaves — and it rewinds to the committed offsets then, which are right.
// Replacing the session there (a rejoin, which takes partitions from the
// other members and aborts their transactions in turn) made one rebalance
// a storm of them; only a commit the broker holds needs the new session.
func (w *Worker) committedOnBroker(ctx context.Context, sess *kgo.GroupTransactSession, records []*kgo.Record) (bool, error) {
	type topicPartition struct {
		topic     string
		partition int32
	}
	ends := make(map[topicPartition]int64)
	for _, rec := range records {
		key := topicPartition{rec.Topic, rec.Partition}
		ends[key] = max(ends[key], rec.Offset+1)
	}
	admin := kadm.NewClient(sess.Client())
	ctx = kadm.RequireStable(ctx)
	for {
		fetched, err := admin.FetchOffsets(ctx, w.cfg.Group)
		if err != nil {
			return false, errors.Wrapf(err, "fetch the committed offsets of group %s", w.cfg.Group)
		}
		unstable := false
		for key, end := range ends {
			offset, ok := fetched.Lookup(key.topic, key.partition)
			switch {
			case !ok:
			case errors.Is(offset.Err, kerr.UnstableOffsetCommit):
				unstable = true
			case offset.Err != nil:
				return false, errors.Wrapf(offset.Err, "fetch the committed offset of %s partition %d", key.topic, key.partition)
			case offset.At >= end:
				return true, nil
			}
		}
		if !unstable {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, errors.Wrap(ctx.Err(), "wait for the broker to resolve a pending transactional offset commit")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkPartition refuses a command record that is not on the partition the
// Java client's murmur2 partitioner puts its key on: the commands of one
// aggregate must all be decided in order by the one worker that owns that
// partition, or a command decided on one partition and not yet published
// could be overtaken by one decided on top of it from another.
func checkPartition(rec *kgo.Record, cmd commands.Command, partitions int32) error {
	if partitions <= 0 || rec.Partition >= partitions || len(rec.Key) == 0 {
		return nil
	}
	want := murmur2Partition(rec.Key, partitions)
	if want == rec.Partition {
		return nil
	}
	return &commands.InvalidError{
		CommandID:   cmd.ID,
		AggregateID: cmd.AggregateID,
		Reason: fmt.Sprintf("the record is on partition %d of %s but its key %q belongs on partition %d (murmur2, %d partitions): produce with the Java client's partitioner (librdkafka: partitioner=murmur2_random) and send it again",
			rec.Partition, rec.Topic, rec.Key, want, partitions),
	}
}

// murmur2Partition is the Java client's default partition of a key.
func murmur2Partition(key []byte, partitions int32) int32 {
	return int32((murmur2(key) & 0x7fffffff) % uint32(partitions))
}

// murmur2 is the Kafka Java client's murmur2 hash.
func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		b = b[4:]
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// inspectTopics learns the commands topic's partition count (for
// checkPartition) and warns when the events topic deletes old events: the
// events topic is the source of truth a rebuild reads from its first offset.
func (w *Worker) inspectTopics(ctx context.Context) error {
	client, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(w.cfg.Brokers...)}, w.cfg.KafkaOptions...)...)
	if err != nil {
		return errors.Wrap(err, "create a Kafka client")
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	details, err := admin.ListTopics(ctx, w.cfg.CommandsTopic)
	if err != nil {
		return errors.Wrapf(err, "describe topic %s", w.cfg.CommandsTopic)
	}
	if detail, ok := details[w.cfg.CommandsTopic]; ok && detail.Err == nil {
		w.decider.partitions.Store(int32(len(detail.Partitions)))
	}
	configs, err := admin.DescribeTopicConfigs(ctx, w.cfg.EventsTopic)
	if err != nil {
		w.log.Warn("cannot read the events topic's retention", zap.String("topic", w.cfg.EventsTopic), errorField(err))
		return nil
	}
	for _, config := range configs {
		for _, entry := range config.Configs {
			if entry.Key == "retention.ms" && entry.Value != nil && *entry.Value != "-1" {
				w.log.Warn("the events topic deletes events after retention.ms; 'arbiter rebuild-versions' needs every event since the first: set retention.ms=-1",
					zap.String("topic", w.cfg.EventsTopic), zap.String("retention_ms", *entry.Value))
			}
		}
	}
	return nil
}

// ErrWindowExceeded is returned when a command record older than the dedupe
// window has no decision in Redis although Redis holds decisions of later
// records of its partition: it may have been decided, its decision expired,
// and deciding it now could decide it twice. The partition stalls on it;
// run with a longer --dedupe-ttl than any outage, or skip the record by
// hand once its outcome is known.
var ErrWindowExceeded = errors.New("a command older than the dedupe window may have been decided already: its decision expired")

// checkWindows refuses to decide, without a decision in Redis, a command
// that is older than DedupeTTL and lies below a decided watermark the lane
// knows: it was likely decided (its batch's transaction never committed)
// and its decision has expired since.
func (w *Worker) checkWindows(l *lane, b *batch, recorded map[versionstore.CommandRef]versionstore.Decision) error {
	oldest := time.Now().Add(-w.cfg.Store.Options().DedupeTTL)
	for i, cmd := range b.commands {
		rec := b.records[i]
		if b.invalid[i] != nil || !rec.Timestamp.Before(oldest) {
			continue
		}
		if _, ok := recorded[versionstore.CommandRef{AggregateID: cmd.AggregateID, CommandID: cmd.ID}]; ok {
			continue
		}
		floor := l.recovery.floors[versionstore.ShardFloor{Shard: w.cfg.Store.WatermarkShard(cmd.AggregateID), Partition: rec.Partition}]
		if rec.Offset < floor {
			return errors.Wrapf(ErrWindowExceeded, "command %s of aggregate %s (partition %d, offset %d, produced %s) lies below the decided watermark %d",
				cmd.ID, cmd.AggregateID, rec.Partition, rec.Offset, rec.Timestamp.UTC().Format(time.RFC3339), floor)
		}
	}
	return nil
}

// fenceAfterRollback deletes the amnesia marker when the worker found Redis
// went back in time (the marker survived that): every other worker stops
// deciding too, at its next compare-and-set, even one that has not noticed,
// and 'arbiter rebuild-versions' may run while they wait.
func (w *Worker) fenceAfterRollback(ctx context.Context, cause error) {
	var rollback *versionstore.RollbackError
	if !errors.As(cause, &rollback) && !errors.Is(cause, ErrLostDecision) {
		return
	}
	fenceCtx, cancel := context.WithTimeout(ctx, w.cfg.RedisTimeout)
	defer cancel()
	if err := w.cfg.Store.Fence(fenceCtx); err != nil {
		w.log.Warn("cannot delete the initialization marker to stop the other workers", errorField(err))
		return
	}
	w.log.Error("redis went back in time: deleted the initialization marker, so every worker stops deciding until 'arbiter rebuild-versions' ran", errorField(cause))
}
