package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
)

// collector reads the events and conflicts topics as a read_committed
// consumer would, and times each command's first outcome against the moment
// its record was produced.
type collector struct {
	client   *kgo.Client
	w        *workload
	clock    *clock
	produced []atomic.Int64 // nanoseconds on clock when command seq was produced; 0 before
	eventsTopic,
	conflictsTopic string

	mu        sync.Mutex
	seen      []bool
	latency   *Histogram
	byKind    map[string]int64
	first     time.Duration // clock time of the first outcome
	last      time.Duration
	outcomes  int64 // distinct commands with an outcome
	extra     int64 // outcome records beyond a command's first (must stay 0)
	mismatch  int64 // outcomes other than the one the generator expects (must stay 0)
	foreign   int64 // records not of this workload (warm-up commands)
	warmups   int64
	reached   []reachedAt // clock times at which outcome counts were reached, for the windowed rate
	doneCh    chan struct{}
	warmCh    chan struct{}
	wantWarm  int64
	closeOnce sync.Once
	stopped   chan struct{}
	// observe, when set, is told each command's first outcome: its seq,
	// when it was produced (0 if unknown) and when it was read. It runs
	// with mu held.
	observe func(seq int, produced, read time.Duration)
}

// reachedAt records when the collector had seen a number of outcomes.
type reachedAt struct {
	outcomes int64
	at       time.Duration
}

func newCollector(brokers []string, securityOpts []kgo.Opt, w *workload, clk *clock, eventsTopic, conflictsTopic string, warmups int, maxWait time.Duration) (*collector, error) {
	client, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(eventsTopic, conflictsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(maxWait),
		kgo.FetchMaxBytes(64 << 20),
		kgo.FetchMaxPartitionBytes(8 << 20),
	}, securityOpts...)...)
	if err != nil {
		return nil, errors.Wrap(err, "create the outcome reader")
	}
	return &collector{
		client:         client,
		w:              w,
		clock:          clk,
		produced:       make([]atomic.Int64, len(w.values)),
		eventsTopic:    eventsTopic,
		conflictsTopic: conflictsTopic,
		seen:           make([]bool, len(w.values)),
		latency:        NewHistogram(),
		byKind:         make(map[string]int64),
		doneCh:         make(chan struct{}),
		warmCh:         make(chan struct{}),
		wantWarm:       int64(warmups),
		stopped:        make(chan struct{}),
	}, nil
}

// markProduced notes that command seq was handed to the producer at t.
func (c *collector) markProduced(seq int, t time.Duration) {
	c.produced[seq].Store(int64(t))
}

func (c *collector) run(ctx context.Context) {
	defer close(c.stopped)
	if c.wantWarm == 0 {
		close(c.warmCh)
	}
	for {
		fetches := c.client.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		now := c.clock.now()
		c.mu.Lock()
		fetches.EachRecord(func(rec *kgo.Record) { c.record(rec, now) })
		c.mu.Unlock()
	}
}

func (c *collector) record(rec *kgo.Record, now time.Duration) {
	var commandID, ceType []byte
	for _, h := range rec.Headers {
		switch h.Key {
		case events.HeaderCommandID:
			commandID = h.Value
		case events.HeaderCEType:
			ceType = h.Value
		}
	}
	seq := c.w.seqOf(commandID)
	if seq < 0 {
		c.foreign++
		if len(commandID) > 0 && string(commandID[:min(len(commandID), len(warmupPrefix))]) == warmupPrefix {
			c.warmups++
			if c.warmups == c.wantWarm {
				close(c.warmCh)
			}
		}
		return
	}
	if c.seen[seq] {
		c.extra++
		return
	}
	c.seen[seq] = true
	kind := "applied"
	if rec.Topic == c.conflictsTopic {
		kind = conflictReason(rec.Value, ceType)
	}
	c.byKind[kind]++
	switch {
	case kind == "applied" && c.w.expected[seq] == expectApplied:
	case kind == string(events.ReasonVersionConflict) && c.w.expected[seq] == expectVersionConflict:
	default:
		c.mismatch++
	}
	produced := time.Duration(c.produced[seq].Load())
	if produced > 0 {
		c.latency.Record(now - produced)
	}
	if c.observe != nil {
		c.observe(seq, produced, now)
	}
	if c.outcomes == 0 {
		c.first = now
	}
	c.last = now
	c.outcomes++
	if len(c.reached) == 0 || c.reached[len(c.reached)-1].at != now {
		c.reached = append(c.reached, reachedAt{outcomes: c.outcomes, at: now})
	} else {
		c.reached[len(c.reached)-1].outcomes = c.outcomes
	}
	if c.outcomes == int64(len(c.w.values)) {
		c.closeOnce.Do(func() { close(c.doneCh) })
	}
}

// progress returns how many commands have an outcome.
func (c *collector) progress() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.outcomes
}

func (c *collector) close() {
	c.client.Close()
	<-c.stopped
}

// windowRate is the outcome rate between the moments the lower and upper
// shares of all outcomes had arrived: the steady rate without the ramp-up
// and the tail.
func (c *collector) windowRate(lower, upper float64) float64 {
	total := int64(len(c.w.values))
	lo, hi := int64(lower*float64(total)), int64(upper*float64(total))
	var loAt, hiAt reachedAt
	for _, r := range c.reached {
		if loAt.at == 0 && r.outcomes >= lo {
			loAt = r
		}
		if r.outcomes >= hi {
			hiAt = r
			break
		}
	}
	if hiAt.at <= loAt.at {
		return 0
	}
	return float64(hiAt.outcomes-loAt.outcomes) / (hiAt.at - loAt.at).Seconds()
}

// longestPause is the longest time between two consecutive fetches that
// brought outcomes, and when (after the first outcome) it began.
func (c *collector) longestPause() (pause, at time.Duration) {
	for i := 1; i < len(c.reached); i++ {
		if d := c.reached[i].at - c.reached[i-1].at; d > pause {
			pause, at = d, c.reached[i-1].at-c.first
		}
	}
	return pause, at
}

// clock is a monotonic clock from the start of a run.
type clock struct{ start time.Time }

func (c *clock) now() time.Duration { return time.Since(c.start) }

// conflictReason returns a conflict record's reason: from its CloudEvents
// type header when it has one (the record's JSON, with its eventsSince, is
// not decoded then: the reader must keep up with the workers), else from
// the record's value; "undecodable" when neither says.
func conflictReason(value, ceType []byte) string {
	if reason, ok := bytes.CutPrefix(ceType, []byte(events.CloudEventsConflictTypePrefix)); ok && len(reason) > 0 {
		return string(reason)
	}
	var conflict struct {
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(value, &conflict); err != nil || conflict.Reason == "" {
		return "undecodable"
	}
	return conflict.Reason
}
