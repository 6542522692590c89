package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/child"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/redisclient"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// counters are the workers' Stats, summed.
type counters struct {
	Records, Applied, Conflicts, Replayed int64
	Committed, Aborted                    int64
	// RedisRoundTrips is -1 when the workers did not report it.
	RedisRoundTrips int64
}

func (c counters) minus(o counters) counters {
	d := counters{
		Records: c.Records - o.Records, Applied: c.Applied - o.Applied, Conflicts: c.Conflicts - o.Conflicts,
		Replayed: c.Replayed - o.Replayed, Committed: c.Committed - o.Committed, Aborted: c.Aborted - o.Aborted,
		RedisRoundTrips: c.RedisRoundTrips - o.RedisRoundTrips,
	}
	if c.RedisRoundTrips < 0 || o.RedisRoundTrips < 0 {
		d.RedisRoundTrips = -1
	}
	return d
}

// runSpec is what every worker of one run shares.
type runSpec struct {
	brokers        []string
	redisURL       string
	redisMode      redisclient.Mode
	commandsTopic  string
	eventsTopic    string
	conflictsTopic string
	group          string
	keyPrefix      string
	maxBatch       int
	tuning         Tuning
	security       Security
	log            *zap.Logger
}

// workerSet is the workers of one run.
type workerSet interface {
	// counters returns the summed counters so far; processes report them
	// only when they stop (ok false before).
	counters() (c counters, ok bool)
	// cpu returns the CPU time the workers used so far, and what it
	// measures.
	cpu() (time.Duration, string)
	// stop stops the workers gracefully and returns their final counters.
	stop() (counters, error)
}

// inProcessWorkers runs processor.Workers in this process.
type inProcessWorkers struct {
	workers []*processor.Worker
	clients []redis.UniversalClient
	timers  []*phaseTimer
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	errs    []error
}

func startInProcess(ctx context.Context, spec runSpec, n int, instanceTag string) (*inProcessWorkers, error) {
	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		return nil, errors.Wrap(err, "register the Product handlers")
	}
	redisConfig := spec.security.redisConfig(spec.redisURL)
	redisConfig.Mode = spec.redisMode
	if err := redisConfig.Validate(); err != nil {
		return nil, err
	}
	securityOpts, err := spec.security.kafkaOpts()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &inProcessWorkers{cancel: cancel}
	for i := range n {
		client, err := redisConfig.NewUniversalClient()
		if err != nil {
			cancel()
			return nil, err
		}
		s.clients = append(s.clients, client)
		cfg := processor.Config{
			Brokers:               spec.brokers,
			Group:                 spec.group,
			CommandsTopic:         spec.commandsTopic,
			EventsTopic:           spec.eventsTopic,
			ConflictsTopic:        spec.conflictsTopic,
			TransactionalIDPrefix: spec.group,
			InstanceID:            fmt.Sprintf("%s-%d", instanceTag, i),
			MaxBatch:              spec.maxBatch,
			Registry:              registry,
			Store:                 versionstore.New(client, versionstore.Options{KeyPrefix: spec.keyPrefix}),
			Logger:                spec.log.Named(fmt.Sprintf("worker-%d", i)),
			KafkaOptions:          append(append([]kgo.Opt{}, securityOpts...), spec.tuning.kafkaOptions()...),
		}
		spec.tuning.apply(&cfg)
		if cfg.Concurrency <= 1 {
			timer := newPhaseTimer()
			timer.wire(&cfg.Hooks)
			s.timers = append(s.timers, timer)
		}
		worker, err := processor.New(cfg)
		if err != nil {
			cancel()
			return nil, errors.Wrap(err, "configure an in-process worker")
		}
		s.workers = append(s.workers, worker)
	}
	for _, worker := range s.workers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := worker.Run(ctx); err != nil {
				s.mu.Lock()
				s.errs = append(s.errs, err)
				s.mu.Unlock()
			}
		}()
	}
	return s, nil
}

func (s *inProcessWorkers) counters() (counters, bool) {
	var c counters
	for _, w := range s.workers {
		st := w.Stats()
		c.Records += st.Records.Load()
		c.Applied += st.Applied.Load()
		c.Conflicts += st.Conflicts.Load()
		c.Replayed += st.Replayed.Load()
		c.Committed += st.Committed.Load()
		c.Aborted += st.Aborted.Load()
		c.RedisRoundTrips += st.RedisRoundTrips.Load()
	}
	return c, true
}

func (s *inProcessWorkers) cpu() (time.Duration, string) {
	return processCPU(), "bench process (workers + outcome reader + load generator), getrusage"
}

func (s *inProcessWorkers) stop() (counters, error) {
	s.cancel()
	s.wg.Wait()
	for _, c := range s.clients {
		_ = c.Close()
	}
	c, _ := s.counters()
	s.mu.Lock()
	defer s.mu.Unlock()
	return c, errors.Join(s.errs...)
}

// processCPU is this process's user and system CPU time.
func processCPU() time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

// processWorkers runs `arbiter worker` processes.
type processWorkers struct {
	procs []*workerProcess
	final counters
	// each are the processes' own final counters, in start order.
	each []counters
	done bool
}

