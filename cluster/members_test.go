package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// An instance joins as starting, heartbeats and changes state in database time, and
// leaves without a trace.
func TestJoinBeatStateLeave(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		clock := testdb.NewClock()
		clock.Advance(-24 * time.Hour) // the database's time, far from the instance's
		s := open(t, db, clock)
		m := member(t, s, "a", cluster.Config{Host: "h1", PID: 7, Version: "v1", Addr: "10.0.0.1:80"})
		if m.Registered() || !m.LastBeat().IsZero() || m.State() != cluster.StateStarting {
			t.Fatalf("before Join: registered %v, last beat %v, state %s", m.Registered(), m.LastBeat(), m.State())
		}
		t0 := clock.Now()
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.Join(ctx); err == nil {
			t.Fatal("second Join accepted")
		}
		got := only(t, s)
		want := cluster.Member{ID: "a", Service: "svc", Host: "h1", PID: 7, Version: "v1", Addr: "10.0.0.1:80",
			State: cluster.StateStarting, StartedAt: t0, HeartbeatAt: t0, DeadAfter: 3 * time.Hour, Alive: true}
		if !sameMember(got, want) {
			t.Fatalf("after Join: %+v, want %+v", got, want)
		}
		if !m.Registered() || m.LastBeat().IsZero() {
			t.Fatalf("after Join: registered %v, last beat %v", m.Registered(), m.LastBeat())
		}

		if err := m.SetState(ctx, cluster.StateReady); err != nil {
			t.Fatal(err)
		}
		if m.State() != cluster.StateReady || only(t, s).State != cluster.StateReady {
			t.Fatalf("state %s here, %s in the database; want ready", m.State(), only(t, s).State)
		}

		clock.Advance(time.Minute)
		if err := m.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		want.State, want.HeartbeatAt, want.Uptime = cluster.StateReady, clock.Now(), time.Minute
		if got := only(t, s); !sameMember(got, want) {
			t.Fatalf("after a beat a minute later: %+v, want %+v", got, want)
		}

		if err := m.Leave(ctx); err != nil {
			t.Fatal(err)
		}
		if ms, err := m.Members(ctx); err != nil || len(ms) != 0 {
			t.Fatalf("after Leave: %+v, %v", ms, err)
		}
		if err := m.Join(ctx); err == nil {
			t.Fatal("Join after Leave accepted")
		}
	})
}

// sameMember compares members, times by their instant.
func sameMember(a, b cluster.Member) bool {
	if !a.StartedAt.Equal(b.StartedAt) || !a.HeartbeatAt.Equal(b.HeartbeatAt) {
		return false
	}
	a.StartedAt, a.HeartbeatAt = b.StartedAt, b.HeartbeatAt
	return a == b
}

// An instance counts as dead once DeadAfter has passed since its last heartbeat, in
// database time, to the millisecond; building blocks see the same through Alive.
func TestDeadInDatabaseTime(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		clock := testdb.NewClock()
		s := open(t, db, clock)
		m := member(t, s, "a", cluster.Config{DeadAfter: 2 * time.Hour})
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.SetState(ctx, cluster.StateReady); err != nil {
			t.Fatal(err)
		}
		alive := s.SQL("SELECT CASE WHEN " + cluster.Alive("$2", "$3", "{now}") + " THEN 1 ELSE 0 END")
		aliveSQL := func(id string) bool {
			var n int
			if err := s.QueryRow(ctx, alive, s.NowArg(), "svc", id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 1
		}

		clock.Advance(2*time.Hour - time.Millisecond)
		if got := only(t, s); !got.Alive || got.State != cluster.StateReady || got.HeartbeatAge != 2*time.Hour-time.Millisecond {
			t.Fatalf("a millisecond before dead-after: %+v", got)
		}
		if !aliveSQL("a") {
			t.Fatal("Alive: dead a millisecond before dead-after")
		}
		if aliveSQL("nobody") {
			t.Fatal("Alive: an instance never registered is alive")
		}

		clock.Advance(time.Millisecond)
		if got := only(t, s); got.Alive || got.State != cluster.StateDead || got.HeartbeatAge != 2*time.Hour {
			t.Fatalf("at dead-after: %+v", got)
		}
		if aliveSQL("a") {
			t.Fatal("Alive: alive at dead-after")
		}

		if err := m.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		if got := only(t, s); !got.Alive || got.State != cluster.StateReady {
			t.Fatalf("after a beat: %+v", got)
		}
		if !aliveSQL("a") {
			t.Fatal("Alive: dead after a beat")
		}
	})
}

