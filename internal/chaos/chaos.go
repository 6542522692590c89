// Package chaos runs Arbiter under faults: worker processes, producers with
// a share of stale expected versions (half of them opting in to rebasing on
// the Product aggregates) and duplicate sends, and faults
// injected on a seeded schedule — SIGKILL of workers (also in the gap between
// the Redis compare-and-set and the Kafka commit), SIGSTOP past the session
// timeout, restarts of redis-server (AOF on) and of the Kafka broker, and
// scaling up and down — and then checks the complete history with
// internal/verify.
package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	mathrand "math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/internal/topicadmin"
	"github.com/arbiter-cqrs/arbiter/internal/verify"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Fault kinds.
const (
	FaultKill         = "kill"          // SIGKILL a worker at a random moment
	FaultKillInGap    = "kill-in-gap"   // a worker exits between the Redis compare-and-set and the commit
	FaultStall        = "stall"         // SIGSTOP a worker past its session timeout, then SIGCONT
	FaultRedisRestart = "redis-restart" // restart redis-server (AOF on)
	// FaultRedisRollback restores an older snapshot of redis-server (its
	// marker intact): the workers must stop deciding, and the round
	// recovers by stopping them, running rebuild-versions and starting them.
	FaultRedisRollback = "redis-rollback"
	FaultKafkaRestart  = "kafka-restart" // restart the Kafka broker
	FaultScaleUp       = "scale-up"      // start one more worker
	FaultScaleDown     = "scale-down"    // stop a worker gracefully
	// FaultBrokerKill SIGKILLs one node of a replicated Kafka (see
	// BrokerFaults), starts it again after a while, and waits until it is
	// back in the ISR.
	FaultBrokerKill    = "broker-kill"
	FaultBrokerRestart = "broker-restart" // stop one node of a replicated Kafka gracefully, then start it
	// FaultRedisFailover and FaultRedisMasterKill need RedisCluster: a
	// graceful CLUSTER FAILOVER, and a killed master whose replica is
	// promoted without its last writes (see killRedisMaster).
	FaultRedisFailover   = "redis-failover"
	FaultRedisMasterKill = "redis-master-kill"
	// FaultSentinelFailover and FaultSentinelMasterKill need
	// RedisSentinel: a graceful SENTINEL FAILOVER (see failoverSentinel),
	// and a killed master whose replica the sentinels promote without its
	// last writes (see killSentinelMaster).
	FaultSentinelFailover   = "sentinel-failover"
	FaultSentinelMasterKill = "sentinel-master-kill"
)

// AllFaults lists every fault kind.
var AllFaults = []string{FaultKill, FaultKillInGap, FaultStall, FaultRedisRestart, FaultRedisRollback, FaultKafkaRestart, FaultScaleUp, FaultScaleDown}

// Config configures a run. Zero fields take the defaults noted.
type Config struct {
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// Binary is the arbiter binary the workers run. default: this process's
	Binary string
	// RedisServer is the redis-server binary. default: "redis-server"
	RedisServer string
	// KafkaRestart is the command that restarts the broker on the same data
	// (e.g. scripts/stack.sh restart-kafka). Empty: that fault is skipped,
	// and the summary says so.
	KafkaRestart []string
	// Duration is how long commands are produced and faults injected.
	// default: 2m
	Duration time.Duration
	// Rate is the commands produced per second. default: 200
	Rate int
	// Aggregates is the number of aggregates. default: 300
	Aggregates int
	// StaleShare is the share of commands with a stale expected version.
	// default: 0.1
	StaleShare float64
	// DuplicateShare is the share of sends that repeat an earlier command
	// record. default: 0.05
	DuplicateShare float64
	// Workers is the number of worker processes kept running. default: 3
	Workers int
	// Partitions of the run's topics. default: 12
	Partitions int32
	// FaultInterval is the time between faults. default: Duration / 14
	FaultInterval time.Duration
	// SessionTimeout and TransactionTimeout of the workers. default: 6s
	SessionTimeout time.Duration
	// QuiesceTimeout bounds the wait for every command's outcome after the
	// last fault. default: 4m
	QuiesceTimeout time.Duration
	// Seed seeds the schedule and the workload. default: random
	Seed int64
	// Dir holds the run's logs and Redis data. default: a new temporary
	// folder, removed after a clean run
	Dir string
	// Out receives the fault log and progress. default: os.Stderr
	Out io.Writer
	// KafkaBrokers is the number of brokers of a replicated Kafka (3 or
	// more): the run checks the cluster has them, creates its topics with
	// replication factor 3 and min.insync.replicas 2, and injects the
	// BrokerFaults. default: 0, one broker and its defaults
	KafkaBrokers int
	// KafkaClusterCmd is the command that acts on node N of the replicated
	// Kafka, called with "kill N", "stop N" (graceful) and "start N" (which
	// returns once the node answers), e.g. scripts/kafka-cluster.sh. Empty:
	// the BrokerFaults are skipped, and the summary says so.
	KafkaClusterCmd []string
	// RedisCluster runs the workers on a Redis Cluster of the run's own
	// (3 masters, 3 replicas) instead of one redis-server.
	RedisCluster bool
	// RedisSentinel runs the workers on a Sentinel set-up of the run's own
	// (a master, a replica, 3 sentinels) instead of one redis-server; not
	// together with RedisCluster.
	RedisSentinel bool
	// Faults are the fault kinds injected. default: AllFaults, with
	// ClusterFaults (SentinelFaults) in place of the single redis-server's
	// redis-restart and redis-rollback when RedisCluster (RedisSentinel) is
	// set, and BrokerFaults in
	// place of kafka-restart on a replicated Kafka
	Faults []string
}

