package chaos

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/topicadmin"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// BrokerFaults are the faults of a replicated Kafka (Config.KafkaBrokers of
// minReplicatedBrokers or more), beyond AllFaults. They act on one node
// through Config.KafkaClusterCmd.
var BrokerFaults = []string{FaultBrokerKill, FaultBrokerRestart}

const (
	// minReplicatedBrokers is the smallest replicated Kafka the run
	// accepts: its topics are replicated this many times with
	// replicatedMinISR, so that one broker down leaves two in sync and
	// every transaction can still commit.
	minReplicatedBrokers = 3
	replicatedMinISR     = 2
	// brokerDowntime is how long a killed broker stays dead: past KRaft's
	// broker.session.timeout.ms (9 s by default), so that the controller
	// fences it and moves its leaders, as after a real crash.
	brokerDowntime = 12 * time.Second
	// brokerBaseline is the window before a broker fault over which the
	// commands decided per second are measured, to compare with the rate
	// while the broker is away.
	brokerBaseline = 5 * time.Second
	// brokerRejoinTimeout bounds the wait for a restarted broker to be
	// back in the ISR of every partition it replicates.
	brokerRejoinTimeout = 3 * time.Minute
)

// topicSpec returns the run's topics: on a replicated Kafka replicated
// minReplicatedBrokers times with min.insync.replicas replicatedMinISR, so
// that a transaction commits with one broker down and never with only one
// copy of its records; on one broker, the broker's defaults.
func (r *run) topicSpec() topicadmin.Spec {
	spec := topicadmin.Spec{Names: r.topics[:], Partitions: r.cfg.Partitions, ReplicationFactor: -1}
	if r.cfg.KafkaBrokers >= minReplicatedBrokers {
		spec.ReplicationFactor = minReplicatedBrokers
		spec.Configs = make(map[string]map[string]string, len(r.topics))
		for _, topic := range r.topics {
			spec.Configs[topic] = map[string]string{"min.insync.replicas": strconv.Itoa(replicatedMinISR)}
		}
	}
	return spec
}

