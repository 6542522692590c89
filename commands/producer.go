package commands

import (
	"context"
	"sync"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/internal/kzap"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
	"go.uber.org/zap"
)

// ProducerConfig configures a Producer. Zero fields take the defaults noted.
type ProducerConfig struct {
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// CommandsTopic receives the commands. default: "commands"
	CommandsTopic string
	// EventsTopic is followed for the outcomes of SendAndWait.
	// default: "events"
	EventsTopic string
	// ConflictsTopic is followed for the outcomes of SendAndWait.
	// default: "conflicts"
	ConflictsTopic string
	// Linger is how long a command waits for others to share its batch.
	// Longer raises the throughput of bulk sends and the latency of each.
	// default: 5ms
	Linger time.Duration
	// MaxBufferedRecords bounds the commands buffered and in flight;
	// SendAsync blocks (until its context ends) while the buffer is full.
	// default: 10000
	MaxBufferedRecords int
	// MaxRecordBytes is the largest encoded command sent; larger ones are
	// refused as invalid before they reach Kafka. Keep it at the workers'
	// --max-record-bytes. default: DefaultMaxRecordBytes (1 MiB)
	MaxRecordBytes int
	// FollowFromStart starts following the events and conflicts topics
	// when the Producer is created, instead of at the first SendAndWait,
	// so that the first call does not pay for it. default: false
	FollowFromStart bool
	// OnConflict is the onConflict sent with every command that leaves its
	// own empty: "" (strict, the worker's default) or OnConflictRebase to
	// let every stale command whose handler declared its dependencies be
	// decided again on the current state. default: ""
	OnConflict string
	// Logger receives the Producer's warnings. default: zap.NewNop()
	Logger *zap.Logger
	// KafkaOptions are added to the options of both Kafka clients (the
	// producing one and the follower), after the Producer's own.
	KafkaOptions []kgo.Opt
	// Propagator writes the trace context of the ctx given to Send,
	// SendAsync or SendAndWait into the command record's headers; the
	// worker carries them on to the command's events and conflict record.
	// Nothing is written when ctx holds no span. Only the propagation API
	// is needed here: the span comes from whatever tracer the caller uses.
	// default: propagation.TraceContext{} (W3C traceparent, tracestate)
	Propagator propagation.TextMapPropagator
}

func (c *ProducerConfig) setDefaults() {
	events.SetDefaultTopics(&c.CommandsTopic, &c.EventsTopic, &c.ConflictsTopic)
	if c.Linger <= 0 {
		c.Linger = 5 * time.Millisecond
	}
	if c.MaxBufferedRecords <= 0 {
		c.MaxBufferedRecords = 10000
	}
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Propagator == nil {
		c.Propagator = propagation.TraceContext{}
	}
}

// Validate reports every problem of the configuration at once.
func (c *ProducerConfig) Validate() error {
	var problems []error
	if len(c.Brokers) == 0 {
		problems = append(problems, errors.New("no Kafka brokers: set Brokers (--brokers / ARBITER_BROKERS)"))
	}
	if err := events.ValidateTopics(c.CommandsTopic, c.EventsTopic, c.ConflictsTopic); err != nil {
		problems = append(problems, err)
	}
	switch c.OnConflict {
	case "", OnConflictStrict, OnConflictRebase:
	default:
		problems = append(problems, errors.Newf("OnConflict %q is not valid: use %q, %q or leave it empty", c.OnConflict, OnConflictStrict, OnConflictRebase))
	}
	return errors.Join(problems...)
}

// Producer sends commands to the commands topic and, for SendAndWait,
// learns their outcomes from the events and conflicts topics. It is safe for
// concurrent use; create one per process and share it.
//
// Records are keyed by the aggregate ID and partitioned by franz-go's default
// partitioner, which hashes keys with murmur2 as the Java client does: a Go
// service, a Java service and the arbiter CLI put one aggregate's commands
// on the same partition, so they are decided in the order produced.
// Producing is idempotent (franz-go's default): a retry inside the client
// never writes a command twice.
type Producer struct {
	cfg    ProducerConfig
	client *kgo.Client

	mu       sync.Mutex
	follower *follower // nil until the first SendAndWait (or FollowFromStart)
	closed   bool
}

