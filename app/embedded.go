package app

import (
	"context"
	"io"
	"net"
	"strconv"

	"github.com/alicebob/miniredis/v2"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"
)

type embeddedConfig struct {
	kafkaAddr  string
	redisAddr  string
	dataDir    string
	partitions int32
	topics     []string
	// topicConfigs are the configurations of new topics, by name.
	topicConfigs map[string]map[string]string
	log          *zap.Logger
}

// embedded is the development stack: franz-go's kfake as Kafka (persisting
// to a data directory) and miniredis as Redis, both in-process.
type embedded struct {
	kafka     *kfake.Cluster
	redis     *miniredis.Miniredis
	kafkaAddr string
	redisAddr string
	dataDir   string
}

func startEmbedded(_ context.Context, cfg embeddedConfig) (*embedded, error) {
	host, portText, err := net.SplitHostPort(cfg.kafkaAddr)
	port, portErr := strconv.Atoi(portText)
	if err != nil || portErr != nil || (host != "127.0.0.1" && host != "localhost") {
		return nil, usagef("--embedded-kafka-addr %q: want 127.0.0.1:<port> (the embedded Kafka listens on loopback)", cfg.kafkaAddr)
	}
	cluster, err := kfake.NewCluster(
		kfake.Ports(port),
		kfake.DataDir(cfg.dataDir),
		kfake.DefaultNumPartitions(int(cfg.partitions)),
		kfake.GroupMinSessionTimeout(1000),
	)
	if err != nil {
		return nil, errors.Wrapf(err, "start the embedded Kafka on %s with data in %s (is the port taken? use --embedded-kafka-addr)", cfg.kafkaAddr, cfg.dataDir)
	}
	for _, topic := range cfg.topics {
		if cluster.TopicInfo(topic) != nil {
			continue
		}
		if err := cluster.CreateTopic(topic, cfg.partitions, cfg.topicConfigs[topic]); err != nil {
			cluster.Close()
			return nil, errors.Wrapf(err, "create topic %s in the embedded Kafka", topic)
		}
	}
	redisServer := miniredis.NewMiniRedis()
	if err := redisServer.StartAddr(cfg.redisAddr); err != nil {
		cluster.Close()
		return nil, errors.Wrapf(err, "start the embedded Redis on %s (is the port taken? use --embedded-redis-addr)", cfg.redisAddr)
	}
	cfg.log.Info("embedded Kafka and Redis started", zap.Strings("kafka", cluster.ListenAddrs()), zap.String("redis", redisServer.Addr()), zap.String("data_dir", cfg.dataDir))
	return &embedded{
		kafka:     cluster,
		redis:     redisServer,
		kafkaAddr: cluster.ListenAddrs()[0],
		redisAddr: redisServer.Addr(),
		dataDir:   cfg.dataDir,
	}, nil
}

func (e *embedded) close() {
	e.redis.Close()
	e.kafka.Close()
}

func printEmbeddedBanner(w io.Writer, f workerFlags, e *embedded) {
	printf(w, `
Arbiter worker on an EMBEDDED Kafka (kfake) and Redis (miniredis), for development only.
  Kafka brokers: %[1]s   (data kept in %[3]s)
  Redis:         redis://%[2]s/0
  Topics:        %[4]s (commands, key = aggregate ID), %[5]s, %[6]s

Send a command from another terminal, e.g. with kcat:
  echo 'prod-123|{"id":"c-1","aggregateId":"prod-123","type":"CreateProduct","expectedVersion":0,"payload":{"name":"Chair","price":25,"stock":100}}' \
    | kcat -P -b %[1]s -t %[4]s -K'|'
and read the outcomes (read_committed):
  kcat -C -b %[1]s -t %[5]s -X isolation.level=read_committed -e
  kcat -C -b %[1]s -t %[6]s -X isolation.level=read_committed -e
Inspect the aggregate: arbiter get --redis redis://%[2]s/0 prod-123
Stop with Ctrl-C.

`, e.kafkaAddr, e.redisAddr, e.dataDir, f.commandsTopic, f.eventsTopic, f.conflictsTopic)
}
