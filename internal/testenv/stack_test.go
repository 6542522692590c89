package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/arbiter-cqrs/arbiter/internal/stackprobe"
)

// These tests prove that integration tests talk to the real servers that
// scripts/stack.sh started, not to an in-process fake: the process behind
// each address is the broker or redis-server whose PID the stack exported.

func TestStackKafkaIsTheRealBroker(t *testing.T) {
	brokers := Brokers(t)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	features, err := KafkaFeatures(ctx, brokers)
	if err != nil {
		t.Fatalf("KafkaFeatures(%v): %v", brokers, err)
	}
	t.Logf("finalized features of %v: %v", brokers, features)
	if _, ok := features[stackprobe.FeatureMetadataVersion]; !ok {
		t.Errorf("broker finalized no %s: %v", stackprobe.FeatureMetadataVersion, features)
	}
	if level := features[stackprobe.FeatureTransactionVersion]; level < 2 {
		t.Errorf("broker finalized %s=%d, want at least 2 (KIP-890 transactions)", stackprobe.FeatureTransactionVersion, level)
	}

	pid := stackPID(t, EnvKafkaPID)
	assertProcessServes(t, pid, "kafka.Kafka", brokers[0])
}

func TestStackRedisIsTheRealServer(t *testing.T) {
	client := Redis(t)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := stackprobe.RedisInfo(ctx, client, "server")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("redis_version=%s process_id=%s", info["redis_version"], info["process_id"])
	if info["redis_version"] == "" {
		t.Errorf("INFO server has no redis_version: %v", info)
	}

	pid := stackPID(t, EnvRedisPID)
	if got := info["process_id"]; got != strconv.Itoa(pid) {
		t.Errorf("INFO server says process_id=%s, but the stack started redis-server as pid %d", got, pid)
	}
	assertProcessServes(t, pid, "redis-server", client.Options().Addr)
}

// stackPID returns the PID that scripts/stack.sh exported in envName. It is
// absent when the servers were started some other way (docker compose): then
// the test is skipped, except under CI, where the stack script always runs.
func stackPID(t *testing.T, envName string) int {
	t.Helper()
	value := os.Getenv(envName)
	if value == "" {
		unavailable(t, "%s is not set: the servers were not started by scripts/stack.sh", envName)
	}
	pid, err := strconv.Atoi(value)
	if err != nil || pid <= 0 {
		t.Fatalf("%s=%q is not a process ID", envName, value)
	}
	return pid
}

// assertProcessServes checks that process pid is alive, that its command line
// contains want, and that it holds the socket listening on addr.
func assertProcessServes(t *testing.T, pid int, want, addr string) {
	t.Helper()
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("process %d of the stack is not running: %v", pid, err)
	}
	args := strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")
	if !strings.Contains(args, want) {
		t.Fatalf("process %d runs %q, want %q", pid, args, want)
	}
	_, portText, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("split %q: %v", addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatalf("port of %q: %v", addr, err)
	}
	inodes, err := listeningInodes(port)
	if err != nil {
		t.Fatal(err)
	}
	if len(inodes) == 0 {
		t.Fatalf("nothing listens on port %d", port)
	}
	owns, err := processHoldsSocket(pid, inodes)
	if err != nil {
		t.Fatal(err)
	}
	if !owns {
		t.Fatalf("process %d (%s) does not hold the socket listening on %s: another server answers there", pid, want, addr)
	}
	t.Logf("%s is served by pid %d: %s", addr, pid, args)
}

// listeningInodes returns the inodes of the TCP sockets listening on port,
// from /proc/net/tcp and /proc/net/tcp6.
func listeningInodes(port int) (map[string]bool, error) {
	const stateListen = "0A"
	inodes := make(map[string]bool)
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		file, err := os.Open(table)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		scanner := bufio.NewScanner(file)
		for scanner.Scan() {
			fields := strings.Fields(scanner.Text())
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			if len(fields) < 10 || fields[3] != stateListen {
				continue
			}
			_, localPort, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			if value, err := strconv.ParseInt(localPort, 16, 32); err == nil && int(value) == port {
				inodes[fields[9]] = true
			}
		}
		err = scanner.Err()
		file.Close()
		if err != nil {
			return nil, errors.Wrapf(err, "read %s", table)
		}
	}
	return inodes, nil
}

