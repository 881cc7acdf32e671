package twice_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// An idle reader's backstop poll does not ask whether events are held back behind an open
// transaction: only a wake-up, events just handled, or a wait for held-back events give a
// reason to. (On PostgreSQL; SQLite holds nothing back and never asks.)
func TestIdleReadersDoNotAskForHeldBackEvents(t *testing.T) {
	t.Parallel()
	db := testdb.New(t, store.Postgres)
	ctx := context.Background()
	obs := &statements{}
	cfg := twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "idle-readers", Logger: testdb.Logger(t), Observer: obs}
	cfg.Events.Poll = 20 * time.Millisecond
	cfg.Backstop = cfg.Events.Poll // poll at Events.Poll with a bus too
	n, err := twice.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	handled := subscribeHandled(t, n, 2)
	if _, err := n.Events().Publish(ctx, events.Message{Topic: "t", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-handled:
	case <-time.After(30 * time.Second):
		t.Fatal("the event was not handled")
	}
	// The reads that follow the event ask, rightly; under load they can take a while.
	time.Sleep(time.Second)
	obs.armed.Store(true)
	time.Sleep(time.Second) // 50 backstop polls of each partition
	obs.armed.Store(false)
	var reads, asks int
	for _, q := range obs.naming("twice_events") {
		switch {
		case strings.Contains(q, "SELECT EXISTS"):
			asks++
		case strings.Contains(q, "ORDER BY"):
			reads++
		}
	}
	if reads < 10 {
		t.Fatalf("%d reads in a second of 20 ms polls: the readers did not poll", reads)
	}
	if asks > 0 {
		t.Fatalf("%d held-back looks in %d idle polls: each idle poll costs one more statement", asks, reads)
	}
}

// heldBackLook runs release just before the reader's seventh read that asks whether events
// are held back: some 60 ms into its waits for held-back events (1 ms, doubling), when
// the publish's own wake-ups have long arrived.
type heldBackLook struct {
	mu      sync.Mutex // protects release
	looks   int
	release func()
}

func (h *heldBackLook) Statement(q string) {
	// A read that can ask: the one of a partition, or several partitions' at once.
	if !strings.Contains(q, "xid >= ") || !strings.Contains(q, "twice_events") {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.looks++; h.looks == 7 && h.release != nil {
		h.release()
	}
}

// Events held back by another transaction are read once it ends, by the reader's looks
// while they are held back, not at its Backstop (an hour here). A read says whether events
// are held back in the same statement, so from the same snapshot: before, the read and a
// second look saw two snapshots, and a transaction ending between them left the events
// reported by neither, and the reader asleep for its Backstop.
func TestHeldBackEventsReadWhenTheHoldEnds(t *testing.T) {
	t.Parallel()
	db := testdb.New(t, store.Postgres)
	ctx := context.Background()
	hook := &heldBackLook{}
	cfg := twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "held-back", Logger: testdb.Logger(t), Observer: hook, Backstop: time.Hour}
	n, err := twice.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	handled := subscribeHandled(t, n, 1)
	// A transaction with an id older than the event's holds the event back until it ends.
	hold, err := n.Store().Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil {
		t.Fatal(err)
	}
	hook.mu.Lock()
	hook.release = func() {
		if err := hold.Commit(ctx); err != nil {
			t.Error(err)
		}
	}
	hook.mu.Unlock()
	if _, err := n.Events().Publish(ctx, events.Message{Topic: "t", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-handled:
	case <-time.After(30 * time.Second):
		t.Fatal("the event, held back for some 60 ms of the reader's looks, was not handled")
	}
}

// subscribeHandled subscribes group g of topic t with partitions partitions on n, and
// returns a channel that receives once per event handled. The consumer closes with t.
func subscribeHandled(t *testing.T, n *twice.Node, partitions int) <-chan struct{} {
	t.Helper()
	ctx := context.Background()
	handled := make(chan struct{}, 1)
	c, err := n.Events().Subscribe(ctx, events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: partitions,
		Handle: func(context.Context, events.Event) error { handled <- struct{}{}; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(ctx) })
	return handled
}
