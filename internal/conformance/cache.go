package conformance

import (
	"context"
	"errors"
	mathrand "math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// itemsTable is the business table the cache tests read and write.
const itemsTable = "CREATE TABLE cache_items (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)"

// cacheNode is one instance with a cache "items" over cache_items, and a count of the
// invalidations of key 1 it has applied.
type cacheNode struct {
	n         *twice.Node
	c         *cache.Cache[int, int]
	delivered atomic.Int64
	lost      atomic.Int64
	// slow, if set, is called by the loader between its read and its return.
	slow atomic.Pointer[func(v int)]
}

// newCacheNode opens an instance of service on backend, with the default timings: the cache
// tests need no fast failover, and slow heartbeats keep the load they add to a shared
// machine low.
func newCacheNode(t *testing.T, backend Backend, db testdb.DB, service string) *cacheNode {
	t.Helper()
	cn := &cacheNode{n: backend.node(t, db, service, testnode.Calm())}
	var err error
	cn.c, err = cache.New(cn.n.Caches(), "items", cache.Config[int, int]{Load: func(ctx context.Context, id int) (int, error) {
		var v int
		err := cn.n.Store().Reader().QueryRow(ctx, "SELECT v FROM cache_items WHERE id = $1", id).Scan(&v)
		if f := cn.slow.Load(); f != nil && err == nil {
			(*f)(v)
		}
		return v, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cn.n.Caches().Observe(func(inv cache.Invalidation) {
		if inv.Lost {
			cn.lost.Add(1)
		}
		if inv.Cache == "items" && slices.Contains(inv.Keys, "1") {
			cn.delivered.Add(1)
		}
	}))
	return cn
}

func (cn *cacheNode) get(t *testing.T, ctx context.Context) int {
	t.Helper()
	v, err := cn.c.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// exerciseCache checks coherence: invalidations after commit reach every instance, a slow
// load never puts an old value back, a rolled-back transaction invalidates nothing, and a
// lost bus flushes. Each test has a service of its own: NATS subjects are shared by every
// test of a run.
func exerciseCache(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"NoOldValueAfterDelivery", cacheNoOldValueAfterDelivery},
		{"RollbackInvalidatesNothing", cacheRollbackInvalidatesNothing},
		{"LostBusFlushes", cacheLostBusFlushes},
	})
}

// The test: three nodes; after InvalidateTx commits, no node serves the old
// value once the invalidation is delivered, including under a concurrent slow load.
// Every round writes version r of the row and invalidates it in the same transaction,
// from a different node each time. Readers on every node check, on every Get, that
// the value is at least the version whose invalidation had been delivered to their
// node when the Get started. Loads pause at random after reading, and in the first
// round node 1's load is held until its invalidation has been delivered, so the
// pending-put race happens for certain at least once.
func cacheNoOldValueAfterDelivery(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	nodes := []*cacheNode{newCacheNode(t, backend, db, svc), newCacheNode(t, backend, db, svc), newCacheNode(t, backend, db, svc)}
	s := nodes[0].n.Store()
	if _, err := s.Exec(ctx, itemsTable); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Exec(ctx, "INSERT INTO cache_items VALUES (1, 0)"); err != nil {
		t.Fatal(err)
	}
	for _, cn := range nodes {
		if v := cn.get(t, ctx); v != 0 {
			t.Fatalf("first read %d", v)
		}
	}

	// Round 1's slow load on node 1: it reads version 0, then waits for the delivery.
	held := nodes[1]
	read := make(chan struct{})
	holdOnce := sync.OnceFunc(func() { close(read) })
	slowFn := func(v int) {
		holdOnce()
		for held.delivered.Load() < 1 {
			time.Sleep(time.Millisecond)
		}
	}
	held.slow.Store(&slowFn)
	if err := held.c.Invalidate(ctx, 1); err != nil { // drop the cached 0 here only…
		t.Fatal(err)
	}
	testnode.Eventually(t, 10*time.Second, "the local invalidation's echo", func() bool {
		return nodes[0].delivered.Load() == 1 && nodes[2].delivered.Load() == 1 && held.delivered.Load() == 1
	})
	for _, cn := range nodes {
		cn.delivered.Store(0) // …and count from round 1 on
	}
	slowGet := make(chan int, 1)
	go func() { slowGet <- held.get(t, ctx) }()
	<-read
	held.slow.Store(nil)

	// Readers on every node, until the rounds are done.
	stop := make(chan struct{})
	var readers sync.WaitGroup
	// On a failure too, the readers stop before the cleanups close the nodes.
	stopReaders := sync.OnceFunc(func() { close(stop); readers.Wait() })
	defer stopReaders()
	var gets atomic.Int64
	for i, cn := range nodes {
		for range 2 {
			readers.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					floor := cn.delivered.Load()
					v, err := cn.c.Get(ctx, 1)
					if err != nil {
						t.Error(err)
						return
					}
					if int64(v) < floor {
						t.Errorf("node %d served version %d after the invalidation of version %d was delivered", i, v, floor)
						return
					}
					gets.Add(1)
					time.Sleep(time.Duration(mathrand.IntN(2000)) * time.Microsecond)
				}
			})
		}
	}
	randomPause := func(int) { time.Sleep(time.Duration(mathrand.IntN(5000)) * time.Microsecond) }
	for _, cn := range nodes {
		if cn != held {
			cn.slow.Store(&randomPause)
		}
	}

	const rounds = 20
	for r := 1; r <= rounds; r++ {
		writer := nodes[r%len(nodes)]
		err := writer.n.Store().InTx(ctx, func(tx store.Tx) error {
			if _, err := tx.Exec(ctx, "UPDATE cache_items SET v = $1 WHERE id = 1", r); err != nil {
				return err
			}
			return writer.c.InvalidateTx(ctx, tx, 1)
		})
		if err != nil {
			t.Fatal(err)
		}
		// The writer reads its own write at once, delivered or not.
		if v := writer.get(t, ctx); v != r {
			t.Fatalf("round %d: the writer reads %d right after its commit", r, v)
		}
		testnode.Eventually(t, 10*time.Second, "every node applies round "+strconv.Itoa(r), func() bool {
			for _, cn := range nodes {
				if cn.delivered.Load() < int64(r) {
					return false
				}
			}
			return true
		})
		if r == 1 {
			if v := <-slowGet; v != 0 {
				t.Fatalf("the slow Get returned %d; it read version 0", v)
			}
			if st := held.c.Stats(); st.Discarded < 1 {
				t.Fatalf("the slow load was not discarded: %+v", st)
			}
		}
		for i, cn := range nodes {
			if v := cn.get(t, ctx); v != r {
				t.Fatalf("round %d: node %d serves %d after delivery", r, i, v)
			}
		}
	}
	stopReaders()
	if gets.Load() < rounds {
		t.Fatalf("only %d reads during the rounds", gets.Load())
	}
	for i, cn := range nodes {
		if st := cn.c.Stats(); st.Invalidations < rounds || st.Hits == 0 {
			t.Errorf("node %d stats %+v", i, st)
		}
	}
}

