package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"github.com/arbiter-cqrs/arbiter/internal/freeport"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/arbiter-cqrs/arbiter/kafkaclient"
)

// SecuredKafka is a Kafka broker of one test whose client listener is
// SASL_SSL: TLS with a certificate from a CA the test made, and SCRAM-SHA-512
// logins. It runs from the jars scripts/stack.sh caches.
type SecuredKafka struct {
	// Brokers is the address of the SASL_SSL listener.
	Brokers []string
	// CA signed the broker's certificate; clients trust CA.CertFile.
	CA *CA
	// Username and Password are the SCRAM-SHA-512 user made at format time.
	Username, Password string
	// PasswordFile holds Password.
	PasswordFile string
}

// Config returns the client settings that log in as the test's user.
func (k *SecuredKafka) Config() kafkaclient.Config {
	return kafkaclient.Config{
		TLSCAFile:        k.CA.CertFile,
		SASLMechanism:    kafkaclient.ScramSHA512,
		SASLUsername:     k.Username,
		SASLPasswordFile: k.PasswordFile,
	}
}

// securedKafkaTimeout bounds the broker's start, a JVM on a busy machine.
const securedKafkaTimeout = 3 * time.Minute

// StartSecuredKafka starts a single-node KRaft broker with a SASL_SSL
// listener on a free port, waits until the test's user can list its topics
// and stops it when the test ends. Without java or the cached Kafka jars the
// test fails under CI=true and is skipped otherwise. It takes one JVM, about
// 10 to 20 seconds to start on two cores; share it between subtests.
func StartSecuredKafka(t testing.TB) *SecuredKafka {
	t.Helper()
	libs, err := kafkaLibs()
	if err != nil {
		unavailable(t, "no Kafka jars for a secured broker: %v", err)
	}
	if _, err := exec.LookPath("java"); err != nil {
		unavailable(t, "java is not installed: %v", err)
	}
	dir := t.TempDir()
	ca := NewCA(t)
	server := ca.Issue("kafka")
	var ports [3]int
	for i := range ports {
		if ports[i], err = freeport.Pick(); err != nil {
			t.Fatalf("find a free port: %v", err)
		}
	}
	saslPort, internalPort, controllerPort := ports[0], ports[1], ports[2]
	k := &SecuredKafka{
		Brokers:      []string{fmt.Sprintf("127.0.0.1:%d", saslPort)},
		CA:           ca,
		Username:     "arbiter-test",
		Password:     "pw-" + hex.EncodeToString(randomBytes(12)),
		PasswordFile: filepath.Join(dir, "kafka-password"),
	}
	if err := os.WriteFile(k.PasswordFile, []byte(k.Password+"\n"), 0o600); err != nil {
		t.Fatalf("write the password file: %v", err)
	}
	properties := strings.Join([]string{
		"process.roles=broker,controller",
		"node.id=1",
		fmt.Sprintf("controller.quorum.voters=1@127.0.0.1:%d", controllerPort),
		"controller.listener.names=CONTROLLER",
		fmt.Sprintf("listeners=SASL_SSL://127.0.0.1:%d,INTERNAL://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", saslPort, internalPort, controllerPort),
		fmt.Sprintf("advertised.listeners=SASL_SSL://127.0.0.1:%d,INTERNAL://127.0.0.1:%d", saslPort, internalPort),
		"inter.broker.listener.name=INTERNAL",
		"listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"sasl.enabled.mechanisms=SCRAM-SHA-512",
		"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
		"listener.name.sasl_ssl.ssl.keystore.type=PEM",
		"listener.name.sasl_ssl.ssl.keystore.location=" + server.ChainFile,
		"log.dirs=" + filepath.Join(dir, "data"),
		"offsets.topic.replication.factor=1",
		"offsets.topic.num.partitions=1",
		"transaction.state.log.replication.factor=1",
		"transaction.state.log.min.isr=1",
		"transaction.state.log.num.partitions=1",
		"share.coordinator.state.topic.replication.factor=1",
		"share.coordinator.state.topic.min.isr=1",
		"group.initial.rebalance.delay.ms=0",
		"group.min.session.timeout.ms=1000",
		"num.partitions=1",
		"auto.create.topics.enable=false",
		"num.network.threads=1",
		"num.io.threads=2",
		"",
	}, "\n")
	propertiesFile := filepath.Join(dir, "server.properties")
	if err := os.WriteFile(propertiesFile, []byte(properties), 0o600); err != nil {
		t.Fatalf("write server.properties: %v", err)
	}
	java := func(ctx context.Context, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "java", append([]string{
			"-Xmx512m", "-Xms128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
			"-Djava.awt.headless=true", "-Dlog4j2.level=warn", "-Dkafka.logs.dir=" + dir,
			"-cp", filepath.Join(libs, "*"),
		}, args...)...)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), securedKafkaTimeout)
	defer cancel()
	// The cluster ID is a base64 UUID; made here, as StorageTool random-uuid
	// would cost another JVM start.
	format := java(ctx, "kafka.tools.StorageTool", "format",
		"-t", base64.RawURLEncoding.EncodeToString(randomBytes(16)), "-c", propertiesFile,
		"--add-scram", fmt.Sprintf("SCRAM-SHA-512=[name=%s,password=%s]", k.Username, k.Password))
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("kafka-storage format: %v\n%s", err, out)
	}
	logPath := filepath.Join(dir, "kafka.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create the broker log: %v", err)
	}
	defer logFile.Close()
	cmd := java(context.Background(), "kafka.Kafka", propertiesFile)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the secured broker: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	if err := k.awaitReady(ctx, exited); err != nil {
		tail, _ := os.ReadFile(logPath)
		if len(tail) > 8<<10 {
			tail = tail[len(tail)-8<<10:]
		}
		t.Fatalf("secured broker on %s: %v\n%s", k.Brokers[0], err, tail)
	}
	t.Logf("secured broker (SASL_SSL) on %s ready in %v", k.Brokers[0], time.Since(start).Round(100*time.Millisecond))
	return k
}

