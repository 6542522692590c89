// Package metrics turns what a worker does into Prometheus metrics and a
// readiness verdict, and serves them over HTTP (/metrics, /healthz, /readyz,
// /debug/pprof). It implements processor.Observer, so the core packages
// never import Prometheus.
//
// The metrics, all registered on the Registerer passed in:
//
//	arbiter_commands_total{outcome}                       counter   commands decided in committed transactions (replays by their recorded outcome), by outcome
//	arbiter_replayed_commands_total                       counter   recorded outcomes re-published after an aborted transaction
//	arbiter_batch_records                                 histogram command records per batch
//	arbiter_batch_duration_seconds                        histogram poll to end of transaction
//	arbiter_redis_round_trip_duration_seconds{operation}  histogram load, load_outcomes, commit
//	arbiter_redis_errors_total{operation}                 counter   failed Redis round trips
//	arbiter_kafka_transaction_duration_seconds{result}    histogram first outcome produced to end of transaction
//	arbiter_transactions_total{result}                    counter   committed, aborted, failed
//	arbiter_consumer_lag_records{topic,partition}         gauge     records behind the group's committed offset, for this worker's partitions
//	arbiter_assigned_partitions                           gauge     commands partitions this worker holds
//	arbiter_waiting_for_rebuild                           gauge     1 while Redis has lost Arbiter's data
//	arbiter_partition_stuck{topic,partition}              gauge     1 while a partition's batches fail without a commit, or it is isolated
//	arbiter_ready                                         gauge     1 while /readyz answers 200
//	arbiter_kafka_*{transactional_id}                     franz-go client metrics (kprom), per session
package metrics

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"go.uber.org/zap"
)

// The names of the metrics this package registers, for the dashboards and
// alerts that use them (deployments/ checks them against this list).
const (
	CommandsTotal           = "arbiter_commands_total"
	ReplayedCommandsTotal   = "arbiter_replayed_commands_total"
	BatchRecords            = "arbiter_batch_records"
	BatchDurationSeconds    = "arbiter_batch_duration_seconds"
	RedisRoundTripSeconds   = "arbiter_redis_round_trip_duration_seconds"
	RedisErrorsTotal        = "arbiter_redis_errors_total"
	KafkaTransactionSeconds = "arbiter_kafka_transaction_duration_seconds"
	TransactionsTotal       = "arbiter_transactions_total"
	ConsumerLagRecords      = "arbiter_consumer_lag_records"
	AssignedPartitions      = "arbiter_assigned_partitions"
	WaitingForRebuild       = "arbiter_waiting_for_rebuild"
	PartitionStuck          = "arbiter_partition_stuck"
	Ready                   = "arbiter_ready"
	// KafkaClientMetricsPrefix starts the names of franz-go's client
	// metrics (kprom), labelled with the session's transactional_id.
	KafkaClientMetricsPrefix = "arbiter_kafka_"
)

const (
	kafkaClientNamespace = "arbiter_kafka"
	outcomeApplied       = "applied"
	defaultStuckAfter    = time.Minute
	defaultLagTimeout    = 5 * time.Second

	// The metrics' labels.
	outcomeLabel         = "outcome"
	operationLabel       = "operation"
	resultLabel          = "result"
	topicLabel           = "topic"
	partitionLabel       = "partition"
	transactionalIDLabel = "transactional_id"
)

// Names lists every metric name this package registers, histograms by
// their base name; the franz-go client metrics are under
// KafkaClientMetricsPrefix.
func Names() []string {
	return []string{CommandsTotal, ReplayedCommandsTotal, BatchRecords, BatchDurationSeconds,
		RedisRoundTripSeconds, RedisErrorsTotal, KafkaTransactionSeconds, TransactionsTotal,
		ConsumerLagRecords, AssignedPartitions, WaitingForRebuild, PartitionStuck, Ready}
}

// Outcomes lists the values of arbiter_commands_total's outcome label.
func Outcomes() []string {
	return []string{outcomeApplied, string(events.ReasonVersionConflict), string(events.ReasonRejected),
		string(events.ReasonInvalid), string(events.ReasonUnknownType), string(events.ReasonDuplicate)}
}

// Config configures Metrics. Zero fields take the defaults noted.
type Config struct {
	// Registerer receives every metric. Required: pass a registry of your
	// own (prometheus.NewRegistry()), not the global one.
	Registerer prometheus.Registerer
	// Group and CommandsTopic are the worker's; with Admin they give the
	// consumer lag. Without Admin no lag is reported.
	Group, CommandsTopic string
	// Admin reads the group's committed offsets and the partitions' end
	// offsets at each scrape, for arbiter_consumer_lag_records.
	Admin *kadm.Client
	// LagTimeout bounds that read. default: 5s
	LagTimeout time.Duration
	// StuckAfter is how long a partition's batches must keep failing
	// without a commit before it counts as stuck. Batches stopped because
	// Redis lost Arbiter's data do not count: that is waiting for a
	// rebuild. Keep it above the worker's longest pause between retries
	// (5 s): failures further apart than StuckAfter start a new run.
	// default: 1m
	StuckAfter time.Duration
	// Logger receives the lag read's errors. default: zap.NewNop()
	Logger *zap.Logger
	// now is the clock; tests replace it.
	now func() time.Time
}

