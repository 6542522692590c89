// Package processor runs Arbiter workers: each polls command records from
// Kafka in a consumer group, decides them with the registered handlers
// against the versions and state snapshots in Redis, advances the versions
// with an atomic compare-and-set, and publishes the outcomes (events or
// conflict records) in a Kafka transaction together with the consumed
// offsets.
package processor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/internal/kzap"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// Config configures a Worker. Zero fields take the defaults noted.
type Config struct {
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// Group is the consumer group the workers share. default: "arbiter"
	Group string
	// CommandsTopic is consumed. default: "commands"
	CommandsTopic string
	// EventsTopic receives events. default: "events"
	EventsTopic string
	// ConflictsTopic receives conflict records. default: "conflicts"
	ConflictsTopic string
	// TransactionalIDPrefix starts the worker's transactional ID.
	// default: "arbiter"
	TransactionalIDPrefix string
	// InstanceID ends the transactional ID. Give each replica a stable,
	// unique one (a pod name) so that a restarted replica fences its dead
	// predecessor's open transaction at once instead of waiting for
	// TransactionTimeout. default: "<hostname>-<pid>-<random>"
	InstanceID string
	// MaxBatch bounds the records taken by one poll, which are decided in
	// one Redis round trip and published in one transaction. default: 2000
	MaxBatch int
	// Concurrency is how many transactional sessions the worker runs. Each
	// joins the group as a member of its own, with its own transactional
	// ID (TransactionalID, then "-2", "-3" … appended for the others), and
	// processes its share of the partitions: while one session waits for
	// Redis or for its transaction to commit, another decides
	// (docs/tuning.md measures the gain). Keep sessions × workers at or
	// below the partition count. default: 1
	Concurrency int
	// MaxRecordBytes is the size limit of a command record's value; larger
	// ones are invalid. default: 1 MiB
	MaxRecordBytes int
	// MaxEventBytes is the size limit of one encoded event; a command
	// whose handler produces a larger one is rejected. default: 900 KiB
	MaxEventBytes int
	// MaxCommandEvents bounds the events one command may append; a command
	// whose handler decides more is rejected, naming the limit.
	// default: 1000 (DefaultMaxCommandEvents)
	MaxCommandEvents int
	// MaxCommandOutcomeBytes bounds the total size of one command's outcome
	// records (values, keys and headers; metadata is copied into every
	// event): one small command must not make a worker publish gigabytes.
	// A command over it is rejected, naming the limit.
	// default: 4 MiB (DefaultMaxCommandOutcomeBytes)
	MaxCommandOutcomeBytes int
	// IsolationInterval is how long a partition whose batches fail alone,
	// again and again, for a reason tied to its records (a record the
	// broker refuses) stays paused before it is tried again; while it is,
	// the session's other partitions keep deciding, and the partition is
	// reported once per interval. default: 1m
	IsolationInterval time.Duration
	// SessionTimeout is the consumer group session timeout: how long a
	// silent worker keeps its partitions. default: 10s
	SessionTimeout time.Duration
	// TransactionTimeout is how long the broker lets a transaction stay
	// open before aborting it; a dead worker's partitions stay blocked for
	// read_committed readers until then. default: 10s
	TransactionTimeout time.Duration
	// RedisTimeout bounds each Redis round trip. default: 5s
	RedisTimeout time.Duration
	// Registry holds the command handlers. Required.
	Registry *Registry
	// Store is the Redis version store. Required.
	Store *versionstore.Store
	// Logger receives the worker's logs. default: zap.NewNop()
	Logger *zap.Logger
	// KafkaOptions are added to the client options, after Arbiter's own.
	KafkaOptions []kgo.Opt
	// SessionKafkaOptions, when set, is called for each new transactional
	// session with its transactional ID; the options it returns are added
	// after KafkaOptions. Plugins that keep one set of metrics per client
	// (kprom) go here. Options setting OnPartitionsAssigned, Revoked or
	// Lost replace the ones reporting to the Observer, checking a
	// partition taken (recovery) and resuming a partition isolated and
	// then revoked: do not set them.
	SessionKafkaOptions func(transactionalID string) []kgo.Opt
	// Hooks are called at points of the batch cycle; for tests and
	// instrumentation.
	Hooks Hooks
	// Observer is told the outcomes, timings and session states, for
	// metrics and health. default: none
	Observer Observer
	// CloudEventsSource is the ce_source header of every event and
	// conflict record. Give every worker of a group the same one: a record
	// re-published after an aborted transaction, maybe by another worker,
	// must carry the headers it was first published with.
	// default: "/arbiter/<Group>"
	CloudEventsSource string
	// Tracer traces each batch (package tracing has the OpenTelemetry
	// one). default: nil (no tracing)
	Tracer BatchTracer
}

