// Package redisclient holds the connection settings every Arbiter Redis
// client shares — the URL, TLS and the ACL credentials — and turns them into
// go-redis options, so the worker, the CLI tools and tests reach a secured
// Redis the same way:
//
//	client, err := redisclient.Config{URL: "rediss://redis:6380/0", Username: "arbiter",
//		PasswordFile: "/run/secrets/redis-password", TLSCAFile: "/etc/arbiter/ca.pem"}.NewClient()
//
// The connection mode is a separate step from the security settings: Options
// builds the single-node options, and TLSConfig and Credentials are what a
// Cluster or Sentinel mode reuses for its own options.
//
// No password ever appears in an error message: a URL is only ever shown
// through RedactURL.
package redisclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// Config holds the settings of a Redis client. URL is required; every other
// field is optional and overrides what the URL says.
type Config struct {
	// URL is redis://[user:password@]host:port/db, or rediss:// for TLS.
	// Prefer Password or PasswordFile to a password in the URL: URLs end
	// up in process listings and shell histories.
	URL string
	// Username is the ACL user. default: the URL's user, else "default"
	Username string
	// Password is the user's password. default: the URL's password
	Password string
	// PasswordFile is a file holding the password (one trailing newline is
	// ignored), read again for every new connection, so a rotated secret
	// is picked up without a restart. Takes precedence over Password.
	PasswordFile string
	// TLSCAFile is a PEM file of the certificate authorities that sign the
	// server's certificate; setting it (or a client certificate) turns TLS
	// on even for a redis:// URL. default: the system's roots
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are the PEM client certificate and key,
	// for a server with tls-auth-clients on. Both or neither.
	TLSCertFile, TLSKeyFile string
	// TLSServerName is the name the server's certificate is checked
	// against. default: the URL's host
	TLSServerName string
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var problems []error
	if c.URL == "" {
		problems = append(problems, errors.New("no Redis URL: set --redis or ARBITER_REDIS_URL (e.g. redis://127.0.0.1:6379/0)"))
	} else if _, err := c.parseURL(); err != nil {
		problems = append(problems, err)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		problems = append(problems, errors.New("a Redis TLS client certificate needs both the certificate and the key file (--redis-tls-cert-file, --redis-tls-key-file)"))
	}
	for _, file := range []struct{ what, path string }{
		{"TLS CA file", c.TLSCAFile},
		{"TLS certificate file", c.TLSCertFile},
		{"TLS key file", c.TLSKeyFile},
		{"password file", c.PasswordFile},
	} {
		if file.path == "" {
			continue
		}
		if _, err := os.Stat(file.path); err != nil {
			problems = append(problems, errors.Wrapf(err, "Redis %s", file.what))
		}
	}
	return errors.Join(problems...)
}

// parseURL parses the URL; its error shows the URL without its password.
func (c Config) parseURL() (*redis.Options, error) {
	options, err := redis.ParseURL(c.URL)
	if err != nil {
		// url.Parse's error quotes the whole URL, password included.
		message := strings.ReplaceAll(err.Error(), c.URL, RedactURL(c.URL))
		if _, password, ok := userinfo(c.URL); ok && password != "" {
			message = strings.ReplaceAll(message, password, redacted)
		}
		return nil, errors.Newf("the Redis URL %s is not a redis:// or rediss:// URL: %s", RedactURL(c.URL), message)
	}
	return options, nil
}

// Options returns the go-redis options of a single-node client.
func (c Config) Options() (*redis.Options, error) {
	if err := c.Validate(); err != nil {
		return nil, errors.Wrap(err, "redis client configuration")
	}
	options, err := c.parseURL()
	if err != nil {
		return nil, err
	}
	tlsConfig, err := c.TLSConfig(options.TLSConfig)
	if err != nil {
		return nil, err
	}
	options.TLSConfig = tlsConfig
	if tlsConfig != nil && tlsConfig.ServerName == "" {
		options.TLSConfig.ServerName = hostOf(options.Addr)
	}
	username, password := c.Credentials(options.Username, options.Password)
	options.Username, options.Password = username, password
	if c.PasswordFile != "" {
		options.Password = ""
		options.CredentialsProviderContext = func(context.Context) (string, string, error) {
			password, err := readSecret(c.PasswordFile)
			return username, password, err
		}
	}
	return options, nil
}

// NewClient returns a single-node client; the caller closes it.
func (c Config) NewClient() (*redis.Client, error) {
	options, err := c.Options()
	if err != nil {
		return nil, err
	}
	return redis.NewClient(options), nil
}

// TLSConfig returns the TLS configuration for the CA and client certificate
// files, starting from base (the URL's, for rediss://), or nil when neither
// the URL nor the files ask for TLS.
func (c Config) TLSConfig(base *tls.Config) (*tls.Config, error) {
	if base == nil && c.TLSCAFile == "" && c.TLSCertFile == "" && c.TLSServerName == "" {
		return nil, nil
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		tlsConfig = base.Clone()
	}
	if c.TLSServerName != "" {
		tlsConfig.ServerName = c.TLSServerName
	}
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, errors.Wrap(err, "redis TLS: read the CA file")
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.Newf("redis TLS: the CA file %s holds no PEM certificate", c.TLSCAFile)
		}
		tlsConfig.RootCAs = pool
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, errors.Wrapf(err, "redis TLS: load the client certificate %s and key %s", c.TLSCertFile, c.TLSKeyFile)
		}
		tlsConfig.Certificates = []tls.Certificate{cert}
	}
	return tlsConfig, nil
}

// Credentials returns the user and the password (not the one of
// PasswordFile, which is read per connection) given those of the URL.
func (c Config) Credentials(urlUsername, urlPassword string) (username, password string) {
	username, password = urlUsername, urlPassword
	if c.Username != "" {
		username = c.Username
	}
	if c.Password != "" {
		password = c.Password
	}
	return username, password
}

// Addr returns the URL's host:port, for messages.
func (c Config) Addr() string {
	if options, err := redis.ParseURL(c.URL); err == nil {
		return options.Addr
	}
	return RedactURL(c.URL)
}

const redacted = "xxxxx"

// RedactURL returns the URL with its password replaced by "xxxxx", also
// when the URL does not parse; the rest is left as it is.
func RedactURL(raw string) string {
	start, password, ok := userinfo(raw)
	if !ok || password == "" {
		return raw
	}
	// start locates the userinfo; the password follows its first colon.
	colon := start + strings.Index(raw[start:], ":")
	return raw[:colon+1] + redacted + raw[colon+1+len(password):]
}

// userinfo finds the userinfo of a URL-like string without parsing it: the
// text between "://" and the last "@" before the path.
func userinfo(raw string) (start int, password string, ok bool) {
	scheme := strings.Index(raw, "://")
	if scheme < 0 {
		return 0, "", false
	}
	start = scheme + 3
	rest := raw[start:]
	if slash := strings.Index(rest, "/"); slash >= 0 {
		rest = rest[:slash]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return 0, "", false
	}
	_, password, _ = strings.Cut(rest[:at], ":")
	return start, password, true
}

func hostOf(addr string) string {
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}

// readSecret reads a password from a file; the error names the file, never
// its content.
func readSecret(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", errors.Wrap(err, "read the Redis password file")
	}
	secret := strings.TrimRight(string(raw), "\r\n")
	if secret == "" {
		return "", errors.Newf("the Redis password file %s is empty", path)
	}
	return secret, nil
}
