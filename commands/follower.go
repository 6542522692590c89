package commands

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/internal/kzap"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// follower reads the events and conflicts topics for one Producer and hands
// each awaited command its outcome.
//
// # When an applied command's events are complete
//
// A command applied with k events has k records on the events topic, in one
// transaction, on one partition (they share the aggregate ID as key), and no
// record says how many there are. The follower reads with read_committed and
// keeps control records, and uses what the worker guarantees: it produces a
// command's events one after the other, before the next command's outcome,
// with one transactional producer, and every transaction ends with a control
// record (the commit marker) on each partition it wrote. So the events of
// command C written by producer P on partition X are complete at the first
// later record on X from the same producer P that is not an event of C: an
// event of another command, or P's commit marker. Records of other producers
// (other workers writing the same partition, when the commands and events
// topics have different partition counts) may sit between them and are not
// taken as the end. A transaction is only readable once committed, and then
// the marker follows, so every collection ends; a fetch that stops in the
// middle of a transaction only delays it to the next fetch.
//
// Correlation uses the record key (the aggregate ID) and the header
// arbiter-command-id, so that records of commands nobody awaits are never
// decoded.
type follower struct {
	client *kgo.Client
	log    *zap.Logger
	topics ProducerConfig

	mu      sync.Mutex
	waiters map[waitKey][]*waiter
	closed  bool

	// open is only touched by the run goroutine.
	open map[openKey]*collecting

	cancel context.CancelFunc
	done   chan struct{}
}

type waitKey struct{ aggregateID, commandID string }

type openKey struct {
	partition  int32
	producerID int64
}

// collecting holds the events of one awaited command read so far.
type collecting struct {
	key    waitKey
	events []events.Event
	err    error
}

type waiter struct {
	key     waitKey
	once    sync.Once
	deliver func(Applied, error)
	stop    func() bool
}

func (w *waiter) finish(applied Applied, err error) {
	w.once.Do(func() {
		if w.stop != nil {
			w.stop()
		}
		w.deliver(applied, err)
	})
}

// startFollower lists the end offsets of the events and conflicts topics
// and starts reading there: every outcome of a command produced after it
// returns is at or after them.
func startFollower(ctx context.Context, cfg ProducerConfig) (*follower, error) {
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(250 * time.Millisecond),
		kgo.WithLogger(kzap.New(cfg.Logger.Named("follower"))),
		kgo.ClientID(defaultClientID),
	}, cfg.KafkaOptions...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, errors.Wrap(err, "create the Kafka client that follows the outcomes")
	}
	ends, err := kadm.NewClient(client).ListEndOffsets(ctx, cfg.EventsTopic, cfg.ConflictsTopic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		client.Close()
		return nil, errors.Wrapf(err, "list the end offsets of topics %s and %s (do they exist? is Kafka reachable?)", cfg.EventsTopic, cfg.ConflictsTopic)
	}
	assign := make(map[string]map[int32]kgo.Offset)
	ends.Each(func(o kadm.ListedOffset) {
		if assign[o.Topic] == nil {
			assign[o.Topic] = make(map[int32]kgo.Offset)
		}
		assign[o.Topic][o.Partition] = kgo.NewOffset().At(o.Offset)
	})
	for _, topic := range []string{cfg.EventsTopic, cfg.ConflictsTopic} {
		if len(assign[topic]) == 0 {
			client.Close()
			return nil, errors.Newf("topic %s has no partitions; create the topics (arbiter topics create)", topic)
		}
	}
	client.AddConsumePartitions(assign)
	runCtx, cancel := context.WithCancel(context.Background())
	f := &follower{
		client:  client,
		log:     cfg.Logger.Named("follower"),
		topics:  cfg,
		waiters: make(map[waitKey][]*waiter),
		open:    make(map[openKey]*collecting),
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	go f.run(runCtx)
	return f, nil
}

// register adds a waiter for a command; it is answered by the command's
// outcome, by fail, by Close, or when ctx ends.
func (f *follower) register(ctx context.Context, aggregateID, commandID string, deliver func(Applied, error)) *waiter {
	w := &waiter{key: waitKey{aggregateID, commandID}, deliver: deliver}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		w.finish(Applied{}, errors.Wrapf(ErrClosed, "wait for command %s of aggregate %s", commandID, aggregateID))
		return w
	}
	f.waiters[w.key] = append(f.waiters[w.key], w)
	f.mu.Unlock()
	w.stop = context.AfterFunc(ctx, func() {
		f.fail(w, errors.Wrapf(ctx.Err(), "wait for the outcome of command %s of aggregate %s (it may still be decided; resend the same ID to learn its outcome)", commandID, aggregateID))
	})
	return w
}