// Hooks are optional callbacks into the batch cycle.
type Hooks struct {
	// AfterPoll is called when a poll returned records, before they are
	// decoded; with AfterBatch it brackets the processing of a batch, and
	// the hooks between mark its phases (arbiter bench times them).
	AfterPoll func(ctx context.Context, params BatchParams)
	// BeforeRedisCommit is called once a batch is decided and before its
	// versions are advanced in Redis.
	BeforeRedisCommit func(ctx context.Context, params BatchParams)
	// AfterRedisCommit is called once a batch's versions are advanced in
	// Redis and before its transaction is committed. Fault-injection tests
	// use it to stop a worker in exactly that gap.
	AfterRedisCommit func(ctx context.Context, params BatchParams)
	// BeforeEnd is called once a batch's outcome records are produced and
	// flushed into the open transaction, before it is ended.
	BeforeEnd func(ctx context.Context, params BatchParams)
	// AfterBatch is called after each batch's transaction ended.
	AfterBatch func(ctx context.Context, params BatchParams)
}

// BatchTracer traces batches. StartBatch is called once a poll returned
// records, before they are decoded; the context it returns is the one the
// batch is processed and its outcome records produced with, and end is
// called once the batch's transaction has ended, with the error that
// aborted it or ended the session, if any.
type BatchTracer interface {
	StartBatch(ctx context.Context, batch TracedBatch) (batchCtx context.Context, end func(params BatchParams, err error))
}

// TracedBatch describes a batch to a BatchTracer.
type TracedBatch struct {
	// Records are the command records; read them, do not change them.
	Records []*kgo.Record
	// CommandsTopic and Group are the worker's.
	CommandsTopic, Group string
	// TransactionalID is the session's.
	TransactionalID string
}

// BatchParams describes one batch to a hook.
type BatchParams struct {
	// Records is the number of command records in the batch.
	Records int
	// Applied, Conflicts and Replayed count the outcomes by kind.
	Applied, Conflicts, Replayed int
	// Committed is set for AfterBatch: whether the transaction committed.
	Committed bool
}

func (c *Config) setDefaults() {
	if c.Group == "" {
		c.Group = "arbiter"
	}
	if c.CloudEventsSource == "" {
		c.CloudEventsSource = "/arbiter/" + c.Group
	}
	events.SetDefaultTopics(&c.CommandsTopic, &c.EventsTopic, &c.ConflictsTopic)
	if c.TransactionalIDPrefix == "" {
		c.TransactionalIDPrefix = "arbiter"
	}
	if c.InstanceID == "" {
		c.InstanceID = defaultInstanceID()
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 2000
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = 1 << 20
	}
	if c.MaxEventBytes <= 0 {
		c.MaxEventBytes = 900 << 10
	}
	if c.MaxCommandEvents <= 0 {
		c.MaxCommandEvents = DefaultMaxCommandEvents
	}
	if c.MaxCommandOutcomeBytes <= 0 {
		c.MaxCommandOutcomeBytes = DefaultMaxCommandOutcomeBytes
	}
	if c.IsolationInterval <= 0 {
		c.IsolationInterval = time.Minute
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.TransactionTimeout <= 0 {
		c.TransactionTimeout = 10 * time.Second
	}
	if c.RedisTimeout <= 0 {
		c.RedisTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
}

// Validate reports every problem of the configuration at once.
func (c *Config) Validate() error {
	var problems []error
	if len(c.Brokers) == 0 {
		problems = append(problems, errors.New("no Kafka brokers: set Brokers (--brokers / ARBITER_BROKERS)"))
	}
	if c.Registry == nil {
		problems = append(problems, errors.New("no handler Registry"))
	}
	if c.Store == nil {
		problems = append(problems, errors.New("no version Store"))
	}
	if err := events.ValidateTopics(c.CommandsTopic, c.EventsTopic, c.ConflictsTopic); err != nil {
		problems = append(problems, err)
	}
	return errors.Join(problems...)
}

func defaultInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(suffix))
}

