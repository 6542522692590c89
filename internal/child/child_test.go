package child

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestProcess(t *testing.T) {
	tests := []struct {
		name     string
		script   string
		stop     func(p *Process) error
		wantCode int
		wantErr  bool
		wantOut  string
	}{
		{name: "exits by itself", script: "echo hello $GREETING; exit 3",
			stop: func(p *Process) error { p.Wait(time.Minute); return nil }, wantCode: 3, wantOut: "hello world"},
		{name: "SIGTERM is enough", script: "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done",
			stop: func(p *Process) error { return p.Stop(time.Minute) }, wantCode: 0},
		{name: "a stopped process gets SIGCONT first", script: "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done",
			stop: func(p *Process) error {
				p.Signal(syscall.SIGSTOP)
				if !p.Stopped() {
					return nil
				}
				return p.Stop(time.Minute)
			}, wantCode: 0},
		{name: "ignoring SIGTERM gets SIGKILL", script: "trap '' TERM; echo ready; while :; do sleep 0.05; done",
			stop: func(p *Process) error { return p.Stop(200 * time.Millisecond) }, wantCode: -1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out Buffer
			p, err := Start(Config{Name: tt.name, Binary: "sh", Args: []string{"-c", tt.script}, Env: Environ("GREETING=world"), Output: &out})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Kill()
			if strings.Contains(tt.script, "ready") {
				// The trap is set once "ready" is printed.
				for !strings.Contains(out.String(), "ready") && !p.Exited() {
					p.Wait(10 * time.Millisecond)
				}
			}
			err = tt.stop(p)
			if (err != nil) != tt.wantErr {
				t.Fatalf("stop: %v, want an error: %v", err, tt.wantErr)
			}
			if !p.Exited() || p.ExitCode() != tt.wantCode {
				t.Fatalf("exited %v with code %d (%s), want code %d", p.Exited(), p.ExitCode(), p.State(), tt.wantCode)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Fatalf("output %q, want %q", out.String(), tt.wantOut)
			}
		})
	}
}