// fail answers one waiter with an error and forgets it.
func (f *follower) fail(w *waiter, err error) {
	f.mu.Lock()
	list := f.waiters[w.key]
	for i, other := range list {
		if other == w {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(f.waiters, w.key)
	} else {
		f.waiters[w.key] = list
	}
	f.mu.Unlock()
	w.finish(Applied{}, err)
}

func (f *follower) awaited(key waitKey) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters[key]) > 0
}

// answer gives every waiter of a command its outcome.
func (f *follower) answer(key waitKey, applied Applied, err error) {
	f.mu.Lock()
	list := f.waiters[key]
	delete(f.waiters, key)
	f.mu.Unlock()
	for _, w := range list {
		w.finish(applied, err)
	}
}

func (f *follower) run(ctx context.Context) {
	defer close(f.done)
	for {
		fetches := f.client.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		failed := false
		fetches.EachError(func(topic string, partition int32, err error) {
			failed = true
			f.log.Warn("reading outcomes failed; retrying", zap.String("topic", topic), zap.Int32("partition", partition), zap.Error(err))
		})
		fetches.EachRecord(f.handle)
		if failed {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// handle reads one record, in partition order.
func (f *follower) handle(rec *kgo.Record) {
	if rec.Topic == f.topics.ConflictsTopic {
		if rec.Attrs.IsControl() {
			return
		}
		key := waitKey{string(rec.Key), commandIDHeader(rec)}
		if key.commandID == "" || !f.awaited(key) {
			return
		}
		var conflict events.Conflict
		if err := json.Unmarshal(rec.Value, &conflict); err != nil {
			f.answer(key, Applied{}, errors.Wrapf(err, "decode the conflict record of command %s of aggregate %s (partition %d offset %d)", key.commandID, key.aggregateID, rec.Partition, rec.Offset))
			return
		}
		applied, err := OutcomeOfConflict(conflict)
		f.answer(key, applied, err)
		return
	}

	open := openKey{rec.Partition, rec.ProducerID}
	key := waitKey{string(rec.Key), commandIDHeader(rec)}
	if c, ok := f.open[open]; ok && (rec.Attrs.IsControl() || key != c.key) {
		delete(f.open, open)
		f.complete(c)
	}
	if rec.Attrs.IsControl() || key.commandID == "" {
		return
	}
	c, ok := f.open[open]
	if !ok {
		if !f.awaited(key) {
			return
		}
		c = &collecting{key: key}
		f.open[open] = c
	}
	if c.err != nil {
		return
	}
	var event events.Event
	if err := json.Unmarshal(rec.Value, &event); err != nil {
		c.err = errors.Wrapf(err, "decode an event of command %s of aggregate %s (partition %d offset %d)", key.commandID, key.aggregateID, rec.Partition, rec.Offset)
		return
	}
	c.events = append(c.events, event)
}

func (f *follower) complete(c *collecting) {
	if c.err != nil {
		f.answer(c.key, Applied{}, c.err)
		return
	}
	last := c.events[len(c.events)-1]
	f.answer(c.key, Applied{CommandID: c.key.commandID, AggregateID: c.key.aggregateID, Version: last.Version, Events: c.events}, nil)
}

func commandIDHeader(rec *kgo.Record) string {
	for _, h := range rec.Headers {
		if h.Key == events.HeaderCommandID {
			return string(h.Value)
		}
	}
	return ""
}

// close stops the follower and answers every waiter with ErrClosed.
func (f *follower) close() {
	f.cancel()
	<-f.done
	f.client.Close()
	f.mu.Lock()
	f.closed = true
	waiters := f.waiters
	f.waiters = make(map[waitKey][]*waiter)
	f.mu.Unlock()
	for key, list := range waiters {
		for _, w := range list {
			w.finish(Applied{}, errors.Wrapf(ErrClosed, "wait for command %s of aggregate %s", key.commandID, key.aggregateID))
		}
	}
}
