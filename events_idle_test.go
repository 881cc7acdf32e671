package twice_test

import (
	"context"
	"strings"
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
	handled := make(chan struct{}, 1)
	c, err := n.Events().Subscribe(ctx, events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 2,
		Handle: func(context.Context, events.Event) error { handled <- struct{}{}; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
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
