package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a bench invocation measured.
type Report struct {
	// Target names the servers measured against.
	Target   string     `json:"target"`
	Machine  Machine    `json:"machine"`
	Settings Settings   `json:"settings"`
	Batched  *RunReport `json:"batched"`
	Baseline *RunReport `json:"baseline,omitempty"`
	// Speedup is the batched throughput over the baseline's.
	Speedup float64      `json:"speedup,omitempty"`
	Sweep   *SweepReport `json:"sweep,omitempty"`
}

// Machine describes where the bench ran.
type Machine struct {
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model"`
	MemoryMiB  int64  `json:"memory_mib"`
	GoVersion  string `json:"go_version"`
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
}

// Settings are the invocation's settings.
type Settings struct {
	Commands         int       `json:"commands"`
	BaselineCommands int       `json:"baseline_commands,omitempty"`
	Aggregates       int       `json:"aggregates"`
	Stale            float64   `json:"stale"`
	Partitions       int       `json:"partitions"`
	Workers          int       `json:"workers"`
	WorkerKind       string    `json:"worker_kind"`
	Rate             float64   `json:"rate"`
	Batch            int       `json:"batch"`
	Tuning           string    `json:"tuning"`
	Sweep            []float64 `json:"sweep,omitempty"`
	WarmupCommands   int       `json:"warmup_commands,omitempty"`
	ReaderMaxWaitMs  float64   `json:"reader_max_wait_ms"`
	Seed             uint64    `json:"seed"`
}

// RunReport is one run's measurements.
type RunReport struct {
	Label       string  `json:"label"`
	Mode        string  `json:"mode"`
	Commands    int     `json:"commands"`
	Aggregates  int     `json:"aggregates"`
	StaleShare  float64 `json:"stale_share"`
	Partitions  int     `json:"partitions"`
	Workers     int     `json:"workers"`
	WorkerKind  string  `json:"worker_kind"`
	Batch       int     `json:"batch"`
	OfferedRate float64 `json:"offered_rate"`
	Tuning      string  `json:"tuning"`
	// ProduceSecs is how long the load generator took to produce every
	// command.
	ProduceSecs float64 `json:"produce_seconds"`

	// Throughput is commands per second from the first outcome to the
	// last; SteadyThroughput the rate between the 10% and 90% marks.
	Throughput       float64 `json:"throughput"`
	SteadyThroughput float64 `json:"steady_throughput"`
	DurationSecs     float64 `json:"duration_seconds"`
	// LongestPauseMs is the longest time no outcome arrived, and
	// LongestPauseAtSecs when it began, after the first outcome: a stalled
	// transaction or a rebalance shows here.
	LongestPauseMs     float64 `json:"longest_pause_ms"`
	LongestPauseAtSecs float64 `json:"longest_pause_at_seconds"`

	// Outcomes counts each command's first outcome by kind: "applied" or
	// a conflict reason.
	Outcomes map[string]int64 `json:"outcomes"`
	// Missing commands got no outcome, Extra outcome records answered a
	// command again, Mismatched outcomes differ from the one the
	// generator expects; all three must be 0.
	Missing    int64 `json:"missing"`
	Extra      int64 `json:"extra"`
	Mismatched int64 `json:"mismatched"`

	Latency LatencyReport `json:"latency"`

	// Worker counters: records decided, batches (transactions) committed
	// and aborted, Redis round trips, each also per 1,000 commands.
	Records               int64   `json:"records"`
	TransactionsCommitted int64   `json:"transactions_committed"`
	TransactionsAborted   int64   `json:"transactions_aborted"`
	RedisRoundTrips       int64   `json:"redis_round_trips"`
	MeanBatch             float64 `json:"mean_batch"`
	TransactionsPer1k     float64 `json:"transactions_per_1k"`
	RedisRoundTripsPer1k  float64 `json:"redis_round_trips_per_1k"`

	// CPU seconds per 1,000 commands: the workers (CPUSource says how it
	// was measured), the bench process itself when the workers are
	// processes, redis-server (INFO cpu), the broker (with BrokerPID).
	WorkerCPUPer1k float64 `json:"worker_cpu_seconds_per_1k"`
	CPUSource      string  `json:"cpu_source"`
	BenchCPUPer1k  float64 `json:"bench_cpu_seconds_per_1k,omitempty"`
	RedisCPUPer1k  float64 `json:"redis_cpu_seconds_per_1k"`
	BrokerCPUPer1k float64 `json:"broker_cpu_seconds_per_1k,omitempty"`

	// Phases is where the in-process workers' batch cycles spent their
	// time (workers with one session only).
	Phases []PhaseReport `json:"phases,omitempty"`

	Memory       *MemoryReport `json:"redis_memory,omitempty"`
	RedisTimeout bool          `json:"-"`
}

