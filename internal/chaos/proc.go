package chaos

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// process is a child process whose output goes to a log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	mu      sync.Mutex
	stopped bool // SIGSTOPped and not yet continued
}

func startProcess(name, logPath string, env []string, binary string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, errors.Wrapf(err, "open the log of %s", name)
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, errors.Wrapf(err, "start %s", name)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) signal(sig syscall.Signal) {
	if p.exited() {
		return
	}
	p.mu.Lock()
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	}
	p.mu.Unlock()
	_ = p.cmd.Process.Signal(sig)
}

// wait waits up to timeout for the process to exit; it reports whether it
// did.
func (p *process) wait(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// stop ends the process: SIGCONT (a stopped process cannot handle SIGTERM),
// SIGTERM, then SIGKILL after timeout.
func (p *process) stop(timeout time.Duration) {
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGTERM)
	if !p.wait(timeout) {
		p.signal(syscall.SIGKILL)
		p.wait(10 * time.Second)
	}
}

func (p *process) exitCode() int {
	if !p.exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

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
	port, err := freePort()
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, errors.Wrap(err, "find a free port")
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// logf writes one line of the run's log.
func logf(w io.Writer, start time.Time, format string, args ...any) {
	fmt.Fprintf(w, "chaos: t+%5.1fs %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}
