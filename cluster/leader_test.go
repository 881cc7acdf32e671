package cluster_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// candidate is one instance campaigning for the leadership of service "svc".
type candidate struct {
	id string
	m  *lease.Manager
	l  *cluster.Leader
}

// campaign starts instance id campaigning on its own store, with a lease manager of TTL
// ttl (its default when 0) and cfg; it stops when t ends.
func campaign(t *testing.T, db testdb.DB, id string, ttl time.Duration, cfg cluster.LeaderConfig) *candidate {
	t.Helper()
	return campaignOn(t, open(t, db, nil), id, ttl, cfg)
}

// campaignOn is campaign on the store s.
func campaignOn(t *testing.T, s *store.Store, id string, ttl time.Duration, cfg cluster.LeaderConfig) *candidate {
	t.Helper()
	m, err := lease.NewManager(s, lease.Config{Service: "svc", Holder: id, TTL: ttl, Logger: testdb.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Poll == 0 {
		cfg.Poll = 20 * time.Millisecond
	}
	cfg.Logger = testdb.Logger(t)
	l := cluster.NewLeader(m, cfg)
	t.Cleanup(func() {
		_ = l.Stop(context.Background())
		_ = m.Close(context.Background())
	})
	return &candidate{id: id, m: m, l: l}
}

// watching returns whether the last value received from watch said the instance leads.
// It never blocks: a value not yet sent counts as not yet received.
func watching(watch <-chan bool) func() bool {
	var last bool
	return func() bool {
		select {
		case v := <-watch:
			last = v
		default:
		}
		return last
	}
}

func leading(cs ...*candidate) []*candidate {
	var out []*candidate
	for _, c := range cs {
		if c.l.IsLeader() {
			out = append(out, c)
		}
	}
	return out
}

// Of three candidates one leads; every one of them agrees which, and only the leader has
// the lease and a live leader context.
func TestElectsOne(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		cs := []*candidate{campaign(t, db, "a", 0, cluster.LeaderConfig{}), campaign(t, db, "b", 0, cluster.LeaderConfig{}),
			campaign(t, db, "c", 0, cluster.LeaderConfig{})}
		testnode.Eventually(t, 10*time.Second, "a leader", func() bool { return len(leading(cs...)) > 0 })
		ls := leading(cs...)
		if len(ls) != 1 {
			t.Fatalf("%d leaders", len(ls))
		}
		leader := ls[0]
		if l := leader.l.Lease(); l == nil || l.Name() != cluster.LeaderLease || leader.l.Context().Err() != nil {
			t.Fatalf("the leader's lease %v, context %v", l, leader.l.Context().Err())
		}
		for _, c := range cs {
			if info, err := c.l.Current(ctx); err != nil || info.Holder != leader.id {
				t.Fatalf("%s sees %+v, %v; want %s leading", c.id, info, err, leader.id)
			}
			if c == leader {
				continue
			}
			if c.l.Lease() != nil || !errors.Is(context.Cause(c.l.Context()), cluster.ErrNotLeader) {
				t.Fatalf("follower %s: lease %v, context cause %v", c.id, c.l.Lease(), context.Cause(c.l.Context()))
			}
		}
	})
}

// Stop hands the leadership over at once, under a higher token; nobody leads meanwhile
// by the database's account.
func TestStopHandsOver(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a := campaign(t, db, "a", 0, cluster.LeaderConfig{})
		// The lease is taken in the look that finds it leading: a lease can be lost
		// between two looks on a loaded machine.
		var la, lb *lease.Lease
		testnode.Eventually(t, 10*time.Second, "a leads", func() bool { la = a.l.Lease(); return la != nil })
		b := campaign(t, db, "b", 0, cluster.LeaderConfig{})
		token := la.Token()
		if err := a.l.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.l.Stop(ctx); err != nil {
			t.Fatalf("second Stop = %v", err)
		}
		if a.l.IsLeader() || a.l.Lease() != nil {
			t.Fatal("a still leads after Stop")
		}
		testnode.Eventually(t, 10*time.Second, "b leads", func() bool { lb = b.l.Lease(); return lb != nil })
		if got := lb.Token(); got <= token {
			t.Fatalf("b's token %d not above a's %d", got, token)
		}
		if a.l.Terms() != 1 || b.l.Terms() != 1 {
			t.Fatalf("terms won: a %d, b %d; want 1 each", a.l.Terms(), b.l.Terms())
		}
	})
}

