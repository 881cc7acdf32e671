package twicetest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/twicetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type Other struct{}

func (Other) Kind() string { return "other" }

// A failed RequireEnqueued says what it looked for and lists the jobs that were there; a
// job enqueued in a transaction that rolled back is not there.
func TestRequireEnqueuedFailsListingWhatWasThere(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		n := twicetest.Open(t, 1, &twicetest.Options{Store: s})[0]
		if _, err := n.Jobs().Enqueue(ctx, Other{}, &jobs.Opts{Queue: "q1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Jobs().Enqueue(ctx, WelcomeEmail{UserID: 7}, nil); err != nil {
			t.Fatal(err)
		}
		msg := testnode.Failure(t, func(t testing.TB) {
			twicetest.RequireEnqueued(t, n, nil, &twicetest.EnqueuedOpts[WelcomeEmail]{Where: func(a WelcomeEmail) bool { return a.UserID == 8 }})
		})
		for _, want := range []string{`no "welcome-email" job that Where accepts enqueued in service "test" (committed)`, `kind "other", queue "q1", state available`, `kind "welcome-email", queue "default", state available, args {"user_id":`} {
			if !strings.Contains(msg, want) {
				t.Errorf("the failure does not say %q:\n%s", want, msg)
			}
		}
		msg = testnode.Failure(t, func(t testing.TB) {
			twicetest.RequireEnqueued(t, n, nil, &twicetest.EnqueuedOpts[WelcomeEmail]{Queue: "mail", State: jobs.Completed})
		})
		if want := `no "welcome-email" job in queue "mail" in state completed enqueued`; !strings.Contains(msg, want) {
			t.Errorf("the failure does not say %q:\n%s", want, msg)
		}

		rolledBack := fmt.Errorf("rolled back")
		err := n.Store().InTx(ctx, func(tx store.Tx) error {
			if _, err := n.Jobs().EnqueueTx(ctx, tx, WelcomeEmail{UserID: 9}, nil); err != nil {
				return err
			}
			twicetest.RequireEnqueued(t, n, tx, &twicetest.EnqueuedOpts[WelcomeEmail]{Where: func(a WelcomeEmail) bool { return a.UserID == 9 }})
			return rolledBack
		})
		if err != rolledBack {
			t.Fatal(err)
		}
		testnode.Failure(t, func(t testing.TB) {
			twicetest.RequireEnqueued(t, n, nil, &twicetest.EnqueuedOpts[WelcomeEmail]{Where: func(a WelcomeEmail) bool { return a.UserID == 9 }})
		})
	})
}

// A failed RequirePublished lists the events of every topic that were there.
func TestRequirePublishedFailsListingWhatWasThere(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		n := twicetest.Open(t, 1, &twicetest.Options{Store: s})[0]
		if _, err := n.Events().Publish(ctx, events.Message{Topic: "user.deleted", Key: "7", Payload: []byte(`{"why":"asked"}`)}); err != nil {
			t.Fatal(err)
		}
		msg := testnode.Failure(t, func(t testing.TB) {
			twicetest.RequirePublished(t, n, nil, "user.signed-up", nil)
		})
		for _, want := range []string{`no event of topic "user.signed-up" published in service "test" (committed)`, `topic "user.deleted", key "7", payload {"why":"asked"}`} {
			if !strings.Contains(msg, want) {
				t.Errorf("the failure does not say %q:\n%s", want, msg)
			}
		}
		msg = testnode.Failure(t, func(t testing.TB) {
			twicetest.RequirePublished(t, n, nil, "user.deleted", &twicetest.PublishedOpts{Key: "8"})
		})
		if want := `no event of topic "user.deleted" with key "8"`; !strings.Contains(msg, want) {
			t.Errorf("the failure does not say %q:\n%s", want, msg)
		}
	})
}