func (c *Config) setDefaults() error {
	if c.Binary == "" {
		binary, err := os.Executable()
		if err != nil {
			return errors.Wrap(err, "find the arbiter binary")
		}
		c.Binary = binary
	}
	if c.RedisServer == "" {
		c.RedisServer = "redis-server"
	}
	if c.Duration <= 0 {
		c.Duration = 2 * time.Minute
	}
	if c.Rate <= 0 {
		c.Rate = 200
	}
	if c.Aggregates <= 0 {
		c.Aggregates = 300
	}
	if c.StaleShare <= 0 {
		c.StaleShare = 0.1
	}
	if c.DuplicateShare <= 0 {
		c.DuplicateShare = 0.05
	}
	if c.Workers <= 0 {
		c.Workers = 3
	}
	if c.Partitions <= 0 {
		c.Partitions = 12
	}
	if c.FaultInterval <= 0 {
		c.FaultInterval = c.Duration / 14
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 6 * time.Second
	}
	if c.QuiesceTimeout <= 0 {
		c.QuiesceTimeout = 4 * time.Minute
	}
	if c.Seed == 0 {
		c.Seed = time.Now().UnixNano()
	}
	if c.Out == nil {
		c.Out = os.Stderr
	}
	if len(c.Brokers) == 0 {
		return errors.New("chaos needs Kafka brokers (--brokers)")
	}
	return c.checkFaults()
}

// Result is what a run did and found.
type Result struct {
	Seed     int64
	Commands int
	// Faults counts the faults injected, by kind.
	Faults map[string]int
	// FaultLog lists every fault, in order.
	FaultLog []string
	// PredictedRebases is how many rebased commands the producer
	// expected; Report.Rebased counts those the checker found.
	PredictedRebases int
	// LostWrites lists the faults that lost Redis writes, with their
	// detection and recovery.
	LostWrites []LostWrites
	// Report is the history checker's report.
	Report verify.Report
	// Failures lists the faults that could not complete (a broker that did
	// not come back); any fails the run.
	Failures []string
	// Dir holds the logs.
	Dir string
}

// OK reports whether the run found no anomaly.
func (r Result) OK() bool { return r.Report.OK() && len(r.Failures) == 0 }

// Summary returns the run's summary for people.
func (r Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d\n", r.Seed)
	kinds := make([]string, 0, len(r.Faults))
	for kind := range r.Faults {
		kinds = append(kinds, kind)
	}
	sort.Strings(kinds)
	var parts []string
	for _, kind := range kinds {
		parts = append(parts, fmt.Sprintf("%s=%d", kind, r.Faults[kind]))
	}
	fmt.Fprintf(&b, "faults injected by kind: %s\n", strings.Join(parts, " "))
	fmt.Fprintf(&b, "rebases predicted by the producer: %d\n", r.PredictedRebases)
	for _, failure := range r.Failures {
		fmt.Fprintf(&b, "FAILED fault: %s\n", failure)
	}
	b.WriteString(lostWritesSummary(r.LostWrites))
	b.WriteString(r.Report.Summary())
	return b.String()
}

