package processor

import (
	"context"
	"strconv"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// defaultProducerBatchMaxBytes is the largest record batch a worker produces
// when the output topics allow it (Kafka's default max.message.bytes is
// 1 MiB + 12 bytes).
const defaultProducerBatchMaxBytes = 1 << 20

// recordSlack is what an outcome record may need beside its value in a record
// batch of its own: the batch header, the record's framing, its key (an
// aggregate ID, at most events.MaxEchoedIDBytes) and its headers.
const recordSlack = 512 + 2*events.MaxEchoedIDBytes

// fitRecordLimits lowers the size limit of outcome records (MaxEventBytes)
// and of the worker's record batches to what the events and conflicts topics
// accept (max.message.bytes). Every outcome record is checked against the
// limit before the compare-and-set records it in Redis, so a record the
// broker would refuse is never decided: were it decided, its replay would be
// refused the same way on every retry, and the partitions of its batch would
// stall. When the topic configuration cannot be read (a broker that does not
// describe configs), the configured limits stay.
func (w *Worker) fitRecordLimits(ctx context.Context) {
	w.producerBatchMaxBytes = defaultProducerBatchMaxBytes
	limit, err := w.outputTopicsRecordLimit(ctx)
	if err != nil {
		w.log.Warn("cannot read max.message.bytes of the output topics; keeping the configured record limits", errorField(err))
		return
	}
	if limit >= defaultProducerBatchMaxBytes {
		return
	}
	w.producerBatchMaxBytes = limit
	if fit := limit - recordSlack; fit < w.decider.maxEventBytes {
		w.log.Warn("the output topics accept smaller records than the configured limit: lowering it; commands with larger events or conflict records are rejected",
			zap.Int("max_message_bytes", limit), zap.Int("configured_max_event_bytes", w.decider.maxEventBytes), zap.Int("max_event_bytes", fit))
		w.decider.maxEventBytes = max(fit, 1)
	}
}

// outputTopicsRecordLimit returns the smaller max.message.bytes of the events
// and conflicts topics.
func (w *Worker) outputTopicsRecordLimit(ctx context.Context) (int, error) {
	client, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(w.cfg.Brokers...)}, w.cfg.KafkaOptions...)...)
	if err != nil {
		return 0, errors.Wrap(err, "create a Kafka client")
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, w.cfg.RedisTimeout+w.cfg.SessionTimeout)
	defer cancel()
	configs, err := kadm.NewClient(client).DescribeTopicConfigs(ctx, w.cfg.EventsTopic, w.cfg.ConflictsTopic)
	if err != nil {
		return 0, errors.Wrapf(err, "describe topics %s and %s", w.cfg.EventsTopic, w.cfg.ConflictsTopic)
	}
	limit := 0
	for _, topic := range configs {
		if topic.Err != nil {
			return 0, errors.Wrapf(topic.Err, "describe topic %s", topic.Name)
		}
		for _, config := range topic.Configs {
			if config.Key != "max.message.bytes" || config.Value == nil {
				continue
			}
			value, err := strconv.Atoi(*config.Value)
			if err != nil {
				return 0, errors.Wrapf(err, "topic %s: max.message.bytes %q", topic.Name, *config.Value)
			}
			if limit == 0 || value < limit {
				limit = value
			}
		}
	}
	if limit == 0 {
		return 0, errors.Newf("topics %s and %s: no max.message.bytes", w.cfg.EventsTopic, w.cfg.ConflictsTopic)
	}
	return limit, nil
}