// Work fails, naming the queue, when jobs wait in a queue nobody works, and leaves a
// paused queue and jobs scheduled for later alone.
func TestWorkNamesAQueueNobodyWorks(t *testing.T) {
	ctx := context.Background()
	n := twicetest.Open(t, 1, nil)[0]
	if _, err := n.Jobs().Enqueue(ctx, Other{}, &jobs.Opts{Queue: "nobody"}); err != nil {
		t.Fatal(err)
	}
	_, err := twicetest.Work(ctx, n)
	if err == nil || !strings.Contains(err.Error(), `queue "nobody" has 1 jobs and no live instance works it`) {
		t.Fatalf("Work: %v; want it to name the queue nobody works", err)
	}
	if err := n.Jobs().PauseQueue(ctx, "nobody"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Jobs().Enqueue(ctx, Other{}, &jobs.Opts{Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	stats, err := twicetest.Work(ctx, n)
	if err != nil {
		t.Fatalf("Work with a paused queue and a job due in an hour: %v", err)
	}
	for _, s := range stats {
		if s.Queue == jobs.DefaultQueue && s.Scheduled != 1 {
			t.Errorf("default queue: %+v; want the scheduled job left", s)
		}
	}
}

// Work gives up when its context ends, listing the queues that still hold work.
func TestWorkStopsWithItsContext(t *testing.T) {
	ctx := context.Background()
	n := twicetest.Open(t, 1, nil)[0]
	release := make(chan struct{})
	defer close(release)
	err := jobs.Register(n.Jobs(), jobs.WorkFunc[Other](func(ctx context.Context, job *jobs.Job[Other]) error {
		<-release
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Jobs().Enqueue(ctx, Other{}, nil); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, err = twicetest.Work(short, n)
	if err == nil || !strings.Contains(err.Error(), `queue "default": 0 available, 1 running`) {
		t.Fatalf("Work: %v; want the running job listed", err)
	}
}

func TestOpenRefusesAnUnknownStore(t *testing.T) {
	msg := testnode.Failure(t, func(t testing.TB) { twicetest.Open(t, 1, &twicetest.Options{Store: "mysql"}) })
	if !strings.Contains(msg, `unknown store "mysql"`) {
		t.Fatalf("Open with an unknown store: %s", msg)
	}
	msg = testnode.Failure(t, func(t testing.TB) { twicetest.Open(t, 0, nil) })
	if !strings.Contains(msg, "at least one node") {
		t.Fatalf("Open with no node: %s", msg)
	}
}

type Chore struct{}

func (Chore) Kind() string { return "chore" }

// A crashed node hands nothing over, and the others take over what it held: its membership
// row stays, never draining, until they count it dead and after; the job it was running
// is rescued and completed elsewhere, the crashed attempt counted; another node leads,
// under a newer token. Both ways a crash is found: by the liveness lock that goes with the
// node, and by its heartbeat alone (NoLivenessLock), after DeadAfter.
func TestCrashLeavesItsWorkToTheOthers(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		for _, noLock := range []bool{false, true} {
			t.Run(fmt.Sprintf("NoLivenessLock=%v", noLock), func(t *testing.T) {
				crashLeavesItsWork(t, s, noLock)
			})
		}
	})
}

func crashLeavesItsWork(t *testing.T, s twicetest.Store, noLock bool) {
	ctx := context.Background()
	nodes := twicetest.Open(t, 3, &twicetest.Options{Store: s, Config: twice.Config{NoLivenessLock: noLock}})
	var crashed *twice.Node
	var term *lease.Lease
	testnode.Eventually(t, 20*time.Second, "a node leads", func() bool {
		for _, n := range nodes {
			if term = n.Leader().Lease(); term != nil {
				crashed = n
				return true
			}
		}
		return false
	})
	others := slices.DeleteFunc(slices.Clone(nodes), func(n *twice.Node) bool { return n == crashed })
	// The leader alone works the queue until the job runs there. What its worker returns
	// after the crash, a success, must not be recorded.
	ran, cause := make(chan string, 10), make(chan error, 1)
	register := func(n *twice.Node) {
		t.Helper()
		err := jobs.Register(n.Jobs(), jobs.WorkFunc[Chore](func(ctx context.Context, job *jobs.Job[Chore]) error {
			ran <- n.ID()
			if n == crashed {
				<-ctx.Done()
				cause <- context.Cause(ctx)
			}
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
	}
	register(crashed)
	job, err := crashed.Jobs().Enqueue(ctx, Chore{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first := <-ran; first != crashed.ID() {
		t.Fatalf("the job ran on %s; only the leader works its queue yet", first)
	}
	for _, n := range others {
		register(n)
	}

	twicetest.Crash(t, crashed)
	if err := <-cause; !errors.Is(err, jobs.ErrShutdown) {
		t.Fatalf("the crashed node's job was cancelled with %v; want ErrShutdown", err)
	}
	if err := crashed.Close(ctx); err != nil {
		t.Fatalf("Close after Crash: %v", err)
	}
	listed := func() twice.Member {
		t.Helper()
		ms, err := others[0].Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ms, func(m twice.Member) bool { return m.ID == crashed.ID() })
		if i < 0 {
			t.Fatal("the crashed node's membership row is gone: it left the cluster")
		}
		return ms[i]
	}
	testnode.Eventually(t, 20*time.Second, "the crashed node counted dead", func() bool {
		m := listed()
		if m.Alive && m.State == cluster.StateDraining {
			t.Fatal("the crashed node is draining")
		}
		return !m.Alive
	})
	testnode.Eventually(t, 20*time.Second, "the crashed node's job completed elsewhere", func() bool {
		row, err := others[0].Jobs().Get(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if row.State == jobs.Completed && row.Attempt != 2 {
			t.Fatalf("the job completed at attempt %d; want 2: rescued, not recorded nor handed back by the crashed node", row.Attempt)
		}
		return row.State == jobs.Completed
	})
	if second := <-ran; second == crashed.ID() {
		t.Fatalf("the job ran again on the crashed node")
	}
	testnode.Eventually(t, 20*time.Second, "another node leads", func() bool {
		return slices.ContainsFunc(others, func(n *twice.Node) bool {
			l := n.Leader().Lease()
			return l != nil && l.Token() > term.Token()
		})
	})
	if m := listed(); m.Alive || m.Leader {
		t.Fatalf("the crashed node after the others took over: %+v", m)
	}
}

// Crash fails on a node closed already, by Close or by an earlier Crash.
func TestCrashOfAClosedNode(t *testing.T) {
	nodes := twicetest.Open(t, 2, nil)
	twicetest.Crash(t, nodes[0])
	if err := nodes[1].Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		msg := testnode.Failure(t, func(t testing.TB) { twicetest.Crash(t, n) })
		if !strings.Contains(msg, "is closed already") {
			t.Fatalf("Crash of a closed node: %s", msg)
		}
	}
}
