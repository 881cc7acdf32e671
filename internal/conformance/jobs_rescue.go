package conformance

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
)

// exerciseJobsRescue checks what becomes of jobs when their instance dies, stalls or
// shuts down: a dead instance claims nothing, its jobs are rescued by its liveness in
// database time and its late completions refused, a slow job on a live instance runs once,
// and a graceful shutdown hands its jobs back.
func exerciseJobsRescue(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"DeadInstanceClaimsNothing", jobsDeadInstanceClaimsNothing},
		{"RescueByLivenessAndRefusedCompletion", jobsRescueByLivenessAndRefusedCompletion},
		{"RescueOfTheLastAttemptDiscards", jobsRescueOfTheLastAttemptDiscards},
		{"SlowJobOnLiveInstanceRunsOnce", jobsSlowJobOnLiveInstanceRunsOnce},
		{"GracefulShutdownHandsBack", jobsGracefulShutdownHandsBack},
		{"AbandonLeavesJobsToRescue", jobsAbandonLeavesJobsToRescue},
	})
}

func jobsDeadInstanceClaimsNothing(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	// A client whose instance the cluster counts dead (here: never registered; in life,
	// a process resuming from a pause past its dead-after) must not claim jobs: the next
	// rescue would hand them to another instance while it runs them.
	ghost, err := jobs.New(block.Deps{Store: n.Store(), Service: "svc", Instance: "ghost", Logger: testdb.Logger(t)},
		jobs.Config{Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Int32
	if err := jobs.Register(ghost, jobs.WorkFunc[noop](func(ctx context.Context, job *jobs.Job[noop]) error {
		ran.Add(1)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if err := ghost.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer ghost.Close(ctx)
	r, err := n.Jobs().Enqueue(ctx, noop{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * ghost.Config().Poll)
	if row, err := n.Jobs().Get(ctx, r.ID); err != nil || row.State != jobs.Available || row.Attempt != 0 || ran.Load() != 0 {
		t.Fatalf("a dead instance claimed a job: %+v %v, ran %d", row, err, ran.Load())
	}
	// Once it heartbeats, it works.
	member := ghostMember(t, n)
	if err := member.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	row := waitState(t, n, r.ID, jobs.Completed)
	if row.Attempt != 1 || ran.Load() != 1 {
		t.Fatalf("after registering: attempt %d, ran %d", row.Attempt, ran.Load())
	}
}

func jobsRescueByLivenessAndRefusedCompletion(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	// The ghost's job is rescued, and its late completion must be refused.
	release := make(chan struct{})
	ghost, silent := ghostWorker(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
		<-release
		// A result that arrives after the rescue and the second run: accepted, it would
		// put the completed job back up for a retry.
		return errors.New("late failure from a rescued attempt")
	})
	r, err := n.Jobs().Enqueue(ctx, blocking{ID: "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-silent
	var second atomic.Int32
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
		second.Add(1)
		return nil
	})
	row := waitState(t, n, r.ID, jobs.Completed)
	if row.Attempt != 2 || second.Load() != 1 {
		t.Fatalf("rescued job: attempt %d, second runs %d", row.Attempt, second.Load())
	}
	close(release)
	if err := ghost.Close(ctx); err != nil {
		t.Fatal(err)
	}
	row, err = n.Jobs().Get(ctx, r.ID)
	if err != nil || row.State != jobs.Completed || row.Attempt != 2 || row.Owner != "" {
		t.Fatalf("after the ghost's late completion: %+v %v", row, err)
	}
}

func jobsRescueOfTheLastAttemptDiscards(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	// The attempt its instance died in counts: a job rescued from its last attempt is
	// discarded, not run again, and Retry grants it one more.
	release := make(chan struct{})
	ghost, silent := ghostWorker(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
		<-release
		return nil
	})
	defer func() {
		close(release)
		if err := ghost.Close(ctx); err != nil {
			t.Error(err)
		}
	}()
	r, err := n.Jobs().Enqueue(ctx, blocking{ID: "last"}, &jobs.Opts{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	<-silent
	// A worker here would run the job again if the rescue made it available.
	var runs atomic.Int32
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
		runs.Add(1)
		return nil
	})
	row := waitState(t, n, r.ID, jobs.Discarded)
	if row.Attempt != 1 || !strings.Contains(row.LastError, "stopped while running attempt 1") || row.FinishedAt.IsZero() || runs.Load() != 0 {
		t.Fatalf("rescued from its last attempt: %+v, runs elsewhere %d", row, runs.Load())
	}
	if err := n.Jobs().Retry(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	row = waitState(t, n, r.ID, jobs.Completed)
	if row.Attempt != 2 || runs.Load() != 1 {
		t.Fatalf("after Retry: attempt %d, runs %d", row.Attempt, runs.Load())
	}
}

func jobsSlowJobOnLiveInstanceRunsOnce(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	// A dead-after short enough to pass three times while the job runs; a stall of the
	// heartbeats past it (an overloaded machine) excuses a second run, and is logged.
	cfg := jobsFast()
	cfg.DeadAfter = time.Second
	a, b := backend.node(t, db, "svc", cfg), backend.node(t, db, "svc", cfg)
	var stalls atomic.Int32
	for _, n := range []*twice.Node{a, b} {
		n.OnHeartbeatStall(func(from, to time.Time) { stalls.Add(1) })
	}
	var runs atomic.Int32
	release := make(chan struct{})
	for _, n := range []*twice.Node{a, b} {
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
			runs.Add(1)
			<-release
			return nil
		})
	}
	r, err := a.Jobs().Enqueue(ctx, blocking{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "job started", func() bool { return runs.Load() == 1 })
	// Three dead-after periods and dozens of rescue passes later, it still runs once.
	time.Sleep(3 * cfg.DeadAfter)
	close(release)
	row := waitState(t, a, r.ID, jobs.Completed)
	if stalls.Load() > 0 {
		t.Logf("heartbeats stalled past dead-after %d times: the job may run twice (ran %d times)", stalls.Load(), runs.Load())
	} else if runs.Load() != 1 || row.Attempt != 1 {
		t.Errorf("slow job ran %d times, attempt %d", runs.Load(), row.Attempt)
	}
}

func jobsGracefulShutdownHandsBack(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "svc", jobsFast())
	started := make(chan int64, 1)
	mustRegister(t, a, func(ctx context.Context, job *jobs.Job[blocking]) error {
		started <- job.ID
		<-ctx.Done() // runs until the shutdown gives up on it
		return context.Cause(ctx)
	})
	r, err := a.Jobs().Enqueue(ctx, blocking{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b := backend.node(t, db, "svc", jobsFast())
	row, err := b.Jobs().Get(ctx, r.ID)
	if err != nil || row.State != jobs.Available || row.Attempt != 0 || !strings.Contains(row.LastError, "handed back") {
		t.Fatalf("after a graceful shutdown: %+v %v", row, err)
	}
	mustRegister(t, b, func(ctx context.Context, job *jobs.Job[blocking]) error { return nil })
	waitState(t, b, r.ID, jobs.Completed)
}

func jobsAbandonLeavesJobsToRescue(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	// A client abandoned as in a crash cancels its job and drops what it returns, here a
	// success that, recorded, would complete the job; nothing is handed back. The job is
	// rescued once its instance counts dead, its attempt counted, and runs again.
	cause := make(chan error, 1)
	ghost, silent := ghostWorker(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error {
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil
	})
	r, err := n.Jobs().Enqueue(ctx, blocking{ID: "crash"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-silent
	ghost.Abandon(ctx)
	if err := <-cause; !errors.Is(err, jobs.ErrShutdown) {
		t.Fatalf("the abandoned job's context ended with %v; want ErrShutdown", err)
	}
	row, err := n.Jobs().Get(ctx, r.ID)
	if err != nil || row.State == jobs.Completed || row.Attempt != 1 || strings.Contains(row.LastError, "handed back") {
		t.Fatalf("after Abandon: %+v %v; want its attempt left running (or rescued)", row, err)
	}
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[blocking]) error { return nil })
	row = waitState(t, n, r.ID, jobs.Completed)
	if row.Attempt != 2 || !strings.Contains(row.LastError, "stopped while running attempt 1") {
		t.Fatalf("the abandoned job after its rescue: %+v", row)
	}
	if err := ghost.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// ghostMember is a membership for the instance "ghost" of n's service that beats only when
// the test calls Beat (the first call registers it).
// ghostWorker starts the job client of an instance "ghost" that works the default queue's
// blocking jobs with work, one at a time. It heartbeats until its first job starts, then
// stops, like a process paused past its dead-after period with a job running; silent closes
// when it has stopped. The caller stops the client.
func ghostWorker(t *testing.T, n *twice.Node, work func(ctx context.Context, job *jobs.Job[blocking]) error) (*jobs.Client, <-chan struct{}) {
	t.Helper()
	ctx := context.Background()
	ghost, err := jobs.New(block.Deps{Store: n.Store(), Service: n.Service(), Instance: "ghost", Logger: testdb.Logger(t)},
		jobs.Config{Poll: 20 * time.Millisecond, Queues: []jobs.QueueConfig{{Name: jobs.DefaultQueue, Concurrency: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var once sync.Once
	if err := jobs.Register(ghost, jobs.WorkFunc[blocking](func(ctx context.Context, job *jobs.Job[blocking]) error {
		once.Do(func() { close(started) })
		return work(ctx, job)
	})); err != nil {
		t.Fatal(err)
	}
	member := ghostMember(t, n)
	silent := make(chan struct{})
	go func() {
		defer close(silent)
		for {
			if err := member.Beat(ctx); err != nil {
				t.Error(err)
			}
			select {
			case <-started:
				return
			case <-time.After(member.Config().HeartbeatInterval):
			}
		}
	}()
	if err := ghost.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return ghost, silent
}

func ghostMember(t *testing.T, n *twice.Node) *cluster.Membership {
	t.Helper()
	m, err := cluster.NewMembership(n.Store(), cluster.Config{Service: n.Service(), ID: "ghost",
		HeartbeatInterval: 100 * time.Millisecond, DeadAfter: 500 * time.Millisecond, Logger: testdb.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}
