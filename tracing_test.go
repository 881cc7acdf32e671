package twice_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/twicetest"
	"github.com/twicehq/twice/workflow"
)

// liveness bounds every wait of the tracing test: generous, never a measure of speed.
const liveness = 60 * time.Second

type tracedJob struct{ N int }

func (tracedJob) Kind() string    { return "traced" }
func (tracedJob) Opts() jobs.Opts { return jobs.Opts{Queue: "traced"} }

// spans returns the ended spans of rec named name.
func spans(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// one waits for exactly one ended span named name.
func one(t *testing.T, rec *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var s sdktrace.ReadOnlySpan
	testnode.EventuallyNil(t, liveness, func() error {
		got := spans(rec, name)
		if len(got) != 1 {
			return fmt.Errorf("%d spans %q ended; want 1 (of %d)", len(got), name, len(rec.Ended()))
		}
		s = got[0]
		return nil
	})
	return s
}

// attrs checks that s has the attributes want.
func attrs(t *testing.T, s sdktrace.ReadOnlySpan, want ...attribute.KeyValue) {
	t.Helper()
	have := map[attribute.Key]attribute.Value{}
	for _, a := range s.Attributes() {
		have[a.Key] = a.Value
	}
	for _, w := range want {
		if v, ok := have[w.Key]; !ok || v != w.Value {
			t.Errorf("span %q: %s = %v (set: %v); want %v", s.Name(), w.Key, v.String(), ok, w.Value.String())
		}
	}
}

// linked checks that s is linked to the span to.
func linked(t *testing.T, s, to sdktrace.ReadOnlySpan) {
	t.Helper()
	for _, l := range s.Links() {
		if l.SpanContext.TraceID() == to.SpanContext().TraceID() && l.SpanContext.SpanID() == to.SpanContext().SpanID() {
			return
		}
	}
	var ls []string
	for _, l := range s.Links() {
		ls = append(ls, l.SpanContext.SpanID().String())
	}
	t.Errorf("span %q links to %v; want one to %q %s", s.Name(), ls, to.Name(), to.SpanContext().SpanID())
}

// A job enqueued on one instance and run on another: its process span is linked to the
// span that enqueued it, carried in the job's metadata, and is the parent of what the
// worker traces; the same for an event, and for a workflow's steps.
func TestTracing(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s, Config: twice.Config{Tracing: tp}})
		app := tp.Tracer("app")

		// Jobs: enqueued on node 0 inside the application's span, run on node 1.
		if err := jobs.Register(nodes[1].Jobs(), jobs.WorkFunc[tracedJob](func(ctx context.Context, j *jobs.Job[tracedJob]) error {
			_, s := app.Start(ctx, "work")
			s.End()
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		reqCtx, req := app.Start(ctx, "request")
		if _, err := nodes[0].Jobs().Enqueue(reqCtx, tracedJob{N: 1}, nil); err != nil {
			t.Fatal(err)
		}
		req.End()
		send, process, work := one(t, rec, "send traced"), one(t, rec, "process traced"), one(t, rec, "work")
		if send.Parent().SpanID() != req.SpanContext().SpanID() || send.SpanKind() != trace.SpanKindProducer {
			t.Errorf("send span: parent %s, kind %s; want the request's span, producer", send.Parent().SpanID(), send.SpanKind())
		}
		attrs(t, send, attribute.String("messaging.system", "twice"), attribute.String("messaging.destination.name", "traced"),
			attribute.String("messaging.operation.type", "send"))
		linked(t, process, send)
		if process.SpanKind() != trace.SpanKindConsumer {
			t.Errorf("process span kind %s; want consumer", process.SpanKind())
		}
		attrs(t, process, attribute.String("messaging.system", "twice"), attribute.String("messaging.destination.name", "traced"),
			attribute.String("messaging.operation.type", "process"), attribute.String("twice.job.kind", "traced"))
		if work.Parent().SpanID() != process.SpanContext().SpanID() {
			t.Errorf("the worker's span has parent %s; want the process span %s", work.Parent().SpanID(), process.SpanContext().SpanID())
		}

		// Events: published on node 0, handled by a group on node 1.
		handled := make(chan struct{}, 1)
		if _, err := nodes[1].Events().Subscribe(ctx, events.GroupConfig{Name: "traced-group", Topics: []string{"traced.topic"},
			Handle: func(ctx context.Context, e events.Event) error {
				_, s := app.Start(ctx, "handle")
				s.End()
				handled <- struct{}{}
				return nil
			}}); err != nil {
			t.Fatal(err)
		}
		if _, err := nodes[0].Events().Publish(ctx, events.Message{Topic: "traced.topic", Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		<-handled
		esend, eprocess, handle := one(t, rec, "send traced.topic"), one(t, rec, "process traced.topic"), one(t, rec, "handle")
		linked(t, eprocess, esend)
		attrs(t, eprocess, attribute.String("messaging.consumer.group.name", "traced-group"))
		if handle.Parent().SpanID() != eprocess.SpanContext().SpanID() {
			t.Errorf("the handler's span has parent %s; want the process span", handle.Parent().SpanID())
		}

		// Workflows: started on node 0, run on node 1; each step's span is inside the run's.
		def := workflow.Def[int]{Name: "traced-flow", Run: func(wc *workflow.Context, in int) error {
			_, err := workflow.Do(wc, workflow.Step[int]{Name: "only", Do: func(context.Context, string) (int, error) { return in, nil }})
			return err
		}}
		wf, err := workflow.Register(nodes[0].Workflows(), def)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := workflow.Register(nodes[1].Workflows(), def); err != nil {
			t.Fatal(err)
		}
		if _, err := wf.Start(ctx, "w-1", 7); err != nil {
			t.Fatal(err)
		}
		step := one(t, rec, "step only")
		var run sdktrace.ReadOnlySpan
		testnode.EventuallyNil(t, liveness, func() error {
			for _, s := range spans(rec, "process "+workflow.Queue) {
				if s.SpanContext().SpanID() == step.Parent().SpanID() {
					run = s
					return nil
				}
			}
			return fmt.Errorf("no process span is the parent of the step's")
		})
		linked(t, run, one(t, rec, "send "+workflow.Queue))
		attrs(t, step, attribute.String("twice.workflow.id", "w-1"), attribute.String("twice.workflow.name", "traced-flow"))
	})
}
