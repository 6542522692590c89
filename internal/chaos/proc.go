package chaos

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/child"
	"github.com/arbiter-cqrs/arbiter/internal/freeport"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// process is a child process whose output goes to a log file.
type process struct {
	*child.Process
	name    string
	logPath string
}

func startProcess(name, logPath string, env []string, binary string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, errors.Wrapf(err, "open the log of %s", name)
	}
	// The child gets its own copy of the descriptor.
	defer logFile.Close()
	proc, err := child.Start(child.Config{Name: name, Binary: binary, Args: args, Env: child.Environ(env...), Output: logFile})
	if err != nil {
		return nil, err
	}
	return &process{Process: proc, name: name, logPath: logPath}, nil
}

func (p *process) pid() int                        { return p.Pid() }
func (p *process) exited() bool                    { return p.Exited() }
func (p *process) signal(sig syscall.Signal)       { p.Signal(sig) }
func (p *process) wait(timeout time.Duration) bool { return p.Wait(timeout) }
func (p *process) exitCode() int                   { return p.ExitCode() }

// stop ends the process: SIGCONT (a stopped process cannot handle SIGTERM),
// SIGTERM, then SIGKILL after timeout.
func (p *process) stop(timeout time.Duration) { _ = p.Stop(timeout) }

// tail returns the last lines of the process's log.
func (p *process) tail(lines int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	end := len(data)
	for i := len(data) - 1; i >= 0 && lines > 0; i-- {
		if data[i] == '\n' && i != len(data)-1 {
			lines--
			if lines == 0 {
				return string(data[i+1 : end])
			}
		}
	}
	return string(data)
}

// redisServer is a redis-server of the run's own, with AOF on, that the run
// restarts on the same port and data.
type redisServer struct {
	binary string
	dir    string
	port   int
	proc   *process
}

func startRedis(ctx context.Context, binary, dir string) (*redisServer, error) {
	port, err := freeport.Pick()
	if err != nil {
		return nil, err
	}
	r := &redisServer{binary: binary, dir: dir, port: port}
	return r, r.start(ctx)
}

func (r *redisServer) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func (r *redisServer) start(ctx context.Context) error { return r.startWith(ctx, "yes") }

// startWith starts redis-server with appendonly set to appendOnly.
func (r *redisServer) startWith(ctx context.Context, appendOnly string) error {
	proc, err := startProcess("redis-server", filepath.Join(r.dir, "redis.log"), nil, r.binary,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(r.port), "--dir", r.dir,
		"--appendonly", appendOnly, "--appendfsync", "always", "--save", "")
	if err != nil {
		return errors.Wrap(err, "start redis-server (install it: apt-get install redis-server)")
	}
	r.proc = proc
	client := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", r.port)})
	defer client.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := client.Ping(ctx).Err(); err == nil {
			return nil
		}
		if time.Now().After(deadline) || proc.exited() {
			return errors.Newf("redis-server on port %d did not answer: %s", r.port, proc.tail(10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restart stops redis-server gracefully (it flushes its AOF) and starts it
// again on the same port and data.
func (r *redisServer) restart(ctx context.Context) error {
	r.proc.stop(30 * time.Second)
	return r.start(ctx)
}

// logf writes one line of the run's log.
func logf(w io.Writer, start time.Time, format string, args ...any) {
	fmt.Fprintf(w, "chaos: t+%5.1fs %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}
