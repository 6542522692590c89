package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/versionstore"
)

// topicsOf creates commands, events and conflicts topics for one test.
func topicsOf(t *testing.T, brokers []string, partitions int32) Config {
	t.Helper()
	cfg := Config{
		Brokers:        brokers,
		CommandsTopic:  testenv.Name(t, "commands"),
		EventsTopic:    testenv.Name(t, "events"),
		ConflictsTopic: testenv.Name(t, "conflicts"),
	}
	testenv.CreateTopics(t, brokers, partitions, cfg.CommandsTopic, cfg.EventsTopic, cfg.ConflictsTopic)
	return cfg
}

// newProducer returns a Kafka client, transactional when transactionalID is
// not empty, closed when the test ends.
func newProducer(t *testing.T, brokers []string, transactionalID string) *kgo.Client {
	t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	if transactionalID != "" {
		opts = append(opts, kgo.TransactionalID(transactionalID))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatalf("create producer: %v", err)
	}
	t.Cleanup(client.Close)
	return client
}

// produce sends records and returns their positions.
func produce(ctx context.Context, t *testing.T, client *kgo.Client, records ...*kgo.Record) []Position {
	t.Helper()
	results := client.ProduceSync(ctx, records...)
	if err := results.FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	positions := make([]Position, len(results))
	for i, result := range results {
		positions[i] = Position{Partition: result.Record.Partition, Offset: result.Record.Offset}
	}
	return positions
}

// inTransaction produces records in one transaction and ends it.
func inTransaction(ctx context.Context, t *testing.T, client *kgo.Client, commit kgo.TransactionEndTry, records ...*kgo.Record) []Position {
	t.Helper()
	if err := client.BeginTransaction(); err != nil {
		t.Fatalf("begin transaction: %v", err)
	}
	positions := produce(ctx, t, client, records...)
	if err := client.EndTransaction(ctx, commit); err != nil {
		t.Fatalf("end transaction (commit %v): %v", commit, err)
	}
	return positions
}

