// Package redisclient holds the connection settings every Arbiter Redis
// client shares — the URL, TLS and the ACL credentials — and turns them into
// go-redis options, so the worker, the CLI tools and tests reach a secured
// Redis the same way:
//
//	client, err := redisclient.Config{URL: "rediss://redis:6380/0", Username: "arbiter",
//		PasswordFile: "/run/secrets/redis-password", TLSCAFile: "/etc/arbiter/ca.pem"}.NewClient()
//
// Mode picks how the URL is read: one server (ModeStandalone, the default), a
// Redis Cluster (ModeCluster, go-redis's cluster URL with one addr= per extra
// seed node) or a master found through Sentinels (ModeSentinel, go-redis's
// failover URL with master_name=). NewUniversalClient builds the client of
// any mode; the TLS and ACL settings apply to every one of them.
//
// No password ever appears in an error message: a URL is only ever shown
// through RedactURL.
package redisclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
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
	// up in process listings and shell histories. Its form depends on Mode.
	URL string
	// Mode is how the URL is read and which client is built.
	// default: ModeStandalone
	Mode Mode
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
	if err := c.Mode.validate(); err != nil {
		problems = append(problems, err)
	} else if c.URL == "" {
		problems = append(problems, errors.New("no Redis URL: set --redis or ARBITER_REDIS_URL (e.g. "+c.Mode.example()+")"))
	} else if err := c.parseModeURL(); err != nil {
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

// parseURL parses the URL as one server's; its error shows the URL without
// its password.
func (c Config) parseURL() (*redis.Options, error) {
	options, err := redis.ParseURL(c.URL)
	if err != nil {
		return nil, c.urlError(err, "a redis:// or rediss:// URL")
	}
	return options, nil
}

// urlError wraps an error of go-redis's URL parsers, which may quote the
// URL, password included, or a password= parameter's value.
func (c Config) urlError(err error, want string) error {
	message := strings.ReplaceAll(err.Error(), c.URL, RedactURL(c.URL))
	for _, password := range urlPasswords(c.URL) {
		message = strings.ReplaceAll(message, password, redacted)
	}
	return errors.Newf("the Redis URL %s is not %s: %s", RedactURL(c.URL), want, message)
}

// Options returns the go-redis options of a single-node client.
func (c Config) Options() (*redis.Options, error) {
	if c.Mode == ModeCluster || c.Mode == ModeSentinel {
		return nil, errors.Newf("redis client configuration: Options builds a single-node client, not one of mode %s: use NewUniversalClient", c.Mode)
	}
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

// Addr returns where the client connects, for messages: the URL's
// host:port, a cluster's seed nodes, or a Sentinel master's name and its
// sentinels.
func (c Config) Addr() string {
	switch c.Mode {
	case ModeCluster:
		if options, err := redis.ParseClusterURL(c.URL); err == nil {
			return "cluster " + strings.Join(options.Addrs, ",")
		}
	case ModeSentinel:
		if options, err := redis.ParseFailoverURL(c.URL); err == nil {
			return "master " + options.MasterName + " of sentinels " + strings.Join(options.SentinelAddrs, ",")
		}
	default:
		if options, err := redis.ParseURL(c.URL); err == nil {
			return options.Addr
		}
	}
	return RedactURL(c.URL)
}

const redacted = "xxxxx"

// RedactURL returns the URL with its passwords replaced by "xxxxx" — the
// userinfo's and a password= parameter's (a Sentinel URL's master
// password) — also when the URL does not parse; the rest is left as it is.
func RedactURL(raw string) string {
	if start, password, ok := userinfo(raw); ok && password != "" {
		// start locates the userinfo; the password follows its first colon.
		colon := start + strings.Index(raw[start:], ":")
		raw = raw[:colon+1] + redacted + raw[colon+1+len(password):]
	}
	query := strings.Index(raw, "?")
	if query < 0 {
		return raw
	}
	params := strings.Split(raw[query+1:], "&")
	for i, param := range params {
		if name, _, ok := strings.Cut(param, "="); ok && strings.EqualFold(name, "password") {
			params[i] = name + "=" + redacted
		}
	}
	return raw[:query+1] + strings.Join(params, "&")
}

// urlPasswords returns the passwords a URL-like string holds, raw and
// unescaped: the userinfo's and the password= parameters'.
func urlPasswords(raw string) []string {
	var passwords []string
	if _, password, ok := userinfo(raw); ok && password != "" {
		passwords = append(passwords, password)
	}
	if query := strings.Index(raw, "?"); query >= 0 {
		for _, param := range strings.Split(raw[query+1:], "&") {
			if name, value, ok := strings.Cut(param, "="); ok && strings.EqualFold(name, "password") && value != "" {
				passwords = append(passwords, value)
			}
		}
	}
	for _, password := range passwords {
		if unescaped, err := url.QueryUnescape(password); err == nil && unescaped != password {
			passwords = append(passwords, unescaped)
		}
	}
	return passwords
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
	if end := strings.IndexAny(rest, "/?"); end >= 0 {
		rest = rest[:end]
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
