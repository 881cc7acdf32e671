package conformance

import (
	"context"
	"errors"
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
		{"GlobalLimitHoldsForEveryInstance", jobsGlobalLimitHoldsForEveryInstance},
		{"SetGlobalLimit", jobsSetGlobalLimit},
		{"ConfiguredLimitHoldsWhileNoneIsStored", jobsConfiguredLimitWhileNoneStored},
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
	db := testdb.New(t, backend.Dialect)
	nodes := queueNodes(t, backend, db, 3, func(_ int, q *jobs.QueueConfig) { q.Name, q.Concurrency, q.GlobalLimit = "limited", 5, 2 })
	// A worker counts itself before its completion is recorded, so the limit holds for
	// the rows; the in-process count can briefly see one finishing and one starting.
	if worst := runLimited(t, nodes, 40, func() {}); worst > 2 {
		t.Errorf("%d jobs of a queue limited to 2 ran at once", worst)
	}
}

// A queue's limit is the cluster's: instances configured without it keep it too, so three
// instances of which one declares a limit of 2 never run more than 2 at once. Before the
// limit was stored with the queue, the other two ran up to their concurrency each.
func jobsGlobalLimitHoldsForEveryInstance(t *testing.T, backend Backend) {
	db := testdb.New(t, backend.Dialect)
	nodes := queueNodes(t, backend, db, 3, func(i int, q *jobs.QueueConfig) {
		q.Name, q.Concurrency = "limited", 5
		if i == 0 {
			q.GlobalLimit = 2
		}
	})
	worst := runLimited(t, nodes, 40, func() {
		testnode.Eventually(t, 10*time.Second, "the limit stored with the queue", func() bool { return storedQueue(t, nodes[1], "limited").GlobalLimit == 2 })
	})
	if worst > 2 {
		t.Errorf("%d jobs of a queue limited to 2 ran at once", worst)
	}
}

// SetGlobalLimit caps a queue that no instance was configured to cap, and the instances
// that fetched it without a limit learn of it.
func jobsSetGlobalLimit(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	nodes := queueNodes(t, backend, db, 3, func(_ int, q *jobs.QueueConfig) { q.Name, q.Concurrency = "limited", 5 })
	if err := nodes[2].Jobs().SetGlobalLimit(ctx, "limited", -1); !errors.Is(err, jobs.ErrInvalid) {
		t.Fatalf("a negative limit: %v; want ErrInvalid", err)
	}
	worst := runLimited(t, nodes, 30, func() {
		if err := nodes[2].Jobs().SetGlobalLimit(ctx, "limited", 1); err != nil {
			t.Fatal(err)
		}
	})
	if worst > 1 {
		t.Errorf("%d jobs of a queue limited to 1 ran at once", worst)
	}
	if err := nodes[2].Jobs().SetGlobalLimit(ctx, "limited", 0); err != nil {
		t.Fatal(err)
	}
	if got := storedQueue(t, nodes[0], "limited").GlobalLimit; got != 0 {
		t.Fatalf("limit %d after removing it", got)
	}
}

// An instance configured with a limit keeps it while the queue's row stores none (before
// it has written its own, or after SetGlobalLimit removed it): it counts the running jobs
// under the turn as it does for a stored limit.
func jobsConfiguredLimitWhileNoneStored(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	nodes := queueNodes(t, backend, db, 2, func(_ int, q *jobs.QueueConfig) { q.Name, q.Concurrency, q.GlobalLimit = "limited", 5, 2 })
	worst := runLimited(t, nodes, 30, func() {
		testnode.Eventually(t, 10*time.Second, "the configured limit stored", func() bool {
			return storedQueue(t, nodes[0], "limited").GlobalLimit == 2
		})
		if err := nodes[0].Jobs().SetGlobalLimit(ctx, "limited", 0); err != nil {
			t.Fatal(err)
		}
	})
	if worst > 2 {
		t.Errorf("%d jobs of a queue its instances limit to 2 ran at once, with no limit stored", worst)
	}
}

// runLimited registers a worker of limited on every node, runs before, enqueues n jobs and
// waits for them, and returns the most that ran at once.
func runLimited(t *testing.T, nodes []*twice.Node, n int32, before func()) int32 {
	var inside, worst, done atomic.Int32
	for _, node := range nodes {
		mustRegister(t, node, func(ctx context.Context, job *jobs.Job[limited]) error {
			raiseTo(&worst, inside.Add(1))
			time.Sleep(5 * time.Millisecond)
			inside.Add(-1)
			done.Add(1)
			return nil
		})
	}
	before()
	params := make([]jobs.Params, n)
	for i := range params {
		params[i] = jobs.Params{Args: limited{}}
	}
	if _, err := nodes[0].Jobs().EnqueueMany(context.Background(), params); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 60*time.Second, "every limited job ran", func() bool { return done.Load() == n })
	return worst.Load()
}

// queueNodes opens n nodes of service svc on db with the job tests' config and one queue,
// which set configures for node i.
func queueNodes(t *testing.T, backend Backend, db testdb.DB, n int, set func(i int, q *jobs.QueueConfig)) []*twice.Node {
	var nodes []*twice.Node
	for i := range n {
		cfg := jobsFast()
		var q jobs.QueueConfig
		set(i, &q)
		cfg.Jobs.Queues = []jobs.QueueConfig{q}
		nodes = append(nodes, backend.node(t, db, "svc", cfg))
	}
	return nodes
}

// storedQueue returns the Stats of queue as n reads them; the zero QueueStats if it has none.
func storedQueue(t *testing.T, n *twice.Node, queue string) jobs.QueueStats {
	t.Helper()
	stats, err := n.Jobs().Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stats {
		if s.Queue == queue {
			return s
		}
	}
	return jobs.QueueStats{}
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