func jsonRecord(t *testing.T, topic, key string, value any) *kgo.Record {
	t.Helper()
	encoded, err := json.Marshal(value)
	if err != nil {
		t.Fatalf("encode %T: %v", value, err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: encoded}
}

func eventRecord(t *testing.T, topic, aggregateID, commandID string, version int64) *kgo.Record {
	return jsonRecord(t, topic, aggregateID, events.Event{
		ID: events.EventID(aggregateID, version), AggregateID: aggregateID, Type: "Changed", Version: version, CommandID: commandID,
	})
}

func positionsOf[R any](records []R, position func(R) Position) []Position {
	positions := make([]Position, len(records))
	for i, rec := range records {
		positions[i] = position(rec)
	}
	return positions
}

func samePositions(got, want []Position) bool {
	got, want = slices.Clone(got), slices.Clone(want)
	slices.SortFunc(got, comparePositions)
	slices.SortFunc(want, comparePositions)
	return slices.Equal(got, want)
}

// TestRead produces the outcomes of three commands the way workers do, with
// an aborted attempt before a replay and an aborted transaction last, and
// checks that Read returns the committed records only and lists the aborted
// ones.
func TestRead(t *testing.T) {
	brokers := testenv.Brokers(t)
	cfg := topicsOf(t, brokers, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	services := newProducer(t, brokers, "")
	command := func(id string, expectedVersion int64) *kgo.Record {
		return jsonRecord(t, cfg.CommandsTopic, "a", commands.Command{ID: id, AggregateID: "a", Type: "Change", ExpectedVersion: expectedVersion})
	}
	invalid := &kgo.Record{Topic: cfg.CommandsTopic, Key: []byte("a"), Value: []byte("{oops")}
	commandPositions := produce(ctx, t, services, command("c1", 0), invalid, command("c2", 1))

	worker := newProducer(t, brokers, testenv.Name(t, "worker"))
	invalidConflict := jsonRecord(t, cfg.ConflictsTopic, "a", events.Conflict{
		AggregateID: "a", Reason: events.ReasonInvalid, RawValue: invalid.Value,
		Source: events.Source{Topic: cfg.CommandsTopic, Partition: commandPositions[1].Partition, Offset: commandPositions[1].Offset},
	})
	committed := inTransaction(ctx, t, worker, kgo.TryCommit, eventRecord(t, cfg.EventsTopic, "a", "c1", 1), invalidConflict)
	abortedEvents := inTransaction(ctx, t, worker, kgo.TryAbort, eventRecord(t, cfg.EventsTopic, "a", "c2", 2))
	committed = append(committed, inTransaction(ctx, t, worker, kgo.TryCommit, eventRecord(t, cfg.EventsTopic, "a", "c2", 2))...)
	// An aborted transaction ends the conflicts topic: its marker is the
	// last record before the end, which Read must see to stop.
	abortedConflicts := inTransaction(ctx, t, worker, kgo.TryAbort, jsonRecord(t, cfg.ConflictsTopic, "a", events.Conflict{
		CommandID: "c2", AggregateID: "a", Reason: events.ReasonRejected,
		Source: events.Source{Topic: cfg.CommandsTopic, Partition: commandPositions[2].Partition, Offset: commandPositions[2].Offset},
	}))

	h, err := Read(ctx, cfg)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	wantEvents := []Position{committed[0], committed[2]}
	wantConflicts := []Position{committed[1]}
	checks := []struct {
		what      string
		got, want []Position
	}{
		{"commands", positionsOf(h.Commands, func(r CommandRecord) Position { return r.Position }), commandPositions},
		{"events", positionsOf(h.Events, func(r EventRecord) Position { return r.Position }), wantEvents},
		{"conflicts", positionsOf(h.Conflicts, func(r ConflictRecord) Position { return r.Position }), wantConflicts},
		{"aborted events", h.AbortedEvents, abortedEvents},
		{"aborted conflicts", h.AbortedConflicts, abortedConflicts},
	}
	for _, check := range checks {
		if !samePositions(check.got, check.want) {
			t.Errorf("Read returned %s at %v, want %v", check.what, check.got, check.want)
		}
	}
	if h.CommandsTopic != cfg.CommandsTopic {
		t.Errorf("History.CommandsTopic = %q, want %q", h.CommandsTopic, cfg.CommandsTopic)
	}
	for _, rec := range h.Events {
		if rec.Err != nil || rec.Event.AggregateID != "a" {
			t.Errorf("event at %s decoded as %+v, %v", rec.Position, rec.Event, rec.Err)
		}
	}
	if report := Check(h, CheckOptions{RedisVersions: map[string]int64{"a": 2}}); !report.OK() {
		t.Errorf("Check of the history Read returned:\n%s\n%v", report.Summary(), report.Anomalies)
	}

	// A second client, kcat (librdkafka), agrees with franz-go on what
	// read_committed returns, aborted transactions included.
	anomalies, err := CrossCheck(ctx, cfg, h)
	if err != nil {
		t.Fatalf("CrossCheck: %v", err)
	}
	if len(anomalies) != 0 {
		t.Errorf("kcat and franz-go disagree on the committed records: %v", anomalies)
	}
	// A history that lost a committed event is caught.
	torn := *h
	torn.Events = h.Events[1:]
	anomalies, err = CrossCheck(ctx, cfg, &torn)
	if err != nil {
		t.Fatalf("CrossCheck: %v", err)
	}
	if len(anomalies) != 1 || anomalies[0].Kind != KindClientDisagreement || anomalies[0].Events[0] != committed[0] {
		t.Errorf("CrossCheck of a history without the event at %s returned %v, want one client_disagreement", committed[0], anomalies)
	}
}

// TestReadBeforeOpenTransaction reads while a transaction is open and another
// one, aborted, has its records below the last stable offset but its marker
// above it: the committed read is never given those records nor the marker,
// and must stop at the last record it is given.
func TestReadBeforeOpenTransaction(t *testing.T) {
	brokers := testenv.Brokers(t)
	cfg := topicsOf(t, brokers, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	plain := newProducer(t, brokers, "")
	first := newProducer(t, brokers, testenv.Name(t, "first"))
	open := newProducer(t, brokers, testenv.Name(t, "open"))

	visible := produce(ctx, t, plain, eventRecord(t, cfg.EventsTopic, "a", "c1", 1))
	if err := first.BeginTransaction(); err != nil {
		t.Fatalf("begin transaction: %v", err)
	}
	aborted := produce(ctx, t, first, eventRecord(t, cfg.EventsTopic, "a", "c2", 2), eventRecord(t, cfg.EventsTopic, "a", "c2", 3))
	if err := open.BeginTransaction(); err != nil {
		t.Fatalf("begin transaction: %v", err)
	}
	produce(ctx, t, open, eventRecord(t, cfg.EventsTopic, "a", "c3", 2))
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := open.EndTransaction(ctx, kgo.TryAbort); err != nil {
			t.Errorf("abort the open transaction: %v", err)
		}
	}()
	if err := first.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatalf("abort transaction: %v", err)
	}

	readCtx, cancelRead := context.WithTimeout(ctx, 20*time.Second)
	defer cancelRead()
	h, err := Read(readCtx, cfg)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if got := positionsOf(h.Events, func(r EventRecord) Position { return r.Position }); !samePositions(got, visible) {
		t.Errorf("Read returned events at %v, want %v (the open transaction's record is past the last stable offset)", got, visible)
	}
	if !samePositions(h.AbortedEvents, aborted) {
		t.Errorf("Read listed aborted events at %v, want %v", h.AbortedEvents, aborted)
	}
}

func TestReadMissingTopic(t *testing.T) {
	brokers := testenv.Brokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{Brokers: brokers, CommandsTopic: testenv.Name(t, "missing"), EventsTopic: testenv.Name(t, "missing"), ConflictsTopic: testenv.Name(t, "missing")}
	if _, err := Read(ctx, cfg); err == nil {
		t.Errorf("Read of topics that do not exist returned no error")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "defaults", cfg: Config{Brokers: []string{"k:9092"}}},
		{name: "no brokers", cfg: Config{}, wantErr: true},
		{name: "same topic twice", cfg: Config{Brokers: []string{"k:9092"}, EventsTopic: "x", ConflictsTopic: "x"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.setDefaults()
			if err := tt.cfg.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate() = %v, want an error: %v", err, tt.wantErr)
			}
		})
	}
}

