package lease_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// open opens a store on db with the lease table: one instance's connections.
func open(t *testing.T, db testdb.DB, clock store.Clock) *store.Store {
	t.Helper()
	s := db.Open(t, &store.Options{Clock: clock})
	if _, err := store.NewMigrator(s, lease.Component()).Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// manager opens an instance's own store (its own connections, as a separate process
// would have) and a lease manager on it, closed when t ends.
func manager(t *testing.T, db testdb.DB, clock store.Clock, holder string, ttl time.Duration) (*lease.Manager, *store.Store) {
	t.Helper()
	s := open(t, db, clock)
	m, err := lease.NewManager(s, lease.Config{Service: "svc", Holder: holder, TTL: ttl, Logger: testdb.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m, s
}

func TestTokensStrictlyIncrease(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, _ := manager(t, db, nil, "a", 0)
		b, _ := manager(t, db, nil, "b", 0)
		var last int64
		for i := range 6 {
			m, other := a, b
			if i%2 == 1 {
				m, other = b, a
			}
			l, err := m.TryAcquire(ctx, "x", nil)
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			if l.Token() <= last {
				t.Fatalf("round %d: token %d after %d", i, l.Token(), last)
			}
			last = l.Token()
			if _, err := other.TryAcquire(ctx, "x", nil); !errors.Is(err, lease.ErrHeld) {
				t.Fatalf("round %d: second holder got %v, want ErrHeld", i, err)
			}
			if _, err := m.TryAcquire(ctx, "x", nil); !errors.Is(err, lease.ErrHeld) {
				t.Fatalf("round %d: same holder twice got %v, want ErrHeld", i, err)
			}
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if cause := context.Cause(l.Context()); !errors.Is(cause, lease.ErrReleased) {
				t.Fatalf("released lease context cause %v", cause)
			}
		}
	})
}

func TestServicesAreIsolated(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := open(t, db, nil)
		for _, svc := range []string{"shop", "billing"} {
			m, err := lease.NewManager(s, lease.Config{Service: svc, Holder: "h-" + svc})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = m.Close(ctx) })
			if l, err := m.TryAcquire(ctx, "leader", nil); err != nil || l.Token() != 1 {
				t.Fatalf("service %s: %v", svc, err)
			}
		}
	})
}

func TestRenewedWhileHeld(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		// A TTL long enough that a loaded machine does not miss three renewals in a row;
		// losing the lease then would be right, but not what this test is about.
		ttl := 800 * time.Millisecond
		a, _ := manager(t, db, nil, "a", ttl)
		b, _ := manager(t, db, nil, "b", ttl)
		l, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		// Four TTLs: without renewal the lease would have expired three times over.
		deadline := time.Now().Add(4 * ttl)
		for time.Now().Before(deadline) {
			if _, err := b.TryAcquire(ctx, "x", nil); !errors.Is(err, lease.ErrHeld) {
				t.Fatalf("other holder took a renewed lease: %v", err)
			}
			time.Sleep(ttl / 8)
		}
		if !l.Valid() || l.Context().Err() != nil {
			t.Fatalf("renewed lease invalid: %v", context.Cause(l.Context()))
		}
	})
}

