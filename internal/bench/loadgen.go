package bench

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
)

// warmupPrefix starts the IDs of the warm-up commands, one per partition,
// whose outcomes show every worker is assigned and has run a transaction.
const warmupPrefix = "warmup-"

// loadgen produces the workload's command records, each on its key's
// murmur2 partition (the workers refuse a record on any other), computed
// once per aggregate.
type loadgen struct {
	client     *kgo.Client
	topic      string
	partitions int32
	hash       kgo.TopicPartitioner
	produced   atomic.Int64
	// halted ends a paced run early (halt): the records in hand are
	// flushed and produced counts them.
	halted atomic.Bool
	mu     sync.Mutex
	err    error
}

func newLoadgen(brokers []string, securityOpts []kgo.Opt, topic string, partitions int32, linger time.Duration) (*loadgen, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.MaxBufferedRecords(100_000),
		kgo.ProducerBatchMaxBytes(1 << 20),
	}
	if linger >= 0 {
		opts = append(opts, kgo.ProducerLinger(linger))
	}
	opts = append(opts, securityOpts...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, errors.Wrap(err, "create the load generator's producer")
	}
	return &loadgen{client: client, topic: topic, partitions: partitions, hash: kgo.StickyKeyPartitioner(nil).ForTopic(topic)}, nil
}

// partitionOf returns the murmur2 partition of a key, as the Java client
// and franz-go's default partitioner put it.
func (g *loadgen) partitionOf(key []byte) int32 {
	return int32(g.hash.Partition(&kgo.Record{Key: key}, int(g.partitions)))
}

func (g *loadgen) promise(r *kgo.Record, err error) {
	if err != nil {
		g.mu.Lock()
		if g.err == nil {
			g.err = errors.Wrapf(err, "produce command record to %s/%d", r.Topic, r.Partition)
		}
		g.mu.Unlock()
	}
}

func (g *loadgen) firstErr() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// warmup produces one CreateProduct command to each partition.
func (g *loadgen) warmup(ctx context.Context) error {
	for p := range g.partitions {
		// The first warm-up ID whose key hashes to p.
		id := warmupPrefix + strconv.Itoa(int(p))
		for n := 0; g.partitionOf([]byte(id)) != p; n++ {
			id = warmupPrefix + strconv.Itoa(int(p)) + "-" + strconv.Itoa(n)
		}
		value := `{"id":"` + id + `","aggregateId":"` + id + `","type":"CreateProduct","expectedVersion":0,"payload":{"name":"warm-up","price":1,"stock":1}}`
		g.client.Produce(ctx, &kgo.Record{Topic: g.topic, Partition: p, Key: []byte(id), Value: []byte(value)}, g.promise)
	}
	if err := g.client.Flush(ctx); err != nil {
		return errors.Wrap(err, "flush the warm-up commands")
	}
	return g.firstErr()
}

// run produces every command: as fast as the producer takes them when rate
// is 0, or paced at rate records per second. Each command's produce time is
// given to mark.
func (g *loadgen) run(ctx context.Context, w *workload, rate float64, clk *clock, mark func(seq int, at time.Duration)) error {
	return g.runRange(ctx, w, 0, len(w.values), rate, clk, mark)
}

// halt makes a paced runRange stop producing, flush and return.
func (g *loadgen) halt() { g.halted.Store(true) }

// runRange is run for the commands from seq first up to n (exclusive); a
// paced run also ends at halt, with produced the last seq handed over + 1.
func (g *loadgen) runRange(ctx context.Context, w *workload, first, n int, rate float64, clk *clock, mark func(seq int, at time.Duration)) error {
	partitionOf := make([]int32, len(w.keys))
	for a, key := range w.keys {
		partitionOf[a] = g.partitionOf(key)
	}
	record := func(seq int) *kgo.Record {
		a := w.aggregate[seq]
		return &kgo.Record{Topic: g.topic, Partition: partitionOf[a], Key: w.keys[a], Value: w.values[seq]}
	}
	if rate <= 0 {
		for seq := first; seq < n; seq++ {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			mark(seq, clk.now())
			g.client.Produce(ctx, record(seq), g.promise)
			g.produced.Add(1)
		}
	} else {
		start := clk.now()
		next := first
		ticker := time.NewTicker(time.Millisecond)
		defer ticker.Stop()
		for next < n && !g.halted.Load() {
			now := clk.now()
			due := min(first+int((now-start).Seconds()*rate)+1, n)
			for ; next < due; next++ {
				mark(next, now)
				g.client.Produce(ctx, record(next), g.promise)
			}
			g.produced.Store(int64(next))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-ticker.C:
			}
		}
	}
	if err := g.client.Flush(ctx); err != nil {
		return errors.Wrap(err, "flush the command records")
	}
	return g.firstErr()
}

func (g *loadgen) close() { g.client.Close() }
