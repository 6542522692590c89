package processor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/redis/go-redis/v9"
)

// newClusterStack is newStack with its store on the test Redis Cluster; the
// test's keys are deleted on every master when it ends.
func newClusterStack(t *testing.T, partitions int32) (*stack, *redis.ClusterClient) {
	t.Helper()
	cluster := testenv.RedisCluster(t)
	s := newStack(t, partitions)
	s.store = versionstore.New(cluster, versionstore.Options{KeyPrefix: s.group})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := testenv.DeleteKeys(ctx, cluster, s.group+":"); err != nil {
			t.Errorf("delete the test's keys: %v", err)
		}
	})
	return s, cluster
}

// masterSnapshot is what one master held of a key prefix: each key's DUMP
// and time to live.
type masterSnapshot struct {
	node *redis.Client
	keys map[string]dumpedKey
}

type dumpedKey struct {
	value string
	ttl   time.Duration
}

func snapshotMaster(t *testing.T, node *redis.Client, prefix string) masterSnapshot {
	t.Helper()
	ctx := context.Background()
	snapshot := masterSnapshot{node: node, keys: map[string]dumpedKey{}}
	iter := node.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		value, err := node.Dump(ctx, iter.Val()).Result()
		if err != nil {
			t.Fatalf("DUMP %s: %v", iter.Val(), err)
		}
		ttl, err := node.PTTL(ctx, iter.Val()).Result()
		if err != nil {
			t.Fatalf("PTTL %s: %v", iter.Val(), err)
		}
		snapshot.keys[iter.Val()] = dumpedKey{value: value, ttl: max(ttl, 0)}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return snapshot
}

// restore puts the master's keys under prefix back as the snapshot held
// them, as a restore from an older backup of that master alone would.
func (m masterSnapshot) restore(t *testing.T, prefix string) {
	t.Helper()
	ctx := context.Background()
	iter := m.node.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		if _, kept := m.keys[iter.Val()]; !kept {
			if err := m.node.Unlink(ctx, iter.Val()).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	for key, dumped := range m.keys {
		if err := m.node.RestoreReplace(ctx, key, dumped.ttl, dumped.value).Err(); err != nil {
			t.Fatalf("RESTORE %s: %v", key, err)
		}
	}
}

// TestClusterMasterRollbackFoundAtTakeover: one master of a Redis Cluster —
// not the one holding the committed watermarks — goes back in time (its
// keys restored from an older backup) while no worker runs. A worker that
// then takes the partitions must not decide against that master's old
// versions: the decided watermarks of its slots are below what committed
// batches wrote, so the worker stops and fences the others; after
// rebuild-versions every command is decided against the true versions.
func TestClusterMasterRollbackFoundAtTakeover(t *testing.T) {
	s, cluster := newClusterStack(t, 3)
	ctx := context.Background()
	const products = 30
	productID := func(i int) string { return fmt.Sprintf("cr-%d", i) }

	_, stopFirst := s.runWorker(s.group, nil)
	var created []string
	for i := range products {
		cmd := productCommand(t, fmt.Sprintf("cr-create-%d", i), productID(i), product.CreateProductType, 0, product.CreateProduct{Name: "Lamp", Price: 10, Stock: 1})
		s.send(cmd)
		created = append(created, cmd.ID)
	}
	s.out.WaitFor(90*time.Second, created...)

	committedMaster, err := cluster.MasterForKey(ctx, s.group+":committed")
	if err != nil {
		t.Fatal(err)
	}
	var rolledBack *redis.Client
	onRolledBack := map[string]bool{}
	for i := range products {
		master, err := cluster.MasterForKey(ctx, s.group+":{"+productID(i)+"}")
		if err != nil {
			t.Fatal(err)
		}
		if master.Options().Addr == committedMaster.Options().Addr {
			continue
		}
		if rolledBack == nil {
			rolledBack = master
		}
		if master.Options().Addr == rolledBack.Options().Addr {
			onRolledBack[productID(i)] = true
		}
	}
	if rolledBack == nil {
		t.Fatalf("every product is on the master of the committed watermarks (%s); the test needs others", committedMaster.Options().Addr)
	}
	backup := snapshotMaster(t, rolledBack, s.group+":")

	var repriced []string
	for i := range products {
		cmd := productCommand(t, fmt.Sprintf("cr-price-%d", i), productID(i), product.ChangePriceType, 1, product.ChangePrice{NewPrice: 20})
		s.send(cmd)
		repriced = append(repriced, cmd.ID)
	}
	s.out.WaitFor(90*time.Second, repriced...)
	stopFirst()

	backup.restore(t, s.group+":")
	for id := range onRolledBack {
		if got, err := s.store.Get(ctx, id); err != nil || got.Version != 1 {
			t.Fatalf("after the restore %s is at version %d (%v), want 1: the test did not roll the master back", id, got.Version, err)
		}
		break
	}

	_, _ = s.runWorker(s.group, nil)
	var restocked []string
	var onRolledBackIDs []string
	for i := range products {
		cmd := productCommand(t, fmt.Sprintf("cr-stock-%d", i), productID(i), product.IncreaseStockType, 2, product.IncreaseStock{NewStock: 50})
		s.send(cmd)
		restocked = append(restocked, cmd.ID)
		if onRolledBack[productID(i)] {
			onRolledBackIDs = append(onRolledBackIDs, cmd.ID)
		}
	}
	// The worker must fence (delete the markers) before deciding any
	// command of the rolled-back master.
	deadline := time.Now().Add(60 * time.Second)
	for {
		generation, err := s.store.Generation(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := s.out.Snapshot()
		for _, id := range onRolledBackIDs {
			if o, ok := got[id]; ok {
				t.Fatalf("command %s was decided against the rolled-back master %s: %+v", id, rolledBack.Options().Addr, o)
			}
		}
		if generation == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker taking the partitions never found that master %s went back in time", rolledBack.Options().Addr)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if _, err := s.rebuild(nil); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	got := s.out.WaitFor(120*time.Second, restocked...)
	exactlyOne(t, got, append(append(created, repriced...), restocked...)...)
	for _, id := range restocked {
		if o := got[id]; len(o.Events) != 1 || o.Events[0].Version != 3 {
			var reason events.Reason
			if len(o.Conflicts) > 0 {
				reason = o.Conflicts[0].Reason
			}
			t.Errorf("command %s expected the true version 2: want it applied at 3, got %d events (%+v), conflict %q", id, len(o.Events), o.Events, reason)
		}
	}
}