// LatencyReport is the produce→outcome latency distribution, in
// milliseconds.
type LatencyReport struct {
	Count  int64   `json:"count"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P95Ms  float64 `json:"p95_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`
}

// MemoryReport is the Redis memory a run left: the used_memory growth and
// MEMORY USAGE samples of each kind of key.
type MemoryReport struct {
	UsedMemoryDelta int64   `json:"used_memory_delta"`
	PerCommand      float64 `json:"used_memory_per_command"`
	// PerAggregate is the MEMORY USAGE of an aggregate's own keys — its
	// version hash and its recent-events list — which are bounded per
	// aggregate however many commands it gets; PerCommandBeyond is the
	// growth per command without them: the decisions kept for
	// deduplication. 0 when the keys could not be sampled.
	PerAggregate     float64    `json:"memory_per_aggregate"`
	PerCommandBeyond float64    `json:"used_memory_per_command_beyond_aggregates"`
	Keys             []KeyClass `json:"keys"`
}

// perAggregateClasses are the key classes (see KeyClass) an aggregate has
// one of each, bounded in size: its hash and its recent-events list.
var perAggregateClasses = map[string]bool{"aggregate": true, "e": true}

// splitPerAggregate fills PerAggregate and PerCommandBeyond from the key
// samples, for a run of n commands.
func (m *MemoryReport) splitPerAggregate(n int) {
	var bytes float64
	var aggregates int64
	for _, k := range m.Keys {
		if !perAggregateClasses[k.Class] {
			continue
		}
		bytes += float64(k.Keys) * k.MeanBytes
		if k.Class == "aggregate" {
			aggregates = k.Keys
		}
	}
	if aggregates == 0 || n <= 0 {
		return
	}
	m.PerAggregate = bytes / float64(aggregates)
	m.PerCommandBeyond = (float64(m.UsedMemoryDelta) - bytes) / float64(n)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (r *RunReport) fillOutcomes(c *collector) {
	r.Outcomes = make(map[string]int64, len(c.byKind))
	for kind, n := range c.byKind {
		r.Outcomes[kind] = n
	}
	r.Missing = int64(r.Commands) - c.outcomes
	r.Extra = c.extra
	r.Mismatched = c.mismatch
	r.DurationSecs = (c.last - c.first).Seconds()
	if r.DurationSecs > 0 {
		r.Throughput = float64(c.outcomes-1) / r.DurationSecs
	}
	r.SteadyThroughput = c.windowRate(0.1, 0.9)
	pause, at := c.longestPause()
	r.LongestPauseMs, r.LongestPauseAtSecs = ms(pause), at.Seconds()
	h := c.latency
	r.Latency = LatencyReport{
		Count: h.Count(), P50Ms: ms(h.Percentile(50)), P90Ms: ms(h.Percentile(90)), P95Ms: ms(h.Percentile(95)),
		P99Ms: ms(h.Percentile(99)), P999Ms: ms(h.Percentile(99.9)), MaxMs: ms(h.Max()), MeanMs: ms(h.Mean()),
	}
}

func (r *RunReport) fillCounters(c counters) {
	r.Records = c.Records
	r.TransactionsCommitted = c.Committed
	r.TransactionsAborted = c.Aborted
	r.RedisRoundTrips = c.RedisRoundTrips
	if c.Committed > 0 {
		r.MeanBatch = float64(c.Records) / float64(c.Committed)
	}
	if c.Records > 0 {
		r.TransactionsPer1k = float64(c.Committed+c.Aborted) / float64(c.Records) * 1000
		if c.RedisRoundTrips >= 0 {
			r.RedisRoundTripsPer1k = float64(c.RedisRoundTrips) / float64(c.Records) * 1000
		} else {
			r.RedisRoundTripsPer1k = -1
		}
	}
}

// Key returns the memory sample of one key class, if there is one.
func (m *MemoryReport) Key(class string) (KeyClass, bool) {
	if m == nil {
		return KeyClass{}, false
	}
	for _, k := range m.Keys {
		if k.Class == class {
			return k, true
		}
	}
	return KeyClass{}, false
}

func readMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadBefore: readLoad()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				m.MemoryMiB = kb / 1024
			}
		}
	}
	return m
}