// run is one chaos run's state.
type run struct {
	cfg       Config
	start     time.Time
	rng       *mathrand.Rand
	name      string
	topics    [3]string
	redis     *redisServer
	cluster   *redisCluster
	sentinel  *redisSentinel
	mu        sync.Mutex
	workers   []*process
	started   int
	faults    map[string]int
	faultLog  []string
	keyPrefix string
	// rebasePolicies are the workers' (examples/product's), for the
	// checker; predictedRebases counts the rebases the producer expects.
	rebasePolicies   map[string]processor.RebasePolicy
	predictedRebases int
	// failures are the faults that could not complete; brokerFailed stops
	// the broker faults after one left a broker out.
	failures     []string
	brokerFailed bool
	lostWrites   []LostWrites
}

// Run runs the chaos round: it creates its own topics and redis-server,
// starts the workers, produces for cfg.Duration while injecting faults, waits
// for every outcome, and checks the history.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return Result{}, err
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := fmt.Sprintf("chaos-%d-%s", cfg.Seed, hex.EncodeToString(suffix))
	r := &run{
		cfg:       cfg,
		start:     time.Now(),
		rng:       mathrand.New(mathrand.NewSource(cfg.Seed)),
		name:      name,
		topics:    [3]string{name + "-commands", name + "-events", name + "-conflicts"},
		faults:    make(map[string]int),
		keyPrefix: name,

		rebasePolicies: rebasePolicies(),
	}
	result := Result{Seed: cfg.Seed, Faults: r.faults}
	if r.cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "arbiter-chaos-")
		if err != nil {
			return result, errors.Wrap(err, "create the run's folder")
		}
		r.cfg.Dir = dir
	}
	result.Dir = r.cfg.Dir
	r.logf("seed %d; %s of commands at %d/s over %d aggregates (%.0f%% stale, %.0f%% duplicate sends), %d workers, %d partitions; logs in %s",
		cfg.Seed, cfg.Duration, cfg.Rate, cfg.Aggregates, 100*cfg.StaleShare, 100*cfg.DuplicateShare, cfg.Workers, cfg.Partitions, r.cfg.Dir)

	admin, closeAdmin, err := r.admin()
	if err != nil {
		return result, err
	}
	defer closeAdmin()
	if err := r.createTopics(ctx, admin); err != nil {
		return result, err
	}
	defer r.deleteTopics(admin)
	if err := r.checkCluster(ctx, admin); err != nil {
		return result, err
	}

	redisDir := filepath.Join(r.cfg.Dir, "redis")
	if err := os.MkdirAll(redisDir, 0o755); err != nil {
		return result, errors.Wrap(err, "create the redis folder")
	}
	stopRedis, err := r.startRedisStore(ctx, redisDir)
	if err != nil {
		return result, err
	}
	defer stopRedis()
	defer r.stopWorkers()
	for i := 0; i < cfg.Workers; i++ {
		if _, err := r.startWorker(nil); err != nil {
			return result, err
		}
	}

	produceCtx, stopProducing := context.WithTimeout(ctx, cfg.Duration)
	defer stopProducing()
	var wg sync.WaitGroup
	var produced int
	var produceErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		produced, produceErr = r.produce(produceCtx)
	}()
	r.injectFaults(produceCtx)
	wg.Wait()
	result.Commands = produced
	result.PredictedRebases = r.predictedRebases
	if produceErr != nil {
		return result, produceErr
	}
	r.logf("produced %d command records (%d rebases predicted); faults done, waiting for every outcome", produced, r.predictedRebases)
	r.healAll(ctx)

	report, err := r.quiesce(ctx)
	result.Report = report
	result.FaultLog = r.faultLog
	result.Failures = r.failures
	result.LostWrites = r.lostWrites
	if err != nil {
		return result, err
	}
	if report.OK() && r.cfg.Dir != cfg.Dir {
		_ = os.RemoveAll(r.cfg.Dir)
	}
	return result, nil
}

func (r *run) logf(format string, args ...any) { logf(r.cfg.Out, r.start, format, args...) }

