package lease

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// A renewal that runs while a TryAcquire is under way renews the new lease's row too, before
// the lease is among those held: it must not take that row for a stale one and free it. CI
// saw a fenced write refused ("current 1", token 1) because the heartbeat's renewal had.
func TestRenewalDuringAcquireKeepsTheRow(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := openMigrated(t, db)
		m, err := NewManager(s, Config{Service: "svc", Holder: "a", TTL: time.Hour, Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close(ctx) })
		if _, err := m.TryAcquire(ctx, "other", nil); err != nil { // so a renewal has a lease to renew
			t.Fatal(err)
		}
		m.afterGrab = func() {
			m.afterGrab = nil
			sent := time.Now()
			committed, err := m.RenewIn(ctx, s.Control())
			if err != nil {
				t.Error(err)
				return
			}
			committed(ctx, sent)
		}
		l, err := m.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.InTx(ctx, func(tx store.Tx) error { return l.Check(ctx, tx) }); err != nil {
			t.Fatalf("a lease acquired while a renewal ran: %v", err)
		}
		if i, err := m.Info(ctx, "x"); err != nil || i.Holder != "a" {
			t.Fatalf("the row after the renewal: %+v, %v; want held by a", i, err)
		}
	})
}

// A lease granted while the manager is abandoned is not held, and its row is left as the
// grant wrote it (Abandon writes nothing); while it is closed, the row is released.
func TestGrantDuringAbandonOrClose(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := openMigrated(t, db)
		for _, abandon := range []bool{true, false} {
			m, err := NewManager(s, Config{Service: "svc", Holder: "a", TTL: time.Hour, Logger: testdb.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			m.afterGrab = func() {
				if abandon {
					m.Abandon()
				} else if err := m.Close(ctx); err != nil {
					t.Error(err)
				}
			}
			name := fmt.Sprintf("abandon-%v", abandon)
			if _, err := m.TryAcquire(ctx, name, nil); !errors.Is(err, ErrClosed) {
				t.Fatalf("%s: TryAcquire = %v; want ErrClosed", name, err)
			}
			i, err := Lookup(ctx, s, "svc", name)
			if err != nil {
				t.Fatal(err)
			}
			if i.Held() != abandon {
				t.Fatalf("%s: the row is %+v", name, i)
			}
		}
	})
}

// openMigrated opens a store on db with the lease table.
func openMigrated(t *testing.T, db testdb.DB) *store.Store {
	t.Helper()
	s := db.Open(t, nil)
	if _, err := store.NewMigrator(s, Component()).Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}