// processHoldsSocket reports whether one of pid's descriptors is a socket
// with one of the given inodes.
func processHoldsSocket(pid int, inodes map[string]bool) (bool, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return false, errors.Wrapf(err, "list descriptors of process %d", pid)
	}
	for _, entry := range entries {
		target, err := os.Readlink(filepath.Join(fdDir, entry.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		inode, ok := strings.CutPrefix(target, "socket:[")
		if ok && inodes[strings.TrimSuffix(inode, "]")] {
			return true, nil
		}
	}
	return false, nil
}

func TestCreateTopicsRoundTrip(t *testing.T) {
	brokers := Brokers(t)
	topic := Name(t, "roundtrip")
	const partitions = 3
	CreateTopics(t, brokers, partitions, topic)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A transactional producer: the broker must have the transaction state
	// topic (replication factor 1) and transaction.version 2 working.
	producer, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.TransactionalID(Name(t, "txn")),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	if err := producer.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for partition := range int32(partitions) {
		record := &kgo.Record{Partition: partition, Value: []byte(strconv.Itoa(int(partition)))}
		if err := producer.ProduceSync(ctx, record).FirstErr(); err != nil {
			t.Fatalf("produce to partition %d: %v", partition, err)
		}
	}
	if err := producer.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit transaction: %v", err)
	}

	consumer, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	seen := make(map[int32]string)
	for len(seen) < partitions {
		fetches := consumer.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d committed records before %v", len(seen), partitions, err)
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			t.Errorf("fetch %s/%d: %v", topic, partition, err)
		})
		fetches.EachRecord(func(record *kgo.Record) {
			if previous, ok := seen[record.Partition]; ok {
				t.Errorf("saw a second record on partition %d: %q after %q", record.Partition, record.Value, previous)
			}
			seen[record.Partition] = string(record.Value)
		})
	}
	for partition := range int32(partitions) {
		if got, want := seen[partition], strconv.Itoa(int(partition)); got != want {
			t.Errorf("partition %d holds %q, want %q", partition, got, want)
		}
	}
}

func TestStartRedisServerRestart(t *testing.T) {
	tests := []struct {
		name      string
		aof       bool
		wantAfter string // "" when the key must be gone
	}{
		{name: "AOF keeps data across restart", aof: true, wantAfter: "kept"},
		{name: "no persistence loses data on restart", aof: false, wantAfter: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			server := StartRedisServer(t, RedisServerOptions{AOF: tt.aof, Dir: dir})
			client := server.Client()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			key := Name(t, "key")
			if err := client.Set(ctx, key, "kept", 0).Err(); err != nil {
				t.Fatal(err)
			}
			urlBefore := server.URL()
			server.Restart()
			if server.URL() != urlBefore {
				t.Errorf("URL changed across Restart: %s, then %s", urlBefore, server.URL())
			}

			got, err := client.Get(ctx, key).Result()
			switch {
			case tt.wantAfter == "" && !errors.Is(err, redis.Nil):
				t.Errorf("after restart without persistence GET %s = %q, %v; want redis.Nil", key, got, err)
			case tt.wantAfter != "" && (err != nil || got != tt.wantAfter):
				t.Errorf("after restart with AOF GET %s = %q, %v; want %q", key, got, err, tt.wantAfter)
			}
			if tt.aof {
				// Redis 7 keeps a multi-part AOF in appendonlydir/, older
				// versions a single appendonly.aof.
				_, errDir := os.Stat(filepath.Join(dir, "appendonlydir"))
				_, errFile := os.Stat(filepath.Join(dir, "appendonly.aof"))
				if errDir != nil && errFile != nil {
					t.Errorf("no AOF in %s: %v; %v", dir, errDir, errFile)
				}
			}

			server.Stop()
			if err := ping(ctx, server.Addr()); err == nil {
				t.Errorf("PING to %s succeeded after Stop", server.Addr())
			}
		})
	}
}
