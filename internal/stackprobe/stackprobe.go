// Package stackprobe asks the servers of the test stack (scripts/stack.sh)
// whether they are up and what they run: the Kafka broker's finalized
// features and the Redis server's INFO. It is shared by the stackcheck
// command, which waits for the stack to come up, and by internal/testenv.
package stackprobe

import (
	"bufio"
	"context"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Feature names that the broker reports in its ApiVersions response.
const (
	// FeatureMetadataVersion is the KRaft metadata version; a broker that
	// reports no level for it has not loaded its metadata yet.
	FeatureMetadataVersion = "metadata.version"
	// FeatureTransactionVersion is the transaction protocol version; level 2
	// is KIP-890's server-side defence against hanging transactions.
	FeatureTransactionVersion = "transaction.version"
)

// ErrNoBrokers is returned when a broker list is empty.
var ErrNoBrokers = errors.New("no Kafka brokers given")

// clientOpts are the options of every short-lived probe client: quick dials
// and no retries beyond the caller's context, so that a probe of a dead
// address fails fast instead of hanging in the client's retry loop.
func clientOpts(brokers []string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.DialTimeout(5 * time.Second),
		kgo.RequestRetries(1),
		kgo.RetryTimeout(5 * time.Second),
		kgo.MetadataMinAge(100 * time.Millisecond),
		kgo.SoftwareNameAndVersion("arbiter-stackprobe", "0"),
	}
}

// KafkaFeatures returns the finalized features of the cluster behind brokers
// (feature name to finalized max version level), from the ApiVersions
// response of one of them. An empty map means the broker has not finalized
// any feature yet, which a KRaft broker reports while it is starting.
func KafkaFeatures(ctx context.Context, brokers []string) (map[string]int16, error) {
	if len(brokers) == 0 {
		return nil, ErrNoBrokers
	}
	client, err := kgo.NewClient(clientOpts(brokers)...)
	if err != nil {
		return nil, errors.Wrap(err, "create Kafka client")
	}
	defer client.Close()

	req := kmsg.NewPtrApiVersionsRequest()
	req.ClientSoftwareName = "arbiter-stackprobe"
	req.ClientSoftwareVersion = "0"
	resp, err := req.RequestWith(ctx, client)
	if err != nil {
		return nil, errors.Wrapf(err, "ApiVersions request to %s", strings.Join(brokers, ","))
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, errors.Wrapf(err, "ApiVersions response from %s", strings.Join(brokers, ","))
	}
	features := make(map[string]int16, len(resp.FinalizedFeatures))
	for _, feature := range resp.FinalizedFeatures {
		features[feature.Name] = feature.MaxVersionLevel
	}
	return features, nil
}

// KafkaBrokerCount does a metadata round trip and returns how many brokers
// the cluster reports.
func KafkaBrokerCount(ctx context.Context, brokers []string) (int, error) {
	if len(brokers) == 0 {
		return 0, ErrNoBrokers
	}
	client, err := kgo.NewClient(clientOpts(brokers)...)
	if err != nil {
		return 0, errors.Wrap(err, "create Kafka client")
	}
	defer client.Close()

	metadata, err := kadm.NewClient(client).BrokerMetadata(ctx)
	if err != nil {
		return 0, errors.Wrapf(err, "metadata request to %s", strings.Join(brokers, ","))
	}
	return len(metadata.Brokers), nil
}

// KafkaReady reports whether the cluster behind brokers answers a metadata
// request with at least one broker and has finalized its metadata.version,
// and returns its finalized features.
func KafkaReady(ctx context.Context, brokers []string) (map[string]int16, error) {
	count, err := KafkaBrokerCount(ctx, brokers)
	if err != nil {
		return nil, err
	}
	if count == 0 {
		return nil, errors.Newf("metadata from %s lists no broker", strings.Join(brokers, ","))
	}
	features, err := KafkaFeatures(ctx, brokers)
	if err != nil {
		return nil, err
	}
	if _, ok := features[FeatureMetadataVersion]; !ok {
		return nil, errors.Newf("broker has not finalized %s yet", FeatureMetadataVersion)
	}
	return features, nil
}

// RedisInfo runs INFO section on client and returns its fields, such as
// "redis_version" and "process_id" for the "server" section.
func RedisInfo(ctx context.Context, client redis.UniversalClient, section string) (map[string]string, error) {
	text, err := client.Info(ctx, section).Result()
	if err != nil {
		return nil, errors.Wrapf(err, "redis INFO %s", section)
	}
	return ParseRedisInfo(text), nil
}

// ParseRedisInfo parses the text of a Redis INFO reply ("key:value" lines,
// "# Section" headers) into a map.
func ParseRedisInfo(text string) map[string]string {
	fields := make(map[string]string)
	scanner := bufio.NewScanner(strings.NewReader(text))
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields[key] = value
	}
	return fields
}

// SplitList splits a comma-separated list (of broker addresses, of topics),
// dropping blanks around and between the items.
func SplitList(list string) []string {
	var items []string
	for item := range strings.SplitSeq(list, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}