// Worker is one member of the worker group. Run it with Run; scale out by
// running more workers (processes) with the same Group.
type Worker struct {
	cfg     Config
	log     *zap.Logger
	decider *decider
	stats   Stats
	// producerBatchMaxBytes is the largest record batch produced, fitted to
	// the output topics by fitRecordLimits.
	producerBatchMaxBytes int
	// generation is the amnesia marker's value the worker decides under;
	// a rebuild writes a new one.
	generation atomic.Pointer[string]
	// endTransaction ends a batch's transaction with sess.End.
	// A test replaces it to report a commit that went through as not
	// committed, as franz-go does after an ambiguous EndTxn (endedUnclearly).
	endTransaction func(ctx context.Context, sess *kgo.GroupTransactSession, commit kgo.TransactionEndTry) (committed bool, err error)
}

// currentGeneration returns the marker value the worker decides under.
func (w *Worker) currentGeneration() string {
	if g := w.generation.Load(); g != nil {
		return *g
	}
	return ""
}

// lane is one of the worker's transactional sessions (Config.Concurrency).
type lane struct {
	transactionalID string
	// forget lists the commands whose outcome records can be deleted: their
	// transaction committed. Only the lane's goroutine touches it.
	forget []versionstore.CommandRef
	// aborts reports the session's aborted batches.
	aborts abortReporter
	// recovery tells a Redis that went back in time.
	recovery recovery
	// isolation narrows batches that keep failing to the partition that
	// fails.
	isolation isolation
	// commits counts the lane's committed transactions, over its sessions.
	commits int64
}

// Stats counts what a worker did; read it with Worker.Stats.
type Stats struct {
	Records, Applied, Conflicts, Replayed atomic.Int64
	Committed, Aborted                    atomic.Int64
	RedisRoundTrips                       atomic.Int64
	// AmnesiaWaits counts the times the worker stopped because Redis had
	// lost its data.
	AmnesiaWaits atomic.Int64
}

// New returns a Worker for the configuration.
func New(cfg Config) (*Worker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, errors.Wrap(err, "worker configuration")
	}
	return &Worker{
		cfg:                   cfg,
		log:                   cfg.Logger,
		producerBatchMaxBytes: defaultProducerBatchMaxBytes,
		endTransaction: func(ctx context.Context, sess *kgo.GroupTransactSession, commit kgo.TransactionEndTry) (bool, error) {
			return sess.End(ctx, commit)
		},
		decider: &decider{
			registry:           cfg.Registry,
			maxRecordBytes:     cfg.MaxRecordBytes,
			maxEventBytes:      cfg.MaxEventBytes,
			maxEvents:          cfg.MaxCommandEvents,
			maxBytes:           cfg.MaxCommandOutcomeBytes,
			eventsSinceLimit:   eventsSinceLimit(cfg.Store.Options()),
			recentPayloadBytes: cfg.Store.Options().RecentPayloadBytes,
		},
	}, nil
}

// Stats returns the worker's counters.
func (w *Worker) Stats() *Stats { return &w.stats }

// TransactionalID returns the worker's Kafka transactional ID.
func (w *Worker) TransactionalID() string {
	return w.cfg.TransactionalIDPrefix + "-" + w.cfg.InstanceID
}

