package processor

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/internal/topicread"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// RebuildConfig configures Rebuild.
type RebuildConfig struct {
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// EventsTopic is read from its start. default: "events"
	EventsTopic string
	// CommandsTopic and Group name the workers' consumer group and the
	// topic it consumes: the rebuild refuses to run while the group has
	// members, and keeps only the decisions of command records before the
	// group's committed offsets. default: "commands", "arbiter"
	CommandsTopic string
	Group         string
	// Force rebuilds even while the group has members. They are fenced
	// off (the amnesia marker is deleted first) and wait for the rebuild,
	// but a batch one of them decided just before is lost from Redis.
	Force bool
	// AllowPartial rebuilds from an events topic whose first events were
	// deleted (its log start offset is not 0): the versions then count
	// from the first event left, and the snapshots lack what was deleted.
	AllowPartial bool
	// Registry evolves the state snapshots. Required.
	Registry *Registry
	// Store receives the rebuilt versions. Required.
	Store *versionstore.Store
	// DryRun compares without writing.
	DryRun bool
	// Logger receives progress. default: zap.NewNop()
	Logger *zap.Logger
	// KafkaOptions are added to the client options.
	KafkaOptions []kgo.Opt
}

// RebuildReport says what Rebuild found.
type RebuildReport struct {
	// Events is the number of committed events read.
	Events int64
	// Aggregates is the number of aggregates seen.
	Aggregates int
	// Mismatches lists the aggregates whose version, type or snapshot in
	// Redis differed from the events topic (before writing, if any).
	Mismatches []Mismatch
	// Gaps lists aggregates whose versions in the events topic are not
	// contiguous; their rebuilt version is the last event's.
	Gaps []string
	// Forgotten says how many decisions and outcome records of commands
	// whose outcomes were never committed were dropped.
	Forgotten versionstore.ForgetReport
	// DeletedOffsets is, per events partition, how many records retention
	// deleted before the rebuild read it (only with AllowPartial).
	DeletedOffsets map[int32]int64
}

// ErrGroupActive is returned by Rebuild when the workers' consumer group has
// members: a rebuild under running workers would rewind versions they are
// deciding on. Stop the workers (or pass Force).
var ErrGroupActive = errors.New("the workers' consumer group has members; stop the workers before rebuilding (or force it)")

// ErrPartialHistory is returned by Rebuild when the events topic no longer
// starts at offset 0: retention deleted events, and versions and snapshots
// rebuilt from the rest would be wrong. Restore the events, or accept the
// loss with AllowPartial.
var ErrPartialHistory = errors.New("the events topic does not start at offset 0: retention deleted events the rebuild needs")

// Mismatch is one aggregate whose Redis state differs from the events topic.
type Mismatch struct {
	AggregateID  string
	RedisVersion int64
	EventVersion int64
	StateDiffers bool
}

// Rebuild recomputes every aggregate's version, type and state snapshot from
// the committed events in the events topic and writes them to Redis: the
// recovery path after Redis lost its data. Stop the workers while it runs.
//
// Its stages: check the history is whole and the workers idle, fence them
// off, read the events topic to its settled end, evolving each aggregate,
// write the aggregates that differ, reset the ones with no event, drop the
// decisions never published, and write the marker the workers wait for.
func Rebuild(ctx context.Context, cfg RebuildConfig) (RebuildReport, error) {
	var report RebuildReport
	cfg.setDefaults()
	if len(cfg.Brokers) == 0 || cfg.Registry == nil || cfg.Store == nil {
		return report, errors.New("rebuild needs brokers, a registry and a store")
	}
	kafkaOpts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.ClientID(defaultClientID)}, cfg.KafkaOptions...)
	client, err := kgo.NewClient(kafkaOpts...)
	if err != nil {
		return report, errors.Wrap(err, "create the Kafka client for the rebuild")
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	if err := prepareRebuild(ctx, admin, cfg, &report); err != nil {
		return report, err
	}
	read := topicread.Config{Topics: []string{cfg.EventsTopic}, End: topicread.Settled, KafkaOptions: kafkaOpts, Logger: cfg.Logger}
	ends, err := topicread.FindEnds(ctx, read)
	if err != nil {
		return report, errors.Wrap(err, "find the end of the events topic (stop the workers before rebuilding)")
	}
	// After the ends are settled: no transaction of a fenced worker can
	// commit offsets any more.
	neverPublished := true
	for _, partition := range ends[cfg.EventsTopic] {
		neverPublished = neverPublished && partition.HighWatermark == 0
	}
	committed, err := committedOffsets(ctx, admin, cfg, neverPublished)
	if err != nil {
		return report, err
	}
	rebuilt, err := evolveEvents(ctx, cfg, read, ends, &report)
	if err != nil {
		return report, err
	}
	if err := writeRebuilt(ctx, cfg, rebuilt, &report); err != nil {
		return report, err
	}
	unpublished, err := findUnpublished(ctx, cfg, rebuilt, &report)
	if err != nil {
		return report, err
	}
	if cfg.DryRun {
		return report, nil
	}
	return report, finishRebuild(ctx, admin, cfg, unpublished, committed, &report)
}

