package presence_test

import (
	"context"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/presence"
	"github.com/twicehq/twice/twicetest"
)

// entries counts the rows of the presence table whose instance is id, alive or not: what
// the database still holds, not what the views show.
func entries(t *testing.T, n *twice.Node, id string) int {
	t.Helper()
	var c int
	s := n.Store()
	if err := s.Reader().QueryRow(context.Background(), s.SQL("SELECT count(*) FROM twice_presence WHERE service = $1 AND instance = $2"),
		n.Service(), id).Scan(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// A crashed instance hands nothing over: the survivors find it dead, its users leave their
// rooms on every survivor's view with one Left event each, its entries are deleted, and a
// user it shared with a survivor stays online through the survivor's connection.
func TestCrashedInstanceEntriesVanish(t *testing.T) {
	t.Parallel()
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		t.Parallel()
		ctx := context.Background()
		// Slower beats than twicetest's: a survivor that a loaded machine holds up for a
		// second must not be counted dead, which would make its users leave too. The
		// crash is found by the liveness lock, not by the beats.
		nodes := twicetest.Open(t, 3, &twicetest.Options{Store: s, Config: twice.Config{
			HeartbeatInterval: 250 * time.Millisecond, DeadAfter: 5 * time.Second}})
		doomed, a, b := nodes[0], nodes[1], nodes[2]
		wa, wb := &seen{}, &seen{}
		defer a.Presence().WatchAll(wa.Add)()
		defer b.Presence().WatchAll(wb.Add)()
		for _, u := range []string{"alice", "carol"} {
			if _, err := doomed.Presence().Connect(ctx, u, "lobby"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := a.Presence().Connect(ctx, "carol", "lobby"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Presence().Connect(ctx, "bob", "lobby"); err != nil {
			t.Fatal(err)
		}
		for _, n := range []*twice.Node{a, b} {
			testnode.Eventually(t, liveness, "everyone in the lobby", func() bool { return online(t, n.Presence(), "lobby") == "alice,bob,carol" })
		}

		twicetest.Crash(t, doomed)
		for i, w := range []*seen{wa, wb} {
			testnode.Eventually(t, liveness, "alice leaves the lobby and the service", func() bool {
				return w.Has(ev(presence.Left, "lobby", "alice")) && w.Has(ev(presence.Left, "", "alice"))
			})
			n := []*twice.Node{a, b}[i]
			if got := online(t, n.Presence(), "lobby"); got != "bob,carol" {
				t.Fatalf("%s: lobby = %q after the crash", n.ID(), got)
			}
			es, err := n.Presence().Where(ctx, "carol")
			if err != nil || len(es) != 1 || es[0].Instance != a.ID() {
				t.Fatalf("%s: carol is at %+v, %v", n.ID(), es, err)
			}
			if c := w.Count(ev(presence.Left, "lobby", "carol")); c != 0 {
				t.Fatalf("%s: carol left the lobby %d times, though a survivor holds her connection", n.ID(), c)
			}
			if c := w.Count(ev(presence.Left, "lobby", "alice")); c != 1 {
				t.Fatalf("%s: alice left the lobby %d times", n.ID(), c)
			}
		}
		testnode.Eventually(t, liveness, "the dead instance's entries deleted", func() bool { return entries(t, a, doomed.ID()) == 0 })
	})
}

// An instance that restarts under the same id finds its previous process's entries alive
// again (its member row is), and deletes them when its presence starts: the users that
// process held leave, on every instance.
func TestRestartClearsThePreviousIncarnation(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		cfg := testnode.Calm()
		cfg.InstanceID = "web-1"
		first := testnode.Open(t, db, "chat", cfg)
		if _, err := first.Presence().Connect(ctx, "alice", "lobby"); err != nil {
			t.Fatal(err)
		}
		// Crashed alone, nobody deletes its entries: its process is gone, its rows stay.
		twicetest.Crash(t, first)

		again := testnode.Open(t, db, "chat", cfg) // the same instance id, a new process
		observer := testnode.Open(t, db, "chat", testnode.Calm())
		w := &seen{}
		defer observer.Presence().Watch("lobby", w.Add)()
		// The member is alive again, so without the restart's clear alice would be online.
		testnode.Eventually(t, liveness, "the old entry counted alive", func() bool { return w.Has(ev(presence.Joined, "lobby", "alice")) })
		if entries(t, observer, "web-1") == 0 {
			t.Fatal("the previous process's entries are gone before the restart's presence started")
		}

		p := again.Presence()
		if es, err := p.Where(ctx, "alice"); err != nil || len(es) != 0 {
			t.Fatalf("after the restart's presence started, alice is at %+v, %v", es, err)
		}
		if n := entries(t, observer, "web-1"); n != 0 {
			t.Fatalf("%d entries of the previous process left", n)
		}
		testnode.Eventually(t, liveness, "alice leaves on the observer", func() bool { return w.Has(ev(presence.Left, "lobby", "alice")) })
		// The new process's own connections are kept.
		if _, err := p.Connect(ctx, "bob", "lobby"); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, liveness, "bob joins", func() bool { return online(t, observer.Presence(), "lobby") == "bob" })
	})
}

