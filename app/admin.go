package app

import (
	"context"
	"encoding/json"
	"io"
	"strconv"
	"time"

	"github.com/arbiter-cqrs/arbiter/internal/topicadmin"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func (c *cli) topicsCommand() *cobra.Command {
	topics := &cobra.Command{
		Use:   "topics",
		Short: "manage the commands, events and conflicts topics",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("usage: %s topics create [--partitions N] [--replication-factor R] [flags]", c.name)
		},
	}
	var f commonFlags
	var partitions, replication int
	var conflictsRetention time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "create the commands, events and conflicts topics",
		Args:  cobra.NoArgs,
		RunE: c.run(func(ctx context.Context, _ []string) error {
			return runTopicsCreate(ctx, f, partitions, replication, conflictsRetention, c.stdout)
		}),
	}
	fs := create.Flags()
	f.register(fs)
	bind(fs, &partitions, "partitions", "ARBITER_PARTITIONS", 12, "partitions per topic")
	bind(fs, &replication, "replication-factor", "ARBITER_REPLICATION_FACTOR", -1, "replication factor; -1 takes the broker default")
	bind(fs, &conflictsRetention, "conflicts-retention", "ARBITER_CONFLICTS_RETENTION", 7*24*time.Hour, "how long the conflicts topic keeps records; the events topic keeps every event")
	topics.AddCommand(create)
	return topics
}

// runTopicsCreate creates the three topics.
func runTopicsCreate(ctx context.Context, f commonFlags, partitions, replication int, conflictsRetention time.Duration, stdout io.Writer) error {
	brokers := f.brokerList()
	if len(brokers) == 0 {
		return usagef("no Kafka brokers: set --brokers or ARBITER_BROKERS")
	}
	opts, err := f.kafkaOpts()
	if err != nil {
		return err
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return usagef("--brokers %q: %v", f.brokers, err)
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	createCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The events topic is the source of truth rebuild-versions reads from
	// offset 0: it must never delete an event.
	configs := map[string]map[string]string{
		f.eventsTopic:    {"retention.ms": "-1"},
		f.conflictsTopic: {"retention.ms": strconv.FormatInt(conflictsRetention.Milliseconds(), 10)},
	}
	result, err := topicadmin.Create(createCtx, admin, topicadmin.Spec{
		Names:      []string{f.commandsTopic, f.eventsTopic, f.conflictsTopic},
		Partitions: int32(partitions), ReplicationFactor: int16(replication), ExistingOK: true,
		Configs: configs,
	})
	for _, topic := range result.Created {
		if retention, ok := configs[topic]["retention.ms"]; ok {
			printf(stdout, "created topic %s with %d partitions, retention.ms=%s\n", topic, partitions, retention)
			continue
		}
		printf(stdout, "created topic %s with %d partitions\n", topic, partitions)
	}
	for _, topic := range result.Existing {
		printf(stdout, "topic %s already exists\n", topic)
	}
	if errors.Is(err, topicadmin.ErrNoAnswer) {
		return f.kafkaUnreachable(err)
	}
	return err
}

func (c *cli) getCommand() *cobra.Command {
	var f commonFlags
	cmd := &cobra.Command{
		Use:   "get <aggregate-id>",
		Short: "print an aggregate's version and state as Redis holds them",
		Args:  cobra.ExactArgs(1),
		RunE: c.run(func(ctx context.Context, args []string) error {
			return runGet(ctx, f, args[0], c.stdout)
		}),
	}
	f.register(cmd.Flags())
	return cmd
}

// runGet prints an aggregate's version and state as Redis holds them.
func runGet(ctx context.Context, f commonFlags, aggregateID string, stdout io.Writer) error {
	store, closeStore, err := f.redisStore(ctx, versionstore.Options{})
	if err != nil {
		return err
	}
	defer closeStore()
	aggregate, err := store.Get(ctx, aggregateID)
	if err != nil {
		return err
	}
	out := struct {
		AggregateID string          `json:"aggregateId"`
		Version     int64           `json:"version"`
		Type        string          `json:"type,omitempty"`
		State       json.RawMessage `json:"state,omitempty"`
	}{aggregate.ID, aggregate.Version, aggregate.Type, aggregate.State}
	encoded, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return errors.Wrapf(err, "encode aggregate %s", aggregate.ID)
	}
	printf(stdout, "%s\n", encoded)
	return nil
}

