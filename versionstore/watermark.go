package versionstore

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// Watermarks let a worker tell a Redis that went back in time (a restored
// older snapshot, a failover to a replica that was behind, a crash that lost
// the last second of an AOF) from one that holds everything: the amnesia
// marker survives all of those.
//
//	<prefix>:decided              sorted set: commands partition -> the offset after the
//	                              last record whose decision this Redis holds, raised by
//	                              the compare-and-set atomically with the decisions
//	                              (on Redis Cluster one per slot: <prefix>:{<slot tag>}:decided)
//	<prefix>:committed            sorted set: commands partition -> the offset after the
//	                              last record whose outcome a worker saw committed in Kafka
//	<prefix>:settings             hash: dedupe_ttl_ms, the decision bucket width
//	<prefix>:{<tag>}:floors:<p>   Redis Cluster only, sorted set: slot -> the decided
//	                              watermark of commands partition p that a committed
//	                              batch wrote in that slot; <tag> puts it in the slot
//	                              of <prefix>:committed
//
// Every watermark is a Kafka-style "next offset", 0 when nothing is known,
// and only ever raised (ZADD GT). A worker remembers the watermarks it saw or
// wrote and passes them to the compare-and-set as Change.Floor: a Redis that
// holds less refuses the change with a *RollbackError, which is ErrAmnesia.

// On Redis Cluster each slot has its own decided watermarks, on its own
// shard, and a shard can go back in time alone (a master restored from an
// older backup, a failover to a replica that was behind). A worker that
// takes a partition learns what every slot must hold from the committed
// floors: written, like the committed watermarks, after the batch that
// raised the slot's decided watermark committed, and kept in the slot of
// the committed watermarks, so that they share a shard. The worker takes
// them as the floors of its compare-and-sets (Change.Floor), so a slot of a
// shard that went back in time refuses them. Why every rollback is caught:
//
//   - a shard other than the committed watermarks' lost writes: its slots'
//     decided watermarks are below the committed floors the other shard
//     kept, and their next compare-and-set is refused;
//   - the committed watermarks' shard lost writes: it lost them from some
//     moment on, and the committed watermarks and floors it kept were
//     written before then, after the decisions they cover. The committed
//     watermark is then below the partition's position, and the worker
//     checks that every committed command from there on has its decision
//     (in any slot), which is where the lost ones are.

// ShardFloor names one decided watermark: a commands partition in one shard
// (WatermarkShard) of Redis.
type ShardFloor struct {
	Shard     int
	Partition int32
}

// RollbackError is returned by Commit, joined into ErrAmnesia, when Redis
// holds a lower decided watermark than the worker saw or wrote before: Redis
// went back in time and lost decisions whose outcomes may be published.
// Deciding against it could apply a command on an old version. Nothing of
// the change was written.
type RollbackError struct {
	AggregateID string
	Partition   int32
	// Held is the watermark Redis holds; Expected the one it must hold.
	Held, Expected int64
}

// Error implements error.
func (e *RollbackError) Error() string {
	return "redis went back in time: it holds the decisions of commands partition " + strconv.Itoa(int(e.Partition)) +
		" up to offset " + strconv.FormatInt(e.Held, 10) + " but held them up to " + strconv.FormatInt(e.Expected, 10) +
		" (aggregate " + e.AggregateID + "); stop the workers or let them wait, and run 'arbiter rebuild-versions'"
}

// Is makes errors.Is(err, ErrAmnesia) true: a Redis that went back in time
// has lost data as surely as an empty one, and the cure is the same.
func (e *RollbackError) Is(target error) bool { return target == ErrAmnesia }

// watermarkKey returns the decided watermarks of an aggregate's slot.
func (s *Store) watermarkKey(aggregateID string) string {
	if !s.cluster {
		return s.opts.KeyPrefix + ":decided"
	}
	return strings.TrimSuffix(s.markerKey(aggregateID), ":initialized") + ":decided"
}

func (s *Store) committedKey() string { return s.opts.KeyPrefix + ":committed" }

