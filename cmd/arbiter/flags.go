package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/kafkaclient"
	"github.com/arbiter-cqrs/arbiter/redisclient"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

var errHelp = errors.New("help requested")

// commonFlags are the connection, topic and logging flags every subcommand
// takes, each with an ARBITER_* environment variable as its default.
type commonFlags struct {
	brokers        string
	redisURL       string
	commandsTopic  string
	eventsTopic    string
	conflictsTopic string
	keyPrefix      string
	logFormat      string
	logLevel       string
	kafka          kafkaclient.Config
	redis          redisclient.Config
}

func envString(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return fallback
}

func envInt(name string, fallback int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return fallback
}

func envDuration(name string, fallback time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return fallback
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.brokers, "brokers", envString("ARBITER_BROKERS", ""), "Kafka seed brokers, comma-separated (ARBITER_BROKERS)")
	fs.StringVar(&c.redisURL, "redis", envString("ARBITER_REDIS_URL", ""), "Redis URL, redis://[user:password@]host:port/db (ARBITER_REDIS_URL)")
	fs.StringVar(&c.commandsTopic, "commands-topic", envString("ARBITER_COMMANDS_TOPIC", events.DefaultCommandsTopic), "commands topic (ARBITER_COMMANDS_TOPIC)")
	fs.StringVar(&c.eventsTopic, "events-topic", envString("ARBITER_EVENTS_TOPIC", events.DefaultEventsTopic), "events topic (ARBITER_EVENTS_TOPIC)")
	fs.StringVar(&c.conflictsTopic, "conflicts-topic", envString("ARBITER_CONFLICTS_TOPIC", events.DefaultConflictsTopic), "conflicts topic (ARBITER_CONFLICTS_TOPIC)")
	fs.StringVar(&c.keyPrefix, "key-prefix", envString("ARBITER_KEY_PREFIX", "arbiter"), "prefix of every Redis key (ARBITER_KEY_PREFIX)")
	fs.StringVar(&c.logFormat, "log-format", envString("ARBITER_LOG_FORMAT", "console"), "log format: json or console (ARBITER_LOG_FORMAT)")
	fs.StringVar(&c.logLevel, "log-level", envString("ARBITER_LOG_LEVEL", "info"), "log level: debug, info, warn, error (ARBITER_LOG_LEVEL)")
	c.registerSecurity(fs)
}

