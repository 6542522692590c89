package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/metrics"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// stack is one test's slice of the real Kafka and Redis with a worker
// serving its metrics on a port of its own.
type stack struct {
	t        *testing.T
	brokers  []string
	topics   testkit.Topics
	group    string
	prefix   string
	store    *versionstore.Store
	registry *processor.Registry
	out      *testkit.Collector
	url      string
	// stuckAfter is the worker's; zero takes the default.
	stuckAfter time.Duration
}

func newStack(t *testing.T, partitions int32) *stack {
	t.Helper()
	brokers := testenv.Brokers(t)
	name := testenv.Name(t, "")
	s := &stack{
		t:        t,
		brokers:  brokers,
		topics:   testkit.Topics{Commands: name + "-commands", Events: name + "-events", Conflicts: name + "-conflicts"},
		group:    name,
		prefix:   name,
		store:    versionstore.New(testenv.Redis(t), versionstore.Options{KeyPrefix: name}),
		registry: processor.NewRegistry(),
	}
	if err := product.Register(s.registry); err != nil {
		t.Fatal(err)
	}
	testenv.CreateTopics(t, brokers, partitions, s.topics.Commands, s.topics.Events, s.topics.Conflicts)
	s.out = testkit.Collect(t, brokers, s.topics)
	return s
}

// startWorker runs a worker with its HTTP listener until the test ends.
func (s *stack) startWorker(concurrency int) {
	t := s.t
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	telemetry, err := metrics.NewWorker(metrics.WorkerConfig{
		Addr: "127.0.0.1:0", Brokers: s.brokers, Group: s.group, CommandsTopic: s.topics.Commands,
		Store: s.store, Logger: log.Named("http"), StuckAfter: s.stuckAfter,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.url = "http://" + telemetry.Addr()
	cfg := processor.Config{
		Brokers: s.brokers, Group: s.group,
		CommandsTopic: s.topics.Commands, EventsTopic: s.topics.Events, ConflictsTopic: s.topics.Conflicts,
		Registry: s.registry, Store: s.store, Logger: log.Named("worker"), SessionTimeout: 6 * time.Second,
		Concurrency: concurrency,
	}
	telemetry.Instrument(&cfg)
	worker, err := processor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- telemetry.Run(ctx, worker.Run) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
		telemetry.Close()
	})
}

func (s *stack) get(path string) (int, string) {
	s.t.Helper()
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(s.url + path)
	if err != nil {
		s.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// await polls check every 200 ms until it returns "" or timeout passes;
// there is nothing to subscribe to in an HTTP endpoint.
func (s *stack) await(timeout time.Duration, what string, check func() string) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		problem := check()
		if problem == "" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: still %s after %v", what, problem, timeout)
		}
		<-ticker.C
	}
}

func (s *stack) awaitReady(timeout time.Duration, wantStatus int, wantBody string) string {
	s.t.Helper()
	var body string
	s.await(timeout, "/readyz", func() string {
		var status int
		status, body = s.get(metrics.ReadyPath)
		if status != wantStatus || !strings.Contains(body, wantBody) {
			return strings.TrimSpace(body)
		}
		return ""
	})
	return body
}

