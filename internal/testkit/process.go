package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/child"
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
	proc   *child.Process
	output *child.Buffer
}

// StartProcess starts binary with args and extra environment variables. The
// process is killed when the test ends, and its output is logged when the
// test failed.
func StartProcess(t testing.TB, name, binary string, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, Name: name, output: &child.Buffer{}}
	proc, err := child.Start(child.Config{Name: name, Binary: binary, Args: args, Env: child.Environ(env...), Output: p.output})
	if err != nil {
		t.Fatal(err)
	}
	p.proc = proc
	t.Cleanup(func() {
		proc.Kill()
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.output.String())
		}
	})
	return p
}

// Signal sends sig to the process, if it still runs.
func (p *Process) Signal(sig syscall.Signal) { p.proc.Signal(sig) }

// Wait waits for the process to exit and returns its exit code, or fails
// the test after timeout.
func (p *Process) Wait(timeout time.Duration) int {
	p.t.Helper()
	if !p.proc.Wait(timeout) {
		p.t.Fatalf("%s did not exit within %v; output:\n%s", p.Name, timeout, p.output.String())
		return -1
	}
	return p.proc.ExitCode()
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool { return p.proc.Exited() }

// Output returns what the process printed so far.
func (p *Process) Output() string { return p.output.String() }
