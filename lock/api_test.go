package lock_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/lock"
	"github.com/twicehq/twice/store"
)

func TestTryAcquireAndRelease(t *testing.T) {
	each(t, func(t *testing.T, g *group) {
		ctx := context.Background()
		a, b := g.join(t, "a"), g.join(t, "b")
		k, ok, err := a.locks.TryAcquire(ctx, "report", nil)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if _, ok, err := b.locks.TryAcquire(ctx, "report", nil); ok || err != nil {
			t.Fatalf("second TryAcquire = %v, %v", ok, err)
		}
		held, err := b.locks.Held(ctx)
		if err != nil || len(held) != 1 || held[0].Holder != a.id || !strings.HasSuffix(held[0].Name, "report") {
			t.Fatalf("Held = %+v, %v", held, err)
		}
		// The holder's write is fenced in; after release it is fenced out.
		if err := a.s.InTx(ctx, func(tx store.Tx) error { return k.Check(ctx, tx) }); err != nil {
			t.Fatal(err)
		}
		if err := k.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.s.InTx(ctx, func(tx store.Tx) error { return k.Check(ctx, tx) }); !errors.Is(err, lock.ErrFenced) {
			t.Fatalf("check after release = %v", err)
		}
		k2, ok, err := b.locks.TryAcquire(ctx, "report", nil)
		if err != nil || !ok || k2.Token() <= k.Token() {
			t.Fatalf("after release: %v %v", ok, err)
		}
	})
}

// A lock held by one goroutine of an instance is held for the others too; its name is the
// caller's, its context lives while it is held.
func TestTryAcquireHeldHere(t *testing.T) {
	each(t, func(t *testing.T, g *group) {
		ctx := context.Background()
		a := g.join(t, "a")
		k, ok, err := a.locks.TryAcquire(ctx, "report", nil)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if k.Name() != "report" || !k.Valid() || k.Context().Err() != nil {
			t.Fatalf("held lock: name %q, valid %v, context %v", k.Name(), k.Valid(), k.Context().Err())
		}
		if _, ok, err := a.locks.TryAcquire(ctx, "report", nil); ok || err != nil {
			t.Fatalf("TryAcquire of a lock held in this instance = %v, %v", ok, err)
		}
		if err := k.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if k.Valid() || !errors.Is(context.Cause(k.Context()), lease.ErrReleased) {
			t.Fatalf("released lock: valid %v, context cause %v", k.Valid(), context.Cause(k.Context()))
		}
		if err := k.Release(ctx); err != nil {
			t.Fatalf("second Release = %v", err)
		}
	})
}

// Do runs its function holding the lock, waiting for it first, and releases it after;
// the function's context ends when the lock is lost.
func TestDo(t *testing.T) {
	each(t, func(t *testing.T, g *group) {
		ctx := context.Background()
		a, b := g.join(t, "a"), g.join(t, "b")
		boom := errors.New("boom")
		err := a.locks.Do(ctx, "report", nil, func(ctx context.Context) error {
			if _, ok, err := b.locks.TryAcquire(ctx, "report", nil); ok || err != nil {
				t.Errorf("TryAcquire inside Do = %v, %v", ok, err)
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Do = %v, want the function's error", err)
		}
		k, ok, err := b.locks.TryAcquire(ctx, "report", nil)
		if err != nil || !ok {
			t.Fatalf("after Do: TryAcquire = %v, %v", ok, err)
		}

		// While b holds it, Do waits until its context ends.
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		ran := false
		if err := a.locks.Do(wctx, "report", nil, func(context.Context) error { ran = true; return nil }); !errors.Is(err, context.DeadlineExceeded) || ran {
			t.Fatalf("Do on a held lock = %v, ran %v", err, ran)
		}
		// Released, it runs at once.
		got := make(chan error, 1)
		go func() { got <- a.locks.Do(ctx, "report", nil, func(context.Context) error { return nil }) }()
		if err := k.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatalf("Do after the release = %v", err)
		}

		// The lock passes to an intruder while the function runs: its context ends.
		err = a.locks.Do(ctx, "report", &lock.Opts{TTL: lease.MinTTL}, func(ctx context.Context) error {
			if _, err := a.s.Exec(ctx, "UPDATE twice_leases SET holder = 'intruder', token = token + 1 WHERE name = 'lock:report'"); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(10 * time.Second):
				return errors.New("the function's context outlived the lock")
			}
		})
		if !errors.Is(err, lease.ErrLost) {
			t.Fatalf("Do while the lock is lost = %v, want ErrLost", err)
		}
	})
}

