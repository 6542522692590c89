package metrics

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"
)

// The paths the Server serves.
const (
	MetricsPath = "/metrics"
	HealthPath  = "/healthz"
	ReadyPath   = "/readyz"
	PprofPath   = "/debug/pprof/"
)

// DefaultAddr is the worker's default HTTP listen address (9464 is the
// port Prometheus exporters conventionally take for OpenTelemetry-style
// services; it is free of Kafka's and Redis's).
const DefaultAddr = ":9464"

// Check is one condition of readiness.
type Check struct {
	// Name says what is checked, in /readyz's answer.
	Name string
	// Check returns nil while the condition holds.
	Check func(ctx context.Context) error
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Addr is the listen address, e.g. ":9464"; ":0" picks a free port.
	// Required.
	Addr string
	// Gatherer is scraped at /metrics. Required.
	Gatherer prometheus.Gatherer
	// Checks must all pass for /readyz to answer 200; each gets CheckTimeout.
	Checks []Check
	// CheckTimeout bounds each check. default: 3s
	CheckTimeout time.Duration
	// Pprof serves net/http/pprof under /debug/pprof/. default: off
	Pprof bool
	// Logger receives the server's errors. default: zap.NewNop()
	Logger *zap.Logger
}

// Server serves /metrics, /healthz, /readyz and optionally /debug/pprof/.
type Server struct {
	cfg      ServerConfig
	listener net.Listener
	server   *http.Server
}

// NewServer listens on cfg.Addr; Serve then answers requests.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Gatherer == nil {
		return nil, errors.New("metrics server: no Gatherer")
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 3 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	listener, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, errors.Wrapf(err, "listen on %s for /metrics and the health checks; change --http-addr / ARBITER_HTTP_ADDR, or set it empty to turn the listener off", cfg.Addr)
	}
	s := &Server{cfg: cfg, listener: listener}
	mux := http.NewServeMux()
	mux.Handle(MetricsPath, promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog:      zap.NewStdLog(cfg.Logger),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc(HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc(ReadyPath, s.ready)
	if cfg.Pprof {
		mux.HandleFunc(PprofPath, pprof.Index)
		mux.HandleFunc(PprofPath+"cmdline", pprof.Cmdline)
		mux.HandleFunc(PprofPath+"profile", pprof.Profile)
		mux.HandleFunc(PprofPath+"symbol", pprof.Symbol)
		mux.HandleFunc(PprofPath+"trace", pprof.Trace)
	}
	s.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Serve answers requests until ctx ends, then shuts down, giving requests
// in flight 5 seconds.
func (s *Server) Serve(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- s.server.Serve(s.listener) }()
	select {
	case err := <-served:
		return errors.Wrapf(err, "serve http on %s", s.Addr())
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := s.server.Shutdown(shutdownCtx)
	if served := <-served; !errors.Is(served, http.ErrServerClosed) && err == nil {
		err = served
	}
	return errors.Wrap(err, "shut down the http server")
}

// ready answers 200 when every check passes, else 503 with the failures.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	var failures []string
	for _, check := range s.cfg.Checks {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CheckTimeout)
		err := check.Check(ctx)
		cancel()
		if err != nil {
			failures = append(failures, check.Name+": "+err.Error())
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(failures) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintln(w, strings.Join(failures, "\n"))
		return
	}
	_, _ = fmt.Fprintln(w, "ok")
}

// WorkerCheck is readiness as the worker sees it (Metrics.Ready).
func WorkerCheck(m *Metrics) Check {
	return Check{Name: "worker", Check: func(context.Context) error { return m.Ready() }}
}

// RedisCheck passes while Redis answers and holds Arbiter's data (the
// amnesia marker): a Redis that lost it is not decided against.
func RedisCheck(store *versionstore.Store) Check {
	return Check{Name: "redis", Check: func(ctx context.Context) error {
		ok, err := store.Initialized(ctx)
		if err != nil {
			return errors.Wrap(err, "unreachable")
		}
		if !ok {
			return versionstore.ErrAmnesia
		}
		return nil
	}}
}

// KafkaCheck passes while a Kafka broker answers a metadata request for
// the commands topic.
func KafkaCheck(admin *kadm.Client, commandsTopic string) Check {
	return Check{Name: "kafka", Check: func(ctx context.Context) error {
		metadata, err := admin.Metadata(ctx, commandsTopic)
		if err != nil {
			return errors.Wrap(err, "unreachable")
		}
		if topic, ok := metadata.Topics[commandsTopic]; !ok || topic.Err != nil {
			return errors.Newf("topic %s is missing", commandsTopic)
		}
		return nil
	}}
}
