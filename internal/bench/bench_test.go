package bench

import (
	"bytes"
	"context"
	"image/png"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/redisclient"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestHistogramPercentiles(t *testing.T) {
	tests := []struct {
		name   string
		values []time.Duration
		p      float64
		want   time.Duration
	}{
		{"single value", []time.Duration{5 * time.Millisecond}, 99, 5 * time.Millisecond},
		{"median of 1..100 ms", spread(100, time.Millisecond), 50, 50 * time.Millisecond},
		{"p99 of 1..100 ms", spread(100, time.Millisecond), 99, 99 * time.Millisecond},
		{"max of 1..100 ms", spread(100, time.Millisecond), 100, 100 * time.Millisecond},
		{"p95 of 1..1000 µs", spread(1000, time.Microsecond), 95, 950 * time.Microsecond},
		{"p50 of 1..10000 s", spread(10000, time.Second), 50, 5000 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistogram()
			for _, v := range tt.values {
				h.Record(v)
			}
			got := h.Percentile(tt.p)
			if relErr := math.Abs(float64(got-tt.want)) / float64(tt.want); relErr > 1.0/64 {
				t.Errorf("p%v = %v, want %v within 1/64 (error %.3f)", tt.p, got, tt.want, relErr)
			}
			if got > h.Max() {
				t.Errorf("p%v = %v is above the maximum %v", tt.p, got, h.Max())
			}
		})
	}
}

func spread(n int, unit time.Duration) []time.Duration {
	values := make([]time.Duration, n)
	for i := range values {
		values[i] = time.Duration(i+1) * unit
	}
	return values
}

func TestHistogramBucketsCoverEveryValue(t *testing.T) {
	for v := int64(0); v < 1<<20; v += 1 + v/50 {
		i := histogramIndex(v)
		if high := histogramHighest(i); high < v || (v >= histogramSubCount && float64(high-v) > float64(v)/64) {
			t.Fatalf("value %d in bucket %d whose highest value is %d: outside the bucket or over 1/64 off", v, i, high)
		}
		if i > 0 && histogramHighest(i-1) >= v {
			t.Fatalf("value %d also fits bucket %d below its own %d", v, i-1, i)
		}
	}
}

func TestWorkloadExpectations(t *testing.T) {
	w := generateWorkload(7, "ctest", 5000, 300, 0.1)
	if share := float64(w.stale) / 5000; share < 0.08 || share > 0.12 {
		t.Errorf("stale share %.3f, want about 0.1", share)
	}
	for seq := range w.values {
		if got := w.seqOf([]byte(w.commandID(seq))); got != seq {
			t.Fatalf("command ID %s parses back to %d, want %d", w.commandID(seq), got, seq)
		}
	}
	for _, foreign := range []string{"", "warmup-1", "ctest-", "ctest-x", "ctestx-1", "ctest-5000"} {
		if seq := w.seqOf([]byte(foreign)); seq != -1 {
			t.Errorf("seqOf(%q) = %d, want -1", foreign, seq)
		}
	}
}

func TestPlotIsAPNG(t *testing.T) {
	sweep := &SweepReport{Peaks: map[string]float64{"batched": 40000, "baseline": 100}}
	for _, f := range []float64{0.25, 0.5, 1, 1.25} {
		sweep.Points = append(sweep.Points,
			SweepPoint{Label: "batched", Fraction: f, OfferedRate: f * 40000, Throughput: min(f, 1) * 40000, P99Ms: 50 / (1.3 - f)},
			SweepPoint{Label: "baseline", Fraction: f, OfferedRate: f * 100, Throughput: min(f, 1) * 100, P99Ms: 30 / (1.3 - f)})
	}
	var buf bytes.Buffer
	if err := sweep.WritePlot(&buf, "test"); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("the plot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 400 {
		t.Errorf("plot is %v, want at least 800×400", b)
	}
}

