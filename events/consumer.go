package events

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
	"go.uber.org/zap"
)

// ConsumerConfig configures a Consumer. Zero fields take the defaults noted.
type ConsumerConfig struct {
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// Topic is the events topic. default: "events"
	Topic string
	// Group is the consumer group; the Consumer then reads the partitions
	// the group gives it and commits the offsets of handled events. Empty
	// reads every partition, from FromEnd's position, and commits nothing.
	// default: ""
	Group string
	// FromEnd starts at the end of the topic instead of its start, where
	// there is no committed offset (or no Group). default: false
	FromEnd bool
	// Handle is called for each event, in partition order, so an
	// aggregate's events come in version order. An error stops Run; the
	// event's offset is not committed, so it comes again on the next Run.
	// Required.
	Handle func(ctx context.Context, params EventParams) error
	// OnGap is called when an event's version is more than one above the
	// aggregate's last version, before Handle is called for the event. When
	// it returns nil the event is handled and the gap accepted; an error
	// stops Run. default: nil, Run stops with a *GapError
	OnGap func(ctx context.Context, params GapParams) error
	// LastVersion returns the last version the service applied for an
	// aggregate the Consumer is not tracking (not seen since Run started,
	// or evicted), typically from the service's own store. With it, gaps
	// and redeliveries are recognised across restarts and evictions;
	// without it, the first event seen of an aggregate is taken as it is.
	// default: nil
	LastVersion func(ctx context.Context, aggregateID string) (int64, error)
	// MaxTrackedAggregates bounds the aggregates whose last version is kept
	// in memory; past it the least recently seen is forgotten. Each costs
	// about 100 bytes plus its ID. default: 100000
	MaxTrackedAggregates int
	// Logger receives the Consumer's warnings. default: zap.NewNop()
	Logger *zap.Logger
	// KafkaOptions are added to the client options, after the Consumer's
	// own.
	KafkaOptions []kgo.Opt
	// Propagator reads the trace context an event record carries (that of
	// the command which produced it) into the ctx given to Handle, so the
	// handler's spans join the command's trace.
	// default: propagation.TraceContext{} (W3C traceparent, tracestate)
	Propagator propagation.TextMapPropagator
}

func (c *ConsumerConfig) setDefaults() {
	if c.Topic == "" {
		c.Topic = DefaultEventsTopic
	}
	if c.MaxTrackedAggregates <= 0 {
		c.MaxTrackedAggregates = 100000
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Propagator == nil {
		c.Propagator = propagation.TraceContext{}
	}
}

// Validate reports every problem of the configuration at once.
func (c *ConsumerConfig) Validate() error {
	var problems []error
	if len(c.Brokers) == 0 {
		problems = append(problems, errors.New("no Kafka brokers: set Brokers"))
	}
	if c.Handle == nil {
		problems = append(problems, errors.New("no Handle function"))
	}
	return errors.Join(problems...)
}

// EventParams is what Handle gets.
type EventParams struct {
	// Event is the decoded event; decode its payload with DecodePayload.
	Event Event
	// Partition and Offset locate its record.
	Partition int32
	Offset    int64
}

// GapParams describes a version gap to OnGap.
type GapParams struct {
	// AggregateID names the aggregate.
	AggregateID string
	// Expected is the version that should have come next; Got is the
	// version that came.
	Expected, Got int64
	// Event is the event that came.
	Event Event
}

// ErrVersionGap marks a *GapError.
var ErrVersionGap = errors.New("version gap")

// GapError reports events missing before an aggregate's event: Got arrived
// where Expected was due. With Arbiter's guarantees it only happens when the
// aggregate's commands were produced to more than one partition (a producer
// with another partitioner), when the consumer skipped records (started
// from the end, or an offset moved by hand), or when LastVersion is behind.
type GapError struct {
	AggregateID     string
	Expected, Got   int64
	Partition       int32
	Offset          int64
	EventIdentifier string
}

// Error implements error.
func (e *GapError) Error() string {
	return fmt.Sprintf("version gap in aggregate %s: expected version %d, got %d (event %s at partition %d offset %d); events %d to %d have not been seen",
		e.AggregateID, e.Expected, e.Got, e.EventIdentifier, e.Partition, e.Offset, e.Expected, e.Got-1)
}

// Is makes errors.Is(err, ErrVersionGap) true.
func (e *GapError) Is(target error) bool { return target == ErrVersionGap }

// ConsumerStats counts what a Consumer did.
type ConsumerStats struct {
	// Handled counts events passed to Handle.
	Handled int64
	// Duplicates counts events skipped as redelivered: their version was
	// at or below the aggregate's last version.
	Duplicates int64
	// Gaps counts version gaps reported.
	Gaps int64
}

// Consumer reads the events topic for a downstream service (a read model, a
// projection, a notifier): read_committed, each partition in order, each
// aggregate's events handed over once in version order. It keeps each
// aggregate's last version in memory (bounded, least recently seen forgotten
// first) to skip redelivered events (a version at or below the last one: a
// restart from an older committed offset, a rebalance) and to detect
// version gaps.
//
// Exactly once is still the service's job across restarts: persist each
// aggregate's last applied version with the read model, and give it to the
// Consumer as LastVersion.
type Consumer struct {
	cfg     ConsumerConfig
	tracker *versionTracker
	stats   ConsumerStats
}

// NewConsumer returns a Consumer for the configuration; Run starts it.
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, errors.Wrap(err, "event consumer configuration")
	}
	return &Consumer{cfg: cfg, tracker: newVersionTracker(cfg.MaxTrackedAggregates)}, nil
}

