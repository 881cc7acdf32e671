package bus

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// The SQLite bus prunes the signals older than its retention and keeps the others.
func TestSQLitePruneKeepsRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testdb.New(t, store.SQLite).Open(t, nil)
	if _, err := store.NewMigrator(s, Component()).Up(ctx); err != nil {
		t.Fatal(err)
	}
	// An hour's retention: the poller's own prune, every ten minutes, stays out of the way.
	b, err := newSQLite(ctx, s, Config{Service: "svc", Instance: "i0", Retention: time.Hour,
		Flush: DefaultFlush, Poll: DefaultPoll, FastPoll: DefaultFastPoll, Logger: testdb.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	for channel, age := range map[string]time.Duration{"old": 2 * time.Hour, "recent": 30 * time.Minute, "new": 0} {
		if _, err := s.Exec(ctx, s.SQL("INSERT INTO twice_bus (service, channel, payload, sender, at) VALUES ('svc', $1, x'', 'i1', {clock} - {ms $2})"),
			channel, age.Milliseconds()); err != nil {
			t.Fatal(err)
		}
	}
	b.prune(ctx)
	rows, err := s.Query(ctx, s.SQL("SELECT channel FROM twice_bus ORDER BY channel"))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var kept []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		kept = append(kept, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(kept, []string{"new", "recent"}) {
		t.Errorf("after pruning, signals %v are kept; want [new recent]", kept)
	}
}
