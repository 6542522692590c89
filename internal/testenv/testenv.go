// Package testenv gives integration tests the real Kafka broker and Redis
// server of the test stack, found through environment variables that
// scripts/stack.sh writes to .stack/env:
//
//	make test                                 # starts the stack, runs every test, stops it
//	scripts/stack.sh up && source .stack/env  # or keep it up and run go test yourself
//
// When a server is missing or unreachable, a test that asks for it is
// skipped, except under CI=true, where it fails: CI must never pass by
// skipping its integration tests.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/topicadmin"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/arbiter-cqrs/arbiter/internal/stackprobe"
)

// Environment variables read by this package. scripts/stack.sh exports them
// in .stack/env.
const (
	// EnvKafkaBrokers holds the comma-separated bootstrap addresses of the
	// test Kafka cluster, e.g. "127.0.0.1:19092".
	EnvKafkaBrokers = "ARBITER_TEST_KAFKA_BROKERS"
	// EnvRedisURL holds the redis:// URL of the test Redis server, e.g.
	// "redis://127.0.0.1:16379/0".
	EnvRedisURL = "ARBITER_TEST_REDIS_URL"
	// EnvKafkaPID holds the process ID of the broker the stack started. Only
	// the tests that prove the stack is real read it.
	EnvKafkaPID = "ARBITER_TEST_KAFKA_PID"
	// EnvRedisPID holds the process ID of the redis-server the stack started.
	EnvRedisPID = "ARBITER_TEST_REDIS_PID"
	// EnvCI is the variable that CI sets to "true"; then missing servers fail
	// tests instead of skipping them.
	EnvCI = "CI"
)

// probeTimeout bounds the one reachability check of each server per process.
const probeTimeout = 20 * time.Second

// howToStart is appended to every skip or failure caused by a missing server.
const howToStart = "run `make test`, or `scripts/stack.sh up && source .stack/env` and then go test"

// probes caches the result of the reachability check of each server address
// for the life of the test process (key: "kafka " or "redis " plus the
// address). It is the package's only state, and deliberately global: every
// test of a package binary asks for the same servers, and probing them once
// instead of once per test keeps a missing server from costing a timeout per
// test. It holds no configuration and never changes what a test gets.
var probes sync.Map // map[string]*probe

type probe struct {
	once sync.Once
	err  error
}

// probeOnce runs check once per key per process and returns its result.
func probeOnce(key string, check func(context.Context) error) error {
	value, _ := probes.LoadOrStore(key, &probe{})
	p := value.(*probe)
	p.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		defer cancel()
		p.err = check(ctx)
	})
	return p.err
}

// InCI reports whether the CI environment variable is set to a true value
// ("true", "1", ...), in which case missing servers fail tests.
func InCI() bool {
	inCI, err := strconv.ParseBool(os.Getenv(EnvCI))
	return err == nil && inCI
}

// unavailable fails the test under CI and skips it otherwise.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	unavailableHint(t, howToStart, format, args...)
}

// unavailableHint is unavailable with another hint on how to start the
// missing server.
func unavailableHint(t testing.TB, hint, format string, args ...any) {
	t.Helper()
	message := errors.Newf(format, args...).Error() + "; " + hint
	if InCI() {
		t.Fatalf("%s (failing instead of skipping because %s=%s)", message, EnvCI, os.Getenv(EnvCI))
	}
	t.Skip(message)
}

// Brokers returns the bootstrap addresses of the test Kafka cluster, from
// ARBITER_TEST_KAFKA_BROKERS. If the variable is unset or the cluster does
// not answer a metadata request (checked once per process), the test fails
// under CI=true and is skipped otherwise.
func Brokers(t testing.TB) []string {
	t.Helper()
	brokers := stackprobe.SplitList(os.Getenv(EnvKafkaBrokers))
	if len(brokers) == 0 {
		unavailable(t, "%s is not set: no Kafka broker to test against", EnvKafkaBrokers)
	}
	err := probeOnce("kafka "+strings.Join(brokers, ","), func(ctx context.Context) error {
		_, err := stackprobe.KafkaReady(ctx, brokers)
		return err
	})
	if err != nil {
		unavailable(t, "Kafka at %s=%s is unreachable: %v", EnvKafkaBrokers, strings.Join(brokers, ","), err)
	}
	return brokers
}

