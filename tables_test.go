package twice_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// TestOwnTablesOnBothStores runs the README's recipe for an application's own tables on
// each database: its migrations applied by twice's migrator once however many instances
// start together, the same statements on both dialects, its writes committing or rolling
// back with a job, a time-bounded read, and Down undoing its version and nothing of twice's.
func TestOwnTablesOnBothStores(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		nodes := []*twice.Node{testnode.Open(t, db, "shop", twice.Config{}), testnode.Open(t, db, "shop", twice.Config{}), testnode.Open(t, db, "shop", twice.Config{})}
		var mu sync.Mutex
		var applied []store.Step
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Go(func() {
				steps, err := store.NewMigrator(n.Store(), shopComponent()).Up(ctx)
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				applied = append(applied, steps...)
				mu.Unlock()
			})
		}
		wg.Wait()
		if len(applied) != 1 || applied[0].String() != "shop 0001_orders" {
			t.Fatalf("three instances applied %v, want shop 0001_orders once", applied)
		}
		n := nodes[0]
		m := store.NewMigrator(n.Store(), shopComponent())
		if err := m.Check(ctx); err != nil {
			t.Fatal(err)
		}

		before := time.Now().Add(-time.Minute)
		id, err := placeOrder(ctx, n, "ann", 4200)
		if err != nil {
			t.Fatal(err)
		}
		errAbandon := errors.New("abandoned")
		err = n.Store().InTx(ctx, func(tx store.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO orders (user_id, total) VALUES ($1, $2)", "ann", 1); err != nil {
				return err
			}
			if _, err := n.Jobs().EnqueueTx(ctx, tx, receipt{OrderID: -1}, nil); err != nil {
				return err
			}
			return errAbandon
		})
		if !errors.Is(err, errAbandon) {
			t.Fatalf("InTx = %v", err)
		}
		got, err := ordersSince(ctx, n, "ann", before)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != id || got[0].Total != 4200 || got[0].Paid || got[0].Created.Before(before) {
			t.Fatalf("orders since %v: %+v, want only order %d", before, got, id)
		}
		if later, err := ordersSince(ctx, n, "ann", time.Now().Add(time.Hour)); err != nil || len(later) != 0 {
			t.Fatalf("orders from an hour ahead: %+v %v", later, err)
		}
		var receipts int
		if err := n.Store().Reader().QueryRow(ctx, "SELECT count(*) FROM twice_jobs WHERE kind = 'receipt'").Scan(&receipts); err != nil || receipts != 1 {
			t.Fatalf("receipt jobs: %d %v; want the committed order's only", receipts, err)
		}

		undone, err := m.Down(ctx, 0)
		if err != nil || len(undone) != 1 {
			t.Fatalf("Down = %v %v", undone, err)
		}
		if _, err := n.Store().Exec(ctx, "DELETE FROM orders"); err == nil {
			t.Fatal("orders still exists after Down")
		}
		if err := store.NewMigrator(n.Store(), twice.Components()...).Check(ctx); err != nil {
			t.Fatalf("twice's own schema after the application's Down: %v", err)
		}
	})
}
