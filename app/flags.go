package app

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/kafkaclient"
	"github.com/arbiter-cqrs/arbiter/redisclient"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// commonFlags are the connection, topic and logging flags every subcommand
// takes, each with an ARBITER_* environment variable.
type commonFlags struct {
	brokers        string
	redisURL       string
	redisMode      string
	commandsTopic  string
	eventsTopic    string
	conflictsTopic string
	keyPrefix      string
	logFormat      string
	logLevel       string
	kafka          kafkaclient.Config
	redis          redisclient.Config
}

// envAnnotation is the pflag annotation that names a flag's environment
// variable.
const envAnnotation = "arbiter_env"

// flagValue lists the types bind defines flags of.
type flagValue interface {
	string | int | int64 | uint64 | bool | float64 | time.Duration
}

// bind defines flag --name on fs with a default value and, when env is not
// empty, the environment variable env: a flag given on the command line wins
// over the variable, the variable over the default. The variable is parsed as
// strictly as the flag (applyEnv); an empty one counts as unset. Adding a
// flag is one call:
//
//	bind(fs, &f.sessionTimeout, "session-timeout", "ARBITER_SESSION_TIMEOUT", 10*time.Second, "consumer group session timeout")
func bind[T flagValue](fs *pflag.FlagSet, p *T, name, env string, value T, usage string) {
	if env != "" {
		usage += " (" + env + ")"
	}
	switch p := any(p).(type) {
	case *string:
		fs.StringVar(p, name, any(value).(string), usage)
	case *int:
		fs.IntVar(p, name, any(value).(int), usage)
	case *int64:
		fs.Int64Var(p, name, any(value).(int64), usage)
	case *uint64:
		fs.Uint64Var(p, name, any(value).(uint64), usage)
	case *bool:
		fs.BoolVar(p, name, any(value).(bool), usage)
	case *float64:
		fs.Float64Var(p, name, any(value).(float64), usage)
	case *time.Duration:
		fs.DurationVar(p, name, any(value).(time.Duration), usage)
	}
	if env != "" {
		_ = fs.SetAnnotation(name, envAnnotation, []string{env})
	}
}

// applyEnv sets every flag of cmd that was not given on the command line from
// its environment variable, if set. A value the flag would refuse is a usage
// error naming the variable: ARBITER_SESSION_TIMEOUT=10 does not quietly run
// with the default.
func (c *cli) applyEnv(cmd *cobra.Command) error {
	var problems []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		names := f.Annotations[envAnnotation]
		if f.Changed || len(names) == 0 {
			return
		}
		value, ok := c.lookupEnv(names[0])
		if !ok || value == "" {
			return
		}
		if err := f.Value.Set(value); err != nil {
			problems = append(problems, fmt.Sprintf("%s=%q is not a valid --%s (%s): %v", names[0], value, f.Name, f.Value.Type(), err))
		}
	})
	if len(problems) > 0 {
		return usagef("%s", strings.Join(problems, "; "))
	}
	return nil
}