func (w *Worker) newSession(l *lane) (*kgo.GroupTransactSession, error) {
	// Every publish waits for acks=all: the client is transactional, and
	// franz-go refuses a transactional client without idempotent writes and
	// idempotent writes without acks=all (kgo's config validation), whatever
	// KafkaOptions add. With min.insync.replicas 2, a committed decision is
	// on two brokers.
	opts := []kgo.Opt{
		kgo.SeedBrokers(w.cfg.Brokers...),
		kgo.TransactionalID(l.transactionalID),
		kgo.TransactionTimeout(w.cfg.TransactionTimeout),
		kgo.ConsumerGroup(w.cfg.Group),
		kgo.ConsumeTopics(w.cfg.CommandsTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.SessionTimeout(w.cfg.SessionTimeout),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// A partition resumed after isolation (isolation.go) is fetched
		// once the fetch in flight returns: within a second, not franz-go's
		// default five.
		kgo.FetchMaxWait(time.Second),
		kgo.AdjustFetchOffsetsFn(w.startAfterDecisions),
		kgo.ProducerBatchMaxBytes(int32(w.producerBatchMaxBytes)),
		kgo.WithLogger(kzap.New(w.log.Named("kafka"))),
		kgo.ClientID(defaultClientID),
	}
	opts = append(opts, w.groupObserverOpts(l.transactionalID, l.recovery.onAssigned, l.isolation.onChanged)...)
	opts = append(opts, w.cfg.KafkaOptions...)
	if w.cfg.SessionKafkaOptions != nil {
		opts = append(opts, w.cfg.SessionKafkaOptions(l.transactionalID)...)
	}
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return nil, errors.Wrap(err, "create the Kafka transactional session")
	}
	return sess, nil
}

// Run processes commands until ctx is cancelled or a fatal error occurs.
// On cancellation it lets the batch in hand finish (commit or abort), leaves
// the group and returns nil.
func (w *Worker) Run(ctx context.Context) error {
	w.log.Info("worker starting",
		zap.Strings("brokers", w.cfg.Brokers),
		zap.String("group", w.cfg.Group),
		zap.String("commands_topic", w.cfg.CommandsTopic),
		zap.String("events_topic", w.cfg.EventsTopic),
		zap.String("conflicts_topic", w.cfg.ConflictsTopic),
		zap.String("transactional_id", w.TransactionalID()),
		zap.Int("max_batch", w.cfg.MaxBatch),
		zap.Int("concurrency", w.cfg.Concurrency),
	)
	if err := w.ensureInitialized(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // shutting down while waiting
		}
		return err
	}
	if err := w.inspectTopics(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	w.fitRecordLimits(ctx)
	err := w.runLanes(ctx)
	w.log.Info("worker stopped",
		zap.Int64("records", w.stats.Records.Load()),
		zap.Int64("applied", w.stats.Applied.Load()),
		zap.Int64("conflicts", w.stats.Conflicts.Load()),
		zap.Int64("replayed", w.stats.Replayed.Load()),
		zap.Int64("transactions_committed", w.stats.Committed.Load()),
		zap.Int64("transactions_aborted", w.stats.Aborted.Load()),
		zap.Int64("redis_round_trips", w.stats.RedisRoundTrips.Load()))
	return err
}

