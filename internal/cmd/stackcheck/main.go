// Command stackcheck waits until the test stack started by scripts/stack.sh
// answers real requests, then prints what it runs: the Kafka broker's
// finalized features (from its ApiVersions response) and the Redis server's
// version. An open port is not enough for a JVM broker that is still
// loading its metadata, so readiness is a metadata round trip plus a
// finalized metadata.version.
//
// Usage:
//
//	go run ./internal/cmd/stackcheck -brokers 127.0.0.1:19092 -redis redis://127.0.0.1:16379/0 -wait 120s
//
// With -create-topics it also creates the named topics (if missing) with
// -partitions partitions each.
//
// Exit codes: 0 ready (and topics created), 1 not ready in time or a request
// failed, 2 bad flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/topicadmin"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/arbiter-cqrs/arbiter/internal/stackprobe"
)

// Exit codes.
const (
	exitReady    = 0
	exitNotReady = 1
	exitUsage    = 2
)

// pollInterval is how long to wait between two readiness attempts.
const pollInterval = 500 * time.Millisecond

// config holds the parsed flags.
type config struct {
	brokers               []string
	redisURL              string
	wait                  time.Duration
	kafkaPID              int
	redisPID              int
	minTransactionVersion int
	createTopics          []string
	partitions            int
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "stackcheck: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := check(ctx, cfg, stdout); err != nil {
		fmt.Fprintf(stderr, "stackcheck: %v\n", err)
		return exitNotReady
	}
	return exitReady
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("stackcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "", "comma-separated Kafka bootstrap addresses (empty: skip Kafka)")
	redisURL := fs.String("redis", "", "redis:// URL of the Redis server (empty: skip Redis)")
	wait := fs.Duration("wait", 0, "keep trying this long (0: one attempt of at most 10s)")
	kafkaPID := fs.Int("kafka-pid", 0, "stop waiting when this process (the broker) has exited")
	redisPID := fs.Int("redis-pid", 0, "stop waiting when this process (redis-server) has exited")
	minTransactionVersion := fs.Int("min-transaction-version", 0, "fail unless the finalized transaction.version is at least this")
	createTopics := fs.String("create-topics", "", "comma-separated topics to create if missing")
	partitions := fs.Int("partitions", 12, "partitions of each topic that -create-topics creates")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	cfg := config{
		brokers:               stackprobe.SplitList(*brokers),
		redisURL:              *redisURL,
		wait:                  *wait,
		kafkaPID:              *kafkaPID,
		redisPID:              *redisPID,
		minTransactionVersion: *minTransactionVersion,
		createTopics:          stackprobe.SplitList(*createTopics),
		partitions:            *partitions,
	}
	var problems []error
	if len(cfg.brokers) == 0 && cfg.redisURL == "" {
		problems = append(problems, errors.New("give -brokers, -redis or both"))
	}
	if len(cfg.createTopics) > 0 && len(cfg.brokers) == 0 {
		problems = append(problems, errors.New("-create-topics needs -brokers"))
	}
	if cfg.partitions < 1 {
		problems = append(problems, errors.Newf("-partitions must be positive, got %d", cfg.partitions))
	}
	if fs.NArg() > 0 {
		problems = append(problems, errors.Newf("unexpected arguments %q", fs.Args()))
	}
	return cfg, errors.Join(problems...)
}

func check(ctx context.Context, cfg config, stdout io.Writer) error {
	if len(cfg.brokers) > 0 {
		if err := checkKafka(ctx, cfg, stdout); err != nil {
			return err
		}
	}
	if cfg.redisURL != "" {
		if err := checkRedis(ctx, cfg, stdout); err != nil {
			return err
		}
	}
	return nil
}

