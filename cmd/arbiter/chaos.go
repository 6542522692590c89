package main

import (
	"context"
	"flag"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/chaos"
	"github.com/arbiter-cqrs/arbiter/internal/verify"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
)

// runChaos runs a chaos round against a real broker (see internal/chaos).
func runChaos(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f commonFlags
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	f.register(fs)
	var cfg chaos.Config
	var kafkaRestart string
	fs.DurationVar(&cfg.Duration, "duration", 2*time.Minute, "how long commands are produced and faults injected")
	fs.IntVar(&cfg.Rate, "rate", 200, "commands produced per second")
	fs.IntVar(&cfg.Aggregates, "aggregates", 300, "aggregates the commands go to")
	fs.Float64Var(&cfg.StaleShare, "stale", 0.1, "share of commands with a stale expected version")
	fs.Float64Var(&cfg.DuplicateShare, "duplicates", 0.05, "share of sends that repeat an earlier command record")
	fs.IntVar(&cfg.Workers, "workers", 3, "worker processes kept running")
	partitions := fs.Int("partitions", 12, "partitions of the run's topics")
	fs.DurationVar(&cfg.FaultInterval, "fault-interval", 0, "time between faults (default duration/14)")
	fs.DurationVar(&cfg.SessionTimeout, "session-timeout", 6*time.Second, "the workers' session and transaction timeout")
	fs.DurationVar(&cfg.QuiesceTimeout, "quiesce-timeout", 4*time.Minute, "how long to wait for every outcome after the last fault")
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed of the schedule and workload (default: random, printed)")
	fs.StringVar(&kafkaRestart, "kafka-restart-cmd", envString("ARBITER_KAFKA_RESTART_CMD", ""), "command that restarts the broker on the same data, e.g. 'scripts/stack.sh restart-kafka' (ARBITER_KAFKA_RESTART_CMD)")
	fs.StringVar(&cfg.RedisServer, "redis-server", "redis-server", "the redis-server binary the run starts (with AOF on)")
	fs.StringVar(&cfg.Dir, "dir", "", "folder for the run's logs (default: a temporary one, removed after a clean run)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	cfg.Brokers = f.brokerList()
	if len(cfg.Brokers) == 0 {
		return usagef("chaos runs against a real Kafka broker: set --brokers or ARBITER_BROKERS")
	}
	cfg.Partitions = int32(*partitions)
	cfg.KafkaRestart = strings.Fields(kafkaRestart)
	cfg.Out = stderr
	result, err := chaos.Run(ctx, cfg)
	if err != nil {
		return errors.Wrapf(err, "chaos run with seed %d (logs in %s)", result.Seed, result.Dir)
	}
	printf(stdout, "%s\n", strings.TrimRight(result.Summary(), "\n"))
	if !result.OK() {
		return &foundError{msg: "the chaos run found anomalies; rerun it with --seed " + strconv.FormatInt(result.Seed, 10) + " (logs in " + result.Dir + ")"}
	}
	return nil
}

// runVerify checks the complete history of the topics (see internal/verify).
func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f commonFlags
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	f.register(fs)
	crossCheck := fs.Bool("cross-check", true, "read the output topics a second time with kcat and compare")
	maxAnomalies := fs.Int("max-anomalies", 50, "anomalies printed one per line (all are counted)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := f.checkTopics(ctx, f.commandsTopic, f.eventsTopic, f.conflictsTopic); err != nil {
		return err
	}
	kafkaOptions, err := f.securityOpts()
	if err != nil {
		return err
	}
	verifyConfig := verify.Config{Brokers: f.brokerList(), CommandsTopic: f.commandsTopic, EventsTopic: f.eventsTopic, ConflictsTopic: f.conflictsTopic, KafkaOptions: kafkaOptions}
	history, err := verify.Read(ctx, verifyConfig)
	if err != nil {
		return err
	}
	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		return errors.Wrap(err, "register the Product handlers")
	}
	// The rebases the default worker's handlers allow are not lost updates.
	opts := verify.CheckOptions{RebasePolicies: registry.RebasePolicies()}
	if f.redisURL != "" {
		store, closeStore, err := f.redisStore(ctx, versionstore.Options{})
		if err != nil {
			return err
		}
		defer closeStore()
		if opts.RedisVersions, err = store.Versions(ctx); err != nil {
			return err
		}
	}
	report := verify.Check(history, opts)
	if *crossCheck {
		disagreements, err := verify.CrossCheck(ctx, verifyConfig, history)
		if err != nil {
			return err
		}
		report.Anomalies = append(report.Anomalies, disagreements...)
	}
	for i, a := range report.Anomalies {
		if i == *maxAnomalies {
			printf(stdout, "… %d more anomalies\n", len(report.Anomalies)-i)
			break
		}
		printf(stdout, "%s\n", a)
	}
	printf(stdout, "%s\n", strings.TrimRight(report.Summary(), "\n"))
	if !report.OK() {
		return &foundError{msg: "the history has anomalies (listed above)"}
	}
	return nil
}
