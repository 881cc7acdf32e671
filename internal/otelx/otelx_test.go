package otelx_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/twicehq/twice/internal/otelx"
)

// Tracing off: nothing is injected, no span is made, and the context is the caller's.
func TestNilTracerDoesNothing(t *testing.T) {
	var tr *otelx.Tracer = otelx.New(nil)
	ctx := context.Background()
	meta := map[string]string{"a": "b"}
	c, s := tr.Send(ctx, "q", 1)
	if c != ctx {
		t.Fatal("Send changed the context")
	}
	if got := tr.Inject(c, meta); len(got) != 1 {
		t.Fatalf("Inject added %v", got)
	}
	s.End(nil)
	if c, s := tr.Process(ctx, "q", 1, []map[string]string{meta}); c != ctx {
		t.Fatal("Process changed the context")
	} else {
		s.End(nil)
	}
}

// Inject copies: the caller's metadata is never changed, and a message sent outside any
// span carries the send span's context.
func TestInjectCopies(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := otelx.New(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	meta := map[string]string{"a": "b"}
	ctx, s := tr.Send(context.Background(), "q", 2)
	got := tr.Inject(ctx, meta)
	s.End(nil)
	if len(meta) != 1 || got["traceparent"] == "" || got["a"] != "b" {
		t.Fatalf("meta %v, injected %v", meta, got)
	}
	if len(rec.Ended()) != 1 || rec.Ended()[0].Name() != "send q" {
		t.Fatalf("spans: %v", rec.Ended())
	}
	// A malformed traceparent from outside is no link, and no failure.
	_, p := tr.Process(context.Background(), "q", 0, []map[string]string{{"traceparent": "00-zz"}, got})
	p.End(nil)
	if n := len(rec.Ended()[1].Links()); n != 1 {
		t.Fatalf("%d links; want 1, to the valid context", n)
	}
}
