package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// stuckObserver collects the "partition stuck" observations of a worker.
type stuckObserver struct {
	mu       sync.Mutex
	stuck    []processor.SessionObservation
	moving   int
	replayed int
	seen     chan struct{}
}

func newStuckObserver() *stuckObserver { return &stuckObserver{seen: make(chan struct{}, 64)} }

func (o *stuckObserver) ObserveBatch(b processor.BatchObservation) {
	if b.Result == processor.TransactionCommitted {
		o.mu.Lock()
		o.replayed += b.Replayed
		o.mu.Unlock()
	}
}

func (o *stuckObserver) ObserveRedis(processor.RedisObservation) {}

func (o *stuckObserver) ObserveSession(s processor.SessionObservation) {
	if s.State == processor.SessionPartitionMoving {
		o.mu.Lock()
		o.moving++
		o.mu.Unlock()
	}
	if s.State != processor.SessionPartitionStuck {
		return
	}
	o.mu.Lock()
	o.stuck = append(o.stuck, s)
	o.mu.Unlock()
	select {
	case o.seen <- struct{}{}:
	default:
	}
}

// await waits until n "partition stuck" observations were made and returns
// them.
func (o *stuckObserver) await(t *testing.T, n int, timeout time.Duration) []processor.SessionObservation {
	t.Helper()
	deadline := time.After(timeout)
	for {
		o.mu.Lock()
		got := append([]processor.SessionObservation(nil), o.stuck...)
		o.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-o.seen:
		case <-deadline:
			t.Fatalf("%d partition stuck observations after %v, want %d: %+v", len(got), timeout, n, got)
		}
	}
}

// setTopicConfig sets one configuration entry of topics.
func setTopicConfig(t *testing.T, brokers []string, key, value string, topics ...string) {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	responses, err := kadm.NewClient(client).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: key, Value: &value}}, topics...)
	if err == nil {
		for _, topic := range topics {
			if _, err = responses.On(topic, nil); err != nil {
				break
			}
		}
	}
	if err != nil {
		t.Fatalf("set %s=%s on %v: %v", key, value, topics, err)
	}
}

// produceLanded sends records with the default (murmur2) partitioner and
// returns them with the partitions and offsets they landed on.
func produceLanded(t *testing.T, brokers []string, records ...*kgo.Record) []*kgo.Record {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := client.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("produce %d records: %v", len(records), err)
	}
	// The client sets each record's partition and offset.
	return records
}