func cacheRollbackInvalidatesNothing(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	a, b := newCacheNode(t, backend, db, svc), newCacheNode(t, backend, db, svc)
	if _, err := a.n.Store().Exec(ctx, itemsTable); err != nil {
		t.Fatal(err)
	}
	if _, err := a.n.Store().Exec(ctx, "INSERT INTO cache_items VALUES (1, 5), (2, 5)"); err != nil {
		t.Fatal(err)
	}
	a.get(t, ctx)
	b.get(t, ctx)
	rollback := errors.New("rollback")
	err := a.n.Store().InTx(ctx, func(tx store.Tx) error {
		if err := a.c.InvalidateTx(ctx, tx, 1); err != nil {
			return err
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	// A committed invalidation of another key, sent after the rolled-back one, is the
	// marker: once b has it, the rolled-back one would have arrived before it.
	var marker atomic.Bool
	defer b.n.Caches().Observe(func(inv cache.Invalidation) {
		if slices.Contains(inv.Keys, "2") {
			marker.Store(true)
		}
	})()
	err = a.n.Store().InTx(ctx, func(tx store.Tx) error { return a.c.InvalidateTx(ctx, tx, 2) })
	if err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 10*time.Second, "the marker", marker.Load)
	if n := b.delivered.Load(); n != 0 || b.c.Len() != 1 {
		t.Fatalf("b applied %d invalidations of key 1 and holds %d entries after a rollback", n, b.c.Len())
	}
}

func cacheLostBusFlushes(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc, on := testdb.New(t, backend.Dialect), testnats.Service(), backend
	var cut func()
	switch {
	case backend.Bus != "":
		// The instance reaches NATS through a proxy the test cuts.
		p := testnats.NewProxy(t)
		on.Bus = p.URL()
		cut = p.Cut
	case backend.Dialect == store.Postgres:
		cut = func() { terminateListener(t, svc) }
	default:
		// SQLite's bus reports Lost only when its poller falls a retention period
		// behind; the cache package's own tests cover the flush with a test bus.
		t.Skip("no way to break the SQLite bus from a test")
	}
	a := newCacheNode(t, on, db, svc)
	if _, err := a.n.Store().Exec(ctx, itemsTable); err != nil {
		t.Fatal(err)
	}
	if _, err := a.n.Store().Exec(ctx, "INSERT INTO cache_items VALUES (1, 5)"); err != nil {
		t.Fatal(err)
	}
	a.get(t, ctx)
	cut()
	testnode.Eventually(t, 10*time.Second, "a flush after the bus reconnects", func() bool { return a.lost.Load() > 0 })
	if a.c.Len() != 0 || a.c.Stats().Flushes == 0 {
		t.Fatalf("after Lost: %d entries, stats %+v", a.c.Len(), a.c.Stats())
	}
}

// terminateListener cuts the PostgreSQL listener connection of the one instance of service.
func terminateListener(t *testing.T, service string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testdb.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE $1",
		bus.ApplicationName(service, "")+"%").Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminated %d listener connections (%v), want 1", n, err)
	}
}
