//go:build arbiter_faults

package app

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/chaos"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
)

// TestChaosRedisClusterFailovers runs a short chaos round on a Redis
// Cluster of its own with both failover kinds, worker kills and stalls: the
// history has no anomaly, and the killed master's promoted replica, which
// lost writes, was caught by a worker (not merely survived). It kills and
// restarts Redis nodes of its own only; Kafka is the test stack's.
//
//	go test -tags arbiter_faults -race -count=1 -run TestChaosRedisClusterFailovers ./app/
func TestChaosRedisClusterFailovers(t *testing.T) {
	runFailoverRound(t, "arbiter-chaos-cluster-", chaos.Config{
		RedisCluster: true,
		Faults:       []string{chaos.FaultRedisMasterKill, chaos.FaultRedisFailover, chaos.FaultKill, chaos.FaultStall},
	}, chaos.ClusterFaults)
}

// runFailoverRound runs a 60 s chaos round of cfg's Redis topology and
// faults on the test stack's Kafka and asserts: no anomaly, each of the
// failover kinds injected, and every fault that lost writes lost some and
// was caught by a worker. Failed runs' logs move to a folder named after
// keepPrefix.
func runFailoverRound(t *testing.T, keepPrefix string, cfg chaos.Config, failoverKinds []string) {
	t.Helper()
	if testing.Short() {
		t.Skip("a chaos round of minutes")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		if testenv.InCI() {
			t.Fatalf("redis-server is not installed (failing instead of skipping under %s=true): %v", testenv.EnvCI, err)
		}
		t.Skipf("redis-server is not installed: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "chaos")
	var out strings.Builder
	cfg.Brokers = testenv.Brokers(t)
	cfg.Binary = arbiterBinary
	cfg.Duration = 60 * time.Second
	cfg.FaultInterval = 5 * time.Second
	cfg.Rate = 150
	cfg.Aggregates = 200
	cfg.Workers = 2
	cfg.Partitions = 6
	cfg.QuiesceTimeout = 3 * time.Minute
	cfg.Dir = dir
	cfg.Out = &out
	result, err := chaos.Run(context.Background(), cfg)
	t.Logf("chaos log:\n%s", out.String())
	if err != nil {
		t.Fatalf("chaos run: %v", err)
	}
	t.Logf("summary:\n%s", result.Summary())
	if !result.OK() {
		t.Errorf("the history has anomalies (seed %d)", result.Seed)
	}
	for _, kind := range failoverKinds {
		if result.Faults[kind] == 0 {
			t.Errorf("no %s was injected (seed %d)", kind, result.Seed)
		}
	}
	if len(result.LostWrites) == 0 {
		t.Errorf("no fault lost writes (seed %d)", result.Seed)
	}
	for _, lost := range result.LostWrites {
		if lost.LostBytes <= 0 {
			t.Errorf("%s lost no writes: the promoted replica was not behind its master (seed %d)", lost.Fault, result.Seed)
		}
		if lost.DetectedBy == "" {
			t.Errorf("%s lost %d bytes of writes and no worker reported that redis went back in time (seed %d)", lost.Fault, lost.LostBytes, result.Seed)
		}
	}
	if t.Failed() {
		t.Logf("the run's logs stay in %s", dir)
		keep, err := os.MkdirTemp("", keepPrefix)
		if err == nil && os.Rename(dir, keep) == nil {
			t.Logf("moved them to %s", keep)
		}
	}
}