// Stats returns the counts so far; call it after Run returned, or from
// Handle.
func (c *Consumer) Stats() ConsumerStats { return c.stats }

// Run reads events until ctx is cancelled (it then returns nil) or Handle,
// OnGap or LastVersion fails, an event does not decode, or a gap has no
// OnGap (it returns the error). In a group, the offsets of handled events
// are committed as it goes and when it returns. Run once per Consumer.
func (c *Consumer) Run(ctx context.Context) error {
	start := kgo.NewOffset().AtStart()
	if c.cfg.FromEnd {
		start = kgo.NewOffset().AtEnd()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.cfg.Brokers...),
		kgo.ConsumeTopics(c.cfg.Topic),
		kgo.ConsumeResetOffset(start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// KafkaOptions (kafkaclient.Config.Opts) may name it otherwise.
		kgo.ClientID("arbiter-consumer"),
	}
	if c.cfg.Group != "" {
		opts = append(opts,
			kgo.ConsumerGroup(c.cfg.Group),
			kgo.AutoCommitMarks(),
			// Handling happens between polls; a rebalance waits for it,
			// so a revoked partition's last handled offset is committed
			// and no other member handles the same events meanwhile.
			kgo.BlockRebalanceOnPoll(),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
				if err := cl.CommitMarkedOffsets(ctx); err != nil {
					c.cfg.Logger.Warn("commit handled offsets before giving partitions up", zap.Error(err))
				}
				c.tracker.forgetPartitions(revoked[c.cfg.Topic])
			}),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
				c.tracker.forgetPartitions(lost[c.cfg.Topic])
			}),
		)
	}
	client, err := kgo.NewClient(append(opts, c.cfg.KafkaOptions...)...)
	if err != nil {
		return errors.Wrap(err, "create the Kafka client of the event consumer")
	}
	defer client.Close()
	runErr := c.loop(ctx, client)
	if c.cfg.Group != "" {
		commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := client.CommitMarkedOffsets(commitCtx); err != nil {
			runErr = errors.CombineErrors(runErr, errors.Wrap(err, "commit the offsets of handled events"))
		}
		cancel()
	}
	return runErr
}

func (c *Consumer) loop(ctx context.Context, client *kgo.Client) error {
	// A poll blocks rebalances until AllowRebalance; leaving the group on
	// Close waits for one, so the last poll must release it too.
	defer client.AllowRebalance()
	for {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			c.cfg.Logger.Warn("reading events failed; retrying", zap.String("topic", topic), zap.Int32("partition", partition), zap.Error(err))
		})
		var handleErr error
		fetches.EachRecord(func(rec *kgo.Record) {
			if handleErr != nil {
				return
			}
			if handleErr = c.handle(ctx, rec); handleErr == nil && c.cfg.Group != "" {
				client.MarkCommitRecords(rec)
			}
		})
		client.AllowRebalance()
		if handleErr != nil {
			if ctx.Err() != nil {
				return nil
			}
			return handleErr
		}
	}
}

