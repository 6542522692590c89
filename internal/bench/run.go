package bench

import (
	"context"
	"fmt"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
)

// benchRun is one run's state, handed from stage to stage.
type benchRun struct {
	b          *bencher
	p          runParams
	tag        string
	spec       runSpec
	mode       string
	w          *workload
	clk        *clock
	coll       *collector
	gen        *loadgen
	start, end usage

	workers workerSet
	stopped bool // workers stopped by stopWorkers

	memoryBefore int64
	memoryErr    error
	produceTime  atomic.Int64
}

// usage is the CPU used so far by each party of a run, read at the start
// and at the end of its measured window.
type usage struct {
	counters  counters
	workerCPU time.Duration
	cpuSource string
	benchCPU  time.Duration
	brokerCPU time.Duration
	redisCPU  float64
	redisErr  error
}

// run does one run: fresh topics, group and key prefix; load; workers;
// every outcome read back; then the topics, group and keys removed. Its
// stages: set up the topics, start the outcome collector and the load
// generator, start and warm up the workers, measure (offer the load, wait
// for every outcome), stop the workers, report.
func (b *bencher) run(ctx context.Context, p runParams) (*RunReport, error) {
	r := b.newRun(p)
	r.progress("%d commands, %s, batch %d, topics %s-*", p.n, r.mode, p.batch, r.spec.group)

	if err := createTopics(ctx, b.admin, int32(b.cfg.Partitions), r.spec.commandsTopic, r.spec.eventsTopic, r.spec.conflictsTopic); err != nil {
		return nil, err
	}
	defer r.cleanUp(ctx)

	closeClients, err := r.startClients(ctx)
	if err != nil {
		return nil, err
	}
	defer closeClients()

	runCtx, cancelRun := context.WithTimeout(ctx, b.cfg.RunTimeout)
	defer cancelRun()
	if err := r.startWorkers(runCtx); err != nil {
		return nil, err
	}
	defer func() {
		if !r.stopped {
			_, _ = r.workers.stop()
		}
	}()

	waitErr, err := r.measure(ctx, runCtx)
	if err != nil {
		return nil, err
	}
	r.stopped = true
	endCounters, stopErr := r.workers.stop()
	if waitErr != nil {
		return nil, errors.Wrapf(waitErr, "%s run", p.label)
	}
	if stopErr != nil {
		return nil, errors.Wrapf(stopErr, "%s run: stop the workers", p.label)
	}
	// Let late duplicates show up before judging exactly-once.
	time.Sleep(500 * time.Millisecond)
	return r.report(ctx, endCounters), nil
}

// newRun names a run's topics, group and key prefix.
func (b *bencher) newRun(p runParams) *benchRun {
	tag := randomTag()
	name := "bench-" + tag
	r := &benchRun{b: b, p: p, tag: tag, mode: "saturation", spec: runSpec{
		brokers:        b.cfg.Brokers,
		redisURL:       b.cfg.RedisURL,
		redisMode:      b.cfg.RedisMode,
		commandsTopic:  name + "-commands",
		eventsTopic:    name + "-events",
		conflictsTopic: name + "-conflicts",
		group:          name,
		keyPrefix:      "b" + tag,
		maxBatch:       p.batch,
		tuning:         b.cfg.Tuning,
		security:       b.cfg.Security,
		log:            b.cfg.Logger,
	}}
	if p.rate > 0 {
		r.mode = fmt.Sprintf("offered %.0f commands/s", p.rate)
	}
	return r
}

func (r *benchRun) progress(format string, args ...any) {
	fmt.Fprintf(r.b.cfg.Progress, "bench %s: "+format+"\n", append([]any{r.p.label}, args...)...)
}

// cleanUp removes the run's topics, group and Redis keys.
func (r *benchRun) cleanUp(ctx context.Context) {
	cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	_, _ = r.b.admin.DeleteTopics(cleanupCtx, r.spec.commandsTopic, r.spec.eventsTopic, r.spec.conflictsTopic)
	_, _ = r.b.admin.DeleteGroups(cleanupCtx, r.spec.group)
	if err := deleteKeys(cleanupCtx, r.b.redis, r.spec.keyPrefix); err != nil {
		r.progress("cleanup: %v", err)
	}
}

