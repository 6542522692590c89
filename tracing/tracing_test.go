package tracing_test

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/arbiter-cqrs/arbiter/processor"
	"github.com/arbiter-cqrs/arbiter/tracing"
	"github.com/arbiter-cqrs/arbiter/versionstore"
)

const (
	commandTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	commandTraceparent = "00-" + commandTraceID + "-00f067aa0ba902b7-01"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestProcessSpanLinksEachCommand(t *testing.T) {
	recorder := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	tracer := tracing.New(provider)
	records := []*kgo.Record{
		{Partition: 1, Offset: 7, Headers: []kgo.RecordHeader{{Key: events.HeaderTraceparent, Value: []byte(commandTraceparent)}}},
		{Partition: 1, Offset: 8}, // no trace context: no link
	}
	ctx, end := tracer.StartBatch(context.Background(), processor.TracedBatch{Records: records, CommandsTopic: "commands", Group: "g"})
	if !trace.SpanContextFromContext(ctx).IsValid() {
		t.Fatal("the batch context holds no span")
	}
	end(processor.BatchParams{Records: 2, Applied: 1, Conflicts: 1}, errors.New("transaction aborted"))
	spans := recorder.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want one per batch", len(spans))
	}
	span := spans[0]
	if span.Name() != "process commands" || span.SpanKind() != trace.SpanKindConsumer {
		t.Fatalf("span %q of kind %v, want a consumer span \"process commands\"", span.Name(), span.SpanKind())
	}
	if links := span.Links(); len(links) != 1 || links[0].SpanContext.TraceID().String() != commandTraceID {
		t.Fatalf("links %+v, want one to the traced command", links)
	}
	if span.Parent().IsValid() {
		t.Fatalf("the process span has parent %v; commands are links, not parents", span.Parent())
	}
	attributes := make(map[string]string)
	for _, kv := range span.Attributes() {
		attributes[string(kv.Key)] = kv.Value.String()
	}
	for key, want := range map[string]string{
		"messaging.system": "kafka", "messaging.operation.type": "process", "messaging.destination.name": "commands",
		"messaging.consumer.group.name": "g", "messaging.batch.message_count": "2", "arbiter.applied": "1",
	} {
		if attributes[key] != want {
			t.Errorf("attribute %s = %q, want %q", key, attributes[key], want)
		}
	}
	if span.Status().Code != codes.Error {
		t.Errorf("an aborted batch's span has status %v, want Error", span.Status())
	}
}

// TestTracedWorker runs a worker with the tracer and kotel's client spans
// on the real stack: the command's traceparent still reaches its event
// unchanged (kotel writes no headers), and the batch's span links the
// command's trace.
func TestTracedWorker(t *testing.T) {
	brokers := testenv.Brokers(t)
	name := testenv.Name(t, "")
	topics := testkit.Topics{Commands: name + "-commands", Events: name + "-events", Conflicts: name + "-conflicts"}
	testenv.CreateTopics(t, brokers, 1, topics.Commands, topics.Events, topics.Conflicts)
	recorder := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	tracer := tracing.New(provider)
	worker, err := processor.New(processor.Config{
		Brokers: brokers, Group: name, CommandsTopic: topics.Commands, EventsTopic: topics.Events, ConflictsTopic: topics.Conflicts,
		Registry: processor.NewRegistry(), Store: versionstore.New(testenv.Redis(t), versionstore.Options{KeyPrefix: name}),
		Logger: zaptest.NewLogger(t), SessionTimeout: 6 * time.Second,
		Tracer: tracer, KafkaOptions: tracer.KafkaOptions(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()

	record := testkit.CommandRecord(t, topics.Commands, commands.Command{ID: "c-1", AggregateID: "a-1", Type: processor.AppendEventsType,
		ExpectedVersion: 0, Payload: []byte(`{"events":[{"type":"Opened"}]}`)})
	record.Headers = []kgo.RecordHeader{{Key: events.HeaderTraceparent, Value: []byte(commandTraceparent)}}
	testkit.Produce(t, brokers, record)

	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics.Events),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	pollCtx, cancelPoll := context.WithTimeout(ctx, time.Minute)
	defer cancelPoll()
	var event *kgo.Record
	for event == nil {
		fetches := client.PollRecords(pollCtx, 1)
		if pollCtx.Err() != nil {
			t.Fatal("no event within a minute")
		}
		if records := fetches.Records(); len(records) > 0 {
			event = records[0]
		}
	}
	var traceparents []string
	for _, h := range event.Headers {
		if h.Key == events.HeaderTraceparent {
			traceparents = append(traceparents, string(h.Value))
		}
	}
	if len(traceparents) != 1 || traceparents[0] != commandTraceparent {
		t.Fatalf("the event's traceparent headers are %q, want exactly the command's %q", traceparents, commandTraceparent)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("worker: %v", err)
	}
	done <- nil
	var process, publish int
	for _, span := range recorder.Ended() {
		switch span.Name() {
		case "process " + topics.Commands:
			if links := span.Links(); len(links) == 1 && links[0].SpanContext.TraceID().String() == commandTraceID {
				process++
			}
		case topics.Events + " publish", "publish " + topics.Events:
			publish++
		}
	}
	if process != 1 || publish != 1 {
		var names []string
		for _, span := range recorder.Ended() {
			names = append(names, span.Name())
		}
		t.Fatalf("%d process spans linked to the command, %d publish spans of the event; want 1 and 1 (spans: %q)", process, publish, names)
	}
}