func (c *cli) rebuildCommand() *cobra.Command {
	var f commonFlags
	var rf rebuildFlags
	cmd := &cobra.Command{
		Use:   "rebuild-versions",
		Short: "recompute versions and snapshots in Redis from the events topic (stop the workers first)",
		Args:  cobra.NoArgs,
		RunE: c.run(func(ctx context.Context, _ []string) error {
			return c.runRebuild(ctx, f, rf)
		}),
	}
	fs := cmd.Flags()
	f.register(fs)
	bind(fs, &rf.dryRun, "dry-run", "", false, "report mismatches without writing; exit code 4 when there are any")
	bind(fs, &rf.group, "group", "ARBITER_GROUP", "arbiter", "consumer group of the workers: must have no members, and its committed offsets say which decisions were published")
	bind(fs, &rf.force, "force", "", false, "rebuild even while the workers' group has members (they are fenced off and wait)")
	bind(fs, &rf.allowPartial, "allow-partial", "", false, "rebuild from an events topic whose first events retention deleted (versions and snapshots of those aggregates will be wrong)")
	return cmd
}

// rebuildFlags are rebuild-versions' own flags.
type rebuildFlags struct {
	dryRun, force, allowPartial bool
	group                       string
}

// runRebuild recomputes versions and snapshots from the events topic with
// the registry's Evolve functions.
func (c *cli) runRebuild(ctx context.Context, f commonFlags, rf rebuildFlags) error {
	dryRun := rf.dryRun
	stdout, stderr := c.stdout, c.stderr
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	if err := f.checkRedisConfig(); err != nil {
		return err
	}
	if err := f.checkTopics(ctx, f.eventsTopic); err != nil {
		return err
	}
	store, closeStore, err := f.redisStore(ctx, versionstore.Options{})
	if err != nil {
		return err
	}
	defer closeStore()
	registry := c.registry
	kafkaOptions, err := f.securityOpts()
	if err != nil {
		return err
	}
	report, err := processor.Rebuild(ctx, processor.RebuildConfig{
		Brokers: f.brokerList(), EventsTopic: f.eventsTopic, CommandsTopic: f.commandsTopic, Group: rf.group,
		Force: rf.force, AllowPartial: rf.allowPartial, Registry: registry, Store: store, DryRun: dryRun, Logger: log,
		KafkaOptions: kafkaOptions,
	})
	if err != nil {
		return err
	}
	for _, m := range report.Mismatches {
		printf(stdout, "mismatch %s: redis version %d, events version %d, state differs: %v\n", m.AggregateID, m.RedisVersion, m.EventVersion, m.StateDiffers)
	}
	for _, id := range report.Gaps {
		printf(stdout, "version gap in the events of %s\n", id)
	}
	verb := "rewrote"
	if dryRun {
		verb = "would rewrite"
	}
	for partition, deleted := range report.DeletedOffsets {
		printf(stdout, "PARTIAL HISTORY: events partition %d lost its first %d records to retention\n", partition, deleted)
	}
	printf(stdout, "read %d events of %d aggregates; %s %d aggregates; dropped %d unpublished decisions and %d outcome records\n",
		report.Events, report.Aggregates, verb, len(report.Mismatches), report.Forgotten.Decisions, report.Forgotten.Outcomes)
	if dryRun && len(report.Mismatches) > 0 {
		return &foundError{msg: "redis differs from the events topic; run without --dry-run to rewrite it"}
	}
	return nil
}
