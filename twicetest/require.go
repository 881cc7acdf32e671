package twicetest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/jobs"
)

// shown is how many rows a failure message lists.
const shown = 20

// EnqueuedOpts narrows what [RequireEnqueued] accepts. The zero value accepts any job of
// the kind, in any queue and state.
type EnqueuedOpts[T jobs.Args] struct {
	// Queue, if set, is the queue the job must be in.
	Queue string
	// State, if set, is the state the job must be in (jobs.Available for one not run yet).
	State jobs.State
	// Where, if set, must accept the job's arguments.
	Where func(args T) bool
}

// RequireEnqueued fails t unless a job of T's kind that opts accepts is in n's service, and
// returns the newest such job with its arguments decoded. With a transaction tx (a
// *sql.Tx, pgx.Tx or store.Tx, as EnqueueTx takes) it also sees what tx enqueued and has
// not committed; with a nil tx, only what has committed. The failure lists the newest jobs
// that were there instead.
func RequireEnqueued[T jobs.Args](t testing.TB, n *twice.Node, tx any, opts *EnqueuedOpts[T]) *jobs.Job[T] {
	t.Helper()
	o := EnqueuedOpts[T]{}
	if opts != nil {
		o = *opts
	}
	var zero T
	kind := jobs.KindOf[T]()
	if kind == "" {
		t.Fatalf("twicetest: RequireEnqueued: %T has no Kind on its zero value; give the type a value receiver", zero)
	}
	ctx := context.Background()
	list := func(p jobs.ListParams) []*jobs.Row {
		t.Helper()
		var rows []*jobs.Row
		var err error
		if tx == nil {
			rows, err = n.Jobs().List(ctx, p)
		} else {
			rows, err = n.Jobs().ListTx(ctx, tx, p)
		}
		if err != nil {
			t.Fatalf("twicetest: RequireEnqueued: listing jobs: %v", err)
		}
		return rows
	}
	p := jobs.ListParams{Kind: kind, Queue: o.Queue, Limit: 10000}
	if o.State != "" {
		p.States = []jobs.State{o.State}
	}
	for _, row := range list(p) {
		args, err := jobs.DecodeArgs[T](row.Args)
		if err != nil {
			t.Fatalf("twicetest: RequireEnqueued: job %d of kind %q: decoding its arguments into %T: %v", row.ID, kind, zero, err)
		}
		if o.Where == nil || o.Where(args) {
			return &jobs.Job[T]{Row: row, Args: args}
		}
	}
	var there []string
	for _, row := range list(jobs.ListParams{Limit: shown}) {
		there = append(there, fmt.Sprintf("job %d: kind %q, queue %q, state %s, args %s", row.ID, row.Kind, row.Queue, row.State, row.Args))
	}
	t.Fatalf("twicetest: no %q job%s enqueued in service %q%s; the newest jobs there:%s",
		kind, describe(o), n.Service(), inTx(tx), lines(there))
	return nil
}

func describe[T jobs.Args](o EnqueuedOpts[T]) string {
	s := ""
	if o.Queue != "" {
		s += fmt.Sprintf(" in queue %q", o.Queue)
	}
	if o.State != "" {
		s += fmt.Sprintf(" in state %s", o.State)
	}
	if o.Where != nil {
		s += " that Where accepts"
	}
	return s
}

func inTx(tx any) string {
	if tx == nil {
		return " (committed)"
	}
	return " (in the transaction)"
}

// PublishedOpts narrows what [RequirePublished] accepts. The zero value accepts any event
// of the topic.
type PublishedOpts struct {
	// Key, if set, is the key the event must have.
	Key string
	// Where, if set, must accept the event.
	Where func(events.Event) bool
}

// RequirePublished fails t unless an event of topic that opts accepts is in n's service's
// log, and returns those events, newest first (at most events.MaxLoad are looked at). With
// a transaction tx it also sees what tx published and has not committed; with a nil tx,
// only what has committed. The failure lists the newest events that were there instead.
func RequirePublished(t testing.TB, n *twice.Node, tx any, topic string, opts *PublishedOpts) []events.Event {
	t.Helper()
	if topic == "" {
		t.Fatal("twicetest: RequirePublished needs a topic")
	}
	o := PublishedOpts{}
	if opts != nil {
		o = *opts
	}
	recent := func(topic string, limit int) []events.Event {
		t.Helper()
		var evs []events.Event
		var err error
		if tx == nil {
			evs, err = n.Events().Recent(context.Background(), topic, limit)
		} else {
			evs, err = n.Events().RecentTx(context.Background(), tx, topic, limit)
		}
		if err != nil {
			t.Fatalf("twicetest: RequirePublished: reading the log: %v", err)
		}
		return evs
	}
	var found []events.Event
	for _, e := range recent(topic, events.MaxLoad) {
		if (o.Key == "" || e.Key == o.Key) && (o.Where == nil || o.Where(e)) {
			found = append(found, e)
		}
	}
	if len(found) > 0 {
		return found
	}
	var there []string
	for _, e := range recent("", shown) {
		there = append(there, fmt.Sprintf("event %d: topic %q, key %q, payload %s", e.ID, e.Topic, e.Key, payload(e.Payload)))
	}
	what := ""
	if o.Key != "" {
		what += fmt.Sprintf(" with key %q", o.Key)
	}
	if o.Where != nil {
		what += " that Where accepts"
	}
	t.Fatalf("twicetest: no event of topic %q%s published in service %q%s; the newest events there:%s",
		topic, what, n.Service(), inTx(tx), lines(there))
	return nil
}

// payload shows a payload as JSON when it is, quoted otherwise, cut at 200 bytes.
func payload(p []byte) string {
	cut := ""
	if len(p) > 200 {
		p, cut = p[:200], "…"
	}
	if json.Valid(p) {
		return string(p) + cut
	}
	return fmt.Sprintf("%q%s", p, cut)
}
