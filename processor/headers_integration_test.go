package processor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
	"github.com/arbiter-cqrs/arbiter/examples/product"
)

// TestTraceContextAndCloudEvents: commands.Producer writes the caller's span
// context into the command record; the worker carries it on to the event and
// the conflict record, which also carry CloudEvents binary-mode headers that
// the CloudEvents Go SDK reads into an event whose data is the record value.
func TestTraceContextAndCloudEvents(t *testing.T) {
	s := newStack(t, 2)
	s.startWorker(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	producer, err := commands.NewProducer(ctx, commands.ProducerConfig{
		Brokers: s.brokers, CommandsTopic: s.topics.Commands, EventsTopic: s.topics.Events, ConflictsTopic: s.topics.Conflicts,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()

	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	state, _ := trace.ParseTraceState("vendor=opaque")
	spanContext := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled, TraceState: state, Remote: true})
	traced := trace.ContextWithRemoteSpanContext(ctx, spanContext)
	const wantTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

	create := productCommand(t, "t-create", "p-1", product.CreateProductType, 0, product.CreateProduct{Name: "Lamp", Price: 10, Stock: 1})
	stale := productCommand(t, "t-stale", "p-1", product.ChangePriceType, 0, product.ChangePrice{NewPrice: 9})
	if _, err := producer.SendAndWait(traced, create); err != nil {
		t.Fatalf("send %s: %v", create.ID, err)
	}
	if _, err := producer.SendAndWait(traced, stale); err == nil {
		t.Fatalf("%s was applied; want a version conflict", stale.ID)
	}

	event := readOne(t, s.brokers, s.topics.Events)
	conflict := readOne(t, s.brokers, s.topics.Conflicts)
	for _, tc := range []struct {
		name string
		rec  *kgo.Record
		want map[string]string
	}{
		{"event", event, map[string]string{
			events.HeaderTraceparent: wantTraceparent, events.HeaderTracestate: "vendor=opaque",
			events.HeaderCESpecVersion: "1.0", events.HeaderCEID: "p-1@1", events.HeaderCESource: "/arbiter/" + s.group,
			events.HeaderCEType: product.ProductCreatedType, events.HeaderCESubject: "p-1", events.HeaderContentType: "application/json",
		}},
		{"conflict", conflict, map[string]string{
			events.HeaderTraceparent: wantTraceparent, events.HeaderTracestate: "vendor=opaque",
			events.HeaderCESpecVersion: "1.0", events.HeaderCESource: "/arbiter/" + s.group,
			events.HeaderCEType: "arbiter.conflict.version_conflict", events.HeaderCESubject: "p-1",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			headers := make(map[string]string)
			for _, h := range tc.rec.Headers {
				if _, dup := headers[h.Key]; dup {
					t.Errorf("header %s appears twice", h.Key)
				}
				headers[h.Key] = string(h.Value)
			}
			for key, want := range tc.want {
				if headers[key] != want {
					t.Errorf("header %s = %q, want %q (all: %v)", key, headers[key], want, headers)
				}
			}

			ce, err := binding.ToEvent(context.Background(), kafkaMessage{rec: tc.rec})
			if err != nil {
				t.Fatalf("the CloudEvents SDK does not read the record: %v", err)
			}
			if err := ce.Validate(); err != nil {
				t.Fatalf("not a valid CloudEvent: %v", err)
			}
			if ce.Subject() != "p-1" || ce.DataContentType() != cloudevents.ApplicationJSON || !bytes.Equal(ce.Data(), tc.rec.Value) {
				t.Fatalf("CloudEvent subject %q, content type %q, data %s; want p-1, JSON, the record value", ce.Subject(), ce.DataContentType(), ce.Data())
			}
			var timestamp struct {
				Timestamp time.Time `json:"timestamp"`
			}
			if err := json.Unmarshal(tc.rec.Value, &timestamp); err != nil || !ce.Time().Equal(timestamp.Timestamp) {
				t.Fatalf("CloudEvent time %v, record timestamp %v (%v)", ce.Time(), timestamp.Timestamp, err)
			}
			if tc.name == "conflict" && !strings.HasPrefix(ce.ID(), "conflict:"+s.topics.Commands+"/") {
				t.Fatalf("conflict CloudEvent ID %q; want the command record's position", ce.ID())
			}
		})
	}
}

// readOne reads the first record of a topic, read_committed.
func readOne(t *testing.T, brokers []string, topic string) *kgo.Record {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		fetches := client.PollRecords(ctx, 1)
		if err := ctx.Err(); err != nil {
			t.Fatalf("no record on %s: %v", topic, err)
		}
		if records := fetches.Records(); len(records) > 0 {
			return records[0]
		}
	}
}

// kafkaMessage reads a record in the CloudEvents Kafka binding's binary mode
// for the SDK (its Kafka protocol modules bring Sarama or librdkafka along):
// ce_* headers are attributes, content-type is datacontenttype, the value is
// the data.
type kafkaMessage struct{ rec *kgo.Record }

var ceVersions = spec.WithPrefix("ce_")

func (m kafkaMessage) ReadEncoding() binding.Encoding { return binding.EncodingBinary }

func (m kafkaMessage) ReadStructured(context.Context, binding.StructuredWriter) error {
	return binding.ErrNotStructured
}

func (m kafkaMessage) ReadBinary(_ context.Context, w binding.BinaryWriter) error {
	version := m.version()
	if version == nil {
		return binding.ErrUnknownEncoding
	}
	for _, h := range m.rec.Headers {
		switch attribute := version.Attribute(h.Key); {
		case h.Key == "content-type":
			if err := w.SetAttribute(version.AttributeFromKind(spec.DataContentType), string(h.Value)); err != nil {
				return err
			}
		case attribute != nil:
			if err := w.SetAttribute(attribute, string(h.Value)); err != nil {
				return err
			}
		case strings.HasPrefix(h.Key, "ce_"):
			if err := w.SetExtension(strings.TrimPrefix(h.Key, "ce_"), string(h.Value)); err != nil {
				return err
			}
		}
	}
	return w.SetData(bytes.NewReader(m.rec.Value))
}

func (m kafkaMessage) Finish(error) error { return nil }

// header returns a header's value, or nil.
func (m kafkaMessage) header(key string) any {
	for _, h := range m.rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return nil
}

func (m kafkaMessage) version() spec.Version {
	if v, ok := m.header(ceVersions.PrefixedSpecVersionName()).(string); ok {
		return ceVersions.Version(v)
	}
	return nil
}

func (m kafkaMessage) GetAttribute(kind spec.Kind) (spec.Attribute, any) {
	version := m.version()
	if version == nil {
		return nil, nil
	}
	attribute := version.AttributeFromKind(kind)
	if attribute == nil {
		return nil, nil
	}
	if kind == spec.DataContentType {
		return attribute, m.header("content-type")
	}
	return attribute, m.header(attribute.PrefixedName())
}

func (m kafkaMessage) GetExtension(name string) any { return m.header("ce_" + name) }