func TestExpiryAndFencing(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		clock := testdb.NewClock()
		a, sa := manager(t, db, clock, "a", 0)
		b, sb := manager(t, db, clock, "b", 0)
		la, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := sa.InTx(ctx, func(tx store.Tx) error { return la.Check(ctx, tx) }); err != nil {
			t.Fatalf("holder's own check: %v", err)
		}
		// a pauses past its TTL: in database time the lease has expired and b takes it.
		clock.Advance(lease.DefaultTTL + time.Millisecond)
		lb, err := b.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatalf("expired lease not taken: %v", err)
		}
		if lb.Token() != la.Token()+1 {
			t.Fatalf("token %d after %d", lb.Token(), la.Token())
		}
		// a wakes and writes with its old token: refused, in its own transaction.
		err = sa.InTx(ctx, func(tx store.Tx) error { return la.Check(ctx, tx) })
		if !errors.Is(err, lease.ErrFenced) {
			t.Fatalf("stale holder's check = %v, want ErrFenced", err)
		}
		if err := sb.InTx(ctx, func(tx store.Tx) error { return lb.Check(ctx, tx) }); err != nil {
			t.Fatalf("new holder's check: %v", err)
		}
		// a's next renewal finds the lease gone and cancels a's context.
		select {
		case <-la.Context().Done():
			if cause := context.Cause(la.Context()); !errors.Is(cause, lease.ErrLost) {
				t.Fatalf("cause %v, want ErrLost", cause)
			}
		case <-time.After(5 * lease.DefaultTTL):
			t.Fatal("stale holder's context never cancelled")
		}
		if la.Valid() {
			t.Fatal("lost lease still valid")
		}
		// CheckToken fences a token passed along without the Lease value.
		if err := sb.InTx(ctx, func(tx store.Tx) error { return b.CheckToken(ctx, tx, "x", lb.Token()) }); err != nil {
			t.Fatal(err)
		}
		if err := sb.InTx(ctx, func(tx store.Tx) error { return b.CheckToken(ctx, tx, "x", la.Token()) }); !errors.Is(err, lease.ErrFenced) {
			t.Fatalf("CheckToken with an old token = %v", err)
		}
		if err := sb.InTx(ctx, func(tx store.Tx) error { return b.CheckToken(ctx, tx, "never", 1) }); !errors.Is(err, lease.ErrFenced) {
			t.Fatalf("CheckToken of an unknown lease = %v", err)
		}
	})
}

func TestFencedWriteBlocksTakeover(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		// A write checked against token n commits before token n+1 can be issued: the
		// new holder's acquisition waits for the old holder's transaction.
		clock := testdb.NewClock()
		a, sa := manager(t, db, clock, "a", 0)
		b, _ := manager(t, db, clock, "b", 0)
		la, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := sa.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := la.Check(ctx, tx); err != nil {
			t.Fatal(err)
		}
		clock.Advance(lease.DefaultTTL + time.Millisecond)
		var committed atomic.Bool
		got := make(chan error, 1)
		go func() {
			lb, err := b.TryAcquire(ctx, "x", nil)
			if err == nil && !committed.Load() {
				err = errors.New("new token issued while a write fenced by the old one was uncommitted")
			}
			if err == nil && lb.Token() != la.Token()+1 {
				err = errors.New("unexpected token")
			}
			got <- err
		}()
		time.Sleep(300 * time.Millisecond)
		committed.Store(true)
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	})
}

func TestStalledFencedTxIsAborted(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		if db.Dialect != store.Postgres {
			t.Skip("SQLite has no server to abort a stalled transaction; a frozen writer blocks until it resumes")
		}
		a, sa := manager(t, db, nil, "a", 500*time.Millisecond)
		b, _ := manager(t, db, nil, "b", 500*time.Millisecond)
		la, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := sa.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := la.Check(ctx, tx); err != nil {
			t.Fatal(err)
		}
		// a stalls inside its fenced transaction and gives the lease up meanwhile: the
		// takeover waits for the transaction, which the server aborts after a TTL idle.
		if err := la.Release(ctx); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		lb, err := b.Acquire(actx, "x", nil)
		if err != nil {
			t.Fatalf("takeover blocked by a stalled fenced transaction: %v", err)
		}
		t.Logf("takeover after %v (lease TTL 500ms)", time.Since(start))
		if err := tx.Commit(ctx); err == nil {
			t.Fatal("the stalled fenced transaction committed after the lease passed on")
		}
		if lb.Token() != la.Token()+1 {
			t.Fatalf("token %d after %d", lb.Token(), la.Token())
		}
	})
}

func TestLostWhenTakenAway(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, sa := manager(t, db, nil, "a", lease.MinTTL)
		l, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		// An operator (or a bug) reassigns the row: the holder must notice at its next
		// renewal, not keep acting.
		if _, err := sa.Exec(ctx, "UPDATE twice_leases SET holder = 'intruder', token = token + 1 WHERE name = 'x'"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-l.Context().Done():
		case <-time.After(10 * time.Second): // a liveness bound: the next renewal is 50 ms away
			t.Fatal("lease not lost")
		}
		if cause := context.Cause(l.Context()); !errors.Is(cause, lease.ErrLost) {
			t.Fatalf("cause %v, want ErrLost", cause)
		}
		// A lost lease frees its row in the background, only while the row still carries
		// its token: the newer holder keeps it. Close waits for that free.
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if i, err := lease.Lookup(ctx, sa, "svc", "x"); err != nil || i.Holder != "intruder" {
			t.Fatalf("after the lost holder's free: %+v, %v; want the intruder's lease", i, err)
		}
	})
}

