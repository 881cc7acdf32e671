package conformance

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// exerciseJobsFlow checks which jobs may run and when: unique jobs, one at a time per key,
// a global limit, paused queues and priorities.
func exerciseJobsFlow(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"Unique", jobsUnique},
		{"PerKeySerialisation", jobsPerKeySerialisation},
		{"GlobalLimit", jobsGlobalLimit},
		{"PauseAndResume", jobsPauseAndResume},
		{"PriorityOrder", jobsPriorityOrder},
	})
}

func jobsUnique(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", jobsFast())
	u := &jobs.Opts{Unique: &jobs.Unique{}, Delay: time.Hour}
	first, err := n.Jobs().Enqueue(ctx, noop{N: 7}, u)
	if err != nil {
		t.Fatal(err)
	}
	again, err := n.Jobs().Enqueue(ctx, noop{N: 7}, u)
	if err != nil {
		t.Fatal(err)
	}
	other, err := n.Jobs().Enqueue(ctx, noop{N: 8}, u)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.ID != first.ID || other.Duplicate || other.ID == first.ID {
		t.Fatalf("first %+v, again %+v, other %+v", first, again, other)
	}
	// A cancelled job no longer blocks its key (the default states exclude cancelled).
	if err := n.Jobs().Cancel(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	third, err := n.Jobs().Enqueue(ctx, noop{N: 7}, u)
	if err != nil || third.Duplicate {
		t.Fatalf("after cancel: %+v %v", third, err)
	}
	// An explicit key in a window, inside a transaction.
	byKey := &jobs.Opts{Unique: &jobs.Unique{Key: "user-1", Window: time.Hour}, Delay: time.Hour}
	err = n.Store().InTx(ctx, func(tx store.Tx) error {
		rs, err := n.Jobs().EnqueueManyTx(ctx, tx, []jobs.Params{{Args: noop{N: 1}, Opts: byKey}, {Args: noop{N: 2}, Opts: byKey}})
		if err != nil {
			return err
		}
		if rs[0].Duplicate || !rs[1].Duplicate || rs[0].ID != rs[1].ID {
			return fmt.Errorf("keyed unique in one transaction: %+v", rs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func jobsPerKeySerialisation(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	nodes := []*twice.Node{backend.node(t, db, "svc", jobsFast()), backend.node(t, db, "svc", jobsFast()), backend.node(t, db, "svc", jobsFast())}
	var mu sync.Mutex
	inside := map[string]int{}
	var worst atomic.Int32
	var done atomic.Int32
	for _, n := range nodes {
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[keyed]) error {
			mu.Lock()
			inside[job.Args.Key]++
			worst.Store(max(worst.Load(), int32(inside[job.Args.Key])))
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
			mu.Lock()
			inside[job.Args.Key]--
			mu.Unlock()
			done.Add(1)
			return nil
		})
	}
	var params []jobs.Params
	for i := range 60 {
		k := fmt.Sprintf("k%d", i%3)
		params = append(params, jobs.Params{Args: keyed{Key: k}, Opts: &jobs.Opts{Key: k}})
	}
	if _, err := nodes[0].Jobs().EnqueueMany(ctx, params); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 60*time.Second, "every keyed job ran", func() bool { return done.Load() == 60 })
	if w := worst.Load(); w != 1 {
		t.Errorf("%d jobs of one key ran at once", w)
	}
}

func jobsGlobalLimit(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	var nodes []*twice.Node
	for range 3 {
		cfg := jobsFast()
		cfg.Jobs.Queues = []jobs.QueueConfig{{Name: "limited", Concurrency: 5, GlobalLimit: 2}}
		nodes = append(nodes, backend.node(t, db, "svc", cfg))
	}
	var inside, worst, done atomic.Int32
	for _, n := range nodes {
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[limited]) error {
			raiseTo(&worst, inside.Add(1))
			time.Sleep(5 * time.Millisecond)
			inside.Add(-1)
			done.Add(1)
			return nil
		})
	}
	params := make([]jobs.Params, 40)
	for i := range params {
		params[i] = jobs.Params{Args: limited{}}
	}
	if _, err := nodes[0].Jobs().EnqueueMany(ctx, params); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 60*time.Second, "every limited job ran", func() bool { return done.Load() == 40 })
	// A worker counts itself before its completion is recorded, so the limit holds for
	// the rows; the in-process count can briefly see one finishing and one starting.
	if w := worst.Load(); w > 2 {
		t.Errorf("%d jobs of a queue limited to 2 ran at once", w)
	}
}

func jobsPauseAndResume(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a, b := backend.node(t, db, "svc", jobsFast()), backend.node(t, db, "svc", jobsFast())
	var ran atomic.Int32
	mustRegister(t, b, func(ctx context.Context, job *jobs.Job[noop]) error {
		ran.Add(1)
		return nil
	})
	if err := a.Jobs().PauseQueue(ctx, jobs.DefaultQueue); err != nil {
		t.Fatal(err)
	}
	r, err := a.Jobs().Enqueue(ctx, noop{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * a.Jobs().Config().Poll) // several polls and the wake-up: nothing may start
	if ran.Load() != 0 {
		t.Fatal("a job of a paused queue ran")
	}
	st, err := a.Jobs().Stats(ctx)
	if err != nil || len(st) != 1 || !st[0].Paused || st[0].Available != 1 {
		t.Fatalf("stats while paused: %+v %v", st, err)
	}
	if err := a.Jobs().ResumeQueue(ctx, jobs.DefaultQueue); err != nil {
		t.Fatal(err)
	}
	waitState(t, a, r.ID, jobs.Completed)
}

func jobsPriorityOrder(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	cfg := jobsFast()
	cfg.Jobs.Queues = []jobs.QueueConfig{{Name: jobs.DefaultQueue, Concurrency: 1}}
	n := backend.node(t, db, "svc", cfg)
	params := []jobs.Params{{Args: noop{N: 3}, Opts: &jobs.Opts{Priority: 3}}, {Args: noop{N: 1}, Opts: &jobs.Opts{Priority: 1}},
		{Args: noop{N: 2}, Opts: &jobs.Opts{Priority: 2}}}
	if _, err := n.Jobs().EnqueueMany(ctx, params); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []int
	mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, job.Args.N)
		return nil
	})
	testnode.Eventually(t, 20*time.Second, "three jobs", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 3
	})
	if fmt.Sprint(order) != "[1 2 3]" {
		t.Errorf("ran in order %v", order)
	}
}
