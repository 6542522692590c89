package processor

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/versionstore"
	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// RebuildConfig configures Rebuild.
type RebuildConfig struct {
	// Brokers are the Kafka seed brokers. Required.
	Brokers []string
	// EventsTopic is read from its start. default: "events"
	EventsTopic string
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
}

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
func Rebuild(ctx context.Context, cfg RebuildConfig) (RebuildReport, error) {
	var report RebuildReport
	if cfg.EventsTopic == "" {
		cfg.EventsTopic = "events"
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if len(cfg.Brokers) == 0 || cfg.Registry == nil || cfg.Store == nil {
		return report, errors.New("rebuild needs brokers, a registry and a store")
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records are kept so that the read can tell when it has
		// reached the last stable offset even when a transaction marker
		// ends the partition.
		kgo.KeepControlRecords(),
		kgo.ClientID(defaultClientID),
	}, cfg.KafkaOptions...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return report, errors.Wrap(err, "create the Kafka client for the rebuild")
	}
	defer client.Close()
	admin := kadm.NewClient(client)
	ends, err := settledEnds(ctx, admin, cfg.EventsTopic, cfg.Logger)
	if err != nil {
		return report, err
	}
	starts, err := admin.ListStartOffsets(ctx, cfg.EventsTopic)
	if err != nil {
		return report, errors.Wrapf(err, "list the start offsets of topic %s", cfg.EventsTopic)
	}
	remaining := make(map[int32]int64)
	assign := make(map[int32]kgo.Offset)
	ends.Each(func(o kadm.ListedOffset) {
		start, _ := starts.Lookup(o.Topic, o.Partition)
		if o.Offset > start.Offset {
			remaining[o.Partition] = o.Offset
			assign[o.Partition] = kgo.NewOffset().At(start.Offset)
		}
	})
	client.AddConsumePartitions(map[string]map[int32]kgo.Offset{cfg.EventsTopic: assign})

	type rebuilt struct {
		aggregate versionstore.Aggregate
		gap       bool
	}
	byID := make(map[string]*rebuilt)
	var order []string
	lastLog := time.Now()
	for len(remaining) > 0 {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			return report, ctx.Err()
		}
		if err := fetches.Err(); err != nil {
			return report, errors.Wrapf(err, "read topic %s", cfg.EventsTopic)
		}
		var evolveErr error
		fetches.EachRecord(func(rec *kgo.Record) {
			if end, ok := remaining[rec.Partition]; ok && rec.Offset+1 >= end {
				delete(remaining, rec.Partition)
			}
			if rec.Attrs.IsControl() || evolveErr != nil {
				return
			}
			var event events.Event
			if err := json.Unmarshal(rec.Value, &event); err != nil {
				cfg.Logger.Warn("skipping an event that does not decode", zap.Int32("partition", rec.Partition), zap.Int64("offset", rec.Offset), errorField(err))
				return
			}
			report.Events++
			r, ok := byID[event.AggregateID]
			if !ok {
				r = &rebuilt{aggregate: versionstore.Aggregate{ID: event.AggregateID}}
				byID[event.AggregateID] = r
				order = append(order, event.AggregateID)
			}
			if event.Version != r.aggregate.Version+1 {
				r.gap = true
			}
			r.aggregate.Version = event.Version
			if event.AggregateType != "" {
				r.aggregate.Type = event.AggregateType
			}
			state, err := cfg.Registry.Evolve(r.aggregate.Type, r.aggregate.State, event)
			if err != nil {
				evolveErr = errors.Wrapf(err, "rebuild aggregate %s", event.AggregateID)
				return
			}
			r.aggregate.State = state
		})
		if evolveErr != nil {
			return report, evolveErr
		}
		if time.Since(lastLog) > 5*time.Second {
			cfg.Logger.Info("rebuilding versions", zap.Int64("events", report.Events), zap.Int("aggregates", len(byID)))
			lastLog = time.Now()
		}
	}
	report.Aggregates = len(order)

	const chunk = 1000
	for start := 0; start < len(order); start += chunk {
		ids := order[start:min(start+chunk, len(order))]
		current, _, err := cfg.Store.Load(ctx, ids, nil)
		if err != nil {
			return report, err
		}
		var writes []versionstore.Aggregate
		for _, id := range ids {
			r := byID[id]
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
				return report, err
			}
		}
	}
	if !cfg.DryRun {
		// Redis now holds what the events topic says: workers waiting on a
		// missing marker resume.
		if err := cfg.Store.Init(ctx); err != nil {
			return report, err
		}
	}
	return report, nil
}

// settledEnds returns the end offsets of a topic once no transaction is open
// on it (its last stable offsets equal its high watermarks): then the last
// record of each partition is one a read_committed reader that keeps control
// records is given — a commit or abort marker, or a committed record — and
// the read can tell it has reached the end. With a transaction open, records
// of an aborted one may lie below the last stable offset with its marker
// above, and such a reader would wait for them forever. Open transactions end
// within the transaction timeout once the workers stop.
func settledEnds(ctx context.Context, admin *kadm.Client, topic string, log *zap.Logger) (kadm.ListedOffsets, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		stable, err := admin.ListCommittedOffsets(ctx, topic)
		if err == nil {
			err = stable.Error()
		}
		if err != nil {
			return nil, errors.Wrapf(err, "list the last stable offsets of topic %s (does it exist?)", topic)
		}
		high, err := admin.ListEndOffsets(ctx, topic)
		if err == nil {
			err = high.Error()
		}
		if err != nil {
			return nil, errors.Wrapf(err, "list the end offsets of topic %s", topic)
		}
		open := 0
		high.Each(func(o kadm.ListedOffset) {
			if s, ok := stable.Lookup(o.Topic, o.Partition); !ok || s.Offset != o.Offset {
				open++
			}
		})
		if open == 0 {
			return high, nil
		}
		if time.Now().After(deadline) {
			return nil, errors.Newf("%d partitions of topic %s still have an open transaction after 5 minutes; stop the workers and retry", open, topic)
		}
		log.Info("waiting for open transactions on the events topic to end (stop the workers before rebuilding)", zap.Int("partitions", open))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