func TestAcquireWaits(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, _ := manager(t, db, nil, "a", lease.MinTTL)
		b, _ := manager(t, db, nil, "b", lease.MinTTL)
		la, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		// Same process, other goroutine: woken by the local release.
		local := make(chan *lease.Lease, 1)
		go func() {
			l, err := a.Acquire(ctx, "x", nil)
			if err != nil {
				t.Error(err)
			}
			local <- l
		}()
		time.Sleep(50 * time.Millisecond)
		if err := la.Release(ctx); err != nil {
			t.Fatal(err)
		}
		l2 := <-local
		if l2 == nil || l2.Token() != la.Token()+1 {
			t.Fatalf("waiter got %v", l2)
		}
		// Other instance: sees the release on its next look.
		start := time.Now()
		remote := make(chan *lease.Lease, 1)
		go func() {
			l, err := b.Acquire(ctx, "x", nil)
			if err != nil {
				t.Error(err)
			}
			remote <- l
		}()
		time.Sleep(50 * time.Millisecond)
		if err := l2.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if l3 := <-remote; l3 == nil || l3.Token() != l2.Token()+1 {
			t.Fatalf("remote waiter got %v", l3)
		}
		if waited := time.Since(start); waited > 10*lease.MinTTL {
			t.Logf("remote waiter took %v", waited)
		}
		// A cancelled wait returns the context's error.
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if _, err := a.Acquire(cctx, "x", nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("cancelled Acquire = %v", err)
		}
	})
}

func TestInfoAndList(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, _ := manager(t, db, nil, "a", 0)
		if _, err := a.Info(ctx, "none"); !errors.Is(err, lease.ErrNotFound) {
			t.Fatalf("Info of unknown lease = %v", err)
		}
		for _, n := range []string{"lock:a", "lock:b", "other"} {
			if _, err := a.TryAcquire(ctx, n, nil); err != nil {
				t.Fatal(err)
			}
		}
		i, err := a.Info(ctx, "lock:a")
		if err != nil || i.Holder != "a" || !i.Held() || i.Remaining <= 0 || i.Remaining > lease.DefaultTTL {
			t.Fatalf("Info = %+v, %v", i, err)
		}
		ls, err := a.List(ctx, "lock:")
		if err != nil || len(ls) != 2 || ls[0].Name != "lock:a" || ls[1].Name != "lock:b" {
			t.Fatalf("List = %+v, %v", ls, err)
		}
	})
}

func TestCloseReleases(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, _ := manager(t, db, nil, "a", 0)
		b, _ := manager(t, db, nil, "b", 0)
		l, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(context.Cause(l.Context()), lease.ErrReleased) {
			t.Fatal("Close did not end the lease")
		}
		if _, err := b.TryAcquire(ctx, "x", nil); err != nil {
			t.Fatalf("lease not free after Close: %v", err)
		}
		if _, err := a.TryAcquire(ctx, "y", nil); !errors.Is(err, lease.ErrClosed) {
			t.Fatalf("TryAcquire after Close = %v", err)
		}
	})
}

// Abandon ends every lease locally, as a crash ends the process's belief in them, and
// leaves the rows held: the others wait for their deadlines, or free them when they find
// the holder dead. Close afterwards releases nothing.
func TestAbandonLeavesTheRows(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		var released []string
		a, err := lease.NewManager(open(t, db, nil), lease.Config{Service: "svc", Holder: "a", TTL: time.Hour, Logger: testdb.Logger(t),
			OnRelease: func(_ context.Context, names []string) { released = append(released, names...) }})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := manager(t, db, nil, "b", time.Hour)
		l, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		a.Abandon()
		if l.Valid() || !errors.Is(context.Cause(l.Context()), lease.ErrClosed) {
			t.Fatalf("after Abandon: valid %v, cause %v; want ended with ErrClosed", l.Valid(), context.Cause(l.Context()))
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := b.TryAcquire(ctx, "x", nil); !errors.Is(err, lease.ErrHeld) {
			t.Fatalf("an abandoned lease taken before its deadline: %v", err)
		}
		if released != nil {
			t.Fatalf("announced %v; an abandoned manager announces nothing", released)
		}
		if _, err := b.ReleaseDead(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.TryAcquire(ctx, "x", nil); err != nil {
			t.Fatalf("an abandoned lease not taken once its holder was found dead: %v", err)
		}
	})
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, _ := manager(t, db, nil, "a", 0)
		if _, err := a.TryAcquire(ctx, "", nil); err == nil {
			t.Fatal("empty name accepted")
		}
		if _, err := a.TryAcquire(ctx, "x", &lease.AcquireOpts{TTL: time.Millisecond}); err == nil {
			t.Fatal("1 ms TTL accepted")
		}
		if _, err := lease.NewManager(open(t, db, nil), lease.Config{}); err == nil {
			t.Fatal("manager without service accepted")
		}
	})
}