// Metrics implements processor.Observer with Prometheus metrics and keeps
// the state /readyz reports.
type Metrics struct {
	cfg Config

	commands            *prometheus.CounterVec
	replayed            prometheus.Counter
	batchRecords        prometheus.Histogram
	batchDuration       prometheus.Histogram
	redisDuration       *prometheus.HistogramVec
	redisErrors         *prometheus.CounterVec
	transactionDuration *prometheus.HistogramVec
	transactions        *prometheus.CounterVec

	lagDesc, stuckDesc *prometheus.Desc

	mu       sync.Mutex
	sessions map[string]*sessionState
	// waiting holds the sessions waiting for a rebuild ("" is the worker
	// before its sessions start).
	waiting map[string]bool
	failing map[partitionKey]*failure
	// isolated holds the partitions a session reported stuck
	// (processor.SessionPartitionStuck): paused, the others deciding.
	isolated map[partitionKey]bool
}

var _ processor.Observer = (*Metrics)(nil)

type sessionState struct {
	joined     bool
	partitions map[partitionKey]struct{}
}

type partitionKey struct {
	topic     string
	partition int32
}

// failure is a run of failed batches of one partition.
type failure struct {
	since, last time.Time
}

// New registers the metrics on cfg.Registerer.
func New(cfg Config) (*Metrics, error) {
	if cfg.Registerer == nil {
		return nil, errors.New("metrics: no Registerer")
	}
	if cfg.LagTimeout <= 0 {
		cfg.LagTimeout = defaultLagTimeout
	}
	if cfg.StuckAfter <= 0 {
		cfg.StuckAfter = defaultStuckAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	durations := prometheus.ExponentialBuckets(0.0005, 2, 16) // 0.5 ms … 16 s
	m := &Metrics{
		cfg: cfg,
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: CommandsTotal,
			Help: "Commands decided in committed transactions, by outcome (applied, or the conflict record's reason).",
		}, []string{outcomeLabel}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: ReplayedCommandsTotal,
			Help: "Commands whose recorded outcome was re-published after their first transaction did not commit.",
		}),
		batchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    BatchRecords,
			Help:    "Command records per batch (one poll, one Redis round trip, one transaction).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1 … 8192
		}),
		batchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    BatchDurationSeconds,
			Help:    "Time from a poll's return to the end of its batch's transaction.",
			Buckets: durations,
		}),
		redisDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    RedisRoundTripSeconds,
			Help:    "Duration of the batch cycle's Redis round trips, by operation (load, load_outcomes, commit).",
			Buckets: durations,
		}, []string{operationLabel}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: RedisErrorsTotal,
			Help: "Redis round trips that failed, by operation; the amnesia check failing counts here too.",
		}, []string{operationLabel}),
		transactionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    KafkaTransactionSeconds,
			Help:    "Time from a batch's first outcome record produced to the end of its Kafka transaction, by result.",
			Buckets: durations,
		}, []string{resultLabel}),
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: TransactionsTotal,
			Help: "Batch transactions by result: committed, aborted (by the worker; the records come again), failed (the commit did not go through; the session rejoins).",
		}, []string{resultLabel}),
		lagDesc: prometheus.NewDesc(ConsumerLagRecords,
			"Records of the commands topic behind the group's committed offset, for the partitions this worker holds.",
			[]string{topicLabel, partitionLabel}, nil),
		stuckDesc: prometheus.NewDesc(PartitionStuck,
			"1 while a partition this worker holds has had its batches fail, without a commit, for the stuck-after time, or is isolated: paused because its batches fail alone while the others decide.",
			[]string{topicLabel, partitionLabel}, nil),
		sessions: make(map[string]*sessionState),
		waiting:  make(map[string]bool),
		failing:  make(map[partitionKey]*failure),
		isolated: make(map[partitionKey]bool),
	}
	for _, outcome := range Outcomes() {
		m.commands.WithLabelValues(outcome)
	}
	for _, operation := range []processor.RedisOperation{processor.RedisLoad, processor.RedisLoadOutcomes, processor.RedisCommit} {
		m.redisErrors.WithLabelValues(string(operation))
	}
	for _, result := range []processor.TransactionResult{processor.TransactionCommitted, processor.TransactionAborted, processor.TransactionFailed} {
		m.transactions.WithLabelValues(string(result))
	}
	collectors := []prometheus.Collector{
		m.commands, m.replayed, m.batchRecords, m.batchDuration, m.redisDuration, m.redisErrors,
		m.transactionDuration, m.transactions, stateCollector{m},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: WaitingForRebuild,
			Help: "1 while the worker has stopped deciding because Redis lost Arbiter's data: run 'arbiter rebuild-versions'.",
		}, func() float64 { return boolGauge(m.waitingForRebuild()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: AssignedPartitions,
			Help: "Partitions of the commands topic this worker's sessions hold.",
		}, func() float64 { return float64(len(m.assigned())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: Ready,
			Help: "1 while the worker is in its group and deciding (its own view; /readyz also checks Redis and Kafka).",
		}, func() float64 { return boolGauge(m.Ready() == nil) }),
	}
	for _, c := range collectors {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, errors.Wrap(err, "register the worker metrics")
		}
	}
	return m, nil
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// KafkaSessionOptions returns the options that add franz-go's client
// metrics (kprom) to one transactional session's client, labelled with its
// transactional ID; set it as processor.Config.SessionKafkaOptions. kprom
// keeps one set of metrics per client, registered when the client starts
// and unregistered when it closes.
func (m *Metrics) KafkaSessionOptions(transactionalID string) []kgo.Opt {
	plugin := kprom.NewMetrics(kafkaClientNamespace,
		kprom.Registerer(m.cfg.Registerer),
		kprom.FetchAndProduceDetail(kprom.ByNode, kprom.ByTopic, kprom.Records, kprom.Batches, kprom.UncompressedBytes),
		kprom.WithStaticLabel(prometheus.Labels{transactionalIDLabel: transactionalID}))
	return []kgo.Opt{kgo.WithHooks(plugin)}
}