func (c *Consumer) handle(ctx context.Context, rec *kgo.Record) error {
	var event Event
	if err := json.Unmarshal(rec.Value, &event); err != nil {
		return errors.Wrapf(err, "the record at partition %d offset %d of topic %s is not an event", rec.Partition, rec.Offset, rec.Topic)
	}
	last, known := c.tracker.last(event.AggregateID)
	if !known && c.cfg.LastVersion != nil {
		version, err := c.cfg.LastVersion(ctx, event.AggregateID)
		if err != nil {
			return errors.Wrapf(err, "read the last applied version of aggregate %s", event.AggregateID)
		}
		last, known = version, true
	}
	if known && event.Version <= last {
		c.stats.Duplicates++
		c.tracker.set(event.AggregateID, last, rec.Partition)
		return nil
	}
	if known && event.Version != last+1 {
		c.stats.Gaps++
		gap := GapParams{AggregateID: event.AggregateID, Expected: last + 1, Got: event.Version, Event: event}
		if c.cfg.OnGap == nil {
			return &GapError{AggregateID: gap.AggregateID, Expected: gap.Expected, Got: gap.Got, Partition: rec.Partition, Offset: rec.Offset, EventIdentifier: event.ID}
		}
		if err := c.cfg.OnGap(ctx, gap); err != nil {
			return errors.Wrapf(err, "version gap in aggregate %s (expected %d, got %d)", gap.AggregateID, gap.Expected, gap.Got)
		}
	}
	handleCtx := c.cfg.Propagator.Extract(ctx, HeaderCarrier{Record: rec})
	if err := c.cfg.Handle(handleCtx, EventParams{Event: event, Partition: rec.Partition, Offset: rec.Offset}); err != nil {
		return errors.Wrapf(err, "handle event %s", event.ID)
	}
	c.stats.Handled++
	c.tracker.set(event.AggregateID, event.Version, rec.Partition)
	return nil
}

// versionTracker is a size-capped LRU of aggregates' last versions. The
// group's rebalance callbacks forget partitions from another goroutine,
// hence the lock.
type versionTracker struct {
	mu    sync.Mutex
	max   int
	order *list.List // front: most recently seen; values *tracked
	byID  map[string]*list.Element
}

type tracked struct {
	aggregateID string
	version     int64
	partition   int32
}

func newVersionTracker(max int) *versionTracker {
	return &versionTracker{max: max, order: list.New(), byID: make(map[string]*list.Element)}
}

func (t *versionTracker) last(aggregateID string) (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	element, ok := t.byID[aggregateID]
	if !ok {
		return 0, false
	}
	return element.Value.(*tracked).version, true
}

func (t *versionTracker) set(aggregateID string, version int64, partition int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if element, ok := t.byID[aggregateID]; ok {
		entry := element.Value.(*tracked)
		entry.version, entry.partition = version, partition
		t.order.MoveToFront(element)
		return
	}
	t.byID[aggregateID] = t.order.PushFront(&tracked{aggregateID: aggregateID, version: version, partition: partition})
	for t.order.Len() > t.max {
		oldest := t.order.Back()
		t.order.Remove(oldest)
		delete(t.byID, oldest.Value.(*tracked).aggregateID)
	}
}

// forgetPartitions drops the aggregates read from partitions this consumer
// no longer owns: another member moves them on meanwhile, and their old
// last versions would turn into false gaps if the partitions came back.
func (t *versionTracker) forgetPartitions(partitions []int32) {
	if len(partitions) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	gone := make(map[int32]bool, len(partitions))
	for _, p := range partitions {
		gone[p] = true
	}
	for element := t.order.Front(); element != nil; {
		next := element.Next()
		if entry := element.Value.(*tracked); gone[entry.partition] {
			t.order.Remove(element)
			delete(t.byID, entry.aggregateID)
		}
		element = next
	}
}
