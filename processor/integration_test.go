package processor_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"
)

// stack is one test's slice of the real Kafka and Redis: its own topics,
// group and key prefix.
type stack struct {
	t       *testing.T
	brokers []string
	topics  testkit.Topics
	group   string
	store   *versionstore.Store
	out     *testkit.Collector
}

func newStack(t *testing.T, partitions int32) *stack {
	t.Helper()
	brokers := testenv.Brokers(t)
	redisClient := testenv.Redis(t)
	name := testenv.Name(t, "")
	s := &stack{
		t:       t,
		brokers: brokers,
		topics:  testkit.Topics{Commands: name + "-commands", Events: name + "-events", Conflicts: name + "-conflicts"},
		group:   name,
		store:   versionstore.New(redisClient, versionstore.Options{KeyPrefix: name}),
	}
	testenv.CreateTopics(t, brokers, partitions, s.topics.Commands, s.topics.Events, s.topics.Conflicts)
	s.out = testkit.Collect(t, brokers, s.topics)
	return s
}

// startWorker runs an in-process worker until the test ends.
func (s *stack) startWorker(mutate func(*processor.Config)) {
	s.t.Helper()
	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		s.t.Fatal(err)
	}
	cfg := processor.Config{
		Brokers:        s.brokers,
		Group:          s.group,
		CommandsTopic:  s.topics.Commands,
		EventsTopic:    s.topics.Events,
		ConflictsTopic: s.topics.Conflicts,
		Registry:       registry,
		Store:          s.store,
		Logger:         zaptest.NewLogger(s.t).Named("worker"),
		SessionTimeout: 6 * time.Second,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	worker, err := processor.New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx) }()
	s.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			s.t.Errorf("worker: %v", err)
		}
	})
}

func (s *stack) send(cmds ...commands.Command) {
	s.t.Helper()
	records := make([]*kgo.Record, len(cmds))
	for i, cmd := range cmds {
		records[i] = testkit.CommandRecord(s.t, s.topics.Commands, cmd)
	}
	testkit.Produce(s.t, s.brokers, records...)
}

