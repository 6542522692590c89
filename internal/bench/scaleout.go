package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/arbiter-cqrs/arbiter/kafkaclient"
	"github.com/arbiter-cqrs/arbiter/redisclient"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"
)

// ScaleOutConfig configures the scale-out scenario (bench --scale-out): many
// partitions shared by many `arbiter worker` processes on this machine, once
// per group balancer. Each balancer gets fresh topics, a fresh group and
// fresh workers; on them the scenario
//
//  1. reads the group's assignment (partitions per worker, and that every
//     partition is assigned exactly once);
//  2. offers SaturationN commands as fast as the producer takes them
//     (saturation throughput, in all and per worker);
//  3. offers SteadyFraction of that throughput, steadily, and under it makes
//     the group change: nothing (the control), an extra worker joining, that
//     worker leaving (SIGTERM), another joining, and that one crashing
//     (SIGKILL), each after Settle of undisturbed load. For each it reports
//     the rebalance time (see RebalanceEvent), the partitions that changed
//     owner and the assignment after it;
//  4. stops the load, waits for the outcome of every command produced and
//     checks each has exactly the expected one.
//
// Zero fields take the defaults noted.
type ScaleOutConfig struct {
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// RedisURL is the URL of Redis. Required.
	RedisURL string
	// RedisMode is how RedisURL is read. default: standalone
	RedisMode redisclient.Mode
	// Security are the TLS, SASL and ACL settings of a secured Kafka and
	// Redis.
	Security Security
	// Target describes the servers in the report. default: the addresses
	Target string
	// WorkerBinary is the arbiter binary the worker processes run. Required.
	WorkerBinary string
	// Partitions of the run's topics. default: 100
	Partitions int
	// Workers is the number of worker processes. default: 10
	Workers int
	// Balancers are the group balancers measured, one after the other
	// (kafkaclient.BalancerNames). default: cooperative-sticky, sticky
	Balancers []string
	// SaturationN is the number of commands of the saturation step.
	// default: 100000
	SaturationN int
	// Aggregates is the number of aggregates the commands go to.
	// default: 10000
	Aggregates int
	// Stale is the share of stale commands. default: 0.1 (negative: 0)
	Stale float64
	// Batch is the workers' MaxBatch. default: 2000
	Batch int
	// SteadyFraction is the steady load under the group changes, as a
	// fraction of the measured saturation throughput. default: 0.5
	SteadyFraction float64
	// Settle is how long the steady load runs undisturbed before each
	// group change. default: 3s
	Settle time.Duration
	// EventTimeout bounds the wait for every partition to decide again
	// after a group change. default: 90s
	EventTimeout time.Duration
	// SteadyBudget is how long the steady load can last: the commands of
	// step 3 are generated up front, MaxSteadyRate × SteadyBudget of them.
	// default: 120s
	SteadyBudget time.Duration
	// MaxSteadyRate caps the steady load, in commands/s. default: 10000
	MaxSteadyRate float64
	// WorkerArgs are extra `arbiter worker` flags for every process.
	WorkerArgs []string
	// BrokerPID, when set, is the broker's process ID: its CPU per 1,000
	// commands of the saturation step is reported too.
	BrokerPID int
	// Seed makes the workload reproducible. default: 1
	Seed uint64
	// Progress receives progress lines. default: none
	Progress io.Writer
	// Logger receives the run's logs. default: zap.NewNop()
	Logger *zap.Logger
}

