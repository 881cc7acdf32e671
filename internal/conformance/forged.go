package conformance

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/bus/bustest"
	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/presence"
	"github.com/twicehq/twice/settings"
)

// injectStore forges on the store-native bus: a raw pg_notify, or a raw twice_bus row.
func injectStore(t *testing.T, n *twice.Node, channel string, payload []byte) {
	bustest.InjectStore(t, n.Store(), n.Service(), channel, payload, "intruder")
}

// garbage are malformed payloads every subscriber gets besides the forged ones.
var garbage = [][]byte{nil, []byte("\xff\x00garbage"), []byte(strings.Repeat("x", 3000))}

// exerciseForged checks every bus subscriber against the bus package's rule: a message is a
// hint to re-read the database, never a change of state by itself. Each test forges
// messages on one subscriber's channel, then sends a real signal on the same channel as a
// marker (signals on a channel arrive in order, so once the marker has had its effect the
// forged ones have been handled), and shows that nothing changed.
func exerciseForged(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"JobsCancel", forgedJobsCancel},
		{"JobsWake", forgedJobsWake},
		{"Cache", forgedCache},
		{"EventsWake", forgedEventsWake},
		{"Settings", forgedSettings},
		{"Presence", forgedPresence},
		{"Realtime", realtimeForgedHints},
		{"LeaseRelease", forgedLeaseRelease},
	})
}

// A forged cancellation used to cancel a running job for good (pg_notify from any role).
func forgedJobsCancel(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	cfg := jobsFast()
	a := backend.node(t, db, testnats.Service(), cfg)
	started, ended := make(chan int64, 10), make(chan int64, 10)
	mustRegister(t, a, func(ctx context.Context, job *jobs.Job[blocking]) error {
		started <- job.ID
		<-ctx.Done()
		ended <- job.ID
		return ctx.Err()
	})
	begin := func() int64 {
		t.Helper()
		r, err := a.Jobs().Enqueue(ctx, blocking{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-started:
			if id != r.ID {
				t.Fatalf("started %d, want %d", id, r.ID)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("job did not start")
		}
		return r.ID
	}
	victim := begin()
	backend.forge(t, a, jobs.CancelChannel, []byte(strconv.FormatInt(victim, 10)))
	for _, g := range garbage {
		backend.forge(t, a, jobs.CancelChannel, g)
	}
	marker := begin()
	if err := a.Jobs().Cancel(ctx, marker); err != nil {
		t.Fatal(err)
	}
	waitState(t, a, marker, jobs.Cancelled)
	if id := <-ended; id != marker {
		t.Fatalf("job %d ended before the real cancellation of %d", id, marker)
	}
	if row, err := a.Jobs().Get(ctx, victim); err != nil || row.State != jobs.Running {
		t.Fatalf("after a forged cancellation the job is %v (%v), want running", row.State, err)
	}
	// The real thing still works.
	if err := a.Jobs().Cancel(ctx, victim); err != nil {
		t.Fatal(err)
	}
	waitState(t, a, victim, jobs.Cancelled)
}

func forgedJobsWake(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	cfg := jobsFast()
	a := backend.node(t, db, testnats.Service(), cfg)
	var ran counter
	mustRegister(t, a, func(ctx context.Context, job *jobs.Job[noop]) error {
		ran.add(job.ID)
		return nil
	})
	later, err := a.Jobs().Enqueue(ctx, noop{N: 1}, &jobs.Opts{Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	backend.forge(t, a, jobs.WakeChannel, []byte("default"))
	for _, g := range garbage {
		backend.forge(t, a, jobs.WakeChannel, g)
	}
	marker, err := a.Jobs().Enqueue(ctx, noop{N: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, a, marker.ID, jobs.Completed)
	row, err := a.Jobs().Get(ctx, later.ID)
	if err != nil || row.State != jobs.Available || row.Attempt != 0 || ran.get(later.ID) != 0 {
		t.Fatalf("a scheduled job after forged wake-ups: %+v (%v), ran %d times", row, err, ran.get(later.ID))
	}
}

// Invalidations may drop entries, never add or change one, and unreadable ones flush
// every cache at most once per interval.
func forgedCache(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, testnats.Service(), testnode.Calm())
	var loads atomic.Int64
	c, err := cache.New(a.Caches(), "users", cache.Config[string, string]{Load: func(ctx context.Context, k string) (string, error) {
		loads.Add(1)
		return "true value of " + k, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	var markers atomic.Int64
	t.Cleanup(a.Caches().Observe(func(inv cache.Invalidation) {
		if inv.Cache == "users" && len(inv.Keys) == 1 && inv.Keys[0] == "marker" {
			markers.Add(1)
		}
	}))
	get := func(k string) string {
		t.Helper()
		v, err := c.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	get("k")
	start := time.Now()
	const floods = 30
	for range floods {
		for _, g := range garbage {
			backend.forge(t, a, cache.Channel, g)
		}
	}
	if err := c.Invalidate(ctx, "marker"); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "the marker invalidation", func() bool { return markers.Load() > 0 })
	st, sent := a.Caches().BusStats(), floods*uint64(len(garbage))
	if len(backend.ClusterSecret) > 0 {
		// With a cluster secret the bus drops them before the cache sees them.
		if st.Malformed != 0 || a.BusStats().Unsigned != sent {
			t.Fatalf("%d malformed invalidations reached the cache, the bus dropped %+v; sent %d", st.Malformed, a.BusStats(), sent)
		}
	} else if st.Malformed != sent {
		t.Fatalf("%d malformed invalidations counted, want %d", st.Malformed, sent)
	}
	// The first flushes at once; the rest share at most one flush per interval.
	if limit := 2 + uint64(time.Since(start)/cache.DefaultMalformedFlushInterval); st.MalformedFlushes > limit {
		t.Fatalf("%d flushes for %d unreadable invalidations in %v", st.MalformedFlushes, st.Malformed, time.Since(start))
	}
	if v := get("k"); v != "true value of k" {
		t.Fatalf("after forged invalidations the cache serves %q", v)
	}
}

func forgedEventsWake(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	cfg := testnode.Fast()
	a := backend.node(t, db, testnats.Service(), cfg)
	var mu sync.Mutex
	handled := map[string]int{}
	subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Rebalance: 50 * time.Millisecond, Handle: func(ctx context.Context, e events.Event) error {
		mu.Lock()
		defer mu.Unlock()
		handled[string(e.Payload)]++
		return nil
	}})
	if _, err := a.Events().Publish(ctx, events.Message{Topic: "t", Payload: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	seen := func(p string) int {
		mu.Lock()
		defer mu.Unlock()
		return handled[p]
	}
	testnode.Eventually(t, 20*time.Second, "the first event", func() bool { return seen("first") > 0 })
	backend.forge(t, a, events.WakeChannel, []byte("t\nother\nt"))
	for _, g := range garbage {
		backend.forge(t, a, events.WakeChannel, g)
	}
	if _, err := a.Events().Publish(ctx, events.Message{Topic: "t", Payload: []byte("marker")}); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "the marker event", func() bool { return seen("marker") > 0 })
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != 2 || handled["first"] != 1 || handled["marker"] != 1 {
		t.Fatalf("handled %v after forged wake-ups, want each event once", handled)
	}
}

func forgedSettings(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	a, b := backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm())
	if _, err := a.Settings().Set(ctx, "mode", "safe", nil); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "b reads the setting", func() bool { return b.Settings().String("mode", "") == "safe" })
	w := &watched{}
	t.Cleanup(b.Settings().WatchAll(w.add))
	backend.forge(t, b, settings.Channel, []byte(`{"key":"mode","value":"unsafe","version":99}`))
	for _, g := range garbage {
		backend.forge(t, b, settings.Channel, g)
	}
	if _, err := a.Settings().Set(ctx, "marker", 1, nil); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "b reads the marker", func() bool { return b.Settings().Int("marker", 0) == 1 })
	if v, ok := b.Settings().Get("mode"); !ok || v.Text != "safe" || v.Version != 1 {
		t.Fatalf("after forged signals b reads %+v", v)
	}
	for _, v := range w.versions("mode") {
		if v != 1 { // watchers are told of the current version first
			t.Fatalf("watchers told of version %d of a setting nobody changed", v)
		}
	}
}

// A forged presence signal makes an instance compare its view's revision with the
// database's, and nothing more: nobody joins or leaves.
func forgedPresence(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	a, b := backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm())
	if _, err := a.Presence().Connect(ctx, "alice", "lobby"); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "b sees alice", func() bool { return onlineIn(t, b, "lobby") == "alice" })
	w := &seen{}
	t.Cleanup(b.Presence().WatchAll(w.Add))
	backend.forge(t, b, presence.Channel, []byte(`{"kind":"left","room":"lobby","user":"alice"}`))
	for _, g := range garbage {
		backend.forge(t, b, presence.Channel, g)
	}
	if _, err := a.Presence().Connect(ctx, "marker"); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "b sees the marker", func() bool { return w.Has(ev(presence.Joined, "", "marker")) })
	if got := w.List(); !slices.Equal(got, []presence.Event{ev(presence.Joined, "", "alice"), ev(presence.Joined, "lobby", "alice"), ev(presence.Joined, "", "marker")}) {
		t.Fatalf("after forged signals b's watcher saw %v", got)
	}
}