// TestRefusedPartitionIsIsolated: a command record whose outcome record the
// broker refuses, on every retry, must not hold the other partitions of its
// session hostage. The worker narrows the failing batch down to the
// partition that fails alone, pauses it for the isolation interval, reports
// it once per interval (log and Observer), and every other partition keeps
// deciding, in the same polls and in later ones. The refusal: the conflicts
// topic's max.message.bytes lowered after the worker started, below a
// version conflict that quotes a 20 KB command (the worker fitted its limits
// to the topics when it started, so it decides and records that conflict).
func TestRefusedPartitionIsIsolated(t *testing.T) {
	const partitions = 4
	s := newStack(t, partitions)
	log, logs := bufferLogger()
	observer := newStuckObserver()
	const interval = 3 * time.Second
	s.startWorker(func(cfg *processor.Config) {
		cfg.Logger = log
		cfg.Observer = observer
		cfg.IsolationInterval = interval
	})
	create := func(n int) commands.Command {
		productID := fmt.Sprintf("iso-%d", n)
		return productCommand(t, productID+"-create", productID, product.CreateProductType, 0, product.CreateProduct{Name: "Lamp", Price: 10, Stock: 1})
	}
	// The worker runs: it has read the topics' limits.
	s.send(create(100))
	s.out.WaitFor(60*time.Second, create(100).ID)
	setTopicConfig(t, s.brokers, "max.message.bytes", "4096", s.topics.Conflicts)

	const products = 32 // some on the bad record's partition, after it
	var records []*kgo.Record
	for n := range products {
		records = append(records, testkit.CommandRecord(t, s.topics.Commands, create(n)))
	}
	stale := commands.Command{ID: "iso-bad-stale", AggregateID: "iso-bad", Type: product.ChangePriceType, ExpectedVersion: 3,
		Payload: []byte(`{"newPrice":9,"note":"` + incompressible(t, 20_000) + `"}`)}
	bad := testkit.CommandRecord(t, s.topics.Commands, stale)
	landed := produceLanded(t, s.brokers, append([]*kgo.Record{bad}, records...)...)
	badPartition := landed[0].Partition

	// Every valid command on another partition gets its outcome; those
	// after the bad record on its partition wait behind it, in order.
	var others, behind []string
	for i, rec := range landed[1:] {
		if rec.Partition != badPartition {
			others = append(others, create(i).ID)
		} else {
			behind = append(behind, create(i).ID)
		}
	}
	if len(others) == 0 || len(behind) == 0 {
		t.Fatalf("setup: %d commands on the bad record's partition, %d on the others; want some of each", len(behind), len(others))
	}
	start := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			for _, line := range logs.lines() {
				if !strings.Contains(line, `"logger":"kafka"`) {
					t.Logf("%.400s", line)
				}
			}
		}
	})
	t.Logf("bad record on partition %d; %d commands on the others", badPartition, len(others))
	s.out.WaitFor(30*time.Second, others...)
	t.Logf("the %d commands on the other partitions had their outcomes %v after they were sent", len(others), time.Since(start).Round(time.Millisecond))

	// The bad partition is reported, with its error, and again after each
	// interval in which it was retried and failed alone.
	reports := observer.await(t, 2, 30*time.Second)
	for _, report := range reports {
		if len(report.Partitions) != 1 || report.Partitions[0] != badPartition || report.Err == nil {
			t.Fatalf("want partition %d reported stuck with its error, got %+v", badPartition, report)
		}
	}

	// A later poll on the other partitions moves too.
	var next []*kgo.Record
	var nextIDs []string
	for n := range products {
		if landed[n+1].Partition == badPartition {
			continue
		}
		cmd := productCommand(t, create(n).ID+"-price", create(n).AggregateID, product.ChangePriceType, 1, product.ChangePrice{NewPrice: 9})
		next = append(next, testkit.CommandRecord(t, s.topics.Commands, cmd))
		nextIDs = append(nextIDs, cmd.ID)
	}
	testkit.Produce(t, s.brokers, next...)
	s.out.WaitFor(30*time.Second, nextIDs...)
	got := s.out.Snapshot()
	for _, id := range append([]string{stale.ID}, behind...) {
		if o, ok := got[id]; ok {
			t.Fatalf("command %s on the isolated partition got an outcome while its record was refused: %+v", id, o)
		}
	}
	elapsed := time.Since(start)

	lines := 0
	for _, line := range logs.lines() {
		var entry struct {
			Msg       string `json:"msg"`
			Partition int32  `json:"partition"`
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil || !strings.HasPrefix(entry.Msg, "partition isolated") {
			continue
		}
		if entry.Partition != badPartition {
			t.Errorf("partition %d reported isolated; only %d fails: %s", entry.Partition, badPartition, line)
		}
		lines++
	}
	if most := int(elapsed/interval) + 1; lines < 2 || lines > most {
		t.Errorf("partition %d reported %d times in %v; want once per %v interval (2 to %d)", badPartition, lines, elapsed.Round(time.Millisecond), interval, most)
	}

	// The cause removed, the partition moves on its next retry: the
	// recorded conflict is re-published as it was decided, once, and the
	// commands behind it get their outcomes.
	setTopicConfig(t, s.brokers, "max.message.bytes", "1048588", s.topics.Conflicts)
	got = s.out.WaitFor(30*time.Second, append([]string{stale.ID}, behind...)...)
	if o := got[stale.ID]; len(o.Events) != 0 || len(o.Conflicts) != 1 || o.Conflicts[0].Reason != events.ReasonVersionConflict {
		t.Fatalf("the refused command must get exactly its one recorded version conflict, got %+v", o)
	}
	for _, id := range behind {
		if o := got[id]; len(o.Events) != 1 || len(o.Conflicts) != 0 {
			t.Fatalf("command %s behind the refused one must be applied once, got %+v", id, o)
		}
	}
	observer.mu.Lock()
	replayed, moving := observer.replayed, observer.moving
	observer.mu.Unlock()
	if replayed < 1 || moving != 1 {
		t.Errorf("the isolated partition's recorded outcome must be replayed (replayed %d) and the partition reported moving once (%d)", replayed, moving)
	}
}

// TestKeylessInvalidOnCompactedConflicts: a compacted conflicts topic refuses
// records without a key. A command record without a key whose value does not
// decode gets an invalid conflict keyed "<topic>/<partition>/<offset>", and
// nothing stalls: every valid command, on its partition and the others, gets
// its outcome.
func TestKeylessInvalidOnCompactedConflicts(t *testing.T) {
	s := newStack(t, 4)
	setTopicConfig(t, s.brokers, "cleanup.policy", "compact", s.topics.Conflicts)
	log, logs := bufferLogger()
	s.startWorker(func(cfg *processor.Config) { cfg.Logger = log })

	bad := &kgo.Record{Topic: s.topics.Commands, Value: []byte("not a command")}
	records := []*kgo.Record{bad}
	var ids []string
	for n := range 12 {
		productID := fmt.Sprintf("keyless-%d", n)
		cmd := productCommand(t, productID+"-create", productID, product.CreateProductType, 0, product.CreateProduct{Name: "Lamp", Price: 10, Stock: 1})
		records = append(records, testkit.CommandRecord(t, s.topics.Commands, cmd))
		ids = append(ids, cmd.ID)
	}
	produceLanded(t, s.brokers, records...)
	s.out.WaitFor(30*time.Second, ids...)
	s.out.Wait(30*time.Second, func(_ map[string]*testkit.Outcome, noID []events.Conflict) bool { return len(noID) == 1 })

	wantKey := fmt.Sprintf("%s/%d/%d", bad.Topic, bad.Partition, bad.Offset)
	if key := string(idlessConflict(t, s.brokers, s.topics.Conflicts).Key); key != wantKey {
		t.Fatalf("the keyless record's invalid conflict is keyed %q, want %q", key, wantKey)
	}
	for _, line := range logs.lines() {
		if strings.Contains(line, "partition isolated") {
			t.Errorf("no partition may be isolated: %.400s", line)
		}
	}
}
