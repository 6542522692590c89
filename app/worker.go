package app

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/metrics"
	"github.com/arbiter-cqrs/arbiter/kafkaclient"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/tracing"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// testHookExitCode is the exit code of a worker that a fault-injection hook
// ended (arbiter_faults builds only).
const testHookExitCode = 86

type workerFlags struct {
	commonFlags
	group                 string
	transactionalIDPrefix string
	instanceID            string
	maxBatch              int
	concurrency           int
	maxRecordBytes        int
	maxCommandEvents      int
	maxCommandBytes       int
	sessionTimeout        time.Duration
	transactionTimeout    time.Duration
	outcomeTTL            time.Duration
	dedupeTTL             time.Duration
	recentEvents          int
	recentPayloadBytes    int
	embeddedKafka         string
	embeddedRedis         string
	dataDir               string
	partitions            int
	httpAddr              string
	pprof                 bool
	stuckAfter            time.Duration
	cloudEventsSource     string
	isolationInterval     time.Duration
	balancer              string
}

// storeOptions are the version store's options the flags set.
func (f *workerFlags) storeOptions() versionstore.Options {
	return versionstore.Options{OutcomeTTL: f.outcomeTTL, DedupeTTL: f.dedupeTTL, RecentEvents: f.recentEvents, RecentPayloadBytes: f.recentPayloadBytes}
}

func defaultDataDir() string {
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "arbiter", "embedded")
	}
	return filepath.Join(os.TempDir(), "arbiter-embedded")
}

func (c *cli) workerCommand() *cobra.Command {
	var f workerFlags
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "run a worker; with neither --brokers nor --redis, on an embedded Kafka and Redis for development",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// ARBITER_HTTP_ADDR set but empty turns the listener off,
			// where an empty variable otherwise counts as unset.
			if value, set := c.lookupEnv("ARBITER_HTTP_ADDR"); set && value == "" && !cmd.Flags().Changed("http-addr") {
				f.httpAddr = ""
			}
			return c.run(func(ctx context.Context, _ []string) error {
				return c.runWorker(ctx, &f)
			})(cmd, args)
		},
	}
	fs := cmd.Flags()
	f.register(fs)
	bind(fs, &f.group, "group", "ARBITER_GROUP", "arbiter", "consumer group of the workers")
	bind(fs, &f.transactionalIDPrefix, "transactional-id-prefix", "ARBITER_TRANSACTIONAL_ID_PREFIX", "arbiter", "prefix of the worker's Kafka transactional ID")
	bind(fs, &f.instanceID, "instance-id", "ARBITER_INSTANCE_ID", "", "stable unique ID of this replica, e.g. the pod name; a restart then fences its predecessor's open transaction at once (default <host>-<pid>-<random>)")
	bind(fs, &f.maxBatch, "max-batch", "ARBITER_MAX_BATCH", 2000, "most records per poll, Redis round trip and transaction")
	bind(fs, &f.concurrency, "concurrency", "ARBITER_CONCURRENCY", 1, "transactional sessions of this worker, each a group member with its share of the partitions")
	bind(fs, &f.maxRecordBytes, "max-record-bytes", "ARBITER_MAX_RECORD_BYTES", 1<<20, "size limit of a command record; larger ones are invalid")
	bind(fs, &f.maxCommandEvents, "max-command-events", "ARBITER_MAX_COMMAND_EVENTS", processor.DefaultMaxCommandEvents, "most events one command may append; more is rejected")
	bind(fs, &f.maxCommandBytes, "max-command-outcome-bytes", "ARBITER_MAX_COMMAND_OUTCOME_BYTES", processor.DefaultMaxCommandOutcomeBytes, "most bytes of outcome records one command may make, metadata counted per event; more is rejected")
	bind(fs, &f.sessionTimeout, "session-timeout", "ARBITER_SESSION_TIMEOUT", 10*time.Second, "consumer group session timeout")
	bind(fs, &f.transactionTimeout, "transaction-timeout", "ARBITER_TRANSACTION_TIMEOUT", 10*time.Second, "Kafka transaction timeout")
	bind(fs, &f.outcomeTTL, "outcome-ttl", "ARBITER_OUTCOME_TTL", 24*time.Hour, "how long an uncommitted outcome's records are kept for a replay")
	bind(fs, &f.dedupeTTL, "dedupe-ttl", "ARBITER_DEDUPE_TTL", 24*time.Hour, "how long a command ID is recognised as a duplicate")
	bind(fs, &f.recentEvents, "recent-events", "ARBITER_RECENT_EVENTS", versionstore.DefaultRecentEvents, "each aggregate's last events kept in Redis for eventsSince and rebases; -1 keeps none")
	bind(fs, &f.recentPayloadBytes, "recent-payload-bytes", "ARBITER_RECENT_PAYLOAD_BYTES", versionstore.DefaultRecentPayloadBytes, "largest event payload kept with them")
	bind(fs, &f.httpAddr, "http-addr", "ARBITER_HTTP_ADDR", metrics.DefaultAddr, "listen address of /metrics, /healthz and /readyz; empty (ARBITER_HTTP_ADDR= too) turns the listener off")
	bind(fs, &f.pprof, "pprof", "ARBITER_PPROF", false, "also serve /debug/pprof/ on --http-addr")
	bind(fs, &f.cloudEventsSource, "cloudevents-source", "ARBITER_CLOUDEVENTS_SOURCE", "", "ce_source header of every event and conflict record; the same for every worker of a group (default /arbiter/<group>)")
	bind(fs, &f.isolationInterval, "isolation-interval", "ARBITER_ISOLATION_INTERVAL", time.Minute, "how long a partition whose batches fail alone for a reason tied to its records (a record the broker refuses) stays paused, while the others keep deciding, before it is tried again; it is logged once per interval")
	bind(fs, &f.balancer, "balancer", "ARBITER_BALANCER", kafkaclient.BalancerCooperativeSticky, "consumer group balancer, the same for every worker of a group: cooperative-sticky (a rebalance stops only the partitions that move), or the eager sticky, range or roundrobin (see docs/scaling.md)")
	bind(fs, &f.stuckAfter, "stuck-after", "ARBITER_STUCK_AFTER", time.Minute, "how long a partition's batches fail without a commit before it counts as stuck (not ready)")
	bind(fs, &f.embeddedKafka, "embedded-kafka-addr", "ARBITER_EMBEDDED_KAFKA_ADDR", "127.0.0.1:9092", "address of the embedded Kafka, when neither --brokers nor --redis is given")
	bind(fs, &f.embeddedRedis, "embedded-redis-addr", "ARBITER_EMBEDDED_REDIS_ADDR", "127.0.0.1:6399", "address of the embedded Redis")
	bind(fs, &f.dataDir, "data-dir", "ARBITER_DATA_DIR", defaultDataDir(), "where the embedded Kafka keeps its data")
	bind(fs, &f.partitions, "partitions", "ARBITER_PARTITIONS", 12, "partitions of the topics the embedded Kafka creates")
	return cmd
}