// registerSecurity registers the Kafka and Redis security flags.
func (c *commonFlags) registerSecurity(fs *flag.FlagSet) {
	fs.StringVar(&c.kafka.ClientID, "kafka-client-id", envString("ARBITER_KAFKA_CLIENT_ID", ""), "client ID of every Kafka client (default: arbiter-worker for the worker's, arbiter-producer for send's, arbiter for the others) (ARBITER_KAFKA_CLIENT_ID)")
	fs.BoolVar(&c.kafka.TLS, "kafka-tls", envBool("ARBITER_KAFKA_TLS", false), "connect to Kafka with TLS (ARBITER_KAFKA_TLS)")
	fs.StringVar(&c.kafka.TLSCAFile, "kafka-tls-ca-file", envString("ARBITER_KAFKA_TLS_CA_FILE", ""), "PEM file of the CAs of the brokers' certificates; implies --kafka-tls (ARBITER_KAFKA_TLS_CA_FILE)")
	fs.StringVar(&c.kafka.TLSCertFile, "kafka-tls-cert-file", envString("ARBITER_KAFKA_TLS_CERT_FILE", ""), "PEM client certificate for Kafka mTLS (ARBITER_KAFKA_TLS_CERT_FILE)")
	fs.StringVar(&c.kafka.TLSKeyFile, "kafka-tls-key-file", envString("ARBITER_KAFKA_TLS_KEY_FILE", ""), "PEM client key for Kafka mTLS (ARBITER_KAFKA_TLS_KEY_FILE)")
	fs.StringVar(&c.kafka.TLSServerName, "kafka-tls-server-name", envString("ARBITER_KAFKA_TLS_SERVER_NAME", ""), "name the brokers' certificates are checked against (default: the host dialled) (ARBITER_KAFKA_TLS_SERVER_NAME)")
	fs.StringVar(&c.kafka.SASLMechanism, "kafka-sasl-mechanism", envString("ARBITER_KAFKA_SASL_MECHANISM", ""), "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (ARBITER_KAFKA_SASL_MECHANISM)")
	fs.StringVar(&c.kafka.SASLUsername, "kafka-sasl-username", envString("ARBITER_KAFKA_SASL_USERNAME", ""), "SASL user of PLAIN and SCRAM (ARBITER_KAFKA_SASL_USERNAME)")
	// No flag for the password itself: flags show in process listings.
	c.kafka.SASLPassword = os.Getenv("ARBITER_KAFKA_SASL_PASSWORD")
	fs.StringVar(&c.kafka.SASLPasswordFile, "kafka-sasl-password-file", envString("ARBITER_KAFKA_SASL_PASSWORD_FILE", ""), "file holding the SASL password, read at each login (ARBITER_KAFKA_SASL_PASSWORD_FILE; or the password itself in ARBITER_KAFKA_SASL_PASSWORD)")
	fs.StringVar(&c.kafka.SASLOAuthTokenFile, "kafka-sasl-oauth-token-file", envString("ARBITER_KAFKA_SASL_OAUTH_TOKEN_FILE", ""), "file holding the OAUTHBEARER token, read at each login (ARBITER_KAFKA_SASL_OAUTH_TOKEN_FILE)")
	fs.StringVar(&c.redis.Username, "redis-username", envString("ARBITER_REDIS_USERNAME", ""), "Redis ACL user (default: the URL's, else 'default') (ARBITER_REDIS_USERNAME)")
	c.redis.Password = os.Getenv("ARBITER_REDIS_PASSWORD")
	fs.StringVar(&c.redis.PasswordFile, "redis-password-file", envString("ARBITER_REDIS_PASSWORD_FILE", ""), "file holding the Redis password (ARBITER_REDIS_PASSWORD_FILE; or the password itself in ARBITER_REDIS_PASSWORD)")
	fs.StringVar(&c.redis.TLSCAFile, "redis-tls-ca-file", envString("ARBITER_REDIS_TLS_CA_FILE", ""), "PEM file of the CAs of Redis's certificate; implies TLS (ARBITER_REDIS_TLS_CA_FILE)")
	fs.StringVar(&c.redis.TLSCertFile, "redis-tls-cert-file", envString("ARBITER_REDIS_TLS_CERT_FILE", ""), "PEM client certificate for Redis (ARBITER_REDIS_TLS_CERT_FILE)")
	fs.StringVar(&c.redis.TLSKeyFile, "redis-tls-key-file", envString("ARBITER_REDIS_TLS_KEY_FILE", ""), "PEM client key for Redis (ARBITER_REDIS_TLS_KEY_FILE)")
}

func envBool(name string, fallback bool) bool {
	if v, err := strconv.ParseBool(os.Getenv(name)); err == nil {
		return v
	}
	return fallback
}

// kafkaOpts returns the options of every Kafka client: the seed brokers,
// the client ID, TLS and SASL.
func (c *commonFlags) kafkaOpts() ([]kgo.Opt, error) {
	opts, err := c.kafka.Opts()
	if err != nil {
		return nil, usagef("%v", err)
	}
	return append([]kgo.Opt{kgo.SeedBrokers(c.brokerList()...), kgo.ClientID("arbiter")}, opts...), nil
}

// securityOpts returns the client ID, TLS and SASL options, for the SDK's
// KafkaOptions fields (which take the brokers separately).
func (c *commonFlags) securityOpts() ([]kgo.Opt, error) {
	opts, err := c.kafka.Opts()
	if err != nil {
		return nil, usagef("%v", err)
	}
	return opts, nil
}

