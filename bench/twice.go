package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/jobs"
)

// noopArgs is the job of every run: it does nothing, so the queue itself is measured.
type noopArgs struct {
	Sent int64 `json:"sent,omitempty"`
}

func (noopArgs) Kind() string { return "noop" }

type twiceSystem struct {
	p      params
	config string
	desc   string
	jobs   jobs.Config
}

func twiceDefaults(p params) system {
	return &twiceSystem{p: p, config: "defaults", desc: "twice.Config{} (concurrency 1000 per queue)"}
}

func twiceTuned(p params) system {
	return &twiceSystem{p: p, config: "tuned", desc: "concurrency 2000, complete batch 2000",
		jobs: jobs.Config{Queues: []jobs.QueueConfig{{Name: jobs.DefaultQueue, Concurrency: 2000}}, CompleteBatch: 2000}}
}

func (t *twiceSystem) name() (string, string, string) { return "twice", t.config, t.desc }

func (t *twiceSystem) open(ctx context.Context, schema string) (*twice.Node, error) {
	return twice.Open(ctx, twice.Config{DSN: t.p.dsn, Schema: schema, Name: "bench", Jobs: t.jobs,
		ClusterSecret: t.p.secret, Logger: slog.New(slog.DiscardHandler)})
}

func insertTwice(ctx context.Context, c *jobs.Client, n int) error {
	const batch = 5000
	params := make([]jobs.Params, 0, batch)
	for from := 0; from < n; from += batch {
		params = params[:0]
		for range min(batch, n-from) {
			params = append(params, jobs.Params{Args: noopArgs{}})
		}
		if _, err := c.EnqueueMany(ctx, params); err != nil {
			return err
		}
	}
	return nil
}

func (t *twiceSystem) work(ctx context.Context, schema string, n int, w *workMeter) (time.Duration, error) {
	node, err := t.open(ctx, schema)
	if err != nil {
		return 0, err
	}
	defer node.Close(ctx)
	if err := insertTwice(ctx, node.Jobs(), n); err != nil {
		return 0, err
	}
	w.start()
	start := time.Now()
	// Registering the worker starts the queue.
	if err := jobs.Register(node.Jobs(), jobs.WorkFunc[noopArgs](func(context.Context, *jobs.Job[noopArgs]) error {
		w.worked.Add(1)
		return nil
	})); err != nil {
		return 0, err
	}
	err = waitWorked(ctx, &w.worked, n, func(ctx context.Context) (int, error) {
		var k int
		err := node.Store().Pool().QueryRow(ctx, "SELECT count(*) FROM twice_jobs WHERE state = 4").Scan(&k)
		return k, err
	})
	return time.Since(start), err
}

func (t *twiceSystem) insert(ctx context.Context, schema string, n int) (time.Duration, error) {
	node, err := t.open(ctx, schema)
	if err != nil {
		return 0, err
	}
	defer node.Close(ctx)
	start := time.Now()
	err = insertTwice(ctx, node.Jobs(), n)
	return time.Since(start), err
}

func (t *twiceSystem) latency(ctx context.Context, schema string, n, rate int) ([]timed, error) {
	node, err := t.open(ctx, schema)
	if err != nil {
		return nil, err
	}
	defer node.Close(ctx)
	var rec latencyRecorder
	if err := jobs.Register(node.Jobs(), jobs.WorkFunc[noopArgs](func(_ context.Context, job *jobs.Job[noopArgs]) error {
		rec.add(job.Args.Sent)
		return nil
	})); err != nil {
		return nil, err
	}
	// With --tx-latency every job is enqueued inside a transaction of the caller's, the way
	// a service enqueues with its business write: its wake-up is a hint sent before the
	// commit, and the producer looks again shortly if it finds nothing yet.
	err = pace(ctx, n, rate, func(i int) error {
		sent := time.Now().UnixNano()
		if !t.p.txLatency {
			if _, err := node.Jobs().Enqueue(ctx, noopArgs{Sent: sent}, nil); err != nil {
				return err
			}
			rec.sent(sent)
			return nil
		}
		tx, err := node.Store().Pool().Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if _, err := node.Jobs().EnqueueTx(ctx, tx, noopArgs{Sent: sent}, nil); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		rec.sent(sent)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := waitCount(ctx, n, func(context.Context) (int, error) { return rec.n(), nil }); err != nil {
		return nil, err
	}
	return rec.timed(), nil
}
