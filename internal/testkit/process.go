package testkit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
)

// FaultsTag is the build tag that compiles the fault-injection hooks
// (ARBITER_TEST_* environment variables) and the chaos subcommand into the
// arbiter binary; release builds leave it out.
const FaultsTag = "arbiter_faults"

// BuildArbiter builds the arbiter binary with the fault-injection hooks
// (FaultsTag) into dir and returns its path. Call it from TestMain: one build
// serves every test of the package.
func BuildArbiter(dir string) (string, error) {
	path := filepath.Join(dir, "arbiter")
	cmd := exec.Command("go", "build", "-tags", FaultsTag, "-o", path, "github.com/arbiter-cqrs/arbiter/cmd/arbiter")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", errors.Wrap(err, "build the arbiter binary")
	}
	return path, nil
}

// Process is a child process whose output is kept for the test's log.
type Process struct {
	t      testing.TB
	Name   string
	cmd    *exec.Cmd
	output *syncBuffer
	done   chan struct{}
	err    error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// StartProcess starts binary with args and extra environment variables. The
// process is killed when the test ends, and its output is logged when the
// test failed.
func StartProcess(t testing.TB, name, binary string, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, Name: name, output: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.output.String())
		}
	})
	return p
}

// Signal sends sig to the process, if it still runs.
func (p *Process) Signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

// Wait waits for the process to exit and returns its exit code, or fails
// the test after timeout.
func (p *Process) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %v; output:\n%s", p.Name, timeout, p.output.String())
		return -1
	}
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns what the process printed so far.
func (p *Process) Output() string { return p.output.String() }
