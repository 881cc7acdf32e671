package conformance

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/health"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/presence"
	"github.com/twicehq/twice/settings"
	"github.com/twicehq/twice/store"
)

// exercisePanics checks what happens when code of the application's that twice runs on
// its own goroutines panics: the process must go on, the panic must be logged and counted
// (Node.Panics), a transaction it ran in must end, and the node must still close.
func exercisePanics(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"ExactlyOnceHandlerPanics", panicsExactlyOnceHandlerPanics},
		{"OnElectedPanicStepsDown", panicsOnElectedPanicStepsDown},
		{"OnHeartbeatStallPanics", panicsOnHeartbeatStallPanics},
		{"WatchPanics", panicsWatchPanics},
		{"EveryCallbackIsGuarded", panicsEveryCallbackIsGuarded},
		{"CloseIsBoundedByItsContext", panicsCloseIsBoundedByItsContext},
	})
}

func panicsExactlyOnceHandlerPanics(t *testing.T, backend Backend) {
	ctx := context.Background()
	// Few connections, fewer than the attempts: each leaked transaction would keep
	// one, and the group (and the node) would stall once none is left.
	db := smallPool(testdb.New(t, backend.Dialect), 3)
	// Steady timings: under a loaded machine a 400 ms partition lease can be lost and the
	// batch read again, which would panic once more than the count below.
	a := backend.node(t, db, "svc", testnode.Steady())
	if _, err := a.Store().Exec(ctx, "CREATE TABLE effects (payload TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	const attempts = 5
	subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Mode: events.ExactlyOnce, Partitions: 1,
		MaxAttempts: attempts, RetryBackoff: time.Millisecond,
		HandleTx: func(ctx context.Context, tx store.Tx, e events.Event) error {
			if _, err := tx.Exec(ctx, "INSERT INTO effects (payload) VALUES ($1)", string(e.Payload)); err != nil {
				return err
			}
			if string(e.Payload) == "poison" {
				panic("poison")
			}
			return nil
		}})
	if dead := poisonDeadLettered(t, a, attempts); !strings.Contains(dead.Error, "panicked: poison") {
		t.Fatalf("dead letter %+v: the panic is not its error", dead)
	}
	// Once in the batch, then alone until it is dead-lettered.
	if got := a.Panics(); got != attempts+1 {
		t.Errorf("Panics() = %d, want %d", got, attempts+1)
	}
	closes(t, a)
}

func panicsOnElectedPanicStepsDown(t *testing.T, backend Backend) {
	db := testdb.New(t, backend.Dialect)
	// Steady timings: with 400 ms leases a loaded machine can take the lead from a before
	// its callback runs, and b would lead without a having panicked.
	a := backend.node(t, db, "svc", testnode.Steady())
	testnode.Eventually(t, 20*time.Second, "a leads", a.IsLeader)
	b := backend.node(t, db, "svc", testnode.Steady())
	var calls atomic.Int32
	a.Leader().OnElected(func(ctx context.Context) {
		calls.Add(1)
		panic("boom")
	})
	testnode.Eventually(t, 20*time.Second, "b leads after a stepped down", b.IsLeader)
	if a.Panics() == 0 {
		t.Fatal("the panic was not counted")
	}
	// a campaigns again: alone, it is elected again (and steps down again, later each
	// time, since its callback always panics).
	closes(t, b)
	testnode.Eventually(t, 30*time.Second, "a elected twice more", func() bool { return calls.Load() >= 3 })
	if got := a.Panics(); got < 3 {
		t.Errorf("Panics() = %d after %d panicking callbacks", got, calls.Load())
	}
	closes(t, a)
}

func panicsOnHeartbeatStallPanics(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "svc", testnode.Fast())
	var later atomic.Int32
	a.OnHeartbeatStall(func(from, to time.Time) { panic("stall") })
	a.OnHeartbeatStall(func(from, to time.Time) { later.Add(1) })
	// Stall the heartbeats past DeadAfter: hold the lock they need (SQLite's write
	// lock; the member's row on PostgreSQL).
	tx, err := a.Store().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if backend.Dialect == store.Postgres {
		if _, err := tx.Exec(ctx, "SELECT 1 FROM twice_members WHERE service = $1 AND id = $2 FOR UPDATE", "svc", a.ID()); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * testnode.Fast().DeadAfter)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "the stall reported to the second callback", func() bool { return later.Load() > 0 })
	if a.Panics() == 0 {
		t.Fatal("the panic was not counted")
	}
	closes(t, a)
}

func panicsWatchPanics(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "svc", testnode.Calm())
	var got atomic.Int32
	a.Settings().Watch("k", func(settings.Setting) { panic("watch") })
	a.Settings().Watch("k", func(settings.Setting) { got.Add(1) })
	for i := range 2 {
		if _, err := a.Settings().Set(ctx, "k", i, nil); err != nil {
			t.Fatal(err)
		}
	}
	testnode.Eventually(t, 20*time.Second, "both changes reach the second watcher", func() bool { return got.Load() == 2 })
	// The first watcher too went on after its panic.
	testnode.Eventually(t, 20*time.Second, "both panics counted", func() bool { return a.Panics() == 2 })
	closes(t, a)
}

