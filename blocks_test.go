package twice_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
)

// statements records the statements a node runs once armed.
type statements struct {
	armed atomic.Bool
	mu    sync.Mutex // protects seen
	seen  []string
}

func (s *statements) Statement(q string) {
	if s.armed.Load() {
		s.mu.Lock()
		s.seen = append(s.seen, q)
		s.mu.Unlock()
	}
}

// naming returns the recorded statements that name any of tables.
func (s *statements) naming(tables ...string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, q := range s.seen {
		for _, t := range tables {
			if strings.Contains(q, t) {
				out = append(out, q)
				break
			}
		}
	}
	return out
}

type ping struct{}

func (ping) Kind() string { return "ping" }

// Blocks start when first used: a service that uses only locks runs no loop of jobs, cron,
// events, settings, sessions or idempotency, so none of their statements reach the
// database. Using the job queue starts it, and its statements follow.
func TestBlocksStartWhenFirstUsed(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		obs := &statements{}
		cfg := twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "locks-only", Logger: testdb.Logger(t), Observer: obs,
			HeartbeatInterval: 50 * time.Millisecond, LeaseTTL: 400 * time.Millisecond, LeaderPoll: 20 * time.Millisecond}
		cfg.Jobs.RescueInterval = 50 * time.Millisecond
		cfg.Jobs.Poll = 50 * time.Millisecond
		cfg.Settings.Poll = 50 * time.Millisecond
		n, err := twice.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close(ctx)
		obs.armed.Store(true)

		blocks := []string{"twice_jobs", "twice_job_keys", "twice_queue", "twice_cron", "twice_event", "twice_settings",
			"twice_session", "twice_scs", "twice_idempotency"}
		if err := n.Locks().Do(ctx, "invoice-42", nil, func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
		// Long enough for every block's loop, had it started, to have run many times: the
		// rescue and settings polls every 50 ms, the leader's upkeep at election.
		time.Sleep(time.Second)
		if got := obs.naming(blocks...); len(got) > 0 {
			t.Fatalf("a node using only locks ran %d statements of other blocks, the first: %s", len(got), got[0])
		}
		if got := obs.naming("twice_leases", "twice_members"); len(got) == 0 {
			t.Fatal("the observer saw no statement of the cluster core; it is not wired")
		}

		if err := jobs.Register(n.Jobs(), jobs.WorkFunc[ping](func(context.Context, *jobs.Job[ping]) error { return nil })); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, 10*time.Second, "a statement of the job queue after registering a worker", func() bool {
			return len(obs.naming("twice_jobs")) > 0
		})
	})
}