// ObserveBatch implements processor.Observer.
func (m *Metrics) ObserveBatch(b processor.BatchObservation) {
	m.batchRecords.Observe(float64(b.Records))
	m.batchDuration.Observe(b.Duration.Seconds())
	m.transactionDuration.WithLabelValues(string(b.Result)).Observe(b.KafkaDuration.Seconds())
	m.transactions.WithLabelValues(string(b.Result)).Inc()
	if b.Result == processor.TransactionCommitted {
		m.countOutcome(outcomeApplied, b.Outcomes.Applied)
		m.countOutcome(string(events.ReasonVersionConflict), b.Outcomes.VersionConflict)
		m.countOutcome(string(events.ReasonRejected), b.Outcomes.Rejected)
		m.countOutcome(string(events.ReasonInvalid), b.Outcomes.Invalid)
		m.countOutcome(string(events.ReasonUnknownType), b.Outcomes.UnknownType)
		m.countOutcome(string(events.ReasonDuplicate), b.Outcomes.Duplicate)
		if b.Replayed > 0 {
			m.replayed.Add(float64(b.Replayed))
		}
	}

	now := m.cfg.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, partition := range b.Partitions {
		key := partitionKey{topic: b.Topic, partition: partition}
		switch {
		case b.Result == processor.TransactionCommitted:
			delete(m.failing, key)
		case errors.Is(b.Err, versionstore.ErrAmnesia):
			// Waiting for a rebuild, reported on its own.
		default:
			f := m.failing[key]
			if f == nil || now.Sub(f.last) >= m.cfg.StuckAfter {
				// A failure long after the last one starts a new run.
				f = &failure{since: now}
				m.failing[key] = f
			}
			f.last = now
		}
	}
}

func (m *Metrics) countOutcome(outcome string, n int) {
	if n > 0 {
		m.commands.WithLabelValues(outcome).Add(float64(n))
	}
}

// ObserveRedis implements processor.Observer.
func (m *Metrics) ObserveRedis(r processor.RedisObservation) {
	m.redisDuration.WithLabelValues(string(r.Operation)).Observe(r.Duration.Seconds())
	if r.Err != nil {
		m.redisErrors.WithLabelValues(string(r.Operation)).Inc()
	}
}