func checkKafka(ctx context.Context, cfg config, stdout io.Writer) error {
	start := time.Now()
	var features map[string]int16
	err := poll(ctx, cfg.wait, cfg.kafkaPID, "Kafka broker", func(ctx context.Context) error {
		var err error
		features, err = stackprobe.KafkaReady(ctx, cfg.brokers)
		return err
	})
	if err != nil {
		return errors.Wrapf(err, "Kafka at %s", strings.Join(cfg.brokers, ","))
	}
	fmt.Fprintf(stdout, "kafka: ready after %.1fs at %s\n", time.Since(start).Seconds(), strings.Join(cfg.brokers, ","))
	fmt.Fprintf(stdout, "kafka: finalized features: %s\n", formatFeatures(features))

	if transactionVersion := features[stackprobe.FeatureTransactionVersion]; int(transactionVersion) < cfg.minTransactionVersion {
		return errors.Newf("Kafka at %s finalized %s=%d, want at least %d",
			strings.Join(cfg.brokers, ","), stackprobe.FeatureTransactionVersion, transactionVersion, cfg.minTransactionVersion)
	}
	if len(cfg.createTopics) > 0 {
		return createTopics(ctx, cfg, stdout)
	}
	return nil
}

func checkRedis(ctx context.Context, cfg config, stdout io.Writer) error {
	options, err := redis.ParseURL(cfg.redisURL)
	if err != nil {
		return errors.Wrapf(err, "parse Redis URL %q", cfg.redisURL)
	}
	client := redis.NewClient(options)
	defer client.Close()

	start := time.Now()
	var info map[string]string
	err = poll(ctx, cfg.wait, cfg.redisPID, "redis-server", func(ctx context.Context) error {
		var err error
		info, err = stackprobe.RedisInfo(ctx, client, "server")
		return err
	})
	if err != nil {
		return errors.Wrapf(err, "Redis at %s", cfg.redisURL)
	}
	fmt.Fprintf(stdout, "redis: ready after %.1fs at %s: redis_version=%s process_id=%s\n",
		time.Since(start).Seconds(), cfg.redisURL, info["redis_version"], info["process_id"])
	return nil
}

// poll calls attempt until it succeeds, wait has passed, the process pid (if
// non-zero) has exited, or ctx is done. With wait zero it makes one attempt.
func poll(ctx context.Context, wait time.Duration, pid int, what string, attempt func(context.Context) error) error {
	const attemptTimeout = 10 * time.Second
	deadline := time.Now().Add(wait)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := attempt(attemptCtx)
		cancel()
		if err == nil {
			return nil
		}
		if pid != 0 && !processAlive(pid) {
			return errors.Wrapf(err, "%s (pid %d) has exited", what, pid)
		}
		if !time.Now().Before(deadline) {
			return errors.Wrapf(err, "not ready after %s", wait)
		}
		select {
		case <-ctx.Done():
			return errors.Wrap(ctx.Err(), "interrupted")
		case <-ticker.C:
		}
	}
}

// processAlive reports whether pid names a running (not zombie) process.
func processAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may itself
	// contain spaces and parentheses.
	end := strings.LastIndexByte(string(stat), ')')
	if end < 0 || end+2 >= len(stat) {
		return false
	}
	state := stat[end+2]
	return state != 'Z' && state != 'X'
}

func formatFeatures(features map[string]int16) string {
	names := make([]string, 0, len(features))
	for name := range features {
		names = append(names, name)
	}
	slices.Sort(names)
	parts := make([]string, 0, len(names))
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s=%d", name, features[name]))
	}
	return strings.Join(parts, " ")
}

func createTopics(ctx context.Context, cfg config, stdout io.Writer) error {
	client, err := kgo.NewClient(kgo.SeedBrokers(cfg.brokers...))
	if err != nil {
		return errors.Wrap(err, "create Kafka client")
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	result, err := topicadmin.Create(ctx, kadm.NewClient(client), topicadmin.Spec{
		Names: cfg.createTopics, Partitions: int32(cfg.partitions), ReplicationFactor: 1, ExistingOK: true,
	})
	for _, topic := range result.Created {
		fmt.Fprintf(stdout, "kafka: created topic %s with %d partitions\n", topic, cfg.partitions)
	}
	for _, topic := range result.Existing {
		fmt.Fprintf(stdout, "kafka: topic %s already exists\n", topic)
	}
	return err
}
