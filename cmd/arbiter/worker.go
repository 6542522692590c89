package main

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/metrics"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/tracing"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"go.uber.org/zap"
)

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
}

func defaultDataDir() string {
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "arbiter", "embedded")
	}
	return filepath.Join(os.TempDir(), "arbiter-embedded")
}

func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f workerFlags
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	f.register(fs)
	fs.StringVar(&f.group, "group", envString("ARBITER_GROUP", "arbiter"), "consumer group of the workers (ARBITER_GROUP)")
	fs.StringVar(&f.transactionalIDPrefix, "transactional-id-prefix", envString("ARBITER_TRANSACTIONAL_ID_PREFIX", "arbiter"), "prefix of the worker's Kafka transactional ID (ARBITER_TRANSACTIONAL_ID_PREFIX)")
	fs.StringVar(&f.instanceID, "instance-id", envString("ARBITER_INSTANCE_ID", ""), "stable unique ID of this replica, e.g. the pod name; a restart then fences its predecessor's open transaction at once (default <host>-<pid>-<random>) (ARBITER_INSTANCE_ID)")
	fs.IntVar(&f.maxBatch, "max-batch", envInt("ARBITER_MAX_BATCH", 2000), "most records per poll, Redis round trip and transaction (ARBITER_MAX_BATCH)")
	fs.IntVar(&f.concurrency, "concurrency", envInt("ARBITER_CONCURRENCY", 1), "transactional sessions of this worker, each a group member with its share of the partitions (ARBITER_CONCURRENCY)")
	fs.IntVar(&f.maxRecordBytes, "max-record-bytes", envInt("ARBITER_MAX_RECORD_BYTES", 1<<20), "size limit of a command record; larger ones are invalid (ARBITER_MAX_RECORD_BYTES)")
	fs.IntVar(&f.maxCommandEvents, "max-command-events", envInt("ARBITER_MAX_COMMAND_EVENTS", processor.DefaultMaxCommandEvents), "most events one command may append; more is rejected (ARBITER_MAX_COMMAND_EVENTS)")
	fs.IntVar(&f.maxCommandBytes, "max-command-outcome-bytes", envInt("ARBITER_MAX_COMMAND_OUTCOME_BYTES", processor.DefaultMaxCommandOutcomeBytes), "most bytes of outcome records one command may make, metadata counted per event; more is rejected (ARBITER_MAX_COMMAND_OUTCOME_BYTES)")
	fs.DurationVar(&f.sessionTimeout, "session-timeout", envDuration("ARBITER_SESSION_TIMEOUT", 10*time.Second), "consumer group session timeout (ARBITER_SESSION_TIMEOUT)")
	fs.DurationVar(&f.transactionTimeout, "transaction-timeout", envDuration("ARBITER_TRANSACTION_TIMEOUT", 10*time.Second), "Kafka transaction timeout (ARBITER_TRANSACTION_TIMEOUT)")
	fs.DurationVar(&f.outcomeTTL, "outcome-ttl", envDuration("ARBITER_OUTCOME_TTL", 24*time.Hour), "how long an uncommitted outcome's records are kept for a replay (ARBITER_OUTCOME_TTL)")
	fs.DurationVar(&f.dedupeTTL, "dedupe-ttl", envDuration("ARBITER_DEDUPE_TTL", 24*time.Hour), "how long a command ID is recognised as a duplicate (ARBITER_DEDUPE_TTL)")
	fs.IntVar(&f.recentEvents, "recent-events", envInt("ARBITER_RECENT_EVENTS", versionstore.DefaultRecentEvents), "each aggregate's last events kept in Redis for eventsSince and rebases; -1 keeps none (ARBITER_RECENT_EVENTS)")
	fs.IntVar(&f.recentPayloadBytes, "recent-payload-bytes", envInt("ARBITER_RECENT_PAYLOAD_BYTES", versionstore.DefaultRecentPayloadBytes), "largest event payload kept with them (ARBITER_RECENT_PAYLOAD_BYTES)")
	fs.StringVar(&f.embeddedKafka, "embedded-kafka-addr", envString("ARBITER_EMBEDDED_KAFKA_ADDR", "127.0.0.1:9092"), "address of the embedded Kafka, when neither --brokers nor --redis is given")
	fs.StringVar(&f.embeddedRedis, "embedded-redis-addr", envString("ARBITER_EMBEDDED_REDIS_ADDR", "127.0.0.1:6399"), "address of the embedded Redis")
	fs.StringVar(&f.dataDir, "data-dir", envString("ARBITER_DATA_DIR", defaultDataDir()), "where the embedded Kafka keeps its data (ARBITER_DATA_DIR)")
	httpAddr := metrics.DefaultAddr
	if value, set := os.LookupEnv("ARBITER_HTTP_ADDR"); set {
		httpAddr = value // empty turns the listener off
	}
	fs.StringVar(&f.httpAddr, "http-addr", httpAddr, "listen address of /metrics, /healthz and /readyz; empty turns the listener off (ARBITER_HTTP_ADDR)")
	fs.BoolVar(&f.pprof, "pprof", envBool("ARBITER_PPROF", false), "also serve /debug/pprof/ on --http-addr (ARBITER_PPROF)")
	fs.DurationVar(&f.stuckAfter, "stuck-after", envDuration("ARBITER_STUCK_AFTER", time.Minute), "how long a partition's batches fail without a commit before it counts as stuck (not ready) (ARBITER_STUCK_AFTER)")
	fs.IntVar(&f.partitions, "partitions", envInt("ARBITER_PARTITIONS", 12), "partitions of the topics the embedded Kafka creates")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("worker takes no arguments, got %q", fs.Args())
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		return errors.Wrap(err, "register the Product handlers")
	}

	if f.brokers == "" && f.redisURL == "" {
		embedded, err := startEmbedded(ctx, embeddedConfig{
			kafkaAddr:  f.embeddedKafka,
			redisAddr:  f.embeddedRedis,
			dataDir:    f.dataDir,
			partitions: int32(f.partitions),
			topics:     []string{f.commandsTopic, f.eventsTopic, f.conflictsTopic},
			log:        log,
		})
		if err != nil {
			return err
		}
		defer embedded.close()
		f.brokers, f.redisURL = embedded.kafkaAddr, "redis://"+embedded.redisAddr+"/0"
		store, closeStore, err := f.redisStore(ctx, versionstore.Options{OutcomeTTL: f.outcomeTTL, DedupeTTL: f.dedupeTTL, RecentEvents: f.recentEvents, RecentPayloadBytes: f.recentPayloadBytes})
		if err != nil {
			return err
		}
		defer closeStore()
		report, err := processor.Rebuild(ctx, processor.RebuildConfig{
			Brokers: f.brokerList(), EventsTopic: f.eventsTopic, Registry: registry, Store: store, Logger: log,
		})
		if err != nil {
			return errors.Wrap(err, "restore versions from the embedded Kafka's events")
		}
		if report.Events > 0 {
			log.Info("restored versions from the events topic", zap.Int64("events", report.Events), zap.Int("aggregates", report.Aggregates))
		}
		printEmbeddedBanner(stdout, f, embedded)
	} else if f.brokers == "" || f.redisURL == "" {
		return usagef("give both --brokers and --redis (or ARBITER_BROKERS and ARBITER_REDIS_URL), or neither for the embedded development mode")
	}

	if err := f.checkTopics(ctx, f.commandsTopic, f.eventsTopic, f.conflictsTopic); err != nil {
		return err
	}
	store, closeStore, err := f.redisStore(ctx, versionstore.Options{OutcomeTTL: f.outcomeTTL, DedupeTTL: f.dedupeTTL, RecentEvents: f.recentEvents, RecentPayloadBytes: f.recentPayloadBytes})
	if err != nil {
		return err
	}
	defer closeStore()

	kafkaOptions, err := f.securityOpts()
	if err != nil {
		return err
	}
	cfg := processor.Config{
		Brokers:               f.brokerList(),
		KafkaOptions:          kafkaOptions,
		Group:                 f.group,
		CommandsTopic:         f.commandsTopic,
		EventsTopic:           f.eventsTopic,
		ConflictsTopic:        f.conflictsTopic,
		TransactionalIDPrefix: f.transactionalIDPrefix,
		InstanceID:            f.instanceID,
		MaxBatch:              f.maxBatch,
		Concurrency:           f.concurrency,
		MaxRecordBytes:        f.maxRecordBytes,
		MaxCommandEvents:      f.maxCommandEvents,
		SessionTimeout:        f.sessionTimeout,
		TransactionTimeout:    f.transactionTimeout,
		Registry:              registry,
		Store:                 store,
		Logger:                log,
	}
	cfg.MaxCommandOutcomeBytes = f.maxCommandBytes
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
	if err := testHooks(&cfg, log); err != nil {
		return err
	}
	run := func(ctx context.Context, worker *processor.Worker) error { return worker.Run(ctx) }
	if f.httpAddr == "" {
		log.Info("http listener off: no /metrics, /healthz or /readyz")
	} else {
		telemetry, err := metrics.NewWorker(metrics.WorkerConfig{
			Addr: f.httpAddr, Pprof: f.pprof, StuckAfter: f.stuckAfter,
			Brokers: f.brokerList(), Group: f.group, CommandsTopic: f.commandsTopic,
			Store: store, Logger: log.Named("http"),
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

// testHooks wires the fault-injection hooks that integration tests use, each
// set by an environment variable whose value N picks the N-th batch with new
// outcomes:
//
//	ARBITER_TEST_EXIT_AFTER_REDIS_COMMIT   exit (code 86) after the Redis compare-and-set, before producing
//	ARBITER_TEST_EXIT_BEFORE_END           exit with the batch's records in the open transaction
//	ARBITER_TEST_STOP_BEFORE_REDIS_COMMIT  SIGSTOP itself after deciding, before the compare-and-set
//	ARBITER_TEST_STOP_AFTER_REDIS_COMMIT   SIGSTOP itself after the compare-and-set, before producing
//
// A stopped worker is a zombie: the test wakes it with SIGCONT after the
// group has given its partitions away.
func testHooks(cfg *processor.Config, log *zap.Logger) error {
	hooks := []struct {
		variable string
		stop     bool
		hook     *func(context.Context, processor.BatchParams)
	}{
		{"ARBITER_TEST_EXIT_AFTER_REDIS_COMMIT", false, &cfg.Hooks.AfterRedisCommit},
		{"ARBITER_TEST_EXIT_BEFORE_END", false, &cfg.Hooks.BeforeEnd},
		{"ARBITER_TEST_STOP_BEFORE_REDIS_COMMIT", true, &cfg.Hooks.BeforeRedisCommit},
		{"ARBITER_TEST_STOP_AFTER_REDIS_COMMIT", true, &cfg.Hooks.AfterRedisCommit},
	}
	for _, h := range hooks {
		fn, err := faultAfter(h.variable, h.stop, log)
		if err != nil {
			return err
		}
		if fn != nil {
			*h.hook = fn
		}
	}
	return nil
}

// testHookExitCode is the exit code of a process stopped by a test hook.
const testHookExitCode = 86

func faultAfter(variable string, stop bool, log *zap.Logger) (func(context.Context, processor.BatchParams), error) {
	value := os.Getenv(variable)
	if value == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(value)
	if err != nil || n < 1 {
		return nil, usagef("%s=%q: want a positive batch count", variable, value)
	}
	seen := 0
	return func(_ context.Context, params processor.BatchParams) {
		if params.Applied+params.Conflicts == 0 {
			return
		}
		seen++
		if seen != n {
			return
		}
		log.Warn("test hook fired", zap.String("hook", variable), zap.Int("batch", seen), zap.Int("records", params.Records))
		_ = log.Sync()
		if stop {
			_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
			log.Warn("test hook: woke up", zap.String("hook", variable))
			return
		}
		os.Exit(testHookExitCode)
	}, nil
}