func TestRedisVersions(t *testing.T) {
	client := testenv.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := testenv.Name(t, "arbiter")
	other := prefix + "-other"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, pattern := range []string{prefix + ":*", other + ":*"} {
			iter := client.Scan(ctx, 0, pattern, 1000).Iterator()
			for iter.Next(ctx) {
				client.Del(ctx, iter.Val())
			}
			if err := iter.Err(); err != nil {
				t.Errorf("delete the test keys: %v", err)
			}
		}
	})

	// More aggregates than one pipelined chunk, one of them with "}" in
	// its ID.
	want := map[string]int64{"odd}id": 7}
	for i := range 2*1000 + 10 {
		want[fmt.Sprintf("agg-%d", i)] = int64(i % 13)
	}
	var aggregates []versionstore.Aggregate
	for id, version := range want {
		aggregates = append(aggregates, versionstore.Aggregate{ID: id, Version: version})
	}
	if err := versionstore.New(client, versionstore.Options{KeyPrefix: prefix}).Put(ctx, aggregates); err != nil {
		t.Fatalf("put aggregates: %v", err)
	}
	if err := versionstore.New(client, versionstore.Options{KeyPrefix: other}).Put(ctx, []versionstore.Aggregate{{ID: "elsewhere", Version: 3}}); err != nil {
		t.Fatalf("put aggregates: %v", err)
	}
	// Outcome keys are strings, even when a command ID ends with "}".
	for _, key := range []string{prefix + ":{agg-1}:c:cmd-1", prefix + ":{agg-1}:c:cmd}"} {
		if err := client.Set(ctx, key, "{}", time.Minute).Err(); err != nil {
			t.Fatalf("set outcome key: %v", err)
		}
	}

	got, err := RedisVersions(ctx, client, prefix)
	if err != nil {
		t.Fatalf("RedisVersions: %v", err)
	}
	if len(got) != len(want) {
		t.Errorf("RedisVersions returned %d aggregates, want %d", len(got), len(want))
	}
	for id, version := range want {
		if got[id] != version {
			t.Errorf("RedisVersions()[%q] = %d, want %d", id, got[id], version)
		}
	}
}