// A follower that is poked looks at the lease at once instead of at its next look, here a
// minute away: the lease TTL it would otherwise wait out.
func TestPokeWakesAFollower(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a := campaign(t, db, "a", time.Minute, cluster.LeaderConfig{})
		testnode.Eventually(t, 10*time.Second, "a leads", a.l.IsLeader)
		// b's first look at the lease finds a leading: from then on it waits.
		looked := make(chan struct{})
		var once sync.Once
		sb := db.Open(t, &store.Options{Observer: observer(func(q string) {
			if strings.Contains(q, "twice_leases") && strings.HasPrefix(strings.TrimSpace(q), "SELECT") {
				once.Do(func() { close(looked) })
			}
		})})
		b := campaignOn(t, sb, "b", time.Minute, cluster.LeaderConfig{Poll: time.Hour})
		<-looked
		if err := a.l.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		b.l.Poke()
		testnode.Eventually(t, 10*time.Second, "b leads once poked", b.l.IsLeader)
	})
}

// observer is a function as a [store.Observer].
type observer func(query string)

func (o observer) Statement(query string) { o(query) }

// Watch says whether the instance leads, at once and on every change; OnElected starts a
// callback per term whose context ends with the term and carries the term's lease. A
// leader that resigns sits out, then leads again when nobody else does.
func TestWatchAndOnElected(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a := campaign(t, db, "a", 0, cluster.LeaderConfig{})
		watch := a.l.Watch(ctx)
		if first := <-watch; first && !a.l.IsLeader() {
			t.Fatal("Watch's first value disagrees with IsLeader")
		}
		leads := watching(watch)
		terms := make(chan context.Context, 2)
		a.l.OnElected(func(ctx context.Context) {
			terms <- ctx
			<-ctx.Done()
		})
		var first context.Context
		select {
		case first = <-terms:
		case <-time.After(10 * time.Second):
			t.Fatal("OnElected not called")
		}
		if lease.FromContext(first) != a.l.Lease() || first.Err() != nil {
			t.Fatalf("the term's context: lease %v, leader's %v, err %v", lease.FromContext(first), a.l.Lease(), first.Err())
		}
		testnode.Eventually(t, 10*time.Second, "Watch says a leads", leads)
		if err := a.l.Resign(ctx); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(context.Cause(first), lease.ErrReleased) {
			t.Fatalf("after Resign the term's context cause is %v", context.Cause(first))
		}
		testnode.Eventually(t, 10*time.Second, "Watch reports the resignation", func() bool { return !leads() })
		select {
		case second := <-terms:
			if second == first || second.Err() != nil {
				t.Fatal("the second term reused the first term's context")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("OnElected not called for the second term")
		}
		testnode.Eventually(t, 10*time.Second, "Watch says a leads again", leads)
	})
}

// A leader whose lease is taken from it (by an operator, or after a pause) stops leading
// at its next renewal: its term's context ends with ErrLost and Watch says so.
func TestLostLeaseEndsTheTerm(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a := campaign(t, db, "a", lease.MinTTL, cluster.LeaderConfig{})
		testnode.Eventually(t, 10*time.Second, "a leads", a.l.IsLeader)
		term := a.l.Context()
		leads := watching(a.l.Watch(ctx))
		testnode.Eventually(t, 10*time.Second, "Watch says a leads", leads)
		s := open(t, db, nil)
		if _, err := s.Exec(ctx, "UPDATE twice_leases SET holder = 'intruder', token = token + 1 WHERE name = $1", cluster.LeaderLease); err != nil {
			t.Fatal(err)
		}
		select {
		case <-term.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the term did not end")
		}
		if !errors.Is(context.Cause(term), lease.ErrLost) {
			t.Fatalf("term ended with %v, want ErrLost", context.Cause(term))
		}
		if a.l.IsLeader() {
			t.Fatal("a still leads")
		}
		testnode.Eventually(t, 10*time.Second, "Watch reports the loss", func() bool { return !leads() })
	})
}

// A leader whose OnElected callback panics steps down and sits out: another instance
// takes over. The panic is counted.
func TestPanickingCallbackStepsDown(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		var panics atomic.Int64
		a := campaign(t, db, "a", 0, cluster.LeaderConfig{Panics: &panics})
		a.l.OnElected(func(context.Context) { panic("the duty fails") })
		testnode.Eventually(t, 10*time.Second, "a counts the panic", func() bool { return panics.Load() > 0 })
		b := campaign(t, db, "b", 0, cluster.LeaderConfig{})
		testnode.Eventually(t, 10*time.Second, "b leads", b.l.IsLeader)
	})
}