// kafkaUnreachable explains an error of a Kafka client: a refused login names
// the SASL mechanism, anything else says to check the brokers.
func (c *commonFlags) kafkaUnreachable(err error) error {
	if described := c.kafka.Describe(err); errors.Is(described, kafkaclient.ErrAuthentication) || errors.Is(described, kafkaclient.ErrTLSVerification) {
		return &unreachableError{err: errors.Wrapf(described, "kafka at %s", c.brokers)}
	}
	return &unreachableError{err: errors.Wrapf(err, "kafka at %s does not answer; check --brokers / ARBITER_BROKERS (and --kafka-tls and the SASL settings if its listener is secured)", c.brokers)}
}

func (c *commonFlags) brokerList() []string {
	var brokers []string
	for _, b := range strings.Split(c.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	return brokers
}

// parse parses a subcommand's flags, turning -h into errHelp and a bad flag
// into a usage error.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usagef("%v; run 'arbiter %s -h' for the flags", err, fs.Name())
	}
	return nil
}

func (c *commonFlags) logger(stderr io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.logLevel)
	if err != nil {
		return nil, usagef("--log-level %q: use debug, info, warn or error", c.logLevel)
	}
	encoderConfig := zap.NewProductionEncoderConfig()
	encoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder
	switch c.logFormat {
	case "json":
		encoder = zapcore.NewJSONEncoder(encoderConfig)
	case "console":
		encoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
		encoder = zapcore.NewConsoleEncoder(encoderConfig)
	default:
		return nil, usagef("--log-format %q: use json or console", c.logFormat)
	}
	return zap.New(zapcore.NewCore(encoder, zapcore.AddSync(stderr), level)), nil
}

// redisStore connects to Redis, checks it answers, and returns a store with
// opts (the key prefix comes from the flags).
func (c *commonFlags) redisStore(ctx context.Context, storeOpts versionstore.Options) (*versionstore.Store, func(), error) {
	if c.redisURL == "" {
		return nil, nil, usagef("no Redis: set --redis or ARBITER_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
	}
	redisConfig := c.redis
	redisConfig.URL = c.redisURL
	client, err := redisConfig.NewClient()
	if err != nil {
		return nil, nil, usagef("--redis: %v", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := client.Ping(pingCtx).Err(); err != nil {
		_ = client.Close()
		if message := err.Error(); strings.HasPrefix(message, "WRONGPASS") || strings.HasPrefix(message, "NOPERM") || strings.HasPrefix(message, "NOAUTH") {
			return nil, nil, &unreachableError{err: errors.Wrapf(err, "redis at %s refused the login; check the user and password (--redis-username, --redis-password-file / ARBITER_REDIS_PASSWORD) and the user's ACL", redisConfig.Addr())}
		}
		return nil, nil, &unreachableError{err: errors.Wrapf(err, "redis at %s does not answer; check --redis / ARBITER_REDIS_URL, the TLS settings, and that redis-server runs", redisConfig.Addr())}
	}
	storeOpts.KeyPrefix = c.keyPrefix
	store := versionstore.New(client, storeOpts)
	return store, func() { _ = client.Close() }, nil
}

// checkTopics checks Kafka answers and the topics exist.
func (c *commonFlags) checkTopics(ctx context.Context, topics ...string) error {
	brokers := c.brokerList()
	if len(brokers) == 0 {
		return usagef("no Kafka brokers: set --brokers or ARBITER_BROKERS (e.g. 127.0.0.1:9092)")
	}
	opts, err := c.kafkaOpts()
	if err != nil {
		return err
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return usagef("--brokers %q: %v", c.brokers, err)
	}
	defer client.Close()
	metaCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	details, err := kadm.NewClient(client).ListTopics(metaCtx, topics...)
	if err != nil {
		return c.kafkaUnreachable(err)
	}
	var missing []string
	for _, topic := range topics {
		if d, ok := details[topic]; !ok || d.Err != nil {
			missing = append(missing, topic)
		}
	}
	if len(missing) > 0 {
		return usagef("topic(s) %s do not exist; create them with 'arbiter topics create --brokers %s' (or your own tooling, key-partitioned)", strings.Join(missing, ", "), c.brokers)
	}
	return nil
}

func printf(w io.Writer, format string, args ...any) {
	_, _ = fmt.Fprintf(w, format, args...)
}