// TestBenchSmoke runs the bench against the real stack with a tiny load and
// checks every field of the report is present and consistent. It asserts
// nothing about speed.
func TestBenchSmoke(t *testing.T) {
	brokers := testenv.Brokers(t)
	redisURL := testenv.RedisURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress strings.Builder
	report, err := Run(ctx, Config{
		Brokers:       brokers,
		RedisURL:      redisURL,
		N:             2000,
		Aggregates:    200,
		Stale:         0.1,
		Partitions:    4,
		Workers:       1,
		Batch:         500,
		Baseline:      true,
		BaselineN:     200,
		Sweep:         []float64{0.5},
		SweepDuration: 2 * time.Second,
		Progress:      &progress,
		BrokerPID:     brokerPID(),
	})
	if err != nil {
		t.Fatalf("bench: %v\nprogress:\n%s", err, progress.String())
	}
	var table strings.Builder
	report.WriteTable(&table)
	t.Logf("report:\n%s", table.String())

	if report.Machine.CPUs < 1 || report.Machine.LoadBefore == "" || report.Machine.LoadAfter == "" {
		t.Errorf("machine not described: %+v", report.Machine)
	}
	for _, run := range []*RunReport{report.Batched, report.Baseline} {
		if run == nil {
			t.Fatal("a run is missing from the report")
		}
		checkRun(t, run)
	}
	if report.Baseline.Batch != 1 || report.Baseline.MeanBatch != 1 {
		t.Errorf("baseline: batch %d, mean records per transaction %.2f; want 1 and 1", report.Baseline.Batch, report.Baseline.MeanBatch)
	}
	if report.Speedup <= 0 {
		t.Errorf("speed-up %v, want a positive ratio", report.Speedup)
	}
	if report.Sweep == nil || len(report.Sweep.Points) != 2 {
		t.Fatalf("sweep: want one point per configuration, got %+v", report.Sweep)
	}
	for _, p := range report.Sweep.Points {
		if p.OfferedRate <= 0 || p.Throughput <= 0 || p.P99Ms <= 0 || p.Commands < 100 {
			t.Errorf("sweep point %+v: want positive rates, latency and commands", p)
		}
	}
	var plot bytes.Buffer
	if err := report.Sweep.WritePlot(&plot, "smoke"); err != nil {
		t.Errorf("plot: %v", err)
	}
}

// TestBenchRedisModes runs a small batched run on the test Redis Cluster
// and through the test Sentinels: the workers, the outcome checks and the
// Redis readings (INFO and the key samples, summed over a cluster's
// masters) work in every mode.
func TestBenchRedisModes(t *testing.T) {
	for _, tc := range []struct {
		mode redisclient.Mode
		url  func(t *testing.T) string
	}{
		{redisclient.ModeCluster, func(t *testing.T) string { testenv.RedisCluster(t); return os.Getenv(testenv.EnvRedisClusterURL) }},
		{redisclient.ModeSentinel, func(t *testing.T) string { testenv.RedisSentinel(t); return os.Getenv(testenv.EnvRedisSentinelURL) }},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			brokers := testenv.Brokers(t)
			redisURL := tc.url(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var progress strings.Builder
			report, err := Run(ctx, Config{
				Brokers: brokers, RedisURL: redisURL, RedisMode: tc.mode,
				N: 2000, Aggregates: 200, Stale: 0.1, Partitions: 4, Workers: 1, Batch: 500, Progress: &progress,
			})
			if err != nil {
				t.Fatalf("bench: %v\nprogress:\n%s", err, progress.String())
			}
			checkRun(t, report.Batched)
		})
	}
}

func checkRun(t *testing.T, run *RunReport) {
	t.Helper()
	name := run.Label
	var outcomes int64
	for _, n := range run.Outcomes {
		outcomes += n
	}
	if outcomes != int64(run.Commands) || run.Missing != 0 {
		t.Errorf("%s: %d outcomes (%d missing) for %d commands: every command must have one", name, outcomes, run.Missing, run.Commands)
	}
	if run.Extra != 0 || run.Mismatched != 0 {
		t.Errorf("%s: %d extra and %d mismatched outcomes: saw a command answered twice or wrongly", name, run.Extra, run.Mismatched)
	}
	if run.Outcomes["applied"] == 0 || run.Outcomes["version_conflict"] == 0 {
		t.Errorf("%s: outcomes %v: want applied commands and version conflicts", name, run.Outcomes)
	}
	if run.Records < int64(run.Commands) {
		t.Errorf("%s: workers counted %d records for %d commands", name, run.Records, run.Commands)
	}
	if run.Throughput <= 0 || run.DurationSecs <= 0 || run.ProduceSecs <= 0 {
		t.Errorf("%s: throughput %v over %vs, produced in %vs: want positive", name, run.Throughput, run.DurationSecs, run.ProduceSecs)
	}
	l := run.Latency
	if l.Count != int64(run.Commands) || l.P50Ms <= 0 || l.P50Ms > l.P95Ms || l.P95Ms > l.P99Ms || l.P99Ms > l.MaxMs {
		t.Errorf("%s: latency %+v: want one sample per command and 0 < p50 <= p95 <= p99 <= max", name, l)
	}
	if run.TransactionsCommitted <= 0 || run.TransactionsPer1k <= 0 || run.MeanBatch <= 0 {
		t.Errorf("%s: %d transactions, %.2f per 1k, mean batch %.1f: want positive", name, run.TransactionsCommitted, run.TransactionsPer1k, run.MeanBatch)
	}
	if run.RedisRoundTrips <= 0 || run.RedisRoundTripsPer1k <= 0 {
		t.Errorf("%s: %d Redis round trips (%.2f per 1k): want positive", name, run.RedisRoundTrips, run.RedisRoundTripsPer1k)
	}
	if run.WorkerCPUPer1k <= 0 || run.RedisCPUPer1k < 0 || run.CPUSource == "" {
		t.Errorf("%s: worker CPU %v, redis CPU %v per 1k (%q): want measured", name, run.WorkerCPUPer1k, run.RedisCPUPer1k, run.CPUSource)
	}
	m := run.Memory
	if m == nil {
		t.Fatalf("%s: no Redis memory report", name)
	}
	aggregates, ok := m.Key("aggregate")
	if !ok || aggregates.Keys <= 0 || aggregates.MeanBytes <= 0 || aggregates.MeanValueLength <= 0 {
		t.Errorf("%s: aggregate keys %+v: want counted and sampled", name, aggregates)
	}
	if len(m.Keys) < 2 {
		t.Errorf("%s: key classes %+v: want aggregates and per-command records", name, m.Keys)
	}
}