// startClients generates the workload and starts the outcome collector and
// the load generator; the returned function closes them.
func (r *benchRun) startClients(ctx context.Context) (func(), error) {
	cfg := r.b.cfg
	r.memoryBefore, r.memoryErr = usedMemory(ctx, r.b.redis)
	r.w = generateWorkload(cfg.Seed, "c"+r.tag, r.p.n, cfg.Aggregates, cfg.Stale)
	r.clk = &clock{start: time.Now()}
	securityOpts, err := cfg.Security.kafkaOpts()
	if err != nil {
		return nil, err
	}
	coll, err := newCollector(cfg.Brokers, securityOpts, r.w, r.clk, r.spec.eventsTopic, r.spec.conflictsTopic, cfg.Partitions, cfg.ReaderMaxWait)
	if err != nil {
		return nil, err
	}
	r.coll = coll
	collCtx, stopCollector := context.WithCancel(ctx)
	go coll.run(collCtx)
	closeCollector := func() { stopCollector(); coll.close() }
	gen, err := newLoadgen(cfg.Brokers, securityOpts, r.spec.commandsTopic, int32(cfg.Partitions), cfg.LoadLinger)
	if err != nil {
		closeCollector()
		return nil, err
	}
	r.gen = gen
	return func() { gen.close(); closeCollector() }, nil
}

// startWorkers starts the workers and waits until each has joined and run
// one transaction, before the load starts: a worker joining while others
// already process would make the group rebalance mid-run, and the first
// transaction of each worker pays for finding its coordinator and producer
// ID.
func (r *benchRun) startWorkers(runCtx context.Context) error {
	cfg := r.b.cfg
	workers, err := r.b.startWorkers(runCtx, r.spec, cfg, r.tag)
	if err != nil {
		return err
	}
	r.workers = workers
	if err := waitForGroup(runCtx, r.b.admin, r.spec.group, r.spec.commandsTopic, r.b.workerCount()*max(cfg.Tuning.Concurrency, 1), int32(cfg.Partitions)); err != nil {
		return err
	}
	if err := r.gen.warmup(runCtx); err != nil {
		return err
	}
	select {
	case <-r.coll.warmCh:
		return nil
	case <-runCtx.Done():
		return errors.Wrap(runCtx.Err(), "wait for the warm-up commands' outcomes")
	}
}

// readUsage reads the CPU used so far by the workers, this process, the
// broker and Redis.
func (r *benchRun) readUsage(ctx context.Context) usage {
	var u usage
	u.counters, _ = r.workers.counters()
	u.workerCPU, u.cpuSource = r.workers.cpu()
	u.benchCPU = processCPU()
	u.brokerCPU = pidCPU(r.b.cfg.BrokerPID)
	u.redisCPU, u.redisErr = redisCPU(ctx, r.b.redis)
	return u
}

// measure is the measured window: it offers the load and waits for every
// outcome (or the load's error, or the run timeout), with the CPU profile
// on if asked. waitErr is what ended the wait early; err a failure of the
// profiles.
func (r *benchRun) measure(ctx, runCtx context.Context) (waitErr, err error) {
	cfg, p := r.b.cfg, r.p
	r.start = r.readUsage(ctx)
	measureStart := r.clk.now()
	profiling := p.profile && !r.b.profiled
	if profiling && cfg.CPUProfile != nil {
		if err := pprof.StartCPUProfile(cfg.CPUProfile); err != nil {
			return nil, errors.Wrap(err, "start the CPU profile")
		}
		defer pprof.StopCPUProfile()
	}

	loadErr := make(chan error, 1)
	loadStart := r.clk.now()
	go func() {
		err := r.gen.run(runCtx, r.w, p.rate, r.clk, r.coll.markProduced)
		r.produceTime.Store(int64(r.clk.now() - loadStart))
		loadErr <- err
	}()
	waitErr, loadDone := r.awaitOutcomes(runCtx, loadErr, measureStart)

	r.end.workerCPU, _ = r.workers.cpu()
	r.end.benchCPU = processCPU()
	if !loadDone && waitErr == nil {
		// Every outcome arrived; the producer's last flush is returning.
		waitErr = <-loadErr
	}
	r.end.brokerCPU = pidCPU(cfg.BrokerPID)
	r.end.redisCPU, _ = redisCPU(ctx, r.b.redis)
	if profiling {
		if cfg.CPUProfile != nil {
			pprof.StopCPUProfile()
		}
		if cfg.MemProfile != nil {
			if err := pprof.Lookup("allocs").WriteTo(cfg.MemProfile, 0); err != nil {
				return nil, errors.Wrap(err, "write the allocation profile")
			}
		}
		r.b.profiled = true
	}
	return waitErr, nil
}