func (r *run) admin() (*kadm.Client, func(), error) {
	client, err := kgo.NewClient(kgo.SeedBrokers(r.cfg.Brokers...))
	if err != nil {
		return nil, nil, errors.Wrap(err, "create a Kafka client")
	}
	return kadm.NewClient(client), client.Close, nil
}

func (r *run) createTopics(ctx context.Context, admin *kadm.Client) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := topicadmin.Create(ctx, admin, r.topicSpec())
	return errors.Wrapf(err, "create the run's topics %v", r.topics)
}

func (r *run) deleteTopics(admin *kadm.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.DeleteTopics(ctx, r.topics[:]...); err != nil {
		r.logf("could not delete the run's topics: %v", err)
	}
}

// startWorker starts one worker process with extra environment variables.
func (r *run) startWorker(env []string) (*process, error) {
	r.mu.Lock()
	r.started++
	id := r.started
	r.mu.Unlock()
	name := fmt.Sprintf("worker-%d", id)
	timeout := r.cfg.SessionTimeout.String()
	args := append([]string{"worker",
		"--brokers", strings.Join(r.cfg.Brokers, ",")},
		r.redisArgs()...)
	proc, err := startProcess(name, filepath.Join(r.cfg.Dir, name+".log"), env, r.cfg.Binary, append(args,
		"--commands-topic", r.topics[0], "--events-topic", r.topics[1], "--conflicts-topic", r.topics[2],
		"--group", r.name, "--key-prefix", r.keyPrefix,
		"--session-timeout", timeout, "--transaction-timeout", timeout,
		"--max-batch", "500", "--log-format", "json",
		"--http-addr", "127.0.0.1:0",
	)...)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.workers = append(r.workers, proc)
	r.mu.Unlock()
	return proc, nil
}

// live returns the workers that still run.
func (r *run) live() []*process {
	r.mu.Lock()
	defer r.mu.Unlock()
	var live []*process
	for _, w := range r.workers {
		if !w.exited() {
			live = append(live, w)
		}
	}
	return live
}

func (r *run) stopWorkers() {
	for _, w := range r.live() {
		w.stop(20 * time.Second)
	}
}

// produce sends commands at the configured rate until ctx ends. Each
// aggregate's commands carry the version a sender that saw every earlier
// command applied would expect, except a share that carry an older one
// (stale), and a share of sends repeat an earlier record byte for byte.
func (r *run) produce(ctx context.Context) (int, error) {
	client, err := kgo.NewClient(kgo.SeedBrokers(r.cfg.Brokers...), kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordDeliveryTimeout(2*time.Minute))
	if err != nil {
		return 0, errors.Wrap(err, "create the producer")
	}
	defer client.Close()
	if err := requireAcksAll(client); err != nil {
		return 0, err
	}
	rng := mathrand.New(mathrand.NewSource(r.cfg.Seed + 1))
	next := make([]int64, r.cfg.Aggregates)
	products := newProductWorkload(r.cfg.Aggregates)
	var sent []*kgo.Record
	var mu sync.Mutex
	var firstErr error
	count := 0
	tick := 50 * time.Millisecond
	perTick := max(1, r.cfg.Rate*int(tick/time.Millisecond)/1000)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	lastReport := time.Now()
	for {
		select {
		case <-ctx.Done():
			r.predictedRebases = products.Predicted
			flushCtx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if err := client.Flush(flushCtx); err != nil {
				return count, errors.Wrap(err, "flush the producer")
			}
			mu.Lock()
			defer mu.Unlock()
			return count, firstErr
		case <-ticker.C:
		}
		for i := 0; i < perTick; i++ {
			var rec *kgo.Record
			if len(sent) > 0 && rng.Float64() < r.cfg.DuplicateShare {
				original := sent[rng.Intn(len(sent))]
				rec = &kgo.Record{Topic: original.Topic, Key: original.Key, Value: original.Value}
			} else {
				a := rng.Intn(r.cfg.Aggregates)
				var cmd commands.Command
				if products.isProduct(a) {
					cmd = products.command(rng, a, count, r.cfg.StaleShare)
				} else {
					expected := next[a]
					if expected > 0 && rng.Float64() < r.cfg.StaleShare {
						expected = rng.Int63n(expected)
					} else {
						next[a]++
					}
					cmd = commands.Command{
						ID:              fmt.Sprintf("c-%d-%d", a, count),
						Type:            "AppendEvents",
						ExpectedVersion: expected,
						Payload:         []byte(fmt.Sprintf(`{"events":[{"type":"Ticked","payload":{"n":%d}}]}`, count)),
					}
				}
				cmd.AggregateID = fmt.Sprintf("%s-agg-%d", r.name, a)
				value, err := cmd.Encode()
				if err != nil {
					return count, err
				}
				rec = &kgo.Record{Topic: r.topics[0], Key: []byte(cmd.AggregateID), Value: value}
				if len(sent) < 5000 {
					sent = append(sent, rec)
				} else {
					sent[rng.Intn(len(sent))] = rec
				}
			}
			count++
			// Not ctx: records still buffered when production ends must be
			// delivered, not failed.
			client.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = errors.Wrap(err, "produce a command")
					}
					mu.Unlock()
				}
			})
		}
		if time.Since(lastReport) >= 15*time.Second {
			r.logf("progress: %d commands produced, %d workers running", count, len(r.live()))
			lastReport = time.Now()
		}
	}
}