// awaitReady lists topics as the test's user until it works.
func (k *SecuredKafka) awaitReady(ctx context.Context, exited <-chan struct{}) error {
	opts, err := k.Config().Opts()
	if err != nil {
		return err
	}
	client, err := kgo.NewClient(append(opts, kgo.SeedBrokers(k.Brokers...), kgo.RetryTimeout(2*time.Second))...)
	if err != nil {
		return errors.Wrap(err, "client")
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	for {
		tryCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := admin.ListTopics(tryCtx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.Wrap(err, "the broker exited")
		case <-ctx.Done():
			return errors.Wrapf(err, "not ready within %s", securedKafkaTimeout)
		case <-ticker.C:
		}
	}
}

// kafkaLibs finds the broker jars scripts/stack.sh resolved, in
// $ARBITER_CACHE_DIR (default ~/.cache/arbiter)/kafka-<version>/libs, the
// version read from deployments/kafka/pom.xml.
func kafkaLibs() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	pom, err := os.ReadFile(filepath.Join(root, "deployments", "kafka", "pom.xml"))
	if err != nil {
		return "", errors.Wrap(err, "read the broker's pom.xml")
	}
	match := regexp.MustCompile(`<kafka.version>([^<]+)</kafka.version>`).FindSubmatch(pom)
	if match == nil {
		return "", errors.New("no <kafka.version> in deployments/kafka/pom.xml")
	}
	cache := os.Getenv("ARBITER_CACHE_DIR")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", errors.Wrap(err, "home directory")
		}
		cache = filepath.Join(home, ".cache", "arbiter")
	}
	home := filepath.Join(cache, "kafka-"+string(match[1]))
	if _, err := os.Stat(filepath.Join(home, "libs.complete")); err != nil {
		return "", errors.Wrapf(err, "jars of Kafka %s not resolved yet (scripts/stack.sh up does it)", match[1])
	}
	return filepath.Join(home, "libs"), nil
}

// moduleRoot finds the directory of go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", errors.Wrap(err, "working directory")
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
