package redisclient

import (
	"context"
	"crypto/tls"
	"net/url"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// Mode is how a Config's URL is read and which client NewUniversalClient
// builds.
type Mode string

// The modes. Each has its URL form (go-redis's):
//
//	standalone  redis://[user:password@]host:port/db
//	cluster     redis://[user:password@]host:port?addr=host2:port2&addr=host3:port3
//	sentinel    redis://[sentinel-user:sentinel-password@]sentinel:port?master_name=NAME&addr=sentinel2:port2
//
// A cluster URL lists seed nodes (one is enough; the client learns the
// others from CLUSTER SLOTS) and has database 0 only. A Sentinel URL lists
// sentinels: its userinfo is the sentinels' login, and the master's and
// replicas' login is the Config's Username and Password (or PasswordFile),
// else the URL's username= and password= parameters.
const (
	ModeStandalone Mode = "standalone"
	ModeCluster    Mode = "cluster"
	ModeSentinel   Mode = "sentinel"
)

// validate refuses a mode other than the three (the empty one is
// standalone).
func (m Mode) validate() error {
	switch m {
	case "", ModeStandalone, ModeCluster, ModeSentinel:
		return nil
	}
	return errors.Newf("unknown Redis mode %q: use standalone, cluster or sentinel (--redis-mode, ARBITER_REDIS_MODE)", string(m))
}

// example is a URL of the mode, for messages.
func (m Mode) example() string {
	switch m {
	case ModeCluster:
		return "redis://10.0.0.1:6379?addr=10.0.0.2:6379&addr=10.0.0.3:6379"
	case ModeSentinel:
		return "redis://10.0.0.1:26379?master_name=mymaster&addr=10.0.0.2:26379"
	}
	return "redis://127.0.0.1:6379/0"
}

// parseModeURL checks the URL has the form of the mode, and refuses the
// forms of the other modes with what to do instead: a cluster URL read as
// one server's would quietly talk to its first node only.
func (c Config) parseModeURL() error {
	parsed, err := url.Parse(c.URL)
	if err != nil {
		return c.urlError(err, "a URL")
	}
	query := parsed.Query()
	switch c.Mode {
	case ModeCluster:
		if query.Has("master_name") {
			return errors.Newf("the Redis URL %s names a Sentinel master (master_name=): use --redis-mode sentinel, or list cluster nodes with addr=", RedactURL(c.URL))
		}
		if db := strings.Trim(parsed.Path, "/"); db != "" && db != "0" {
			return errors.Newf("the Redis URL %s selects database %s: a Redis Cluster has database 0 only", RedactURL(c.URL), db)
		}
		if _, err := redis.ParseClusterURL(c.URL); err != nil {
			return c.urlError(err, "a Redis Cluster URL (e.g. "+ModeCluster.example()+")")
		}
	case ModeSentinel:
		options, err := redis.ParseFailoverURL(c.URL)
		if err != nil {
			return c.urlError(err, "a Sentinel URL (e.g. "+ModeSentinel.example()+")")
		}
		if options.MasterName == "" {
			return errors.Newf("the Redis URL %s names no master: a Sentinel URL needs master_name= (e.g. %s)", RedactURL(c.URL), ModeSentinel.example())
		}
	default:
		switch {
		case query.Has("master_name"):
			return errors.Newf("the Redis URL %s names a Sentinel master (master_name=): use --redis-mode sentinel (ARBITER_REDIS_MODE=sentinel)", RedactURL(c.URL))
		case query.Has("addr"):
			return errors.Newf("the Redis URL %s lists more nodes (addr=): use --redis-mode cluster for a Redis Cluster, or sentinel for Sentinels (ARBITER_REDIS_MODE)", RedactURL(c.URL))
		}
		if _, err := c.parseURL(); err != nil {
			return err
		}
	}
	return nil
}

// ClusterOptions returns the go-redis options of a Redis Cluster client
// (Mode must be ModeCluster).
func (c Config) ClusterOptions() (*redis.ClusterOptions, error) {
	if c.Mode != ModeCluster {
		return nil, errors.Newf("redis client configuration: ClusterOptions of mode %q", string(c.Mode))
	}
	if err := c.Validate(); err != nil {
		return nil, errors.Wrap(err, "redis client configuration")
	}
	options, err := redis.ParseClusterURL(c.URL)
	if err != nil {
		return nil, c.urlError(err, "a Redis Cluster URL")
	}
	if options.TLSConfig, err = c.nodesTLSConfig(options.TLSConfig); err != nil {
		return nil, err
	}
	options.Username, options.Password, options.CredentialsProviderContext = c.nodeCredentials(options.Username, options.Password)
	options.ClusterStateReloadInterval = ClusterStateReloadInterval
	return options, nil
}

// ClusterStateReloadInterval is how often a Redis Cluster client reloads
// the slot map. go-redis reloads it at once on a MOVED redirection (a
// graceful failover, a resharding), but a master that died sends none: its
// clients keep dialling it until the periodic reload (go-redis's default:
// 60 s) finds the promoted replica. One CLUSTER SLOTS per client every few
// seconds costs nothing next to a worker that stalls for a minute.
const ClusterStateReloadInterval = 3 * time.Second

// FailoverOptions returns the go-redis options of a client of the master
// the sentinels name (Mode must be ModeSentinel). Unlike a cluster client
// (ClusterStateReloadInterval) it needs no setting to find a new master
// quickly: go-redis asks a sentinel for the master's address on every new
// connection, and on the sentinels' +switch-master message closes the
// connections to any other address.
func (c Config) FailoverOptions() (*redis.FailoverOptions, error) {
	if c.Mode != ModeSentinel {
		return nil, errors.Newf("redis client configuration: FailoverOptions of mode %q", string(c.Mode))
	}
	if err := c.Validate(); err != nil {
		return nil, errors.Wrap(err, "redis client configuration")
	}
	options, err := redis.ParseFailoverURL(c.URL)
	if err != nil {
		return nil, c.urlError(err, "a Sentinel URL")
	}
	if options.TLSConfig, err = c.nodesTLSConfig(options.TLSConfig); err != nil {
		return nil, err
	}
	options.Username, options.Password, options.CredentialsProviderContext = c.nodeCredentials(options.Username, options.Password)
	return options, nil
}

// nodeCredentials returns the user, the password and the password-file
// provider of a client of several nodes, from the URL's user and password
// and the configured ones; with a password file the provider gives the
// password, read at each connection, and no fixed password is kept.
func (c Config) nodeCredentials(urlUser, urlPassword string) (string, string, func(context.Context) (string, string, error)) {
	username, password := c.Credentials(urlUser, urlPassword)
	provider := c.passwordFileProvider(username)
	if provider != nil {
		password = ""
	}
	return username, password, provider
}

// nodesTLSConfig is TLSConfig for a client of several nodes: without
// TLSServerName, each node's certificate is checked against the host it is
// dialled at, not the first node's (which go-redis's URL parsers set).
func (c Config) nodesTLSConfig(base *tls.Config) (*tls.Config, error) {
	tlsConfig, err := c.TLSConfig(base)
	if err != nil || tlsConfig == nil {
		return tlsConfig, err
	}
	if c.TLSServerName == "" {
		tlsConfig.ServerName = ""
	}
	if tlsConfig.MinVersion == 0 {
		tlsConfig.MinVersion = tls.VersionTLS12
	}
	return tlsConfig, nil
}

// passwordFileProvider returns the credentials provider that reads
// PasswordFile for every new connection, or nil without one.
func (c Config) passwordFileProvider(username string) func(context.Context) (string, string, error) {
	if c.PasswordFile == "" {
		return nil
	}
	return func(context.Context) (string, string, error) {
		password, err := readSecret(c.PasswordFile)
		return username, password, err
	}
}

// NewUniversalClient returns the client of the Config's mode: a
// *redis.Client for one server or a Sentinel master (which follows
// failovers), a *redis.ClusterClient for a Redis Cluster. The caller closes
// it.
func (c Config) NewUniversalClient() (redis.UniversalClient, error) {
	switch c.Mode {
	case ModeCluster:
		options, err := c.ClusterOptions()
		if err != nil {
			return nil, err
		}
		return redis.NewClusterClient(options), nil
	case ModeSentinel:
		options, err := c.FailoverOptions()
		if err != nil {
			return nil, err
		}
		return redis.NewFailoverClient(options), nil
	}
	return c.NewClient()
}
