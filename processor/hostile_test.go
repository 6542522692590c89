package processor_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
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
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// lockedBuffer collects a worker's log lines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Sync() error { return nil }

// lines returns the logged lines.
func (b *lockedBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var lines []string
	scanner := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	scanner.Buffer(nil, 16<<20)
	for scanner.Scan() {
		lines = append(lines, scanner.Text())
	}
	return lines
}

// bufferLogger returns a debug-level JSON logger writing to a buffer.
func bufferLogger() (*zap.Logger, *lockedBuffer) {
	buf := &lockedBuffer{}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), buf, zapcore.DebugLevel)
	return zap.New(core), buf
}

// TestHostileKeyDoesNotStall reproduces the record that stopped a whole
// deployment: a command record whose key is 200,000 bytes of 0xFF and whose
// value is "x", between valid commands on its partition and beside another
// partition. It must get one small invalid conflict record, every valid
// command its outcome, and the worker's logs must not carry the key.
func TestHostileKeyDoesNotStall(t *testing.T) {
	s := newStack(t, 2)
	log, logs := bufferLogger()
	s.startWorker(func(cfg *processor.Config) { cfg.Logger = log })

	record := func(partition int32, cmd commands.Command) *kgo.Record {
		rec := testkit.CommandRecord(t, s.topics.Commands, cmd)
		rec.Partition = partition
		return rec
	}
	hostileKey := bytes.Repeat([]byte{0xff}, 200_000)
	// Each aggregate on the partition its key belongs to: workers refuse
	// commands on another (issue 10).
	aggregateA, aggregateB := testkit.AggregateOn("h-a", 0, 2), testkit.AggregateOn("h-b", 1, 2)
	create := func(id, productID string) commands.Command {
		return productCommand(t, id, productID, product.CreateProductType, 0, product.CreateProduct{Name: "Desk", Price: 100, Stock: 1})
	}
	changePrice := func(id, productID string, version int64, price float64) commands.Command {
		return productCommand(t, id, productID, product.ChangePriceType, version, product.ChangePrice{NewPrice: price})
	}
	produceManually(t, s.brokers,
		record(0, create("h-a1", aggregateA)),
		&kgo.Record{Topic: s.topics.Commands, Partition: 0, Key: hostileKey, Value: []byte("x")},
		record(0, changePrice("h-a2", aggregateA, 1, 90)),
		record(1, create("h-b1", aggregateB)),
	)
	start := time.Now()
	s.out.Wait(30*time.Second, func(byID map[string]*testkit.Outcome, noID []events.Conflict) bool {
		for _, id := range []string{"h-a1", "h-a2", "h-b1"} {
			if o, ok := byID[id]; !ok || len(o.Events) == 0 {
				return false
			}
		}
		return len(noID) == 1
	})
	// The next poll on both partitions moves too.
	produceManually(t, s.brokers, record(0, changePrice("h-a3", aggregateA, 2, 80)), record(1, changePrice("h-b2", aggregateB, 1, 70)))
	s.out.WaitFor(30*time.Second, "h-a3", "h-b2")
	t.Logf("every valid command had its outcome %v after the first were sent", time.Since(start).Round(time.Millisecond))

	noID := s.out.NoIDConflicts()
	if len(noID) != 1 || noID[0].Reason != events.ReasonInvalid || noID[0].Source.Partition != 0 || noID[0].Source.Offset != 1 {
		t.Fatalf("the hostile record must get exactly one invalid conflict pointing at it, got %+v", noID)
	}
	size := recordSize(idlessConflict(t, s.brokers, s.topics.Conflicts))
	t.Logf("the hostile record's conflict record is %d bytes (value, key and headers)", size)
	if size > 16<<10 {
		t.Errorf("the hostile record's conflict record is %d bytes; it must stay well under the 1 MiB record limit", size)
	}
	for _, line := range logs.lines() {
		if len(line) > 2048 {
			t.Errorf("a log line of %d bytes: %.300s…", len(line), line)
		}
	}
}

// incompressible returns n bytes of random base64: a payload that compression
// does not shrink below the broker's limit.
func incompressible(t *testing.T, n int) string {
	t.Helper()
	random := make([]byte, n*3/4)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(random)
}

// produceManually sends records to the partitions they name.
func produceManually(t *testing.T, brokers []string, records ...*kgo.Record) {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchMaxBytes(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := client.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("produce %d records: %v", len(records), err)
	}
}

// idlessConflict reads the conflicts topic and returns the one conflict
// record without a command ID header (an invalid record's).
func idlessConflict(t *testing.T, brokers []string, topic string) *kgo.Record {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("no conflict record without a command ID in %s", topic)
		}
		var found *kgo.Record
		fetches.EachRecord(func(rec *kgo.Record) {
			for _, h := range rec.Headers {
				if h.Key == events.HeaderCommandID {
					return
				}
			}
			found = rec
		})
		if found != nil {
			return found
		}
	}
}

// recordSize is a record's size on the wire, before framing: value, key and
// headers.
func recordSize(rec *kgo.Record) int {
	size := len(rec.Key) + len(rec.Value)
	for _, h := range rec.Headers {
		size += len(h.Key) + len(h.Value)
	}
	return size
}

// TestOutputTopicsWithSmallRecordLimit: when the events and conflicts topics
// accept smaller records than the worker's limit (max.message.bytes), the
// worker fits its limit to them, so a command whose event the broker would
// refuse is rejected before it is decided instead of stalling its batch.
func TestOutputTopicsWithSmallRecordLimit(t *testing.T) {
	s := newStack(t, 1)
	client, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	limit := "65536"
	responses, err := kadm.NewClient(client).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &limit}},
		s.topics.Events, s.topics.Conflicts)
	if err == nil {
		_, err = responses.On(s.topics.Events, nil)
	}
	if err != nil {
		t.Fatalf("set max.message.bytes of the output topics: %v", err)
	}
	s.startWorker(nil)

	big := commands.Command{ID: "big", AggregateID: "stream-big", Type: processor.AppendEventsType, ExpectedVersion: commands.AnyVersion,
		Payload: []byte(`{"events":[{"type":"Big","payload":"` + incompressible(t, 100_000) + `"}]}`)}
	small := commands.Command{ID: "small", AggregateID: "stream-small", Type: processor.AppendEventsType, ExpectedVersion: commands.AnyVersion,
		Payload: []byte(`{"events":[{"type":"Small"}]}`)}
	s.send(big, small)
	got := s.out.WaitFor(30*time.Second, "big", "small")
	if o := got["big"]; len(o.Events) != 0 || len(o.Conflicts) != 1 || o.Conflicts[0].Reason != events.ReasonRejected || !strings.Contains(o.Conflicts[0].Message, "over the") {
		t.Fatalf("an event over the topics' record limit must be rejected before it is decided, got %+v", o)
	}
	if o := got["small"]; len(o.Events) != 1 {
		t.Fatalf("the small command must be applied, got %+v", o)
	}
}
