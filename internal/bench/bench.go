// Package bench is `arbiter bench`: it measures Arbiter workers against a
// Kafka broker and a Redis server, with the Product example domain as the
// load. A run creates its own topics, consumer group and Redis key prefix,
// produces N commands over A aggregates (a share of them stale), runs W
// workers (in-process or as `arbiter worker` processes) and reads every
// outcome back as a read_committed consumer, timing each command from the
// moment it was produced to the moment its outcome was readable.
//
// The per-command baseline is the same worker with a batch of one record:
// one poll, two Redis round trips and one Kafka transaction per command.
// Running both in one invocation makes the speed-up a ratio measured on one
// machine at one moment.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/topicadmin"
	"github.com/arbiter-cqrs/arbiter/redisclient"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// Config configures a bench invocation. Zero fields take the defaults noted.
type Config struct {
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// RedisURL is the redis:// URL of the Redis server. Required.
	RedisURL string
	// RedisMode is how RedisURL is read (redisclient.Mode): one server, a
	// Redis Cluster's seed nodes or a Sentinel master. default: standalone
	RedisMode redisclient.Mode
	// Target describes the servers in the report, e.g.
	// "EMBEDDED (not a real broker)". default: the broker and Redis addresses
	Target string
	// N is the number of commands of the batched run. default: 200000
	N int
	// Aggregates is the number of aggregates the commands go to.
	// default: 10000
	Aggregates int
	// Stale is the share of commands with a stale expectedVersion, which
	// must become version conflicts. default: 0.1 (a negative value means 0)
	Stale float64
	// Partitions of the commands, events and conflicts topics. default: 12
	Partitions int
	// Workers is the number of in-process workers. default: 1 unless
	// WorkerProcesses is set
	Workers int
	// WorkerProcesses is the number of `arbiter worker` processes, run from
	// WorkerBinary; it excludes Workers.
	WorkerProcesses int
	// WorkerBinary is the arbiter binary for WorkerProcesses.
	WorkerBinary string
	// Rate is the offered load in commands per second; 0 produces every
	// command as fast as the producer takes them (saturation). Either way
	// the load starts once every worker session has joined the group and
	// committed a warm-up transaction: started after a preload, a second
	// worker joined while the first processed, and the rebalance swung the
	// measured rate between 24k and 46k commands/s from run to run.
	Rate float64
	// Batch is the worker's MaxBatch. default: 2000
	Batch int
	// Baseline adds the per-command baseline run (Batch 1) with BaselineN
	// commands.
	Baseline bool
	// BaselineN is the baseline's number of commands. default: N/20, at
	// least 500
	BaselineN int
	// Sweep lists offered loads as fractions of each configuration's
	// measured peak; each becomes a fixed-rate run of SweepDuration.
	Sweep []float64
	// SweepDuration is how long each sweep point offers load. default: 10s
	SweepDuration time.Duration
	// Tuning are the worker knobs beyond the batch size.
	Tuning Tuning
	// Security are the TLS, SASL and ACL settings of a secured Kafka and
	// Redis, for every client of the run and its worker processes.
	Security Security
	// LoadLinger is the load generator's producer linger; negative keeps
	// the franz-go default (10ms). default: 0 (send at once)
	LoadLinger time.Duration
	// WarmupN, when set, is a first batched run of that many commands whose
	// results are dropped: a broker started a moment ago runs its code
	// interpreted until the JIT compiled it, and measured the batched
	// configuration at half its warm throughput.
	WarmupN int
	// ReaderMaxWait is the outcome reader's fetch max wait. default: 100ms
	ReaderMaxWait time.Duration
	// Seed makes the workload reproducible. default: 1
	Seed uint64
	// RunTimeout bounds each run from its first command. default: 10m
	RunTimeout time.Duration
	// BrokerPID, when set, is the broker's process ID: its CPU time per
	// 1,000 commands is reported too.
	BrokerPID int
	// CPUProfile and MemProfile, when set, receive a CPU profile of the
	// first batched run's processing window and an allocation profile at
	// its end (in-process workers only).
	CPUProfile, MemProfile io.Writer
	// Progress receives a progress line every two seconds. default: none
	Progress io.Writer
	// Logger receives the in-process workers' logs. default: zap.NewNop()
	Logger *zap.Logger
}

