package conformance

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/lock"
	"github.com/twicehq/twice/store"
)

// locks exercises mutual exclusion, fencing, release on death and semaphores.
func locks(t *testing.T, dialect store.Dialect) {
	ctx := context.Background()

	t.Run("MutualExclusion", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		nodes := []*twice.Node{node(t, db, "svc", steady), node(t, db, "svc", steady), node(t, db, "svc", steady)}
		if _, err := nodes[0].Store().Exec(ctx, "CREATE TABLE counter (n INTEGER NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		if _, err := nodes[0].Store().Exec(ctx, "INSERT INTO counter VALUES (0)"); err != nil {
			t.Fatal(err)
		}
		// Read-modify-write in separate statements: only the lock keeps increments apart.
		var inside atomic.Int32
		var wg sync.WaitGroup
		const perWorker = 8
		for _, n := range nodes {
			for range 2 {
				wg.Go(func() {
					for range perWorker {
						err := n.Locks().Do(ctx, "counter", nil, func(ctx context.Context) error {
							if inside.Add(1) != 1 {
								t.Error("two holders inside the lock")
							}
							defer inside.Add(-1)
							var v int
							if err := n.Store().Reader().QueryRow(ctx, "SELECT n FROM counter").Scan(&v); err != nil {
								return err
							}
							_, err := n.Store().Exec(ctx, "UPDATE counter SET n = $1", v+1)
							return err
						})
						if err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
		}
		wg.Wait()
		var v int
		if err := nodes[0].Store().QueryRow(ctx, "SELECT n FROM counter").Scan(&v); err != nil || v != 3*2*perWorker {
			t.Fatalf("counter %d (%v), want %d", v, err, 3*2*perWorker)
		}
	})

	t.Run("TryAcquireAndRelease", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a, b := node(t, db, "svc", steady), node(t, db, "svc", steady)
		k, ok, err := a.Locks().TryAcquire(ctx, "report", nil)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if _, ok, err := b.Locks().TryAcquire(ctx, "report", nil); ok || err != nil {
			t.Fatalf("second TryAcquire = %v, %v", ok, err)
		}
		held, err := b.Locks().Held(ctx)
		if err != nil || len(held) != 1 || held[0].Holder != a.ID() || !strings.HasSuffix(held[0].Name, "report") {
			t.Fatalf("Held = %+v, %v", held, err)
		}
		// The holder's write is fenced in; after release it is fenced out.
		if err := a.Store().InTx(ctx, func(tx store.Tx) error { return k.Check(ctx, tx) }); err != nil {
			t.Fatal(err)
		}
		if err := k.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.Store().InTx(ctx, func(tx store.Tx) error { return k.Check(ctx, tx) }); !errors.Is(err, lock.ErrFenced) {
			t.Fatalf("check after release = %v", err)
		}
		k2, ok, err := b.Locks().TryAcquire(ctx, "report", nil)
		if err != nil || !ok || k2.Token() <= k.Token() {
			t.Fatalf("after release: %v %v", ok, err)
		}
	})

	t.Run("FreedWhenHolderDies", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a, b := node(t, db, "svc", fast), node(t, db, "svc", fast)
		k, err := a.Locks().Acquire(ctx, "job", nil)
		if err != nil {
			t.Fatal(err)
		}
		a.Store().Close() // a can no longer renew, as if it had crashed
		start := time.Now()
		k2, err := b.Locks().Acquire(ctx, "job", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("lock free %v after its holder died (TTL %v)", time.Since(start), fast.LeaseTTL)
		if k2.Token() != k.Token()+1 {
			t.Fatalf("token %d after %d", k2.Token(), k.Token())
		}
		select {
		case <-k.Context().Done():
		case <-time.After(10 * time.Second):
			t.Fatal("dead holder's lock context never ended")
		}
	})

	t.Run("Semaphore", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		nodes := []*twice.Node{node(t, db, "svc", steady), node(t, db, "svc", steady), node(t, db, "svc", steady)}
		var inside, most atomic.Int32
		var done atomic.Int32
		var wg sync.WaitGroup
		for _, n := range nodes {
			sem, err := n.Locks().Semaphore("exports", 2)
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
		if _, err := nodes[0].Locks().Semaphore("x", 0); err == nil {
			t.Fatal("0-slot semaphore accepted")
		}
	})

	t.Run("BadNames", func(t *testing.T) {
		t.Parallel()
		a := node(t, testdb.New(t, dialect), "svc", fast)
		if _, _, err := a.Locks().TryAcquire(ctx, "", nil); err == nil {
			t.Fatal("empty name accepted")
		}
		if _, err := a.Locks().Acquire(ctx, strings.Repeat("x", 300), nil); err == nil {
			t.Fatal("300-byte name accepted")
		}
		if _, _, err := a.Locks().TryAcquire(ctx, "x", &lock.Opts{TTL: time.Millisecond}); err == nil {
			t.Fatal("1 ms TTL accepted")
		}
	})
}