func (cfg *RebuildConfig) setDefaults() {
	if cfg.EventsTopic == "" {
		cfg.EventsTopic = "events"
	}
	if cfg.CommandsTopic == "" {
		cfg.CommandsTopic = "commands"
	}
	if cfg.Group == "" {
		cfg.Group = "arbiter"
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
}

// prepareRebuild refuses an events topic that lost its first events (unless
// AllowPartial) and, unless DryRun, running workers (unless Force), then
// fences the workers off: from here on every compare-and-set fails, and the
// workers wait for the marker the rebuild writes.
func prepareRebuild(ctx context.Context, admin *kadm.Client, cfg RebuildConfig, report *RebuildReport) error {
	starts, err := admin.ListStartOffsets(ctx, cfg.EventsTopic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return errors.Wrapf(err, "list the start offsets of topic %s", cfg.EventsTopic)
	}
	if err := checkHistory(cfg, starts, report); err != nil {
		return err
	}
	if cfg.DryRun {
		return nil
	}
	if err := checkGroupIdle(ctx, admin, cfg); err != nil {
		return err
	}
	return cfg.Store.Fence(ctx)
}

// rebuiltAggregates are the aggregates evolved from the events topic, in the
// order of their first event.
type rebuiltAggregates struct {
	byID  map[string]*rebuiltAggregate
	order []string
}

type rebuiltAggregate struct {
	aggregate versionstore.Aggregate
	// gap is set when the aggregate's versions are not contiguous.
	gap bool
}

// evolveEvents reads the events topic to ends and evolves every aggregate
// through its events.
func evolveEvents(ctx context.Context, cfg RebuildConfig, read topicread.Config, ends topicread.Ends, report *RebuildReport) (rebuiltAggregates, error) {
	rebuilt := rebuiltAggregates{byID: make(map[string]*rebuiltAggregate)}
	lastLog := time.Now()
	var evolveErr error
	err := topicread.ReadEnds(ctx, read, ends, func(rec *kgo.Record) error {
		var event events.Event
		if err := json.Unmarshal(rec.Value, &event); err != nil {
			cfg.Logger.Warn("skipping an event that does not decode", zap.Int32("partition", rec.Partition), zap.Int64("offset", rec.Offset), errorField(err))
			return nil
		}
		report.Events++
		if evolveErr = rebuilt.evolve(cfg.Registry, event); evolveErr != nil {
			return evolveErr
		}
		if report.Events%1024 == 0 && time.Since(lastLog) > 5*time.Second {
			cfg.Logger.Info("rebuilding versions", zap.Int64("events", report.Events), zap.Int("aggregates", len(rebuilt.byID)))
			lastLog = time.Now()
		}
		return nil
	})
	switch {
	case evolveErr != nil:
		return rebuilt, evolveErr
	case ctx.Err() != nil:
		return rebuilt, ctx.Err()
	case err != nil:
		return rebuilt, errors.Wrapf(err, "read topic %s", cfg.EventsTopic)
	}
	report.Aggregates = len(rebuilt.order)
	return rebuilt, nil
}

// evolve applies one event to its aggregate.
func (r *rebuiltAggregates) evolve(registry *Registry, event events.Event) error {
	a, ok := r.byID[event.AggregateID]
	if !ok {
		a = &rebuiltAggregate{aggregate: versionstore.Aggregate{ID: event.AggregateID}}
		r.byID[event.AggregateID] = a
		r.order = append(r.order, event.AggregateID)
	}
	if event.Version != a.aggregate.Version+1 {
		a.gap = true
	}
	a.aggregate.Version = event.Version
	if event.AggregateType != "" {
		a.aggregate.Type = event.AggregateType
	}
	state, err := registry.Evolve(a.aggregate.Type, a.aggregate.State, event)
	if err != nil {
		return errors.Wrapf(err, "rebuild aggregate %s", event.AggregateID)
	}
	a.aggregate.State = state
	return nil
}

// writeRebuilt compares the rebuilt aggregates with Redis, a chunk at a
// time, reports gaps and mismatches, and writes the ones that differ unless
// DryRun.
func writeRebuilt(ctx context.Context, cfg RebuildConfig, rebuilt rebuiltAggregates, report *RebuildReport) error {
	const chunk = 1000
	for start := 0; start < len(rebuilt.order); start += chunk {
		ids := rebuilt.order[start:min(start+chunk, len(rebuilt.order))]
		current, _, err := cfg.Store.Load(ctx, ids, nil)
		if err != nil {
			return err
		}
		var writes []versionstore.Aggregate
		for _, id := range ids {
			r := rebuilt.byID[id]
			if r.gap {
				report.Gaps = append(report.Gaps, id)
			}
			have := current[id]
			if have.Version != r.aggregate.Version || have.Type != r.aggregate.Type || !bytes.Equal(have.State, r.aggregate.State) {
				report.Mismatches = append(report.Mismatches, Mismatch{
					AggregateID:  id,
					RedisVersion: have.Version,
					EventVersion: r.aggregate.Version,
					StateDiffers: !bytes.Equal(have.State, r.aggregate.State),
				})
				writes = append(writes, r.aggregate)
			}
		}
		if !cfg.DryRun {
			if err := cfg.Store.Put(ctx, writes); err != nil {
				return err
			}
		}
	}
	return nil
}

// findUnpublished lists the aggregates Redis holds that have no event
// (decided, never published): they go back to nothing.
func findUnpublished(ctx context.Context, cfg RebuildConfig, rebuilt rebuiltAggregates, report *RebuildReport) ([]versionstore.Aggregate, error) {
	held, err := cfg.Store.Versions(ctx)
	if err != nil {
		return nil, err
	}
	var unpublished []versionstore.Aggregate
	for id, version := range held {
		if _, ok := rebuilt.byID[id]; !ok && version != 0 {
			report.Mismatches = append(report.Mismatches, Mismatch{AggregateID: id, RedisVersion: version})
			unpublished = append(unpublished, versionstore.Aggregate{ID: id})
		}
	}
	return unpublished, nil
}

// finishRebuild resets the unpublished aggregates, drops the decisions of
// commands whose outcomes were never committed with their outcome records
// (a replay would publish a version Redis no longer holds; they are decided
// again instead), sets the watermarks to the commands' end when no
// committed offset is known, and writes the marker: Redis now holds what the
// events topic says, and workers waiting on a missing marker resume.
func finishRebuild(ctx context.Context, admin *kadm.Client, cfg RebuildConfig, unpublished []versionstore.Aggregate, committed map[int32]int64, report *RebuildReport) error {
	if err := cfg.Store.Put(ctx, unpublished); err != nil {
		return err
	}
	var err error
	if report.Forgotten, err = cfg.Store.ForgetUnpublished(ctx, committed); err != nil {
		return err
	}
	if committed == nil {
		if err := resetToEnds(ctx, admin, cfg); err != nil {
			return err
		}
	}
	return cfg.Store.Init(ctx)
}

// checkHistory refuses an events topic that lost its first events, unless
// the loss is accepted.
func checkHistory(cfg RebuildConfig, starts kadm.ListedOffsets, report *RebuildReport) error {
	deleted := make(map[int32]int64)
	starts.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			deleted[o.Partition] = o.Offset
		}
	})
	if len(deleted) == 0 {
		return nil
	}
	if !cfg.AllowPartial {
		return errors.Wrapf(ErrPartialHistory, "topic %s: %d partitions start after offset 0 (%v); restore the events, or rebuild from what is left with --allow-partial",
			cfg.EventsTopic, len(deleted), deleted)
	}
	report.DeletedOffsets = deleted
	cfg.Logger.Error("REBUILDING FROM A PARTIAL HISTORY: retention deleted the first events of these partitions; aggregates whose first events are gone get wrong versions and snapshots",
		zap.String("topic", cfg.EventsTopic), zap.Any("deleted_records_per_partition", deleted))
	return nil
}

