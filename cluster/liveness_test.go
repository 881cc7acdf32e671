package cluster_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// A crashed instance is found dead by its liveness lock long before its heartbeat could
// show it (dead-after is an hour here), and is buried once; its row stays, listed dead.
func TestLivenessLockNoticesACrash(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := open(t, db, nil)
		died := make(chan string, 10)
		ms := ring(t, s, []string{"a", "b", "c"}, func(id string, m *cluster.Membership) {
			m.OnDead(func(_ context.Context, dead string) { died <- id + " buried " + dead })
		})
		ms[1].Abandon()
		select {
		case got := <-died:
			if got != "a buried b" {
				t.Fatalf("%s; want a buried b (a watches b)", got)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a crashed instance was not noticed by its liveness lock")
		}
		alive := map[string]bool{}
		list, err := cluster.List(ctx, s, "svc")
		if err != nil {
			t.Fatal(err)
		}
		for _, mb := range list {
			alive[mb.ID] = mb.Alive
		}
		if _, listed := alive["b"]; !listed || !alive["a"] || alive["b"] || !alive["c"] {
			t.Fatalf("alive %v after b crashed; want b listed dead", alive)
		}
		// The ring closes over the gap: a now watches c.
		ms[2].Abandon()
		select {
		case got := <-died:
			if got != "a buried c" {
				t.Fatalf("%s; want a buried c", got)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the ring did not close over a buried instance")
		}
		select {
		case got := <-died:
			t.Fatalf("buried twice: %s", got)
		case <-time.After(100 * time.Millisecond):
		}
	})
}

// An instance without a liveness lock is noticed by its heartbeat alone.
func TestNoLivenessLock(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := open(t, db, nil)
		a := member(t, s, "a", cluster.Config{HeartbeatInterval: time.Minute, DeadAfter: time.Hour})
		b := member(t, s, "b", cluster.Config{HeartbeatInterval: time.Minute, DeadAfter: time.Hour, NoLivenessLock: true})
		died := make(chan string, 1)
		a.OnDead(func(_ context.Context, id string) { died <- id })
		for _, m := range []*cluster.Membership{a, b} {
			if err := m.Join(ctx); err != nil {
				t.Fatal(err)
			}
		}
		b.Abandon()
		select {
		case id := <-died:
			t.Fatalf("%s buried without a liveness lock", id)
		case <-time.After(300 * time.Millisecond):
		}
	})
}

