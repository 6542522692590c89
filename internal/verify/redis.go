package verify

import (
	"context"

	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/redis/go-redis/v9"
)

// RedisVersions returns the version Redis holds for every aggregate under
// keyPrefix (default "arbiter"): aggregate ID to version, read with
// versionstore's own scan so that the key layout (and its escaping of '}'
// in aggregate IDs) has one owner.
func RedisVersions(ctx context.Context, client redis.UniversalClient, keyPrefix string) (map[string]int64, error) {
	return versionstore.New(client, versionstore.Options{KeyPrefix: keyPrefix}).Versions(ctx)
}
