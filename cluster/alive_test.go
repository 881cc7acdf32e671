package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// A rescue finds a row held by a dead instance in its snapshot, but a live instance takes
// the row (rescued and claimed it) and commits before the rescue can lock it. PostgreSQL
// then checks the rescue's condition again on the row's new version, and Alive must be
// asked again there, of the new owner: the rescue must not take the row from a live
// instance. (SQLite has one writer: nothing changes between a look and its write.)
func TestAliveAskedOfTheLockedVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t, store.Postgres)
	s := open(t, db, nil)
	for _, m := range []struct {
		id  string
		age time.Duration
	}{{"dead", time.Hour}, {"live", 0}} {
		if _, err := s.Pool().Exec(ctx, `INSERT INTO twice_members (service, id, host, pid, version, state, dead_after_ms, started_at, heartbeat_at)
			VALUES ('svc', $1, 'h', 1, 'v', 'ready', 3000, now() - $2::interval, now() - $2::interval)`, m.id, m.age.String()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Pool().Exec(ctx, `CREATE TABLE work (id int PRIMARY KEY, owner text NOT NULL);
		INSERT INTO work VALUES (1, 'dead')`); err != nil {
		t.Fatal(err)
	}

	// The live instance takes the row, and holds it until the rescue waits for it.
	take, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer take.Rollback(ctx)
	if _, err := take.Exec(ctx, "UPDATE work SET owner = 'live' WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	// The rescue's text names the test's schema (s.SQL qualifies twice_members), which
	// finds it in pg_stat_activity.
	rescued := make(chan []string, 1)
	failed := make(chan error, 1)
	go func() {
		rows, err := s.Pool().Query(ctx, s.SQL("SELECT owner FROM work j WHERE NOT "+
			cluster.Alive("'svc'", "j.owner", "now()")+" FOR UPDATE"))
		if err != nil {
			failed <- err
			return
		}
		defer rows.Close()
		var owners []string
		for rows.Next() {
			var o string
			if err := rows.Scan(&o); err != nil {
				failed <- err
				return
			}
			owners = append(owners, o)
		}
		if err := rows.Err(); err != nil {
			failed <- err
			return
		}
		rescued <- owners
	}()
	testnode.Eventually(t, 30*time.Second, "the rescue waits for the row", func() bool {
		var n int
		err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
			"%"+db.Schema+"%").Scan(&n)
		return err == nil && n == 1
	})
	if err := take.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case owners := <-rescued:
		if len(owners) != 0 {
			t.Fatalf("the rescue took the row from %v; the live instance had taken it before the rescue locked it", owners)
		}
	case err := <-failed:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatal("the rescue did not end")
	}
}