func productCommand(t *testing.T, id, productID, commandType string, expectedVersion int64, payload any) commands.Command {
	t.Helper()
	cmd, err := product.Command(id, productID, commandType, expectedVersion, payload)
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

// productAtVersion5 brings a product to version 5: price 25, stock 100.
func (s *stack) productAtVersion5(productID string) {
	t := s.t
	t.Helper()
	s.send(
		productCommand(t, productID+"-v1", productID, product.CreateProductType, 0, product.CreateProduct{Name: "Chair", Price: 30, Stock: 10}),
		productCommand(t, productID+"-v2", productID, product.ChangePriceType, 1, product.ChangePrice{NewPrice: 28}),
		productCommand(t, productID+"-v3", productID, product.IncreaseStockType, 2, product.IncreaseStock{NewStock: 50}),
		productCommand(t, productID+"-v4", productID, product.ChangePriceType, 3, product.ChangePrice{NewPrice: 25}),
		productCommand(t, productID+"-v5", productID, product.IncreaseStockType, 4, product.IncreaseStock{NewStock: 100}),
	)
	got := s.out.WaitFor(90*time.Second, productID+"-v5")
	if o := got[productID+"-v5"]; len(o.Events) != 1 || o.Events[0].Version != 5 {
		t.Fatalf("setup: %s is not at version 5: %+v", productID, o)
	}
}

func TestAliceAndBob(t *testing.T) {
	s := newStack(t, 3)
	s.startWorker(nil)
	const productID = "prod-123"

	t.Run("Bob first", func(t *testing.T) {
		id := productID + "-bob-first"
		s.productAtVersion5(id)
		bob := productCommand(t, id+"-bob", id, product.IncreaseStockType, 5, product.IncreaseStock{NewStock: 120})
		alice := productCommand(t, id+"-alice", id, product.ChangePriceType, 5, product.ChangePrice{NewPrice: 22})
		s.send(bob, alice)
		got := s.out.WaitFor(60*time.Second, bob.ID, alice.ID)
		if o := got[bob.ID]; len(o.Conflicts) != 0 || len(o.Events) != 1 || o.Events[0].Version != 6 || o.Events[0].Type != product.StockIncreasedType {
			t.Fatalf("Bob's IncreaseStock must be applied at version 6, got %+v", o)
		}
		o := got[alice.ID]
		if len(o.Events) != 0 || len(o.Conflicts) != 1 {
			t.Fatalf("Alice's stale ChangePrice must be exactly one conflict, got %+v", o)
		}
		c := o.Conflicts[0]
		if c.Reason != events.ReasonVersionConflict || *c.ExpectedVersion != 5 || *c.ActualVersion != 6 || c.Message != "expected version 5, but found 6" {
			t.Fatalf("Alice's conflict: want version_conflict expected 5 actual 6, got %+v", c)
		}
		aggregate, err := s.store.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if aggregate.Version != 6 || !strings.Contains(string(aggregate.State), `"stock":120`) || !strings.Contains(string(aggregate.State), `"price":25`) {
			t.Fatalf("redis holds version %d state %s; want version 6 with stock 120 and the price unchanged", aggregate.Version, aggregate.State)
		}
	})

	t.Run("Alice first", func(t *testing.T) {
		id := productID + "-alice-first"
		s.productAtVersion5(id)
		alice := productCommand(t, id+"-alice", id, product.ChangePriceType, 5, product.ChangePrice{NewPrice: 22})
		bob := productCommand(t, id+"-bob", id, product.IncreaseStockType, 5, product.IncreaseStock{NewStock: 120})
		s.send(alice, bob)
		got := s.out.WaitFor(60*time.Second, bob.ID, alice.ID)
		if o := got[alice.ID]; len(o.Events) != 1 || o.Events[0].Version != 6 || o.Events[0].Type != product.PriceReducedType {
			t.Fatalf("Alice's ChangePrice must be applied at version 6 as PriceReduced, got %+v", o)
		}
		if o := got[bob.ID]; len(o.Events) != 0 || len(o.Conflicts) != 1 || o.Conflicts[0].Reason != events.ReasonVersionConflict ||
			*o.Conflicts[0].ActualVersion != 6 {
			t.Fatalf("Bob's stale IncreaseStock must be a version conflict at actual version 6, got %+v", o)
		}
	})
}

// TestEveryOutcomeKind drives one command of each kind through a real worker.
func TestEveryOutcomeKind(t *testing.T) {
	s := newStack(t, 3)
	s.startWorker(func(cfg *processor.Config) { cfg.MaxRecordBytes = 4096 })

	create := productCommand(t, "k-create", "p-1", product.CreateProductType, 0, product.CreateProduct{Name: "Lamp", Price: 10, Stock: 1})
	stale := productCommand(t, "k-stale", "p-1", product.ChangePriceType, 0, product.ChangePrice{NewPrice: 9})
	rejected := productCommand(t, "k-rejected", "p-1", product.IncreaseStockType, 1, product.IncreaseStock{NewStock: 0})
	unknown := productCommand(t, "k-unknown", "p-1", "Teleport", 1, nil)
	appendEvents := commands.Command{ID: "k-append", AggregateID: "stream-1", Type: processor.AppendEventsType, ExpectedVersion: commands.AnyVersion,
		Payload: []byte(`{"events":[{"type":"Opened","payload":{"n":1}},{"type":"Noted"},{"type":"Closed"}]}`)}
	appendStale := commands.Command{ID: "k-append-stale", AggregateID: "stream-1", Type: processor.AppendEventsType, ExpectedVersion: 1,
		Payload: []byte(`{"events":[{"type":"Late"}]}`)}
	relaxed := productCommand(t, "k-relaxed", "p-1", product.ChangePriceType, commands.AnyVersion, product.ChangePrice{NewPrice: 8})
	s.send(create, stale, rejected, unknown, appendEvents, appendStale, relaxed)
	// The same command produced twice: one outcome of events, one duplicate.
	s.send(create)
	testkit.Produce(t, s.brokers,
		&kgo.Record{Topic: s.topics.Commands, Key: []byte("p-1"), Value: []byte(`{"id":"k-missing-version","aggregateId":"p-1","type":"ChangePrice","payload":{"newPrice":5}}`)},
		&kgo.Record{Topic: s.topics.Commands, Key: []byte("p-2"), Value: []byte(`{"id":"k-wrong-key","aggregateId":"p-1","type":"ChangePrice","expectedVersion":1}`)},
		&kgo.Record{Topic: s.topics.Commands, Key: []byte("p-3"), Value: []byte("\xff\xfe not json")},
		&kgo.Record{Topic: s.topics.Commands, Key: []byte("p-1"), Value: []byte(`{"id":"k-big","aggregateId":"p-1","type":"ChangePrice","expectedVersion":1,"payload":{"pad":"` + strings.Repeat("x", 5000) + `"}}`)},
	)

	ids := []string{create.ID, stale.ID, rejected.ID, unknown.ID, appendEvents.ID, appendStale.ID, relaxed.ID, "k-missing-version", "k-wrong-key", "k-big"}
	var got map[string]testkit.Outcome
	s.out.Wait(90*time.Second, func(byID map[string]*testkit.Outcome, noID []events.Conflict) bool {
		for _, id := range ids {
			if o, ok := byID[id]; !ok || len(o.Events)+len(o.Conflicts) == 0 {
				return false
			}
		}
		return len(byID[create.ID].Conflicts) == 1 && len(noID) == 1
	})
	got = s.out.Snapshot()

	wantConflict := func(id string, reason events.Reason, contains string) events.Conflict {
		t.Helper()
		o := got[id]
		if len(o.Events) != 0 || len(o.Conflicts) != 1 {
			t.Fatalf("%s: want exactly one %s conflict, got %d events, %d conflicts", id, reason, len(o.Events), len(o.Conflicts))
		}
		c := o.Conflicts[0]
		if c.Reason != reason || !strings.Contains(c.Message, contains) {
			t.Fatalf("%s: want %s saying %q, got %s: %s", id, reason, contains, c.Reason, c.Message)
		}
		return c
	}
	if o := got[create.ID]; len(o.Events) != 1 || o.Events[0].Version != 1 {
		t.Fatalf("create: want one event at version 1, got %+v", o)
	}
	if o := got[create.ID]; len(o.Conflicts) != 1 || o.Conflicts[0].Reason != events.ReasonDuplicate {
		t.Fatalf("the second record of %s must be one duplicate conflict, got %+v", create.ID, o.Conflicts)
	}
	dup := got[create.ID].Conflicts[0]
	if dup.OriginalReason != events.OriginalApplied || *dup.OriginalVersion != 1 {
		t.Fatalf("duplicate must carry the original outcome (applied at version 1), got %+v", dup)
	}
	wantConflict(stale.ID, events.ReasonVersionConflict, "expected version 0, but found 1")
	wantConflict(rejected.ID, events.ReasonRejected, "must raise the stock")
	wantConflict(unknown.ID, events.ReasonUnknownType, "Teleport")
	wantConflict(appendStale.ID, events.ReasonVersionConflict, "expected version 1, but found 3")
	wantConflict(relaxed.ID, events.ReasonRejected, "does not allow expectedVersion -1")
	wantConflict("k-missing-version", events.ReasonInvalid, "expectedVersion is missing")
	wantConflict("k-wrong-key", events.ReasonInvalid, "does not equal aggregateId")
	wantConflict("k-big", events.ReasonInvalid, "over the 4096-byte limit")
	if o := got[appendEvents.ID]; len(o.Events) != 3 || o.Events[0].Version != 1 || o.Events[2].Version != 3 || o.Events[2].Type != "Closed" {
		t.Fatalf("AppendEvents with 3 events: want versions 1..3 in order, got %+v", o.Events)
	}
	noID := s.out.NoIDConflicts()
	if len(noID) != 1 || noID[0].Reason != events.ReasonInvalid || string(noID[0].RawValue) != "\xff\xfe not json" {
		t.Fatalf("the undecodable record must be one invalid conflict keeping its raw value, got %+v", noID)
	}
}

// TestManyCommandsOneWorker checks the batch path end to end: many
// aggregates, several commands each, some stale, all in a few batches.
func TestManyCommandsOneWorker(t *testing.T) {
	s := newStack(t, 6)
	s.startWorker(func(cfg *processor.Config) { cfg.MaxBatch = 500 })
	s.manyCommands()
}

// TestManyCommandsConcurrentSessions runs one worker with three sessions:
// each must join the group and take partitions, and together they must keep
// every guarantee one session keeps.
func TestManyCommandsConcurrentSessions(t *testing.T) {
	s := newStack(t, 6)
	s.startWorker(func(cfg *processor.Config) {
		cfg.MaxBatch = 200
		cfg.Concurrency = 3
		cfg.InstanceID = testenv.Name(t, "")
	})
	s.manyCommands()
	client, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	described, err := kadm.NewClient(client).DescribeGroups(ctx, s.group)
	if err != nil {
		t.Fatal(err)
	}
	group := described[s.group]
	if len(group.Members) != 3 {
		t.Fatalf("group %s has %d members, want one per session (3)", s.group, len(group.Members))
	}
	for _, m := range group.Members {
		if assigned, ok := m.Assigned.AsConsumer(); !ok || len(assigned.Topics) == 0 {
			t.Errorf("session %s holds no partitions", m.MemberID)
		}
	}
}

// manyCommands sends 200 aggregates five commands each, a third of them
// with a stale twin, and checks every command's single outcome.
func (s *stack) manyCommands() {
	t := s.t
	t.Helper()
	const aggregates, perAggregate = 200, 5
	var cmds []commands.Command
	var ids []string
	for round := 0; round < perAggregate; round++ {
		for a := 0; a < aggregates; a++ {
			aggregateID := fmt.Sprintf("agg-%d", a)
			id := fmt.Sprintf("m-%d-%d", a, round)
			cmds = append(cmds, commands.Command{ID: id, AggregateID: aggregateID, Type: processor.AppendEventsType,
				ExpectedVersion: int64(round), Payload: []byte(`{"events":[{"type":"Tick"}]}`)})
			ids = append(ids, id)
			if round > 0 && a%3 == 0 {
				// A sender that read the previous version: stale.
				stale := id + "-stale"
				cmds = append(cmds, commands.Command{ID: stale, AggregateID: aggregateID, Type: processor.AppendEventsType,
					ExpectedVersion: int64(round - 1), Payload: []byte(`{"events":[{"type":"Tick"}]}`)})
				ids = append(ids, stale)
			}
		}
	}
	s.send(cmds...)
	got := s.out.WaitFor(120*time.Second, ids...)
	for _, cmd := range cmds {
		o := got[cmd.ID]
		if len(o.Events)+len(o.Conflicts) != 1 {
			t.Fatalf("command %s has %d events and %d conflicts; want exactly one outcome", cmd.ID, len(o.Events), len(o.Conflicts))
		}
		if len(o.Events) == 1 && o.Events[0].Version != cmd.ExpectedVersion+1 {
			t.Fatalf("lost update: command %s expected %d but its event has version %d", cmd.ID, cmd.ExpectedVersion, o.Events[0].Version)
		}
		if stale := strings.HasSuffix(cmd.ID, "-stale"); stale != (len(o.Conflicts) == 1) {
			t.Fatalf("command %s: stale=%v but got %d conflicts", cmd.ID, stale, len(o.Conflicts))
		}
	}
	for a := 0; a < aggregates; a++ {
		aggregate, err := s.store.Get(context.Background(), fmt.Sprintf("agg-%d", a))
		if err != nil {
			t.Fatal(err)
		}
		if aggregate.Version != perAggregate {
			t.Fatalf("agg-%d: redis version %d, want %d", a, aggregate.Version, perAggregate)
		}
	}
}