// A dead holder's leases are freed by another instance at once, before their deadlines, with
// the tokens fencing as ever; LoseAll ends a holder's leases locally at once.
func TestReleaseDeadAndLoseAll(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := open(t, db, nil)
		var released []string
		a, err := lease.NewManager(s, lease.Config{Service: "svc", Holder: "a", TTL: time.Hour, Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close(context.Background()) })
		b, err := lease.NewManager(s, lease.Config{Service: "svc", Holder: "b", TTL: time.Hour, Logger: testdb.Logger(t),
			OnRelease: func(_ context.Context, names []string) { released = append(released, names...) }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(context.Background()) })
		la, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.TryAcquire(ctx, "y", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := b.TryAcquire(ctx, "x", nil); !errors.Is(err, lease.ErrHeld) {
			t.Fatalf("held lease taken: %v", err)
		}
		if _, err := b.ReleaseDead(ctx, "b"); err == nil {
			t.Fatal("ReleaseDead of the manager's own holder accepted")
		}
		// a's process is gone (its liveness lock said so): b frees its leases now.
		names, err := b.ReleaseDead(ctx, "a")
		slices.Sort(names)
		if err != nil || !slices.Equal(names, []string{"x", "y"}) || !slices.Equal(released, names) {
			t.Fatalf("released %v (told %v), %v; want x and y", names, released, err)
		}
		lb, err := b.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatalf("a dead holder's lease not taken: %v", err)
		}
		if lb.Token() != la.Token()+1 {
			t.Fatalf("token %d after %d", lb.Token(), la.Token())
		}
		if err := s.InTx(ctx, func(tx store.Tx) error { return la.Check(ctx, tx) }); !errors.Is(err, lease.ErrFenced) {
			t.Fatalf("the dead holder's write: %v, want ErrFenced", err)
		}
		// b's liveness session ends while it lives: it gives up x at once, locally.
		b.LoseAll(errors.New("liveness lost"))
		if lb.Valid() {
			t.Fatal("a lease valid after LoseAll")
		}
		if cause := context.Cause(lb.Context()); !errors.Is(cause, lease.ErrLost) {
			t.Fatalf("cause %v, want ErrLost", cause)
		}
	})
}

// renewals counts the renewal statements a store runs.
type renewals struct{ n atomic.Int64 }

func (r *renewals) Statement(q string) {
	if strings.Contains(q, "SET expires_at") && strings.Contains(q, "RETURNING name, token") {
		r.n.Add(1)
	}
}

