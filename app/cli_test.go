package app

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/arbiter-cqrs/arbiter/processor"
)

// runMain runs Main in-process with env as its only environment.
func runMain(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	lookup := func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
	code = Main(context.Background(), processor.NewRegistry(), args, Stdout(&out), Stderr(&errOut), LookupEnv(lookup))
	return out.String(), errOut.String(), code
}

// TestCLI checks the command line's conventions without servers: help at
// every level exits 0 and lists the subcommands, flags come before or after
// arguments, a malformed environment variable is a usage error naming it,
// and the exit codes stay those of the documented table.
func TestCLI(t *testing.T) {
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr []string
		// dontWant are texts stderr must not show (passwords).
		dontWant []string
	}{
		{name: "no command", wantCode: exitUsage, wantStderr: []string{"no command given", "worker"}},
		{name: "help", args: []string{"--help"}, wantCode: exitOK,
			wantStdout: []string{"worker", "send", "tail", "get", "topics", "rebuild-versions", "verify", "bench", "chaos", "version", "completion", "Exit codes"}},
		{name: "help command", args: []string{"help"}, wantCode: exitOK, wantStdout: []string{"rebuild-versions"}},
		{name: "topics help", args: []string{"topics", "--help"}, wantCode: exitOK, wantStdout: []string{"create"}},
		{name: "topics create help", args: []string{"topics", "create", "-h"}, wantCode: exitOK, wantStdout: []string{"--partitions", "ARBITER_PARTITIONS"}},
		{name: "worker help names env vars", args: []string{"worker", "--help"}, wantCode: exitOK, wantStdout: []string{"--session-timeout", "ARBITER_SESSION_TIMEOUT", "--instance-id"}},
		{name: "topics alone", args: []string{"topics"}, wantCode: exitUsage, wantStderr: []string{"topics create"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: exitUsage, wantStderr: []string{`unknown command "frobnicate"`}},
		{name: "unknown flag", args: []string{"worker", "--frobnicate"}, wantCode: exitUsage, wantStderr: []string{"--frobnicate"}},
		{name: "get without an ID", args: []string{"get"}, wantCode: exitUsage},
		{name: "flags after the argument", args: []string{"get", "prod-9", "--redis", "nope://x"}, wantCode: exitUsage, wantStderr: []string{"the Redis URL nope://x is not"}},
		{name: "flags before the argument", args: []string{"get", "--redis", "nope://x", "prod-9"}, wantCode: exitUsage, wantStderr: []string{"the Redis URL nope://x is not"}},
		{name: "tail what", args: []string{"tail", "snapshots"}, wantCode: exitUsage, wantStderr: []string{"events|conflicts"}},
		{name: "bad duration in env", env: map[string]string{"ARBITER_SESSION_TIMEOUT": "10"}, args: []string{"worker"},
			wantCode: exitUsage, wantStderr: []string{`ARBITER_SESSION_TIMEOUT="10"`, "--session-timeout"}},
		{name: "bad int in env", env: map[string]string{"ARBITER_MAX_BATCH": "lots"}, args: []string{"worker"},
			wantCode: exitUsage, wantStderr: []string{`ARBITER_MAX_BATCH="lots"`}},
		{name: "bad env of another command", env: map[string]string{"ARBITER_WAIT_TIMEOUT": "soon"}, args: []string{"send", "--aggregate", "a"},
			wantCode: exitUsage, wantStderr: []string{`ARBITER_WAIT_TIMEOUT="soon"`}},
		{name: "a flag wins over its env var", env: map[string]string{"ARBITER_REDIS_URL": "redis://127.0.0.1:1/0"}, args: []string{"get", "x", "--redis", "nope://y"},
			wantCode: exitUsage, wantStderr: []string{"the Redis URL nope://y is not"}},
		{name: "env var used", env: map[string]string{"ARBITER_REDIS_URL": "nope://z"}, args: []string{"get", "x"},
			wantCode: exitUsage, wantStderr: []string{"the Redis URL nope://z is not"}},
		{name: "empty env var is unset", env: map[string]string{"ARBITER_SESSION_TIMEOUT": "", "ARBITER_BROKERS": "", "ARBITER_REDIS_URL": "redis://127.0.0.1:1/0"}, args: []string{"worker"},
			wantCode: exitUsage, wantStderr: []string{"give both --brokers and --redis"}},
		{name: "unknown balancer", env: map[string]string{"ARBITER_BALANCER": "eager"}, args: []string{"worker"},
			wantCode: exitUsage, wantStderr: []string{`balancer "eager"`, "cooperative-sticky", "ARBITER_BALANCER"}},
		{name: "unknown redis mode", args: []string{"get", "x", "--redis", "redis://127.0.0.1:1/0", "--redis-mode", "ring"},
			wantCode: exitUsage, wantStderr: []string{`unknown Redis mode "ring"`, "standalone, cluster or sentinel"}},
		{name: "unknown redis mode in env", env: map[string]string{"ARBITER_REDIS_MODE": "ring", "ARBITER_REDIS_URL": "redis://127.0.0.1:1/0"}, args: []string{"get", "x"},
			wantCode: exitUsage, wantStderr: []string{`unknown Redis mode "ring"`, "ARBITER_REDIS_MODE"}},
		{name: "cluster URL without cluster mode", args: []string{"get", "x", "--redis", "redis://u:s3cret@127.0.0.1:1?addr=127.0.0.1:2"},
			wantCode: exitUsage, wantStderr: []string{"use --redis-mode cluster", "redis://u:xxxxx@127.0.0.1:1?addr=127.0.0.1:2"}, dontWant: []string{"s3cret"}},
		{name: "sentinel URL in cluster mode", env: map[string]string{"ARBITER_REDIS_MODE": "cluster"}, args: []string{"rebuild-versions", "--brokers", "127.0.0.1:1", "--redis", "redis://127.0.0.1:1?master_name=main&password=s3cret"},
			wantCode: exitUsage, wantStderr: []string{"use --redis-mode sentinel", "password=xxxxx"}, dontWant: []string{"s3cret"}},
		{name: "sentinel URL without master", args: []string{"get", "x", "--redis-mode", "sentinel", "--redis", "redis://127.0.0.1:1?addr=127.0.0.1:2&password=s3cret"},
			wantCode: exitUsage, wantStderr: []string{"needs master_name="}, dontWant: []string{"s3cret"}},
		{name: "database of a cluster", args: []string{"get", "x", "--redis-mode", "cluster", "--redis", "redis://127.0.0.1:1/3"},
			wantCode: exitUsage, wantStderr: []string{"database 0 only"}},
		{name: "embedded worker in cluster mode", args: []string{"worker", "--redis-mode", "cluster"},
			wantCode: exitUsage, wantStderr: []string{"--redis-mode cluster", "embedded development mode"}},
		{name: "bench embedded in sentinel mode", args: []string{"bench", "--redis-mode", "sentinel"},
			wantCode: exitUsage, wantStderr: []string{"--redis-mode sentinel", "embedded"}},
		{name: "cluster unreachable", args: []string{"get", "x", "--redis-mode", "cluster", "--redis", "redis://u:s3cret@127.0.0.1:1?addr=127.0.0.1:2"},
			wantCode: exitUnreachable, wantStderr: []string{"cluster 127.0.0.1:1,127.0.0.1:2 does not answer"}, dontWant: []string{"s3cret"}},
		{name: "sentinels unreachable", args: []string{"get", "x", "--redis-mode", "sentinel", "--redis", "redis://u:s3cret@127.0.0.1:1?master_name=main&password=m4ster"},
			wantCode: exitUnreachable, wantStderr: []string{"master main of sentinels 127.0.0.1:1 does not answer"}, dontWant: []string{"s3cret", "m4ster"}},
		{name: "version", args: []string{"version"}, wantCode: exitOK, wantStdout: []string{"arbiter:", "revision:", "go:         go1.", "franz-go:"}},
		{name: "completion", args: []string{"completion", "bash"}, wantCode: exitOK, wantStdout: []string{"bash completion"}},
		{name: "completion of tail", args: []string{"__complete", "tail", ""}, wantCode: exitOK, wantStdout: []string{"events", "conflicts"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runMain(t, tt.env, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("arbiter %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tt.args, " "), code, tt.wantCode, stdout, stderr)
			}
			for _, want := range tt.wantStdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("arbiter %s: stdout does not say %q:\n%s", strings.Join(tt.args, " "), want, stdout)
				}
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("arbiter %s: stderr does not say %q:\n%s", strings.Join(tt.args, " "), want, stderr)
				}
			}
			for _, secret := range tt.dontWant {
				if strings.Contains(stdout+stderr, secret) {
					t.Errorf("arbiter %s: the output shows %q:\n%s%s", strings.Join(tt.args, " "), secret, stdout, stderr)
				}
			}
		})
	}
}

