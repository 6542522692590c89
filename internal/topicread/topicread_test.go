package topicread

import (
	"context"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// marker returns a control record of producerID: an abort or a commit.
func marker(offset, producerID int64, commit bool) scanned {
	key := make([]byte, 4)
	if commit {
		binary.BigEndian.PutUint16(key[2:4], controlCommit)
	}
	return scanned{offset: offset, producerID: producerID, key: key, control: true}
}

// transactional returns a record of producerID's transaction.
func transactional(offset, producerID int64) scanned {
	return scanned{offset: offset, producerID: producerID, transactional: true}
}

func plain(offset int64) scanned { return scanned{offset: offset} }

// TestTransactionScan checks which offset a read_committed reader that keeps
// control records is given last below the last stable offset, and which
// records aborted transactions left.
func TestTransactionScan(t *testing.T) {
	tests := []struct {
		name        string
		start       int64
		stable      int64
		records     []scanned
		lastVisible int64
		aborted     []int64
	}{
		{name: "empty", start: 0, stable: 0, lastVisible: -1},
		{name: "empty after retention", start: 7, stable: 7, lastVisible: 6},
		{name: "plain records", stable: 2, records: []scanned{plain(0), plain(1)}, lastVisible: 1},
		{name: "committed transaction ends with its marker", stable: 3,
			records: []scanned{transactional(0, 1), transactional(1, 1), marker(2, 1, true)}, lastVisible: 2},
		{name: "aborted transaction ends with its marker", stable: 3,
			records: []scanned{plain(0), transactional(1, 1), marker(2, 1, false)}, lastVisible: 2, aborted: []int64{1}},
		{name: "aborted transaction whose marker is past the last stable offset", stable: 3,
			records:     []scanned{plain(0), transactional(1, 1), transactional(2, 1), transactional(3, 2), marker(4, 1, false)},
			lastVisible: 0, aborted: []int64{1, 2}},
		{name: "committed transaction whose marker is past the last stable offset", stable: 3,
			records:     []scanned{plain(0), transactional(1, 1), transactional(2, 1), transactional(3, 2), marker(4, 1, true)},
			lastVisible: 2},
		{name: "open transaction at the last stable offset", stable: 1,
			records: []scanned{plain(0), transactional(1, 2)}, lastVisible: 0},
		{name: "interleaved producers", stable: 6,
			records:     []scanned{transactional(0, 1), transactional(1, 2), transactional(2, 1), marker(3, 2, true), marker(4, 1, false), plain(5)},
			lastVisible: 5, aborted: []int64{0, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scan := newTransactionScan(tt.start, tt.stable)
			for _, rec := range tt.records {
				scan.addRecord(rec)
			}
			scan.finish()
			if scan.lastVisible != tt.lastVisible {
				t.Errorf("last visible offset %d, want %d: a reader waiting for it would stop early or never", scan.lastVisible, tt.lastVisible)
			}
			if !slices.Equal(scan.aborted, tt.aborted) {
				t.Errorf("aborted offsets %v, want %v", scan.aborted, tt.aborted)
			}
		})
	}
}

func TestRemaining(t *testing.T) {
	ends := Ends{"t": {
		0: {Start: 0, Last: 4},
		1: {Start: 3, Last: 2}, // empty
		2: {Start: 10, Last: 10},
	}}
	r := NewRemaining(ends)
	steps := []struct {
		partition int32
		offset    int64
		finished  bool
		left      int
	}{
		{partition: 0, offset: 3, finished: false, left: 2},
		{partition: 1, offset: 3, finished: false, left: 2},
		{partition: 2, offset: 10, finished: true, left: 1},
		{partition: 2, offset: 11, finished: false, left: 1},
		{partition: 0, offset: 5, finished: true, left: 0},
	}
	for _, step := range steps {
		if got := r.Seen(&kgo.Record{Topic: "t", Partition: step.partition, Offset: step.offset}); got != step.finished {
			t.Errorf("offset %d of partition %d finished it: %v, want %v", step.offset, step.partition, got, step.finished)
		}
		if r.Len() != step.left {
			t.Errorf("after offset %d of partition %d: %d partitions left, want %d", step.offset, step.partition, r.Len(), step.left)
		}
	}
	if got := ends.Offsets(nil); len(got["t"]) != 3 {
		t.Errorf("Offsets(nil) lists %d partitions, want every one", len(got["t"]))
	}
}

// TestReadEndsAfterAbortedTransaction reads a partition that ends with an
// aborted transaction whose marker lies past the last stable offset, behind
// a transaction that stays open: Stable must stop without waiting for it,
// give the committed records only and list the aborted ones; Follow must
// have nothing to wait for. Once the open transaction is aborted too,
// Settled reads to the high watermark.
func TestReadEndsAfterAbortedTransaction(t *testing.T) {
	brokers := testenv.Brokers(t)
	topic := testenv.Name(t, "events")
	testenv.CreateTopics(t, brokers, 1, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	newClient := func(opts ...kgo.Opt) *kgo.Client {
		client, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(client.Close)
		return client
	}
	produce := func(client *kgo.Client, values ...string) {
		t.Helper()
		for _, value := range values {
			if err := client.ProduceSync(ctx, &kgo.Record{Value: []byte(value)}).FirstErr(); err != nil {
				t.Fatalf("produce %s: %v", value, err)
			}
		}
	}
	plainProducer := newClient()
	aborting := newClient(kgo.TransactionalID(testenv.Name(t, "aborting")))
	open := newClient(kgo.TransactionalID(testenv.Name(t, "open")), kgo.TransactionTimeout(time.Minute))

	produce(plainProducer, "committed") // offset 0
	if err := aborting.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(aborting, "aborted-1", "aborted-2") // 1, 2
	if err := open.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(open, "open") // 3: the last stable offset
	openEnded := false
	t.Cleanup(func() {
		if openEnded {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := open.EndTransaction(ctx, kgo.TryAbort); err != nil {
			t.Errorf("abort the open transaction: %v", err)
		}
	})
	if err := aborting.EndTransaction(ctx, kgo.TryAbort); err != nil { // marker at 4
		t.Fatalf("abort: %v", err)
	}

	read := func(cfg Config) (Ends, []string, error) {
		t.Helper()
		cfg.Topics, cfg.KafkaOptions = []string{topic}, []kgo.Opt{kgo.SeedBrokers(brokers...)}
		// Well within the open transaction's minute: a read that waits for
		// it to end is cut off.
		readCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		var values []string
		ends, err := Read(readCtx, cfg, func(rec *kgo.Record) error {
			values = append(values, string(rec.Value))
			return nil
		})
		return ends, values, err
	}

	ends, values, err := read(Config{End: Stable})
	if err != nil {
		t.Fatalf("Stable read behind an open transaction after an aborted one: %v", err)
	}
	if want := []string{"committed"}; !slices.Equal(values, want) {
		t.Errorf("Stable read gave %v, want %v", values, want)
	}
	p := ends[topic][0]
	if p.LastStable != 3 || p.Last != 0 || !slices.Equal(p.Aborted, []int64{1, 2}) {
		t.Errorf("Stable ends %+v, want last stable offset 3, last 0, aborted [1 2]", p)
	}

	followed, err := FindEnds(ctx, Config{Topics: []string{topic}, End: Follow, FromStable: true, KafkaOptions: []kgo.Opt{kgo.SeedBrokers(brokers...)}})
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}
	if p := followed[topic][0]; !p.Empty() || p.Start != 3 {
		t.Errorf("Follow from the last stable offset: %+v, want an empty partition starting at 3", p)
	}

	if err := open.EndTransaction(ctx, kgo.TryAbort); err != nil { // marker at 5
		t.Fatalf("abort the open transaction: %v", err)
	}
	openEnded = true
	ends, values, err = read(Config{End: Settled})
	if err != nil {
		t.Fatalf("Settled read: %v", err)
	}
	if want := []string{"committed"}; !slices.Equal(values, want) {
		t.Errorf("Settled read gave %v, want %v", values, want)
	}
	if p := ends[topic][0]; p.Last != 5 || p.HighWatermark != 6 {
		t.Errorf("Settled ends %+v, want last 5 (the second abort marker) and high watermark 6", p)
	}
}

func TestReadMissingTopic(t *testing.T) {
	brokers := testenv.Brokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Read(ctx, Config{Topics: []string{testenv.Name(t, "missing")}, KafkaOptions: []kgo.Opt{kgo.SeedBrokers(brokers...)}}, func(*kgo.Record) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "do they exist?") {
		t.Fatalf("Read of a missing topic: %v, want an error asking whether it exists", err)
	}
}