func (c *commonFlags) register(fs *pflag.FlagSet) {
	bind(fs, &c.brokers, "brokers", "ARBITER_BROKERS", "", "Kafka seed brokers, comma-separated")
	bind(fs, &c.redisURL, "redis", "ARBITER_REDIS_URL", "", "Redis URL, redis://[user:password@]host:port/db; with --redis-mode cluster redis://host:port?addr=host2:port2&addr=…, with sentinel redis://sentinel:port?master_name=NAME&addr=sentinel2:port2")
	bind(fs, &c.redisMode, "redis-mode", "ARBITER_REDIS_MODE", string(redisclient.ModeStandalone), "how --redis is read: standalone (one server), cluster (a Redis Cluster's seed nodes) or sentinel (the sentinels of a master)")
	bind(fs, &c.commandsTopic, "commands-topic", "ARBITER_COMMANDS_TOPIC", events.DefaultCommandsTopic, "commands topic")
	bind(fs, &c.eventsTopic, "events-topic", "ARBITER_EVENTS_TOPIC", events.DefaultEventsTopic, "events topic")
	bind(fs, &c.conflictsTopic, "conflicts-topic", "ARBITER_CONFLICTS_TOPIC", events.DefaultConflictsTopic, "conflicts topic")
	bind(fs, &c.keyPrefix, "key-prefix", "ARBITER_KEY_PREFIX", "arbiter", "prefix of every Redis key")
	bind(fs, &c.logFormat, "log-format", "ARBITER_LOG_FORMAT", "console", "log format: json or console")
	bind(fs, &c.logLevel, "log-level", "ARBITER_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	c.registerSecurity(fs)
}

// registerSecurity registers the Kafka and Redis security flags.
func (c *commonFlags) registerSecurity(fs *pflag.FlagSet) {
	bind(fs, &c.kafka.ClientID, "kafka-client-id", "ARBITER_KAFKA_CLIENT_ID", "", "client ID of every Kafka client (default: arbiter-worker for the worker's, arbiter-producer for send's, arbiter for the others)")
	bind(fs, &c.kafka.TLS, "kafka-tls", "ARBITER_KAFKA_TLS", false, "connect to Kafka with TLS")
	bind(fs, &c.kafka.TLSCAFile, "kafka-tls-ca-file", "ARBITER_KAFKA_TLS_CA_FILE", "", "PEM file of the CAs of the brokers' certificates; implies --kafka-tls")
	bind(fs, &c.kafka.TLSCertFile, "kafka-tls-cert-file", "ARBITER_KAFKA_TLS_CERT_FILE", "", "PEM client certificate for Kafka mTLS")
	bind(fs, &c.kafka.TLSKeyFile, "kafka-tls-key-file", "ARBITER_KAFKA_TLS_KEY_FILE", "", "PEM client key for Kafka mTLS")
	bind(fs, &c.kafka.TLSServerName, "kafka-tls-server-name", "ARBITER_KAFKA_TLS_SERVER_NAME", "", "name the brokers' certificates are checked against (default: the host dialled)")
	bind(fs, &c.kafka.SASLMechanism, "kafka-sasl-mechanism", "ARBITER_KAFKA_SASL_MECHANISM", "", "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER")
	bind(fs, &c.kafka.SASLUsername, "kafka-sasl-username", "ARBITER_KAFKA_SASL_USERNAME", "", "SASL user of PLAIN and SCRAM")
	bind(fs, &c.kafka.SASLPasswordFile, "kafka-sasl-password-file", "ARBITER_KAFKA_SASL_PASSWORD_FILE", "", "file holding the SASL password, read at each login (or the password itself in ARBITER_KAFKA_SASL_PASSWORD)")
	bind(fs, &c.kafka.SASLOAuthTokenFile, "kafka-sasl-oauth-token-file", "ARBITER_KAFKA_SASL_OAUTH_TOKEN_FILE", "", "file holding the OAUTHBEARER token, read at each login")
	bind(fs, &c.redis.Username, "redis-username", "ARBITER_REDIS_USERNAME", "", "Redis ACL user (default: the URL's, else 'default')")
	bind(fs, &c.redis.PasswordFile, "redis-password-file", "ARBITER_REDIS_PASSWORD_FILE", "", "file holding the Redis password (or the password itself in ARBITER_REDIS_PASSWORD)")
	bind(fs, &c.redis.TLSCAFile, "redis-tls-ca-file", "ARBITER_REDIS_TLS_CA_FILE", "", "PEM file of the CAs of Redis's certificate; implies TLS")
	bind(fs, &c.redis.TLSCertFile, "redis-tls-cert-file", "ARBITER_REDIS_TLS_CERT_FILE", "", "PEM client certificate for Redis")
	bind(fs, &c.redis.TLSKeyFile, "redis-tls-key-file", "ARBITER_REDIS_TLS_KEY_FILE", "", "PEM client key for Redis")
	// The passwords themselves come from the environment only: a flag's
	// value shows in process listings. The flags exist, hidden, so that the
	// variables are read as strictly as every other.
	bind(fs, &c.kafka.SASLPassword, "kafka-sasl-password", "ARBITER_KAFKA_SASL_PASSWORD", "", "SASL password (use the environment variable or --kafka-sasl-password-file)")
	bind(fs, &c.redis.Password, "redis-password", "ARBITER_REDIS_PASSWORD", "", "Redis password (use the environment variable or --redis-password-file)")
	_ = fs.MarkHidden("kafka-sasl-password")
	_ = fs.MarkHidden("redis-password")
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

// redisConfig returns the Redis client settings of the flags: the URL, the
// mode, TLS and the ACL user.
func (c *commonFlags) redisConfig() redisclient.Config {
	redisConfig := c.redis
	redisConfig.URL = c.redisURL
	redisConfig.Mode = redisclient.Mode(c.redisMode)
	return redisConfig
}

// standaloneOnly refuses a --redis-mode other than standalone for what
// only has one Redis server (the embedded one, or one a command starts).
func (c *commonFlags) standaloneOnly(what string) error {
	if mode := redisclient.Mode(c.redisMode); mode != "" && mode != redisclient.ModeStandalone {
		return usagef("--redis-mode %s: %s has one Redis server of its own; use --redis-mode standalone (or give --redis)", c.redisMode, what)
	}
	return nil
}

// checkRedisConfig reports a Redis setting that cannot work (a URL of
// another mode, a missing TLS file) as a usage error, before anything is
// dialled.
func (c *commonFlags) checkRedisConfig() error {
	if err := c.redisConfig().Validate(); err != nil {
		return usagef("%v", err)
	}
	return nil
}

// redisStore connects to Redis, checks it answers, and returns a store with
// opts (the key prefix comes from the flags).
func (c *commonFlags) redisStore(ctx context.Context, storeOpts versionstore.Options) (*versionstore.Store, func(), error) {
	redisConfig := c.redisConfig()
	if c.redisURL == "" {
		return nil, nil, usagef("no Redis: set --redis or ARBITER_REDIS_URL (e.g. redis://127.0.0.1:6379/0; see --redis-mode for a Redis Cluster or Sentinels)")
	}
	client, err := redisConfig.NewUniversalClient()
	if err != nil {
		return nil, nil, usagef("%v", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := client.Ping(pingCtx).Err(); err != nil {
		_ = client.Close()
		if message := err.Error(); strings.HasPrefix(message, "WRONGPASS") || strings.HasPrefix(message, "NOPERM") || strings.HasPrefix(message, "NOAUTH") {
			return nil, nil, &unreachableError{err: errors.Wrapf(err, "redis at %s refused the login; check the user and password (--redis-username, --redis-password-file / ARBITER_REDIS_PASSWORD) and the user's ACL", redisConfig.Addr())}
		}
		return nil, nil, &unreachableError{err: errors.Wrapf(err, "redis at %s does not answer; check --redis / ARBITER_REDIS_URL, --redis-mode / ARBITER_REDIS_MODE, the TLS settings, and that redis-server runs", redisConfig.Addr())}
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
