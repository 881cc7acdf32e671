package conformance

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// locks exercises mutual exclusion across instances and release on death. The lock
// package tests the rest of its API.
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

}
