// Package kafkaclient holds the connection settings every Arbiter Kafka
// client shares — TLS, SASL and the client ID — and turns them into franz-go
// options, so the worker, the CLI tools and the Go SDK (commands.Producer,
// events.Consumer, processor.Config) reach a secured cluster the same way:
//
//	opts, err := kafkaclient.Config{TLS: true, SASLMechanism: kafkaclient.ScramSHA512,
//		SASLUsername: "arbiter", SASLPasswordFile: "/run/secrets/kafka-password"}.Opts()
//	producer, err := commands.NewProducer(commands.ProducerConfig{Brokers: brokers, KafkaOptions: opts})
//
// Secrets read from files (the SASL password, the OAuth token) are read again
// at every authentication, so a rotated file is picked up when the broker
// asks the client to log in again (connections.max.reauth.ms) or a new
// connection is opened. No secret is ever part of an error message.
package kafkaclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// The SASL mechanisms Config.SASLMechanism accepts, spelled as Kafka does.
const (
	Plain       = "PLAIN"
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
	OAuthBearer = "OAUTHBEARER"
)

// Mechanisms lists the SASL mechanisms in the order the docs name them.
var Mechanisms = []string{Plain, ScramSHA256, ScramSHA512, OAuthBearer}

// Config holds the security and identity settings of a Kafka client. The zero
// value is a plaintext client without SASL.
type Config struct {
	// ClientID names the client to the brokers (their logs, quotas and
	// request metrics). default: the client's own: "arbiter-worker" for
	// processor.Worker, "arbiter-producer" for commands.Producer,
	// "arbiter-consumer" for events.Consumer
	ClientID string

	// TLS turns on TLS. Setting any TLS file or TLSServerName implies it.
	// default: false
	TLS bool
	// TLSCAFile is a PEM file of the certificate authorities that sign the
	// brokers' certificates. default: the system's roots
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are the PEM client certificate and key for
	// brokers that require TLS client authentication (mTLS). Both or
	// neither. default: no client certificate
	TLSCertFile, TLSKeyFile string
	// TLSServerName is the name the brokers' certificates are checked
	// against. default: the host of the address dialled
	TLSServerName string

	// SASLMechanism is one of Mechanisms, or empty for no SASL. Matched
	// without regard to case. default: "" (no SASL)
	SASLMechanism string
	// SASLUsername is the user of PLAIN and SCRAM.
	SASLUsername string
	// SASLPassword is the password of PLAIN and SCRAM. Prefer
	// SASLPasswordFile, which keeps it out of the environment and is read
	// again at each login.
	SASLPassword string
	// SASLPasswordFile is a file holding the password (one trailing newline
	// is ignored). Takes precedence over SASLPassword.
	SASLPasswordFile string
	// SASLOAuthTokenFile is a file holding the OAUTHBEARER token, read again
	// at every login: keep it fresh with a sidecar or a projected volume
	// (Kubernetes service account token). Required for OAUTHBEARER.
	SASLOAuthTokenFile string
}

// mechanism returns the canonical spelling of c.SASLMechanism.
func (c Config) mechanism() string {
	return strings.ToUpper(strings.TrimSpace(c.SASLMechanism))
}

// tlsOn reports whether TLS is on, asked for or implied.
func (c Config) tlsOn() bool {
	return c.TLS || c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSKeyFile != "" || c.TLSServerName != ""
}

// Validate reports every problem of the configuration at once. It checks
// that the named files exist but does not read the secrets in them.
func (c Config) Validate() error {
	var problems []error
	switch c.mechanism() {
	case "":
		if c.SASLUsername != "" || c.SASLPassword != "" || c.SASLPasswordFile != "" || c.SASLOAuthTokenFile != "" {
			problems = append(problems, errors.Newf("SASL credentials are set but no SASL mechanism: set the mechanism (--kafka-sasl-mechanism / ARBITER_KAFKA_SASL_MECHANISM) to one of %s", strings.Join(Mechanisms, ", ")))
		}
	case Plain, ScramSHA256, ScramSHA512:
		if c.SASLUsername == "" {
			problems = append(problems, errors.Newf("SASL %s needs a user name (--kafka-sasl-username / ARBITER_KAFKA_SASL_USERNAME)", c.mechanism()))
		}
		if c.SASLPassword == "" && c.SASLPasswordFile == "" {
			problems = append(problems, errors.Newf("SASL %s needs a password (--kafka-sasl-password-file / ARBITER_KAFKA_SASL_PASSWORD_FILE, or ARBITER_KAFKA_SASL_PASSWORD)", c.mechanism()))
		}
	case OAuthBearer:
		if c.SASLOAuthTokenFile == "" {
			problems = append(problems, errors.New("SASL OAUTHBEARER needs a token file (--kafka-sasl-oauth-token-file / ARBITER_KAFKA_SASL_OAUTH_TOKEN_FILE)"))
		}
	default:
		problems = append(problems, errors.Newf("SASL mechanism %q is not supported; use one of %s", c.SASLMechanism, strings.Join(Mechanisms, ", ")))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		problems = append(problems, errors.New("a TLS client certificate needs both the certificate and the key file (--kafka-tls-cert-file, --kafka-tls-key-file)"))
	}
	for _, file := range []struct{ what, path string }{
		{"TLS CA file", c.TLSCAFile},
		{"TLS certificate file", c.TLSCertFile},
		{"TLS key file", c.TLSKeyFile},
		{"SASL password file", c.SASLPasswordFile},
		{"SASL OAuth token file", c.SASLOAuthTokenFile},
	} {
		if file.path == "" {
			continue
		}
		if _, err := os.Stat(file.path); err != nil {
			problems = append(problems, errors.Wrapf(err, "Kafka %s", file.what))
		}
	}
	return errors.Join(problems...)
}