func (c *ScaleOutConfig) setDefaults() {
	if c.Partitions <= 0 {
		c.Partitions = 100
	}
	if c.Workers <= 0 {
		c.Workers = 10
	}
	if len(c.Balancers) == 0 {
		c.Balancers = []string{kafkaclient.BalancerCooperativeSticky, kafkaclient.BalancerSticky}
	}
	if c.SaturationN <= 0 {
		c.SaturationN = 100_000
	}
	if c.SteadyFraction <= 0 {
		c.SteadyFraction = 0.5
	}
	if c.Settle <= 0 {
		c.Settle = 3 * time.Second
	}
	if c.EventTimeout <= 0 {
		c.EventTimeout = 90 * time.Second
	}
	if c.SteadyBudget <= 0 {
		c.SteadyBudget = 120 * time.Second
	}
	if c.MaxSteadyRate <= 0 {
		c.MaxSteadyRate = 10_000
	}
	if c.Target == "" {
		c.Target = fmt.Sprintf("Kafka %v, Redis %s", c.Brokers, redisclient.RedactURL(c.RedisURL))
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Validate reports every problem of the configuration at once.
func (c *ScaleOutConfig) Validate() error {
	var problems []error
	if c.WorkerBinary == "" {
		problems = append(problems, errors.New("the scale-out scenario runs worker processes: it needs the arbiter binary"))
	}
	for _, name := range c.Balancers {
		if _, err := kafkaclient.Balancer(name); err != nil {
			problems = append(problems, err)
		}
	}
	if c.SteadyFraction > 1 {
		problems = append(problems, errors.Newf("steady load %v of the peak: give a fraction up to 1", c.SteadyFraction))
	}
	return errors.Join(problems...)
}

// ScaleOutReport is what the scale-out scenario measured.
type ScaleOutReport struct {
	Target             string  `json:"target"`
	Machine            Machine `json:"machine"`
	Partitions         int     `json:"partitions"`
	Workers            int     `json:"workers"`
	Aggregates         int     `json:"aggregates"`
	Stale              float64 `json:"stale"`
	Batch              int     `json:"batch"`
	SaturationCommands int     `json:"saturation_commands"`
	SteadyFraction     float64 `json:"steady_fraction"`
	SettleSecs         float64 `json:"settle_seconds"`
	WorkerArgs         string  `json:"worker_args"`
	// Runs has one entry per balancer.
	Runs []ScaleOutRun `json:"runs"`
}

// ScaleOutRun is one balancer's figures.
type ScaleOutRun struct {
	Balancer   string           `json:"balancer"`
	Assignment AssignmentReport `json:"assignment"`
	Saturation SaturationReport `json:"saturation"`
	// SteadyRate is the offered load under the group changes, commands/s:
	// the steady fraction of the saturation throughput, at most
	// MaxSteadyRate.
	SteadyRate float64          `json:"steady_rate"`
	Events     []RebalanceEvent `json:"events"`
	// SteadyCommands were produced under the group changes; Missing, Extra
	// and Mismatched count their outcomes as RunReport does (all 0).
	SteadyCommands int64 `json:"steady_commands"`
	Missing        int64 `json:"missing"`
	Extra          int64 `json:"extra"`
	Mismatched     int64 `json:"mismatched"`
	// WorkerRecordsMin and Max are the fewest and most records one of the
	// original worker processes decided over the whole run (from its
	// 'worker stopped' line).
	WorkerRecordsMin int64 `json:"worker_records_min"`
	WorkerRecordsMax int64 `json:"worker_records_max"`
}

// AssignmentReport is the group's assignment of the commands topic, as the
// group coordinator describes it.
type AssignmentReport struct {
	Members int `json:"members"`
	// PartitionsPerMember is each member's partition count, ascending.
	PartitionsPerMember []int `json:"partitions_per_member"`
	MinPartitions       int   `json:"min_partitions"`
	MaxPartitions       int   `json:"max_partitions"`
	// Unassigned partitions have no member; MultiplyAssigned more than one.
	// Both must be 0.
	Unassigned       int `json:"unassigned"`
	MultiplyAssigned int `json:"multiply_assigned"`
	// owner maps each partition to its member ID.
	owner map[int32]string
}

// SaturationReport is the saturation step's figures.
type SaturationReport struct {
	Commands int `json:"commands"`
	// Throughput is commands/s from the first outcome to the last, for
	// every worker together; PerWorker the same over the worker count.
	Throughput   float64 `json:"throughput"`
	PerWorker    float64 `json:"throughput_per_worker"`
	DurationSecs float64 `json:"duration_seconds"`
	// WorkerCPUPer1k is the worker processes' CPU seconds per 1,000
	// commands; WorkerCores their CPU seconds per second (cores busy).
	WorkerCPUPer1k float64 `json:"worker_cpu_seconds_per_1k"`
	WorkerCores    float64 `json:"worker_cores"`
	RedisCPUPer1k  float64 `json:"redis_cpu_seconds_per_1k"`
	BrokerCPUPer1k float64 `json:"broker_cpu_seconds_per_1k,omitempty"`
	P99Ms          float64 `json:"p99_ms"`
	// RejoinsBefore counts the worker sessions that failed and rejoined
	// from the start until the load, Rejoins those during the step (see
	// RebalanceEvent.Rejoins).
	RejoinsBefore int `json:"rejoins_before"`
	Rejoins       int `json:"rejoins"`
}

// RebalanceEvent is one group change under the steady load. Times count
// from the change: the process started (a join) or the signal sent (a
// leave or a crash).
type RebalanceEvent struct {
	// Event is "none (control)", "join", "leave (SIGTERM)" or
	// "crash (SIGKILL)".
	Event   string `json:"event"`
	Members int    `json:"members"`
	// GroupStableMs is when the coordinator first described the group as
	// Stable with its new member count and every partition assigned
	// (polled every 100 ms).
	GroupStableMs float64 `json:"group_stable_ms"`
	// AllDecidingMs is the rebalance time: when, for the last of the
	// partitions, the outcome of a command produced after GroupStableMs was
	// readable (read_committed) — every partition decides again. The
	// control event shows its floor: the time every partition takes to see
	// one new command and decide it.
	AllDecidingMs float64 `json:"all_deciding_ms"`
	// MaxLatencyMs is the longest produce→outcome time of the commands
	// produced from the change until AllDecidingMs: the longest a command
	// waited for the rebalance.
	MaxLatencyMs float64 `json:"max_latency_ms"`
	// MovedPartitions changed owner; Assignment is the group's when it was
	// first Stable (or, not settled, when the time-out ran out).
	MovedPartitions int              `json:"moved_partitions"`
	Assignment      AssignmentReport `json:"assignment"`
	// Rejoins counts the worker sessions that failed and rejoined the
	// group with a new client during the event ("transactional session
	// failed; rejoining"): a batch aborted by a revocation does that, and
	// its rejoin is a new rebalance.
	Rejoins int `json:"rejoins"`
	// Settled is false when the group was not Stable with every partition
	// deciding within the event time-out (Unsettled says what was
	// missing); the times are then -1 and the later changes are skipped.
	Settled   bool   `json:"settled"`
	Unsettled string `json:"unsettled,omitempty"`
}

// RunScaleOut runs the scale-out scenario once per balancer.
func RunScaleOut(ctx context.Context, cfg ScaleOutConfig) (*ScaleOutReport, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, &ConfigError{Err: err}
	}
	report := &ScaleOutReport{
		Target: cfg.Target, Machine: readMachine(), Partitions: cfg.Partitions, Workers: cfg.Workers,
		SaturationCommands: cfg.SaturationN, SteadyFraction: cfg.SteadyFraction, SettleSecs: cfg.Settle.Seconds(),
		WorkerArgs: strings.Join(cfg.WorkerArgs, " "),
	}
	kafka, rdb, err := connect(ctx, cfg.Brokers, cfg.Security, cfg.RedisURL, cfg.RedisMode)
	if err != nil {
		return nil, err
	}
	defer kafka.Close()
	defer rdb.Close()
	for _, balancer := range cfg.Balancers {
		benchCfg := Config{
			Brokers: cfg.Brokers, RedisURL: cfg.RedisURL, RedisMode: cfg.RedisMode, Security: cfg.Security, Target: cfg.Target,
			Aggregates: cfg.Aggregates, Stale: cfg.Stale, Partitions: cfg.Partitions, Batch: cfg.Batch,
			WorkerProcesses: cfg.Workers, WorkerBinary: cfg.WorkerBinary, Seed: cfg.Seed, BrokerPID: cfg.BrokerPID,
			Tuning:   Tuning{WorkerArgs: append([]string{"--balancer=" + balancer}, cfg.WorkerArgs...)},
			Progress: cfg.Progress, Logger: cfg.Logger,
		}
		benchCfg.setDefaults()
		if err := benchCfg.Validate(); err != nil {
			return nil, &ConfigError{Err: err}
		}
		report.Aggregates, report.Stale, report.Batch = benchCfg.Aggregates, benchCfg.Stale, benchCfg.Batch
		b := &bencher{cfg: benchCfg, admin: kadm.NewClient(kafka), redis: rdb}
		run, err := b.scaleOut(ctx, cfg, balancer)
		if err != nil {
			return nil, errors.Wrapf(err, "scale-out with the %s balancer", balancer)
		}
		report.Runs = append(report.Runs, *run)
	}
	report.Machine.LoadAfter = readLoad()
	return report, nil
}

// scaleOut is one balancer's run of the scenario.
func (b *bencher) scaleOut(ctx context.Context, cfg ScaleOutConfig, balancer string) (*ScaleOutRun, error) {
	out := &ScaleOutRun{Balancer: balancer}
	// The commands of both steps are one sequence (each aggregate's versions
	// run on from one step into the next), generated before the saturation
	// step measures the rate of the steady one: for the highest steady rate.
	steadyN := int(cfg.SteadyBudget.Seconds() * cfg.MaxSteadyRate)
	total := cfg.SaturationN + steadyN
	r := b.newRun(runParams{label: "scale-out " + balancer, n: total, batch: b.cfg.Batch})
	r.progress("%d partitions, %d worker processes, %d + up to %d commands, topics %s-*", cfg.Partitions, cfg.Workers, cfg.SaturationN, steadyN, r.spec.group)
	if err := createTopics(ctx, b.admin, int32(cfg.Partitions), r.spec.commandsTopic, r.spec.eventsTopic, r.spec.conflictsTopic); err != nil {
		return nil, err
	}
	defer r.cleanUp(ctx)
	closeClients, err := r.startClients(ctx)
	if err != nil {
		return nil, err
	}
	defer closeClients()
	tracker := newRebalanceTracker(r.w, r.gen, cfg.Partitions)
	r.coll.mu.Lock()
	r.coll.observe = tracker.observe
	r.coll.mu.Unlock()

	runCtx, cancelRun := context.WithTimeout(ctx, b.cfg.RunTimeout)
	defer cancelRun()
	if err := r.startWorkers(runCtx); err != nil {
		return nil, err
	}
	workers := r.workers.(*processWorkers)
	var extras []*processWorkers
	defer func() {
		for _, extra := range extras {
			extra.kill()
		}
		if !r.stopped {
			_, _ = r.workers.stop()
		}
	}()
	// The sessions' first transactions may have rejoined the group
	// (RebalanceEvent.Rejoins): the assignment is read once it is Stable.
	startCtx, cancelStart := context.WithTimeout(runCtx, cfg.EventTimeout)
	assignment, err := waitForAssignment(startCtx, b.admin, r.spec.group, r.spec.commandsTopic, cfg.Workers, int32(cfg.Partitions))
	cancelStart()
	if err != nil {
		return nil, errors.Wrap(err, "the assignment at the start")
	}
	out.Assignment = assignment

	// Saturation.
	rejoinsBefore := countRejoins(workers, nil)
	start := r.readUsage(ctx)
	if err := r.gen.runRange(runCtx, r.w, 0, cfg.SaturationN, 0, r.clk, r.coll.markProduced); err != nil {
		return nil, err
	}
	if err := r.awaitCount(runCtx, workers, int64(cfg.SaturationN)); err != nil {
		return nil, errors.Wrap(err, "saturation step")
	}
	workerCPU, _ := workers.cpu()
	brokerCPU := pidCPU(b.cfg.BrokerPID)
	redisCPU, _ := redisCPU(ctx, b.redis)
	r.coll.mu.Lock()
	sat := SaturationReport{Commands: cfg.SaturationN, DurationSecs: (r.coll.last - r.coll.first).Seconds(), P99Ms: ms(r.coll.latency.Percentile(99))}
	r.coll.mu.Unlock()
	if sat.DurationSecs > 0 {
		sat.Throughput = float64(cfg.SaturationN-1) / sat.DurationSecs
		sat.WorkerCores = (workerCPU - start.workerCPU).Seconds() / sat.DurationSecs
	}
	sat.PerWorker = sat.Throughput / float64(cfg.Workers)
	sat.WorkerCPUPer1k = (workerCPU - start.workerCPU).Seconds() * 1000 / float64(cfg.SaturationN)
	sat.RedisCPUPer1k = -1
	if start.redisErr == nil {
		sat.RedisCPUPer1k = (redisCPU - start.redisCPU) * 1000 / float64(cfg.SaturationN)
	}
	if b.cfg.BrokerPID > 0 {
		sat.BrokerCPUPer1k = (brokerCPU - start.brokerCPU).Seconds() * 1000 / float64(cfg.SaturationN)
	}
	sat.RejoinsBefore, sat.Rejoins = rejoinsBefore, countRejoins(workers, nil)-rejoinsBefore
	out.Saturation = sat
	r.progress("saturation: %.0f commands/s, %.0f per worker", sat.Throughput, sat.PerWorker)

	// Steady load and the group changes.
	out.SteadyRate = min(cfg.SteadyFraction*sat.Throughput, cfg.MaxSteadyRate)
	loadCtx, stopLoad := context.WithCancel(runCtx)
	defer stopLoad()
	loadErr := make(chan error, 1)
	go func() {
		loadErr <- r.gen.runRange(loadCtx, r.w, cfg.SaturationN, total, out.SteadyRate, r.clk, r.coll.markProduced)
	}()
	members := cfg.Workers
	before := assignment
	extraN := 0
	join := func() error {
		extraN++
		extra, err := startProcesses(runCtx, r.spec, b.cfg.WorkerBinary, 1, fmt.Sprintf("%s-extra%d", r.tag, extraN))
		if err != nil {
			return err
		}
		extras = append(extras, extra)
		members++
		return nil
	}
	leave := func(sig syscall.Signal) func() error {
		return func() error {
			extra := extras[len(extras)-1]
			extra.procs[0].proc.Signal(sig)
			members--
			return nil
		}
	}
	events := []struct {
		name   string
		change func() error
	}{
		{"none (control)", func() error { return nil }},
		{"join", join},
		{"leave (SIGTERM)", leave(syscall.SIGTERM)},
		{"join", join},
		{"crash (SIGKILL)", leave(syscall.SIGKILL)},
	}
	for _, event := range events {
		select {
		case err := <-loadErr:
			return nil, errors.Wrapf(err, "the steady load ended before the %s event; raise the steady budget", event.name)
		case <-runCtx.Done():
			return nil, runCtx.Err()
		case <-time.After(cfg.Settle):
		}
		if err := workers.exitedEarly(); err != nil {
			return nil, err
		}
		at := r.clk.now()
		tracker.begin(at)
		if err := event.change(); err != nil {
			return nil, err
		}
		rejoinsBefore := countRejoins(workers, extras)
		eventCtx, cancelEvent := context.WithTimeout(runCtx, cfg.EventTimeout)
		after, err := waitForAssignment(eventCtx, b.admin, r.spec.group, r.spec.commandsTopic, members, int32(cfg.Partitions))
		stable := r.clk.now()
		if err == nil {
			tracker.arm(stable)
			err = tracker.wait(eventCtx)
		}
		cancelEvent()
		if err != nil && runCtx.Err() != nil {
			return nil, err
		}
		if err != nil {
			// The group as it is now, to show how far it is from settling.
			var describeErr error
			if after, describeErr = describeAssignment(runCtx, b.admin, r.spec.group, r.spec.commandsTopic, int32(cfg.Partitions)); describeErr != nil {
				return nil, describeErr
			}
		}
		doneAt, maxLatency := tracker.result()
		ev := RebalanceEvent{
			Event: event.name, Members: members, Settled: err == nil,
			GroupStableMs: ms(stable - at), AllDecidingMs: ms(doneAt - at), MaxLatencyMs: ms(maxLatency),
			MovedPartitions: moved(before, after), Assignment: after,
			Rejoins: countRejoins(workers, extras) - rejoinsBefore,
		}
		if !ev.Settled {
			ev.GroupStableMs, ev.AllDecidingMs = -1, -1
			ev.Unsettled = err.Error()
		}
		out.Events = append(out.Events, ev)
		if !ev.Settled {
			r.progress("%s: not settled within %v (%d session rejoins; the group now: %d members, partitions per member %v, %d unassigned); the remaining changes are skipped",
				ev.Event, cfg.EventTimeout, ev.Rejoins, after.Members, after.PartitionsPerMember, after.Unassigned)
			break
		}
		r.progress("%s: group stable after %s, every partition deciding after %s, longest wait %s, %d partitions moved, %d session rejoins",
			ev.Event, fmtMillis(ev.GroupStableMs), fmtMillis(ev.AllDecidingMs), fmtMillis(ev.MaxLatencyMs), ev.MovedPartitions, ev.Rejoins)
		before = after
	}

	// Stop the load and check every produced command's outcome.
	r.gen.halt()
	if err := <-loadErr; err != nil {
		return nil, errors.Wrap(err, "steady load")
	}
	produced := r.gen.produced.Load()
	drainCtx, cancelDrain := context.WithTimeout(runCtx, 2*cfg.EventTimeout)
	defer cancelDrain()
	if err := r.awaitCount(drainCtx, workers, produced); err != nil {
		return nil, errors.Wrap(err, "outcomes of the steady load")
	}
	// Let late duplicates show up before judging exactly-once.
	time.Sleep(500 * time.Millisecond)
	r.coll.mu.Lock()
	out.SteadyCommands = produced - int64(cfg.SaturationN)
	out.Missing = produced - r.coll.outcomes
	out.Extra, out.Mismatched = r.coll.extra, r.coll.mismatch
	r.coll.mu.Unlock()

	r.stopped = true
	for _, extra := range extras {
		// The extras have left or been killed; only their exit is awaited.
		extra.procs[0].proc.Wait(60 * time.Second)
	}
	if _, err := workers.stop(); err != nil {
		return nil, errors.Wrap(err, "stop the workers")
	}
	for i, c := range workers.each {
		if i == 0 || c.Records < out.WorkerRecordsMin {
			out.WorkerRecordsMin = c.Records
		}
		out.WorkerRecordsMax = max(out.WorkerRecordsMax, c.Records)
	}
	return out, nil
}

// countRejoins counts the "rejoining with a new client" log lines of the
// worker processes so far.
func countRejoins(workers *processWorkers, extras []*processWorkers) int {
	n := 0
	for _, set := range append([]*processWorkers{workers}, extras...) {
		for _, p := range set.procs {
			n += strings.Count(p.logText(), "rejoining with a new client")
		}
	}
	return n
}

// awaitCount waits until the collector has n outcomes, printing progress
// every 2 seconds.
func (r *benchRun) awaitCount(ctx context.Context, workers *processWorkers, n int64) error {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	lastProgress := time.Now()
	for {
		done := r.coll.progress()
		if done >= n {
			return nil
		}
		if err := workers.exitedEarly(); err != nil {
			return err
		}
		if time.Since(lastProgress) >= 2*time.Second {
			lastProgress = time.Now()
			r.progress("outcomes %d/%d", done, n)
		}
		select {
		case <-ctx.Done():
			return errors.Wrapf(ctx.Err(), "%d of %d outcomes", done, n)
		case <-ticker.C:
		}
	}
}

// rebalanceTracker follows, per partition, the outcomes of the steady load:
// armed at a moment, it is done when every partition has the outcome of a
// command produced at or after it.
type rebalanceTracker struct {
	partitionOf []int32 // of each command, by seq
	partitions  int

	mu         sync.Mutex
	eventAt    time.Duration // the change; latencies count from here
	armedAt    time.Duration // -1 until armed
	waiting    map[int32]bool
	doneAt     time.Duration
	maxLatency time.Duration
	done       chan struct{}
}

func newRebalanceTracker(w *workload, gen *loadgen, partitions int) *rebalanceTracker {
	byAggregate := make([]int32, len(w.keys))
	for a, key := range w.keys {
		byAggregate[a] = gen.partitionOf(key)
	}
	t := &rebalanceTracker{partitionOf: make([]int32, len(w.values)), partitions: partitions, armedAt: -1}
	for seq, a := range w.aggregate {
		t.partitionOf[seq] = byAggregate[a]
	}
	return t
}

// begin starts an event at the given moment: latencies of the commands
// produced from it are watched until the tracker is done.
func (t *rebalanceTracker) begin(at time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.eventAt, t.armedAt, t.doneAt, t.maxLatency = at, -1, 0, 0
	t.done = make(chan struct{})
}

// arm starts waiting for every partition to decide a command produced at
// or after the given moment.
func (t *rebalanceTracker) arm(at time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.armedAt = at
	t.waiting = make(map[int32]bool, t.partitions)
	for p := range t.partitions {
		t.waiting[int32(p)] = true
	}
}

// observe is the collector's hook (called with its lock held).
func (t *rebalanceTracker) observe(seq int, produced, read time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done == nil || produced <= 0 || produced < t.eventAt {
		return
	}
	select {
	case <-t.done:
		return
	default:
	}
	t.maxLatency = max(t.maxLatency, read-produced)
	if t.armedAt < 0 || produced < t.armedAt {
		return
	}
	delete(t.waiting, t.partitionOf[seq])
	if len(t.waiting) == 0 {
		t.doneAt = read
		close(t.done)
	}
}

// wait waits until every partition has decided again.
func (t *rebalanceTracker) wait(ctx context.Context) error {
	t.mu.Lock()
	done := t.done
	t.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		t.mu.Lock()
		defer t.mu.Unlock()
		waiting := make([]int32, 0, len(t.waiting))
		for p := range t.waiting {
			waiting = append(waiting, p)
		}
		slices.Sort(waiting)
		return errors.Wrapf(ctx.Err(), "partitions %v have not decided again", waiting)
	}
}

