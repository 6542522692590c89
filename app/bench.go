package app

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/bench"
	"github.com/arbiter-cqrs/arbiter/redisclient"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// defaultPlotPath is where --sweep draws its plot unless --plot says
// otherwise; BENCHMARKS.md shows the one in the repository.
const defaultPlotPath = "docs/bench/throughput-latency.png"

// benchFlags are bench's flags; bench has its own defaults (log level warn)
// and takes no topic flags (it creates the topics of each run).
type benchFlags struct {
	cfg        bench.Config
	n          int
	brokers    string
	redisURL   string
	redisMode  string
	sweep      string
	plotPath   string
	asJSON     bool
	contention bench.ContentionConfig
	contend    bool
	scaleOut   bench.ScaleOutConfig
	scale      bool
	balancers  string
	// nSet and partitionsSet say whether -n and --partitions were given:
	// the scale-out scenario has its own defaults.
	nSet, partitionsSet bool
	jsonOut             string
	cpuProfile          string
	memProfile          string
	logLevel            string
	// security holds the Kafka and Redis security flags (registerSecurity).
	security commonFlags
}

func (c *cli) benchCommand() *cobra.Command {
	var b benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "measure workers against Kafka and Redis (embedded when neither is given); --baseline adds the per-command design beside it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b.nSet, b.partitionsSet = cmd.Flags().Changed("n"), cmd.Flags().Changed("partitions")
			return c.run(func(ctx context.Context, _ []string) error {
				return runBench(ctx, b, c.stdout, c.stderr)
			})(cmd, args)
		},
	}
	fs := cmd.Flags()
	fs.IntVarP(&b.n, "n", "n", 200_000, "commands of the batched run")
	b.security.registerSecurity(fs)
	bind(fs, &b.brokers, "brokers", "ARBITER_BROKERS", "", "Kafka seed brokers, comma-separated; with neither --brokers nor --redis the bench runs on an embedded kfake and miniredis")
	bind(fs, &b.redisURL, "redis", "ARBITER_REDIS_URL", "", "Redis URL, redis://host:port/db (a cluster's or the sentinels' with --redis-mode)")
	bind(fs, &b.redisMode, "redis-mode", "ARBITER_REDIS_MODE", string(redisclient.ModeStandalone), "how --redis is read: standalone, cluster or sentinel")
	fs.IntVar(&b.cfg.Aggregates, "aggregates", 10_000, "aggregates the commands go to, each picked uniformly at random")
	fs.Float64Var(&b.cfg.Stale, "stale", 0.1, "share of commands with a stale expectedVersion (they become version_conflict records)")
	fs.IntVar(&b.cfg.Partitions, "partitions", 12, "partitions of the run's topics (the bench creates and deletes its own)")
	fs.IntVar(&b.cfg.Workers, "workers", 0, "in-process workers (default 1 unless --worker-processes is given)")
	fs.IntVar(&b.cfg.WorkerProcesses, "worker-processes", 0, "workers as 'arbiter worker' processes of this binary; their CPU is read from /proc")
	fs.Float64Var(&b.cfg.Rate, "rate", 0, "offered load in commands/s; 0 produces every command as fast as the producer takes them once the workers have joined (saturation)")
	fs.IntVar(&b.cfg.Batch, "batch", 2000, "the worker's MaxBatch: records per poll, Redis round trip pair and transaction")
	fs.BoolVar(&b.cfg.Baseline, "baseline", false, "also run the per-command baseline (--batch 1) and print the speed-up")
	fs.IntVar(&b.cfg.BaselineN, "baseline-n", 0, "commands of the baseline run (default n/20, at least 500)")
	fs.StringVar(&b.sweep, "sweep", "", "offered loads as fractions of each configuration's measured peak, e.g. 0.25,0.5,0.75,1,1.25; draws the plot")
	fs.DurationVar(&b.cfg.SweepDuration, "sweep-duration", 10*time.Second, "how long each sweep point offers its load")
	fs.StringVar(&b.plotPath, "plot", defaultPlotPath, "where --sweep writes its PNG plot")
	fs.IntVar(&b.cfg.Tuning.Concurrency, "concurrency", 1, "transactional sessions per worker (the worker's --concurrency)")
	fs.StringVar(&b.cfg.Tuning.Compression, "compression", "", "codec of the worker's outcome batches: none, snappy, lz4, zstd (default: franz-go's, snappy; in-process workers)")
	fs.DurationVar(&b.cfg.Tuning.Linger, "linger", 0, "the worker producer's linger (default: franz-go's, 10ms; in-process workers)")
	fs.StringArrayVar(&b.cfg.Tuning.WorkerArgs, "worker-arg", nil, "an extra 'arbiter worker' flag for every worker process, e.g. --worker-arg=--recent-events=-1 (repeatable; worker processes only)")
	fs.DurationVar(&b.cfg.LoadLinger, "load-linger", 0, "the load generator's producer linger; negative keeps franz-go's 10ms")
	fs.Uint64Var(&b.cfg.Seed, "seed", 1, "seed of the generated workload")
	fs.IntVar(&b.cfg.WarmupN, "warmup-n", 0, "commands of a first batched run whose results are dropped (warms a freshly started broker's JIT)")
	fs.DurationVar(&b.cfg.ReaderMaxWait, "reader-max-wait", 100*time.Millisecond, "fetch max wait of the read_committed outcome reader")
	fs.DurationVar(&b.cfg.RunTimeout, "timeout", 10*time.Minute, "time limit of each run")
	bind(fs, &b.cfg.BrokerPID, "broker-pid", brokerPIDEnv, 0, "process ID of the broker, to report its CPU per 1,000 commands")
	fs.BoolVar(&b.asJSON, "json", false, "print the report as JSON")
	fs.BoolVar(&b.contend, "contention", false, "run the contention scenario instead: a few hot aggregates, clients changing different facts, strict then onConflict rebase")
	fs.IntVar(&b.contention.Aggregates, "contention-aggregates", 4, "with --contention: hot aggregates")
	fs.IntVar(&b.contention.Clients, "contention-clients", 16, "with --contention: concurrent read-decide-send clients")
	fs.DurationVar(&b.contention.Duration, "contention-duration", 10*time.Second, "with --contention: how long each mode sends")
	fs.BoolVar(&b.scale, "scale-out", false, "run the scale-out scenario instead: many partitions (default 100) and worker processes: assignment balance, saturation throughput, and the rebalance time of a worker joining, leaving and crashing under a steady load, per balancer; -n is its saturation step (default 100000)")
	fs.IntVar(&b.scaleOut.Workers, "scale-workers", 10, "with --scale-out: worker processes")
	fs.StringVar(&b.balancers, "scale-balancers", "cooperative-sticky,sticky", "with --scale-out: the group balancers measured one after the other (the workers' --balancer)")
	fs.Float64Var(&b.scaleOut.SteadyFraction, "scale-steady", 0.5, "with --scale-out: the steady load under the group changes, as a fraction of the measured saturation throughput")
	fs.DurationVar(&b.scaleOut.Settle, "scale-settle", 3*time.Second, "with --scale-out: undisturbed steady load before each group change")
	fs.DurationVar(&b.scaleOut.EventTimeout, "scale-event-timeout", 90*time.Second, "with --scale-out: how long to wait for every partition to decide again after a change")
	fs.StringVar(&b.jsonOut, "json-out", "", "also write the report as JSON to this file")
	fs.StringVar(&b.cpuProfile, "cpuprofile", "", "write a CPU profile of the batched run's processing window (in-process workers)")
	fs.StringVar(&b.memProfile, "memprofile", "", "write an allocation profile at the end of the batched run (in-process workers)")
	fs.StringVar(&b.logLevel, "log-level", "warn", "log level of the in-process workers")
	return cmd
}