// runLanes runs the worker's sessions until ctx ends or one of them fails
// for good, which stops the others.
func (w *Worker) runLanes(ctx context.Context) error {
	if w.cfg.Concurrency == 1 {
		return w.runLane(ctx, &lane{transactionalID: w.TransactionalID()})
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, w.cfg.Concurrency)
	var wg sync.WaitGroup
	for n := range w.cfg.Concurrency {
		l := &lane{transactionalID: w.TransactionalID()}
		if n > 0 {
			l.transactionalID += "-" + strconv.Itoa(n+1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[n] = w.runLane(ctx, l); errs[n] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// runLane runs one transactional session, replacing it after errors, until
// ctx ends.
func (w *Worker) runLane(ctx context.Context, l *lane) error {
	backoff := newBackoff(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		w.cfg.Observer.ObserveSession(SessionObservation{TransactionalID: l.transactionalID, State: SessionJoining})
		sess, err := w.newSession(l)
		if err != nil {
			return err
		}
		commitsBefore := l.commits
		err = w.runSession(ctx, sess, l)
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		sess.Client().LeaveGroupContext(closeCtx)
		if raiseErr := w.cfg.Store.RaiseCommitted(closeCtx, l.recovery.committed, l.recovery.committedFloors); raiseErr != nil {
			w.log.Warn("cannot record the committed watermarks in redis", errorField(raiseErr))
		} else {
			clear(l.recovery.committed)
			clear(l.recovery.committedFloors)
		}
		cancel()
		sess.Close()
		w.cfg.Observer.ObserveSession(SessionObservation{TransactionalID: l.transactionalID, State: SessionClosed})
		if err == nil {
			break
		}
		// Any error ending a transaction leaves the client's state unknown:
		// a new client rejoins the group and fetches the committed offsets
		// from the broker. A session that committed worked: the wait
		// before the next starts short again.
		if l.commits > commitsBefore {
			backoff.reset()
		}
		wait := backoff.next()
		w.log.Warn("transactional session failed; rejoining with a new client", errorField(err), zap.Duration("after", wait),
			zap.String("transactional_id", l.transactionalID))
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

// runSession polls and processes batches on one session. It returns nil when
// ctx is cancelled and an error when the session must be replaced.
func (w *Worker) runSession(ctx context.Context, sess *kgo.GroupTransactSession, l *lane) error {
	backoff := newBackoff(50*time.Millisecond, 5*time.Second)
	// The partitions this session gets are checked again when first seen.
	l.recovery.checked = make(map[int32]bool)
	// A new client has no partition paused.
	l.isolation.reset()
	iso := isolator{isolation: &l.isolation, w: w, client: sess.Client(), lane: l.transactionalID, now: time.Now}
	for {
		// A stuck partition is tried again once its interval is over, even
		// when the others have nothing to poll.
		pollCtx, cancelPoll := pollContext(ctx, iso.beforePoll())
		fetches := sess.PollRecords(pollCtx, w.cfg.MaxBatch)
		cancelPoll()
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		var fetchErr error
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				w.log.Warn("fetch error", zap.String("topic", topic), zap.Int32("partition", partition), errorField(err))
				fetchErr = err
			}
		})
		records := fetches.Records()
		if len(records) == 0 {
			if fetchErr != nil {
				time.Sleep(backoff.next())
			}
			continue
		}
		polled := time.Now()
		// The batch in hand is finished even when shutdown begins.
		batchCtx := context.WithoutCancel(ctx)
		endTrace := func(BatchParams, error) {}
		if w.cfg.Tracer != nil {
			batchCtx, endTrace = w.cfg.Tracer.StartBatch(batchCtx, TracedBatch{
				Records: records, CommandsTopic: w.cfg.CommandsTopic, Group: w.cfg.Group, TransactionalID: l.transactionalID,
			})
		}
		if w.cfg.Hooks.AfterPoll != nil {
			w.cfg.Hooks.AfterPoll(batchCtx, BatchParams{Records: len(records)})
		}
		if err := sess.Begin(); err != nil {
			endTrace(BatchParams{Records: len(records)}, err)
			return errors.Wrap(err, "begin transaction")
		}
		if generation := w.currentGeneration(); l.recovery.floors == nil || l.recovery.generation != generation {
			l.recovery.reset(generation) // Redis was rebuilt: what was learnt of it is void
		}
		b := &batch{records: records, now: time.Now().UTC().Truncate(time.Millisecond), produceStart: time.Now()}
		params, produceErr := w.processBatch(batchCtx, sess, l, b)
		commit := kgo.TryCommit
		if produceErr != nil {
			commit = kgo.TryAbort
			level := zap.WarnLevel
			if errors.Is(produceErr, versionstore.ErrFenced) {
				level = zap.InfoLevel
			}
			l.aborts.aborted(w.log, level, records, produceErr)
		}
		endCtx, cancel := context.WithTimeout(batchCtx, w.cfg.TransactionTimeout+w.cfg.SessionTimeout)
		committed, err := w.endTransaction(endCtx, sess, commit)
		cancel()
		params.Committed = committed
		switch {
		case committed && err == nil:
			iso.committed(batchPartitions(records))
		case produceErr != nil && !committed:
			iso.failed(batchPartitions(records), produceErr)
		}
		if committed && err == nil {
			l.commits++
			l.aborts.committed(w.log)
			// The outcome records are no longer needed for a replay; the
			// next batch's load deletes them.
			l.forget = b.forgettable(l.forget)
			w.noteCommitted(l, b)
		}
		if committed {
			w.stats.Committed.Add(1)
			w.stats.Records.Add(int64(params.Records))
			w.stats.Applied.Add(int64(params.Applied))
			w.stats.Conflicts.Add(int64(params.Conflicts))
			w.stats.Replayed.Add(int64(params.Replayed))
		} else {
			w.stats.Aborted.Add(1)
		}
		endTrace(params, errors.CombineErrors(produceErr, err))
		if w.cfg.Hooks.AfterBatch != nil {
			w.cfg.Hooks.AfterBatch(batchCtx, params)
		}
		w.observeBatch(l, b, params, polled, produceErr, committed, err)
		if err != nil {
			return errors.Wrapf(err, "end transaction of a %d-record batch", len(records))
		}
		if endedUnclearly(commit, committed, err) {
			checkCtx, cancel := context.WithTimeout(batchCtx, w.cfg.TransactionTimeout+w.cfg.SessionTimeout)
			onBroker, checkErr := w.committedOnBroker(checkCtx, sess, records)
			cancel()
			if checkErr != nil {
				return errors.Wrapf(checkErr, "the transaction of a %d-record batch did not clearly commit and the broker could not say; a new session fetches the committed offsets from the broker", len(records))
			}
			if onBroker {
				return errors.Newf("the transaction of a %d-record batch was reported as not committed but the broker holds its offsets; a new session fetches them", len(records))
			}
			w.log.Info("the transaction was aborted (a partition was taken from this member during it, or the group was rebalancing); its records are decided again",
				zap.Int("records", len(records)), zap.String("transactional_id", l.transactionalID))
		}
		switch {
		case errors.Is(produceErr, versionstore.ErrAmnesia):
			w.fenceAfterRollback(batchCtx, produceErr)
			// Holding the partitions while waiting keeps other workers from
			// deciding against the empty Redis too; the group may still
			// move them if the wait outlasts the rebalance timeout, and
			// their new owner waits the same way.
			w.waitForRebuild(ctx, l.transactionalID, produceErr)
		case produceErr != nil:
			time.Sleep(backoff.next())
		default:
			backoff.reset()
		}
	}
}

// processBatch takes a batch through its stages: load what its commands
// need from Redis, decide them, commit the new versions to Redis, and
// publish the outcome records into the open transaction. An error means the
// transaction must be aborted.
func (w *Worker) processBatch(ctx context.Context, sess *kgo.GroupTransactSession, l *lane, b *batch) (BatchParams, error) {
	params := BatchParams{Records: len(b.records)}
	if err := w.checkTaken(ctx, l, b); err != nil {
		return params, err
	}
	w.decider.decode(b)
	if aggregateIDs, refs := b.loadRequest(); len(aggregateIDs) > 0 {
		loaded, err := w.load(ctx, l, b, aggregateIDs, refs)
		if err != nil {
			return params, err
		}
		if err := w.decider.decide(ctx, b, loaded.aggregates, loaded.recorded, loaded.replays); err != nil {
			return params, err
		}
		w.setWatermarks(l, b)
		if err := w.commitToRedis(ctx, b); err != nil {
			return params, err
		}
	}
	b.count(&params)
	if w.cfg.Hooks.AfterRedisCommit != nil {
		w.cfg.Hooks.AfterRedisCommit(ctx, params)
	}
	return params, w.publish(ctx, sess, b, params)
}

// The values of the events.HeaderKind header, shared by every record.
var (
	headerKindEvent    = []byte(events.KindEvent)
	headerKindConflict = []byte(events.KindConflict)
)

// backoff is a capped exponential backoff.
type backoff struct {
	min, max, current time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max} }

func (b *backoff) next() time.Duration {
	if b.current == 0 {
		b.current = b.min
	} else {
		b.current = min(2*b.current, b.max)
	}
	return b.current
}

func (b *backoff) reset() { b.current = 0 }

// defaultClientID names the worker's Kafka clients unless KafkaOptions name
// them otherwise (kafkaclient.Config.ClientID).
const defaultClientID = "arbiter-worker"