// brokerPID is the stack's broker process, when scripts/stack.sh says.
func brokerPID() int {
	pid := 0
	for _, c := range os.Getenv(testenv.EnvKafkaPID) {
		if c < '0' || c > '9' {
			return 0
		}
		pid = pid*10 + int(c-'0')
	}
	return pid
}

func TestWorkerProcessFlags(t *testing.T) {
	tests := []struct {
		name   string
		tuning Tuning
		want   []string
	}{
		{"defaults", Tuning{}, nil},
		{"concurrency", Tuning{Concurrency: 3}, []string{"--concurrency", "3"}},
		{"extra flags after the knobs", Tuning{Concurrency: 2, WorkerArgs: []string{"--recent-events=-1", "--max-batch", "500"}},
			[]string{"--concurrency", "2", "--recent-events=-1", "--max-batch", "500"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tuning.workerFlags(); !slices.Equal(got, tt.want) {
				t.Errorf("workerFlags() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWorkerArgsNeedWorkerProcesses(t *testing.T) {
	cfg := Config{Workers: 1, Tuning: Tuning{WorkerArgs: []string{"--recent-events=-1"}}}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "--worker-arg") {
		t.Fatalf("Validate() = %v, want the refusal of --worker-arg for in-process workers", err)
	}
}

func TestConflictReason(t *testing.T) {
	tests := []struct {
		name          string
		value, ceType string
		want          string
	}{
		{"from the CloudEvents type", `{"reason":"ignored"}`, "arbiter.conflict.version_conflict", "version_conflict"},
		{"from the value without the header", `{"commandId":"c","reason":"duplicate"}`, "", "duplicate"},
		{"another type: the value", `{"reason":"rejected"}`, "com.example.other", "rejected"},
		{"empty reason in the type", `{"reason":"invalid"}`, "arbiter.conflict.", "invalid"},
		{"undecodable", `{"reason":`, "", "undecodable"},
		{"no reason", `{}`, "", "undecodable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := conflictReason([]byte(tt.value), []byte(tt.ceType)); got != tt.want {
				t.Errorf("conflictReason = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMemorySplitPerAggregate(t *testing.T) {
	m := MemoryReport{UsedMemoryDelta: 1_000_000, Keys: []KeyClass{
		{Class: "aggregate", Keys: 100, MeanBytes: 150},
		{Class: "e", Keys: 100, MeanBytes: 1000},
		{Class: "d", Keys: 100, MeanBytes: 500},
	}}
	m.splitPerAggregate(10_000)
	if m.PerAggregate != 1150 {
		t.Errorf("PerAggregate = %v, want 150 + 1000", m.PerAggregate)
	}
	if want := (1_000_000 - 115_000) / 10_000.0; m.PerCommandBeyond != want {
		t.Errorf("PerCommandBeyond = %v, want %v", m.PerCommandBeyond, want)
	}
	none := MemoryReport{UsedMemoryDelta: 500, Keys: []KeyClass{{Class: "d", Keys: 3, MeanBytes: 100}}}
	none.splitPerAggregate(10)
	if none.PerAggregate != 0 || none.PerCommandBeyond != 0 {
		t.Errorf("without aggregate keys: %+v, want no split", none)
	}
}
