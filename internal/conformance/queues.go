package conformance

import (
	"context"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// queueStats returns the stats of queue, or a zero QueueStats naming it.
func queueStats(t *testing.T, n *twice.Node, queue string) jobs.QueueStats {
	t.Helper()
	st, err := n.Jobs().Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Queue == queue {
			return s
		}
	}
	return jobs.QueueStats{Queue: queue}
}

// Which queues an instance works: its workers' own, those its Config lists once it works at
// all, and the record of both that operators read.
func queuesSuite(t *testing.T, dialect store.Dialect) {
	ctx := context.Background()

	// The README's case: a kind registered on the default queue, a job enqueued to "mail".
	// Listing "mail" in a zero Config's Queues is a plain append, and starts the queue.
	t.Run("ConfiguredQueueRunsWithAWorker", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		cfg := jobsFast()
		cfg.Jobs.Queues = append(cfg.Jobs.Queues, jobs.QueueConfig{Name: "mail", Concurrency: 2})
		n := node(t, db, "svc", cfg)
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
		r, err := n.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Queue: "mail"})
		if err != nil {
			t.Fatal(err)
		}
		waitState(t, n, r.ID, jobs.Completed)
	})

	// An instance that registers no worker only enqueues: the queues its Config lists wait
	// for its first worker, so it takes no job it cannot run.
	t.Run("ConfiguredQueueWaitsForAWorker", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		var cfg twice.Config
		cfg.Jobs = jobsFast().Jobs
		cfg.Jobs.Queues = append(cfg.Jobs.Queues, jobs.QueueConfig{Name: "mail"})
		n := node(t, db, "svc", cfg)
		r, err := n.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Queue: "mail"})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * n.Jobs().Config().Poll) // several polls: nothing may be taken
		if row, err := n.Jobs().Get(ctx, r.ID); err != nil || row.State != jobs.Available || row.Attempt != 0 {
			t.Fatalf("a job of a configured queue was taken by an instance without workers: %+v %v", row, err)
		}
		mustRegister(t, n, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
		waitState(t, n, r.ID, jobs.Completed)
	})

	t.Run("InvalidQueueConfig", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		s := open(t, db, nil)
		for _, qs := range [][]jobs.QueueConfig{
			{{Name: ""}},
			{{Name: "mail"}, {Name: "mail"}},
			{{Name: "mail", Concurrency: -1}},
		} {
			if _, err := jobs.New(s, jobs.Config{Service: "svc", Queues: qs}); err == nil {
				t.Errorf("Queues %+v accepted", qs)
			}
		}
	})

	// Stats say how many live instances work each queue, so a queue with jobs and no
	// worker shows; an instance that stops, or whose member row is gone, no longer counts.
	t.Run("StatsShowQueuesNobodyWorks", func(t *testing.T) {
		t.Parallel()
		db := testdb.New(t, dialect)
		a, b := node(t, db, "svc", jobsFast()), node(t, db, "svc", jobsFast())
		mustRegister(t, a, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
		mustRegister(t, b, func(ctx context.Context, job *jobs.Job[noop]) error { return nil })
		if _, err := a.Jobs().Enqueue(ctx, noop{}, &jobs.Opts{Queue: "orphan"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "both instances recorded as working the default queue", func() bool {
			return queueStats(t, a, jobs.DefaultQueue).Workers == 2
		})
		if st := queueStats(t, a, "orphan"); st.Workers != 0 || st.Available != 1 {
			t.Fatalf("a queue nobody works: %+v", st)
		}
		// A record left by an instance that is not alive (killed) is not counted, and is
		// forgotten once the cluster has reaped the instance.
		if _, err := a.Store().Exec(ctx, `INSERT INTO twice_queue_workers (service, queue, instance, started_at)
			VALUES ($1, $2, $3, $4)`, "svc", "orphan", "killed", a.Store().Dialect().TimeArg(time.Now())); err != nil {
			t.Fatal(err)
		}
		if st := queueStats(t, a, "orphan"); st.Workers != 0 {
			t.Fatalf("a dead instance counted as a worker: %+v", st)
		}
		if _, err := a.Jobs().Prune(ctx); err != nil {
			t.Fatal(err)
		}
		var left int
		if err := a.Store().QueryRow(ctx, `SELECT count(*) FROM twice_queue_workers WHERE instance = 'killed'`).Scan(&left); err != nil || left != 0 {
			t.Fatalf("the record of a reaped instance was kept: %d %v", left, err)
		}
		if err := b.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if st := queueStats(t, a, jobs.DefaultQueue); st.Workers != 1 {
			t.Fatalf("an instance that stopped still counts: %+v", st)
		}
	})
}
