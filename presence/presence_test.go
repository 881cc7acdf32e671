package presence_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/presence"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// liveness is how long a test waits for what must happen: generous, since machines are
// noisy; a correct implementation takes milliseconds.
const liveness = 20 * time.Second

// ev is the event kind room user, as a watcher gets it.
func ev(kind presence.Kind, room, user string) presence.Event {
	return presence.Event{Kind: kind, Room: room, User: user}
}

// seen records a watcher's events.
type seen = testnode.Seen[presence.Event]

func online(t *testing.T, p *presence.Presence, room string) string {
	t.Helper()
	us, err := p.Online(context.Background(), room)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(us, ",")
}

// A user with three tabs on two instances is one user online; every instance sees where
// each connection is, with its instance's address; the user leaves a room only when their
// last connection in it goes, and every instance's watcher hears of it once.
func TestThreeTabsOnTwoInstances(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a := testnode.Open(t, db, "chat", twice.Config{AdvertiseAddr: "10.0.0.1:8080"})
		b := testnode.Open(t, db, "chat", twice.Config{AdvertiseAddr: "10.0.0.2:8080"})
		wa, wb := &seen{}, &seen{}
		defer a.Presence().Watch("lobby", wa.Add)()
		defer b.Presence().Watch("lobby", wb.Add)()

		tab1, err := a.Presence().Connect(ctx, "alice", "lobby")
		if err != nil {
			t.Fatal(err)
		}
		tab2, err := a.Presence().Connect(ctx, "alice", "lobby")
		if err != nil {
			t.Fatal(err)
		}
		tab3, err := b.Presence().Connect(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if err := tab3.Join(ctx, "lobby", "help"); err != nil {
			t.Fatal(err)
		}
		bob, err := b.Presence().Connect(ctx, "bob", "help")
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []*twice.Node{a, b} {
			testnode.Eventually(t, liveness, "every connection in the view", func() bool {
				es, err := n.Presence().Where(ctx, "alice")
				return err == nil && len(es) == 3
			})
			if got := online(t, n.Presence(), "lobby"); got != "alice" {
				t.Fatalf("%s: lobby = %q, want alice once", n.ID(), got)
			}
			testnode.Eventually(t, liveness, "bob and alice in help", func() bool { return online(t, n.Presence(), "help") == "alice,bob" })
			if got := online(t, n.Presence(), ""); got != "alice,bob" {
				t.Fatalf("%s: online = %q", n.ID(), got)
			}
			es, _ := n.Presence().Where(ctx, "alice")
			where := map[string]int{}
			for _, e := range es {
				where[e.Instance+"@"+e.Addr]++
				if e.User != "alice" || e.Since.IsZero() || e.Conn == "" {
					t.Fatalf("entry %+v", e)
				}
			}
			if where[a.ID()+"@10.0.0.1:8080"] != 2 || where[b.ID()+"@10.0.0.2:8080"] != 1 {
				t.Fatalf("%s: alice is at %v", n.ID(), where)
			}
			c, err := n.Presence().Count(ctx)
			want := presence.Counts{Users: 2, Connections: 4, Rooms: map[string]int{"lobby": 1, "help": 2}}
			if err != nil || c.Users != want.Users || c.Connections != want.Connections || !maps.Equal(c.Rooms, want.Rooms) {
				t.Fatalf("%s: Count = %+v, %v; want %+v", n.ID(), c, err, want)
			}
		}
		if got := tab3.Rooms(); !slices.Equal(got, []string{"help", "lobby"}) {
			t.Fatalf("tab3 rooms %v", got)
		}

		// Two tabs close: alice stays in the lobby through the third, on the other instance.
		if err := tab1.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := tab2.Close(ctx); err != nil {
			t.Fatal(err)
		}
		for _, n := range []*twice.Node{a, b} {
			testnode.Eventually(t, liveness, "two connections gone", func() bool {
				es, _ := n.Presence().Where(ctx, "alice")
				return len(es) == 1
			})
		}
		if err := tab3.Leave(ctx, "lobby"); err != nil {
			t.Fatal(err)
		}
		for i, w := range []*seen{wa, wb} {
			testnode.Eventually(t, liveness, "alice leaves the lobby", func() bool { return w.Has(ev(presence.Left, "lobby", "alice")) })
			if got := w.List(); !slices.Equal(got, []presence.Event{ev(presence.Joined, "lobby", "alice"), ev(presence.Left, "lobby", "alice")}) {
				t.Fatalf("watcher %d saw %v", i, got)
			}
			if got := online(t, []*twice.Node{a, b}[i].Presence(), "help"); got != "alice,bob" {
				t.Fatalf("help = %q", got)
			}
		}
		if err := bob.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := bob.Close(ctx); err != nil {
			t.Fatalf("a second Close: %v", err)
		}
		if err := bob.Join(ctx, "lobby"); !errors.Is(err, presence.ErrGone) {
			t.Fatalf("Join after Close = %v, want ErrGone", err)
		}
	})
}
