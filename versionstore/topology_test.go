package versionstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"

	"github.com/arbiter-cqrs/arbiter/internal/testenv"
)

// The tests in this file run the store on the Redis topologies beyond one
// server: a real Redis Cluster of three masters with a replica each, and a
// Sentinel set-up, both started by scripts/redis-topology.sh (make test
// starts them). Each test keeps its keys under a prefix of its own.

// clusterStore returns an initialised store over the test Redis Cluster with
// a key prefix unique to this call; its keys are deleted when the test ends.
func clusterStore(t *testing.T) *Store {
	t.Helper()
	client := testenv.RedisCluster(t)
	prefix := testenv.Name(t, "vs-cluster")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := testenv.DeleteKeys(ctx, client, prefix+":"); err != nil {
			t.Errorf("delete test keys under %s on the cluster: %v", prefix, err)
		}
	})
	store := New(client, Options{KeyPrefix: prefix})
	if !store.cluster {
		t.Fatal("New took a *redis.ClusterClient for a single server: the per-slot markers would be missing")
	}
	return initialized(t, store)
}

func TestRedisClusterCommitThenLoad(t *testing.T) { runCommitThenLoad(t, clusterStore(t)) }

func TestRedisClusterCommitFencing(t *testing.T) {
	runCommitFencing(t, func(t *testing.T) *Store { return clusterStore(t) })
}

func TestRedisClusterConcurrentAdvance(t *testing.T) { runConcurrentAdvance(t, clusterStore(t), 10) }

func TestRedisClusterKeysOfDifferentAggregatesDoNotCollide(t *testing.T) {
	runKeysOfDifferentAggregatesDoNotCollide(t, func(t *testing.T) *Store { return clusterStore(t) })
}

// TestRedisClusterSpreadsAggregates commits aggregates in one pipelined
// Commit, which go-redis splits per node, and checks that every master got
// some (the hash tags spread them) and that Versions finds them all.
func TestRedisClusterSpreadsAggregates(t *testing.T) {
	store := clusterStore(t)
	ctx := context.Background()
	const aggregates = 60
	changes := make([]Change, aggregates)
	for i := range changes {
		changes[i] = testChange(fmt.Sprintf("acct-%d", i), 0, int64(1+i%3), fmt.Sprintf("c-%d", i))
	}
	mustCommit(t, store, changes...)

	cluster := store.Client().(*redis.ClusterClient)
	var mu sync.Mutex
	perMaster := map[string]int{}
	err := cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		n := 0
		iter := node.Scan(ctx, 0, store.opts.KeyPrefix+":{acct-*}", 1000).Iterator()
		for iter.Next(ctx) {
			n++
		}
		mu.Lock()
		perMaster[node.Options().Addr] = n
		mu.Unlock()
		return iter.Err()
	})
	if err != nil {
		t.Fatalf("count the aggregate keys per master: %v", err)
	}
	if len(perMaster) != 3 {
		t.Fatalf("the cluster has %d masters (%v), want 3", len(perMaster), perMaster)
	}
	total := 0
	for addr, n := range perMaster {
		if n == 0 {
			t.Errorf("master %s holds no aggregate of %d: the keys are not spread over the slots (%v)", addr, aggregates, perMaster)
		}
		total += n
	}
	if total != aggregates {
		t.Errorf("the masters hold %d aggregate hashes, want %d (%v)", total, aggregates, perMaster)
	}
	versions, err := store.Versions(ctx)
	if err != nil {
		t.Fatalf("Versions: %v", err)
	}
	if len(versions) != aggregates {
		t.Errorf("Versions found %d aggregates, want %d", len(versions), aggregates)
	}
	for i, change := range changes {
		if got := versions[change.AggregateID]; got != change.ToVersion {
			t.Errorf("Versions[%s] = %d, want %d (change %d)", change.AggregateID, got, change.ToVersion, i)
		}
	}
}