// injectFaults injects faults until ctx ends: first every kind once, in a
// seeded order, then kinds drawn at random.
func (r *run) injectFaults(ctx context.Context) {
	order := append([]string(nil), r.cfg.Faults...)
	r.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	deadline, _ := ctx.Deadline()
	for i := 0; ; i++ {
		wait := r.cfg.FaultInterval/2 + time.Duration(r.rng.Int63n(int64(r.cfg.FaultInterval)))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if i >= len(order) && time.Until(deadline) < r.cfg.SessionTimeout+5*time.Second {
			return // a fault now would outlast the production phase
		}
		kind := r.cfg.Faults[r.rng.Intn(len(r.cfg.Faults))]
		if i < len(order) {
			kind = order[i]
		}
		r.inject(ctx, kind)
		r.keepWorkers()
	}
}

func (r *run) record(kind, format string, args ...any) {
	line := fmt.Sprintf("t+%.1fs %s: %s", time.Since(r.start).Seconds(), kind, fmt.Sprintf(format, args...))
	r.mu.Lock()
	r.faults[kind]++
	r.faultLog = append(r.faultLog, line)
	r.mu.Unlock()
	fmt.Fprintf(r.cfg.Out, "chaos: fault %s\n", line)
}

func (r *run) pick() *process {
	live := r.live()
	if len(live) == 0 {
		return nil
	}
	return live[r.rng.Intn(len(live))]
}

