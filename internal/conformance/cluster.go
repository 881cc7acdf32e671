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
	"github.com/twicehq/twice/store"
)

// fast are timings short enough for tests to watch deaths and failovers happen.
var fast = twice.Config{
	HeartbeatInterval: 50 * time.Millisecond,
	DeadAfter:         200 * time.Millisecond,
	LeaseTTL:          400 * time.Millisecond,
	LeaderPoll:        20 * time.Millisecond,
}

// steady are the default lease timings, for tests that check exclusion rather than expiry:
// under a heavily loaded machine a 400 ms lease can be lost between renewals, which is
// correct behaviour but not what those tests are about.
var steady = twice.Config{HeartbeatInterval: 200 * time.Millisecond}

// node opens an instance of service on db with cfg's timings; it is closed when t ends.
func node(t *testing.T, db testdb.DB, service string, cfg twice.Config) *twice.Node {
	t.Helper()
	cfg.DSN, cfg.Schema, cfg.Name = db.DSN, db.Schema, service
	cfg.Logger = testdb.Logger(t)
	n, err := twice.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close(context.Background()) })
	return n
}

// eventually polls cond every 10ms until it holds or limit passes. The limit is a liveness
// bound far above the expected time, not a measurement.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func leaders(nodes ...*twice.Node) []*twice.Node {
	var out []*twice.Node
	for _, n := range nodes {
		if n.IsLeader() {
			out = append(out, n)
		}
	}
	return out
}

// membership exercises registration, heartbeats, death, reaping and draining.
func membership(t *testing.T, dialect store.Dialect) {
	ctx := context.Background()

	t.Run("ThreeInstances", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a := node(t, db, "shop", steady)
		b := node(t, db, "shop", steady)
		c := node(t, db, "shop", steady)
		other := node(t, db, "billing", steady)
		eventually(t, 10*time.Second, "one leader", func() bool { return len(leaders(a, b, c)) == 1 })
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
		eventually(t, 10*time.Second, "billing leads itself", other.IsLeader)
	})

	t.Run("DeathAndReap", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a := node(t, db, "svc", fast)
		b := node(t, db, "svc", fast)
		// b is cut off from the database: its heartbeats fail, as after a crash.
		b.Store().Close()
		eventually(t, 10*time.Second, "b counted dead", func() bool {
			ms, err := a.Members(ctx)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(ms, func(m twice.Member) bool { return m.ID == b.ID() })
			return i >= 0 && !ms[i].Alive && ms[i].State == cluster.StateDead
		})
		// b's own readiness follows: no successful heartbeat within DeadAfter.
		eventually(t, 10*time.Second, "b not ready", func() bool { return !b.Ready() })
		// a's own heartbeats may lag its 200 ms dead-after on a loaded machine; it must be
		// ready again at its next beat.
		eventually(t, 10*time.Second, "a ready", a.Ready)
		m, err := cluster.NewMembership(a.Store(), cluster.Config{Service: "svc", ID: "reaper"})
		if err != nil {
			t.Fatal(err)
		}
		// Counted dead and reapable are the same test in database time, but the list and the
		// reap each read the clock: right at the boundary (SQLite's clock has milliseconds)
		// the reap may see b a moment younger than the list did.
		eventually(t, 10*time.Second, "b reaped", func() bool {
			n, err := m.Reap(ctx, 0)
			if err != nil || n > 1 {
				t.Fatalf("Reap = %d, %v; want b's row removed", n, err)
			}
			return n == 1
		})
		if ms, _ := a.Members(ctx); len(ms) != 1 || ms[0].ID != a.ID() {
			t.Fatalf("after reap: %+v", ms)
		}
	})

	t.Run("ReRegistersAfterReaped", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a := node(t, db, "svc", fast)
		if _, err := a.Store().Exec(ctx, "DELETE FROM twice_members"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "a registered again", func() bool {
			ms, _ := a.Members(ctx)
			return len(ms) == 1 && ms[0].ID == a.ID() && ms[0].Alive
		})
	})

	t.Run("DatabaseTime", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		clock := testdb.NewClock()
		cfg := fast
		cfg.Clock = clock
		a := node(t, db, "svc", cfg)
		// Heartbeats carry the database's time, not the instance's.
		ms, err := a.Members(ctx)
		if err != nil || len(ms) != 1 {
			t.Fatal(ms, err)
		}
		if !ms[0].HeartbeatAt.Equal(clock.Now()) {
			t.Fatalf("heartbeat at %v, database time %v", ms[0].HeartbeatAt, clock.Now())
		}
	})

	t.Run("CloseDrains", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a := node(t, db, "svc", fast)
		eventually(t, 10*time.Second, "a leads", a.IsLeader)
		var readyAtDemotion atomic.Value
		a.Leader().OnElected(func(ctx context.Context) {
			<-ctx.Done()
			readyAtDemotion.Store(a.Ready())
		})
		if !a.Ready() {
			t.Fatal("open node not ready")
		}
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
	})

	t.Run("MigrateOff", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		_, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "svc", Migrate: twice.MigrateOff})
		if err == nil {
			t.Fatal("Open with MigrateOff on an empty database succeeded")
		}
		node(t, db, "svc", fast) // migrates
		n, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "svc", Migrate: twice.MigrateOff, Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		_ = n.Close(ctx)
	})

	t.Run("BadConfig", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		for _, cfg := range []twice.Config{
			{Name: "has space"},
			{Name: "x", HeartbeatInterval: time.Millisecond},
			{Name: "x", HeartbeatInterval: time.Second, DeadAfter: time.Second},
			{Name: "x", LeaseTTL: time.Millisecond},
			{Name: "x", LeaderPoll: time.Hour},
		} {
			cfg.DSN, cfg.Schema = db.DSN, db.Schema
			if n, err := twice.Open(ctx, cfg); err == nil {
				_ = n.Close(ctx)
				t.Errorf("Open(%+v) succeeded", cfg)
			}
		}
	})
}
