package conformance

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
)

// exerciseLock checks that a lock excludes across instances and is freed when its holder
// dies. The lock package tests the rest of its API.
func exerciseLock(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"MutualExclusion", lockMutualExclusion},
		{"FreedWhenHolderDies", lockFreedWhenHolderDies},
	})
}

func lockMutualExclusion(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	nodes := []*twice.Node{backend.node(t, db, "svc", testnode.Steady()), backend.node(t, db, "svc", testnode.Steady()), backend.node(t, db, "svc", testnode.Steady())}
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
}

func lockFreedWhenHolderDies(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a, b := backend.node(t, db, "svc", testnode.Fast()), backend.node(t, db, "svc", testnode.Fast())
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
	t.Logf("lock free %v after its holder died (TTL %v)", time.Since(start), testnode.Fast().LeaseTTL)
	if k2.Token() != k.Token()+1 {
		t.Fatalf("token %d after %d", k2.Token(), k.Token())
	}
	select {
	case <-k.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("dead holder's lock context never ended")
	}
}