func (c *Config) setDefaults() {
	if c.N <= 0 {
		c.N = 200_000
	}
	if c.Aggregates <= 0 {
		c.Aggregates = 10_000
	}
	if c.Stale < 0 {
		c.Stale = 0
	}
	if c.Partitions <= 0 {
		c.Partitions = 12
	}
	if c.Workers <= 0 && c.WorkerProcesses <= 0 {
		c.Workers = 1
	}
	if c.Batch <= 0 {
		c.Batch = 2000
	}
	if c.BaselineN <= 0 {
		c.BaselineN = max(c.N/20, 500)
	}
	if c.SweepDuration <= 0 {
		c.SweepDuration = 10 * time.Second
	}
	if c.ReaderMaxWait <= 0 {
		c.ReaderMaxWait = 100 * time.Millisecond
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.RunTimeout <= 0 {
		c.RunTimeout = 10 * time.Minute
	}
	if c.Target == "" {
		c.Target = fmt.Sprintf("Kafka %v, Redis %s", c.Brokers, redisclient.RedactURL(c.RedisURL))
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Validate reports every problem of the configuration at once.
func (c *Config) Validate() error {
	var problems []error
	if len(c.Brokers) == 0 {
		problems = append(problems, errors.New("no Kafka brokers"))
	}
	if c.RedisURL == "" {
		problems = append(problems, errors.New("no Redis URL"))
	}
	if c.Stale > 1 {
		problems = append(problems, errors.Newf("stale share %v is over 1", c.Stale))
	}
	if c.Workers > 0 && c.WorkerProcesses > 0 {
		problems = append(problems, errors.New("give in-process workers or worker processes, not both"))
	}
	if c.WorkerProcesses > 0 && c.WorkerBinary == "" {
		problems = append(problems, errors.New("worker processes need the arbiter binary"))
	}
	if c.WorkerProcesses > 0 && !c.Tuning.processCapable() {
		problems = append(problems, errors.Newf("tuning %s has no `arbiter worker` flag; use in-process workers", c.Tuning))
	}
	if c.WorkerProcesses <= 0 && len(c.Tuning.WorkerArgs) > 0 {
		problems = append(problems, errors.New("worker flags (--worker-arg) go to worker processes only; give --worker-processes"))
	}
	if c.WorkerProcesses > 0 && (c.CPUProfile != nil || c.MemProfile != nil) {
		problems = append(problems, errors.New("profiles cover in-process workers only; profile a worker process with its own tools"))
	}
	if c.Rate < 0 {
		problems = append(problems, errors.Newf("rate %v is negative", c.Rate))
	}
	for _, f := range c.Sweep {
		if f <= 0 {
			problems = append(problems, errors.Newf("sweep point %v: offered loads are positive fractions of the peak", f))
		}
	}
	if err := c.Tuning.Validate(); err != nil {
		problems = append(problems, err)
	}
	return errors.Join(problems...)
}

// ConfigError is returned by Run for a configuration that Validate
// refuses.
type ConfigError struct{ Err error }

// Error implements error.
func (e *ConfigError) Error() string { return "bench configuration: " + e.Err.Error() }

// Unwrap returns the validation problems.
func (e *ConfigError) Unwrap() error { return e.Err }

// Run runs the configured benchmark: the batched run, the baseline when
// asked, and the sweep when asked.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, &ConfigError{Err: err}
	}
	kafka, rdb, err := connect(ctx, cfg.Brokers, cfg.Security, cfg.RedisURL, cfg.RedisMode)
	if err != nil {
		return nil, err
	}
	defer kafka.Close()
	defer rdb.Close()
	b := &bencher{cfg: cfg, admin: kadm.NewClient(kafka), redis: rdb}

	report := &Report{Target: cfg.Target, Machine: readMachine(), Settings: settingsOf(cfg)}
	if cfg.WarmupN > 0 {
		if _, err := b.run(ctx, runParams{label: "warm-up (dropped)", n: cfg.WarmupN, batch: cfg.Batch}); err != nil {
			return nil, err
		}
	}
	batched, err := b.run(ctx, runParams{label: "batched", n: cfg.N, batch: cfg.Batch, rate: cfg.Rate, profile: true})
	if err != nil {
		return nil, err
	}
	report.Batched = batched
	if cfg.Baseline {
		baseline, err := b.run(ctx, runParams{label: "baseline", n: cfg.BaselineN, batch: 1, rate: cfg.Rate})
		if err != nil {
			return nil, err
		}
		report.Baseline = baseline
		if baseline.Throughput > 0 {
			report.Speedup = batched.Throughput / baseline.Throughput
		}
	}
	if len(cfg.Sweep) > 0 {
		sweep, err := b.sweep(ctx, report)
		if err != nil {
			return nil, err
		}
		report.Sweep = sweep
	}
	report.Machine.LoadAfter = readLoad()
	return report, nil
}

// UnreachableError is returned by Run when Kafka or Redis does not answer.
type UnreachableError struct{ Err error }

// Error implements error.
func (e *UnreachableError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *UnreachableError) Unwrap() error { return e.Err }

func reachable(ctx context.Context, kafka *kgo.Client, rdb redis.UniversalClient, redisConfig redisclient.Config) error {
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		return &UnreachableError{Err: errors.Wrapf(err, "redis at %s does not answer; check --redis and --redis-mode", redisConfig.Addr())}
	}
	if err := kafka.Ping(pingCtx); err != nil {
		return &UnreachableError{Err: errors.Wrap(err, "kafka does not answer; check --brokers")}
	}
	return nil
}

