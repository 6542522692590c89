package testenv

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/arbiter-cqrs/arbiter/internal/stackprobe"
	"github.com/cockroachdb/errors"
)

// EnvKafkaClusterBrokers holds the bootstrap addresses of the three-broker
// Kafka that scripts/kafka-cluster.sh up starts and writes to
// .stack/env.kafka-cluster (with ARBITER_STACK_DIR, to its env.kafka-cluster).
const EnvKafkaClusterBrokers = "ARBITER_TEST_KAFKA_CLUSTER_BROKERS"

// howToStartCluster is appended to every skip or failure caused by a missing
// replicated Kafka.
const howToStartCluster = "run `make test-cluster`, or `scripts/kafka-cluster.sh up && source .stack/env.kafka-cluster` " +
	"(it needs Java and the Kafka jars of one scripts/stack.sh up) and then go test -tags arbiter_faults"

// KafkaCluster returns the bootstrap addresses of the test's replicated
// Kafka, from ARBITER_TEST_KAFKA_CLUSTER_BROKERS, after checking that it
// lists brokers brokers. Missing, unreachable or of another size (a node
// left down by an earlier run), it fails the test under CI=true and skips
// it otherwise. Only tests that kill its nodes use it, so it is never the
// shared test stack.
func KafkaCluster(t testing.TB, brokers int) []string {
	t.Helper()
	addresses := stackprobe.SplitList(os.Getenv(EnvKafkaClusterBrokers))
	if len(addresses) == 0 {
		unavailableHint(t, howToStartCluster, "%s is not set: no replicated Kafka to test against", EnvKafkaClusterBrokers)
	}
	err := probeOnce("kafka-cluster "+strings.Join(addresses, ","), func(ctx context.Context) error {
		count, err := stackprobe.KafkaBrokerCount(ctx, addresses)
		if err == nil && count != brokers {
			err = errors.Newf("it lists %d brokers, want %d", count, brokers)
		}
		return err
	})
	if err != nil {
		unavailableHint(t, howToStartCluster, "the replicated Kafka at %s=%s is unusable: %v", EnvKafkaClusterBrokers, strings.Join(addresses, ","), err)
	}
	return addresses
}