// The rule, on every kind of code of the user's that a node runs on its own goroutines:
// a panic is counted, fails only that piece of work, and the rest goes on.
func panicsEveryCallbackIsGuarded(t *testing.T, backend Backend) {
	ctx := context.Background()
	a := backend.node(t, testdb.New(t, backend.Dialect), "svc", jobsFast())
	var want int64

	var delivered atomic.Int32
	a.Bus().Subscribe("test.panics", func(bus.Message) { panic("subscriber") })
	a.Bus().Subscribe("test.panics", func(bus.Message) { delivered.Add(1) })
	for range 2 {
		if err := a.Bus().Publish(ctx, "test.panics", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	testnode.Eventually(t, 20*time.Second, "both messages reach the second subscriber", func() bool { return delivered.Load() == 2 })
	testnode.Eventually(t, 20*time.Second, "the subscriber's panics counted", func() bool { return a.Panics() == 2 })
	want += 2

	if err := a.Health().Register("boom", 0, func(context.Context) error { panic("check") }); err != nil {
		t.Fatal(err)
	}
	for _, r := range a.Health().Run(ctx, health.Readiness) {
		if r.Name == "boom" && (r.OK || !strings.Contains(r.Error, "panicked: check")) {
			t.Errorf("panicking check: %+v", r)
		}
	}
	want++

	c, err := cache.New(a.Caches(), "boom", cache.Config[string, string]{
		Load: func(context.Context, string) (string, error) { panic("loader") }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "k"); err == nil || !strings.Contains(err.Error(), "panicked: loader") {
		t.Errorf("Get with a panicking loader = %v", err)
	}
	want++
	var observed atomic.Int32
	a.Caches().Observe(func(cache.Invalidation) { panic("observer") })
	a.Caches().Observe(func(cache.Invalidation) { observed.Add(1) })
	for range 4 {
		if err := c.Invalidate(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
	testnode.Eventually(t, 20*time.Second, "every invalidation observed by the second observer", func() bool { return observed.Load() == 4 })
	testnode.Eventually(t, 20*time.Second, "the observer's panics counted", func() bool { return a.Panics() == want+4 })
	want += 4

	var watched atomic.Int32
	a.Presence().WatchAll(func(presence.Event) { panic("presence watcher") })
	a.Presence().WatchAll(func(presence.Event) { watched.Add(1) })
	if _, err := a.Presence().Connect(ctx, "alice", "lobby"); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "alice's joins reach the second watcher", func() bool { return watched.Load() == 2 })
	testnode.Eventually(t, 20*time.Second, "the presence watcher's panics counted", func() bool { return a.Panics() == want+2 })
	want += 2

	mustRegister(t, a, func(context.Context, *jobs.Job[noop]) error { panic("worker") })
	r, err := a.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if row := waitState(t, a, r.ID, jobs.Discarded); !strings.Contains(row.LastError, "panicked: worker") {
		t.Errorf("last error of a panicking job: %q", row.LastError)
	}
	want++

	if got := a.Panics(); got != want {
		t.Errorf("Panics() = %d, want %d", got, want)
	}
	closes(t, a)
}

// A transaction never ended (a panic outside InTx, a forgotten Rollback) keeps its
// connection; Close must still return once its context ends.
func panicsCloseIsBoundedByItsContext(t *testing.T, backend Backend) {
	ctx := context.Background()
	a := backend.node(t, testdb.New(t, backend.Dialect), "svc", testnode.Fast())
	// Callbacks that ignore their context and never return (until the test ends).
	stuck := make(chan struct{})
	defer close(stuck)
	testnode.Eventually(t, 20*time.Second, "a leads", a.IsLeader)
	a.Leader().OnElected(func(context.Context) { <-stuck })
	watching := make(chan struct{})
	a.Settings().Watch("k", func(settings.Setting) { close(watching); <-stuck })
	if _, err := a.Settings().Set(ctx, "k", 1, nil); err != nil {
		t.Fatal(err)
	}
	<-watching
	tx, err := a.Store().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Close(cctx) }()
	select {
	case err := <-done:
		if backend.Dialect == store.Postgres && (err == nil || !strings.Contains(err.Error(), "still in use")) {
			t.Errorf("Close with a connection still in use = %v, want an error saying so", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return though its context ended")
	}
	_ = tx.Rollback(ctx) // lets the store finish closing in the background
	a.Store().Close()    // and waits for it, before the test removes the database's files
}

// smallPool limits db's PostgreSQL pool to n connections (SQLite has one writer anyway).
func smallPool(db testdb.DB, n int) testdb.DB {
	if db.Dialect == store.Postgres {
		sep := "?"
		if strings.Contains(db.DSN, "?") {
			sep = "&"
		}
		db.DSN += sep + "pool_max_conns=" + strconv.Itoa(n)
	}
	return db
}

// closes closes n, failing t if Close does not return (a connection held forever) or fails.
func closes(t *testing.T, n *twice.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Close(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return though its context ended")
	}
}