// NewProducer returns a Producer for the configuration. It does not wait for
// Kafka to answer, unless FollowFromStart is set.
func NewProducer(ctx context.Context, cfg ProducerConfig) (*Producer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, errors.Wrap(err, "producer configuration")
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.DefaultProduceTopic(cfg.CommandsTopic),
		kgo.ProducerLinger(cfg.Linger),
		kgo.MaxBufferedRecords(cfg.MaxBufferedRecords),
		kgo.ProducerBatchMaxBytes(int32(max(cfg.MaxRecordBytes+4096, 1<<20))),
		kgo.WithLogger(kzap.New(cfg.Logger.Named("kafka"))),
		kgo.ClientID(defaultClientID),
	}, cfg.KafkaOptions...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, errors.Wrap(err, "create the Kafka producer")
	}
	p := &Producer{cfg: cfg, client: client}
	if cfg.FollowFromStart {
		if _, err := p.ensureFollower(ctx); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

// record validates and encodes a command.
func (p *Producer) record(cmd Command) (*kgo.Record, error) {
	if cmd.OnConflict == "" {
		cmd.OnConflict = p.cfg.OnConflict
	}
	if err := cmd.Validate(); err != nil {
		return nil, err
	}
	value, err := cmd.Encode()
	if err != nil {
		return nil, err
	}
	if len(value) > p.cfg.MaxRecordBytes {
		return nil, &InvalidError{CommandID: cmd.ID, AggregateID: cmd.AggregateID,
			Reason: errors.Newf("the command is %d bytes encoded, over the %d-byte limit", len(value), p.cfg.MaxRecordBytes).Error()}
	}
	return &kgo.Record{Key: []byte(cmd.AggregateID), Value: value}, nil
}

// Send validates a command and sends it, returning once Kafka has
// acknowledged it (all in-sync replicas have it). An invalid command is
// refused with an *InvalidError and not sent. When Send returns a context
// error the command may still have been written: resend it with the same ID
// (a resend of a decided command only gets a duplicate record).
func (p *Producer) Send(ctx context.Context, cmd Command) error {
	done := make(chan error, 1)
	p.SendAsync(ctx, cmd, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return errors.Wrapf(ctx.Err(), "send command %s for aggregate %s (it may still be written; resending the same ID is safe)", cmd.ID, cmd.AggregateID)
	}
}

// SendAsync validates a command and buffers it for sending; done is called
// exactly once, with nil once Kafka acknowledged the command or with the
// error. It blocks only while the buffer is full (MaxBufferedRecords), until
// ctx ends. done runs on a goroutine of the Kafka client: keep it short, and
// never call Flush or Close from it. Commands for one aggregate sent from one
// goroutine are written in the order sent.
func (p *Producer) SendAsync(ctx context.Context, cmd Command, done func(error)) {
	rec, err := p.record(cmd)
	if err != nil {
		done(err)
		return
	}
	p.produce(ctx, cmd, rec, done)
}

func (p *Producer) produce(ctx context.Context, cmd Command, rec *kgo.Record, done func(error)) {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		done(errors.Wrapf(ErrClosed, "send command %s for aggregate %s", cmd.ID, cmd.AggregateID))
		return
	}
	p.cfg.Propagator.Inject(ctx, events.HeaderCarrier{Record: rec})
	p.client.Produce(ctx, rec, func(_ *kgo.Record, err error) {
		if err != nil {
			err = errors.Wrapf(err, "send command %s for aggregate %s to topic %s", cmd.ID, cmd.AggregateID, p.cfg.CommandsTopic)
		}
		done(err)
	})
}

// Flush waits until every buffered command has been acknowledged or failed
// (their done callbacks have been called), or ctx ends.
func (p *Producer) Flush(ctx context.Context) error {
	return errors.Wrap(p.client.Flush(ctx), "flush buffered commands")
}

// SendAndWait sends a command and waits for its outcome: the Applied outcome
// (its version and events), or an error. A command that was not applied
// gives a *ConflictError matching ErrVersionConflict, ErrRejected,
// ErrInvalid or ErrUnknownType. A resend of a command ID already applied
// gives the original's Applied outcome with Duplicate set, so resending
// after a timeout is safe. When ctx ends first the error wraps ctx.Err():
// the command may still be decided; resend it with the same ID to learn its
// outcome.
//
// The outcome is read from the events and conflicts topics (read_committed)
// by one follower shared by every call on the Producer, started at the
// first call from the topics' end offsets; it only sees outcomes of
// commands sent after it started.
func (p *Producer) SendAndWait(ctx context.Context, cmd Command) (Applied, error) {
	type result struct {
		applied Applied
		err     error
	}
	done := make(chan result, 1)
	p.SendAndWaitAsync(ctx, cmd, func(applied Applied, err error) { done <- result{applied, err} })
	r := <-done
	return r.applied, r.err
}

// SendAndWaitAsync is SendAndWait for many commands at once: it returns once
// the command is buffered for sending, and done is called exactly once with
// the outcome, the send error, or the wrapped ctx.Err() when ctx ends first.
// It blocks while the follower starts (at the first call) and while the
// send buffer is full. done runs on the follower's or the Kafka client's
// goroutine: keep it short, and never call Flush or Close from it.
func (p *Producer) SendAndWaitAsync(ctx context.Context, cmd Command, done func(Applied, error)) {
	rec, err := p.record(cmd)
	if err != nil {
		done(Applied{}, err)
		return
	}
	f, err := p.ensureFollower(ctx)
	if err != nil {
		done(Applied{}, err)
		return
	}
	// The waiter is registered before the command is produced, so its
	// outcome cannot be read before anyone waits for it.
	w := f.register(ctx, cmd.AggregateID, cmd.ID, done)
	p.produce(ctx, cmd, rec, func(err error) {
		if err != nil {
			f.fail(w, err)
		}
	})
}

// ensureFollower starts the follower once; a start that failed is tried
// again by the next call.
func (p *Producer) ensureFollower(ctx context.Context) (*follower, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if p.follower != nil {
		return p.follower, nil
	}
	f, err := startFollower(ctx, p.cfg)
	if err != nil {
		return nil, err
	}
	p.follower = f
	return f, nil
}

// Close flushes what is buffered (for at most 10 seconds), stops the
// follower and closes the Kafka clients. Pending SendAndWait calls return
// ErrClosed.
func (p *Producer) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	f := p.follower
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := p.client.Flush(ctx); err != nil {
		p.cfg.Logger.Warn("closing the producer before every command was acknowledged", zap.Error(err))
	}
	cancel()
	p.client.Close()
	if f != nil {
		f.close()
	}
}

// defaultClientID names the producer's Kafka clients unless KafkaOptions
// name them otherwise (kafkaclient.Config.ClientID).
const defaultClientID = "arbiter-producer"
