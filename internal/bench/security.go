package bench

import (
	"context"

	"github.com/arbiter-cqrs/arbiter/kafkaclient"
	"github.com/arbiter-cqrs/arbiter/redisclient"
	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Security holds the TLS, SASL and ACL settings of a secured Kafka and Redis:
// every client the benchmark makes, and its worker processes, use them.
type Security struct {
	// Kafka are the brokers' client settings (kafkaclient.Config.Opts).
	Kafka kafkaclient.Config
	// Redis are the Redis client settings; the URL is the run's.
	Redis redisclient.Config
}

// kafkaOpts returns the security options of every Kafka client.
func (s Security) kafkaOpts() ([]kgo.Opt, error) { return s.Kafka.Opts() }

// redisConfig returns the Redis client settings for url.
func (s Security) redisConfig(url string) redisclient.Config {
	c := s.Redis
	c.URL = url
	return c
}

// workerFlags returns the flags that give a worker process the same
// settings; the passwords themselves go by environment (workerEnv), never
// on a command line.
func (s Security) workerFlags() []string {
	var flags []string
	add := func(name, value string) {
		if value != "" {
			flags = append(flags, "--"+name, value)
		}
	}
	if s.Kafka.TLS {
		flags = append(flags, "--kafka-tls")
	}
	add("kafka-client-id", s.Kafka.ClientID)
	add("kafka-tls-ca-file", s.Kafka.TLSCAFile)
	add("kafka-tls-cert-file", s.Kafka.TLSCertFile)
	add("kafka-tls-key-file", s.Kafka.TLSKeyFile)
	add("kafka-tls-server-name", s.Kafka.TLSServerName)
	add("kafka-sasl-mechanism", s.Kafka.SASLMechanism)
	add("kafka-sasl-username", s.Kafka.SASLUsername)
	add("kafka-sasl-password-file", s.Kafka.SASLPasswordFile)
	add("kafka-sasl-oauth-token-file", s.Kafka.SASLOAuthTokenFile)
	add("redis-username", s.Redis.Username)
	add("redis-password-file", s.Redis.PasswordFile)
	add("redis-tls-ca-file", s.Redis.TLSCAFile)
	add("redis-tls-cert-file", s.Redis.TLSCertFile)
	add("redis-tls-key-file", s.Redis.TLSKeyFile)
	return flags
}

// workerEnv returns the environment variables that carry the passwords to
// a worker process.
func (s Security) workerEnv() []string {
	var env []string
	if s.Kafka.SASLPassword != "" {
		env = append(env, "ARBITER_KAFKA_SASL_PASSWORD="+s.Kafka.SASLPassword)
	}
	if s.Redis.Password != "" {
		env = append(env, "ARBITER_REDIS_PASSWORD="+s.Redis.Password)
	}
	return env
}

// connect makes the run's Kafka admin client and Redis client, with the
// security settings and the Redis mode, and checks both answer. A Redis
// setting that does not parse is a *ConfigError.
func connect(ctx context.Context, brokers []string, security Security, redisURL string, mode redisclient.Mode) (*kgo.Client, redis.UniversalClient, error) {
	securityOpts, err := security.kafkaOpts()
	if err != nil {
		return nil, nil, err
	}
	kafka, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, securityOpts...)...)
	if err != nil {
		return nil, nil, errors.Wrap(err, "create the Kafka admin client")
	}
	redisConfig := security.redisConfig(redisURL)
	redisConfig.Mode = mode
	rdb, err := redisConfig.NewUniversalClient()
	if err != nil {
		kafka.Close()
		return nil, nil, &ConfigError{Err: err}
	}
	if err := reachable(ctx, kafka, rdb, redisConfig); err != nil {
		kafka.Close()
		_ = rdb.Close()
		return nil, nil, err
	}
	return kafka, rdb, nil
}
