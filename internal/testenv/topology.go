package testenv

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// Environment variables of the Redis topologies beyond one server, written
// by scripts/redis-topology.sh to .stack/env.redis-cluster and
// .stack/env.redis-sentinel.
const (
	// EnvRedisClusterURL holds a go-redis cluster URL of the test Redis
	// Cluster: redis://host:port?addr=host:port&addr=…
	EnvRedisClusterURL = "ARBITER_TEST_REDIS_CLUSTER_URL"
	// EnvRedisSentinelURL holds a go-redis failover URL of the test
	// Sentinel set-up: redis://sentinel:port?master_name=…&addr=sentinel:port
	EnvRedisSentinelURL = "ARBITER_TEST_REDIS_SENTINEL_URL"
)

// RedisCluster returns a client of the test Redis Cluster (3 masters with a
// replica each, started by scripts/redis-topology.sh cluster up), closed when
// the test ends. Like Redis, a missing or unreachable cluster fails the test
// under CI=true and skips it otherwise. Tests share the cluster: keep keys
// apart with Name.
func RedisCluster(t testing.TB) *redis.ClusterClient {
	t.Helper()
	url := strings.TrimSpace(os.Getenv(EnvRedisClusterURL))
	if url == "" {
		unavailable(t, "%s is not set: no Redis Cluster to test against (scripts/redis-topology.sh cluster up)", EnvRedisClusterURL)
	}
	options, err := redis.ParseClusterURL(url)
	if err != nil {
		t.Fatalf("%s=%q is not a Redis Cluster URL: %v", EnvRedisClusterURL, url, err)
	}
	client := redis.NewClusterClient(options)
	t.Cleanup(func() { _ = client.Close() })
	err = probeOnce("redis-cluster "+url, func(ctx context.Context) error {
		info, err := client.ClusterInfo(ctx).Result()
		if err != nil {
			return errors.Wrap(err, "CLUSTER INFO")
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return errors.Newf("cluster state is not ok: %s", info)
		}
		return nil
	})
	if err != nil {
		unavailable(t, "the Redis Cluster at %s=%s is unreachable: %v", EnvRedisClusterURL, url, err)
	}
	return client
}

// RedisSentinel returns a failover client of the test Sentinel set-up (one
// master, one replica, three sentinels), closed when the test ends; missing
// or unreachable, it fails the test under CI=true and skips it otherwise.
func RedisSentinel(t testing.TB) *redis.Client {
	t.Helper()
	url := strings.TrimSpace(os.Getenv(EnvRedisSentinelURL))
	if url == "" {
		unavailable(t, "%s is not set: no Redis Sentinel set-up to test against (scripts/redis-topology.sh sentinel up)", EnvRedisSentinelURL)
	}
	options, err := redis.ParseFailoverURL(url)
	if err != nil {
		t.Fatalf("%s=%q is not a Redis failover URL: %v", EnvRedisSentinelURL, url, err)
	}
	client := redis.NewFailoverClient(options)
	t.Cleanup(func() { _ = client.Close() })
	err = probeOnce("redis-sentinel "+url, func(ctx context.Context) error {
		return errors.Wrap(client.Ping(ctx).Err(), "PING the master through the sentinels")
	})
	if err != nil {
		unavailable(t, "the Redis Sentinel set-up at %s=%s is unreachable: %v", EnvRedisSentinelURL, url, err)
	}
	return client
}

// DeleteKeys deletes every key under prefix (which holds no glob character)
// on every master of client — each master of a Redis Cluster, the one
// server otherwise — one key per command, as keys of different slots cannot
// share a multi-key command. It is how a test that shares a cluster wipes
// its own data: never FLUSHALL.
func DeleteKeys(ctx context.Context, client redis.UniversalClient, prefix string) error {
	deleteOn := func(ctx context.Context, node redis.UniversalClient) error {
		iter := node.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		pipe := node.Pipeline()
		for iter.Next(ctx) {
			pipe.Unlink(ctx, iter.Val())
			if pipe.Len() == 1000 {
				if _, err := pipe.Exec(ctx); err != nil {
					return errors.Wrapf(err, "unlink keys under %s", prefix)
				}
			}
		}
		if err := iter.Err(); err != nil {
			return errors.Wrapf(err, "scan keys under %s", prefix)
		}
		if pipe.Len() > 0 {
			_, err := pipe.Exec(ctx)
			return errors.Wrapf(err, "unlink keys under %s", prefix)
		}
		return nil
	}
	if cluster, ok := client.(*redis.ClusterClient); ok {
		return cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return errors.Wrapf(deleteOn(ctx, node), "on master %s", node.Options().Addr)
		})
	}
	return deleteOn(ctx, client)
}