// Stop waits for the term's callbacks to return, but no longer than its context allows.
func TestStopWaitsForCallbacks(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		a := campaign(t, db, "a", 0, cluster.LeaderConfig{})
		var returned atomic.Bool
		a.l.OnElected(func(ctx context.Context) {
			<-ctx.Done()
			time.Sleep(50 * time.Millisecond)
			returned.Store(true)
		})
		testnode.Eventually(t, 10*time.Second, "a leads", a.l.IsLeader)
		if err := a.l.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !returned.Load() {
			t.Fatal("Stop returned before the callback")
		}

		b := campaign(t, db, "b", 0, cluster.LeaderConfig{})
		release := make(chan struct{})
		defer close(release)
		b.l.OnElected(func(context.Context) { <-release }) // ignores its context
		testnode.Eventually(t, 10*time.Second, "b leads", b.l.IsLeader)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := b.l.Stop(ctx); err == nil || !strings.Contains(err.Error(), "still running") {
			t.Fatalf("Stop with a stuck callback = %v", err)
		}
	})
}

// Abandon gives nothing up: the term goes on locally until its lease ends here, the lease
// stays held in the database, and another leads only once it is freed (as the others do
// for an instance they find dead).
func TestAbandonHandsNothingOver(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a := campaign(t, db, "a", time.Hour, cluster.LeaderConfig{})
		ended := make(chan struct{})
		a.l.OnElected(func(ctx context.Context) {
			<-ctx.Done()
			close(ended)
		})
		var la *lease.Lease
		testnode.Eventually(t, 10*time.Second, "a leads", func() bool { la = a.l.Lease(); return la != nil })
		b := campaign(t, db, "b", time.Hour, cluster.LeaderConfig{})
		a.l.Abandon()
		if a.l.IsLeader() {
			t.Fatal("a leads after Abandon")
		}
		a.m.Abandon()
		<-ended
		if err := a.l.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if cur, err := b.l.Current(ctx); err != nil || cur.Holder != "a" {
			t.Fatalf("the leader lease after a abandoned it: %+v, %v; want still a's", cur, err)
		}
		if _, err := b.m.ReleaseDead(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		b.l.Poke()
		var lb *lease.Lease
		testnode.Eventually(t, 10*time.Second, "b leads", func() bool { lb = b.l.Lease(); return lb != nil })
		if lb.Token() <= la.Token() {
			t.Fatalf("b's token %d not above a's %d", lb.Token(), la.Token())
		}
	})
}

// infoReads counts the reads of the leader lease a store runs.
type infoReads struct{ n atomic.Int64 }

func (r *infoReads) Statement(q string) {
	if strings.Contains(q, "SELECT name, coalesce(holder, '')") {
		r.n.Add(1)
	}
}

// With a Backstop, a follower that finds the lease renewed on time sleeps the Backstop, not
// until each deadline the renewals move; a Poke (a release announced, a death found) wakes
// it, and it takes over a lease that was freed.
func TestFollowerBackstop(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		const ttl = 600 * time.Millisecond // renewed every 200 ms
		a := campaign(t, db, "a", ttl, cluster.LeaderConfig{})
		testnode.Eventually(t, 30*time.Second, "a leading", a.l.IsLeader)
		reads := &infoReads{}
		s := db.Open(t, &store.Options{Observer: reads})
		b := campaignOn(t, s, "b", ttl, cluster.LeaderConfig{Backstop: func() time.Duration { return time.Hour }})
		time.Sleep(2 * time.Second) // ten of a's renewals; without Backstop, b would look after each
		if n := reads.n.Load(); n > 2 {
			t.Fatalf("the follower read the lease %d times in 2 s of renewals; with a Backstop of an hour it looks once", n)
		}
		// a's lease is freed without a word (as if the announcement were lost); a Poke, as a
		// death found by the heartbeat gives, makes b look and take it.
		if err := a.l.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		b.l.Poke()
		testnode.Eventually(t, 30*time.Second, "b leading after the poke", b.l.IsLeader)
	})
}

// A follower told of a death (Died) sleeps no longer than the lease's deadline, however
// fresh the lease looks: the dead one may be a silent leader, found dead before its lease
// ran out (DeadAfter shorter than half the TTL).
func TestFollowerAfterDeath(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		const ttl = 900 * time.Millisecond
		gs := open(t, db, nil)
		ghost, err := lease.NewManager(gs, lease.Config{Service: "svc", Holder: "ghost", TTL: ttl, Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ghost.Close(ctx) })
		if _, err := ghost.TryAcquire(ctx, cluster.LeaderLease, nil); err != nil {
			t.Fatal(err)
		}
		b := campaign(t, db, "b", ttl, cluster.LeaderConfig{Backstop: func() time.Duration { return time.Hour }})
		time.Sleep(300 * time.Millisecond) // b looked, found the lease renewed, and sleeps
		gs.Close()                         // the ghost goes silent: its lease runs out, unreleased
		b.l.Died()
		testnode.Eventually(t, 30*time.Second, "b leading once the silent leader's lease ran out", b.l.IsLeader)
	})
}
