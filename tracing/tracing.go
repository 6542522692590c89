// Package tracing traces Arbiter workers with OpenTelemetry, following the
// messaging semantic conventions: one "process <topic>" span per batch,
// linked to the trace context each command record carries, with franz-go's
// kotel client spans under it. It is a package of its own so that the core
// packages do not import the OpenTelemetry SDK: processor only knows the
// processor.BatchTracer interface.
//
// A worker is traced when OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; FromEnv then exports spans with
// OTLP over HTTP, configured by the standard OTEL_* variables.
package tracing

import (
	"context"
	"os"
	"strconv"

	"github.com/cockroachdb/errors"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/arbiter-cqrs/arbiter/processor"
)

// instrumentationName names the tracer.
const instrumentationName = "github.com/arbiter-cqrs/arbiter/tracing"

// Tracer traces a worker's batches; it implements processor.BatchTracer.
type Tracer struct {
	tracer     trace.Tracer
	provider   trace.TracerProvider
	propagator propagation.TextMapPropagator
}

var _ processor.BatchTracer = (*Tracer)(nil)

// New returns a Tracer whose spans go to provider. Command records' trace
// context is read in the W3C format (traceparent, tracestate).
func New(provider trace.TracerProvider) *Tracer {
	return &Tracer{
		tracer:     provider.Tracer(instrumentationName),
		provider:   provider,
		propagator: propagation.TraceContext{},
	}
}

// StartBatch starts the batch's process span, linked to the span context of
// every command record that carries one.
func (t *Tracer) StartBatch(ctx context.Context, batch processor.TracedBatch) (context.Context, func(processor.BatchParams, error)) {
	links := make([]trace.Link, 0, len(batch.Records))
	for _, rec := range batch.Records {
		commandCtx := t.propagator.Extract(ctx, kotel.NewRecordCarrier(rec))
		if spanContext := trace.SpanContextFromContext(commandCtx); spanContext.IsValid() {
			links = append(links, trace.Link{SpanContext: spanContext, Attributes: []attribute.KeyValue{
				semconv.MessagingKafkaOffset(int(rec.Offset)),
				semconv.MessagingDestinationPartitionID(strconv.Itoa(int(rec.Partition))),
			}})
		}
	}
	ctx, span := t.tracer.Start(ctx, "process "+batch.CommandsTopic,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(links...),
		trace.WithAttributes(
			semconv.MessagingSystemKafka,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"),
			semconv.MessagingDestinationName(batch.CommandsTopic),
			semconv.MessagingConsumerGroupName(batch.Group),
			semconv.MessagingBatchMessageCount(len(batch.Records)),
			attribute.String("arbiter.transactional_id", batch.TransactionalID),
		))
	return ctx, func(params processor.BatchParams, err error) {
		span.SetAttributes(
			attribute.Int("arbiter.applied", params.Applied),
			attribute.Int("arbiter.conflicts", params.Conflicts),
			attribute.Int("arbiter.replayed", params.Replayed),
			attribute.Bool("arbiter.committed", params.Committed),
		)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "batch aborted")
		}
		span.End()
	}
}

// KafkaOptions returns the kotel hooks that trace the worker's Kafka client:
// a receive span per command record (a child of the command's trace context)
// and a publish span per outcome record (a child of its batch's span). They
// never write headers: an outcome record carries its command's trace
// context unchanged, and a replay must carry exactly what was published.
func (t *Tracer) KafkaOptions() []kgo.Opt {
	tracer := kotel.NewTracer(kotel.TracerProvider(t.provider), kotel.TracerPropagator(extractOnly{t.propagator}))
	return []kgo.Opt{kgo.WithHooks(kotel.NewKotel(kotel.WithTracer(tracer)).Hooks()...)}
}

// extractOnly reads trace context but never writes it.
type extractOnly struct{ propagation.TextMapPropagator }

func (extractOnly) Inject(context.Context, propagation.TextMapCarrier) {}

// Enabled reports whether the environment asks for OTLP trace export.
func Enabled() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// FromEnv returns a Tracer exporting with OTLP over HTTP, configured by the
// standard OTEL_EXPORTER_OTLP_* and OTEL_SERVICE_NAME variables (service
// name default: serviceName), and the function that flushes and stops the
// export. Without an OTLP endpoint in the environment it returns nil and a
// no-op: tracing is off.
func FromEnv(ctx context.Context, serviceName string) (*Tracer, func(context.Context) error, error) {
	if !Enabled() {
		return nil, func(context.Context) error { return nil }, nil
	}
	exporter, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, errors.Wrap(err, "create the OTLP trace exporter (OTEL_EXPORTER_OTLP_*)")
	}
	resource, err := sdkresource.Merge(sdkresource.Default(),
		sdkresource.NewSchemaless(semconv.ServiceName(serviceName)))
	if err != nil {
		return nil, nil, errors.Wrap(err, "tracing resource")
	}
	if os.Getenv("OTEL_SERVICE_NAME") != "" {
		// The environment's name wins over the default.
		resource = sdkresource.Default()
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(resource))
	return New(provider), provider.Shutdown, nil
}
