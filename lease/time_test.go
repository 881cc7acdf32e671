package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// A lease expires in database time: a stub database clock, a day behind the instances'
// clocks, decides when it is free, to the millisecond. A TTL of an hour keeps renewals
// (every quarter TTL, on the instance's clock) out of the test.
func TestExpiresInDatabaseTime(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		clock := testdb.NewClock()
		clock.Advance(-24 * time.Hour)
		a, sa := manager(t, db, clock, "a", 0)
		b, _ := manager(t, db, clock, "b", 0)
		t0 := clock.Now()
		la, err := a.TryAcquire(ctx, "x", &lease.AcquireOpts{TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		i, err := b.Info(ctx, "x")
		if err != nil || i.Holder != "a" || i.Token != la.Token() || !i.AcquiredAt.Equal(t0) ||
			!i.ExpiresAt.Equal(t0.Add(time.Hour)) || i.Remaining != time.Hour || !i.Held() {
			t.Fatalf("Info at acquisition = %+v, %v; database time %v", i, err, t0)
		}

		clock.Advance(time.Hour - time.Millisecond)
		if _, err := b.TryAcquire(ctx, "x", nil); !errors.Is(err, lease.ErrHeld) {
			t.Fatalf("a millisecond before expiry: TryAcquire = %v, want ErrHeld", err)
		}
		if i, err := b.Info(ctx, "x"); err != nil || i.Remaining != time.Millisecond || !i.Held() {
			t.Fatalf("Info a millisecond before expiry = %+v, %v", i, err)
		}
		if ls, err := b.List(ctx, ""); err != nil || len(ls) != 1 {
			t.Fatalf("List a millisecond before expiry = %+v, %v", ls, err)
		}

		clock.Advance(time.Millisecond)
		if i, err := b.Info(ctx, "x"); err != nil || i.Remaining != 0 || i.Held() || i.Holder != "a" {
			t.Fatalf("Info at expiry = %+v, %v", i, err)
		}
		if ls, err := b.List(ctx, ""); err != nil || len(ls) != 0 {
			t.Fatalf("List at expiry = %+v, %v", ls, err)
		}
		lb, err := b.TryAcquire(ctx, "x", nil)
		if err != nil || lb.Token() != la.Token()+1 {
			t.Fatalf("at expiry: TryAcquire = %v", err)
		}
		// a's own clock says its lease runs for another hour; the database fences it.
		if !la.Valid() {
			t.Fatal("the local deadline followed the database clock")
		}
		if err := sa.InTx(ctx, func(tx store.Tx) error { return la.Check(ctx, tx) }); !errors.Is(err, lease.ErrFenced) {
			t.Fatalf("expired holder's check = %v, want ErrFenced", err)
		}
	})
}

// Renewals extend a lease from the database's time, not the instance's.
func TestRenewedInDatabaseTime(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		clock := testdb.NewClock()
		// Renewed every second, so two may fail on a loaded machine before the lease is lost
		// (with 400 ms, one renewal that timed out under CI's load lost it, and no renewal came).
		ttl := 3 * time.Second
		a, _ := manager(t, db, clock, "a", ttl)
		b, _ := manager(t, db, clock, "b", ttl)
		if _, err := a.TryAcquire(ctx, "x", nil); err != nil {
			t.Fatal(err)
		}
		// Two seconds pass in the database, hardly any on this machine: a renewal extends the
		// lease from the database's time. (Past the TTL the lease would have run out, and no
		// renewal brings back an expired lease: see TestRenewalDoesNotReviveAnExpiredLease.)
		clock.Advance(ttl - time.Second)
		testnode.Eventually(t, 30*time.Second, "a renewal from the database's time", func() bool {
			i, err := b.Info(ctx, "x")
			if err != nil {
				t.Fatal(err)
			}
			return i.ExpiresAt.Equal(clock.Now().Add(ttl))
		})
		if _, err := b.TryAcquire(ctx, "x", nil); !errors.Is(err, lease.ErrHeld) {
			t.Fatalf("renewed lease: TryAcquire = %v, want ErrHeld", err)
		}
	})
}

// A holder that can no longer renew lets go of its lease at its local deadline: a little
// before the database could give the lease to anyone else, and never earlier.
func TestLocalDeadline(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		// The default TTL, not the minimum: with 200 ms a loaded machine can pause this
		// test past a renewal (every 50 ms) or past the deadline itself between two lines.
		ttl := lease.DefaultTTL
		a, sa := manager(t, db, nil, "a", ttl)
		before := time.Now()
		l, err := a.TryAcquire(ctx, "x", nil)
		after := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		// The database expires the lease TTL after it ran the statement, which was sent
		// between before and after; the holder gives up a margin earlier.
		margin := ttl/100 + 2*time.Millisecond
		if d := l.Deadline(); d.Before(before.Add(ttl-margin)) || d.After(after.Add(ttl-margin)) {
			t.Fatalf("deadline %v after the acquisition was sent, want TTL %v less %v", d.Sub(before), ttl, margin)
		}
		if !l.Valid() {
			t.Fatal("fresh lease not valid")
		}
		sa.Close() // no renewal can succeed from now on
		select {
		case <-l.Context().Done():
		case <-time.After(10 * time.Second):
			t.Fatal("lease context not cancelled after its deadline")
		}
		if ended := time.Now(); ended.Before(l.Deadline()) {
			t.Fatalf("lease ended %v before its deadline", l.Deadline().Sub(ended))
		}
		if cause := context.Cause(l.Context()); !errors.Is(cause, lease.ErrLost) {
			t.Fatalf("cause %v, want ErrLost", cause)
		}
		if l.Valid() {
			t.Fatal("lease valid past its deadline")
		}
	})
}