// checkGroupIdle refuses to run while the group has members that may be
// deciding (the marker is there), unless Force.
func checkGroupIdle(ctx context.Context, admin *kadm.Client, cfg RebuildConfig) error {
	described, err := admin.DescribeGroups(ctx, cfg.Group)
	if err != nil {
		return errors.Wrapf(err, "describe consumer group %s", cfg.Group)
	}
	if group, ok := described[cfg.Group]; ok && len(group.Members) > 0 {
		initialized, err := cfg.Store.Initialized(ctx)
		if err != nil {
			return err
		}
		if !initialized {
			// Without the marker no worker can decide: they wait for this
			// rebuild.
			cfg.Logger.Info("the workers' group has members, but redis has no initialization marker: they are waiting for this rebuild",
				zap.String("group", cfg.Group), zap.Int("members", len(group.Members)))
			return nil
		}
		if !cfg.Force {
			return errors.Wrapf(ErrGroupActive, "group %s has %d members", cfg.Group, len(group.Members))
		}
		cfg.Logger.Warn("rebuilding while the workers' group has members (forced): they are fenced off and wait for the rebuild",
			zap.String("group", cfg.Group), zap.Int("members", len(group.Members)))
	}
	return nil
}

// committedOffsets returns the group's committed offsets on the commands
// topic; a partition the group has no offset for falls back to Redis's
// committed watermark. nil: neither knows any offset (a --group other than
// the workers', or both lost).
//
// eventsEmpty keeps quiet about unknown offsets: nothing was ever published,
// so no decision can be lost (a fresh deployment, or the embedded mode's
// first start).
func committedOffsets(ctx context.Context, admin *kadm.Client, cfg RebuildConfig, eventsEmpty bool) (map[int32]int64, error) {
	_, committed, err := cfg.Store.Watermarks(ctx)
	if err != nil {
		return nil, err
	}
	fetched, err := admin.FetchOffsets(ctx, cfg.Group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return nil, errors.Wrapf(err, "fetch the committed offsets of group %s", cfg.Group)
	}
	fetched.Each(func(o kadm.OffsetResponse) {
		if o.Topic == cfg.CommandsTopic && o.Err == nil && o.At >= 0 {
			committed[o.Partition] = o.At
		}
	})
	if len(committed) == 0 {
		if eventsEmpty {
			return nil, nil
		}
		cfg.Logger.Warn("the group has no committed offsets on the commands topic and redis no committed watermark: every decision is kept; if the workers run in another group, rebuild again with its --group",
			zap.String("group", cfg.Group), zap.String("commands_topic", cfg.CommandsTopic))
		return nil, nil
	}
	return committed, nil
}

// resetToEnds sets the watermarks to the commands topic's end offsets: with
// no committed offset known, a worker must not take the commands before them
// for ones whose decisions Redis went back in time on.
func resetToEnds(ctx context.Context, admin *kadm.Client, cfg RebuildConfig) error {
	ends, err := admin.ListEndOffsets(ctx, cfg.CommandsTopic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return errors.Wrapf(err, "list the end offsets of topic %s", cfg.CommandsTopic)
	}
	offsets := make(map[int32]int64)
	ends.Each(func(o kadm.ListedOffset) { offsets[o.Partition] = o.Offset })
	return cfg.Store.ResetWatermarks(ctx, offsets)
}
