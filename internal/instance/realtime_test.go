package instance_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/rtclient"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/realtime"
)

// TestRealtimeSurvivesKill: three instance processes serve the hub; clients connected to
// each publish to one room while a node in this process sends to each user. One instance
// is killed with SIGKILL mid-traffic: its clients reconnect to the others with their
// positions. In the end every client has every message of the room and of its user
// stream from where it subscribed to the last, or was told recovery was impossible: zero
// silent gaps and zero duplicates.
func TestRealtimeSurvivesKill(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		realtimeSurvivesKill(t, db, "", false)
	})
	// The history is pruned while the killed instance's clients are away: they are told
	// their recovery is impossible, and continue from the last message.
	t.Run("pruned", func(t *testing.T) {
		t.Parallel()
		testdb.Each(t, func(t *testing.T, db testdb.DB) {
			t.Parallel()
			realtimeSurvivesKill(t, db, "", true)
		})
	})
	// Hints over NATS: delivery never waits for the database's bus.
	t.Run("nats", func(t *testing.T) {
		t.Parallel()
		url := testnats.URL(t)
		testdb.Each(t, func(t *testing.T, db testdb.DB) {
			t.Parallel()
			realtimeSurvivesKill(t, db, url, false)
		})
	})
}

func realtimeSurvivesKill(t *testing.T, db testdb.DB, busURL string, prune bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const procs, perProc, sends = 3, 3, 30
	opts := crashOptions(db)
	opts.Service, opts.Bus = testnats.Service(), busURL
	opts.Workloads = []instance.Workload{instance.Realtime{}}
	g := instance.NewGroup(spawner(t), opts, t.Output())
	defer g.Stop(10 * time.Second)
	_, from := g.Log()
	var addrs [procs]string
	for i := range procs {
		if _, err := g.Start(ctx, i); err != nil {
			t.Fatal(err)
		}
		e, _, err := g.WaitFor(ctx, from, func(e instance.Event) bool { return e.Proc == i && e.Event == "http" })
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = e.Addr
	}
	if _, _, err := g.WaitFor(ctx, from, func(e instance.Event) bool { return e.Event == "ready" && e.Proc == procs-1 }); err != nil {
		t.Fatal(err)
	}
	server := testnode.Open(t, db, opts.Service, twice.Config{Bus: busURL, Realtime: realtime.Config{HistorySize: 5}})
	// resume lets the killed instance's clients reconnect: at once, or once the history
	// was pruned.
	resume := make(chan struct{})
	if !prune {
		close(resume)
	}
	url := func(slot int, user string) string { return "ws://" + addrs[slot] + "/realtime?user=" + user }

	var mu sync.Mutex // protects killed
	killed := -1
	// live returns a slot to connect to: home unless it was killed.
	live := func(home int) int {
		mu.Lock()
		defer mu.Unlock()
		if home == killed {
			return (home + 1) % procs
		}
		return home
	}
	type tab struct {
		c    *rtclient.Client
		user string
		home int
	}
	var tabs []*tab
	for i := range procs * perProc {
		tb := &tab{c: rtclient.New(), user: fmt.Sprintf("u%d", i), home: i % procs}
		if err := tb.c.Connect(ctx, url(tb.home, tb.user), nil); err != nil {
			t.Fatal(err)
		}
		for _, r := range []string{"chat", realtime.UserRoom} {
			if err := tb.c.Subscribe(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		tabs = append(tabs, tb)
		defer tb.c.Drop()
	}
	for _, tb := range tabs {
		testnode.Eventually(t, 20*time.Second, "subscribed", func() bool { return tb.c.Position(realtime.UserRoom).Known && tb.c.Position("chat").Known })
	}
	// reconnect connects a client cut off from its instance to a live one, with its
	// positions.
	reconnect := func(tb *tab) {
		if tb.c.Connected() {
			return
		}
		select {
		case <-resume:
		case <-ctx.Done():
			return
		}
		if err := tb.c.Connect(ctx, url(live(tb.home), tb.user), nil); err != nil {
			t.Logf("%s: reconnect: %v", tb.user, err)
		}
	}

	var wg sync.WaitGroup
	for _, tb := range tabs {
		wg.Go(func() {
			for k := range sends {
				reconnect(tb)
				_ = tb.c.Publish(ctx, "chat", fmt.Sprintf("%s-%d", tb.user, k), "")
				time.Sleep(10 * time.Millisecond) // pacing, so the kill falls mid-traffic
			}
		})
	}
	wg.Go(func() {
		for k := range sends {
			for _, tb := range tabs {
				if _, err := server.Realtime().SendToUser(ctx, tb.user, k); err != nil {
					t.Error(err)
				}
			}
			if k == sends/3 {
				mu.Lock()
				killed = 0
				mu.Unlock()
				if err := g.Signal(0, syscall.SIGKILL); err != nil {
					t.Error(err)
				}
			}
		}
		if prune {
			if _, err := server.Realtime().Prune(ctx); err != nil { // keeps 5 messages a stream
				t.Error(err)
			}
			close(resume)
		}
	})
	wg.Wait()
	<-g.Proc(0).Done()

	// A last message to the room and to each user: every client must reach it.
	end, err := server.Realtime().Publish(ctx, "chat", "end")
	if err != nil {
		t.Fatal(err)
	}
	ends := map[string]int64{}
	for _, tb := range tabs {
		p, err := server.Realtime().SendToUser(ctx, tb.user, "end")
		if err != nil {
			t.Fatal(err)
		}
		ends[tb.user] = p.Offset
	}
	for _, tb := range tabs {
		testnode.Eventually(t, 30*time.Second, tb.user+" reaches the end", func() bool {
			reconnect(tb)
			return tb.c.Position("chat").Offset == end.Offset && tb.c.Position(realtime.UserRoom).Offset == ends[tb.user]
		})
	}
	recovered, lost := 0, 0
	for _, tb := range tabs {
		for _, room := range []string{"chat", realtime.UserRoom} {
			a := tb.c.Audit(room)
			if a.Gaps != 0 || a.Duplicates != 0 {
				t.Errorf("%s in %s: %+v", tb.user, room, a)
			}
			lost += a.Lost
		}
		if tb.home == 0 {
			if tb.c.Closes() == 0 {
				t.Errorf("%s: its instance was killed, yet its connection never ended", tb.user)
			}
			if tb.c.Has(func(f rtclient.Frame) bool { return f.Type == "subscribed" && f.Recovered != nil && *f.Recovered }) {
				recovered++
			}
		}
	}
	if recovered == 0 && lost == 0 {
		t.Error("no client of the killed instance resumed, and none was told recovery was impossible")
	}
	if prune && lost < perProc {
		t.Errorf("%d recoveries impossible after pruning, want one at least per client of the killed instance", lost)
	}
	t.Logf("%d messages in the room; %d clients of the killed instance resumed; %d recoveries impossible", end.Offset, recovered, lost)
}
