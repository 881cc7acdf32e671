package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
)

// due finds the earliest run_at of a queue's available jobs, keyed or not, across
// priorities, and nothing of other queues, other services or jobs not available.
func TestDueIsTheFirstAvailableJob(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := migrated(t, db)
		c, other := testClient(t, s, "svc"), testClient(t, s, "other")
		due := func(want time.Duration, wantOK bool) {
			t.Helper()
			got, ok, _, err := c.due(ctx, "q")
			if err != nil {
				t.Fatal(err)
			}
			if ok != wantOK || ok && (got > want || got < want-time.Minute) {
				t.Fatalf("due = %v, %v; want about %v, %v", got, ok, want, wantOK)
			}
		}
		enqueue := func(c *Client, opts Opts) int64 {
			t.Helper()
			r, err := c.Enqueue(ctx, sleeper{}, &opts)
			if err != nil {
				t.Fatal(err)
			}
			return r.ID
		}
		due(0, false)
		enqueue(c, Opts{Queue: "elsewhere", Delay: time.Minute})
		enqueue(other, Opts{Queue: "q", Delay: time.Minute})
		due(0, false)
		enqueue(c, Opts{Queue: "q", Priority: 2, Delay: 50 * time.Minute})
		due(50*time.Minute, true)
		enqueue(c, Opts{Queue: "q", Priority: 9, Delay: 40 * time.Minute})
		due(40*time.Minute, true)
		enqueue(c, Opts{Queue: "q", Priority: 1, Key: "k", Delay: 30 * time.Minute})
		due(30*time.Minute, true)
		keyed := enqueue(c, Opts{Queue: "q", Priority: 7, Key: "k", Delay: 20 * time.Minute})
		due(20*time.Minute, true)
		// A job running or finished is not waiting to run.
		if _, err := s.Exec(ctx, `UPDATE twice_jobs SET state = 2 WHERE id = $1`, keyed); err != nil {
			t.Fatal(err)
		}
		due(30*time.Minute, true)
		now := enqueue(c, Opts{Queue: "q", Priority: 100})
		due(0, true)
		if _, err := s.Exec(ctx, `UPDATE twice_jobs SET state = 4 WHERE id = $1`, now); err != nil {
			t.Fatal(err)
		}
		due(30*time.Minute, true)
	})
}