// Reap removes the rows of instances dead for longer than keep, in database time; a
// reaped instance that is not dead after all registers again at its next beat.
func TestReapAndRegisterAgain(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		clock := testdb.NewClock()
		s := open(t, db, clock)
		cfg := cluster.Config{DeadAfter: 2 * time.Hour}
		a, b := member(t, s, "a", cfg), member(t, s, "b", cfg)
		for _, m := range []*cluster.Membership{a, b} {
			if err := m.Join(ctx); err != nil {
				t.Fatal(err)
			}
		}
		const keep = 10 * time.Minute
		clock.Advance(2*time.Hour + keep)
		if err := b.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		if n, err := b.Reap(ctx, keep); err != nil || n != 0 {
			t.Fatalf("Reap of an instance dead for exactly keep = %d, %v; want 0", n, err)
		}
		clock.Advance(time.Millisecond)
		if n, err := b.Reap(ctx, keep); err != nil || n != 1 {
			t.Fatalf("Reap = %d, %v; want a's row removed", n, err)
		}
		if got := only(t, s); got.ID != "b" {
			t.Fatalf("after Reap: %+v", got)
		}
		if err := a.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		ms, err := b.Members(ctx)
		if err != nil || len(ms) != 2 || !slices.ContainsFunc(ms, func(m cluster.Member) bool {
			return m.ID == "a" && m.Alive && m.HeartbeatAt.Equal(clock.Now())
		}) {
			t.Fatalf("after a's next beat: %+v, %v", ms, err)
		}
	})
}

// A heartbeat that lands DeadAfter or more after the previous one started reports the
// stall to every OnStall callback; a panic in one is counted and stops no other. The
// instance never joins, so no loop beats in between: the test's Beat calls do (the first
// registers it).
func TestOnStall(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := open(t, db, nil)
		var panics atomic.Int64
		const deadAfter = 300 * time.Millisecond
		m := member(t, s, "a", cluster.Config{HeartbeatInterval: deadAfter / 3, DeadAfter: deadAfter, Panics: &panics})
		type stall struct{ from, to time.Time }
		stalls := make(chan stall, 10)
		m.OnStall(func(time.Time, time.Time) { panic("OnStall fails") })
		m.OnStall(func(from, to time.Time) { stalls <- stall{from, to} })
		if err := m.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		first := m.LastBeat()
		if !m.Registered() {
			t.Fatal("not registered after the first beat")
		}
		time.Sleep(deadAfter + 50*time.Millisecond) // past dead-after without a beat
		if m.Registered() {
			t.Fatal("registered with no beat for longer than dead-after")
		}
		if err := m.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case st := <-stalls:
			if !st.from.Equal(first.Add(deadAfter)) || st.to.Before(st.from) {
				t.Fatalf("stall from %v to %v; the beat before started at %v", st.from, st.to, first)
			}
		default:
			t.Fatal("stall not reported")
		}
		if panics.Load() != 1 {
			t.Fatalf("%d panics counted, want 1", panics.Load())
		}
		if !m.Registered() {
			t.Fatal("not registered after the beat")
		}

		// Beats well within dead-after report nothing.
		calm := member(t, s, "b", cluster.Config{HeartbeatInterval: time.Minute, DeadAfter: time.Hour})
		calm.OnStall(func(from, to time.Time) { stalls <- stall{from, to} })
		for range 3 {
			if err := calm.Beat(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if len(stalls) != 0 {
			t.Fatalf("%d stalls reported for beats a moment apart", len(stalls))
		}
	})
}

func TestMembershipBadConfig(t *testing.T) {
	t.Parallel()
	s := open(t, testdb.New(t, store.SQLite), nil)
	for _, cfg := range []cluster.Config{
		{ID: "a"},
		{Service: "svc"},
		{Service: "svc", ID: "a", HeartbeatInterval: 5 * time.Millisecond},
		{Service: "svc", ID: "a", HeartbeatInterval: time.Second, DeadAfter: time.Second},
	} {
		if _, err := cluster.NewMembership(s, cfg); err == nil {
			t.Errorf("NewMembership(%+v) accepted", cfg)
		}
	}
}

