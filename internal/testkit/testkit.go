// Package testkit holds what the integration tests of several packages share
// beyond internal/testenv: producing command records, running in-process
// workers, and reading outcomes back from the output topics with
// read_committed.
package testkit

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Topics names one test's topics.
type Topics struct {
	Commands, Events, Conflicts string
}

// Produce sends records synchronously and fails the test on any error.
func Produce(t testing.TB, brokers []string, records ...*kgo.Record) {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatalf("create producer: %v", err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := client.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("produce %d records: %v", len(records), err)
	}
}

// CommandRecord encodes a command as a record keyed by its aggregate ID.
func CommandRecord(t testing.TB, topic string, cmd commands.Command) *kgo.Record {
	t.Helper()
	value, err := cmd.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(cmd.AggregateID), Value: value}
}

// Outcome is what became of one command, as read from the output topics.
type Outcome struct {
	Events    []events.Event
	Conflicts []events.Conflict
}

// Collector follows the events and conflicts topics with read_committed and
// groups what it reads by command ID.
type Collector struct {
	t      testing.TB
	client *kgo.Client
	mu     sync.Mutex
	byID   map[string]*Outcome
	// bySource holds conflicts without a command ID (invalid records), by
	// the command record's offset.
	noID    []events.Conflict
	changed chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
}

// Collect starts a Collector; it stops when the test ends.
func Collect(t testing.TB, brokers []string, topics Topics) *Collector {
	t.Helper()
	client, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topics.Events, topics.Conflicts),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("create outcome consumer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Collector{t: t, client: client, byID: make(map[string]*Outcome), changed: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go c.run(ctx, topics)
	t.Cleanup(c.stop)
	return c
}

func (c *Collector) stop() {
	c.cancel()
	<-c.done
	c.client.Close()
}

func (c *Collector) run(ctx context.Context, topics Topics) {
	defer close(c.done)
	for {
		fetches := c.client.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			c.t.Logf("outcome consumer: %s/%d: %v", topic, partition, err)
		})
		c.mu.Lock()
		fetches.EachRecord(func(rec *kgo.Record) {
			switch rec.Topic {
			case topics.Events:
				var e events.Event
				if err := json.Unmarshal(rec.Value, &e); err != nil {
					c.t.Errorf("event at %d/%d does not decode: %v", rec.Partition, rec.Offset, err)
					return
				}
				c.outcome(e.CommandID).Events = append(c.outcome(e.CommandID).Events, e)
			case topics.Conflicts:
				var conflict events.Conflict
				if err := json.Unmarshal(rec.Value, &conflict); err != nil {
					c.t.Errorf("conflict at %d/%d does not decode: %v", rec.Partition, rec.Offset, err)
					return
				}
				if conflict.CommandID == "" {
					c.noID = append(c.noID, conflict)
					return
				}
				c.outcome(conflict.CommandID).Conflicts = append(c.outcome(conflict.CommandID).Conflicts, conflict)
			}
		})
		c.mu.Unlock()
		select {
		case c.changed <- struct{}{}:
		default:
		}
	}
}

func (c *Collector) outcome(commandID string) *Outcome {
	o, ok := c.byID[commandID]
	if !ok {
		o = &Outcome{}
		c.byID[commandID] = o
	}
	return o
}

// Wait blocks until ready reports true over the outcomes read so far, or
// fails the test after timeout.
func (c *Collector) Wait(timeout time.Duration, ready func(byID map[string]*Outcome, noID []events.Conflict) bool) {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		ok := ready(c.byID, c.noID)
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.changed:
		case <-time.After(500 * time.Millisecond):
		case <-deadline:
			c.mu.Lock()
			n := len(c.byID)
			c.mu.Unlock()
			c.t.Fatalf("outcomes not complete after %v (%d command IDs seen)", timeout, n)
		}
	}
}

// WaitFor waits until every command ID has at least one outcome and returns
// a copy of their outcomes.
func (c *Collector) WaitFor(timeout time.Duration, commandIDs ...string) map[string]Outcome {
	c.t.Helper()
	c.Wait(timeout, func(byID map[string]*Outcome, _ []events.Conflict) bool {
		for _, id := range commandIDs {
			o, ok := byID[id]
			if !ok || len(o.Events)+len(o.Conflicts) == 0 {
				return false
			}
		}
		return true
	})
	return c.Snapshot()
}

// Snapshot returns a copy of every outcome read so far.
func (c *Collector) Snapshot() map[string]Outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Outcome, len(c.byID))
	for id, o := range c.byID {
		out[id] = Outcome{Events: append([]events.Event(nil), o.Events...), Conflicts: append([]events.Conflict(nil), o.Conflicts...)}
	}
	return out
}

// NoIDConflicts returns the conflicts read so far that carry no command ID.
func (c *Collector) NoIDConflicts() []events.Conflict {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]events.Conflict(nil), c.noID...)
}

// KeyPartition returns the partition Kafka's default partitioner (murmur2,
// as franz-go's and the Java client's) puts a record key on, of partitions.
// Workers refuse a command record on any other partition.
func KeyPartition(key string, partitions int32) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic("").Partition(&kgo.Record{Key: []byte(key)}, int(partitions)))
}

// AggregateOn returns an aggregate ID starting with prefix whose records
// belong on partition, of partitions.
func AggregateOn(prefix string, partition, partitions int32) string {
	for i := 0; ; i++ {
		id := prefix + "-" + strconv.Itoa(i)
		if KeyPartition(id, partitions) == partition {
			return id
		}
	}
}