// result returns when every partition decided again and the longest wait of
// a command since the event began.
func (t *rebalanceTracker) result() (doneAt, maxLatency time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.doneAt, t.maxLatency
}

// waitForAssignment waits until the group is Stable with the given members
// and every partition of topic assigned, and returns that assignment.
func waitForAssignment(ctx context.Context, admin *kadm.Client, group, topic string, members int, partitions int32) (AssignmentReport, error) {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		described, err := admin.DescribeGroups(ctx, group)
		if err == nil && described[group].Err == nil && described[group].State == "Stable" {
			a := assignmentOf(described[group], topic, partitions)
			if a.Members == members && a.Unassigned == 0 {
				return a, nil
			}
		}
		select {
		case <-ctx.Done():
			return AssignmentReport{}, errors.Wrapf(ctx.Err(), "wait for %d workers to join group %s", members, group)
		case <-ticker.C:
		}
	}
}

// describeAssignment describes the group's assignment of topic.
func describeAssignment(ctx context.Context, admin *kadm.Client, group, topic string, partitions int32) (AssignmentReport, error) {
	described, err := admin.DescribeGroups(ctx, group)
	if err == nil {
		err = described.Error()
	}
	if err != nil {
		return AssignmentReport{}, errors.Wrapf(err, "describe group %s", group)
	}
	return assignmentOf(described[group], topic, partitions), nil
}

