package instance_test

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

func TestMain(m *testing.M) {
	if instance.IsChild() {
		os.Exit(instance.Main())
	}
	code := m.Run()
	removeChildBuild()
	os.Exit(code)
}

func spawner(t *testing.T) instance.Spawner {
	sp, err := instance.Self()
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// checkTerms fails t if two instances believed they led at once for longer than limit,
// or a later term has a token that is not higher.
func checkTerms(t *testing.T, ts []instance.Term, limit time.Duration) {
	t.Helper()
	var worst time.Duration
	for i, a := range ts {
		for _, b := range ts[i+1:] {
			if a.Proc == b.Proc {
				continue
			}
			overlap := a.Overlap(b)
			worst = max(worst, overlap)
			if overlap > limit {
				t.Errorf("%s (token %d) and %s (token %d) both led for %v", a.ID, a.Token, b.ID, b.Token, overlap)
			}
		}
		if i > 0 && a.Token <= ts[i-1].Token {
			t.Errorf("term %d has token %d after %d", i, a.Token, ts[i-1].Token)
		}
	}
	t.Logf("%d terms; longest overlap of two beliefs: %v (limit %v)", len(ts), max(worst, 0), limit)
}

func TestPausedLeaderIsFenced(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := db.Open(t, nil)
		if _, err := store.NewMigrator(s, instance.Components()...).Up(ctx); err != nil {
			t.Fatal(err)
		}
		ttl := time.Second
		opts := instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc", LeaseTTL: ttl,
			LeaderPoll: 50 * time.Millisecond, Workloads: []instance.Workload{instance.FencedWriter{}}}
		g := instance.NewGroup(spawner(t), opts, t.Output())
		defer g.Stop(10 * time.Second)
		for i := range 3 {
			if _, err := g.Start(ctx, i); err != nil {
				t.Fatal(err)
			}
		}
		wait := func(what string, from int, match func(instance.Event) bool) instance.Event {
			t.Helper()
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			ev, _, err := g.WaitFor(wctx, from, match)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			return ev
		}
		var newest int64 // the newest term's token
		for round := range 2 {
			wait("a leader", 0, func(instance.Event) bool { _, _, ok := g.Leader(); return ok })
			time.Sleep(ttl / 2) // let it write
			slot, old, _ := g.Leader()
			_, from := g.Log()
			t0 := time.Now()
			if err := g.Signal(slot, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			// Paused for well over a lease. The others elect a new leader meanwhile: on
			// PostgreSQL within one TTL, or two if it froze inside a fenced transaction
			// (the server aborts that after a TTL idle). On SQLite a process frozen inside
			// a write transaction keeps the only write lock, and then nobody can take
			// over until it resumes (nothing unsafe happens: no newer token can be
			// issued either).
			pctx, cancel := context.WithTimeout(ctx, 3*ttl)
			newTerm := func(e instance.Event) bool { return e.Event == "elected" && e.Token > old.Token }
			newLeader, _, err := g.WaitFor(pctx, from, newTerm)
			cancel()
			time.Sleep(time.Until(t0.Add(3 * ttl)))
			if err := g.Signal(slot, syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			if err == nil && newLeader.Time().Sub(t0) < ttl/2 {
				// Its last renewal was at most a quarter TTL before the pause: its lease
				// ran out no sooner than 3/4 TTL after it. A paused process keeps its
				// liveness lock, so nothing may count it dead before that.
				t.Errorf("round %d: a paused leader was replaced %v after the pause, before its lease (%v) could run out",
					round, newLeader.Time().Sub(t0), ttl)
			}
			if err != nil {
				if db.Dialect != store.SQLite {
					t.Fatalf("no new leader while the old one was paused: %v", err)
				}
				t.Logf("round %d: the frozen leader held SQLite's write lock; election waits for it to resume", round)
				newLeader = wait("a new term", from, newTerm)
			}
			// The woken writer tries again with its old token and must be refused.
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			fenced, _, err := g.WaitFor(wctx, from, func(e instance.Event) bool {
				return e.Proc == slot && e.Event == "fenced" && e.Token == old.Token
			})
			cancel()
			if err != nil {
				t.Fatalf("round %d: the paused leader's stale write was not refused: %v", round, err)
			}
			t.Logf("round %d: %s paused with token %d; %s elected with token %d; stale write refused: %s",
				round, old.ID, old.Token, newLeader.ID, newLeader.Token, fenced.Err)
			newest = newLeader.Token
		}
		// The last term writes before the instances stop: on SQLite it may begin only as the
		// frozen leader resumes, just before the refused write this loop waited for.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			writes, err := instance.FencedWrites(ctx, s, "svc")
			if err != nil {
				t.Fatal(err)
			}
			if len(writes) > 0 && writes[len(writes)-1].Token >= newest {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the term with token %d wrote nothing within 30 s", newest)
			}
		}
		g.Stop(10 * time.Second)

		// Every accepted write carries the token current when it committed: in commit
		// order the tokens never go back, and each belongs to a real term of its writer.
		log, _ := g.Log()
		ts := instance.Terms(log, time.Now())
		checkTerms(t, ts, ttl)
		owner := map[int64]string{}
		for _, tm := range ts {
			owner[tm.Token] = tm.ID
		}
		writes, err := instance.FencedWrites(ctx, s, "svc")
		if err != nil {
			t.Fatal(err)
		}
		var last int64
		perToken := map[int64]int{}
		for n, w := range writes {
			if w.Token < last {
				t.Fatalf("write %d has token %d after a write with token %d: a stale write was accepted", n, w.Token, last)
			}
			if owner[w.Token] != w.Instance {
				t.Fatalf("write %d by %s with token %d, which was %q's term", n, w.Instance, w.Token, owner[w.Token])
			}
			last = w.Token
			perToken[w.Token]++
		}
		n := len(writes)
		if n == 0 || len(perToken) < 3 {
			t.Fatalf("%d writes in %d terms: the test did not exercise fencing", n, len(perToken))
		}
		t.Logf("%d fenced writes accepted across %d terms, all in token order", n, len(perToken))
	})
}