func (c *cli) runWorker(ctx context.Context, f *workerFlags) error {
	stdout, stderr := c.stdout, c.stderr
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	balancer, err := kafkaclient.Balancer(f.balancer)
	if err != nil {
		return usagef("--balancer (ARBITER_BALANCER): %v", err)
	}

	registry := c.registry

	if f.brokers == "" && f.redisURL == "" {
		if err := f.standaloneOnly("the embedded development mode"); err != nil {
			return err
		}
		embedded, err := startEmbedded(ctx, embeddedConfig{
			kafkaAddr:  f.embeddedKafka,
			redisAddr:  f.embeddedRedis,
			dataDir:    f.dataDir,
			partitions: int32(f.partitions),
			topics:     []string{f.commandsTopic, f.eventsTopic, f.conflictsTopic},
			// Like 'arbiter topics create': the events are kept forever.
			topicConfigs: map[string]map[string]string{f.eventsTopic: {"retention.ms": "-1"}},
			log:          log,
		})
		if err != nil {
			return err
		}
		defer embedded.close()
		f.brokers, f.redisURL = embedded.kafkaAddr, "redis://"+embedded.redisAddr+"/0"
		store, closeStore, err := f.redisStore(ctx, f.storeOptions())
		if err != nil {
			return err
		}
		defer closeStore()
		report, err := processor.Rebuild(ctx, processor.RebuildConfig{
			Brokers: f.brokerList(), EventsTopic: f.eventsTopic, CommandsTopic: f.commandsTopic, Group: f.group,
			Registry: registry, Store: store, Logger: log,
		})
		if err != nil {
			return errors.Wrap(err, "restore versions from the embedded Kafka's events")
		}
		if report.Events > 0 {
			log.Info("restored versions from the events topic", zap.Int64("events", report.Events), zap.Int("aggregates", report.Aggregates))
		}
		printEmbeddedBanner(stdout, *f, embedded)
	} else if f.brokers == "" || f.redisURL == "" {
		return usagef("give both --brokers and --redis (or ARBITER_BROKERS and ARBITER_REDIS_URL), or neither for the embedded development mode")
	}

	if err := f.checkRedisConfig(); err != nil {
		return err
	}
	if err := f.checkTopics(ctx, f.commandsTopic, f.eventsTopic, f.conflictsTopic); err != nil {
		return err
	}
	store, closeStore, err := f.redisStore(ctx, f.storeOptions())
	if err != nil {
		return err
	}
	defer closeStore()

	kafkaOptions, err := f.securityOpts()
	if err != nil {
		return err
	}
	cfg := processor.Config{
		Brokers: f.brokerList(),
		// The balancer is a group option: the telemetry's admin client
		// (kafkaOptions) joins no group.
		KafkaOptions:           append(append([]kgo.Opt{}, kafkaOptions...), balancer),
		Group:                  f.group,
		CommandsTopic:          f.commandsTopic,
		EventsTopic:            f.eventsTopic,
		ConflictsTopic:         f.conflictsTopic,
		TransactionalIDPrefix:  f.transactionalIDPrefix,
		InstanceID:             f.instanceID,
		MaxBatch:               f.maxBatch,
		Concurrency:            f.concurrency,
		MaxRecordBytes:         f.maxRecordBytes,
		MaxCommandEvents:       f.maxCommandEvents,
		CloudEventsSource:      f.cloudEventsSource,
		MaxCommandOutcomeBytes: f.maxCommandBytes,
		SessionTimeout:         f.sessionTimeout,
		TransactionTimeout:     f.transactionTimeout,
		IsolationInterval:      f.isolationInterval,
		Registry:               registry,
		Store:                  store,
		Logger:                 log,
	}
	// With OTEL_EXPORTER_OTLP_ENDPOINT set, batches and Kafka calls are
	// traced and exported; otherwise tracing is off.
	tracer, stopTracing, err := tracing.FromEnv(ctx, "arbiter-worker")
	if err != nil {
		return usagef("%v", err)
	}
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := stopTracing(flushCtx); err != nil {
			log.Warn("flush the last spans", zap.Error(err))
		}
	}()
	if tracer != nil {
		cfg.Tracer = tracer
		cfg.KafkaOptions = append(cfg.KafkaOptions, tracer.KafkaOptions()...)
	}
	if err := testHooks(&cfg, log, c.lookupEnv); err != nil {
		return err
	}
	run := func(ctx context.Context, worker *processor.Worker) error { return worker.Run(ctx) }
	if f.httpAddr == "" {
		log.Info("http listener off: no /metrics, /healthz or /readyz")
	} else {
		telemetry, err := metrics.NewWorker(metrics.WorkerConfig{
			Addr: f.httpAddr, Pprof: f.pprof, StuckAfter: f.stuckAfter,
			Brokers: f.brokerList(), Group: f.group, CommandsTopic: f.commandsTopic,
			Store: store, Logger: log.Named("http"), KafkaOptions: kafkaOptions,
		})
		if err != nil {
			return usagef("%v", err)
		}
		defer telemetry.Close()
		telemetry.Instrument(&cfg)
		log.Info("serving /metrics, /healthz and /readyz", zap.String("addr", telemetry.Addr()), zap.Bool("pprof", f.pprof))
		run = func(ctx context.Context, worker *processor.Worker) error {
			return telemetry.Run(ctx, worker.Run)
		}
	}
	worker, err := processor.New(cfg)
	if err != nil {
		return usagef("%v", err)
	}
	progress := startProgress(ctx, worker, log)
	defer progress()
	return run(ctx, worker)
}

// startProgress logs the worker's counters every 30 seconds while it works.
func startProgress(ctx context.Context, worker *processor.Worker, log *zap.Logger) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(30 * time.Second)
		defer ticker.Stop()
		var last int64
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				stats := worker.Stats()
				records := stats.Records.Load()
				if records == last {
					continue
				}
				last = records
				log.Info("progress",
					zap.Int64("records", records),
					zap.Int64("applied", stats.Applied.Load()),
					zap.Int64("conflicts", stats.Conflicts.Load()),
					zap.Int64("replayed", stats.Replayed.Load()),
					zap.Int64("transactions_committed", stats.Committed.Load()),
					zap.Int64("transactions_aborted", stats.Aborted.Load()))
			}
		}
	}()
	return func() { cancel(); <-done }
}
