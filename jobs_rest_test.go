package twice_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
)

// A queue with nothing to do rests until its next scheduled job is due, or for the
// Backstop while the bus vouches for the wake-ups. These tests set Backstop to an hour and
// Poll to 50 ms: what they wait for happens only if a wake-up or the due time brought it.

type restJob struct {
	Name  string
	Queue string `json:"-"`
	Key   string `json:"-"`
}

func (restJob) Kind() string { return "rest" }

func (j restJob) Opts() jobs.Opts { return jobs.Opts{Queue: j.Queue, Key: j.Key} }

// restConfig is a node that rests for an hour between polls when its queues are quiet.
func restConfig() twice.Config {
	cfg := testnode.Steady()
	cfg.Backstop = time.Hour
	cfg.Jobs.Poll = 50 * time.Millisecond
	cfg.Jobs.Queues = []jobs.QueueConfig{{Name: "a"}, {Name: "b"}}
	return cfg
}

// ranBy records which instance ran each attempt of each job, by the job's Name.
type ranBy struct {
	mu   sync.Mutex
	runs map[string][]string
}

func (r *ranBy) add(name, instance string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runs == nil {
		r.runs = map[string][]string{}
	}
	r.runs[name] = append(r.runs[name], instance)
}

func (r *ranBy) of(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.runs[name]...)
}

// A job scheduled for later runs when it is due, on a queue resting between polls.
func TestRestingQueueRunsAScheduledJobWhenDue(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		n := testnode.Open(t, db, "rest-scheduled", restConfig())
		var ran ranBy
		if err := jobs.Register(n.Jobs(), jobs.WorkFunc[restJob](func(_ context.Context, j *jobs.Job[restJob]) error {
			ran.add(j.Args.Name, n.ID())
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // several polls: the queue rests
		if _, err := n.Jobs().Enqueue(ctx, restJob{Name: "later", Queue: "a"}, &jobs.Opts{Delay: 700 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, 30*time.Second, "the scheduled job run", func() bool { return len(ran.of("later")) == 1 })
	})
}

// A failed attempt's retry, due later, is run by another instance whose queue rested when
// the attempt failed: recording the failure wakes the queue, which then rests until the
// retry is due. The instance that failed is gone by then.
func TestRetryReachesAnotherRestingInstance(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		cfg := restConfig()
		cfg.Jobs.Backoff = func(int) time.Duration { return 3 * time.Second }
		var ran ranBy
		fail := make(chan struct{})
		register := func(n *twice.Node) {
			t.Helper()
			if err := jobs.Register(n.Jobs(), jobs.WorkFunc[restJob](func(ctx context.Context, j *jobs.Job[restJob]) error {
				ran.add(j.Args.Name, n.ID())
				if j.Attempt == 1 {
					<-fail
					return errors.New("the first attempt fails")
				}
				return nil
			})); err != nil {
				t.Fatal(err)
			}
		}
		a := testnode.Open(t, db, "rest-retry", cfg)
		register(a)
		res, err := a.Jobs().Enqueue(ctx, restJob{Name: "flaky", Queue: "a"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, 30*time.Second, "the first attempt running on a", func() bool { return len(ran.of("flaky")) == 1 })
		b := testnode.Open(t, db, "rest-retry", cfg)
		register(b)
		time.Sleep(300 * time.Millisecond) // several polls: b's queue rests, nothing available
		close(fail)
		testnode.Eventually(t, 30*time.Second, "the failure recorded", func() bool {
			row, err := a.Jobs().Get(ctx, res.ID)
			return err == nil && row.State == jobs.Available && row.Attempt == 1
		})
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, 30*time.Second, "the retry run", func() bool { return len(ran.of("flaky")) == 2 })
		if got := ran.of("flaky"); got[0] != a.ID() || got[1] != b.ID() {
			t.Fatalf("attempts ran on %v, want a (%s) then b (%s); a closing took longer than the backoff?", got, a.ID(), b.ID())
		}
	})
}

// A job whose key a job of another queue holds waits in a queue that keeps polling: the
// key's release wakes only the queue of the job that held it.
func TestQueueBlockedByAKeyOfAnotherQueueKeepsPolling(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		n := testnode.Open(t, db, "rest-key", restConfig())
		var ran ranBy
		hold := make(chan struct{})
		if err := jobs.Register(n.Jobs(), jobs.WorkFunc[restJob](func(_ context.Context, j *jobs.Job[restJob]) error {
			ran.add(j.Args.Name, n.ID())
			if j.Args.Name == "holder" {
				<-hold
			}
			return nil
		})); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Jobs().Enqueue(ctx, restJob{Name: "holder", Queue: "a", Key: "k"}, nil); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, 30*time.Second, "the holder running", func() bool { return len(ran.of("holder")) == 1 })
		if _, err := n.Jobs().Enqueue(ctx, restJob{Name: "waiter", Queue: "b", Key: "k"}, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(600 * time.Millisecond) // several polls of b, and its looks after the wake-up, each finding the key held
		if got := ran.of("waiter"); len(got) != 0 {
			t.Fatalf("the waiter ran while its key was held: %v", got)
		}
		close(hold)
		testnode.Eventually(t, 30*time.Second, "the waiter run", func() bool { return len(ran.of("waiter")) == 1 })
	})
}
