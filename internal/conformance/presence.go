package conformance

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/presence"
	"github.com/twicehq/twice/twicetest"
)

// seen records a presence watcher's events.
type seen = testnode.Seen[presence.Event]

// ev is the event kind room user, as a watcher gets it.
func ev(kind presence.Kind, room, user string) presence.Event {
	return presence.Event{Kind: kind, Room: room, User: user}
}

// onlineIn is room's users on n, joined with commas.
func onlineIn(t *testing.T, n *twice.Node, room string) string {
	t.Helper()
	us, err := n.Presence().Online(context.Background(), room)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(us, ",")
}

// exercisePresence checks who is connected where: connections made on any instance reach
// every instance's view and watchers (a user with several connections on several
// instances is one user), a crashed instance's users leave everywhere within the
// failure-detection bound, and a change reaches an instance that hears no signal at its
// poll.
func exercisePresence(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"ReachesEveryInstance", presenceReachesEveryInstance},
		{"CrashedInstanceLeaves", presenceCrashedInstanceLeaves},
		{"PollFindsUnheardChanges", presencePollFindsUnheardChanges},
	})
}

func presenceReachesEveryInstance(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	nodes := []*twice.Node{backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm())}
	other := backend.node(t, db, testnats.Service(), testnode.Calm())
	ws := make([]*seen, len(nodes))
	for i, n := range nodes {
		ws[i] = &seen{}
		t.Cleanup(n.Presence().Watch("lobby", ws[i].Add))
	}
	var tabs []*presence.Conn
	for _, n := range []*twice.Node{nodes[0], nodes[0], nodes[1]} { // three tabs, two instances
		c, err := n.Presence().Connect(ctx, "alice", "lobby")
		if err != nil {
			t.Fatal(err)
		}
		tabs = append(tabs, c)
	}
	if _, err := other.Presence().Connect(ctx, "mallory", "lobby"); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		testnode.Eventually(t, 20*time.Second, "three connections of alice's", func() bool {
			es, err := n.Presence().Where(ctx, "alice")
			return err == nil && len(es) == 3
		})
		if got := onlineIn(t, n, "lobby"); got != "alice" {
			t.Fatalf("node %d: lobby = %q: one user, and no other service's", i, got)
		}
	}
	for _, c := range tabs[:2] {
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := tabs[2].Leave(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	for i, w := range ws {
		testnode.Eventually(t, 20*time.Second, "alice leaves the lobby", func() bool { return w.Has(ev(presence.Left, "lobby", "alice")) })
		if got := w.List(); !slices.Equal(got, []presence.Event{ev(presence.Joined, "lobby", "alice"), ev(presence.Left, "lobby", "alice")}) {
			t.Fatalf("node %d's watcher saw %v", i, got)
		}
		if got := onlineIn(t, nodes[i], ""); got != "alice" {
			t.Fatalf("node %d: online = %q: alice's third tab is still connected", i, got)
		}
	}
}

// The crashed instance stops as a killed process does (twicetest.Crash): its users leave
// on both survivors without anyone closing anything.
func presenceCrashedInstanceLeaves(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	// The crash is found by the liveness lock; the default beats keep a survivor that a
	// loaded machine holds up from being counted dead with it.
	cfg := testnode.Calm()
	doomed, a, b := backend.node(t, db, svc, cfg), backend.node(t, db, svc, cfg), backend.node(t, db, svc, cfg)
	wa, wb := &seen{}, &seen{}
	t.Cleanup(a.Presence().WatchAll(wa.Add))
	t.Cleanup(b.Presence().WatchAll(wb.Add))
	if _, err := doomed.Presence().Connect(ctx, "alice", "lobby"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Presence().Connect(ctx, "bob", "lobby"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*twice.Node{a, b} {
		testnode.Eventually(t, 20*time.Second, "alice and bob in the lobby", func() bool { return onlineIn(t, n, "lobby") == "alice,bob" })
	}
	twicetest.Crash(t, doomed)
	for i, w := range []*seen{wa, wb} {
		testnode.Eventually(t, 20*time.Second, "alice leaves the lobby and the service", func() bool {
			return w.Has(ev(presence.Left, "lobby", "alice")) && w.Has(ev(presence.Left, "", "alice"))
		})
		if got := onlineIn(t, []*twice.Node{a, b}[i], "lobby"); got != "bob" {
			t.Fatalf("survivor %d: lobby = %q", i, got)
		}
	}
}

// An instance cut off the bus hears no signal; the change reaches it at its poll, which
// runs at Config.Presence.Poll while the bus does not vouch.
func presencePollFindsUnheardChanges(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	writer, deaf := backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm())
	w := &seen{}
	t.Cleanup(deaf.Presence().Watch("lobby", w.Add))
	restore := twicetest.CutBus(t, deaf)
	defer restore()
	c, err := writer.Presence().Connect(ctx, "alice", "lobby")
	if err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "the deaf instance sees alice join", func() bool { return w.Has(ev(presence.Joined, "lobby", "alice")) })
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "the deaf instance sees alice leave", func() bool { return w.Has(ev(presence.Left, "lobby", "alice")) })
}
