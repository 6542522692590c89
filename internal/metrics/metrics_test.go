package metrics

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clock is a settable time for the stuck-partition rule.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time          { return c.now }
func (c *clock) advance(d time.Duration) { c.now = c.now.Add(d) }
func newClock() *clock                   { return &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func (c *clock) config(reg *prometheus.Registry) Config {
	return Config{Registerer: reg, StuckAfter: time.Minute, now: c.Now}
}

const topic = "commands"

func newMetrics(t *testing.T, c *clock) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(c.config(reg))
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

func session(id string, state processor.SessionState, partitions ...int32) processor.SessionObservation {
	return processor.SessionObservation{TransactionalID: id, State: state, Topic: topic, Partitions: partitions}
}

func batch(result processor.TransactionResult, err error, partitions ...int32) processor.BatchObservation {
	return processor.BatchObservation{TransactionalID: "a", Topic: topic, Partitions: partitions, Records: 1, Result: result, Err: err}
}

func TestReadiness(t *testing.T) {
	failed := errors.New("redis timeout")
	amnesia := errors.Wrap(versionstore.ErrAmnesia, "commit")
	type step struct {
		advance   time.Duration
		session   *processor.SessionObservation
		batch     *processor.BatchObservation
		wantReady bool
		wantWhy   string // part of the not-ready reason
	}
	sessionStep := func(o processor.SessionObservation, ready bool, why string) step {
		return step{session: &o, wantReady: ready, wantWhy: why}
	}
	batchStep := func(advance time.Duration, o processor.BatchObservation, ready bool, why string) step {
		return step{advance: advance, batch: &o, wantReady: ready, wantWhy: why}
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"joining then assigned", []step{
			{wantReady: false, wantWhy: "not started"},
			sessionStep(session("a", processor.SessionJoining), false, "not in the group yet: session(s) a"),
			sessionStep(session("a", processor.SessionAssigned, 0, 1), true, ""),
			sessionStep(session("b", processor.SessionJoining), false, "session(s) b"),
			sessionStep(session("b", processor.SessionAssigned), true, ""), // in the group with no partitions
			sessionStep(session("a", processor.SessionClosed), false, "session(s) a"),
		}},
		{"waiting for a rebuild", []step{
			sessionStep(session("", processor.SessionWaitingForRebuild), false, "rebuild-versions"),
			sessionStep(session("a", processor.SessionJoining), false, "rebuild-versions"),
			sessionStep(session("", processor.SessionResumed), false, "session(s) a"),
			sessionStep(session("a", processor.SessionAssigned, 0), true, ""),
			sessionStep(session("a", processor.SessionWaitingForRebuild), false, "rebuild-versions"),
			sessionStep(session("a", processor.SessionResumed), true, ""),
		}},
		{"a partition failing for a minute is stuck until a commit", []step{
			sessionStep(session("a", processor.SessionAssigned, 0, 1), true, ""),
			batchStep(0, batch(processor.TransactionAborted, failed, 1), true, ""),
			batchStep(30*time.Second, batch(processor.TransactionFailed, nil, 1), true, ""),
			batchStep(31*time.Second, batch(processor.TransactionAborted, failed, 1), false, "stuck, their batches failing for over 1m0s: commands/1"),
			batchStep(time.Second, batch(processor.TransactionCommitted, nil, 1), true, ""),
		}},
		{"failures far apart are not a run", []step{
			sessionStep(session("a", processor.SessionAssigned, 0), true, ""),
			batchStep(0, batch(processor.TransactionAborted, failed, 0), true, ""),
			batchStep(90*time.Second, batch(processor.TransactionAborted, failed, 0), true, ""),
			{advance: 2 * time.Minute, wantReady: true}, // the last failure is old
		}},
		{"amnesia is waiting, not stuck", []step{
			sessionStep(session("a", processor.SessionAssigned, 0), true, ""),
			batchStep(0, batch(processor.TransactionAborted, amnesia, 0), true, ""),
			batchStep(2*time.Minute, batch(processor.TransactionAborted, amnesia, 0), true, ""),
		}},
		{"an isolated partition is stuck at once, until it moves again", []step{
			sessionStep(session("a", processor.SessionAssigned, 0, 1), true, ""),
			sessionStep(session("a", processor.SessionPartitionStuck, 1), false, "stuck, isolated (their batches fail alone; paused while the others decide): commands/1"),
			batchStep(time.Second, batch(processor.TransactionCommitted, nil, 0), false, "commands/1"),
			sessionStep(session("a", processor.SessionPartitionMoving, 1), true, ""),
		}},
		{"an isolated partition that moved away is not ours to be stuck", []step{
			sessionStep(session("a", processor.SessionAssigned, 0, 1), true, ""),
			sessionStep(session("a", processor.SessionPartitionStuck, 1), false, "commands/1"),
			sessionStep(session("a", processor.SessionRevoked, 1), true, ""),
			sessionStep(session("a", processor.SessionAssigned, 1), true, ""),
		}},
		{"a partition that moved away is not ours to be stuck", []step{
			sessionStep(session("a", processor.SessionAssigned, 0, 1), true, ""),
			batchStep(0, batch(processor.TransactionAborted, failed, 1), true, ""),
			sessionStep(session("a", processor.SessionRevoked, 1), true, ""),
			batchStep(61*time.Second, batch(processor.TransactionAborted, failed, 0), true, ""),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			m, _ := newMetrics(t, c)
			for i, s := range tt.steps {
				c.advance(s.advance)
				if s.session != nil {
					m.ObserveSession(*s.session)
				}
				if s.batch != nil {
					m.ObserveBatch(*s.batch)
				}
				err := m.Ready()
				if (err == nil) != s.wantReady {
					t.Fatalf("step %d: ready = %v (%v), want %v", i, err == nil, err, s.wantReady)
				}
				if err != nil && !strings.Contains(err.Error(), s.wantWhy) {
					t.Fatalf("step %d: not ready because %q, want it to say %q", i, err, s.wantWhy)
				}
			}
		})
	}
}