// Close removes the instance's entries before it leaves: a deploy leaves no zombie, and
// nobody has to wait for a death to be found.
func TestCloseRemovesEntries(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		leaving := testnode.Open(t, db, "chat", testnode.Calm())
		staying := testnode.Open(t, db, "chat", testnode.Calm())
		w := &seen{}
		defer staying.Presence().Watch("", w.Add)()
		if _, err := leaving.Presence().Connect(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, liveness, "alice online", func() bool { return w.Has(ev(presence.Joined, "", "alice")) })
		if err := leaving.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if n := entries(t, staying, leaving.ID()); n != 0 {
			t.Fatalf("%d entries left after Close", n)
		}
		testnode.Eventually(t, liveness, "alice offline", func() bool { return w.Has(ev(presence.Left, "", "alice")) })
		if got := online(t, staying.Presence(), ""); got != "" {
			t.Fatalf("online after the deploy: %q", got)
		}
	})
}

// An instance whose heartbeats stop long enough is counted dead: its users leave and its
// entries are deleted. When its heartbeats resume it puts back the entries of the
// connections it still holds, and its users are online again.
func TestStalledInstancePutsItsConnectionsBack(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		cfg := twice.Config{HeartbeatInterval: 100 * time.Millisecond, DeadAfter: time.Second, LeaseTTL: time.Second}
		stalled := testnode.Open(t, db, "chat", cfg)
		other := testnode.Open(t, db, "chat", cfg)
		w := &seen{}
		defer other.Presence().Watch("lobby", w.Add)()
		conn, err := stalled.Presence().Connect(ctx, "alice", "lobby")
		if err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, liveness, "alice joins", func() bool { return w.Has(ev(presence.Joined, "lobby", "alice")) })

		resume := twicetest.StopHeartbeats(t, stalled)
		testnode.Eventually(t, liveness, "alice leaves with her silent instance", func() bool { return w.Has(ev(presence.Left, "lobby", "alice")) })
		testnode.Eventually(t, liveness, "its entries deleted", func() bool { return entries(t, other, stalled.ID()) == 0 })
		resume()
		testnode.Eventually(t, liveness, "alice back once her instance beats again", func() bool { return w.Count(ev(presence.Joined, "lobby", "alice")) >= 2 })
		if got := conn.Rooms(); len(got) != 1 || got[0] != "lobby" {
			t.Fatalf("the connection's rooms: %v", got)
		}
		if err := conn.Close(ctx); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, liveness, "alice leaves when she closes", func() bool {
			return w.Count(ev(presence.Left, "lobby", "alice")) >= 2 && online(t, other.Presence(), "lobby") == ""
		})
	})
}

// The leader deletes the entries of instances that have no member row any more (reaped,
// or gone without closing their presence), which no death notice names: nobody reads
// them, and they do not stay.
func TestLeaderDeletesOrphanedEntries(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		cfg := testnode.Fast()
		cfg.Backstop, cfg.Presence = 100*time.Millisecond, presence.Config{Poll: 50 * time.Millisecond}
		n := testnode.Open(t, db, "chat", cfg)
		testnode.Eventually(t, liveness, "it leads", n.IsLeader)
		if _, err := n.Presence().Connect(ctx, "alice", "lobby"); err != nil {
			t.Fatal(err)
		}
		s := n.Store()
		if _, err := s.Exec(ctx, s.SQL(`INSERT INTO twice_presence (service, conn, room, user_id, instance, incarnation, at)
SELECT service, 'ghost-conn', '', 'ghost', 'gone-instance', 'x', at FROM twice_presence WHERE service = 'chat' AND room = ''`)); err != nil {
			t.Fatal(err)
		}
		if err := n.Presence().Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if online(t, n.Presence(), "") != "alice" {
			t.Fatal("an entry without a live instance is read")
		}
		testnode.Eventually(t, liveness, "the orphan deleted", func() bool { return entries(t, n, "gone-instance") == 0 })
		if got := online(t, n.Presence(), "lobby"); got != "alice" {
			t.Fatalf("lobby = %q: the leader deleted a live instance's entry", got)
		}
	})
}