// floorsKey returns the committed floors of a commands partition, in the
// slot of the committed watermarks (Redis Cluster only).
func (s *Store) floorsKey(partition int32) string {
	marker := s.slotMarkerKey(slotOfKey(s.committedKey()))
	return strings.TrimSuffix(marker, ":initialized") + ":floors:" + strconv.Itoa(int(partition))
}

// floorsPattern matches every floorsKey.
func (s *Store) floorsPattern() string {
	return globEscape(strings.TrimSuffix(s.floorsKey(0), "0")) + "*"
}

func (s *Store) settingsKey() string { return s.opts.KeyPrefix + ":settings" }

// WatermarkShard returns which decided watermark guards an aggregate: 0 on
// a single Redis, its slot on Redis Cluster. Workers key the floors they
// remember by it.
func (s *Store) WatermarkShard(aggregateID string) int {
	if !s.cluster {
		return 0
	}
	var b strings.Builder
	writeEscaped(&b, aggregateID)
	return clusterSlot(b.String())
}

// Watermarks returns, per commands partition, the decided watermark (on
// Redis Cluster: nil, it is per slot) and the committed watermark.
func (s *Store) Watermarks(ctx context.Context) (decided, committed map[int32]int64, err error) {
	pipe := s.client.Pipeline()
	var decidedCmd *redis.ZSliceCmd
	if !s.cluster {
		decidedCmd = pipe.ZRangeWithScores(ctx, s.watermarkKey(""), 0, -1)
	}
	committedCmd := pipe.ZRangeWithScores(ctx, s.committedKey(), 0, -1)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, errors.Wrap(err, "read the watermarks")
	}
	if decidedCmd != nil {
		decided = watermarkMap(decidedCmd.Val())
	}
	return decided, watermarkMap(committedCmd.Val()), nil
}

func watermarkMap(members []redis.Z) map[int32]int64 {
	m := make(map[int32]int64, len(members))
	for _, z := range members {
		name, _ := z.Member.(string)
		partition, err := strconv.ParseInt(name, 10, 32)
		if err != nil {
			continue
		}
		m[int32(partition)] = int64(z.Score)
	}
	return m
}

// raiseCommitted queues raising the committed watermarks, and on Redis
// Cluster the committed floors (one ZADD per partition), on a pipeline.
func (s *Store) raiseCommitted(ctx context.Context, pipe redis.Pipeliner, committed map[int32]int64, floors map[ShardFloor]int64) {
	for partition, next := range committed {
		pipe.ZAddGT(ctx, s.committedKey(), redis.Z{Score: float64(next), Member: strconv.Itoa(int(partition))})
	}
	if !s.cluster || len(floors) == 0 {
		return
	}
	perPartition := make(map[int32][]redis.Z)
	for floor, next := range floors {
		perPartition[floor.Partition] = append(perPartition[floor.Partition], redis.Z{Score: float64(next), Member: strconv.Itoa(floor.Shard)})
	}
	for partition, members := range perPartition {
		pipe.ZAddGT(ctx, s.floorsKey(partition), members...)
	}
}

// RaiseCommitted raises the committed watermarks (the outcomes of every
// record before these offsets are committed in Kafka) and, on Redis
// Cluster, the committed floors (the decided watermarks committed batches
// wrote per slot; nil on a single Redis). Workers usually pass them with the
// next LoadBatch instead (LoadRequest.Committed, LoadRequest.Floors).
func (s *Store) RaiseCommitted(ctx context.Context, committed map[int32]int64, floors map[ShardFloor]int64) error {
	if len(committed) == 0 && (!s.cluster || len(floors) == 0) {
		return nil
	}
	pipe := s.client.Pipeline()
	s.raiseCommitted(ctx, pipe, committed, floors)
	if _, err := pipe.Exec(ctx); err != nil {
		return errors.Wrapf(err, "raise the committed watermarks of %d partitions", len(committed))
	}
	return nil
}

