package conformance

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
)

// exerciseMembership checks the instances' view of each other: registration, heartbeats in
// database time, death, reaping and draining. The cluster package tests Membership's own
// API.
func exerciseMembership(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"ThreeInstances", membershipThreeInstances},
		{"DeathAndReap", membershipDeathAndReap},
		{"ReRegistersAfterReaped", membershipReRegistersAfterReaped},
		{"DatabaseTime", membershipDatabaseTime},
		{"CloseDrains", membershipCloseDrains},
	})
}

func membershipThreeInstances(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "shop", testnode.Steady())
	b := backend.node(t, db, "shop", testnode.Steady())
	c := backend.node(t, db, "shop", testnode.Steady())
	other := backend.node(t, db, "billing", testnode.Steady())
	testnode.Eventually(t, 10*time.Second, "one leader", func() bool { return len(testnode.Leaders(a, b, c)) == 1 })
	ms, err := a.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("%d members, want 3 (the billing service is separate): %+v", len(ms), ms)
	}
	nLeaders := 0
	for _, m := range ms {
		if m.State != cluster.StateReady || !m.Alive || m.Service != "shop" || m.PID == 0 || m.Host == "" || m.Version == "" {
			t.Errorf("member %+v", m)
		}
		if m.HeartbeatAge < 0 || m.HeartbeatAge > time.Minute {
			t.Errorf("heartbeat age %v", m.HeartbeatAge)
		}
		if m.Leader {
			nLeaders++
		}
	}
	if nLeaders != 1 {
		t.Fatalf("%d members marked leader", nLeaders)
	}
	// Each service has its own leader (River #342 and #742).
	testnode.Eventually(t, 10*time.Second, "billing leads itself", other.IsLeader)
}

func membershipDeathAndReap(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "svc", testnode.Fast())
	b := backend.node(t, db, "svc", testnode.Fast())
	// b is cut off from the database: its heartbeats fail, as after a crash.
	b.Store().Close()
	testnode.Eventually(t, 10*time.Second, "b counted dead", func() bool {
		ms, err := a.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ms, func(m twice.Member) bool { return m.ID == b.ID() })
		return i >= 0 && !ms[i].Alive && ms[i].State == cluster.StateDead
	})
	// b's own readiness follows: no successful heartbeat within DeadAfter.
	testnode.Eventually(t, 10*time.Second, "b not ready", func() bool { return !b.Ready() })
	// a's own heartbeats may lag its 200 ms dead-after on a loaded machine; it must be
	// ready again at its next beat.
	testnode.Eventually(t, 10*time.Second, "a ready", a.Ready)
	m, err := cluster.NewMembership(a.Store(), cluster.Config{Service: "svc", ID: "reaper"})
	if err != nil {
		t.Fatal(err)
	}
	// Counted dead and reapable are the same test in database time, but the list and the
	// reap each read the clock: right at the boundary (SQLite's clock has milliseconds)
	// the reap may see b a moment younger than the list did.
	testnode.Eventually(t, 10*time.Second, "b reaped", func() bool {
		n, err := m.Reap(ctx, 0)
		if err != nil || n > 1 {
			t.Fatalf("Reap = %d, %v; want b's row removed", n, err)
		}
		return n == 1
	})
	if ms, _ := a.Members(ctx); len(ms) != 1 || ms[0].ID != a.ID() {
		t.Fatalf("after reap: %+v", ms)
	}
}

func membershipReRegistersAfterReaped(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "svc", testnode.Fast())
	if _, err := a.Store().Exec(ctx, "DELETE FROM twice_members"); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 10*time.Second, "a registered again", func() bool {
		ms, _ := a.Members(ctx)
		return len(ms) == 1 && ms[0].ID == a.ID() && ms[0].Alive
	})
}

func membershipDatabaseTime(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	clock := testdb.NewClock()
	cfg := testnode.Fast()
	cfg.Clock = clock
	a := backend.node(t, db, "svc", cfg)
	// Heartbeats carry the database's time, not the instance's.
	ms, err := a.Members(ctx)
	if err != nil || len(ms) != 1 {
		t.Fatal(ms, err)
	}
	if !ms[0].HeartbeatAt.Equal(clock.Now()) {
		t.Fatalf("heartbeat at %v, database time %v", ms[0].HeartbeatAt, clock.Now())
	}
}

func membershipCloseDrains(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "svc", testnode.Fast())
	testnode.Eventually(t, 10*time.Second, "a leads", a.IsLeader)
	var readyAtDemotion atomic.Value
	a.Leader().OnElected(func(ctx context.Context) {
		<-ctx.Done()
		readyAtDemotion.Store(a.Ready())
	})
	// Ready, waited for: with Fast's 200 ms DeadAfter a loaded machine stalls a beat past it
	// now and then, the row is reaped, and the node is not ready until it registers again.
	testnode.Eventually(t, 10*time.Second, "open node ready", a.Ready)
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if r, _ := readyAtDemotion.Load().(bool); r || readyAtDemotion.Load() == nil {
		t.Fatal("readiness was still true when leadership was released")
	}
	s := db.Open(t, nil)
	ms, err := cluster.List(ctx, s, "svc")
	if err != nil || len(ms) != 0 {
		t.Fatalf("members after Close: %+v, %v", ms, err)
	}
}