func (r *run) inject(ctx context.Context, kind string) {
	switch kind {
	case FaultKill:
		if w := r.pick(); w != nil {
			w.signal(syscall.SIGKILL)
			w.wait(10 * time.Second)
			r.record(kind, "SIGKILL %s (pid %d)", w.name, w.pid())
		}
	case FaultKillInGap:
		hook := "ARBITER_TEST_EXIT_AFTER_REDIS_COMMIT"
		if r.rng.Intn(2) == 1 {
			hook = "ARBITER_TEST_EXIT_BEFORE_END"
		}
		w, err := r.startWorker([]string{hook + "=1"})
		if err != nil {
			r.logf("cannot start a worker: %v", err)
			return
		}
		if w.wait(3*r.cfg.SessionTimeout + 20*time.Second) {
			r.record(kind, "%s (pid %d) exited with %d at %s", w.name, w.pid(), w.exitCode(), hook)
			return
		}
		w.signal(syscall.SIGKILL)
		w.wait(10 * time.Second)
		r.record(kind, "%s (pid %d) got no batch in time for %s; SIGKILLed instead", w.name, w.pid(), hook)
	case FaultStall:
		if w := r.pick(); w != nil {
			w.signal(syscall.SIGSTOP)
			pause := r.cfg.SessionTimeout + 3*time.Second
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
			w.signal(syscall.SIGCONT)
			r.record(kind, "SIGSTOP %s (pid %d) for %s, then SIGCONT", w.name, w.pid(), pause)
		}
	case FaultRedisRestart:
		began := time.Now()
		if err := r.redis.restart(ctx); err != nil {
			r.logf("redis-server did not come back: %v", err)
			return
		}
		r.record(kind, "redis-server restarted with its AOF in %s", time.Since(began).Round(time.Millisecond))
	case FaultRedisRollback:
		r.rollbackRedis(ctx, kind)
	case FaultKafkaRestart:
		if len(r.cfg.KafkaRestart) == 0 {
			r.logf("skipping %s: no restart command (--kafka-restart-cmd)", kind)
			return
		}
		began := time.Now()
		// Never cut a restart short: a broker left stopped ends the run.
		restartCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(restartCtx, r.cfg.KafkaRestart[0], r.cfg.KafkaRestart[1:]...).CombinedOutput()
		if err != nil {
			r.logf("the Kafka restart failed: %v: %s", err, out)
			return
		}
		r.record(kind, "broker restarted in %s", time.Since(began).Round(time.Millisecond))
	case FaultBrokerKill, FaultBrokerRestart:
		r.brokerFault(ctx, kind)
	case FaultRedisFailover:
		r.failoverRedis(ctx, kind)
	case FaultRedisMasterKill:
		r.killRedisMaster(ctx, kind)
	case FaultSentinelFailover:
		r.failoverSentinel(ctx, kind)
	case FaultSentinelMasterKill:
		r.killSentinelMaster(ctx, kind)
	case FaultScaleUp:
		if w, err := r.startWorker(nil); err == nil {
			r.record(kind, "started %s (pid %d)", w.name, w.pid())
		}
	case FaultScaleDown:
		if live := r.live(); len(live) > 1 {
			w := live[r.rng.Intn(len(live))]
			w.stop(30 * time.Second)
			r.record(kind, "SIGTERM %s (pid %d): exited with %d", w.name, w.pid(), w.exitCode())
		}
	}
}

// keepWorkers starts workers until the configured number runs.
func (r *run) keepWorkers() {
	for len(r.live()) < r.cfg.Workers {
		if _, err := r.startWorker(nil); err != nil {
			r.logf("cannot start a worker: %v", err)
			return
		}
	}
}

// healAll continues stopped workers and brings the worker count back.
func (r *run) healAll(context.Context) {
	for _, w := range r.live() {
		w.signal(syscall.SIGCONT)
	}
	r.keepWorkers()
}

// quiesce waits until every command record has an outcome (or the timeout),
// then checks the history, Redis included.
func (r *run) quiesce(ctx context.Context) (verify.Report, error) {
	cfg := verify.Config{Brokers: r.cfg.Brokers, CommandsTopic: r.topics[0], EventsTopic: r.topics[1], ConflictsTopic: r.topics[2]}
	deadline := time.Now().Add(r.cfg.QuiesceTimeout)
	client, err := r.redisClient()
	if err != nil {
		return verify.Report{}, err
	}
	defer client.Close()
	for {
		history, err := verify.Read(ctx, cfg)
		if err != nil {
			return verify.Report{}, errors.Wrap(err, "read the history")
		}
		report := verify.Check(history, verify.CheckOptions{RebasePolicies: r.rebasePolicies})
		missing := 0
		for _, a := range report.Anomalies {
			if a.Kind == verify.KindNoOutcome {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			// Quiet: the workers have nothing left; compare with Redis too.
			versions, err := versionstore.New(client, versionstore.Options{KeyPrefix: r.keyPrefix}).Versions(ctx)
			if err != nil {
				return report, errors.Wrap(err, "read the versions in redis")
			}
			report = verify.Check(history, verify.CheckOptions{RedisVersions: versions, RebasePolicies: r.rebasePolicies})
			// A second client, kcat, must see the same committed records.
			disagreements, err := verify.CrossCheck(ctx, cfg, history)
			if err != nil {
				return report, err
			}
			report.Anomalies = append(report.Anomalies, disagreements...)
			r.logf("cross-checked the output topics with kcat: %d disagreements", len(disagreements))
			r.logf("records of aborted transactions: %d in the events topic, %d in the conflicts topic", len(history.AbortedEvents), len(history.AbortedConflicts))
			if !report.OK() {
				for _, w := range r.workers {
					r.logf("last lines of %s:\n%s", w.name, w.tail(15))
				}
			}
			return report, nil
		}
		r.logf("%d command records still without an outcome; waiting", missing)
		select {
		case <-ctx.Done():
			return report, ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}