// A write checked under a lock that expired in database time still goes through while
// nobody else has taken the lock (no newer token exists), and is fenced once someone has.
func TestCheckAfterExpiry(t *testing.T) {
	each(t, func(t *testing.T, g *group) {
		ctx := context.Background()
		clock := testdb.NewClock()
		g.clock = clock
		a, b := g.join(t, "a"), g.join(t, "b")
		k, ok, err := a.locks.TryAcquire(ctx, "report", &lock.Opts{TTL: time.Hour})
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		check := func(k *lock.Lock, s *store.Store) error {
			return s.InTx(ctx, func(tx store.Tx) error { return k.Check(ctx, tx) })
		}
		clock.Advance(time.Hour)
		if err := check(k, a.s); err != nil {
			t.Fatalf("check after expiry, lock not taken = %v", err)
		}
		k2, ok, err := b.locks.TryAcquire(ctx, "report", nil)
		if err != nil || !ok {
			t.Fatalf("expired lock not taken: %v, %v", ok, err)
		}
		if err := check(k, a.s); !errors.Is(err, lock.ErrFenced) {
			t.Fatalf("check after the lock was taken = %v, want ErrFenced", err)
		}
		if err := check(k2, b.s); err != nil {
			t.Fatalf("new holder's check = %v", err)
		}
	})
}

func TestSemaphore(t *testing.T) {
	each(t, func(t *testing.T, g *group) {
		ctx := context.Background()
		instances := []*instance{g.join(t, "a"), g.join(t, "b"), g.join(t, "c")}
		var inside, most atomic.Int32
		var done atomic.Int32
		var wg sync.WaitGroup
		for _, n := range instances {
			sem, err := n.locks.Semaphore("exports", 2)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				wg.Go(func() {
					for range 4 {
						err := sem.Do(ctx, nil, func(ctx context.Context) error {
							raiseTo(&most, inside.Add(1))
							time.Sleep(5 * time.Millisecond)
							inside.Add(-1)
							done.Add(1)
							return nil
						})
						if err != nil {
							t.Error(err)
						}
					}
				})
			}
		}
		wg.Wait()
		if most.Load() > 2 {
			t.Fatalf("%d holders at once in a 2-slot semaphore", most.Load())
		}
		if done.Load() != 24 {
			t.Fatalf("%d of 24 runs done", done.Load())
		}
		if _, err := instances[0].locks.Semaphore("x", 0); err == nil {
			t.Fatal("0-slot semaphore accepted")
		}
	})
}

// raiseTo raises m to v if v is larger: the most concurrent holders seen.
func raiseTo(m *atomic.Int32, v int32) {
	for {
		cur := m.Load()
		if v <= cur || m.CompareAndSwap(cur, v) {
			return
		}
	}
}

// A semaphore's slots are leases of their own, held by whichever instance took them; a
// full semaphore refuses TryAcquire and makes Acquire wait for a slot.
func TestSemaphoreSlots(t *testing.T) {
	each(t, func(t *testing.T, g *group) {
		ctx := context.Background()
		a, b := g.join(t, "a"), g.join(t, "b")
		sa, err := a.locks.Semaphore("exports", 2)
		if err != nil {
			t.Fatal(err)
		}
		sb, err := b.locks.Semaphore("exports", 2)
		if err != nil {
			t.Fatal(err)
		}
		k1, ok1, err1 := sa.TryAcquire(ctx, nil)
		k2, ok2, err2 := sb.TryAcquire(ctx, nil)
		if !ok1 || !ok2 || err1 != nil || err2 != nil {
			t.Fatalf("two slots: %v %v, %v %v", ok1, err1, ok2, err2)
		}
		held, err := a.locks.Held(ctx)
		if err != nil || len(held) != 2 || held[0].Name == held[1].Name {
			t.Fatalf("Held = %+v, %v; want two slots", held, err)
		}
		holders := []string{held[0].Holder, held[1].Holder}
		slices.Sort(holders)
		if !slices.Equal(holders, []string{"a", "b"}) {
			t.Fatalf("slots held by %v", holders)
		}
		for _, s := range []*lock.Semaphore{sa, sb} {
			if _, ok, err := s.TryAcquire(ctx, nil); ok || err != nil {
				t.Fatalf("third slot: %v, %v", ok, err)
			}
		}
		got := make(chan *lock.Lock, 1)
		go func() {
			k, err := sa.Acquire(ctx, nil)
			if err != nil {
				t.Error(err)
			}
			got <- k
		}()
		if err := k2.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if k := <-got; k == nil || k.Name() != "exports" {
			t.Fatalf("waiter got %v", k)
		}
		if err := k1.Release(ctx); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if _, err := sa.Acquire(wctx, nil); err != nil {
			t.Fatalf("Acquire of the free slot = %v", err)
		}
		if _, err := sb.Acquire(wctx, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Acquire of a full semaphore = %v", err)
		}
		if _, err := a.locks.Semaphore("x", 1000); err != nil {
			t.Fatalf("1000 slots: %v", err)
		}
		if _, err := a.locks.Semaphore("x", 1001); err == nil {
			t.Fatal("1001 slots accepted")
		}
	})
}

func TestBadNames(t *testing.T) {
	each(t, func(t *testing.T, g *group) {
		ctx := context.Background()
		a := g.join(t, "a")
		if _, _, err := a.locks.TryAcquire(ctx, "", nil); err == nil {
			t.Fatal("empty name accepted")
		}
		if _, err := a.locks.Acquire(ctx, strings.Repeat("x", 300), nil); err == nil {
			t.Fatal("300-byte name accepted")
		}
		if _, _, err := a.locks.TryAcquire(ctx, "x", &lock.Opts{TTL: time.Millisecond}); err == nil {
			t.Fatal("1 ms TTL accepted")
		}
	})
}