func TestOutcomesCountOnlyCommittedBatches(t *testing.T) {
	m, reg := newMetrics(t, newClock())
	outcomes := processor.OutcomeCounts{Applied: 3, VersionConflict: 2, Rejected: 1, Invalid: 1, UnknownType: 1, Duplicate: 1}
	for _, result := range []processor.TransactionResult{processor.TransactionCommitted, processor.TransactionAborted, processor.TransactionFailed, processor.TransactionCommitted} {
		m.ObserveBatch(processor.BatchObservation{Topic: topic, Partitions: []int32{0}, Records: 10, Outcomes: outcomes, Replayed: 1, Result: result})
	}
	m.ObserveRedis(processor.RedisObservation{Operation: processor.RedisCommit, Duration: time.Millisecond, Err: errors.New("timeout")})
	want := `
# HELP arbiter_commands_total Commands decided in committed transactions, by outcome (applied, or the conflict record's reason).
# TYPE arbiter_commands_total counter
arbiter_commands_total{outcome="applied"} 6
arbiter_commands_total{outcome="duplicate"} 2
arbiter_commands_total{outcome="invalid"} 2
arbiter_commands_total{outcome="rejected"} 2
arbiter_commands_total{outcome="unknown_type"} 2
arbiter_commands_total{outcome="version_conflict"} 4
# HELP arbiter_replayed_commands_total Commands whose recorded outcome was re-published after their first transaction did not commit.
# TYPE arbiter_replayed_commands_total counter
arbiter_replayed_commands_total 2
# HELP arbiter_transactions_total Batch transactions by result: committed, aborted (by the worker; the records come again), failed (the commit did not go through; the session rejoins).
# TYPE arbiter_transactions_total counter
arbiter_transactions_total{result="aborted"} 1
arbiter_transactions_total{result="committed"} 2
arbiter_transactions_total{result="failed"} 1
# HELP arbiter_redis_errors_total Redis round trips that failed, by operation; the amnesia check failing counts here too.
# TYPE arbiter_redis_errors_total counter
arbiter_redis_errors_total{operation="commit"} 1
arbiter_redis_errors_total{operation="load"} 0
arbiter_redis_errors_total{operation="load_outcomes"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), CommandsTotal, ReplayedCommandsTotal, TransactionsTotal, RedisErrorsTotal); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, BatchRecords); err != nil || n != 1 {
		t.Fatalf("batch size histogram: %d series, %v", n, err)
	}
}

// TestNamingConventions runs Prometheus's own linter over every metric,
// the franz-go client metrics included.
func TestNamingConventions(t *testing.T) {
	m, reg := newMetrics(t, newClock())
	m.ObserveSession(session("a", processor.SessionAssigned, 0))
	m.ObserveBatch(batch(processor.TransactionCommitted, nil, 0))
	m.ObserveRedis(processor.RedisObservation{Operation: processor.RedisLoad})
	// A session replaced by a new client with the same transactional ID
	// registers its client metrics again: kprom unregisters them on Close,
	// and registering twice would panic.
	for replaced := range 3 {
		client, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, m.KafkaSessionOptions("arbiter-a")...)...)
		if err != nil {
			t.Fatal(err)
		}
		if replaced < 2 {
			client.Close()
		} else {
			defer client.Close()
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	// kprom names two of its gauges like counters; they are its names, not
	// ours.
	kpromGauges := map[string]bool{
		KafkaClientMetricsPrefix + "buffered_fetch_records_total":   true,
		KafkaClientMetricsPrefix + "buffered_produce_records_total": true,
	}
	for _, p := range problems {
		if !kpromGauges[p.Metric] {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
	kafkaMetrics := 0
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	gathered := map[string]bool{}
	for _, f := range families {
		gathered[f.GetName()] = true
		if strings.HasPrefix(f.GetName(), KafkaClientMetricsPrefix) {
			kafkaMetrics++
		}
	}
	if kafkaMetrics == 0 {
		t.Errorf("no franz-go client metrics (%s*) registered", KafkaClientMetricsPrefix)
	}
	for _, name := range Names() {
		if !gathered[name] && name != ConsumerLagRecords { // lag needs a broker
			t.Errorf("metric %s is in Names() but not registered", name)
		}
	}
}

func TestServer(t *testing.T) {
	tests := []struct {
		name       string
		pprof      bool
		checkErr   error
		path       string
		wantStatus int
		wantBody   string
	}{
		{"alive", false, errors.New("redis down"), HealthPath, http.StatusOK, "ok"},
		{"ready", false, nil, ReadyPath, http.StatusOK, "ok"},
		{"not ready says why", false, errors.New("redis down"), ReadyPath, http.StatusServiceUnavailable, "redis: redis down"},
		{"metrics", false, nil, MetricsPath, http.StatusOK, CommandsTotal},
		{"pprof off", false, nil, PprofPath, http.StatusNotFound, ""},
		{"pprof on", true, nil, PprofPath + "goroutine?debug=1", http.StatusOK, "goroutine profile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, reg := newMetrics(t, newClock())
			server, err := NewServer(ServerConfig{
				Addr: "127.0.0.1:0", Gatherer: reg, Pprof: tt.pprof,
				Checks: []Check{{Name: "redis", Check: func(context.Context) error { return tt.checkErr }}},
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- server.Serve(ctx) }()
			defer func() {
				cancel()
				if err := <-served; err != nil {
					t.Errorf("serve: %v", err)
				}
			}()
			status, body := get(t, "http://"+server.Addr()+tt.path)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("GET %s: %d %q, want %d containing %q", tt.path, status, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestKafkaCheckUnreachable: with no broker to answer, the Kafka check of
// /readyz fails within its time-out and says so.
func TestKafkaCheckUnreachable(t *testing.T) {
	client, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	check := KafkaCheck(kadm.NewClient(client), "commands")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := check.Check(ctx); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("kafka check without a broker: %v, want unreachable", err)
	}
}
