package check

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/faultproxy"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// waitUntil waits until cond holds, and says how long that took.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	testnode.Eventually(t, limit, what, cond)
	return time.Since(start)
}

// A database that disappears and comes back: every node turns not-ready within a few
// seconds, stops acting as leader once its lease cannot be renewed, and recovers on its own.
func TestDatabaseOutage(t *testing.T) {
	t.Parallel()
	db := testdb.New(t, store.Postgres)
	ctx := context.Background()
	s := db.Open(t, nil)
	if _, err := store.NewMigrator(s, twice.Components()...).Up(ctx); err != nil {
		t.Fatal(err)
	}
	var nodes []*twice.Node
	var proxies []*faultproxy.Proxy
	for range 3 {
		dsn, p := testdb.Proxied(t, db.DSN)
		n, err := twice.Open(ctx, twice.Config{DSN: dsn, Schema: db.Schema, Name: "svc", Logger: testdb.Logger(t),
			HeartbeatInterval: 200 * time.Millisecond, LeaseTTL: time.Second, LeaderPoll: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = n.Close(cctx)
		})
		nodes, proxies = append(nodes, n), append(proxies, p)
	}
	leaders := func() int {
		k := 0
		for _, n := range nodes {
			if n.IsLeader() {
				k++
			}
		}
		return k
	}
	// ready is the node's own view; readyz runs the full /readyz checks (including a store
	// ping that waits out its timeout in a blackhole) on every node at once.
	ready := func(want bool) bool {
		for _, n := range nodes {
			if n.Ready() != want {
				return false
			}
		}
		return true
	}
	readyz := func(want bool) bool {
		got := make(chan bool, len(nodes))
		for _, n := range nodes {
			go func() {
				hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				ok, _ := n.Health().Ready(hctx)
				got <- ok
			}()
		}
		all := true
		for range nodes {
			all = all && <-got == want
		}
		return all
	}
	allReady := func(want bool) bool { return ready(want) && readyz(want) }
	waitUntil(t, 20*time.Second, "ready with one leader", func() bool { return allReady(true) && leaders() == 1 })

	for _, mode := range []faultproxy.Mode{faultproxy.Blackhole, faultproxy.Drop} {
		for _, p := range proxies {
			p.Set(mode, 0)
		}
		took := waitUntil(t, 20*time.Second, mode.String()+": every node not ready and none leading", func() bool {
			return leaders() == 0 && ready(false)
		})
		waitUntil(t, 20*time.Second, mode.String()+": /readyz fails everywhere", func() bool { return readyz(false) })
		// Liveness needs no database: an orchestrator must not restart instances for this.
		for _, n := range nodes {
			w := httptest.NewRecorder()
			n.Health().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/livez", nil))
			if w.Code != http.StatusOK {
				t.Errorf("%s: /livez = %d %q while the database is away", mode, w.Code, w.Body)
			}
		}
		t.Logf("%s: all nodes not ready and no leader %v after the database vanished", mode, took.Round(time.Millisecond))
		for _, p := range proxies {
			p.Set(faultproxy.Pass, 0)
		}
		took = waitUntil(t, 30*time.Second, mode.String()+": recovered with one leader", func() bool {
			return allReady(true) && leaders() == 1
		})
		t.Logf("%s: recovered %v after the database came back", mode, took.Round(time.Millisecond))
	}
}