type workerProcess struct {
	proc *child.Process
	logs bytes.Buffer
	mu   sync.Mutex
}

func (p *workerProcess) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.Write(b)
}

func startProcesses(_ context.Context, spec runSpec, binary string, n int, instanceTag string) (*processWorkers, error) {
	s := &processWorkers{}
	for i := range n {
		args := []string{"worker",
			"--brokers", strings.Join(spec.brokers, ","),
			"--redis", spec.redisURL,
			"--redis-mode", string(cmp.Or(spec.redisMode, redisclient.ModeStandalone)),
			"--commands-topic", spec.commandsTopic,
			"--events-topic", spec.eventsTopic,
			"--conflicts-topic", spec.conflictsTopic,
			"--group", spec.group,
			"--transactional-id-prefix", spec.group,
			"--instance-id", fmt.Sprintf("%s-%d", instanceTag, i),
			"--key-prefix", spec.keyPrefix,
			"--max-batch", strconv.Itoa(spec.maxBatch),
			"--log-format", "json",
			"--http-addr", "127.0.0.1:0",
		}
		args = append(args, spec.tuning.workerFlags()...)
		args = append(args, spec.security.workerFlags()...)
		p := &workerProcess{}
		proc, err := child.Start(child.Config{
			Name: fmt.Sprintf("worker process %d", i), Binary: binary, Args: args,
			// The worker's own environment variables must not change the
			// run's settings.
			Env:    append(cleanEnv(os.Environ()), spec.security.workerEnv()...),
			Output: p,
		})
		if err != nil {
			s.kill()
			return nil, err
		}
		p.proc = proc
		s.procs = append(s.procs, p)
	}
	return s, nil
}

func cleanEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "ARBITER_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// exitedEarly returns an error when a worker process has exited.
func (s *processWorkers) exitedEarly() error {
	for i, p := range s.procs {
		if p.proc.Exited() {
			return errors.Newf("worker process %d exited early (%s); its log:\n%s", i, p.proc.State(), tail(p.logText(), 2000))
		}
	}
	return nil
}

func (p *workerProcess) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func (s *processWorkers) counters() (counters, bool) { return s.final, s.done }

func (s *processWorkers) cpu() (time.Duration, string) {
	var total time.Duration
	for _, p := range s.procs {
		total += pidCPU(p.proc.Pid())
	}
	return total, "worker processes, /proc/<pid>/stat utime+stime"
}

func (s *processWorkers) kill() {
	for _, p := range s.procs {
		p.proc.Kill()
	}
}

func (s *processWorkers) stop() (counters, error) {
	for _, p := range s.procs {
		p.proc.Signal(syscall.SIGTERM)
	}
	var errs []error
	var total counters
	for i, p := range s.procs {
		if !p.proc.Wait(60 * time.Second) {
			p.proc.Kill()
			errs = append(errs, errors.Newf("worker process %d did not stop within 60s of SIGTERM", i))
		}
		if err := p.proc.Err(); err != nil {
			errs = append(errs, errors.Wrapf(err, "worker process %d; its log:\n%s", i, tail(p.logText(), 2000)))
		}
		c, ok := parseStopped(p.logText())
		if !ok {
			errs = append(errs, errors.Newf("worker process %d logged no 'worker stopped' line", i))
			continue
		}
		s.each = append(s.each, c)
		total.Records += c.Records
		total.Applied += c.Applied
		total.Conflicts += c.Conflicts
		total.Replayed += c.Replayed
		total.Committed += c.Committed
		total.Aborted += c.Aborted
		if c.RedisRoundTrips < 0 || total.RedisRoundTrips < 0 {
			total.RedisRoundTrips = -1
		} else {
			total.RedisRoundTrips += c.RedisRoundTrips
		}
	}
	s.final, s.done = total, true
	return total, errors.Join(errs...)
}

// parseStopped reads the counters from a worker's JSON "worker stopped" log
// line.
func parseStopped(logs string) (counters, bool) {
	scanner := bufio.NewScanner(strings.NewReader(logs))
	scanner.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for scanner.Scan() {
		var line struct {
			Msg             string `json:"msg"`
			Records         int64  `json:"records"`
			Applied         int64  `json:"applied"`
			Conflicts       int64  `json:"conflicts"`
			Replayed        int64  `json:"replayed"`
			Committed       int64  `json:"transactions_committed"`
			Aborted         int64  `json:"transactions_aborted"`
			RedisRoundTrips *int64 `json:"redis_round_trips"`
		}
		if json.Unmarshal(scanner.Bytes(), &line) != nil || line.Msg != "worker stopped" {
			continue
		}
		c := counters{Records: line.Records, Applied: line.Applied, Conflicts: line.Conflicts, Replayed: line.Replayed,
			Committed: line.Committed, Aborted: line.Aborted, RedisRoundTrips: -1}
		if line.RedisRoundTrips != nil {
			c.RedisRoundTrips = *line.RedisRoundTrips
		}
		return c, true
	}
	return counters{}, false
}

// pidCPU is a process's user and system CPU time, from /proc/<pid>/stat
// (clock ticks of 1/100 s, Linux's USER_HZ); 0 when it cannot be read.
func pidCPU(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis start with field 3.
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0
	}
	fields := strings.Fields(string(data[end+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
