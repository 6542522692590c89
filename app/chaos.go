//go:build arbiter_faults

package app

import (
	"context"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/chaos"
	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
)

func (c *cli) chaosCommand() *cobra.Command {
	var f commonFlags
	var cfg chaos.Config
	var kafkaRestart string
	var partitions int
	var kafkaClusterCmd string
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "run workers and producers under injected faults, then verify (a binary built with -tags arbiter_faults)",
		Args:  cobra.NoArgs,
		RunE: c.run(func(ctx context.Context, _ []string) error {
			cfg.KafkaClusterCmd = strings.Fields(kafkaClusterCmd)
			return runChaos(ctx, f, cfg, kafkaRestart, partitions, c.stdout, c.stderr)
		}),
	}
	fs := cmd.Flags()
	f.register(fs)
	fs.DurationVar(&cfg.Duration, "duration", 2*time.Minute, "how long commands are produced and faults injected")
	fs.IntVar(&cfg.Rate, "rate", 200, "commands produced per second")
	fs.IntVar(&cfg.Aggregates, "aggregates", 300, "aggregates the commands go to")
	fs.Float64Var(&cfg.StaleShare, "stale", 0.1, "share of commands with a stale expected version")
	fs.Float64Var(&cfg.DuplicateShare, "duplicates", 0.05, "share of sends that repeat an earlier command record")
	fs.IntVar(&cfg.Workers, "workers", 3, "worker processes kept running")
	fs.IntVar(&partitions, "partitions", 12, "partitions of the run's topics")
	fs.DurationVar(&cfg.FaultInterval, "fault-interval", 0, "time between faults (default duration/14)")
	fs.DurationVar(&cfg.SessionTimeout, "session-timeout", 6*time.Second, "the workers' session and transaction timeout")
	fs.DurationVar(&cfg.QuiesceTimeout, "quiesce-timeout", 4*time.Minute, "how long to wait for every outcome after the last fault")
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed of the schedule and workload (default: random, printed)")
	bind(fs, &kafkaRestart, "kafka-restart-cmd", "ARBITER_KAFKA_RESTART_CMD", "", "command that restarts the broker on the same data, e.g. 'scripts/stack.sh restart-kafka'")
	fs.StringVar(&cfg.RedisServer, "redis-server", "redis-server", "the redis-server binary the run starts (with AOF on)")
	fs.IntVar(&cfg.KafkaBrokers, "kafka-brokers", 0, "brokers of a replicated Kafka (3 or more) at --brokers: the run checks them, creates its topics with replication factor 3 and min.insync.replicas 2, and injects broker-kill and broker-restart")
	bind(fs, &kafkaClusterCmd, "kafka-cluster-cmd", "ARBITER_KAFKA_CLUSTER_CMD", "", "command that acts on node N of the replicated Kafka, called with 'kill N', 'stop N' and 'start N', e.g. 'scripts/kafka-cluster.sh'")
	fs.StringSliceVar(&cfg.Faults, "faults", nil, "fault kinds to inject, comma-separated, e.g. broker-kill,kill,stall (default: every kind of the run's Redis and Kafka)")
	fs.StringVar(&cfg.Dir, "dir", "", "folder for the run's logs (default: a temporary one, removed after a clean run)")
	fs.BoolVar(&cfg.RedisCluster, "redis-cluster", false, "run on a Redis Cluster of the run's own (3 masters, 3 replicas) with the faults redis-failover and redis-master-kill instead of redis-restart and redis-rollback")
	fs.BoolVar(&cfg.RedisSentinel, "redis-sentinel", false, "run on a Sentinel set-up of the run's own (a master, a replica, 3 sentinels) with the faults sentinel-failover and sentinel-master-kill instead of redis-restart and redis-rollback; not with --redis-cluster")
	return cmd
}

// runChaos runs a chaos round against a real broker (see internal/chaos).
func runChaos(ctx context.Context, f commonFlags, cfg chaos.Config, kafkaRestart string, partitions int, stdout, stderr io.Writer) error {
	if err := f.standaloneOnly("chaos (it starts its own redis-server)"); err != nil {
		return err
	}
	cfg.Brokers = f.brokerList()
	if len(cfg.Brokers) == 0 {
		return usagef("chaos runs against a real Kafka broker: set --brokers or ARBITER_BROKERS")
	}
	cfg.Partitions = int32(partitions)
	cfg.KafkaRestart = strings.Fields(kafkaRestart)
	cfg.Out = stderr
	result, err := chaos.Run(ctx, cfg)
	if err != nil {
		return errors.Wrapf(err, "chaos run with seed %d (logs in %s)", result.Seed, result.Dir)
	}
	printf(stdout, "%s\n", strings.TrimRight(result.Summary(), "\n"))
	if !result.OK() {
		return &foundError{msg: "the chaos run found anomalies or a fault failed; rerun it with --seed " + strconv.FormatInt(result.Seed, 10) + " (logs in " + result.Dir + ")"}
	}
	return nil
}
