package processor_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"
)

// runWorker runs an in-process worker of the stack in group until the
// returned stop is called (or the test ends).
func (s *stack) runWorker(group string, mutate func(*processor.Config)) (*processor.Worker, func()) {
	s.t.Helper()
	worker := s.newWorker(group, mutate)
	return worker, s.run(worker)
}

// newWorker returns an in-process worker of the stack in group, not yet
// running.
func (s *stack) newWorker(group string, mutate func(*processor.Config)) *processor.Worker {
	s.t.Helper()
	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		s.t.Fatal(err)
	}
	cfg := processor.Config{
		Brokers: s.brokers, Group: group,
		CommandsTopic: s.topics.Commands, EventsTopic: s.topics.Events, ConflictsTopic: s.topics.Conflicts,
		Registry: registry, Store: s.store, Logger: zaptest.NewLogger(s.t).Named(group),
		SessionTimeout: 6 * time.Second,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	worker, err := processor.New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	return worker
}

// run runs worker until the returned stop is called (or the test ends).
func (s *stack) run(worker *processor.Worker) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			s.t.Errorf("worker: %v", err)
		}
	}
	s.t.Cleanup(stop)
	return stop
}

func (s *stack) rebuild(mutate func(*processor.RebuildConfig)) (processor.RebuildReport, error) {
	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		s.t.Fatal(err)
	}
	cfg := processor.RebuildConfig{
		Brokers: s.brokers, EventsTopic: s.topics.Events, CommandsTopic: s.topics.Commands, Group: s.group,
		Registry: registry, Store: s.store, Logger: zaptest.NewLogger(s.t).Named("rebuild"),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return processor.Rebuild(ctx, cfg)
}

// exactlyOne checks each command has exactly one outcome.
func exactlyOne(t *testing.T, got map[string]testkit.Outcome, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if o := got[id]; len(o.Events)+len(o.Conflicts) != 1 {
			t.Errorf("command %s has %d events and %d conflicts; want exactly one outcome", id, len(o.Events), len(o.Conflicts))
		}
	}
}