// Opts returns the franz-go options for the configuration: the client ID,
// the TLS dialer and the SASL mechanism, each when configured. Add them after a
// client's own options (the SDK's KafkaOptions fields take them as they are).
func (c Config) Opts() ([]kgo.Opt, error) {
	if err := c.Validate(); err != nil {
		return nil, errors.Wrap(err, "kafka client configuration")
	}
	var opts []kgo.Opt
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	if c.tlsOn() {
		tlsConfig, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tlsConfig))
	}
	if mechanism := c.saslMechanism(); mechanism != nil {
		opts = append(opts, kgo.SASL(mechanism))
	}
	return opts, nil
}

// tlsConfig builds the TLS client configuration.
func (c Config) tlsConfig() (*tls.Config, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName}
	if c.TLSCAFile != "" {
		pool, err := CertPool(c.TLSCAFile)
		if err != nil {
			return nil, errors.Wrap(err, "kafka TLS")
		}
		tlsConfig.RootCAs = pool
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, errors.Wrapf(err, "kafka TLS: load the client certificate %s and key %s", c.TLSCertFile, c.TLSKeyFile)
		}
		tlsConfig.Certificates = []tls.Certificate{cert}
	}
	return tlsConfig, nil
}

// CertPool reads a PEM file of certificate authorities.
func CertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Wrap(err, "read the CA file")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.Newf("the CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// saslMechanism returns the mechanism, whose callback reads the secret at
// each login, or nil without SASL.
func (c Config) saslMechanism() sasl.Mechanism {
	switch c.mechanism() {
	case Plain:
		return plain.Plain(func(context.Context) (plain.Auth, error) {
			password, err := c.password()
			return plain.Auth{User: c.SASLUsername, Pass: password}, err
		})
	case ScramSHA256, ScramSHA512:
		auth := func(context.Context) (scram.Auth, error) {
			password, err := c.password()
			return scram.Auth{User: c.SASLUsername, Pass: password}, err
		}
		if c.mechanism() == ScramSHA256 {
			return scram.Sha256(auth)
		}
		return scram.Sha512(auth)
	case OAuthBearer:
		return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
			token, err := readSecret(c.SASLOAuthTokenFile, "SASL OAuth token file")
			return oauth.Auth{Token: token}, err
		})
	}
	return nil
}

// password returns the SASL password, from its file when one is set.
func (c Config) password() (string, error) {
	if c.SASLPasswordFile != "" {
		return readSecret(c.SASLPasswordFile, "SASL password file")
	}
	return c.SASLPassword, nil
}

// readSecret reads a secret from a file; the error names the file, never
// its content.
func readSecret(path, what string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", errors.Wrapf(err, "read the Kafka %s", what)
	}
	secret := strings.TrimRight(string(raw), "\r\n")
	if secret == "" {
		return "", errors.Newf("the Kafka %s %s is empty", what, path)
	}
	return secret, nil
}

// ErrAuthentication marks an error of a Kafka client whose SASL login the
// broker refused; errors.Is finds it in the errors Describe returns.
var ErrAuthentication = errors.New("kafka refused the SASL login")

// ErrTLSVerification marks an error of a Kafka client that could not verify
// the brokers' certificate; errors.Is finds it in the errors Describe
// returns.
var ErrTLSVerification = errors.New("kafka TLS certificate not verified")

// Describe explains a client error for people: a refused SASL login names
// the mechanism and user (never the password) and wraps ErrAuthentication;
// a certificate that did not verify wraps ErrTLSVerification; other errors
// are returned as they are.
func (c Config) Describe(err error) error {
	if err == nil {
		return nil
	}
	var verification *tls.CertificateVerificationError
	if errors.As(err, &verification) {
		return errors.Mark(errors.Wrap(err, "the brokers' TLS certificate did not verify; check the CA file (--kafka-tls-ca-file) and the server name (--kafka-tls-server-name)"), ErrTLSVerification)
	}
	if errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.IllegalSaslState) || errors.Is(err, kerr.UnsupportedSaslMechanism) {
		who := ""
		if c.SASLUsername != "" {
			who = " of user " + c.SASLUsername
		}
		return errors.Mark(errors.Wrapf(err, "the broker refused the SASL %s login%s; check the user and its password (--kafka-sasl-username, --kafka-sasl-password-file) and that the broker enables %s",
			c.mechanism(), who, c.mechanism()), ErrAuthentication)
	}
	return err
}
