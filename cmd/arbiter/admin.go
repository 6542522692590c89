package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"strconv"
	"time"

	"github.com/arbiter-cqrs/arbiter/examples/product"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// runTopics creates the three topics.
func runTopics(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		return usagef("usage: arbiter topics create [--partitions N] [--replication-factor R] [flags]")
	}
	var f commonFlags
	fs := flag.NewFlagSet("topics create", flag.ContinueOnError)
	f.register(fs)
	partitions := fs.Int("partitions", envInt("ARBITER_PARTITIONS", 12), "partitions per topic (ARBITER_PARTITIONS)")
	replication := fs.Int("replication-factor", envInt("ARBITER_REPLICATION_FACTOR", -1), "replication factor; -1 takes the broker default (ARBITER_REPLICATION_FACTOR)")
	conflictsRetention := fs.Duration("conflicts-retention", envDuration("ARBITER_CONFLICTS_RETENTION", 7*24*time.Hour), "how long the conflicts topic keeps records; the events topic keeps every event (ARBITER_CONFLICTS_RETENTION)")
	if err := parse(fs, args[1:], stderr); err != nil {
		return err
	}
	brokers := f.brokerList()
	if len(brokers) == 0 {
		return usagef("no Kafka brokers: set --brokers or ARBITER_BROKERS")
	}
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return usagef("--brokers %q: %v", f.brokers, err)
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	createCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The events topic is the source of truth rebuild-versions reads from
	// offset 0: it must never delete an event.
	retention := map[string]string{
		f.commandsTopic:  "",
		f.eventsTopic:    "-1",
		f.conflictsTopic: strconv.FormatInt(conflictsRetention.Milliseconds(), 10),
	}
	var results []kadm.CreateTopicResponse
	for _, topic := range []string{f.commandsTopic, f.eventsTopic, f.conflictsTopic} {
		var configs map[string]*string
		if value := retention[topic]; value != "" {
			configs = map[string]*string{"retention.ms": &value}
		}
		created, err := admin.CreateTopics(createCtx, int32(*partitions), int16(*replication), configs, topic)
		if err != nil {
			return &unreachableError{err: errors.Wrapf(err, "kafka at %s does not answer; check --brokers", f.brokers)}
		}
		results = append(results, created.Sorted()...)
	}
	var failed error
	for _, r := range results {
		switch {
		case r.Err == nil && retention[r.Topic] != "":
			printf(stdout, "created topic %s with %d partitions, retention.ms=%s\n", r.Topic, *partitions, retention[r.Topic])
		case r.Err == nil:
			printf(stdout, "created topic %s with %d partitions\n", r.Topic, *partitions)
		case errors.Is(r.Err, kerr.TopicAlreadyExists):
			printf(stdout, "topic %s already exists\n", r.Topic)
		default:
			failed = errors.CombineErrors(failed, errors.Wrapf(r.Err, "create topic %s", r.Topic))
		}
	}
	return failed
}

// runGet prints an aggregate's version and state as Redis holds them.
func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f commonFlags
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	f.register(fs)
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("usage: arbiter get [flags] <aggregate-id>")
	}
	store, closeStore, err := f.redisStore(ctx, versionstore.Options{})
	if err != nil {
		return err
	}
	defer closeStore()
	aggregate, err := store.Get(ctx, fs.Arg(0))
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

// runRebuild recomputes versions and snapshots from the events topic.
func runRebuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f commonFlags
	fs := flag.NewFlagSet("rebuild-versions", flag.ContinueOnError)
	f.register(fs)
	dryRun := fs.Bool("dry-run", false, "report mismatches without writing; exit code 4 when there are any")
	group := fs.String("group", envString("ARBITER_GROUP", "arbiter"), "consumer group of the workers: must have no members, and its committed offsets say which decisions were published (ARBITER_GROUP)")
	force := fs.Bool("force", false, "rebuild even while the workers' group has members (they are fenced off and wait)")
	allowPartial := fs.Bool("allow-partial", false, "rebuild from an events topic whose first events retention deleted (versions and snapshots of those aggregates will be wrong)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	log, err := f.logger(stderr)
	if err != nil {
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
	registry := processor.NewRegistry()
	if err := product.Register(registry); err != nil {
		return err
	}
	report, err := processor.Rebuild(ctx, processor.RebuildConfig{
		Brokers: f.brokerList(), EventsTopic: f.eventsTopic, CommandsTopic: f.commandsTopic, Group: *group,
		Force: *force, AllowPartial: *allowPartial, Registry: registry, Store: store, DryRun: *dryRun, Logger: log,
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
	if *dryRun {
		verb = "would rewrite"
	}
	for partition, deleted := range report.DeletedOffsets {
		printf(stdout, "PARTIAL HISTORY: events partition %d lost its first %d records to retention\n", partition, deleted)
	}
	printf(stdout, "read %d events of %d aggregates; %s %d aggregates; dropped %d unpublished decisions and %d outcome records\n",
		report.Events, report.Aggregates, verb, len(report.Mismatches), report.Forgotten.Decisions, report.Forgotten.Outcomes)
	if *dryRun && len(report.Mismatches) > 0 {
		return &foundError{msg: "redis differs from the events topic; run without --dry-run to rewrite it"}
	}
	return nil
}