// A heartbeat that finds a member gone silent since the beat before runs the OnDeath
// callbacks, once per death, in database time; registering only takes note of those dead
// already.
func TestOnDeathAtHeartbeat(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		clock := testdb.NewClock()
		s := open(t, db, clock)
		cfg := cluster.Config{HeartbeatInterval: time.Hour, DeadAfter: 2 * time.Hour, NoLivenessLock: true}
		a, b, c := member(t, s, "a", cfg), member(t, s, "b", cfg), member(t, s, "c", cfg)
		var deaths atomic.Int32
		a.OnDeath(func() { deaths.Add(1) })
		beat := func(ms ...*cluster.Membership) {
			t.Helper()
			for _, m := range ms {
				if err := m.Beat(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		join(t, c)
		clock.Advance(2 * time.Hour) // c was dead before a registered
		join(t, a, b)
		beat(b, a)
		if n := deaths.Load(); n != 0 {
			t.Fatalf("%d deaths at the first beat; c died before a registered", n)
		}
		beat(a)
		if n := deaths.Load(); n != 0 {
			t.Fatalf("%d deaths with nobody newly silent", n)
		}
		clock.Advance(2*time.Hour - time.Millisecond)
		beat(a)
		if n := deaths.Load(); n != 0 {
			t.Fatalf("%d deaths a millisecond before b's dead-after", n)
		}
		clock.Advance(time.Millisecond)
		beat(a)
		if n := deaths.Load(); n != 1 {
			t.Fatalf("%d deaths after b went silent; want 1", n)
		}
		beat(a)
		if n := deaths.Load(); n != 1 {
			t.Fatalf("%d deaths after one more beat; b's death counted again", n)
		}
		// a's own stall is no death: its beat reads its own row before updating it.
		beat(b)
		clock.Advance(2 * time.Hour)
		beat(b, a)
		if n := deaths.Load(); n != 1 {
			t.Fatalf("%d deaths after a stall of a's own; want still 1", n)
		}
		beat(b) // b goes silent again
		clock.Advance(2 * time.Hour)
		beat(a)
		if n := deaths.Load(); n != 2 {
			t.Fatalf("%d deaths after b went silent twice; want 2", n)
		}
	})
}

// A member that dies between this instance's registration and its first beat is a death
// it is told of: CI found a follower that had looked at the leader lease meanwhile asleep
// for its Backstop, because the first beat took the death for an old one.
func TestOnDeathBeforeTheFirstBeat(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		clock := testdb.NewClock()
		s := open(t, db, clock)
		cfg := cluster.Config{HeartbeatInterval: time.Hour, DeadAfter: 2 * time.Hour, NoLivenessLock: true}
		a, b := member(t, s, "a", cfg), member(t, s, "b", cfg)
		var deaths atomic.Int32
		a.OnDeath(func() { deaths.Add(1) })
		join(t, b, a)
		clock.Advance(2 * time.Hour)
		if err := a.Beat(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := deaths.Load(); n != 1 {
			t.Fatalf("%d deaths after b went silent before a's first beat; want 1", n)
		}
	})
}

