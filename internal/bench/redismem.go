package bench

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// forEachMaster calls fn with every master of a Redis Cluster, in
// parallel, or with the one server's client otherwise: INFO and SCAN
// answer for the node they are sent to.
func forEachMaster(ctx context.Context, client redis.UniversalClient, fn func(ctx context.Context, node redis.UniversalClient) error) error {
	if cluster, ok := client.(*redis.ClusterClient); ok {
		return cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return fn(ctx, node) })
	}
	return fn(ctx, client)
}

// usedMemory returns Redis's INFO memory used_memory, summed over a
// cluster's masters.
func usedMemory(ctx context.Context, client redis.UniversalClient) (int64, error) {
	var mu sync.Mutex
	var total int64
	err := forEachMaster(ctx, client, func(ctx context.Context, node redis.UniversalClient) error {
		info, err := node.Info(ctx, "memory").Result()
		if err != nil {
			return errors.Wrap(err, "redis INFO memory")
		}
		used, err := infoField(info, "used_memory")
		mu.Lock()
		total += used
		mu.Unlock()
		return err
	})
	return total, err
}

// redisCPU returns Redis's used_cpu_sys + used_cpu_user in seconds, summed
// over a cluster's masters.
func redisCPU(ctx context.Context, client redis.UniversalClient) (float64, error) {
	var mu sync.Mutex
	var total float64
	err := forEachMaster(ctx, client, func(ctx context.Context, node redis.UniversalClient) error {
		info, err := node.Info(ctx, "cpu").Result()
		if err != nil {
			return errors.Wrap(err, "redis INFO cpu")
		}
		for _, field := range []string{"used_cpu_sys", "used_cpu_user"} {
			for line := range strings.SplitSeq(info, "\n") {
				if value, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
					v, err := strconv.ParseFloat(value, 64)
					if err != nil {
						return errors.Wrapf(err, "redis INFO %s", field)
					}
					mu.Lock()
					total += v
					mu.Unlock()
				}
			}
		}
		return nil
	})
	return total, err
}

func infoField(info, field string) (int64, error) {
	for line := range strings.SplitSeq(info, "\n") {
		if value, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return strconv.ParseInt(value, 10, 64)
		}
	}
	return 0, errors.Newf("redis INFO has no %s", field)
}

// KeyClass is what MEMORY USAGE says of a sample of one kind of key.
type KeyClass struct {
	// Class names the kind: "aggregate" for <prefix>:{<id>}, otherwise
	// the part of the key after "}:" up to the next ':' (e.g. "c" for
	// outcome keys).
	Class string `json:"class"`
	// Keys is how many keys of the kind exist.
	Keys int64 `json:"keys"`
	// Sampled keys, their mean MEMORY USAGE, mean key length and mean
	// value length (for aggregates: the state snapshot's length).
	Sampled         int     `json:"sampled"`
	MeanBytes       float64 `json:"mean_bytes"`
	MeanKeyLength   float64 `json:"mean_key_length"`
	MeanValueLength float64 `json:"mean_value_length"`
	// MeanTTLSeconds is the mean remaining TTL, 0 when the keys have
	// none.
	MeanTTLSeconds float64 `json:"mean_ttl_seconds"`
}

