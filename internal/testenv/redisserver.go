package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/child"
	"github.com/arbiter-cqrs/arbiter/internal/freeport"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// RedisServerOptions configures StartRedisServer. The zero value starts a
// server without persistence in a temporary directory.
type RedisServerOptions struct {
	// AOF turns on the append-only file (appendfsync always), so that data
	// written before Stop is there again after Restart.
	// default: false (no persistence at all: RDB snapshots are always off)
	AOF bool
	// Dir is the server's working directory, where the AOF lives.
	// default: a new t.TempDir()
	Dir string
	// TLS, when set, adds a TLS port (see TLSURL) with a certificate TLS
	// signs, which accepts only clients presenting a certificate TLS signs
	// too. The plain port stays, for the test's own administration.
	// default: nil (no TLS port)
	TLS *CA
}

// RedisServer is a redis-server process of one test, started by
// StartRedisServer, for tests of persistence and restarts. Its methods
// report failures through the test that started it, so call them from the
// test's goroutine.
type RedisServer struct {
	t       testing.TB
	options RedisServerOptions
	port    int
	tlsPort int
	tlsCert Certificate
	logPath string

	proc *child.Process // nil when stopped
}

// Timeouts of the redis-server process.
const (
	redisStartTimeout = 20 * time.Second
	redisStopTimeout  = 20 * time.Second
)

// StartRedisServer starts a redis-server of its own on a free loopback port,
// waits until it answers PING, and kills it when the test ends. Without a
// redis-server binary on PATH the test fails under CI=true and is skipped
// otherwise (scripts/stack.sh installs it).
func StartRedisServer(t testing.TB, options RedisServerOptions) *RedisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		unavailable(t, "redis-server is not installed: %v", err)
	}
	if options.Dir == "" {
		options.Dir = t.TempDir()
	}
	port, err := freeport.Pick()
	if err != nil {
		t.Fatalf("find a free port for redis-server: %v", err)
	}
	server := &RedisServer{
		t:       t,
		options: options,
		port:    port,
		logPath: filepath.Join(t.TempDir(), "redis.log"),
	}
	if options.TLS != nil {
		if server.tlsPort, err = freeport.Pick(); err != nil {
			t.Fatalf("find a free port for redis-server's TLS: %v", err)
		}
		server.tlsCert = options.TLS.Issue("redis")
	}
	t.Cleanup(func() {
		if err := server.stop(); err != nil {
			t.Errorf("stop redis-server on port %d: %v", server.port, err)
		}
	})
	if err := server.start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	return server
}

// Addr returns the server's host:port.
func (s *RedisServer) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// URL returns the server's redis:// URL, database 0. It stays the same
// across Restart.
func (s *RedisServer) URL() string {
	return "redis://" + s.Addr() + "/0"
}

// TLSURL returns the rediss:// URL of the server's TLS port, database 0;
// empty without RedisServerOptions.TLS.
func (s *RedisServer) TLSURL() string {
	if s.tlsPort == 0 {
		return ""
	}
	return "rediss://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tlsPort)) + "/0"
}

// Client returns a client of the server, closed when the test ends. It
// reconnects by itself after a Restart.
func (s *RedisServer) Client() *redis.Client {
	s.t.Helper()
	client := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() {
		if err := client.Close(); err != nil {
			s.t.Errorf("close Redis client: %v", err)
		}
	})
	return client
}

// Stop shuts the server down with SIGTERM, as an operator would: with AOF on
// it flushes the file before exiting. It kills the server if it has not
// exited in time. Stopping a stopped server does nothing.
func (s *RedisServer) Stop() {
	s.t.Helper()
	if err := s.stop(); err != nil {
		s.t.Fatalf("stop redis-server on port %d: %v", s.port, err)
	}
}

// Start starts a stopped server again on the same port with the same
// directory: it loads the AOF (with AOF on) or else a dump.rdb found there,
// so a test can put an older snapshot back between Stop and Start.
func (s *RedisServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("start redis-server on port %d: %v", s.port, err)
	}
}

// Dir returns the server's working directory (where SAVE writes dump.rdb).
func (s *RedisServer) Dir() string { return s.options.Dir }

// Restart stops the server and starts it again on the same port with the
// same directory, so that with AOF on it reloads its data.
func (s *RedisServer) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("restart redis-server on port %d: %v", s.port, err)
	}
}

func (s *RedisServer) start() error {
	appendOnly := "no"
	if s.options.AOF {
		appendOnly = "yes"
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return errors.Wrap(err, "open redis-server log")
	}
	// The child gets its own copy of the descriptor.
	defer logFile.Close()

	args := []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(s.port),
		"--dir", s.options.Dir,
		"--save", "",
		"--appendonly", appendOnly,
		"--appendfsync", "always",
		"--daemonize", "no",
		"--logfile", "",
	}
	if s.tlsPort != 0 {
		args = append(args,
			"--tls-port", strconv.Itoa(s.tlsPort),
			"--tls-cert-file", s.tlsCert.CertFile,
			"--tls-key-file", s.tlsCert.KeyFile,
			"--tls-ca-cert-file", s.options.TLS.CertFile,
			"--tls-auth-clients", "yes",
		)
	}
	proc, err := child.Start(child.Config{Name: "redis-server", Binary: "redis-server", Output: logFile, Args: args})
	if err != nil {
		return err
	}
	s.proc = proc

	if err := s.awaitReady(); err != nil {
		_ = s.stop()
		return errors.Wrapf(err, "redis-server on port %d (log %s):\n%s", s.port, s.logPath, s.logTail())
	}
	return nil
}

// awaitReady polls PING until the server answers PONG, it exits, or the
// start timeout passes. Loading a large AOF can take a moment; redis-server
// answers -LOADING until it is done. The PING is sent by hand over a fresh
// connection each time: a go-redis pool that failed to dial backs off for a
// second or more, which would slow every Restart.
func (s *RedisServer) awaitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), redisStartTimeout)
	defer cancel()
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	for {
		err := ping(ctx, s.Addr())
		if err == nil {
			return nil
		}
		select {
		case <-s.proc.Done():
			return errors.Wrapf(err, "exited before answering PING (%s)", s.proc.State())
		case <-ctx.Done():
			return errors.Wrapf(err, "no answer to PING after %s", redisStartTimeout)
		case <-ticker.C:
		}
	}
}

// ping sends one inline PING command to addr and expects +PONG.
func ping(ctx context.Context, addr string) error {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return errors.Wrap(err, "dial")
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return errors.Wrap(err, "set deadline")
		}
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return errors.Wrap(err, "send PING")
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return errors.Wrap(err, "read PING reply")
	}
	if reply = strings.TrimSpace(reply); reply != "+PONG" {
		return errors.Newf("PING answered %q", reply)
	}
	return nil
}

func (s *RedisServer) stop() error {
	if s.proc == nil {
		return nil
	}
	defer func() { s.proc = nil }()
	return s.proc.Stop(redisStopTimeout)
}

// logTail returns the end of the server's log, for error messages.
func (s *RedisServer) logTail() string {
	const maxTail = 4 << 10
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(data) > maxTail {
		data = data[len(data)-maxTail:]
	}
	return string(data)
}