// CommittedFloors returns, on Redis Cluster, the committed floors of the
// given commands partitions: per slot, the decided watermark a committed
// batch wrote there, which the slot must still hold. On a single Redis it
// returns nil: its one decided watermark is read with Watermarks.
func (s *Store) CommittedFloors(ctx context.Context, partitions []int32) (map[ShardFloor]int64, error) {
	if !s.cluster || len(partitions) == 0 {
		return nil, nil
	}
	pipe := s.client.Pipeline()
	cmds := make([]*redis.ZSliceCmd, len(partitions))
	for i, partition := range partitions {
		cmds[i] = pipe.ZRangeWithScores(ctx, s.floorsKey(partition), 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, errors.Wrapf(err, "read the committed floors of %d partitions", len(partitions))
	}
	floors := make(map[ShardFloor]int64)
	for i, partition := range partitions {
		for slot, next := range watermarkMap(cmds[i].Val()) {
			floors[ShardFloor{Shard: int(slot), Partition: partition}] = next
		}
	}
	return floors, nil
}

// Generation returns the value of the amnesia marker ("" without it). Init
// writes a new one each time, so a worker that stopped for a rebuild sees
// when it is done even though the marker never went away.
func (s *Store) Generation(ctx context.Context) (string, error) {
	value, err := s.client.Get(ctx, s.markerKeys()[0]).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", errors.Wrap(err, "read the initialization marker")
	}
	return value, nil
}

// Fence deletes the amnesia markers: every compare-and-set fails with
// ErrAmnesia until Init writes them again. Rebuilds fence the workers off
// with it.
func (s *Store) Fence(ctx context.Context) error {
	pipe := s.client.Pipeline()
	for _, key := range s.markerKeys() {
		pipe.Unlink(ctx, key)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return errors.Wrap(err, "delete the initialization marker")
	}
	return nil
}

// ErrWindowMismatch is returned by CheckWindows when the configured windows
// cannot keep their promise: OutcomeTTL longer than DedupeTTL (a decision
// would expire before its outcome records, and the command would be decided
// again), or a DedupeTTL other than the one Redis was initialised with
// (workers would look for decisions in other time buckets).
var ErrWindowMismatch = errors.New("the replay and duplicate windows do not fit")

// CheckWindows checks OutcomeTTL <= DedupeTTL, and that DedupeTTL is the
// bucket width Redis was initialised with (recording it when Redis has none
// yet).
func (s *Store) CheckWindows(ctx context.Context) error {
	if s.opts.OutcomeTTL > s.opts.DedupeTTL {
		return errors.Wrapf(ErrWindowMismatch, "the outcome TTL %s is longer than the dedupe TTL %s: a command's decision would expire before its outcome records and it would be decided twice; set --outcome-ttl at most --dedupe-ttl",
			s.opts.OutcomeTTL, s.opts.DedupeTTL)
	}
	width := strconv.FormatInt(max(s.opts.DedupeTTL.Milliseconds(), 1), 10)
	if err := s.client.HSetNX(ctx, s.settingsKey(), "dedupe_ttl_ms", width).Err(); err != nil {
		return errors.Wrap(err, "record the dedupe TTL in redis")
	}
	stored, err := s.client.HGet(ctx, s.settingsKey(), "dedupe_ttl_ms").Result()
	if err != nil {
		return errors.Wrap(err, "read the dedupe TTL redis was initialised with")
	}
	if stored != width {
		storedMillis, _ := strconv.ParseInt(stored, 10, 64)
		return errors.Wrapf(ErrWindowMismatch, "this worker's dedupe TTL is %s but redis holds decisions bucketed by %s: every worker of a deployment must use the same --dedupe-ttl",
			s.opts.DedupeTTL, time.Duration(storedMillis)*time.Millisecond)
	}
	return nil
}

// ForgetReport says what ForgetUnpublished removed.
type ForgetReport struct {
	// Decisions is the number of decisions dropped: their records were at
	// or after their partition's committed offset, so their outcomes were
	// never published and they will be decided again.
	Decisions int
	// Outcomes is the number of outcome records dropped.
	Outcomes int
}