// sampleKeys scans every key under prefix, counts them by class and takes
// MEMORY USAGE of up to perClass of each (on a cluster, every master's keys).
func sampleKeys(ctx context.Context, client redis.UniversalClient, prefix string, perClass int) ([]KeyClass, error) {
	classes := make(map[string]*KeyClass)
	samples := make(map[string][]string)
	var mu sync.Mutex
	err := forEachMaster(ctx, client, func(ctx context.Context, node redis.UniversalClient) error {
		iter := node.Scan(ctx, 0, prefix+":{*", 5000).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			class := keyClass(key, prefix)
			mu.Lock()
			c, ok := classes[class]
			if !ok {
				c = &KeyClass{Class: class}
				classes[class] = c
			}
			c.Keys++
			if len(samples[class]) < perClass {
				samples[class] = append(samples[class], key)
			}
			mu.Unlock()
		}
		return errors.Wrap(iter.Err(), "scan the run's redis keys")
	})
	if err != nil {
		return nil, err
	}
	for class, keys := range samples {
		c := classes[class]
		pipe := client.Pipeline()
		usage := make([]*redis.IntCmd, len(keys))
		length := make([]*redis.IntCmd, len(keys))
		ttl := make([]*redis.DurationCmd, len(keys))
		for i, key := range keys {
			usage[i] = pipe.MemoryUsage(ctx, key, 0)
			if class == "aggregate" {
				length[i] = pipe.HStrLen(ctx, key, "s")
			}
			ttl[i] = pipe.PTTL(ctx, key)
		}
		_, _ = pipe.Exec(ctx)
		for i, key := range keys {
			bytes, err := usage[i].Result()
			if err != nil {
				return nil, errors.Wrapf(err, "MEMORY USAGE %s", key)
			}
			c.Sampled++
			c.MeanBytes += float64(bytes)
			c.MeanKeyLength += float64(len(key))
			if class == "aggregate" {
				c.MeanValueLength += float64(length[i].Val())
			} else {
				c.MeanValueLength += float64(valueLength(ctx, client, key))
			}
			if d := ttl[i].Val(); d > 0 {
				c.MeanTTLSeconds += d.Seconds()
			}
		}
		n := float64(max(c.Sampled, 1))
		c.MeanBytes /= n
		c.MeanKeyLength /= n
		c.MeanValueLength /= n
		c.MeanTTLSeconds /= n
	}
	out := make([]KeyClass, 0, len(classes))
	for _, c := range classes {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Class < out[j].Class })
	return out, nil
}

// valueLength is the length of a key's value by its type: a string's
// length, a hash's field values summed, a set's or list's members summed.
func valueLength(ctx context.Context, client redis.UniversalClient, key string) int64 {
	kind, err := client.Type(ctx, key).Result()
	if err != nil {
		return 0
	}
	switch kind {
	case "string":
		return client.StrLen(ctx, key).Val()
	case "hash":
		var n int64
		for field, value := range client.HGetAll(ctx, key).Val() {
			n += int64(len(field) + len(value))
		}
		return n
	case "set":
		var n int64
		for _, m := range client.SMembers(ctx, key).Val() {
			n += int64(len(m))
		}
		return n
	case "zset":
		var n int64
		for _, m := range client.ZRange(ctx, key, 0, -1).Val() {
			n += int64(len(m))
		}
		return n
	case "list":
		var n int64
		for _, m := range client.LRange(ctx, key, 0, -1).Val() {
			n += int64(len(m))
		}
		return n
	}
	return 0
}

func keyClass(key, prefix string) string {
	rest := key[len(prefix)+2:]
	end := strings.IndexByte(rest, '}')
	if end < 0 {
		return "other"
	}
	rest = rest[end+1:]
	if rest == "" {
		return "aggregate"
	}
	rest = strings.TrimPrefix(rest, ":")
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// deleteKeys removes every key under prefix, on every master of a cluster,
// one key per UNLINK: keys of different slots cannot share one.
func deleteKeys(ctx context.Context, client redis.UniversalClient, prefix string) error {
	return forEachMaster(ctx, client, func(ctx context.Context, node redis.UniversalClient) error {
		iter := node.Scan(ctx, 0, prefix+":*", 5000).Iterator()
		pipe := node.Pipeline()
		for iter.Next(ctx) {
			pipe.Unlink(ctx, iter.Val())
			if pipe.Len() == 1000 {
				if _, err := pipe.Exec(ctx); err != nil {
					return errors.Wrap(err, "delete the run's redis keys")
				}
			}
		}
		if err := iter.Err(); err != nil {
			return errors.Wrap(err, "scan the run's redis keys")
		}
		if pipe.Len() == 0 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		return errors.Wrap(err, "delete the run's redis keys")
	})
}