// TestRedisClusterAmnesiaOfOneSlot: a master that lost its data loses the
// markers of its slots only; commits to aggregates of those slots must be
// refused while the others go on.
func TestRedisClusterAmnesiaOfOneSlot(t *testing.T) {
	store := clusterStore(t)
	ctx := context.Background()
	lost, kept := "acct-lost", "acct-kept"
	if clusterSlot(lost) == clusterSlot(kept) {
		t.Fatalf("test aggregates %s and %s share slot %d; pick others", lost, kept, clusterSlot(lost))
	}
	if err := store.Client().Del(ctx, store.markerKey(lost)).Err(); err != nil {
		t.Fatalf("delete the marker of slot %d: %v", clusterSlot(lost), err)
	}
	if ok, err := store.Initialized(ctx); err != nil || ok {
		t.Errorf("Initialized = %v, %v with one slot's marker gone, want false, nil", ok, err)
	}
	err := store.Commit(ctx, []Change{testChange(lost, 0, 1, "c-1"), testChange(kept, 0, 1, "c-2")})
	if !errors.Is(err, ErrAmnesia) {
		t.Fatalf("Commit with the marker of %s's slot gone = %v, want ErrAmnesia", lost, err)
	}
	if got := mustGet(t, store, lost); got.Version != 0 {
		t.Errorf("%s at version %d after a refused commit, want 0: nothing may be decided against a slot that lost its data", lost, got.Version)
	}
	if got := mustGet(t, store, kept); got.Version != 1 {
		t.Errorf("%s at version %d, want 1: a slot that kept its marker goes on", kept, got.Version)
	}
}

// sentinelStore returns an initialised store through the sentinels' master,
// with a key prefix unique to this call.
func sentinelStore(t *testing.T) *Store {
	t.Helper()
	client := testenv.RedisSentinel(t)
	prefix := testenv.Name(t, "vs-sentinel")
	t.Cleanup(func() { deleteKeys(t, client, prefix+":") })
	return initialized(t, New(client, Options{KeyPrefix: prefix}))
}

func TestRedisSentinelCommitThenLoad(t *testing.T) { runCommitThenLoad(t, sentinelStore(t)) }

func TestRedisSentinelConcurrentAdvance(t *testing.T) { runConcurrentAdvance(t, sentinelStore(t), 10) }

// TestRedisClusterCommittedFloors: the committed floors are only raised,
// live in the slot of the committed watermarks (so that the two go back in
// time together or not at all), are read per partition, and a rebuild's
// ResetWatermarks deletes them with the decided watermarks they guard.
func TestRedisClusterCommittedFloors(t *testing.T) {
	store := clusterStore(t)
	ctx := context.Background()
	for _, partition := range []int32{0, 1, 11} {
		if got, want := slotOfKey(store.floorsKey(partition)), slotOfKey(store.committedKey()); got != want {
			t.Errorf("the floors of partition %d are in slot %d, the committed watermarks in %d: a rollback of one shard could lose the floors and the decisions they guard together", partition, got, want)
		}
	}
	raise := func(floors map[ShardFloor]int64) {
		t.Helper()
		if err := store.RaiseCommitted(ctx, map[int32]int64{0: 10}, floors); err != nil {
			t.Fatalf("RaiseCommitted: %v", err)
		}
	}
	raise(map[ShardFloor]int64{{Shard: 5, Partition: 0}: 7, {Shard: 9, Partition: 1}: 3, {Shard: 16383, Partition: 0}: 2})
	raise(map[ShardFloor]int64{{Shard: 5, Partition: 0}: 4})
	got, err := store.CommittedFloors(ctx, []int32{0, 1, 2})
	if err != nil {
		t.Fatalf("CommittedFloors: %v", err)
	}
	want := map[ShardFloor]int64{{Shard: 5, Partition: 0}: 7, {Shard: 9, Partition: 1}: 3, {Shard: 16383, Partition: 0}: 2}
	if len(got) != len(want) {
		t.Fatalf("CommittedFloors = %v, want %v", got, want)
	}
	for key, floor := range want {
		if got[key] != floor {
			t.Errorf("CommittedFloors[%+v] = %d, want %d (floors are only raised)", key, got[key], floor)
		}
	}
	if err := store.ResetWatermarks(ctx, map[int32]int64{0: 10}); err != nil {
		t.Fatalf("ResetWatermarks: %v", err)
	}
	if got, err := store.CommittedFloors(ctx, []int32{0, 1}); err != nil || len(got) != 0 {
		t.Errorf("after ResetWatermarks, CommittedFloors = %v, %v; want none: they would outbid the reset decided watermarks", got, err)
	}
}
