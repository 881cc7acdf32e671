// Package otelx traces the blocks' messages with OpenTelemetry, following its messaging
// semantic conventions: a "send <destination>" span (kind producer) where a job is
// enqueued or an event published, whose context travels in the message's metadata (W3C
// trace context: traceparent, tracestate), and a "process <destination>" span (kind
// consumer) around each handling, linked to the span that sent the message, and parent of
// what the handler traces.
//
// A nil *Tracer is tracing turned off: every method is then a nil check, and nothing is
// allocated, injected or recorded.
package otelx

import (
	"context"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of twice's spans.
const Scope = "github.com/twicehq/twice"

// System is the value of messaging.system on twice's spans.
const System = "twice"

// Tracer makes the blocks' spans. Nil traces nothing.
type Tracer struct {
	t     trace.Tracer
	prop  propagation.TraceContext
	attrs []attribute.KeyValue // on every span: messaging.system
}

// New returns a tracer of tp, or nil (tracing off) when tp is nil. The service and the
// instance are the resource's business (the TracerProvider's), not the spans'.
func New(tp trace.TracerProvider) *Tracer {
	if tp == nil {
		return nil
	}
	return &Tracer{t: tp.Tracer(Scope), attrs: []attribute.KeyValue{semconv.MessagingSystemKey.String(System)}}
}

// Span is a span of a Tracer, or nothing when tracing is off. Its methods accept the nil
// Span.
type Span struct{ s trace.Span }

// Send starts the span of sending count messages (jobs, events) to destination (a queue, a
// topic; "" for messages to several), child of ctx's span. Put its context in each message's metadata with [Tracer.Inject]
// on the returned context, and end it with [Span.End] once they are stored (or not).
func (t *Tracer) Send(ctx context.Context, destination string, count int) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	attrs := append(t.attrs[:len(t.attrs):len(t.attrs)],
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"))
	if destination != "" {
		attrs = append(attrs, semconv.MessagingDestinationName(destination))
	}
	if count != 1 {
		attrs = append(attrs, semconv.MessagingBatchMessageCount(count))
	}
	ctx, s := t.t.Start(ctx, name("send", destination), trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	return ctx, Span{s}
}

// Inject returns meta with the trace context of ctx's span added (a copy: meta is not
// changed), or meta itself when tracing is off or ctx has no span.
func (t *Tracer) Inject(ctx context.Context, meta map[string]string) map[string]string {
	if t == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return meta
	}
	out := make(map[string]string, len(meta)+2)
	for k, v := range meta {
		out[k] = v
	}
	t.prop.Inject(ctx, propagation.MapCarrier(out))
	return out
}

// Process starts the span of handling messages from destination, as a child of ctx's
// span (none for a worker) linked to the spans that sent them, whose contexts metas (the
// messages' metadata) carry. id is the message's, for one message; 0 for a batch, which
// records its size.
func (t *Tracer) Process(ctx context.Context, destination string, id int64, metas []map[string]string, extra ...attribute.KeyValue) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	attrs := append(append(t.attrs[:len(t.attrs):len(t.attrs)],
		semconv.MessagingDestinationName(destination),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process")), extra...)
	if id != 0 {
		attrs = append(attrs, semconv.MessagingMessageID(strconv.FormatInt(id, 10)))
	} else {
		attrs = append(attrs, semconv.MessagingBatchMessageCount(len(metas)))
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...)}
	for _, meta := range metas {
		if len(meta) == 0 {
			continue
		}
		if sc := trace.SpanContextFromContext(t.prop.Extract(context.Background(), propagation.MapCarrier(meta))); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	ctx, s := t.t.Start(ctx, name("process", destination), opts...)
	return ctx, Span{s}
}

// name is a span's name: the operation and the destination, when there is one.
func name(op, destination string) string {
	if destination == "" {
		return op
	}
	return op + " " + destination
}

// Internal starts a span of work inside a handling (a workflow's step), child of ctx's.
func (t *Tracer) Internal(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	ctx, s := t.t.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(append(t.attrs[:len(t.attrs):len(t.attrs)], attrs...)...))
	return ctx, Span{s}
}

// End ends the span, recording err as its error when it is not nil.
func (s Span) End(err error) {
	if s.s == nil {
		return
	}
	if err != nil {
		s.s.RecordError(err)
		s.s.SetStatus(codes.Error, err.Error())
	}
	s.s.End()
}

// Group is the attribute naming the consumer group that processes a message.
func Group(name string) attribute.KeyValue { return semconv.MessagingConsumerGroupName(name) }
