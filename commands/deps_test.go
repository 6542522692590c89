package commands_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoRedisClientInTheSDK: a service that only sends commands links no
// Redis client; RetryOnConflict takes a commands.Reader, which
// versionstore.Store satisfies.
func TestNoRedisClientInTheSDK(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/arbiter-cqrs/arbiter/commands").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(pkg, "go-redis") || pkg == "github.com/arbiter-cqrs/arbiter/versionstore" {
			t.Errorf("package commands depends on %s: a command sender must not need a Redis client", pkg)
		}
	}
}