// RedisURL returns the redis:// URL of the test Redis server, from
// ARBITER_TEST_REDIS_URL. If the variable is unset, not a valid URL, or the
// server does not answer PING (checked once per process), the test fails
// under CI=true and is skipped otherwise.
func RedisURL(t testing.TB) string {
	t.Helper()
	url := strings.TrimSpace(os.Getenv(EnvRedisURL))
	if url == "" {
		unavailable(t, "%s is not set: no Redis server to test against", EnvRedisURL)
	}
	options, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("%s=%q is not a Redis URL: %v", EnvRedisURL, url, err)
	}
	err = probeOnce("redis "+url, func(ctx context.Context) error {
		probeOptions := *options
		probeOptions.MaxRetries = -1 // one attempt: the probe is the retry policy
		probeOptions.DialerRetries = 1
		client := redis.NewClient(&probeOptions)
		defer client.Close()
		return errors.Wrap(client.Ping(ctx).Err(), "PING")
	})
	if err != nil {
		unavailable(t, "Redis at %s=%s is unreachable: %v", EnvRedisURL, url, err)
	}
	return url
}

// Redis returns a client of the test Redis server (see RedisURL), closed when
// the test ends. Tests share the server's database: keep keys apart with
// Name.
func Redis(t testing.TB) *redis.Client {
	t.Helper()
	options, err := redis.ParseURL(RedisURL(t))
	if err != nil {
		t.Fatalf("parse %s: %v", EnvRedisURL, err)
	}
	client := redis.NewClient(options)
	t.Cleanup(func() {
		if err := client.Close(); err != nil {
			t.Errorf("close Redis client: %v", err)
		}
	})
	return client
}

// maxNameLength keeps names readable and well under Kafka's 249-character
// limit on topic names.
const maxNameLength = 120

// Name returns a name unique to this call, for a topic, a consumer group, a
// transactional ID or a key prefix: prefix, the test's name and a random
// suffix, joined by dashes. It only holds ASCII letters, digits and dashes,
// so it is a valid Kafka topic name; dots and underscores are avoided as
// Kafka treats topics differing only in them as colliding.
func Name(t testing.TB, prefix string) string {
	t.Helper()
	var random [6]byte
	if _, err := rand.Read(random[:]); err != nil {
		t.Fatalf("read random bytes: %v", err)
	}
	suffix := hex.EncodeToString(random[:])

	var parts []string
	if prefix = sanitize(prefix); prefix != "" {
		parts = append(parts, prefix)
	}
	testName := sanitize(t.Name())
	if room := maxNameLength - len(strings.Join(parts, "-")) - len(suffix) - 2; len(testName) > room {
		testName = strings.Trim(testName[:max(room, 0)], "-")
	}
	if testName != "" {
		parts = append(parts, testName)
	}
	return strings.Join(append(parts, suffix), "-")
}

// sanitize maps every character that is not an ASCII letter or digit to a
// dash, collapsing runs of them, and trims dashes at both ends.
func sanitize(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range name {
		if ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9') {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.Trim(b.String(), "-")
}

// CreateTopics creates the named topics with the given number of partitions
// and replication factor 1 on brokers, waits until every partition has a
// leader, and deletes the topics when the test ends.
func CreateTopics(t testing.TB, brokers []string, partitions int32, names ...string) {
	t.Helper()
	admin := newAdmin(t, brokers)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := topicadmin.Create(ctx, admin, topicadmin.Spec{Names: names, Partitions: partitions, ReplicationFactor: 1})
	// Register the cleanup before checking the result, so that the topics
	// that were created are deleted even if another one failed.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		responses, err := admin.DeleteTopics(ctx, names...)
		if err == nil {
			err = responses.Error()
		}
		if err != nil {
			t.Errorf("delete topics %v: %v", names, err)
		}
	})
	if err != nil {
		t.Fatalf("create topics %v: %v", names, err)
	}
}

// newAdmin returns an admin client of brokers, closed when the test ends
// (after the cleanups registered later, which may still use it).
func newAdmin(t testing.TB, brokers []string) *kadm.Client {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatalf("create Kafka client: %v", err)
	}
	t.Cleanup(client.Close)
	return kadm.NewClient(client)
}

// KafkaFeatures returns the finalized features of the cluster behind brokers
// (name to max version level) from its ApiVersions response, for example
// "metadata.version" and "transaction.version".
func KafkaFeatures(ctx context.Context, brokers []string) (map[string]int16, error) {
	return stackprobe.KafkaFeatures(ctx, brokers)
}