// A manager whose renewals a carrier runs (the node's heartbeat) sends none of its own while
// the carrier keeps its pace, and renews by itself when the carrier stops: the lease is never
// lost.
func TestCarriedRenewals(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		obs := &renewals{}
		s := db.Open(t, &store.Options{Observer: obs})
		if _, err := store.NewMigrator(s, lease.Component()).Up(ctx); err != nil {
			t.Fatal(err)
		}
		m, err := lease.NewManager(s, lease.Config{Service: "svc", Holder: "a", TTL: 3 * time.Second, Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close(ctx)
		const period = 200 * time.Millisecond // the manager's own renewals would be every second
		m.Carried(period)
		l, err := m.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		var carried atomic.Int64
		carry := func() {
			sent := time.Now()
			tx, err := s.BeginControl(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			committed, err := m.RenewIn(ctx, tx)
			if err != nil {
				_ = tx.Rollback(ctx)
				t.Error(err)
				return
			}
			if err := tx.Commit(ctx); err != nil {
				t.Error(err)
				return
			}
			carried.Add(1)
			committed(ctx, sent)
		}
		for range 15 { // three seconds: past the lease's TTL
			carry()
			time.Sleep(period)
		}
		if own := obs.n.Load() - carried.Load(); own != 0 {
			t.Fatalf("the manager sent %d renewals of its own while the carrier kept its pace", own)
		}
		if !l.Valid() {
			t.Fatal("the lease was lost while the carrier renewed it")
		}
		// The carrier stops: the manager renews by itself, and the lease outlives its TTL.
		stopped := obs.n.Load()
		time.Sleep(4 * time.Second)
		if obs.n.Load() == stopped {
			t.Fatal("the manager did not renew after the carrier stopped")
		}
		if !l.Valid() {
			t.Fatal("the lease was lost after the carrier stopped")
		}
	})
}

// A lease that ends here without a release (its deadline passed, a renewal came back too
// late, the liveness lock was lost) while its holder lives is freed in the database and
// announced: no death is found for a live holder, so nothing else would tell an instance
// waiting to be told (the leader's followers) that it may take the lease.
func TestLostLeaseIsFreedAndAnnounced(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		announced := make(chan string, 4)
		a, err := lease.NewManager(open(t, db, nil), lease.Config{Service: "svc", Holder: "a", TTL: time.Hour, Logger: testdb.Logger(t),
			OnRelease: func(_ context.Context, names []string) {
				for _, n := range names {
					announced <- n
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close(ctx) })
		b, _ := manager(t, db, nil, "b", time.Hour)
		la, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		a.LoseAll(errors.New("liveness lost"))
		select {
		case name := <-announced:
			if name != "x" {
				t.Fatalf("announced %q, want x", name)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a lease lost by a live holder was not announced")
		}
		lb, err := b.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatalf("a lost lease, announced, is not free in the database: %v", err)
		}
		if lb.Token() <= la.Token() {
			t.Fatalf("token %d after %d", lb.Token(), la.Token())
		}
	})
}

// A renewal statement that fails is counted (RenewalFailures); the lease holds until its
// deadline, and the next renewal keeps it.
func TestRenewalFailuresCounted(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := open(t, db, nil)
		m, err := lease.NewManager(s, lease.Config{Service: "svc", Holder: "a", Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close(ctx)
		l, err := m.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		if n := m.RenewalFailures(); n != 0 {
			t.Fatalf("RenewalFailures = %d before any failed", n)
		}
		gone, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := m.RenewIn(gone, s.Control()); err == nil {
			t.Fatal("a renewal on a cancelled context succeeded")
		}
		if n := m.RenewalFailures(); n != 1 {
			t.Fatalf("RenewalFailures = %d after one failed renewal, want 1", n)
		}
		if !l.Valid() {
			t.Fatal("one failed renewal ended the lease before its deadline")
		}
	})
}

// A renewal does not bring back a lease that has run out in the database: the others may
// already count it free. Its holder loses it instead (it had passed its own deadline, here
// stubbed by the database clock moving on alone).
func TestRenewalDoesNotReviveAnExpiredLease(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		clock := testdb.NewClock()
		a, sa := manager(t, db, clock, "a", 0)
		l, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.TryAcquire(ctx, "y", nil); err != nil {
			t.Fatal(err)
		}
		clock.Advance(lease.DefaultTTL + time.Millisecond)
		if listed, err := a.List(ctx, ""); err != nil || len(listed) != 0 {
			t.Fatalf("after the TTL the database lists %v (%v); want nothing", listed, err)
		}
		sent := time.Now()
		committed, err := a.RenewIn(ctx, sa.Control())
		if err != nil {
			t.Fatal(err)
		}
		committed(ctx, sent)
		if listed, err := a.List(ctx, ""); err != nil || len(listed) != 0 {
			t.Fatalf("a renewal after the TTL brought back %v (%v); want nothing", listed, err)
		}
		if l.Valid() {
			t.Fatal("the holder still believes in a lease the database let run out")
		}
		// Anyone may take it now, under the next token.
		b, _ := manager(t, db, clock, "b", 0)
		lb, err := b.TryAcquire(ctx, "x", nil)
		if err != nil || lb.Token() != l.Token()+1 {
			t.Fatalf("b's acquisition after the expiry: %v, %v", lb, err)
		}
	})
}
