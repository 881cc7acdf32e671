package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

type riverArgs struct {
	Sent int64 `json:"sent,omitempty"`
}

func (riverArgs) Kind() string { return "noop" }

type riverWorker struct {
	river.WorkerDefaults[riverArgs]
	fn func(job *river.Job[riverArgs])
}

func (w *riverWorker) Work(_ context.Context, job *river.Job[riverArgs]) error {
	w.fn(job)
	return nil
}

type riverSystem struct {
	p      params
	config string
	desc   string
	tune   func(*river.Config)
}

func riverDefaults(p params) system {
	return &riverSystem{p: p, config: "defaults", desc: "MaxWorkers 100, other settings River's defaults", tune: func(*river.Config) {}}
}

func riverTuned(p params) system {
	return &riverSystem{p: p, config: "tuned", desc: "MaxWorkers 1000, FetchCooldown 1ms, FetchPollInterval 10ms", tune: func(c *river.Config) {
		c.Queues[river.QueueDefault] = river.QueueConfig{MaxWorkers: 1000}
		c.FetchCooldown = time.Millisecond
		c.FetchPollInterval = 10 * time.Millisecond
	}}
}

func (r *riverSystem) name() (string, string, string) { return "river", r.config, r.desc }

func (r *riverSystem) client(ctx context.Context, schema string, fn func(job *river.Job[riverArgs])) (*river.Client[pgx.Tx], func(), error) {
	pl, err := pool(ctx, r.p.dsn, schema, 0)
	if err != nil {
		return nil, nil, err
	}
	drv := riverpgxv5.New(pl)
	// River is told its schema, as well as the pool's search_path, so that its statements
	// name it, as twice's do: --statements tells a run's statements by it.
	m, err := rivermigrate.New(drv, &rivermigrate.Config{Logger: slog.New(slog.DiscardHandler), Schema: schema})
	if err != nil {
		pl.Close()
		return nil, nil, err
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		pl.Close()
		return nil, nil, err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &riverWorker{fn: fn})
	cfg := &river.Config{Queues: map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 100}}, Workers: workers,
		Logger: slog.New(slog.DiscardHandler), Schema: schema}
	r.tune(cfg)
	c, err := river.NewClient(drv, cfg)
	if err != nil {
		pl.Close()
		return nil, nil, err
	}
	return c, pl.Close, nil
}

func insertRiver(ctx context.Context, c *river.Client[pgx.Tx], n int) error {
	const batch = 5000
	params := make([]river.InsertManyParams, 0, batch)
	for from := 0; from < n; from += batch {
		params = params[:0]
		for range min(batch, n-from) {
			params = append(params, river.InsertManyParams{Args: riverArgs{}})
		}
		if _, err := c.InsertManyFast(ctx, params); err != nil {
			return err
		}
	}
	return nil
}

func (r *riverSystem) work(ctx context.Context, schema string, n int, w *workMeter) (time.Duration, error) {
	c, done, err := r.client(ctx, schema, func(*river.Job[riverArgs]) { w.worked.Add(1) })
	if err != nil {
		return 0, err
	}
	defer done()
	if err := insertRiver(ctx, c, n); err != nil {
		return 0, err
	}
	w.start()
	start := time.Now()
	if err := c.Start(ctx); err != nil {
		return 0, err
	}
	defer c.Stop(context.Background())
	err = waitWorked(ctx, &w.worked, n, func(ctx context.Context) (int, error) {
		var k int
		err := c.Driver().GetExecutor().QueryRow(ctx, "SELECT count(*) FROM river_job WHERE state = 'completed'").Scan(&k)
		return k, err
	})
	return time.Since(start), err
}

func (r *riverSystem) insert(ctx context.Context, schema string, n int) (time.Duration, error) {
	c, done, err := r.client(ctx, schema, func(*river.Job[riverArgs]) {})
	if err != nil {
		return 0, err
	}
	defer done()
	start := time.Now()
	err = insertRiver(ctx, c, n)
	return time.Since(start), err
}

func (r *riverSystem) latency(ctx context.Context, schema string, n, rate int) ([]timed, error) {
	var rec latencyRecorder
	c, done, err := r.client(ctx, schema, func(job *river.Job[riverArgs]) { rec.add(job.Args.Sent) })
	if err != nil {
		return nil, err
	}
	defer done()
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	defer c.Stop(context.Background())
	err = pace(ctx, n, rate, func(int) error {
		sent := time.Now().UnixNano()
		if _, err := c.Insert(ctx, riverArgs{Sent: sent}, nil); err != nil {
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