// runBench measures workers: see internal/bench and BENCHMARKS.md.
func runBench(ctx context.Context, b benchFlags, stdout, stderr io.Writer) error {
	cfg, brokers, redisURL, sweep, plotPath, asJSON, jsonOut, cpuProfile, memProfile, logLevel :=
		b.cfg, b.brokers, b.redisURL, b.sweep, b.plotPath, b.asJSON, b.jsonOut, b.cpuProfile, b.memProfile, b.logLevel
	cfg.N = b.n
	level, err := zapcore.ParseLevel(logLevel)
	if err != nil {
		return usagef("--log-level %q: use debug, info, warn or error", logLevel)
	}
	encoderConfig := zap.NewProductionEncoderConfig()
	encoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.Logger = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(encoderConfig), zapcore.AddSync(stderr), level))
	cfg.Progress = stderr
	if sweep != "" {
		for _, field := range strings.Split(sweep, ",") {
			f, err := strconv.ParseFloat(strings.TrimSpace(field), 64)
			if err != nil {
				return usagef("--sweep %q: want comma-separated fractions of the peak, e.g. 0.25,0.5,1", sweep)
			}
			cfg.Sweep = append(cfg.Sweep, f)
		}
	}
	if cfg.WorkerProcesses > 0 || b.scale {
		cfg.WorkerBinary, err = os.Executable()
		if err != nil {
			return errors.Wrap(err, "find the arbiter binary for the worker processes")
		}
	}
	for _, p := range []struct {
		path string
		dst  *io.Writer
	}{{cpuProfile, &cfg.CPUProfile}, {memProfile, &cfg.MemProfile}} {
		if p.path == "" {
			continue
		}
		file, err := os.Create(p.path)
		if err != nil {
			return usagef("create profile %s: %v", p.path, err)
		}
		defer file.Close()
		*p.dst = file
	}

	switch {
	case brokers == "" && redisURL == "":
		f := commonFlags{redisMode: b.redisMode}
		if err := f.standaloneOnly("the embedded bench"); err != nil {
			return err
		}
		embedded, err := startEmbedded(ctx, embeddedConfig{
			kafkaAddr: "127.0.0.1:0", redisAddr: "127.0.0.1:0", partitions: int32(cfg.Partitions), log: zap.NewNop(),
		})
		if err != nil {
			return err
		}
		defer embedded.close()
		cfg.Brokers = []string{embedded.kafkaAddr}
		cfg.RedisURL = "redis://" + embedded.redisAddr + "/0"
		cfg.Target = "EMBEDDED (not a real broker): kfake and miniredis in this process"
		cfg.BrokerPID = 0
	case brokers == "" || redisURL == "":
		return usagef("give both --brokers and --redis, or neither for the embedded servers")
	default:
		f := b.security
		f.brokers, f.redisURL, f.redisMode = brokers, redisURL, b.redisMode
		cfg.Brokers = f.brokerList()
		cfg.Security = bench.Security{Kafka: f.kafka, Redis: f.redis}
		cfg.RedisURL, cfg.RedisMode = redisURL, redisclient.Mode(b.redisMode)
		store, closeStore, err := f.redisStore(ctx, versionstore.Options{})
		if err != nil {
			return err
		}
		_ = store
		closeStore()
		cfg.Target = "Kafka " + brokers + ", Redis " + redisclient.RedactURL(redisURL)
		if mode := redisclient.Mode(b.redisMode); mode != redisclient.ModeStandalone {
			cfg.Target += " (" + string(mode) + ")"
		}
	}

	if b.contend {
		return runContention(ctx, b.contention, cfg, asJSON, stdout, stderr)
	}
	if b.scale {
		return runScaleOut(ctx, b, cfg, stdout)
	}

	report, err := bench.Run(ctx, cfg)
	if err != nil {
		return benchError(err)
	}
	if report.Sweep != nil && plotPath != "" {
		if err := os.MkdirAll(filepath.Dir(plotPath), 0o755); err != nil {
			return errors.Wrapf(err, "create the plot's directory for %s", plotPath)
		}
		file, err := os.Create(plotPath)
		if err != nil {
			return errors.Wrapf(err, "create the plot %s", plotPath)
		}
		title := "arbiter bench: " + report.Target + ", " + strconv.Itoa(report.Machine.CPUs) + " CPUs, " +
			strconv.Itoa(report.Settings.Partitions) + " partitions, " + strconv.Itoa(report.Settings.Aggregates) + " aggregates"
		if err := report.Sweep.WritePlot(file, title); err != nil {
			_ = file.Close()
			return err
		}
		if err := file.Close(); err != nil {
			return errors.Wrapf(err, "write the plot %s", plotPath)
		}
		printf(stderr, "bench: plot written to %s\n", plotPath)
	}
	encoded, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return errors.Wrap(err, "encode the report")
	}
	if jsonOut != "" {
		if err := os.WriteFile(jsonOut, append(encoded, '\n'), 0o644); err != nil {
			return errors.Wrapf(err, "write the report to %s", jsonOut)
		}
	}
	if asJSON {
		printf(stdout, "%s\n", encoded)
		return nil
	}
	report.WriteTable(stdout)
	return nil
}

