package lease_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// Code handed only a lease's context (or one derived from it) finds the lease.
func TestFromContext(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, _ := manager(t, db, nil, "a", 0)
		l, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		type key struct{}
		if got := lease.FromContext(context.WithValue(l.Context(), key{}, 1)); got != l {
			t.Fatalf("FromContext of a derived context = %v", got)
		}
		if got := lease.FromContext(ctx); got != nil {
			t.Fatalf("FromContext of a context without a lease = %v", got)
		}
	})
}

// Check refuses a released lease, and a transaction it cannot use.
func TestCheckAfterRelease(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, sa := manager(t, db, nil, "a", 0)
		l, err := a.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Check(ctx, "not a transaction"); err == nil || errors.Is(err, lease.ErrFenced) {
			t.Fatalf("Check with a string for a transaction = %v", err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatalf("second Release = %v", err)
		}
		if err := sa.InTx(ctx, func(tx store.Tx) error { return l.Check(ctx, tx) }); !errors.Is(err, lease.ErrFenced) {
			t.Fatalf("Check after Release = %v, want ErrFenced", err)
		}
		if i, err := a.Info(ctx, "x"); err != nil || i.Holder != "" || i.Held() {
			t.Fatalf("Info after Release = %+v, %v", i, err)
		}
	})
}

// Names are at most MaxNameLen bytes.
func TestNameLength(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, _ := manager(t, db, nil, "a", 0)
		if _, err := a.TryAcquire(ctx, strings.Repeat("x", lease.MaxNameLen), nil); err != nil {
			t.Fatalf("%d-byte name: %v", lease.MaxNameLen, err)
		}
		if _, err := a.TryAcquire(ctx, strings.Repeat("x", lease.MaxNameLen+1), nil); err == nil {
			t.Fatalf("%d-byte name accepted", lease.MaxNameLen+1)
		}
	})
}

// OnRelease hears of every lease freed in the database, by Release or by Close; a panic in
// it is counted and goes no further. Waiters in the process hear through Changed.
func TestOnReleaseAndChanged(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		var mu sync.Mutex
		var released []string
		var panics atomic.Int64
		m, err := lease.NewManager(open(t, db, nil), lease.Config{Service: "svc", Holder: "a", Logger: testdb.Logger(t), Panics: &panics,
			OnRelease: func(_ context.Context, names []string) {
				mu.Lock()
				defer mu.Unlock()
				released = append(released, names...)
				if slices.Contains(names, "boom") {
					panic("OnRelease fails")
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close(ctx) })
		got := func() []string {
			mu.Lock()
			defer mu.Unlock()
			out := slices.Clone(released)
			slices.Sort(out)
			released = nil
			return out
		}

		l, err := m.TryAcquire(ctx, "x", nil)
		if err != nil {
			t.Fatal(err)
		}
		changed := m.Changed()
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-changed:
		default:
			t.Fatal("Changed not closed by a release")
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if r := got(); !slices.Equal(r, []string{"x"}) {
			t.Fatalf("OnRelease heard %v, want [x] once", r)
		}

		changed = m.Changed()
		m.Poke()
		select {
		case <-changed:
		default:
			t.Fatal("Changed not closed by Poke")
		}

		for _, n := range []string{"y", "boom"} {
			if _, err := m.TryAcquire(ctx, n, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Close(ctx); err != nil {
			t.Fatalf("Close with a panicking OnRelease = %v", err)
		}
		if r := got(); !slices.Equal(r, []string{"boom", "y"}) {
			t.Fatalf("OnRelease heard %v at Close, want [boom y]", r)
		}
		if panics.Load() != 1 {
			t.Fatalf("%d panics counted, want 1", panics.Load())
		}
	})
}