type bencher struct {
	cfg      Config
	admin    *kadm.Client
	redis    redis.UniversalClient
	profiled bool
}

type runParams struct {
	label   string
	n       int
	batch   int
	rate    float64
	profile bool
}

func randomTag() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (b *bencher) workerCount() int {
	if b.cfg.WorkerProcesses > 0 {
		return b.cfg.WorkerProcesses
	}
	return b.cfg.Workers
}

func (b *bencher) workerKind() string {
	if b.cfg.WorkerProcesses > 0 {
		return "process"
	}
	return "in-process"
}

func (b *bencher) startWorkers(ctx context.Context, spec runSpec, cfg Config, tag string) (workerSet, error) {
	if cfg.WorkerProcesses > 0 {
		return startProcesses(ctx, spec, cfg.WorkerBinary, cfg.WorkerProcesses, tag)
	}
	return startInProcess(ctx, spec, cfg.Workers, tag)
}

// createTopics creates the run's topics and waits until every partition has
// a leader.
func createTopics(ctx context.Context, admin *kadm.Client, partitions int32, names ...string) error {
	createCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	_, err := topicadmin.Create(createCtx, admin, topicadmin.Spec{Names: names, Partitions: partitions, ReplicationFactor: 1})
	return err
}

// waitForGroup waits until the group is stable with the given members and
// every partition of the topic assigned.
func waitForGroup(ctx context.Context, admin *kadm.Client, group, topic string, members int, partitions int32) error {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		described, err := admin.DescribeGroups(ctx, group)
		if err == nil {
			g := described[group]
			assigned := 0
			for _, m := range g.Members {
				if c, ok := m.Assigned.AsConsumer(); ok {
					for _, t := range c.Topics {
						if t.Topic == topic {
							assigned += len(t.Partitions)
						}
					}
				}
			}
			if g.Err == nil && g.State == "Stable" && len(g.Members) == members && assigned == int(partitions) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.Wrapf(ctx.Err(), "wait for %d workers to join group %s", members, group)
		case <-ticker.C:
		}
	}
}