// scrape reads /metrics and parses it the way Prometheus does.
func (s *stack) scrape() map[string]*dto.MetricFamily {
	s.t.Helper()
	status, body := s.get(metrics.MetricsPath)
	if status != http.StatusOK {
		s.t.Fatalf("GET /metrics: %d %s", status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		s.t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// value returns the sum of a family's series whose labels include labels.
func value(families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	total := 0.0
	family := families[name]
	if family == nil {
		return -1
	}
	for _, m := range family.GetMetric() {
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, pair := range m.GetLabel() {
				found = found || pair.GetName() == labels[i] && pair.GetValue() == labels[i+1]
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

func command(t *testing.T, id, productID, commandType string, expectedVersion int64, payload any) commands.Command {
	t.Helper()
	cmd, err := product.Command(id, productID, commandType, expectedVersion, payload)
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

// TestMetricsAfterAKnownMixOfOutcomes sends one command of each outcome
// (two applied) and reads the counters, the lag and the client metrics
// from /metrics, of a worker with two sessions.
func TestMetricsAfterAKnownMixOfOutcomes(t *testing.T) {
	s := newStack(t, 2)
	s.startWorker(2)
	s.awaitReady(90*time.Second, http.StatusOK, "ok")

	const productID = "prod-mix"
	create := command(t, "mix-create", productID, product.CreateProductType, 0, product.CreateProduct{Name: "Lamp", Price: 40, Stock: 3})
	cmds := []commands.Command{
		create,
		command(t, "mix-price", productID, product.ChangePriceType, 1, product.ChangePrice{NewPrice: 35}),
		command(t, "mix-stale", productID, product.ChangePriceType, 1, product.ChangePrice{NewPrice: 30}),                            // version_conflict
		command(t, "mix-recreate", productID, product.CreateProductType, 2, product.CreateProduct{Name: "Lamp", Price: 1, Stock: 1}), // rejected: exists
		{ID: "mix-unknown", AggregateID: productID, Type: "Paint", ExpectedVersion: 2, Payload: []byte(`{}`)},                        // unknown_type
		command(t, "mix-create", productID, product.CreateProductType, 0, product.CreateProduct{Name: "Other", Price: 1, Stock: 1}),  // duplicate ID
	}
	records := make([]*kgo.Record, 0, len(cmds)+1)
	for _, cmd := range cmds {
		records = append(records, testkit.CommandRecord(t, s.topics.Commands, cmd))
	}
	records = append(records, &kgo.Record{Topic: s.topics.Commands, Key: []byte(productID), Value: []byte("not json")}) // invalid
	testkit.Produce(t, s.brokers, records...)

	want := map[string]float64{"applied": 2, "version_conflict": 1, "rejected": 1, "unknown_type": 1, "invalid": 1, "duplicate": 1}
	var families map[string]*dto.MetricFamily
	s.await(90*time.Second, "arbiter_commands_total", func() string {
		families = s.scrape()
		if got := value(families, metrics.CommandsTotal); got != 7 {
			return fmt.Sprintf("at %v commands, want 7", got)
		}
		return ""
	})
	for outcome, n := range want {
		if got := value(families, metrics.CommandsTotal, "outcome", outcome); got != n {
			t.Errorf(`arbiter_commands_total{outcome=%q} = %v, want %v`, outcome, got, n)
		}
	}
	// The second session's join can take a partition from the first
	// during its first transaction, which franz-go then aborts: an
	// aborted transaction is allowed, and only then a replay.
	aborted := value(families, metrics.TransactionsTotal, "result", "aborted")
	if got := value(families, metrics.ReplayedCommandsTotal); got != 0 && aborted == 0 {
		t.Errorf("replayed %v commands with no aborted transaction", got)
	}
	if aborted > 0 {
		t.Logf("%v transactions aborted by the sessions' rebalance", aborted)
	}
	if got := value(families, metrics.TransactionsTotal, "result", "committed"); got < 1 {
		t.Errorf("no committed transaction counted: %v", got)
	}
	if got := value(families, metrics.TransactionsTotal, "result", "failed"); got != 0 {
		t.Errorf("%v transactions failed, want none", got)
	}
	if got := value(families, metrics.BatchRecords); got < 1 {
		t.Errorf("batch size histogram has %v observations", got)
	}
	for _, operation := range []string{"load", "commit"} {
		if got := value(families, metrics.RedisRoundTripSeconds, "operation", operation); got < 1 {
			t.Errorf("no Redis %s round trip timed", operation)
		}
	}
	if got := value(families, metrics.KafkaTransactionSeconds, "result", "committed"); got < 1 {
		t.Errorf("no Kafka transaction timed")
	}
	if got := value(families, metrics.AssignedPartitions); got != 2 {
		t.Errorf("arbiter_assigned_partitions = %v, want 2", got)
	}
	if got := value(families, metrics.WaitingForRebuild); got != 0 {
		t.Errorf("arbiter_waiting_for_rebuild = %v", got)
	}
	if got := value(families, metrics.PartitionStuck); got != 0 {
		t.Errorf("%v partitions stuck", got)
	}
	if got := value(families, metrics.KafkaClientMetricsPrefix+"produce_records_total"); got < 7 {
		t.Errorf("franz-go client metrics: %v records produced, want at least the 7 outcomes", got)
	}
	sessions := map[string]bool{}
	for _, m := range families[metrics.KafkaClientMetricsPrefix+"connects_total"].GetMetric() {
		for _, label := range m.GetLabel() {
			if label.GetName() == "transactional_id" {
				sessions[label.GetValue()] = true
			}
		}
	}
	if len(sessions) != 2 {
		t.Errorf("franz-go client metrics of %d sessions (%v), want 2", len(sessions), sessions)
	}
	// The offsets are committed with the transaction: no lag is left.
	s.await(30*time.Second, "arbiter_consumer_lag_records", func() string {
		families := s.scrape()
		if n := len(families[metrics.ConsumerLagRecords].GetMetric()); n != 2 {
			return fmt.Sprintf("lag reported for %d partitions, want 2", n)
		}
		if lag := value(families, metrics.ConsumerLagRecords); lag != 0 {
			return fmt.Sprintf("a lag of %v", lag)
		}
		return ""
	})
}

// TestReadyzWhileRedisHasLostItsData removes every key of the test's
// prefix (the amnesia marker with them, as a Redis restarted without
// persistence would): /readyz turns 503 at once, the worker waits for the
// rebuild when a command comes, and both are back after the rebuild.
func TestReadyzWhileRedisHasLostItsData(t *testing.T) {
	s := newStack(t, 2)
	s.startWorker(1)
	s.awaitReady(90*time.Second, http.StatusOK, "ok")
	const productID = "prod-amnesia"
	s.sendAndWait(command(t, "amnesia-create", productID, product.CreateProductType, 0, product.CreateProduct{Name: "Desk", Price: 90, Stock: 2}))

	s.forgetEverything()
	body := s.awaitReady(30*time.Second, http.StatusServiceUnavailable, "redis has lost arbiter's data")
	t.Logf("/readyz after the data loss: %s", strings.TrimSpace(body))

	price := command(t, "amnesia-price", productID, product.ChangePriceType, 1, product.ChangePrice{NewPrice: 80})
	testkit.Produce(t, s.brokers, testkit.CommandRecord(t, s.topics.Commands, price))
	s.await(60*time.Second, "arbiter_waiting_for_rebuild", func() string {
		if value(s.scrape(), metrics.WaitingForRebuild) != 1 {
			return "0"
		}
		return ""
	})
	if status, body := s.get(metrics.ReadyPath); status != http.StatusServiceUnavailable || !strings.Contains(body, "worker: waiting for 'arbiter rebuild-versions'") {
		t.Fatalf("/readyz while the worker waits: %d %s", status, body)
	}

	report, err := processor.Rebuild(context.Background(), processor.RebuildConfig{
		Brokers: s.brokers, EventsTopic: s.topics.Events, CommandsTopic: s.topics.Commands, Group: s.group,
		Registry: s.registry, Store: s.store, Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named("rebuild"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rebuild: %d events, %d aggregates", report.Events, report.Aggregates)
	s.awaitReady(60*time.Second, http.StatusOK, "ok")
	got := s.out.WaitFor(60*time.Second, price.ID)[price.ID]
	if len(got.Events) != 1 || got.Events[0].Version != 2 {
		t.Fatalf("the command sent during the data loss must be applied at version 2 after the rebuild, got %+v", got)
	}
	if families := s.scrape(); value(families, metrics.WaitingForRebuild) != 0 || value(families, metrics.Ready) != 1 {
		t.Fatalf("after the rebuild: waiting_for_rebuild %v, ready %v", value(families, metrics.WaitingForRebuild), value(families, metrics.Ready))
	}
}

func (s *stack) sendAndWait(cmd commands.Command) {
	s.t.Helper()
	testkit.Produce(s.t, s.brokers, testkit.CommandRecord(s.t, s.topics.Commands, cmd))
	if got := s.out.WaitFor(90*time.Second, cmd.ID)[cmd.ID]; len(got.Events) == 0 {
		s.t.Fatalf("setup: %s not applied: %+v", cmd.ID, got)
	}
}

// forgetEverything deletes every key of the test's prefix, and no other.
func (s *stack) forgetEverything() {
	s.t.Helper()
	ctx := context.Background()
	client := s.store.Client()
	keys, err := client.Keys(ctx, s.prefix+":*").Result()
	if err != nil {
		s.t.Fatal(err)
	}
	if len(keys) == 0 {
		s.t.Fatalf("no keys under %s: is the worker using another prefix?", s.prefix)
	}
	if err := client.Del(ctx, keys...).Err(); err != nil {
		s.t.Fatal(err)
	}
}

// TestReadyzWhileRedisIsDown stops the worker's own redis-server: /readyz
// turns 503 saying Redis is unreachable, and once a command's batches have
// failed for the stuck-after time, that its partition is stuck. Restarted
// without persistence, Redis has lost the data: still 503, now saying so.
// After the rebuild the command is applied and /readyz is 200 again.
func TestReadyzWhileRedisIsDown(t *testing.T) {
	s := newStack(t, 1)
	redisServer := testenv.StartRedisServer(t, testenv.RedisServerOptions{})
	s.store = versionstore.New(redisServer.Client(), versionstore.Options{KeyPrefix: s.prefix})
	// Longer than the worker's longest pause between retries (5 s).
	s.stuckAfter = 8 * time.Second
	s.startWorker(1)
	s.awaitReady(90*time.Second, http.StatusOK, "ok")

	redisServer.Stop()
	body := s.awaitReady(30*time.Second, http.StatusServiceUnavailable, "redis: unreachable")
	t.Logf("/readyz with redis-server stopped: %s", strings.TrimSpace(body))
	if status, _ := s.get(metrics.HealthPath); status != http.StatusOK {
		t.Fatalf("/healthz %d while Redis is down: the process is alive", status)
	}

	create := command(t, "down-create", "prod-down", product.CreateProductType, 0, product.CreateProduct{Name: "Shelf", Price: 60, Stock: 4})
	testkit.Produce(t, s.brokers, testkit.CommandRecord(t, s.topics.Commands, create))
	body = s.awaitReady(60*time.Second, http.StatusServiceUnavailable, "stuck, their batches failing for over 8s: "+s.topics.Commands+"/0")
	t.Logf("/readyz with a batch failing: %q", body)
	families := s.scrape()
	if got := value(families, metrics.PartitionStuck, "partition", "0"); got != 1 {
		t.Errorf("arbiter_partition_stuck{partition=\"0\"} = %v, want 1", got)
	}
	if got := value(families, metrics.RedisErrorsTotal, "operation", "load"); got < 1 {
		t.Errorf("no failed Redis load counted: %v", got)
	}
	if got := value(families, metrics.TransactionsTotal, "result", "aborted"); got < 1 {
		t.Errorf("no aborted transaction counted: %v", got)
	}

	redisServer.Restart()
	s.awaitReady(30*time.Second, http.StatusServiceUnavailable, "redis has lost arbiter's data")
	if _, err := processor.Rebuild(context.Background(), processor.RebuildConfig{
		Brokers: s.brokers, EventsTopic: s.topics.Events, CommandsTopic: s.topics.Commands, Group: s.group,
		Registry: s.registry, Store: s.store, Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named("rebuild"),
	}); err != nil {
		t.Fatal(err)
	}
	got := s.out.WaitFor(60*time.Second, create.ID)[create.ID]
	if len(got.Events) != 1 || got.Events[0].Version != 1 {
		t.Fatalf("the command sent while Redis was down must be applied at version 1, got %+v", got)
	}
	s.awaitReady(30*time.Second, http.StatusOK, "ok")
	if got := value(s.scrape(), metrics.PartitionStuck); got != 0 {
		t.Errorf("%v partitions still stuck after the commit", got)
	}
}
