// Package topicadmin creates topics and waits until they can be used: the
// one implementation behind 'arbiter topics create', the tests' topics, the
// benchmark's and the chaos runner's, and the stack check's.
package topicadmin

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// ErrNoAnswer marks a Create whose request Kafka did not answer (as
// opposed to a topic Kafka refused).
var ErrNoAnswer = errors.New("kafka did not answer")

// Spec says which topics to create.
type Spec struct {
	// Names are the topics.
	Names []string
	// Partitions is each new topic's partition count.
	Partitions int32
	// ReplicationFactor of each new topic; -1 takes the broker's default.
	ReplicationFactor int16
	// ExistingOK accepts topics that already exist (their partitions are
	// left as they are); otherwise an existing topic is an error.
	ExistingOK bool
	// Configs are the topic configurations of new topics, by topic name
	// (e.g. "retention.ms"); topics without an entry take the broker's
	// defaults.
	Configs map[string]map[string]string
}

// Result lists what Create did.
type Result struct {
	// Created are the topics created, Existing those that were there.
	Created, Existing []string
}

// Create creates the topics of spec and waits until every partition of the
// ones it created has a leader. Topics it could create are created even when
// others fail; the error names each failure.
func Create(ctx context.Context, admin *kadm.Client, spec Spec) (Result, error) {
	var result Result
	var responses []kadm.CreateTopicResponse
	// One request per distinct configuration: CreateTopics takes one set
	// of configs for all the topics of a request.
	for _, names := range groupByConfig(spec) {
		var configs map[string]*string
		for key, value := range spec.Configs[names[0]] {
			if configs == nil {
				configs = make(map[string]*string)
			}
			configs[key] = &value
		}
		created, err := admin.CreateTopics(ctx, spec.Partitions, spec.ReplicationFactor, configs, names...)
		if err != nil {
			return result, errors.Mark(errors.Wrapf(err, "create topics %v", names), ErrNoAnswer)
		}
		responses = append(responses, created.Sorted()...)
	}
	var problems []error
	for _, response := range responses {
		switch {
		case response.Err == nil:
			result.Created = append(result.Created, response.Topic)
		case spec.ExistingOK && errors.Is(response.Err, kerr.TopicAlreadyExists):
			result.Existing = append(result.Existing, response.Topic)
		default:
			problems = append(problems, errors.Wrapf(response.Err, "create topic %s", response.Topic))
		}
	}
	slices.Sort(result.Created)
	slices.Sort(result.Existing)
	if err := errors.Join(problems...); err != nil {
		return result, err
	}
	return result, WaitForLeaders(ctx, admin, spec.Partitions, result.Created...)
}

// groupByConfig splits spec.Names into groups of topics with the same
// configuration, in the order of their first name.
func groupByConfig(spec Spec) [][]string {
	var groups [][]string
	for _, name := range spec.Names {
		placed := false
		for i, group := range groups {
			if maps.Equal(spec.Configs[group[0]], spec.Configs[name]) {
				groups[i] = append(groups[i], name)
				placed = true
				break
			}
		}
		if !placed {
			groups = append(groups, []string{name})
		}
	}
	return groups
}

// WaitForLeaders polls the metadata until each topic has the expected
// partitions, each with a leader: a topic that the controller has created
// is not yet known to every broker, and producing to it too early fails with
// UNKNOWN_TOPIC_OR_PARTITION. Kafka has no way to be told, so this polls,
// until ctx ends.
func WaitForLeaders(ctx context.Context, admin *kadm.Client, partitions int32, names ...string) error {
	if len(names) == 0 {
		return nil
	}
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		metadata, err := admin.Metadata(ctx, names...)
		if err == nil {
			err = allLed(metadata, partitions, names)
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Wrapf(err, "topics %v: partitions without a leader", names)
		case <-ticker.C:
		}
	}
}

func allLed(metadata kadm.Metadata, partitions int32, names []string) error {
	for _, name := range names {
		topic, ok := metadata.Topics[name]
		switch {
		case !ok:
			return errors.Newf("topic %s missing from metadata", name)
		case topic.Err != nil:
			return errors.Wrapf(topic.Err, "topic %s", name)
		case int32(len(topic.Partitions)) != partitions:
			return errors.Newf("topic %s has %d of %d partitions", name, len(topic.Partitions), partitions)
		}
		for _, partition := range topic.Partitions {
			if partition.Err != nil || partition.Leader < 0 {
				return errors.Newf("topic %s partition %d has no leader (%v)", name, partition.Partition, partition.Err)
			}
		}
	}
	return nil
}
