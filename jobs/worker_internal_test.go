package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

type held struct{}

func (held) Kind() string { return "held" }

// A queue keeps a worker goroutine per job it runs at once while it is busy, and retires
// them when a poll's interval did not need them: workers wait on the hand-off channel
// alone, and the queue's loop retires them, as many as the interval had spare, and all of
// them when the queue rests. When the client closes, the loop's end ends the workers that
// are left, including one whose job was still running (goleak, in TestMain, checks that
// none outlives the test).
func TestWorkersStayWhileNeededAndAreRetiredAfter(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		s := db.Open(t, nil)
		if _, err := store.NewMigrator(s, cluster.Component(), Component()).Up(ctx); err != nil {
			t.Fatal(err)
		}
		m, err := cluster.NewMembership(s, cluster.Config{Service: "svc", ID: "i1", Logger: testdb.Logger(t), HeartbeatInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Leave(context.Background()) })
		const poll, concurrency = 20 * time.Millisecond, 6
		c, err := New(block.Deps{Store: s, Members: m, Service: "svc", Instance: "i1", Logger: testdb.Logger(t)},
			Config{Poll: poll, ShutdownTimeout: 50 * time.Millisecond, Queues: []QueueConfig{{Name: DefaultQueue, Concurrency: concurrency}}})
		if err != nil {
			t.Fatal(err)
		}
		release := make(chan struct{}, 100)
		if err := Register(c, WorkFunc[held](func(ctx context.Context, _ *Job[held]) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		var p *producer
		eventually(t, "the queue started", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			p = c.producers[DefaultQueue]
			return p != nil
		})
		enqueue := func(n int) {
			t.Helper()
			for range n {
				if _, err := c.Enqueue(ctx, held{}, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
		workers := func() int { return int(p.workers.Load()) }
		running := func(n int) func() bool { return func() bool { return p.numRunning() == n } }

		// Busy: one worker per job running at once, kept across many polls while the jobs run.
		enqueue(concurrency)
		eventually(t, "every job running", running(concurrency))
		time.Sleep(10 * poll)
		if w := workers(); w != concurrency {
			t.Fatalf("%d workers while %d jobs run; want %d", w, concurrency, concurrency)
		}
		// Half the jobs end and the queue stays busy with the rest: the spare workers go.
		for range concurrency / 2 {
			release <- struct{}{}
		}
		eventually(t, "the spare workers retired", func() bool { return workers() == concurrency/2 })
		// Busy again: the workers that are left take jobs, and new ones start for the rest.
		enqueue(concurrency / 2)
		eventually(t, "every job running again", running(concurrency))
		if w := workers(); w != concurrency {
			t.Fatalf("%d workers while %d jobs run; want %d", w, concurrency, concurrency)
		}
		// Quiet: every worker goes.
		for range concurrency {
			release <- struct{}{}
		}
		eventually(t, "every worker retired", func() bool { return workers() == 0 })

		// A job still running at Close, past the shutdown timeout: its worker ends with the
		// loop, once the cancelled job returns.
		enqueue(1)
		eventually(t, "the last job running", running(1))
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, "no worker after Close", func() bool { return workers() == 0 })
	})
}

// eventually fails t unless cond holds within 30 seconds, looking every millisecond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("not within 30s: %s", what)
		}
	}
}