// A killed process's lock is free long before its lease could run out (a minute here): the
// kernel frees its liveness lock, and the instance watching it frees its leases.
func TestLockFreedAfterKill(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		ttl := time.Minute
		opts := instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc", LeaseTTL: ttl,
			Workloads: []instance.Workload{instance.Lock{LockName: "nightly-report"}}}
		g := instance.NewGroup(spawner(t), opts, t.Output())
		defer g.Stop(10 * time.Second)
		if _, err := g.Start(ctx, 0); err != nil {
			t.Fatal(err)
		}
		locked, _, err := g.WaitFor(ctx, 0, func(e instance.Event) bool { return e.Event == "locked" })
		if err != nil {
			t.Fatal(err)
		}
		n, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "svc", Logger: testdb.Logger(t), LeaseTTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close(ctx)
		if _, ok, err := n.Locks().TryAcquire(ctx, "nightly-report", nil); ok || err != nil {
			t.Fatalf("lock held by a live process was taken: %v %v", ok, err)
		}
		t0 := time.Now()
		if err := g.Kill(0); err != nil {
			t.Fatal(err)
		}
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		k, err := n.Locks().Acquire(actx, "nightly-report", nil)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0)
		t.Logf("lock of a killed process free after %v (lease TTL %v)", took, ttl)
		if took > ttl/2 {
			t.Errorf("lock free only after %v: it waited for its lease (%v), not for the killed process's liveness lock", took, ttl)
		}
		if k.Token() <= locked.Token {
			t.Errorf("token %d not above the dead holder's %d", k.Token(), locked.Token)
		}
	})
}

// TestComponentDeclaresItsTables: the workloads' Component declares every table its
// migrations create, on each database.
func TestComponentDeclaresItsTables(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		testdb.CheckTables(t, db, instance.Component())
	})
}

