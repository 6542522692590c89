package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/redis/go-redis/v9"
)

// TestSecuredKafkaAndRedis runs topics create, the worker, send, tail and
// get against a broker whose only client listener is SASL_SSL (SCRAM-SHA-512,
// a certificate from a CA the test made) and a redis-server reached over TLS
// with a client certificate, as an ACL user restricted to the test's key
// prefix. Wrong credentials fail fast with exit code 3, naming the mechanism
// and never a password.
func TestSecuredKafkaAndRedis(t *testing.T) {
	kafka := testenv.StartSecuredKafka(t)
	redisServer := testenv.StartRedisServer(t, testenv.RedisServerOptions{TLS: kafka.CA})
	name := testenv.Name(t, "")
	dir := t.TempDir()
	writeSecret := func(file, secret string) string {
		path := filepath.Join(dir, file)
		if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	redisUser, redisPassword := "arbiter-worker", "redis-pw-"+name
	redisPasswordFile := writeSecret("redis-password", redisPassword)
	ctx := context.Background()
	// What the worker's scripts need, on the test's keys only.
	err := redisServer.Client().Do(ctx, "ACL", "SETUSER", redisUser, "on", ">"+redisPassword, "~"+name+":*", "resetchannels",
		"-@all", "+@read", "+@write", "+@keyspace", "+@scripting", "+@connection", "+@transaction", "-@dangerous").Err()
	if err != nil {
		t.Fatalf("create the Redis ACL user: %v", err)
	}
	client := kafka.CA.Issue("arbiter-client")
	s := &cliStack{
		t: t, brokers: kafka.Brokers, redisURL: redisServer.TLSURL(),
		topics: testkit.Topics{Commands: name + "-commands", Events: name + "-events", Conflicts: name + "-conflicts"},
		group:  name, keyPrefix: name, binary: arbiterBinary,
		security: []string{
			"--kafka-tls-ca-file", kafka.CA.CertFile,
			"--kafka-sasl-mechanism", "SCRAM-SHA-512",
			"--kafka-sasl-username", kafka.Username,
			"--kafka-sasl-password-file", kafka.PasswordFile,
			"--redis-username", redisUser,
			"--redis-password-file", redisPasswordFile,
			"--redis-tls-ca-file", kafka.CA.CertFile,
			"--redis-tls-cert-file", client.CertFile,
			"--redis-tls-key-file", client.KeyFile,
		},
	}
	secrets := []string{kafka.Password, redisPassword}
	noSecrets := func(what, output string) {
		t.Helper()
		for _, secret := range secrets {
			if strings.Contains(output, secret) {
				t.Errorf("%s shows a password:\n%s", what, output)
			}
		}
	}

	if r := s.arbiter(2*time.Minute, nil, "topics", "create", "--partitions", "2"); r.code != 0 {
		t.Fatalf("topics create on the SASL_SSL listener: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	worker := s.startWorker()
	create := s.arbiter(2*time.Minute, nil, "send", "--id", "c-1", "--aggregate", "prod-1", "--type", product.CreateProductType,
		"--expected-version", "0", "--payload", `{"name":"Espresso cup","price":24.5,"stock":100}`, "--wait")
	if create.code != 0 || create.stdout != "c-1 prod-1: applied at version 1\n" {
		t.Fatalf("send --wait through SASL_SSL: exit %d, stdout %q, stderr:\n%s\nworker:\n%s", create.code, create.stdout, create.stderr, worker.Output())
	}
	tail := s.arbiter(time.Minute, nil, "tail", "events", "--from-start", "--exit-at-end")
	if tail.code != 0 || !strings.Contains(tail.stdout, "prod-1@1 ProductCreated (command c-1)") {
		t.Fatalf("tail events through SASL_SSL: exit %d, stdout %q, stderr:\n%s", tail.code, tail.stdout, tail.stderr)
	}
	get := s.arbiter(time.Minute, nil, "get", "prod-1")
	if get.code != 0 || !strings.Contains(get.stdout, `"version": 1`) {
		t.Fatalf("get over TLS as the ACL user: exit %d, stdout %q, stderr:\n%s", get.code, get.stdout, get.stderr)
	}
	stopWorker(t, worker)
	noSecrets("the worker's log", worker.Output())

	// The ACL user reaches nothing outside the prefix.
	restricted := redis.NewClient(&redis.Options{Addr: redisServer.Addr(), Username: redisUser, Password: redisPassword})
	defer restricted.Close()
	if err := restricted.Set(ctx, "other:key", "x", 0).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("the restricted user wrote a key outside its prefix: %v", err)
	}

	wrongKafka := writeSecret("wrong-kafka-password", "wrong-kafka-pw-"+name)
	wrongRedis := writeSecret("wrong-redis-password", "wrong-redis-pw-"+name)
	secrets = append(secrets, "wrong-kafka-pw-"+name, "wrong-redis-pw-"+name, "url-pw-"+name)
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"wrong Kafka password", []string{"send", "--kafka-sasl-password-file", wrongKafka, "--aggregate", "prod-1", "--type", "X", "--expected-version", "1"},
			exitUnreachable, "SCRAM-SHA-512"},
		{"wrong Kafka password for the worker", []string{"worker", "--kafka-sasl-password-file", wrongKafka, "--group", name},
			exitUnreachable, "SCRAM-SHA-512"},
		{"a CA that did not sign the broker's certificate", []string{"tail", "--kafka-tls-ca-file", testenv.NewCA(t).CertFile, "events", "--exit-at-end"},
			exitUnreachable, "TLS certificate did not verify; check the CA file"},
		{"wrong Kafka password for tail", []string{"tail", "--kafka-sasl-password-file", wrongKafka, "events", "--exit-at-end"},
			exitUnreachable, "SCRAM-SHA-512"},
		{"wrong Redis password", []string{"get", "--redis-password-file", wrongRedis, "prod-1"},
			exitUnreachable, "refused the login"},
		{"a Redis URL that does not parse", []string{"get", "--redis", "redis://arbiter:url-pw-" + name + "@127.0.0.1:notaport/0", "prod-1"},
			exitUsage, "redis://arbiter:xxxxx@127.0.0.1:notaport/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.arbiter(time.Minute, nil, tc.args...)
			if r.code != tc.wantCode || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit %d and %q", r.code, r.stderr, tc.wantCode, tc.want)
			}
			if r.took > 30*time.Second {
				t.Errorf("took %v to fail; a refused login must fail fast", r.took)
			}
			noSecrets("the error", r.stderr)
			t.Logf("exit %d in %v: %s", r.code, r.took.Round(time.Millisecond), r.stderr)
		})
	}
}