// ObserveSession implements processor.Observer.
func (m *Metrics) ObserveSession(s processor.SessionObservation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch s.State {
	case processor.SessionWaitingForRebuild:
		m.waiting[s.TransactionalID] = true
		return
	case processor.SessionResumed:
		delete(m.waiting, s.TransactionalID)
		return
	case processor.SessionPartitionStuck:
		for _, partition := range s.Partitions {
			m.isolated[partitionKey{topic: s.Topic, partition: partition}] = true
		}
		return
	case processor.SessionPartitionMoving:
		for _, partition := range s.Partitions {
			delete(m.isolated, partitionKey{topic: s.Topic, partition: partition})
		}
		return
	}
	session := m.sessions[s.TransactionalID]
	if session == nil {
		session = &sessionState{partitions: make(map[partitionKey]struct{})}
		m.sessions[s.TransactionalID] = session
	}
	switch s.State {
	case processor.SessionJoining, processor.SessionClosed:
		session.joined = false
		for key := range session.partitions {
			delete(m.isolated, key)
		}
		clear(session.partitions)
	case processor.SessionAssigned:
		session.joined = true
		for _, partition := range s.Partitions {
			session.partitions[partitionKey{topic: s.Topic, partition: partition}] = struct{}{}
		}
	case processor.SessionRevoked:
		for _, partition := range s.Partitions {
			delete(session.partitions, partitionKey{topic: s.Topic, partition: partition})
			delete(m.isolated, partitionKey{topic: s.Topic, partition: partition})
		}
	}
}

func (m *Metrics) waitingForRebuild() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.waiting) > 0
}

// assigned lists the partitions the worker's sessions hold, sorted.
func (m *Metrics) assigned() []partitionKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.assignedLocked()
}

func (m *Metrics) assignedLocked() []partitionKey {
	var keys []partitionKey
	for _, session := range m.sessions {
		for key := range session.partitions {
			keys = append(keys, key)
		}
	}
	slices.SortFunc(keys, func(a, b partitionKey) int {
		if c := strings.Compare(a.topic, b.topic); c != 0 {
			return c
		}
		return int(a.partition - b.partition)
	})
	return keys
}

// stuckLocked reports whether a held partition is stuck: its session
// isolated it, or its batches have failed for StuckAfter without a commit,
// the last failure recent.
func (m *Metrics) stuckLocked(key partitionKey, now time.Time) bool {
	if m.isolated[key] {
		return true
	}
	f := m.failing[key]
	return f != nil && now.Sub(f.since) >= m.cfg.StuckAfter && now.Sub(f.last) < m.cfg.StuckAfter
}

// Ready returns nil while the worker is in its group and deciding: every
// session has joined, none waits for a rebuild, and no partition it holds is
// stuck. Otherwise the error says what is wrong. Redis and Kafka
// reachability are separate checks of the Server.
func (m *Metrics) Ready() error {
	now := m.cfg.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var problems []string
	if len(m.waiting) > 0 {
		problems = append(problems, "waiting for 'arbiter rebuild-versions': redis has lost arbiter's data")
	}
	if len(m.sessions) == 0 {
		problems = append(problems, "not started")
	}
	var joining []string
	for id, session := range m.sessions {
		if !session.joined {
			joining = append(joining, id)
		}
	}
	if len(joining) > 0 {
		sort.Strings(joining)
		problems = append(problems, "not in the group yet: session(s) "+strings.Join(joining, ", "))
	}
	var stuck, isolated []string
	for _, key := range m.assignedLocked() {
		switch name := fmt.Sprintf("%s/%d", key.topic, key.partition); {
		case m.isolated[key]:
			isolated = append(isolated, name)
		case m.stuckLocked(key, now):
			stuck = append(stuck, name)
		}
	}
	if len(stuck) > 0 {
		problems = append(problems, fmt.Sprintf("partition(s) stuck, their batches failing for over %s: %s", m.cfg.StuckAfter, strings.Join(stuck, ", ")))
	}
	if len(isolated) > 0 {
		problems = append(problems, "partition(s) stuck, isolated (their batches fail alone; paused while the others decide): "+strings.Join(isolated, ", "))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// stateCollector reports the per-partition gauges, computed at each scrape:
// stuck from the recorded failures, lag from the broker.
type stateCollector struct{ m *Metrics }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.m.lagDesc
	ch <- c.m.stuckDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	now := m.cfg.now()
	m.mu.Lock()
	assigned := m.assignedLocked()
	for _, key := range assigned {
		ch <- prometheus.MustNewConstMetric(m.stuckDesc, prometheus.GaugeValue, boolGauge(m.stuckLocked(key, now)),
			key.topic, strconv.Itoa(int(key.partition)))
	}
	m.mu.Unlock()
	if m.cfg.Admin == nil || len(assigned) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.LagTimeout)
	defer cancel()
	lags, err := m.cfg.Admin.Lag(ctx, m.cfg.Group)
	if err == nil {
		err = lags.Error()
	}
	if err != nil {
		m.cfg.Logger.Warn("cannot read the consumer lag", zap.String("group", m.cfg.Group), zap.String("error", err.Error()))
		return
	}
	lag := lags[m.cfg.Group].Lag
	for _, key := range assigned {
		memberLag, ok := lag.Lookup(key.topic, key.partition)
		if !ok || memberLag.Err != nil || memberLag.Lag < 0 {
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.lagDesc, prometheus.GaugeValue, float64(memberLag.Lag),
			key.topic, strconv.Itoa(int(key.partition)))
	}
}