// TestWriteVersion: version names Arbiter's module version (the main
// module's in the arbiter binary, a dependency's in a binary of one's own),
// the VCS revision, Go's and franz-go's versions.
func TestWriteVersion(t *testing.T) {
	tests := []struct {
		name string
		info debug.BuildInfo
		want []string
	}{
		{"the arbiter binary", debug.BuildInfo{
			GoVersion: "go1.26.8", Path: "github.com/arbiter-cqrs/arbiter/cmd/arbiter",
			Main:     debug.Module{Path: arbiterModule, Version: "v1.2.3"},
			Deps:     []*debug.Module{{Path: franzGoModule, Version: "v1.22.3"}},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}},
		}, []string{"arbiter:    v1.2.3", "revision:   abc123 (modified)", "go:         go1.26.8", "franz-go:   v1.22.3"}},
		{"a binary of one's own", debug.BuildInfo{
			GoVersion: "go1.26.8", Path: "example.com/bank/cmd/bank",
			Main: debug.Module{Path: "example.com/bank", Version: "(devel)"},
			Deps: []*debug.Module{{Path: arbiterModule, Version: "v1.4.0"}, {Path: franzGoModule, Version: "v1.22.3"}},
		}, []string{"arbiter:    v1.4.0", "binary:     example.com/bank/cmd/bank (devel) (module example.com/bank)", "revision:   unknown", "franz-go:   v1.22.3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			writeVersion(&out, &tt.info)
			for _, want := range tt.want {
				if !strings.Contains(out.String(), want) {
					t.Errorf("version does not say %q:\n%s", want, out.String())
				}
			}
		})
	}
}