// ForgetUnpublished makes the decisions agree with Kafka for a rebuild: it
// deletes every outcome record, deletes each decision whose command record
// is at or after its partition's committed offset (committed: the consumer
// group's next offsets; a partition missing from it has committed nothing),
// and resets the watermarks to the committed offsets. A replay then finds no
// decision for an unpublished outcome and decides the command again against
// the rebuilt version, instead of publishing a version Redis no longer
// holds. A nil committed means the offsets are unknown: every decision is
// kept (a replay of an unpublished one then stalls on its missing outcome
// records instead of deciding twice) and the watermarks are left alone (set
// them with ResetWatermarks). Run it with the workers fenced off.
func (s *Store) ForgetUnpublished(ctx context.Context, committed map[int32]int64) (ForgetReport, error) {
	var report ForgetReport
	var mu sync.Mutex
	prefix := s.opts.KeyPrefix + ":{"
	scan := func(ctx context.Context, client redis.UniversalClient) error {
		iter := client.Scan(ctx, 0, globEscape(prefix)+"*}:[cd]:*", 1000).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			// An escaped aggregate ID holds no '}': the first one ends it.
			end := strings.IndexByte(key[len(prefix):], '}')
			if end < 0 {
				continue
			}
			if strings.HasPrefix(key[len(prefix)+end:], "}:c:") {
				if err := client.Unlink(ctx, key).Err(); err != nil {
					return errors.Wrapf(err, "delete outcome record %s", key)
				}
				mu.Lock()
				report.Outcomes++
				mu.Unlock()
				continue
			}
			if committed == nil {
				continue
			}
			fields, err := client.HGetAll(ctx, key).Result()
			if err != nil {
				return errors.Wrapf(err, "read decisions %s", key)
			}
			var drop []string
			for commandID, value := range fields {
				decision, err := decodeDecision(commandID, []byte(value))
				if err != nil || decision.Offset >= committed[decision.Partition] {
					drop = append(drop, commandID)
				}
			}
			if len(drop) > 0 {
				if err := client.HDel(ctx, key, drop...).Err(); err != nil {
					return errors.Wrapf(err, "delete %d unpublished decisions of %s", len(drop), key)
				}
				mu.Lock()
				report.Decisions += len(drop)
				mu.Unlock()
			}
		}
		return errors.Wrap(iter.Err(), "scan decision and outcome keys")
	}
	var err error
	if cluster, ok := s.client.(*redis.ClusterClient); ok {
		err = cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return scan(ctx, node) })
	} else {
		err = scan(ctx, s.client)
	}
	if err != nil || committed == nil {
		return report, err
	}
	return report, s.ResetWatermarks(ctx, committed)
}

// ResetWatermarks sets every watermark (decided and committed, of every
// slot) to the given offsets per commands partition. For rebuilds.
func (s *Store) ResetWatermarks(ctx context.Context, committed map[int32]int64) error {
	if s.cluster {
		// The floors of every partition, also those missing from
		// committed: the decided watermarks they guard are deleted.
		err := s.client.(*redis.ClusterClient).ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			iter := node.Scan(ctx, 0, s.floorsPattern(), 1000).Iterator()
			for iter.Next(ctx) {
				if err := node.Unlink(ctx, iter.Val()).Err(); err != nil {
					return err
				}
			}
			return iter.Err()
		})
		if err != nil {
			return errors.Wrap(err, "delete the committed floors")
		}
	}
	pipe := s.client.Pipeline()
	pipe.Unlink(ctx, s.committedKey())
	if s.cluster {
		for slot := 0; slot < clusterSlots; slot++ {
			pipe.Unlink(ctx, strings.TrimSuffix(s.slotMarkerKey(slot), ":initialized")+":decided")
		}
	} else {
		pipe.Unlink(ctx, s.watermarkKey(""))
	}
	for partition, next := range committed {
		member := strconv.Itoa(int(partition))
		pipe.ZAdd(ctx, s.committedKey(), redis.Z{Score: float64(next), Member: member})
		if !s.cluster {
			pipe.ZAdd(ctx, s.watermarkKey(""), redis.Z{Score: float64(next), Member: member})
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return errors.Wrap(err, "reset the watermarks")
	}
	return nil
}