func join(t *testing.T, ms ...*cluster.Membership) {
	t.Helper()
	for _, m := range ms {
		if err := m.Join(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// What a heartbeat carries runs in its transaction, and what it asks to run after the commit
// runs with the beat's start time; a carried statement that fails costs the heartbeat
// nothing: it is sent again alone, and nothing runs after. One may have nothing to run
// after (nil).
func TestBeatCarries(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		clock := testdb.NewClock()
		s := open(t, db, clock)
		m := member(t, s, "a", cluster.Config{DeadAfter: 2 * time.Hour, NoLivenessLock: true})
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
		var fail atomic.Bool
		var inTx, after atomic.Int32
		var sentAt atomic.Int64
		m.Carry(func(ctx context.Context, q store.Querier) (func(context.Context, time.Time), error) {
			if _, ok := q.(store.Tx); ok {
				inTx.Add(1)
			}
			if fail.Load() {
				return nil, errors.New("carried statement failed")
			}
			return func(_ context.Context, sent time.Time) { after.Add(1); sentAt.Store(sent.UnixNano()) }, nil
		})
		// One with nothing to run after the commit.
		m.Carry(func(context.Context, store.Querier) (func(context.Context, time.Time), error) { return nil, nil })
		before := time.Now()
		if err := m.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		if inTx.Load() != 1 || after.Load() != 1 {
			t.Fatalf("carried %d times in a transaction, %d run after; want 1 and 1", inTx.Load(), after.Load())
		}
		if sent := time.Unix(0, sentAt.Load()); sent.Before(before) || sent.After(time.Now()) {
			t.Fatalf("after ran with %v, not the beat's start (between %v and now)", sent, before)
		}
		fail.Store(true)
		clock.Advance(2 * time.Hour) // dead unless this beat lands
		if err := m.Beat(ctx); err != nil {
			t.Fatalf("a failed carried statement failed the heartbeat: %v", err)
		}
		if after.Load() != 1 {
			t.Fatal("what a failed carried statement asked for ran after the beat")
		}
		if got := only(t, s); !got.Alive {
			t.Fatalf("the heartbeat did not land when what it carried failed: %+v", got)
		}
	})
}

// A heartbeat lands although the server ended the session of the connection it was sent
// on: the control pool does not ping a connection before each beat, so the beat is sent
// again at once on another.
func TestBeatAfterTheServerEndedItsSession(t *testing.T) {
	t.Parallel()
	db := testdb.New(t, store.Postgres)
	app := fmt.Sprintf("beat-again-%d", time.Now().UnixNano())
	sep := "?"
	if strings.Contains(db.DSN, "?") {
		sep = "&"
	}
	db.DSN += sep + "application_name=" + app
	ctx := context.Background()
	s := open(t, db, nil)
	m := member(t, s, "a", cluster.Config{})
	if err := m.Join(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
		app).Scan(&n); err != nil || n == 0 {
		t.Fatalf("terminated %d sessions, %v", n, err)
	}
	before := m.LastBeat()
	if err := m.Beat(ctx); err != nil {
		t.Fatalf("the beat after the session ended: %v", err)
	}
	if !m.LastBeat().After(before) {
		t.Fatalf("last beat %v, not after %v", m.LastBeat(), before)
	}
}

// A process frozen inside its heartbeat's transaction, after the renewals it carries locked
// their lease rows, keeps no one from taking those leases once they expire: PostgreSQL
// aborts the transaction when it has sat idle for DeadAfter. (SQLite's frozen writer
// holds the file's write lock instead, and everyone waits for it to resume.)
func TestFrozenHeartbeatTransactionReleasesItsLocks(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		if db.Dialect != store.Postgres {
			t.Skip("SQLite has no server to abort a frozen transaction")
		}
		ctx := context.Background()
		s := open(t, db, nil)
		a, err := lease.NewManager(s, lease.Config{Service: "svc", Holder: "a", TTL: 300 * time.Millisecond, Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.TryAcquire(ctx, "x", nil); err != nil {
			t.Fatal(err)
		}
		m := member(t, s, "a", cluster.Config{DeadAfter: 400 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond})
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
		frozen, thaw := make(chan struct{}), make(chan struct{})
		defer close(thaw)
		var once sync.Once
		m.Carry(func(ctx context.Context, q store.Querier) (func(context.Context, time.Time), error) {
			if _, err := q.Exec(ctx, "UPDATE "+s.SQL("twice_leases")+" SET ttl_ms = ttl_ms WHERE service = 'svc' AND name = 'x'"); err != nil {
				return nil, err
			}
			once.Do(func() { close(frozen) })
			<-thaw // frozen: the process does nothing, whatever its context says
			return nil, nil
		})
		<-frozen    // the membership's next beat carries it
		a.Abandon() // its lease runs out in the database while the row stays locked

		b, err := lease.NewManager(s, lease.Config{Service: "svc", Holder: "b", Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close(ctx)
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		start := time.Now()
		if _, err := b.Acquire(actx, "x", nil); err != nil {
			t.Fatalf("the lease stayed locked by the frozen heartbeat: %v", err)
		}
		t.Logf("taken over %v after the heartbeat froze (DeadAfter 400ms, TTL 300ms)", time.Since(start))
	})
}