// readLoad returns the 1, 5 and 15 minute load averages.
func readLoad() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}

func settingsOf(cfg Config) Settings {
	s := Settings{
		Commands: cfg.N, Aggregates: cfg.Aggregates, Stale: cfg.Stale, Partitions: cfg.Partitions,
		Workers: cfg.Workers, WorkerKind: "in-process", Rate: cfg.Rate, Batch: cfg.Batch,
		Tuning: cfg.Tuning.String(), Sweep: cfg.Sweep, Seed: cfg.Seed,
		WarmupCommands: cfg.WarmupN, ReaderMaxWaitMs: ms(cfg.ReaderMaxWait),
	}
	if cfg.WorkerProcesses > 0 {
		s.Workers, s.WorkerKind = cfg.WorkerProcesses, "process"
	}
	if cfg.Baseline {
		s.BaselineCommands = cfg.BaselineN
	}
	return s
}

func fmtMillis(v float64) string {
	switch {
	case v >= 10_000:
		return fmt.Sprintf("%.1f s", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	default:
		return fmt.Sprintf("%.1f ms", v)
	}
}

func fmtCount(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// WriteTable prints the report as a table, batched and baseline side by
// side.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "arbiter bench against %s\n", r.Target)
	fmt.Fprintf(w, "machine: %d CPUs (%s), %d MiB, load average %s before, %s after\n",
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.MemoryMiB, r.Machine.LoadBefore, r.Machine.LoadAfter)
	s := r.Settings
	fmt.Fprintf(w, "settings: %d aggregates, %.0f%% stale, %d partitions, %d %s worker(s), tuning %s, exactly-once on\n",
		s.Aggregates, s.Stale*100, s.Partitions, s.Workers, s.WorkerKind, s.Tuning)
	fmt.Fprintf(w, "outcome reader: read_committed, fetch max wait %s; warm-up run of %d commands dropped\n\n", fmtMillis(s.ReaderMaxWaitMs), s.WarmupCommands)
	runs := []*RunReport{r.Batched}
	if r.Baseline != nil {
		runs = append(runs, r.Baseline)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name string, cell func(*RunReport) string) {
		fmt.Fprintf(tw, "%s\t", name)
		for _, run := range runs {
			fmt.Fprintf(tw, "%s\t", cell(run))
		}
		fmt.Fprintln(tw)
	}
	row("", func(run *RunReport) string { return run.Label })
	row("mode", func(run *RunReport) string { return run.Mode })
	row("batch (MaxBatch)", func(run *RunReport) string { return strconv.Itoa(run.Batch) })
	row("commands", func(run *RunReport) string { return fmtCount(float64(run.Commands)) })
	row("load generator produced them in", func(run *RunReport) string { return fmt.Sprintf("%.1f s", run.ProduceSecs) })
	row("sustained commands/s (first→last outcome)", func(run *RunReport) string { return fmtCount(run.Throughput) })
	row("steady commands/s (10%→90% of outcomes)", func(run *RunReport) string { return fmtCount(run.SteadyThroughput) })
	row("longest pause between outcomes", func(run *RunReport) string {
		return fmt.Sprintf("%s at +%.1f s", fmtMillis(run.LongestPauseMs), run.LongestPauseAtSecs)
	})
	kinds := map[string]bool{}
	for _, run := range runs {
		for k := range run.Outcomes {
			kinds[k] = true
		}
	}
	sortedKinds := make([]string, 0, len(kinds))
	for k := range kinds {
		sortedKinds = append(sortedKinds, k)
	}
	sort.Strings(sortedKinds)
	for _, k := range sortedKinds {
		row("outcomes: "+k, func(run *RunReport) string { return fmtCount(float64(run.Outcomes[k])) })
	}
	row("missing / extra / mismatched outcomes", func(run *RunReport) string {
		return fmt.Sprintf("%d / %d / %d", run.Missing, run.Extra, run.Mismatched)
	})
	row("latency p50 (produce → read_committed outcome)", func(run *RunReport) string { return fmtMillis(run.Latency.P50Ms) })
	row("latency p95", func(run *RunReport) string { return fmtMillis(run.Latency.P95Ms) })
	row("latency p99", func(run *RunReport) string { return fmtMillis(run.Latency.P99Ms) })
	row("latency max", func(run *RunReport) string { return fmtMillis(run.Latency.MaxMs) })
	row("mean records per transaction", func(run *RunReport) string { return fmt.Sprintf("%.1f", run.MeanBatch) })
	row("Kafka transactions / 1k commands", func(run *RunReport) string { return fmt.Sprintf("%.2f", run.TransactionsPer1k) })
	row("  of which aborted", func(run *RunReport) string { return strconv.FormatInt(run.TransactionsAborted, 10) })
	row("Redis round trips / 1k commands", func(run *RunReport) string {
		if run.RedisRoundTripsPer1k < 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", run.RedisRoundTripsPer1k)
	})
	row("worker CPU s / 1k commands", func(run *RunReport) string { return fmt.Sprintf("%.4f", run.WorkerCPUPer1k) })
	if r.Batched.BenchCPUPer1k > 0 {
		row("bench (load + reader) CPU s / 1k", func(run *RunReport) string { return fmt.Sprintf("%.4f", run.BenchCPUPer1k) })
	}
	row("redis-server CPU s / 1k commands", func(run *RunReport) string {
		if run.RedisCPUPer1k < 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.4f", run.RedisCPUPer1k)
	})
	if r.Batched.BrokerCPUPer1k > 0 {
		row("broker CPU s / 1k commands", func(run *RunReport) string { return fmt.Sprintf("%.4f", run.BrokerCPUPer1k) })
	}
	row("Redis used_memory growth / command", func(run *RunReport) string {
		if run.Memory == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.0f B", run.Memory.PerCommand)
	})
	row("of which per aggregate (hash + recent events)", func(run *RunReport) string {
		if run.Memory == nil || run.Memory.PerAggregate == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.0f B", run.Memory.PerAggregate)
	})
	row("growth / command beyond the aggregates' keys", func(run *RunReport) string {
		if run.Memory == nil || run.Memory.PerAggregate == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.0f B", run.Memory.PerCommandBeyond)
	})
	classes := map[string]bool{}
	for _, run := range runs {
		if run.Memory != nil {
			for _, k := range run.Memory.Keys {
				classes[k.Class] = true
			}
		}
	}
	sortedClasses := make([]string, 0, len(classes))
	for c := range classes {
		sortedClasses = append(sortedClasses, c)
	}
	sort.Strings(sortedClasses)
	for _, class := range sortedClasses {
		row(fmt.Sprintf("MEMORY USAGE %s key (key len, value len)", class), func(run *RunReport) string {
			k, ok := run.Memory.Key(class)
			if !ok {
				return "n/a"
			}
			return fmt.Sprintf("%.0f B (%.0f, %.0f) ×%s", k.MeanBytes, k.MeanKeyLength, k.MeanValueLength, fmtCount(float64(k.Keys)))
		})
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "worker CPU measured from: %s\n", r.Batched.CPUSource)
	for _, run := range runs {
		if len(run.Phases) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s worker batch cycle:\n", run.Label)
		pw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(pw, "phase\tshare\tmean\tp99\tmax\t")
		for _, p := range run.Phases {
			fmt.Fprintf(pw, "%s\t%.0f%%\t%s\t%s\t%s\t\n", p.Phase, p.Share*100, fmtMillis(p.MeanMs), fmtMillis(p.P99Ms), fmtMillis(p.MaxMs))
		}
		_ = pw.Flush()
	}
	if r.Baseline != nil {
		fmt.Fprintf(w, "\nspeed-up, batched over the per-command baseline: %.1f×\n", r.Speedup)
	}
	if r.Sweep != nil {
		fmt.Fprintln(w)
		r.Sweep.WriteTable(w)
	}
}