// checkCluster checks, on a replicated Kafka, that the cluster has the
// configured number of brokers and that the run's topics are replicated as
// topicSpec asked, and logs what it found.
func (r *run) checkCluster(ctx context.Context, admin *kadm.Client) error {
	if r.cfg.KafkaBrokers < minReplicatedBrokers {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	metadata, err := admin.Metadata(ctx, r.topics[:]...)
	if err != nil {
		return errors.Wrap(err, "read the cluster's metadata")
	}
	if len(metadata.Brokers) != r.cfg.KafkaBrokers {
		return errors.Newf("the cluster at %v has %d brokers, not the %d of --kafka-brokers", r.cfg.Brokers, len(metadata.Brokers), r.cfg.KafkaBrokers)
	}
	for _, topic := range metadata.Topics.Sorted() {
		for _, partition := range topic.Partitions.Sorted() {
			if len(partition.Replicas) != minReplicatedBrokers {
				return errors.Newf("partition %s/%d has replicas %v, not %d", topic.Topic, partition.Partition, partition.Replicas, minReplicatedBrokers)
			}
		}
	}
	configs, err := admin.DescribeTopicConfigs(ctx, r.topics[:]...)
	if err != nil {
		return errors.Wrap(err, "describe the run's topics")
	}
	for _, config := range configs {
		if config.Err != nil {
			return errors.Wrapf(config.Err, "describe topic %s", config.Name)
		}
		minISR := ""
		for _, entry := range config.Configs {
			if entry.Key == "min.insync.replicas" {
				minISR = entry.MaybeValue()
			}
		}
		if minISR != strconv.Itoa(replicatedMinISR) {
			return errors.Newf("topic %s has min.insync.replicas %q, not %d", config.Name, minISR, replicatedMinISR)
		}
	}
	r.logf("replicated Kafka: brokers %v; the run's topics have replication factor %d and min.insync.replicas %d; every producer uses acks=all",
		brokerIDs(metadata), minReplicatedBrokers, replicatedMinISR)
	return nil
}

// requireAcksAll returns an error unless client produces with acks=all and
// idempotence, so that with min.insync.replicas 2 no acknowledged command
// lives on one broker only. franz-go's defaults are exactly that, so this
// guards against an option added later. The workers need no such check:
// their clients are transactional, and franz-go refuses a transactional
// client without idempotence, and idempotence without acks=all.
func requireAcksAll(client *kgo.Client) error {
	if acks, _ := client.OptValue(kgo.RequiredAcks).(kgo.Acks); acks != kgo.AllISRAcks() {
		return errors.New("the producer does not use acks=all")
	}
	if disabled, _ := client.OptValue(kgo.DisableIdempotentWrite).(bool); disabled {
		return errors.New("the producer does not write idempotently")
	}
	return nil
}

// brokerState is what a broker fault logs about its target.
type brokerState struct {
	// controller is the active KRaft controller (the metadata quorum's
	// leader), -1 if unknown.
	controller int32
	// leaders and internalLeaders count the partitions of the run's topics
	// and of Kafka's internal topics (the transaction log and the consumer
	// offsets) that the broker leads.
	leaders, internalLeaders int
	// replicas counts the partitions the broker replicates.
	replicas int
}

// brokerFault injects FaultBrokerKill (SIGKILL a node, wait brokerDowntime,
// start it) or FaultBrokerRestart (stop it gracefully, start it): on a node
// drawn at random among the brokers, controller or not. It returns only
// once the node is back in the ISR of every partition it replicates, so
// that the next fault never finds two brokers missing.
func (r *run) brokerFault(ctx context.Context, kind string) {
	if len(r.cfg.KafkaClusterCmd) == 0 {
		r.logf("skipping %s: no command to kill and start a node (--kafka-cluster-cmd)", kind)
		return
	}
	if r.brokerFailed {
		r.logf("skipping %s: an earlier broker fault left a broker out of the cluster", kind)
		return
	}
	client, err := kgo.NewClient(kgo.SeedBrokers(r.cfg.Brokers...))
	if err != nil {
		r.logf("skipping %s: %v", kind, err)
		return
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	// A broker must never be left stopped: the steps that bring it back
	// run to their end even when the run is interrupted.
	ctx = context.WithoutCancel(ctx)

	metadata, err := admin.Metadata(ctx)
	if err != nil || len(metadata.Brokers) == 0 {
		r.logf("skipping %s: cannot read the cluster's metadata: %v", kind, err)
		return
	}
	ids := brokerIDs(metadata)
	node := ids[r.rng.Intn(len(ids))]
	state := r.describeBroker(ctx, client, metadata, node)
	workers := r.live()

	baselineStart := time.Now()
	decidedBefore, errBefore := r.decided(ctx, admin)
	time.Sleep(brokerBaseline) // the baseline window, not a wait for a condition
	decidedAtFault, errAtFault := r.decided(ctx, admin)
	faultAt := time.Now()

	verb, how := "kill", "SIGKILL"
	if kind == FaultBrokerRestart {
		verb, how = "stop", "graceful stop (SIGTERM) of"
	}
	if out, err := r.clusterCmd(ctx, verb, node); err != nil {
		r.logf("%s: %s of node %d failed: %v: %s", kind, verb, node, err, out)
		return
	}
	stoppedIn := time.Since(faultAt)
	if kind == FaultBrokerKill {
		time.Sleep(brokerDowntime) // the outage itself, not a wait for a condition
	}
	decidedAtStart, errAtStart := r.decided(ctx, admin)
	startAt := time.Now()
	if out, err := r.clusterCmd(ctx, "start", node); err != nil {
		r.fail(kind, "node %d did not start again: %v: %s", node, err, out)
		return
	}
	answeringAt := time.Now()
	if err := r.awaitInSync(ctx, admin, node); err != nil {
		r.fail(kind, "node %d did not rejoin the ISR: %v", node, err)
		return
	}
	backAt := time.Now()
	decidedBack, errBack := r.decided(ctx, admin)

	exited := 0
	for _, w := range workers {
		if w.exited() {
			exited++
		}
	}
	throughput := "unmeasured (the group's offsets were unreadable)"
	switch {
	case errBefore == nil && errAtFault == nil && errAtStart == nil && errBack == nil:
		throughput = fmt.Sprintf("%.0f/s in the %s before, %.0f/s until the start, %.0f/s from the start until back in the ISR",
			rate(decidedAtFault-decidedBefore, faultAt.Sub(baselineStart)), brokerBaseline,
			rate(decidedAtStart-decidedAtFault, startAt.Sub(faultAt)), rate(decidedBack-decidedAtStart, backAt.Sub(startAt)))
	case errBefore == nil && errAtFault == nil && errBack == nil:
		throughput = fmt.Sprintf("%.0f/s in the %s before, %.0f/s from the fault until back in the ISR",
			rate(decidedAtFault-decidedBefore, faultAt.Sub(baselineStart)), brokerBaseline,
			rate(decidedBack-decidedAtFault, backAt.Sub(faultAt)))
	}
	controller := "no"
	switch state.controller {
	case node:
		controller = "yes"
	case -1:
		controller = "unknown"
	}
	r.record(kind, "%s node %d (active controller: %s; leader of %d of the run's partitions and %d internal ones, replica of %d) in %s; "+
		"started again after %s, answering %s later, back in the ISR of all its partitions %s after the fault (%s after the start); "+
		"commands decided: %s; workers that exited meanwhile: %d of %d",
		how, node, controller, state.leaders, state.internalLeaders, state.replicas, stoppedIn.Round(time.Millisecond),
		startAt.Sub(faultAt).Round(100*time.Millisecond), answeringAt.Sub(startAt).Round(100*time.Millisecond),
		backAt.Sub(faultAt).Round(100*time.Millisecond), backAt.Sub(startAt).Round(100*time.Millisecond),
		throughput, exited, len(workers))
}

// fail records a fault that could not complete: it fails the run, and no
// later broker fault is injected.
func (r *run) fail(kind, format string, args ...any) {
	line := fmt.Sprintf("t+%.1fs %s: %s", time.Since(r.start).Seconds(), kind, fmt.Sprintf(format, args...))
	r.mu.Lock()
	r.failures = append(r.failures, line)
	r.brokerFailed = true
	r.mu.Unlock()
	r.logf("FAILED fault %s", line)
}

// clusterCmd runs Config.KafkaClusterCmd with verb and node, e.g.
// "scripts/kafka-cluster.sh kill 2".
func (r *run) clusterCmd(ctx context.Context, verb string, node int32) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	args := append(slices.Clone(r.cfg.KafkaClusterCmd[1:]), verb, strconv.Itoa(int(node)))
	out, err := exec.CommandContext(ctx, r.cfg.KafkaClusterCmd[0], args...).CombinedOutput()
	return strings.TrimSpace(string(out)), errors.Wrapf(err, "%s %s", strings.Join(r.cfg.KafkaClusterCmd, " "), strings.Join(args[len(args)-2:], " "))
}

// describeBroker returns what node is in the cluster: controller or not,
// and the partitions it leads.
func (r *run) describeBroker(ctx context.Context, client *kgo.Client, metadata kadm.Metadata, node int32) brokerState {
	state := brokerState{controller: -1}
	if controller, err := activeController(ctx, client); err == nil {
		state.controller = controller
	} else {
		r.logf("cannot tell the active controller: %v", err)
	}
	for _, topic := range metadata.Topics {
		for _, partition := range topic.Partitions {
			if slices.Contains(partition.Replicas, node) {
				state.replicas++
			}
			if partition.Leader != node {
				continue
			}
			switch {
			case slices.Contains(r.topics[:], topic.Topic):
				state.leaders++
			case topic.IsInternal:
				state.internalLeaders++
			}
		}
	}
	return state
}

// activeController returns the node ID of the leader of the KRaft metadata
// quorum: the active controller. A broker forwards DescribeQuorum to the
// controllers.
func activeController(ctx context.Context, client *kgo.Client) (int32, error) {
	partition := kmsg.NewDescribeQuorumRequestTopicPartition()
	partition.Partition = 0
	topic := kmsg.NewDescribeQuorumRequestTopic()
	topic.Topic = "__cluster_metadata"
	topic.Partitions = append(topic.Partitions, partition)
	req := kmsg.NewPtrDescribeQuorumRequest()
	req.Topics = append(req.Topics, topic)
	resp, err := req.RequestWith(ctx, client)
	if err != nil {
		return -1, errors.Wrap(err, "DescribeQuorum")
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return -1, errors.Wrap(err, "DescribeQuorum")
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		return -1, errors.New("DescribeQuorum: no __cluster_metadata partition in the answer")
	}
	answer := resp.Topics[0].Partitions[0]
	if err := kerr.ErrorForCode(answer.ErrorCode); err != nil {
		return -1, errors.Wrap(err, "DescribeQuorum")
	}
	return answer.LeaderID, nil
}

// awaitInSync waits until node is in the ISR of every partition that it
// replicates, and every partition has a leader.
func (r *run) awaitInSync(ctx context.Context, admin *kadm.Client, node int32) error {
	deadline := time.Now().Add(brokerRejoinTimeout)
	for {
		metadata, err := admin.Metadata(ctx)
		missing := -1
		if err == nil {
			missing = outOfSync(metadata, node)
			if missing == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.Newf("after %s: %d partitions without it in their ISR or without a leader (last error: %v)", brokerRejoinTimeout, missing, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// outOfSync counts the partitions that node replicates but is not in the
// ISR of, and the partitions without a leader.
func outOfSync(metadata kadm.Metadata, node int32) int {
	missing := 0
	for _, topic := range metadata.Topics {
		for _, partition := range topic.Partitions {
			switch {
			case partition.Leader < 0:
				missing++
			case slices.Contains(partition.Replicas, node) && !slices.Contains(partition.ISR, node):
				missing++
			}
		}
	}
	return missing
}

// decided returns how many command records the run's group has committed
// offsets past: the commands decided so far.
func (r *run) decided(ctx context.Context, admin *kadm.Client) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	offsets, err := admin.FetchOffsets(ctx, r.name)
	if err != nil {
		return 0, errors.Wrapf(err, "fetch the offsets of group %s", r.name)
	}
	var decided int64
	offsets.Each(func(offset kadm.OffsetResponse) {
		if offset.Err == nil && offset.Topic == r.topics[0] {
			decided += offset.At
		}
	})
	return decided, nil
}

func rate(count int64, over time.Duration) float64 {
	if over <= 0 {
		return 0
	}
	return float64(count) / over.Seconds()
}

func brokerIDs(metadata kadm.Metadata) []int32 {
	ids := make([]int32, 0, len(metadata.Brokers))
	for _, broker := range metadata.Brokers {
		ids = append(ids, broker.NodeID)
	}
	slices.Sort(ids)
	return ids
}