// A child that cannot start says why: the error carries the end of its stderr even when
// the group discards it.
func TestStartFailureSaysWhy(t *testing.T) {
	t.Parallel()
	opts := instance.Options{DSN: "mysql://nowhere/db", Service: "svc"}
	g := instance.NewGroup(spawner(t), opts, nil)
	defer g.Stop(10 * time.Second)
	_, err := g.Start(context.Background(), 0)
	if err == nil || !strings.Contains(err.Error(), "mysql") {
		t.Fatalf("start of an instance that cannot open its store: %v", err)
	}
}

// A killed leader is replaced long before its lease could run out (a minute here), on each
// store: its liveness lock tells the cluster at once.
func TestKilledLeaderReplacedAtOnce(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		ttl := time.Minute
		g, stderr := startThree(t, instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc", LeaseTTL: ttl})
		defer stderr.dumpOnFailure(t)
		defer g.Stop(10 * time.Second)
		for round := range 4 {
			slot, old := waitLeader(t, g)
			_, from := g.Log()
			t0 := time.Now()
			if err := g.Kill(slot); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, ttl/2)
			ev, _, err := g.WaitFor(wctx, from, func(e instance.Event) bool { return e.Event == "elected" && e.Proc != slot })
			cancel()
			if err != nil {
				t.Fatalf("round %d: no new leader within %v of killing %s (lease TTL %v): %v", round, ttl/2, old.ID, ttl, err)
			}
			if ev.Token <= old.Token {
				t.Fatalf("round %d: new token %d not above %d", round, ev.Token, old.Token)
			}
			t.Logf("round %d: %s killed; %s elected %v later", round, old.ID, ev.ID, ev.Time().Sub(t0).Round(time.Millisecond))
			if _, err := g.Start(ctx, slot); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// A leader whose liveness session the server ends while its process lives (an operator's
// pg_terminate_backend, a pooler's reset) gives up its leadership as the others take over:
// no two instances believe they lead for longer than a lease, and fencing holds.
func TestLivenessSessionTerminated(t *testing.T) {
	t.Parallel()
	db := testdb.New(t, store.Postgres)
	ctx := context.Background()
	s := db.Open(t, nil)
	if _, err := store.NewMigrator(s, instance.Components()...).Up(ctx); err != nil {
		t.Fatal(err)
	}
	ttl := time.Second
	g, stderr := startThree(t, instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc", LeaseTTL: ttl,
		LeaderPoll: 50 * time.Millisecond, Workloads: []instance.Workload{instance.FencedWriter{}}})
	defer stderr.dumpOnFailure(t)
	defer g.Stop(10 * time.Second)
	for round := range 3 {
		waitLeader(t, g)
		time.Sleep(ttl / 2) // let it write
		slot, old := waitLeader(t, g)
		_, from := g.Log()
		t0 := time.Now()
		var n int
		if err := s.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
			"twice-live svc "+old.ID).Scan(&n); err != nil || n != 1 {
			t.Fatalf("terminated %d liveness sessions of %s: %v", n, old.ID, err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		demoted, _, err := g.WaitFor(wctx, from, func(e instance.Event) bool { return e.Event == "demoted" && e.Proc == slot })
		cancel()
		if err != nil {
			t.Fatalf("round %d: %s still leads after its liveness session ended: %v", round, old.ID, err)
		}
		t.Logf("round %d: %s's liveness session terminated; its term ended %v later", round, old.ID,
			demoted.Time().Sub(t0).Round(time.Millisecond))
		time.Sleep(ttl)
	}
	g.Stop(10 * time.Second)
	log, _ := g.Log()
	ts := instance.Terms(log, time.Now())
	checkTerms(t, ts, ttl)
	writes, err := instance.FencedWrites(ctx, s, "svc")
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	for n, w := range writes {
		if w.Token < last {
			t.Fatalf("write %d has token %d after a write with token %d: a stale write was accepted", n, w.Token, last)
		}
		last = w.Token
	}
}

// waitLeader waits until one of g's instances leads, and returns its slot and election.
func waitLeader(t *testing.T, g *instance.Group) (int, instance.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := g.WaitFor(ctx, 0, func(instance.Event) bool { _, _, ok := g.Leader(); return ok }); err != nil {
		t.Fatalf("no leader: %v", err)
	}
	slot, ev, _ := g.Leader()
	return slot, ev
}
