package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// benchIdle runs `twice bench idle`: what instances of a service cost the database and the
// machine while they have nothing to do.
func benchIdle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench idle", flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	busURL := fs.String("bus", "", "signal over NATS (nats://host:port) instead of the store-native bus")
	instances := fs.Int("instances", 10, "idle instances to run, each a process of its own")
	duration := fs.Duration("duration", 30*time.Second, "how long to measure")
	warmup := fs.Duration("warmup", idleWarmup, "how long the instances idle before the measurement starts")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *instances < 1 || *instances > 200 {
		return fmt.Errorf("%w: bench idle: --instances must be 1 to 200", errUsage)
	}
	if *duration < 2*time.Second || *duration > time.Hour {
		return fmt.Errorf("%w: bench idle: --duration must be 2s to 1h", errUsage)
	}
	if *warmup < 0 || *warmup > 10*time.Minute {
		return fmt.Errorf("%w: bench idle: --warmup must be 0 to 10m", errUsage)
	}
	e, err := newBenchEnv(ctx, &db, "idle", *asJSON, stdout, stderr)
	if err != nil {
		return err
	}
	defer e.close()
	s, dsn, service, spawn, progress := e.store, e.dsn, e.service, e.spawn, e.progress
	fmt.Fprintf(progress, "bench idle: %d instances of %s on %s over %s; each works jobs, has an hourly schedule, a shared group and a setting\n",
		*instances, service, s, busName(*busURL))
	res, err := measureIdle(ctx, spawn, s, instance.Options{DSN: dsn, Schema: db.schema, Service: service, Bus: *busURL},
		idleParams{Instances: *instances, Duration: *duration, Warmup: *warmup, Progress: progress})
	if err != nil {
		return err
	}
	res.Bus = "store"
	if *busURL != "" {
		res.Bus = "nats"
	}
	if *asJSON {
		return printJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "idle on %s over the %s bus, %d instances for %.0f s, per instance: %.1f statements/s, %.2f ms CPU per second",
		res.Store, res.Bus, res.Instances, res.DurationS, res.StatementsPerSec, res.CPUMSPerSec)
	if res.TransactionsPerSec != nil {
		fmt.Fprintf(stdout, ", %.1f transactions/s and %.1f connections (PostgreSQL's counts, with whatever else uses the database)",
			*res.TransactionsPerSec, *res.Connections)
	}
	fmt.Fprintln(stdout)
	return nil
}

// idleParams configure [measureIdle].
type idleParams struct {
	Instances int
	// Duration is the measured window; Warmup is waited before it starts.
	Duration, Warmup time.Duration
	// Progress receives a line per phase; nil discards them.
	Progress io.Writer
}

// idleResult is what [measureIdle] measured. Figures are per instance: the mean of the
// instances (statements, CPU) or the total divided by their number (PostgreSQL's counts).
type idleResult struct {
	Store     string  `json:"store"`
	Bus       string  `json:"bus"`
	Instances int     `json:"instances"`
	DurationS float64 `json:"duration_s"`
	// StatementsPerSec is what each node ran through its store, as its Config.Observer
	// counts them (the SQLite bus's look at the file is not a statement of the store).
	StatementsPerSec float64 `json:"statements_per_sec_per_instance"`
	// CPUMSPerSec is each instance process's user and system CPU, in ms per second.
	CPUMSPerSec float64 `json:"cpu_ms_per_sec_per_instance"`
	// TransactionsPerSec and Connections are PostgreSQL's own counts for the database
	// (pg_stat_database, pg_stat_activity), less what was there before the instances
	// started, divided by the instances; absent on SQLite.
	TransactionsPerSec *float64    `json:"transactions_per_sec_per_instance,omitempty"`
	Connections        *float64    `json:"connections_per_instance,omitempty"`
	PerInstance        []idleCount `json:"per_instance"`
}

type idleCount struct {
	ID               string  `json:"id"`
	StatementsPerSec float64 `json:"statements_per_sec"`
	CPUMSPerSec      float64 `json:"cpu_ms_per_sec"`
}

// idleWarmup is how long the instances idle before the measurement starts by default. An
// idle PostgreSQL backend reports its transaction counts up to 10 seconds late (the
// statistics' idle flush interval, PGSTAT_IDLE_INTERVAL): a shorter warm-up counts the
// instances' start (migrations, first reads) in the window. Measured: 10 idle instances,
// 3.2 transactions/s each after 5 s, 1.6 after 20 s, with the same statements.
const idleWarmup = 15 * time.Second