// assignmentOf reads a described group's assignment of topic.
func assignmentOf(group kadm.DescribedGroup, topic string, partitions int32) AssignmentReport {
	a := AssignmentReport{owner: map[int32]string{}}
	owners := make(map[int32]int, partitions)
	for _, m := range group.Members {
		a.Members++
		count := 0
		if c, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range c.Topics {
				if t.Topic != topic {
					continue
				}
				for _, p := range t.Partitions {
					owners[p]++
					a.owner[p] = m.MemberID
					count++
				}
			}
		}
		a.PartitionsPerMember = append(a.PartitionsPerMember, count)
	}
	slices.Sort(a.PartitionsPerMember)
	if len(a.PartitionsPerMember) > 0 {
		a.MinPartitions, a.MaxPartitions = a.PartitionsPerMember[0], a.PartitionsPerMember[len(a.PartitionsPerMember)-1]
	}
	for p := range partitions {
		switch owners[p] {
		case 0:
			a.Unassigned++
		case 1:
		default:
			a.MultiplyAssigned++
		}
	}
	return a
}

// moved counts the partitions whose owner differs between two assignments.
func moved(before, after AssignmentReport) int {
	n := 0
	for p, owner := range after.owner {
		if before.owner[p] != owner {
			n++
		}
	}
	return n
}

