//go:build arbiter_faults

package chaos

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
)

// TestBrokerKillRound runs a short chaos round on the three-broker Kafka of
// scripts/kafka-cluster.sh (ARBITER_TEST_KAFKA_CLUSTER_BROKERS; the
// script's ARBITER_STACK_DIR and ARBITER_KAFKA_CLUSTER_BASE_PORT must be
// those it was started with) with one broker kill: the workers carry on with
// two brokers in sync, the killed broker comes back into the ISR, and the
// history has no anomaly. scripts/test-cluster.sh runs it.
func TestBrokerKillRound(t *testing.T) {
	brokers := testenv.KafkaCluster(t, 3)
	clusterCmd, err := filepath.Abs(filepath.Join("..", "..", "scripts", "kafka-cluster.sh"))
	if err != nil {
		t.Fatal(err)
	}
	binary, err := testkit.BuildArbiter(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// One broker kill takes about 35 s (a 5 s baseline, 12 s down, the
	// restart, the ISR); production stops meanwhile, so the round ends
	// after it, and no second fault fits.
	result, err := Run(ctx, Config{
		Brokers:         brokers,
		Binary:          binary,
		KafkaBrokers:    3,
		KafkaClusterCmd: []string{clusterCmd},
		Faults:          []string{FaultBrokerKill},
		Duration:        30 * time.Second,
		FaultInterval:   8 * time.Second,
		Rate:            100,
		Workers:         2,
		Partitions:      6,
		Aggregates:      100,
		Dir:             t.TempDir(),
		Out:             &out,
	})
	t.Logf("run log:\n%s", out.String())
	if err != nil {
		t.Fatalf("chaos run: %v", err)
	}
	t.Logf("summary:\n%s", result.Summary())
	if len(result.Failures) > 0 {
		t.Errorf("a broker fault did not complete: %v", result.Failures)
	}
	if got := result.Faults[FaultBrokerKill]; got != 1 {
		t.Errorf("%d broker kills recorded, want 1 (killed and back in the ISR); faults: %v", got, result.FaultLog)
	}
	for _, line := range result.FaultLog {
		if !strings.Contains(line, "back in the ISR of all its partitions") {
			t.Errorf("fault log %q does not say the broker came back", line)
		}
	}
	if !result.Report.OK() {
		t.Errorf("the history has anomalies:\n%s", result.Report.Summary())
	}
	if result.Report.Commands == 0 {
		t.Errorf("the history has no commands")
	}
}