// runContention runs the contention scenario (bench --contention): strict
// against rebase on a few hot aggregates, in one run.
func runContention(ctx context.Context, contention bench.ContentionConfig, cfg bench.Config, asJSON bool, stdout, stderr io.Writer) error {
	contention.Brokers, contention.RedisURL, contention.RedisMode, contention.Partitions = cfg.Brokers, cfg.RedisURL, cfg.RedisMode, cfg.Partitions
	contention.Security = cfg.Security
	contention.Progress, contention.Logger = stderr, cfg.Logger
	report, err := bench.RunContention(ctx, contention)
	if err != nil {
		var unreachable *bench.UnreachableError
		if errors.As(err, &unreachable) {
			return &unreachableError{err: err}
		}
		return err
	}
	if asJSON {
		encoded, err := json.MarshalIndent(report, "", "  ")
		if err != nil {
			return errors.Wrap(err, "encode the report")
		}
		printf(stdout, "%s\n", encoded)
		return nil
	}
	printf(stdout, "target: %s\n", cfg.Target)
	report.WriteTable(stdout)
	return nil
}

// runScaleOut runs the scale-out scenario (bench --scale-out).
func runScaleOut(ctx context.Context, b benchFlags, cfg bench.Config, stdout io.Writer) error {
	s := b.scaleOut
	s.Brokers, s.RedisURL, s.RedisMode, s.Security, s.Target = cfg.Brokers, cfg.RedisURL, cfg.RedisMode, cfg.Security, cfg.Target
	s.WorkerBinary, s.Aggregates, s.Stale, s.Batch, s.Seed = cfg.WorkerBinary, cfg.Aggregates, cfg.Stale, cfg.Batch, cfg.Seed
	s.WorkerArgs, s.Progress, s.Logger, s.BrokerPID = cfg.Tuning.WorkerArgs, cfg.Progress, cfg.Logger, cfg.BrokerPID
	if b.nSet {
		s.SaturationN = cfg.N
	}
	if b.partitionsSet {
		s.Partitions = cfg.Partitions
	}
	for _, name := range strings.Split(b.balancers, ",") {
		if name = strings.TrimSpace(name); name != "" {
			s.Balancers = append(s.Balancers, name)
		}
	}
	report, err := bench.RunScaleOut(ctx, s)
	if err != nil {
		return benchError(err)
	}
	encoded, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return errors.Wrap(err, "encode the report")
	}
	if b.jsonOut != "" {
		if err := os.WriteFile(b.jsonOut, append(encoded, '\n'), 0o644); err != nil {
			return errors.Wrapf(err, "write the report to %s", b.jsonOut)
		}
	}
	if b.asJSON {
		printf(stdout, "%s\n", encoded)
		return nil
	}
	report.WriteTable(stdout)
	return nil
}

// benchError gives a bench run's error its exit code: a usage error for a
// configuration the bench refuses, the unreachable-server code for Kafka or
// Redis it cannot reach.
func benchError(err error) error {
	var configErr *bench.ConfigError
	var unreachable *bench.UnreachableError
	switch {
	case errors.As(err, &configErr):
		return usagef("%v", err)
	case errors.As(err, &unreachable):
		return &unreachableError{err: err}
	}
	return err
}