// pgCounts are PostgreSQL's counts for the current database at one moment.
type pgCounts struct {
	xacts, conns int64
}

func readPGCounts(ctx context.Context, s *store.Store) (pgCounts, error) {
	var c pgCounts
	err := s.QueryRow(ctx, `SELECT
		(SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()),
		(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid())`).
		Scan(&c.xacts, &c.conns)
	return c, err
}

// measureIdle starts p.Instances idle instances, lets them settle for p.Warmup, then
// measures over p.Duration what they cost: from each instance's own reports (statements,
// CPU) and, on PostgreSQL, from the server's statistics.
func measureIdle(ctx context.Context, spawn instance.Spawner, s *store.Store, opts instance.Options, p idleParams) (idleResult, error) {
	if p.Progress == nil {
		p.Progress = io.Discard
	}
	res := idleResult{Store: string(s.Dialect()), Instances: p.Instances}
	pg := s.Dialect() == store.Postgres
	var before pgCounts
	if pg {
		var err error
		if before, err = readPGCounts(ctx, s); err != nil {
			return res, fmt.Errorf("bench idle: reading PostgreSQL's statistics: %w", err)
		}
	}
	opts.Workloads = []instance.Workload{instance.Idle{Report: time.Second}}
	g := instance.NewGroup(spawn, opts, nil)
	defer g.Stop(30 * time.Second)
	if err := startAll(ctx, g, p.Instances); err != nil {
		return res, err
	}
	fmt.Fprintf(p.Progress, "bench idle: %d instances ready; idling %s, then measuring for %s\n", p.Instances, p.Warmup, p.Duration)
	if !loop.Sleep(ctx, p.Warmup) {
		return res, ctx.Err()
	}
	t0 := time.Now()
	var start pgCounts
	if pg {
		var err error
		if start, err = readPGCounts(ctx, s); err != nil {
			return res, err
		}
	}
	if !loop.Sleep(ctx, p.Duration) {
		return res, ctx.Err()
	}
	t1 := time.Now()
	if pg {
		end, err := readPGCounts(ctx, s)
		if err != nil {
			return res, err
		}
		n := float64(p.Instances)
		tx := float64(end.xacts-start.xacts) / t1.Sub(t0).Seconds() / n
		conns := float64((start.conns+end.conns)/2-before.conns) / n
		res.TransactionsPerSec, res.Connections = &tx, &conns
	}
	res.DurationS = t1.Sub(t0).Seconds()

	var err error
	if res.PerInstance, res.StatementsPerSec, res.CPUMSPerSec, err = idleFigures(g, p.Instances, t0, t1); err != nil {
		return res, fmt.Errorf("bench idle: %w", err)
	}
	return res, nil
}

// startParallel is how many instances [startAll] starts at a time.
const startParallel = 8

// startAll starts slots 0 to n-1 of g, several at a time: each start waits for the
// instance's migrations and its first heartbeat, which one at a time would add up.
func startAll(ctx context.Context, g *instance.Group, n int) error {
	sem := make(chan struct{}, startParallel)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, errs[i] = g.Start(ctx, i)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err // the first: when one fails, the others often fail alike
		}
	}
	return nil
}

// idleFigures are the statements and CPU per second of each of the instances in slots 0
// to n-1 of g between t0 and t1, from the "idle" events of the [instance.Idle] workload:
// its first report in the window and its last. stmts and cpu are their means.
func idleFigures(g *instance.Group, n int, t0, t1 time.Time) (per []idleCount, stmts, cpu float64, err error) {
	events, _ := g.Log()
	first, last := map[int]instance.Event{}, map[int]instance.Event{}
	for _, e := range events {
		if e.Event != "idle" || e.T < t0.UnixNano() || e.T > t1.UnixNano() {
			continue
		}
		if _, ok := first[e.Proc]; !ok {
			first[e.Proc] = e
		}
		last[e.Proc] = e
	}
	for i := range n {
		a, b := first[i], last[i]
		if b.T-a.T < int64(time.Second) {
			return nil, 0, 0, fmt.Errorf("instance %d reported too little in the window (it may have died)", i)
		}
		secs := float64(b.T-a.T) / 1e9
		c := idleCount{ID: a.ID, StatementsPerSec: float64(b.Statements-a.Statements) / secs,
			CPUMSPerSec: float64(b.CPUMicros-a.CPUMicros) / 1000 / secs}
		per = append(per, c)
		stmts += c.StatementsPerSec / float64(n)
		cpu += c.CPUMSPerSec / float64(n)
	}
	return per, stmts, cpu, nil
}
