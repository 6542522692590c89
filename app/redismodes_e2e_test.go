package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/redis/go-redis/v9"
)

// redisTopology is one Redis mode the CLI is tested on: the URL of the shared
// test topology and a client of it.
type redisTopology struct {
	mode   string
	url    func(t *testing.T) string
	client func(t *testing.T) redis.UniversalClient
}

var redisTopologies = []redisTopology{
	{
		mode: "cluster",
		url:  func(t *testing.T) string { testenv.RedisCluster(t); return os.Getenv(testenv.EnvRedisClusterURL) },
		client: func(t *testing.T) redis.UniversalClient {
			return testenv.RedisCluster(t)
		},
	},
	{
		mode: "sentinel",
		url:  func(t *testing.T) string { testenv.RedisSentinel(t); return os.Getenv(testenv.EnvRedisSentinelURL) },
		client: func(t *testing.T) redis.UniversalClient {
			return testenv.RedisSentinel(t)
		},
	},
}

// newTopologyE2E is newE2E on a Redis Cluster or a Sentinel master: its
// keys, under a prefix of its own, are deleted on every master when the
// test ends.
func newTopologyE2E(t *testing.T, topology redisTopology, partitions int32) *e2e {
	t.Helper()
	brokers := testenv.Brokers(t)
	redisURL := topology.url(t)
	client := topology.client(t)
	name := testenv.Name(t, "")
	e := &e2e{
		t:         t,
		brokers:   brokers,
		redisURL:  redisURL,
		redisMode: topology.mode,
		topics:    testkit.Topics{Commands: name + "-commands", Events: name + "-events", Conflicts: name + "-conflicts"},
		group:     name,
		keyPrefix: name,
		store:     versionstore.New(client, versionstore.Options{KeyPrefix: name}),
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := testenv.DeleteKeys(ctx, client, name+":"); err != nil {
			t.Errorf("delete the test's keys: %v", err)
		}
	})
	testenv.CreateTopics(t, brokers, partitions, e.topics.Commands, e.topics.Events, e.topics.Conflicts)
	e.out = testkit.Collect(t, brokers, e.topics)
	return e
}