// TestReleaseBinaryHasNoFaultInjection builds the binary as the Makefile and
// the Dockerfile do and checks that no fault-injection hook, nor the name of
// its environment variable, is in it; the tests' build has them.
func TestReleaseBinaryHasNoFaultInjection(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release binary")
	}
	path := filepath.Join(t.TempDir(), "arbiter")
	build := exec.Command("go", "build", "-trimpath", "-o", path, "github.com/arbiter-cqrs/arbiter/cmd/arbiter")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the release binary: %v\n%s", err, out)
	}
	version, err := exec.Command(path, "version").Output()
	if err != nil || !bytes.Contains(version, []byte("franz-go:   v1.")) || !bytes.Contains(version, []byte("test hooks: no")) {
		t.Errorf("arbiter version: %v\n%s\nwant the franz-go module's version and no test hooks", err, version)
	}
	for _, binary := range []struct {
		path      string
		wantHooks bool
	}{{path, false}, {arbiterBinary, true}} {
		content, err := os.ReadFile(binary.path)
		if err != nil {
			t.Fatal(err)
		}
		if has := bytes.Contains(content, []byte("ARBITER_TEST_")); has != binary.wantHooks {
			t.Errorf("%s contains ARBITER_TEST_: %v, want %v (only builds with -tags arbiter_faults have the hooks)", binary.path, has, binary.wantHooks)
		}
	}
}
