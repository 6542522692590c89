package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/internal/testenv"
	"github.com/arbiter-cqrs/arbiter/internal/testkit"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
)

// TestConsumerHandsOnTheTraceContext: Handle's ctx holds the span context
// of the event record's traceparent, so the handler's spans join the trace
// of the command that produced the event.
func TestConsumerHandsOnTheTraceContext(t *testing.T) {
	brokers := testenv.Brokers(t)
	topic := testenv.Name(t, "events")
	testenv.CreateTopics(t, brokers, 1, topic)
	traced := eventRecord(t, topic, "a", 1)
	traced.Headers = []kgo.RecordHeader{{Key: events.HeaderTraceparent, Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}}
	testkit.Produce(t, brokers, traced, eventRecord(t, topic, "a", 2))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var spanContexts []trace.SpanContext
	consumer, err := events.NewConsumer(events.ConsumerConfig{Brokers: brokers, Topic: topic,
		Handle: func(ctx context.Context, p events.EventParams) error {
			spanContexts = append(spanContexts, trace.SpanContextFromContext(ctx))
			if len(spanContexts) == 2 {
				cancel()
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := consumer.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if len(spanContexts) != 2 {
		t.Fatalf("handled %d events, want 2", len(spanContexts))
	}
	if got := spanContexts[0]; got.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || got.SpanID().String() != "00f067aa0ba902b7" || !got.IsRemote() {
		t.Fatalf("the traced event was handled with span context %v", got)
	}
	if spanContexts[1].IsValid() {
		t.Fatalf("an event without trace context was handled with %v", spanContexts[1])
	}
}
