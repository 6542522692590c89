// Package child runs and stops child processes: the worker processes of the
// tests, the chaos runner and the benchmark, and the redis-servers of the
// tests and the chaos runner. One owner for starting, signalling, waiting
// with a deadline and the SIGTERM-then-SIGKILL stop.
package child

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
)

// Config describes a child process.
type Config struct {
	// Name names the process in errors.
	Name string
	// Binary is the program to run, a path or a name looked up in PATH.
	Binary string
	// Args are its arguments.
	Args []string
	// Env is its whole environment. default (nil): the parent's
	Env []string
	// Output receives its stdout and stderr. default (nil): discarded
	Output io.Writer
}

// Process is a running (or exited) child process.
type Process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's, once done is closed

	mu      sync.Mutex
	stopped bool // SIGSTOPped and not yet continued
}

// Start starts the process described by cfg.
func Start(cfg Config) (*Process, error) {
	cmd := exec.Command(cfg.Binary, cfg.Args...)
	cmd.Env = cfg.Env
	if cfg.Output != nil {
		cmd.Stdout, cmd.Stderr = cfg.Output, cfg.Output
	}
	if err := cmd.Start(); err != nil {
		return nil, errors.Wrapf(err, "start %s (%s)", cfg.Name, cfg.Binary)
	}
	p := &Process{name: cfg.Name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Environ returns the parent's environment with extra variables added (a
// later one wins over an earlier one of the same name, as exec does).
func Environ(extra ...string) []string {
	return append(os.Environ(), extra...)
}

// Pid returns the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err returns the error of the process's end (an *exec.ExitError for a
// non-zero exit or a signal), nil while it runs or after a clean exit.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// ExitCode returns the exit code, -1 while the process runs or when a
// signal ended it.
func (p *Process) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// State describes how the process ended ("exit status 1", "signal:
// killed"); "running" while it runs.
func (p *Process) State() string {
	if !p.Exited() {
		return "running"
	}
	return p.cmd.ProcessState.String()
}

// Signal sends sig to the process, if it still runs, and remembers a
// SIGSTOP until a SIGCONT.
func (p *Process) Signal(sig syscall.Signal) {
	if p.Exited() {
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

// Stopped reports whether the process was sent SIGSTOP and not SIGCONT
// since.
func (p *Process) Stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped && !p.Exited()
}

// Wait waits up to timeout for the process to exit and reports whether it
// did.
func (p *Process) Wait(timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		return false
	}
}

// Stop ends the process gracefully: SIGCONT (a stopped process cannot
// handle SIGTERM), SIGTERM, then SIGKILL if it has not exited within grace.
// It returns once the process has exited, with an error if it had to be
// killed. Stopping an exited process does nothing.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	p.Signal(syscall.SIGCONT)
	p.Signal(syscall.SIGTERM)
	if p.Wait(grace) {
		return nil
	}
	p.Kill()
	return errors.Newf("%s did not exit within %s of SIGTERM; killed it", p.name, grace)
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Buffer is an output buffer safe for the concurrent writes of a process's
// stdout and stderr and the reads of a test or a runner.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