// WriteTable prints the report: one column per balancer.
func (r *ScaleOutReport) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "arbiter bench --scale-out against %s\n", r.Target)
	fmt.Fprintf(w, "machine: %d CPUs (%s), %d MiB, load average %s before, %s after\n",
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.MemoryMiB, r.Machine.LoadBefore, r.Machine.LoadAfter)
	fmt.Fprintf(w, "settings: %d partitions, %d worker processes, %d aggregates, %.0f%% stale, batch %d, %d saturation commands, steady load %.0f%% of the peak, %s undisturbed before each change",
		r.Partitions, r.Workers, r.Aggregates, r.Stale*100, r.Batch, r.SaturationCommands, r.SteadyFraction*100, time.Duration(r.SettleSecs*float64(time.Second)))
	if r.WorkerArgs != "" {
		fmt.Fprintf(w, ", worker flags %s", r.WorkerArgs)
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name string, cell func(*ScaleOutRun) string) {
		fmt.Fprintf(tw, "%s\t", name)
		for i := range r.Runs {
			fmt.Fprintf(tw, "%s\t", cell(&r.Runs[i]))
		}
		fmt.Fprintln(tw)
	}
	balance := func(a AssignmentReport) string {
		return fmt.Sprintf("%d–%d over %d (%d unassigned, %d twice)", a.MinPartitions, a.MaxPartitions, a.Members, a.Unassigned, a.MultiplyAssigned)
	}
	row("balancer", func(run *ScaleOutRun) string { return run.Balancer })
	row("partitions per worker (min–max over members)", func(run *ScaleOutRun) string { return balance(run.Assignment) })
	row("saturation commands/s, all workers", func(run *ScaleOutRun) string { return fmtCount(run.Saturation.Throughput) })
	row("  per worker", func(run *ScaleOutRun) string { return fmtCount(run.Saturation.PerWorker) })
	row("  latency p99", func(run *ScaleOutRun) string { return fmtMillis(run.Saturation.P99Ms) })
	row("  worker CPU s / 1k commands", func(run *ScaleOutRun) string { return fmt.Sprintf("%.4f", run.Saturation.WorkerCPUPer1k) })
	row("  worker cores busy", func(run *ScaleOutRun) string { return fmt.Sprintf("%.2f", run.Saturation.WorkerCores) })
	row("  redis-server CPU s / 1k commands", func(run *ScaleOutRun) string {
		if run.Saturation.RedisCPUPer1k < 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.4f", run.Saturation.RedisCPUPer1k)
	})
	if len(r.Runs) > 0 && r.Runs[0].Saturation.BrokerCPUPer1k > 0 {
		row("  broker CPU s / 1k commands", func(run *ScaleOutRun) string { return fmt.Sprintf("%.4f", run.Saturation.BrokerCPUPer1k) })
	}
	row("  worker sessions rejoining: before the load; during it", func(run *ScaleOutRun) string {
		return fmt.Sprintf("%d; %d", run.Saturation.RejoinsBefore, run.Saturation.Rejoins)
	})
	row("steady load under the changes, commands/s", func(run *ScaleOutRun) string { return fmtCount(run.SteadyRate) })
	events := 0
	for _, run := range r.Runs {
		events = max(events, len(run.Events))
	}
	for i := range events {
		event := func(run *ScaleOutRun) (RebalanceEvent, bool) {
			if i < len(run.Events) {
				return run.Events[i], true
			}
			return RebalanceEvent{}, false
		}
		name := ""
		for _, run := range r.Runs {
			if i < len(run.Events) {
				name = run.Events[i].Event
				break
			}
		}
		row(strconv.Itoa(i+1)+". "+name+": group stable after", func(run *ScaleOutRun) string {
			if e, ok := event(run); ok && e.Settled {
				return fmtMillis(e.GroupStableMs)
			} else if ok {
				return "not settled"
			}
			return "n/a"
		})
		row("   every partition deciding again after", func(run *ScaleOutRun) string {
			if e, ok := event(run); ok && e.Settled {
				return fmtMillis(e.AllDecidingMs)
			} else if ok {
				return "not settled"
			}
			return "n/a"
		})
		row("   worker sessions rejoining", func(run *ScaleOutRun) string {
			if e, ok := event(run); ok {
				return strconv.Itoa(e.Rejoins)
			}
			return "n/a"
		})
		row("   longest wait of a command", func(run *ScaleOutRun) string {
			if e, ok := event(run); ok {
				return fmtMillis(e.MaxLatencyMs)
			}
			return "n/a"
		})
		row("   partitions moved; then per worker", func(run *ScaleOutRun) string {
			if e, ok := event(run); ok {
				return fmt.Sprintf("%d; %s", e.MovedPartitions, balance(e.Assignment))
			}
			return "n/a"
		})
	}
	row("steady commands; missing / extra / mismatched", func(run *ScaleOutRun) string {
		return fmt.Sprintf("%s; %d / %d / %d", fmtCount(float64(run.SteadyCommands)), run.Missing, run.Extra, run.Mismatched)
	})
	row("records per original worker (min–max)", func(run *ScaleOutRun) string {
		return fmtCount(float64(run.WorkerRecordsMin)) + "–" + fmtCount(float64(run.WorkerRecordsMax))
	})
	_ = tw.Flush()
	fmt.Fprintln(w, "\nrebalance time (every partition deciding again): from the change (process started, or signal sent) until each partition's")
	fmt.Fprintln(w, "outcome of a command produced after the group was Stable again was readable; the control event is its floor.")
}