// TestWrongPartitionIsInvalid: a command record on another partition than
// its key's murmur2 partition is refused as invalid, naming both.
func TestWrongPartitionIsInvalid(t *testing.T) {
	s := newStack(t, 3)
	s.startWorker(nil)
	create := productCommand(t, "wp-create", "wp-1", product.CreateProductType, 0, product.CreateProduct{Name: "Lamp", Price: 10, Stock: 1})
	s.send(create)
	s.out.WaitFor(60*time.Second, create.ID)

	client, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	misplaced := testkit.CommandRecord(t, s.topics.Commands, productCommand(t, "wp-misplaced", "wp-1", product.ChangePriceType, 1, product.ChangePrice{NewPrice: 9}))
	want := kgo.StickyKeyPartitioner(nil).ForTopic(s.topics.Commands).Partition(misplaced, 3)
	misplaced.Partition = int32((want + 1) % 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.ProduceSync(ctx, misplaced).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := s.out.WaitFor(60*time.Second, "wp-misplaced")["wp-misplaced"]
	if len(got.Events) != 0 || len(got.Conflicts) != 1 || got.Conflicts[0].Reason != events.ReasonInvalid ||
		!strings.Contains(got.Conflicts[0].Message, fmt.Sprintf("on partition %d", misplaced.Partition)) ||
		!strings.Contains(got.Conflicts[0].Message, fmt.Sprintf("belongs on partition %d", want)) {
		t.Fatalf("a record on the wrong partition must be one invalid conflict naming both partitions, got %+v", got)
	}
}

// TestNewGroupContinuesWhereRedisDecisionsEnd: a worker of a new consumer
// group on topics another group already processed (a blue/green deploy, or
// offsets the broker expired) neither decides the old commands again nor
// stalls on them: every command keeps exactly one outcome.
func TestNewGroupContinuesWhereRedisDecisionsEnd(t *testing.T) {
	s := newStack(t, 3)
	_, stopBlue := s.runWorker(s.group+"-blue", nil)
	var old []string
	for i := 0; i < 30; i++ {
		cmd := productCommand(t, fmt.Sprintf("ng-old-%d", i), fmt.Sprintf("ng-%d", i), product.CreateProductType, 0, product.CreateProduct{Name: "Lamp", Price: 10, Stock: 1})
		s.send(cmd)
		old = append(old, cmd.ID)
	}
	// A trailing invalid record: it touches no decision in Redis.
	testkit.Produce(t, s.brokers, &kgo.Record{Topic: s.topics.Commands, Key: []byte("ng-0"), Value: []byte(`{"id":"ng-invalid","aggregateId":"ng-0","type":"ChangePrice"}`)})
	old = append(old, "ng-invalid")
	s.out.WaitFor(90*time.Second, old...)
	stopBlue()

	_, _ = s.runWorker(s.group+"-green", nil)
	var fresh []string
	for i := 0; i < 30; i++ {
		cmd := productCommand(t, fmt.Sprintf("ng-new-%d", i), fmt.Sprintf("ng-%d", i), product.ChangePriceType, 1, product.ChangePrice{NewPrice: 9})
		s.send(cmd)
		fresh = append(fresh, cmd.ID)
	}
	s.out.WaitFor(90*time.Second, fresh...)
	time.Sleep(2 * time.Second) // a second outcome of an old command would be read by now
	got := s.out.Snapshot()
	exactlyOne(t, got, append(old, fresh...)...)
	for _, id := range fresh {
		if o := got[id]; len(o.Events) != 1 || o.Events[0].Version != 2 {
			t.Errorf("command %s: want applied at version 2, got %+v", id, o)
		}
	}
}

// TestRebuildDropsUnpublishedDecisions: a worker died between the
// compare-and-set (Redis at version 6 with the decision and outcome of the
// command) and the commit (the events topic ends at version 5). After the
// rebuild, Redis must hold neither the version nor the decision: the
// restarted worker decides the command again at version 6, and a stale
// command expecting 5 is a conflict, not a second version 6.
func TestRebuildDropsUnpublishedDecisions(t *testing.T) {
	s := newStack(t, 3)
	_, stop := s.runWorker(s.group, nil)
	const productID = "rd-1"
	s.productAtVersion5(productID)
	stop()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sixth := productCommand(t, "rd-v6", productID, product.ChangePriceType, 5, product.ChangePrice{NewPrice: 20})
	client, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	produced, err := client.ProduceSync(ctx, testkit.CommandRecord(t, s.topics.Commands, sixth)).First()
	if err != nil {
		t.Fatal(err)
	}
	// What the dead worker's compare-and-set left behind.
	current, err := s.store.Get(ctx, productID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.store.Commit(ctx, []versionstore.Change{{
		AggregateID: productID, FromVersion: 5, ToVersion: 6, Type: current.Type, State: current.State,
		Partition: produced.Partition, NextOffset: produced.Offset + 1,
		Outcomes: []versionstore.Outcome{{CommandID: sixth.ID, Partition: produced.Partition, Offset: produced.Offset, Applied: true, Version: 6,
			Records: []versionstore.OutcomeRecord{{Kind: versionstore.KindEvent, Value: []byte(`{"id":"rd-1@6","aggregateId":"rd-1","aggregateType":"Product","type":"PriceReduced","version":6,"commandId":"rd-v6","payload":{"oldPrice":25,"newPrice":20},"timestamp":"2026-01-01T00:00:00Z"}`)}}}},
	}}); err != nil {
		t.Fatal(err)
	}

	report, err := s.rebuild(nil)
	if err != nil {
		t.Fatal(err)
	}
	if report.Forgotten.Decisions != 1 {
		t.Fatalf("the rebuild dropped %d decisions, want the unpublished one", report.Forgotten.Decisions)
	}
	if got, _ := s.store.Get(ctx, productID); got.Version != 5 {
		t.Fatalf("rebuilt version %d, want 5", got.Version)
	}
	s.startWorker(nil)
	stale := productCommand(t, "rd-stale", productID, product.IncreaseStockType, 5, product.IncreaseStock{NewStock: 200})
	s.send(stale)
	got := s.out.WaitFor(90*time.Second, sixth.ID, stale.ID)
	if o := got[sixth.ID]; len(o.Events) != 1 || o.Events[0].Version != 6 {
		t.Fatalf("the unpublished command must be decided again at version 6, got %+v", o)
	}
	if o := got[stale.ID]; len(o.Conflicts) != 1 || o.Conflicts[0].Reason != events.ReasonVersionConflict || *o.Conflicts[0].ActualVersion != 6 {
		t.Fatalf("a command expecting 5 after version 6 must be a version conflict, got %+v", o)
	}
}

// TestRebuildRefusesWhileWorkersRun: the group has a member: the rebuild
// refuses unless forced, and a forced one fences the workers off until it
// is done.
func TestRebuildRefusesWhileWorkersRun(t *testing.T) {
	s := newStack(t, 3)
	s.runWorker(s.group, nil)
	s.productAtVersion5("rr-1")
	_, err := s.rebuild(nil)
	if !errors.Is(err, processor.ErrGroupActive) {
		t.Fatalf("a rebuild under a running worker: want ErrGroupActive, got %v", err)
	}
	if _, err := s.rebuild(func(cfg *processor.RebuildConfig) { cfg.Force = true }); err != nil {
		t.Fatalf("a forced rebuild: %v", err)
	}
	next := productCommand(t, "rr-v6", "rr-1", product.ChangePriceType, 5, product.ChangePrice{NewPrice: 20})
	s.send(next)
	if o := s.out.WaitFor(90*time.Second, next.ID)[next.ID]; len(o.Events) != 1 || o.Events[0].Version != 6 {
		t.Fatalf("after a forced rebuild the worker must go on: got %+v", o)
	}
}

// TestRetention: an events topic whose records retention deleted is not a
// fresh deployment (a worker with an empty Redis waits for a rebuild), and
// the rebuild refuses it unless the loss is accepted.
func TestRetention(t *testing.T) {
	s := newStack(t, 1)
	testkit.Produce(t, s.brokers, &kgo.Record{Topic: s.topics.Events, Key: []byte("rt-1"),
		Value: []byte(`{"id":"rt-1@1","aggregateId":"rt-1","type":"Opened","version":1,"commandId":"c","timestamp":"2026-01-01T00:00:00Z"}`)})
	client, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ends, err := admin.ListEndOffsets(ctx, s.topics.Events)
	if err != nil {
		t.Fatal(err)
	}
	deleted, err := admin.DeleteRecords(ctx, ends.Offsets())
	if err != nil || deleted.Error() != nil {
		t.Fatalf("delete the events: %v %v", err, deleted.Error())
	}

	worker, _ := s.runWorker(s.group, nil)
	deadline := time.Now().Add(60 * time.Second)
	for worker.Stats().AmnesiaWaits.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a worker with an empty redis and an events topic whose events were deleted did not wait for a rebuild")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ok, err := s.store.Initialized(ctx); err != nil || ok {
		t.Fatalf("redis was initialised as a fresh deployment (%v, %v)", ok, err)
	}

	_, err = s.rebuild(func(cfg *processor.RebuildConfig) { cfg.Force = true })
	if !errors.Is(err, processor.ErrPartialHistory) {
		t.Fatalf("a rebuild from a topic not starting at 0: want ErrPartialHistory, got %v", err)
	}
	report, err := s.rebuild(func(cfg *processor.RebuildConfig) { cfg.Force, cfg.AllowPartial = true, true })
	if err != nil {
		t.Fatal(err)
	}
	if report.DeletedOffsets[0] != 1 {
		t.Fatalf("the partial rebuild must report the deleted records, got %v", report.DeletedOffsets)
	}
}

// TestWindowExceededStalls: a command record older than the dedupe window,
// below the decided watermark and without a decision, may have been decided
// before its decision expired: the partition stalls on it instead of
// deciding it a second time.
func TestWindowExceededStalls(t *testing.T) {
	s := newStack(t, 1)
	ctx := context.Background()
	if err := s.store.Init(ctx); err != nil {
		t.Fatal(err)
	}
	// Redis holds decisions of partition 0 up to offset 100.
	if err := s.store.Commit(ctx, []versionstore.Change{{AggregateID: "we-other", FromVersion: 0, ToVersion: 0, Partition: 0, NextOffset: 100,
		Outcomes: []versionstore.Outcome{{CommandID: "we-other-1", Partition: 0, Offset: 99, Reason: "rejected"}}}}); err != nil {
		t.Fatal(err)
	}
	worker, _ := s.runWorker(s.group, nil)
	old := testkit.CommandRecord(t, s.topics.Commands, productCommand(t, "we-old", "we-1", product.CreateProductType, 0, product.CreateProduct{Name: "Lamp", Price: 10, Stock: 1}))
	old.Timestamp = time.Now().Add(-72 * time.Hour)
	testkit.Produce(t, s.brokers, old)
	time.Sleep(8 * time.Second) // a wrong decision would be published by now
	if o, ok := s.out.Snapshot()["we-old"]; ok {
		t.Fatalf("a command older than the dedupe window below the decided watermark was decided: %+v", o)
	}
	if worker.Stats().Aborted.Load() == 0 {
		t.Fatal("the worker aborted no batch: it did not refuse the command")
	}
}

// TestWarnsOfFiniteEventsRetention: a worker says at start when the events
// topic deletes events (rebuild-versions needs every one since the first),
// and keeps quiet when it keeps them all.
func TestWarnsOfFiniteEventsRetention(t *testing.T) {
	const warning = "the events topic deletes events after retention.ms"
	for _, tt := range []struct {
		name      string
		retention string // "" leaves the broker default (7 days)
		wantWarn  bool
	}{
		{name: "broker default", wantWarn: true},
		{name: "kept forever", retention: "-1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, 1)
			if tt.retention != "" {
				client, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
				if err != nil {
					t.Fatal(err)
				}
				defer client.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				responses, err := kadm.NewClient(client).AlterTopicConfigs(ctx,
					[]kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &tt.retention}}, s.topics.Events)
				if err == nil {
					_, err = responses.On(s.topics.Events, nil)
				}
				if err != nil {
					t.Fatalf("set retention.ms=%s on the events topic: %v", tt.retention, err)
				}
			}
			log, logs := bufferLogger()
			s.startWorker(func(cfg *processor.Config) { cfg.Logger = log })
			started := func() bool {
				for _, line := range logs.lines() {
					if strings.Contains(line, "worker starting") {
						return true
					}
				}
				return false
			}
			deadline := time.Now().Add(30 * time.Second)
			for !started() && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			// The topics are inspected right after "worker starting", before
			// the first poll: a created aggregate's outcome means it is done.
			s.send(productCommand(t, "rt-c1", "rt-agg", product.CreateProductType, 0, product.CreateProduct{Name: "Lamp", Price: 10, Stock: 1}))
			s.out.WaitFor(30*time.Second, "rt-c1")
			warned := false
			for _, line := range logs.lines() {
				warned = warned || strings.Contains(line, warning)
			}
			if warned != tt.wantWarn {
				t.Fatalf("retention %q: warned %v, want %v; log:\n%s", tt.retention, warned, tt.wantWarn, strings.Join(logs.lines(), "\n"))
			}
		})
	}
}