// awaitOutcomes waits until the collector has every outcome, the load
// generator failed, a worker process exited, or the run timed out, printing
// progress every 2 seconds. loadDone reports whether the load generator's
// result was taken from loadErr.
func (r *benchRun) awaitOutcomes(runCtx context.Context, loadErr <-chan error, measureStart time.Duration) (waitErr error, loadDone bool) {
	ticker := time.NewTicker(2 * time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-r.coll.doneCh:
			return nil, loadDone
		case err := <-loadErr:
			loadDone = true
			if err != nil {
				return err, loadDone
			}
		case <-runCtx.Done():
			return errors.Newf("%d of %d outcomes after the run timeout of %v", r.coll.progress(), r.p.n, r.b.cfg.RunTimeout), loadDone
		case <-ticker.C:
			if pw, ok := r.workers.(*processWorkers); ok {
				if err := pw.exitedEarly(); err != nil {
					return err, loadDone
				}
			}
			done := r.coll.progress()
			elapsed := (r.clk.now() - measureStart).Seconds()
			r.progress("produced %d/%d, outcomes %d/%d (%.0f/s over %.0fs)", r.gen.produced.Load(), r.p.n, done, r.p.n, float64(done)/elapsed, elapsed)
		}
	}
}

// report builds the run's report from the collector's outcomes, the
// workers' counters and the usage over the measured window.
func (r *benchRun) report(ctx context.Context, endCounters counters) *RunReport {
	cfg, p := r.b.cfg, r.p
	rep := &RunReport{
		Label:        p.label,
		Mode:         r.mode,
		Commands:     p.n,
		Aggregates:   cfg.Aggregates,
		StaleShare:   float64(r.w.stale) / float64(p.n),
		Partitions:   cfg.Partitions,
		Workers:      r.b.workerCount(),
		WorkerKind:   r.b.workerKind(),
		Batch:        p.batch,
		OfferedRate:  p.rate,
		Tuning:       cfg.Tuning.String(),
		ProduceSecs:  time.Duration(r.produceTime.Load()).Seconds(),
		CPUSource:    r.start.cpuSource,
		RedisTimeout: false,
	}
	r.coll.mu.Lock()
	rep.fillOutcomes(r.coll)
	r.coll.mu.Unlock()
	c := endCounters
	if ip, inProcess := r.workers.(*inProcessWorkers); inProcess {
		c = endCounters.minus(r.start.counters)
		rep.Phases = phaseReports(ip.timers)
	}
	rep.fillCounters(c)
	per1k := 1000 / float64(p.n)
	rep.WorkerCPUPer1k = (r.end.workerCPU - r.start.workerCPU).Seconds() * per1k
	if _, inProcess := r.workers.(*inProcessWorkers); !inProcess {
		rep.BenchCPUPer1k = (r.end.benchCPU - r.start.benchCPU).Seconds() * per1k
	}
	if cfg.BrokerPID > 0 {
		rep.BrokerCPUPer1k = (r.end.brokerCPU - r.start.brokerCPU).Seconds() * per1k
	}
	rep.RedisCPUPer1k = -1
	if r.start.redisErr == nil {
		rep.RedisCPUPer1k = (r.end.redisCPU - r.start.redisCPU) * per1k
	}
	if r.memoryErr == nil {
		if after, err := usedMemory(ctx, r.b.redis); err == nil {
			rep.Memory = &MemoryReport{UsedMemoryDelta: after - r.memoryBefore}
			rep.Memory.PerCommand = float64(rep.Memory.UsedMemoryDelta) / float64(p.n)
			if classes, err := sampleKeys(ctx, r.b.redis, r.spec.keyPrefix, 200); err == nil {
				rep.Memory.Keys = classes
				rep.Memory.splitPerAggregate(p.n)
			} else {
				r.progress("memory samples: %v", err)
			}
		}
	}
	r.progress("%.0f commands/s, p99 %s", rep.Throughput, fmtMillis(rep.Latency.P99Ms))
	return rep
}