// productCommand makes a command of the Product example.
func productCommand(t *testing.T, id, aggregateID, commandType string, expectedVersion int64, payload any) commands.Command {
	t.Helper()
	cmd, err := product.Command(id, aggregateID, commandType, expectedVersion, payload)
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

// TestRedisModes runs the worker, get, rebuild-versions and verify on a
// Redis Cluster (three masters with a replica each) and through Sentinels:
// products are created, then Alice and Bob both change the price of each
// having read version 1 (Alice's is applied, Bob's is a version conflict);
// get shows Redis's version and snapshot; then every key of the test is
// deleted on every master, the worker stops deciding, rebuild-versions
// restores the versions and snapshots from the events topic, and the
// worker goes on deciding against them.
func TestRedisModes(t *testing.T) {
	for _, topology := range redisTopologies {
		t.Run(topology.mode, func(t *testing.T) {
			e := newTopologyE2E(t, topology, 4)
			const products = 24
			aggregateID := func(i int) string { return fmt.Sprintf("%s-prod-%d", topology.mode, i) }
			var create, alice, bob, restock []commands.Command
			for i := range products {
				create = append(create, productCommand(t, fmt.Sprintf("create-%d", i), aggregateID(i), product.CreateProductType, 0,
					product.CreateProduct{Name: fmt.Sprintf("product %d", i), Price: 10, Stock: 1}))
				alice = append(alice, productCommand(t, fmt.Sprintf("alice-%d", i), aggregateID(i), product.ChangePriceType, 1,
					product.ChangePrice{NewPrice: float64(20 + i)}))
				bob = append(bob, productCommand(t, fmt.Sprintf("bob-%d", i), aggregateID(i), product.ChangePriceType, 1,
					product.ChangePrice{NewPrice: 5}))
				restock = append(restock, productCommand(t, fmt.Sprintf("restock-%d", i), aggregateID(i), product.IncreaseStockType, 2,
					product.IncreaseStock{NewStock: int64(100 + i)}))
			}

			worker := e.startWorker()
			e.send(create)
			e.out.WaitFor(90*time.Second, ids(create)...)
			e.send(append(append([]commands.Command{}, alice...), bob...))
			e.checkExactlyOnce(append(append(append([]commands.Command{}, create...), alice...), bob...), 90*time.Second)
			got := e.out.Snapshot()
			for i := range products {
				if o := got[alice[i].ID]; len(o.Events) != 1 || o.Events[0].Version != 2 {
					t.Errorf("Alice's %s, first to read version 1: want it applied at version 2, got %+v", alice[i].ID, o)
				}
				if o := got[bob[i].ID]; len(o.Conflicts) != 1 || o.Conflicts[0].Reason != events.ReasonVersionConflict {
					t.Errorf("Bob's %s, second to read version 1: want a version conflict, got %+v", bob[i].ID, o)
				}
			}
			e.checkGet(aggregateID(0), 2, product.State{Name: "product 0", Price: 20, Stock: 1})

			ctx := context.Background()
			if err := testenv.DeleteKeys(ctx, e.store.Client(), e.keyPrefix+":"); err != nil {
				t.Fatalf("delete the test's keys on every master: %v", err)
			}
			if aggregate, err := e.store.Get(ctx, aggregateID(0)); err != nil || aggregate.Version != 0 {
				t.Fatalf("after deleting the keys, %s is at version %d (%v), want 0", aggregateID(0), aggregate.Version, err)
			}
			e.send(restock)
			waitFor(t, worker, "run 'arbiter rebuild-versions'")
			rebuild := testkit.StartProcess(t, "rebuild-versions", arbiterBinary, nil, append([]string{"rebuild-versions",
				"--brokers", e.brokers[0], "--events-topic", e.topics.Events, "--commands-topic", e.topics.Commands,
				"--group", e.group, "--key-prefix", e.keyPrefix}, e.redisArgs()...)...)
			if code := rebuild.Wait(120 * time.Second); code != 0 {
				t.Fatalf("rebuild-versions exited with %d:\n%s", code, rebuild.Output())
			}
			waitFor(t, worker, "processing resumes")
			all := append(append(append(append([]commands.Command{}, create...), alice...), bob...), restock...)
			applied, conflicts := e.checkExactlyOnce(all, 120*time.Second)
			got = e.out.Snapshot()
			for i := range products {
				if o := got[restock[i].ID]; len(o.Events) != 1 || o.Events[0].Version != 3 {
					t.Errorf("%s expected version 2, which the rebuild restored: want it applied at version 3, got %+v", restock[i].ID, o)
				}
			}
			// The price comes from the rebuilt snapshot: IncreaseStock
			// does not carry it.
			e.checkGet(aggregateID(products-1), 3, product.State{Name: fmt.Sprintf("product %d", products-1), Price: float64(20 + products - 1), Stock: int64(100 + products - 1)})

			worker.Signal(syscall.SIGTERM)
			if code := worker.Wait(60 * time.Second); code != 0 {
				t.Fatalf("the worker exited with %d after SIGTERM, want 0", code)
			}
			verifyRun := testkit.StartProcess(t, "verify", arbiterBinary, nil, append([]string{"verify",
				"--brokers", e.brokers[0], "--key-prefix", e.keyPrefix, "--cross-check=false",
				"--commands-topic", e.topics.Commands, "--events-topic", e.topics.Events, "--conflicts-topic", e.topics.Conflicts}, e.redisArgs()...)...)
			if code := verifyRun.Wait(120 * time.Second); code != 0 {
				t.Fatalf("arbiter verify --redis-mode %s exited with %d:\n%s", topology.mode, code, verifyRun.Output())
			}
			t.Logf("%s: %d applied, %d conflicts; rebuild said: %s; verify said: %s", topology.mode, applied, conflicts,
				lastLine(rebuild.Output()), lastLine(verifyRun.Output()))
		})
	}
}

// checkGet runs 'arbiter get' and checks the version and state it prints.
func (e *e2e) checkGet(aggregateID string, wantVersion int64, wantState product.State) {
	e.t.Helper()
	get := testkit.StartProcess(e.t, "get", arbiterBinary, nil, append([]string{"get", aggregateID, "--key-prefix", e.keyPrefix}, e.redisArgs()...)...)
	if code := get.Wait(60 * time.Second); code != 0 {
		e.t.Fatalf("arbiter get %s exited with %d:\n%s", aggregateID, code, get.Output())
	}
	output := get.Output()
	start := strings.Index(output, "{")
	if start < 0 {
		e.t.Fatalf("arbiter get %s printed no JSON:\n%s", aggregateID, output)
	}
	var printed struct {
		Version int64         `json:"version"`
		Type    string        `json:"type"`
		State   product.State `json:"state"`
	}
	if err := json.Unmarshal([]byte(output[start:]), &printed); err != nil {
		e.t.Fatalf("arbiter get %s printed no JSON: %v\n%s", aggregateID, err, output)
	}
	if printed.Version != wantVersion || printed.State != wantState || printed.Type != product.Aggregate.Name {
		e.t.Errorf("arbiter get %s: version %d, type %q, state %+v; want %d, %q, %+v", aggregateID, printed.Version, printed.Type, printed.State, wantVersion, product.Aggregate.Name, wantState)
	}
}
