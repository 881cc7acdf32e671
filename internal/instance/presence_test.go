package instance_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/presence"
)

// TestKilledInstancePresence: an instance process killed with SIGKILL hands nothing over,
// yet its users leave their rooms on every survivor (another process and an observer in
// this one), once each and within the failure-detection bound (its liveness lock goes with
// the process), and its entries are deleted. A user it shared with the surviving process
// stays online.
func TestKilledInstancePresence(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		killedInstancePresence(t, db, false)
	})
	// Without liveness locks the death is found by the heartbeats, DeadAfter after the
	// last one: the users leave then.
	t.Run("no-liveness-lock", func(t *testing.T) {
		t.Parallel()
		testdb.Each(t, func(t *testing.T, db testdb.DB) {
			t.Parallel()
			killedInstancePresence(t, db, true)
		})
	})
}

func killedInstancePresence(t *testing.T, db testdb.DB, noLock bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := crashOptions(db)
	// Quick beats form the ring of liveness watchers soon after the processes start (a
	// beat names each one's successor); a death is then found by the lock, not the
	// beats, however long DeadAfter is.
	opts.HeartbeatInterval, opts.DeadAfter = 100*time.Millisecond, deadAfter
	if noLock {
		opts.NoLivenessLock, opts.DeadAfter = true, 2*time.Second
	}
	opts.Workloads = []instance.Workload{instance.Presence{Users: []string{"alice"}, Rooms: []string{"lobby"}}}
	observer := testnode.Open(t, db, opts.Service, twice.Config{HeartbeatInterval: opts.HeartbeatInterval, DeadAfter: opts.DeadAfter,
		NoLivenessLock: noLock})
	seen := &testnode.Seen[presence.Event]{}
	defer observer.Presence().WatchAll(seen.Add)()

	g := instance.NewGroup(spawner(t), opts, t.Output())
	defer g.Stop(10 * time.Second)
	_, from := g.Log()
	var ids [2]string
	for i := range ids {
		if _, err := g.Start(ctx, i); err != nil {
			t.Fatal(err)
		}
		e, _, err := g.WaitFor(ctx, from, func(e instance.Event) bool { return e.Proc == i && e.Event == "connected" })
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = e.ID
	}
	doomed, survivor := ids[0], ids[1]
	left := func(room, user string) presence.Event {
		return presence.Event{Kind: presence.Left, Room: room, User: user}
	}
	testnode.Eventually(t, 20*time.Second, "the observer sees both processes' users", func() bool {
		us, err := observer.Presence().Online(ctx, "lobby")
		return err == nil && len(us) == 3
	})
	// The surviving process has seen the doomed one's user join before the kill.
	if _, _, err := g.WaitFor(ctx, from, func(e instance.Event) bool {
		return e.Proc == 1 && e.Event == "presence" && e.Key == "joined lobby "+doomed
	}); err != nil {
		t.Fatal(err)
	}

	_, from = g.Log()
	killed := time.Now()
	if err := g.Kill(0); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "the observer sees the killed instance's user leave", func() bool {
		return seen.Has(left("lobby", doomed)) && seen.Has(left("", doomed))
	})
	took := time.Since(killed)
	e, _, err := g.WaitFor(ctx, from, func(e instance.Event) bool {
		return e.Proc == 1 && e.Event == "presence" && e.Key == "left lobby "+doomed
	})
	if err != nil {
		t.Fatalf("the surviving process never saw the killed instance's user leave: %v", err)
	}
	t.Logf("left on the observer %v and on the surviving process %v after the kill (DeadAfter %v)",
		took.Round(time.Millisecond), e.Time().Sub(killed).Round(time.Millisecond), opts.DeadAfter)

	if us, err := observer.Presence().Online(ctx, "lobby"); err != nil || len(us) != 2 || us[0] != "alice" || us[1] != survivor {
		t.Fatalf("lobby after the kill: %v, %v", us, err)
	}
	for _, ev := range seen.List() {
		if ev.Kind == presence.Left && ev.User != doomed {
			t.Fatalf("%+v: only the killed instance's own user leaves", ev)
		}
	}
	if n := seen.Count(left("lobby", doomed)); n != 1 {
		t.Fatalf("the killed instance's user left the lobby %d times", n)
	}
	since, _ := g.Since(from)
	for _, ev := range since {
		zombie := ev.Key == "joined lobby "+doomed || ev.Key == "joined  "+doomed
		if ev.Event == "presence" && (zombie || strings.HasPrefix(ev.Key, "left ") && !strings.HasSuffix(ev.Key, " "+doomed)) {
			t.Fatalf("after the kill the surviving process saw %q", ev.Key)
		}
	}
	var rows int
	s := observer.Store()
	testnode.Eventually(t, 20*time.Second, "the killed instance's entries deleted", func() bool {
		err := s.Reader().QueryRow(ctx, s.SQL("SELECT count(*) FROM twice_presence WHERE service = $1 AND instance = $2"), opts.Service, doomed).Scan(&rows)
		return err == nil && rows == 0
	})
}
