package app

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
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
	sessionTimeout        time.Duration
	transactionTimeout    time.Duration
	outcomeTTL            time.Duration
	dedupeTTL             time.Duration
	embeddedKafka         string
	embeddedRedis         string
	dataDir               string
	partitions            int
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
		RunE: c.run(func(ctx context.Context, _ []string) error {
			return c.runWorker(ctx, &f)
		}),
	}
	fs := cmd.Flags()
	f.register(fs)
	bind(fs, &f.group, "group", "ARBITER_GROUP", "arbiter", "consumer group of the workers")
	bind(fs, &f.transactionalIDPrefix, "transactional-id-prefix", "ARBITER_TRANSACTIONAL_ID_PREFIX", "arbiter", "prefix of the worker's Kafka transactional ID")
	bind(fs, &f.instanceID, "instance-id", "ARBITER_INSTANCE_ID", "", "stable unique ID of this replica, e.g. the pod name; a restart then fences its predecessor's open transaction at once (default <host>-<pid>-<random>)")
	bind(fs, &f.maxBatch, "max-batch", "ARBITER_MAX_BATCH", 2000, "most records per poll, Redis round trip and transaction")
	bind(fs, &f.concurrency, "concurrency", "ARBITER_CONCURRENCY", 1, "transactional sessions of this worker, each a group member with its share of the partitions")
	bind(fs, &f.maxRecordBytes, "max-record-bytes", "ARBITER_MAX_RECORD_BYTES", 1<<20, "size limit of a command record; larger ones are invalid")
	bind(fs, &f.sessionTimeout, "session-timeout", "ARBITER_SESSION_TIMEOUT", 10*time.Second, "consumer group session timeout")
	bind(fs, &f.transactionTimeout, "transaction-timeout", "ARBITER_TRANSACTION_TIMEOUT", 10*time.Second, "Kafka transaction timeout")
	bind(fs, &f.outcomeTTL, "outcome-ttl", "ARBITER_OUTCOME_TTL", 24*time.Hour, "how long an uncommitted outcome's records are kept for a replay")
	bind(fs, &f.dedupeTTL, "dedupe-ttl", "ARBITER_DEDUPE_TTL", 24*time.Hour, "how long a command ID is recognised as a duplicate")
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

	registry := c.registry

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
		store, closeStore, err := f.redisStore(ctx, versionstore.Options{OutcomeTTL: f.outcomeTTL, DedupeTTL: f.dedupeTTL})
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
		printEmbeddedBanner(stdout, *f, embedded)
	} else if f.brokers == "" || f.redisURL == "" {
		return usagef("give both --brokers and --redis (or ARBITER_BROKERS and ARBITER_REDIS_URL), or neither for the embedded development mode")
	}

	if err := f.checkTopics(ctx, f.commandsTopic, f.eventsTopic, f.conflictsTopic); err != nil {
		return err
	}
	store, closeStore, err := f.redisStore(ctx, versionstore.Options{OutcomeTTL: f.outcomeTTL, DedupeTTL: f.dedupeTTL})
	if err != nil {
		return err
	}
	defer closeStore()

	cfg := processor.Config{
		Brokers:               f.brokerList(),
		Group:                 f.group,
		CommandsTopic:         f.commandsTopic,
		EventsTopic:           f.eventsTopic,
		ConflictsTopic:        f.conflictsTopic,
		TransactionalIDPrefix: f.transactionalIDPrefix,
		InstanceID:            f.instanceID,
		MaxBatch:              f.maxBatch,
		Concurrency:           f.concurrency,
		MaxRecordBytes:        f.maxRecordBytes,
		SessionTimeout:        f.sessionTimeout,
		TransactionTimeout:    f.transactionTimeout,
		Registry:              registry,
		Store:                 store,
		Logger:                log,
	}
	if err := testHooks(&cfg, log, c.lookupEnv); err != nil {
		return err
	}
	worker, err := processor.New(cfg)
	if err != nil {
		return usagef("%v", err)
	}
	progress := startProgress(ctx, worker, log)
	defer progress()
	return worker.Run(ctx)
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