// A forged release announcement makes waiters and followers look at the lease table,
// and nothing more: the holder keeps its lock and the leader its leadership.
func forgedLeaseRelease(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	cfg := testnode.Steady()
	a := backend.node(t, db, svc, cfg)
	testnode.Eventually(t, 20*time.Second, "a leads", a.IsLeader)
	b := backend.node(t, db, svc, cfg)
	leader, err := a.Leases().Info(ctx, cluster.LeaderLease)
	if err != nil {
		t.Fatal(err)
	}
	held, err := a.Locks().Acquire(ctx, "door", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int64, 1)
	go func() {
		k, err := b.Locks().Acquire(ctx, "door", nil)
		if err != nil {
			t.Error(err)
			got <- 0
			return
		}
		got <- k.Token()
		_ = k.Release(ctx)
	}()
	for _, name := range []string{cluster.LeaderLease, "lock:door"} {
		backend.forge(t, b, twice.LeaseChannel, []byte(name))
	}
	for _, g := range garbage {
		backend.forge(t, b, twice.LeaseChannel, g)
	}
	// The marker: a's real release, announced on the same channel.
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	var token int64
	select {
	case token = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("b did not get the lock after its real release")
	}
	if token != held.Token()+1 {
		t.Fatalf("b's lock has token %d, want %d: someone else held it in between", token, held.Token()+1)
	}
	now, err := a.Leases().Info(ctx, cluster.LeaderLease)
	if err != nil || !a.IsLeader() || b.IsLeader() || now.Holder != leader.Holder || now.Token != leader.Token {
		t.Fatalf("leadership after forged releases: %+v (%v), was %+v", now, err, leader)
	}
}