// On PostgreSQL, an instance whose lock session is ended by the server while its process
// lives is told at once, takes a new lock under a new key, and the instance that watched
// it never buries it under the new one.
func TestLivenessSessionKilled(t *testing.T) {
	t.Parallel()
	db := testdb.New(t, store.Postgres)
	ctx := context.Background()
	s := open(t, db, nil)
	a := member(t, s, "a", cluster.Config{HeartbeatInterval: 50 * time.Millisecond, DeadAfter: time.Hour})
	b := member(t, s, "b", cluster.Config{HeartbeatInterval: 50 * time.Millisecond, DeadAfter: time.Hour})
	lost := make(chan error, 1)
	b.OnLivenessLost(func(err error) { lost <- err })
	for _, m := range []*cluster.Membership{a, b} {
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
	}
	key := func() (k *int64) {
		if err := s.QueryRow(ctx, "SELECT live_key FROM twice_members WHERE service = 'svc' AND id = 'b'").Scan(&k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	old := key()
	var n int
	if err := s.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
		"twice-live svc b").Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminated %d sessions, %v", n, err)
	}
	select {
	case <-lost:
	case <-time.After(20 * time.Second):
		t.Fatal("b was not told its liveness session ended")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		k := key()
		if k != nil && *k != *old {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b's key %v after its session ended; want a new one (was %d)", k, *old)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// b's heartbeat brings it back even if a buried it under its old key.
	deadline = time.Now().Add(20 * time.Second)
	for {
		if err := b.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		list, err := cluster.List(ctx, s, "svc")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 2 && list[0].Alive && list[1].Alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members %+v", list)
		}
	}
}

// On SQLite, a new lock sweeps away the files of processes that died unwatched, but never
// a fresh one (created a moment before its lock is taken) or a held one.
func TestLivenessFilesSwept(t *testing.T) {
	t.Parallel()
	db := testdb.New(t, store.SQLite)
	ctx := context.Background()
	s := open(t, db, nil)
	dir := s.DSN().Path + ".live"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	stale, fresh := filepath.Join(dir, "11"), filepath.Join(dir, "12")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A socket left by a process that died with its lock file swept: it goes too.
	staleSocket := filepath.Join(dir, "13.s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: staleSocket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	old := time.Now().Add(-time.Hour)
	for _, p := range []string{stale, staleSocket} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	a := member(t, s, "a", cluster.Config{})
	if err := a.Join(ctx); err != nil {
		t.Fatal(err)
	}
	// a's file, held, made old: b's sweep must keep it all the same.
	held, _ := os.ReadDir(dir)
	for _, e := range held {
		if e.Name() != "11" && e.Name() != "12" && e.Name() != "13.s" {
			if err := os.Chtimes(filepath.Join(dir, e.Name()), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	b := member(t, s, "b", cluster.Config{})
	if err := b.Join(ctx); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names, sockets []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".s") {
			sockets = append(sockets, e.Name())
		} else {
			names = append(names, e.Name())
		}
	}
	if len(names) != 3 || slices.Contains(names, "11") || !slices.Contains(names, "12") {
		t.Fatalf("files %v: want the fresh one and a's and b's, not the stale one", names)
	}
	if len(sockets) != 2 || slices.Contains(sockets, "13.s") {
		t.Fatalf("sockets %v: want a's and b's (a's made old: its lock file is there), not the stale one", sockets)
	}
}

// On PostgreSQL the sessions that watch their successor's lock are in their loop of tries
// (no lock wait for the deadlock detector), hold no advisory lock of their own, and keep no
// old snapshot: the database's horizon for removing dead rows moves on while they wait. A
// lock request blocked for the whole wait held it back for as long (30 s slices before).
func TestLivenessWatchesHoldNoHorizon(t *testing.T) {
	t.Parallel()
	db := testdb.New(t, store.Postgres)
	ctx := context.Background()
	s := open(t, db, nil)
	tag := strconv.FormatInt(time.Now().UnixNano(), 36)
	ring(t, s, []string{"a-" + tag, "b-" + tag, "c-" + tag}, nil)
	like := "twice-watch svc %-" + tag
	deadline := time.Now().Add(20 * time.Second)
	for {
		var watching, blocked int
		if err := s.QueryRow(ctx, `SELECT count(*) FILTER (WHERE query LIKE 'DO %'), count(*) FILTER (WHERE wait_event_type = 'Lock')
			FROM pg_stat_activity WHERE application_name LIKE $1 AND state = 'active'`, like).Scan(&watching, &blocked); err != nil {
			t.Fatal(err)
		}
		if blocked != 0 {
			t.Fatalf("%d watchers wait in a lock request", blocked)
		}
		if watching == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 watchers watch their successor's lock", watching)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var held int
	if err := s.QueryRow(ctx, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE a.application_name LIKE $1 AND l.locktype = 'advisory' AND l.granted`, like).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held != 0 {
		t.Fatalf("the watching sessions hold %d advisory locks", held)
	}
	// A transaction id taken now, after the watches began: within a few of their tries,
	// none of them has a snapshot from before it.
	var xid int64
	if err := s.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint").Scan(&xid); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		var older int
		if err := s.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1
			AND backend_xmin IS NOT NULL AND backend_xmin::text::bigint <= $2 % 4294967296`, like, xid).Scan(&older); err != nil {
			t.Fatal(err)
		}
		if older == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d watchers keep a snapshot from before transaction %d: the horizon cannot move", older, xid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ring joins members ids of service "svc" on s, in order (setup, if set, runs on each before
// it joins), and has each heartbeat once, so every one knows its successor: a member learns
// of those that joined after it from a heartbeat. Heartbeats are then 20 minutes apart and
// dead-after an hour, so only liveness locks can bury anyone.
func ring(t *testing.T, s *store.Store, ids []string, setup func(id string, m *cluster.Membership)) []*cluster.Membership {
	t.Helper()
	ctx := context.Background()
	var ms []*cluster.Membership
	for _, id := range ids {
		m := member(t, s, id, cluster.Config{HeartbeatInterval: 20 * time.Minute, DeadAfter: time.Hour})
		if setup != nil {
			setup(id, m)
		}
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	for _, m := range ms {
		if err := m.Beat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return ms
}
