package metrics

import (
	"context"
	"time"

	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// WorkerConfig configures a worker's HTTP listener.
type WorkerConfig struct {
	// Addr is the listen address (--http-addr). Required.
	Addr string
	// Pprof serves /debug/pprof/ (--pprof).
	Pprof bool
	// StuckAfter: see Config.StuckAfter (--stuck-after).
	StuckAfter time.Duration
	// Brokers and KafkaOptions make the client that reads the consumer lag
	// and checks Kafka answers; give it the worker's security options.
	Brokers      []string
	KafkaOptions []kgo.Opt
	// Group and CommandsTopic are the worker's.
	Group, CommandsTopic string
	// Store is checked for the amnesia marker by /readyz.
	Store *versionstore.Store
	// Logger receives the listener's errors.
	Logger *zap.Logger
}

// Worker is a worker's metrics and HTTP listener.
type Worker struct {
	// Metrics is the worker's Observer.
	Metrics *Metrics
	// Registry holds every metric served, the Go runtime's and the
	// process's included.
	Registry *prometheus.Registry
	server   *Server
	client   *kgo.Client
}

// NewWorker makes the metrics on a registry of their own, a Kafka client
// for the lag and the checks, and listens on cfg.Addr. Serve it with Run;
// Close it when done.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	client, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.KafkaOptions...)...)
	if err != nil {
		return nil, errors.Wrap(err, "create the Kafka client of the metrics")
	}
	admin := kadm.NewClient(client)
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := New(Config{
		Registerer:    registry,
		Group:         cfg.Group,
		CommandsTopic: cfg.CommandsTopic,
		Admin:         admin,
		StuckAfter:    cfg.StuckAfter,
		Logger:        cfg.Logger,
	})
	if err != nil {
		client.Close()
		return nil, err
	}
	server, err := NewServer(ServerConfig{
		Addr:     cfg.Addr,
		Gatherer: registry,
		Checks:   []Check{WorkerCheck(m), RedisCheck(cfg.Store), KafkaCheck(admin, cfg.CommandsTopic)},
		Pprof:    cfg.Pprof,
		Logger:   cfg.Logger,
	})
	if err != nil {
		client.Close()
		return nil, err
	}
	return &Worker{Metrics: m, Registry: registry, server: server, client: client}, nil
}

// Instrument sets the worker configuration's Observer and per-session
// Kafka client metrics.
func (w *Worker) Instrument(cfg *processor.Config) {
	cfg.Observer = w.Metrics
	cfg.SessionKafkaOptions = w.Metrics.KafkaSessionOptions
}

// Addr returns the address the listener is bound to.
func (w *Worker) Addr() string { return w.server.Addr() }

// Run serves HTTP while run runs, and returns run's error; when the
// listener fails, run's context is cancelled and the listener's error is
// returned.
func (w *Worker) Run(ctx context.Context, run func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		err := w.server.Serve(ctx)
		if err != nil {
			cancel()
		}
		served <- err
	}()
	err := run(ctx)
	cancel()
	if serveErr := <-served; err == nil {
		err = serveErr
	}
	return err
}

// Close closes the Kafka client.
func (w *Worker) Close() { w.client.Close() }
