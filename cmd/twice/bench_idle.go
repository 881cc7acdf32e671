package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/report"
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
	rep := addReport(fs)
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
	if err := rep.create(); err != nil {
		return err
	}
	defer rep.discard()
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
	return rep.finish(stdout, progress, *asJSON, res)
}

func (r idleResult) summary() string {
	s := fmt.Sprintf("idle on %s over the %s bus, %d instances for %.0f s, per instance: %.1f statements/s, %.2f ms CPU per second",
		r.Store, r.Bus, r.Instances, r.DurationS, r.StatementsPerSec, r.CPUMSPerSec)
	if r.TransactionsPerSec != nil {
		s += fmt.Sprintf(", %.1f transactions/s and %.1f connections (PostgreSQL's counts, with whatever else uses the database)",
			*r.TransactionsPerSec, *r.Connections)
	}
	return s
}

// page shows what the instances cost over the whole run, the warm-up shaded, then the
// figures of the measured window and each instance's.
func (r idleResult) page() *report.Page {
	warmup := []report.Span{{From: 0, To: r.WindowS[0], Class: "warmup", Title: "start and warm-up, not measured"}}
	rows := []figure{{"statements per instance", report.Format(r.StatementsPerSec, 1) + " /s"},
		{"CPU per instance", msText(r.CPUMSPerSec, 2) + "/s"}}
	if r.TransactionsPerSec != nil {
		rows = append(rows, figure{"transactions per instance (PostgreSQL's count)", report.Format(*r.TransactionsPerSec, 1) + " /s"},
			figure{"connections per instance (PostgreSQL's count)", report.Format(*r.Connections, 1)})
	}
	each := report.Table{ID: "instances", Head: []string{"instance", "statements/s", "CPU ms/s"}}
	var stmts, cpu []float64
	for _, c := range r.PerInstance {
		each.Rows = append(each.Rows, []report.Cell{report.Text(c.ID), report.Num(c.StatementsPerSec, 2), report.Num(c.CPUMSPerSec, 2)})
		stmts, cpu = append(stmts, c.StatementsPerSec), append(cpu, c.CPUMSPerSec)
	}
	each.Bars(1, stmts, []int{0})
	each.Bars(2, cpu, []int{1})
	return &report.Page{Title: fmt.Sprintf("twice bench idle: %s, %d instances", r.Store, r.Instances), Summary: r.summary(),
		Facts: []report.Fact{{Name: "store", Value: r.Store}, {Name: "bus", Value: r.Bus}, {Name: "instances", Value: strconv.Itoa(r.Instances)},
			{Name: "measured", Value: fmt.Sprintf("from %.1f s to %.1f s after the first instance started", r.WindowS[0], r.WindowS[1])}},
		Sections: []report.Section{
			{ID: "run", Heading: "Over the run", Charts: r.Over.charts(r.WindowS[1], nil, warmup),
				Note: fmt.Sprintf("The statements each instance's node ran and the CPU its process used, per second, from their own reports every second, in buckets of %g s: "+
					"the mean of the instances (a solid line) and the busiest one's (dashed). The grey band is the start and the warm-up, which the figures leave out.", r.Over.BucketS)},
			{ID: "figures-section", Heading: "Figures", Note: "Over the measured window.", Tables: []report.Table{figures(rows...), each}},
		}}
}

// charts draws o over a run of span seconds: statements per second, then CPU, each of the
// mean instance and of the busiest.
func (o idleOver) charts(span float64, phases []report.Phase, shades []report.Span) []report.Chart {
	xs := bucketXs(len(o.Instances), o.BucketS)
	chart := func(id, unit string, mean, most []float64) report.Chart {
		return report.Chart{ID: id, Title: unit + " per instance", Span: span, YUnit: unit, Height: 150, Phases: phases, Shades: shades,
			Series: []report.Series{{Name: "mean", Color: 0, X: xs, Y: gapsOf(mean, o.Instances)},
				{Name: "busiest", Color: 1, Style: "p95", X: xs, Y: gapsOf(most, o.Instances)}}}
	}
	return []report.Chart{chart("statements", "statements/s", o.StatementsMean, o.StatementsMax), chart("cpu", "CPU ms/s", o.CPUMean, o.CPUMax)}
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
	// The run over time, for the HTML report, in seconds since the first instance
	// started: the measured window, and the instances' statements and CPU through the
	// whole run, warm-up included.
	WindowS [2]float64 `json:"window_s"`
	Over    idleOver   `json:"over_time"`
}

// idleOver is what instances cost over a run, from their "idle" reports, per bucket of
// BucketS seconds from its start: how many instances reported through the bucket, and the
// statements and CPU per second of the mean one of them and of the busiest.
type idleOver struct {
	BucketS        float64   `json:"bucket_s"`
	Instances      []int     `json:"instances"`
	StatementsMean []float64 `json:"statements_per_sec_mean"`
	StatementsMax  []float64 `json:"statements_per_sec_max"`
	CPUMean        []float64 `json:"cpu_ms_per_sec_mean"`
	CPUMax         []float64 `json:"cpu_ms_per_sec_max"`
}

// idleOverTime reads the "idle" reports of g's instances between start and end. An
// instance counts in the buckets between its first report and its last: a process killed
// and started again in its slot reports under a new id, from zero.
func idleOverTime(g *instance.Group, start, end time.Time) idleOver {
	events, _ := g.Log()
	type counts struct{ stmts, cpu []report.Count }
	by := map[string]*counts{}
	var ids []string
	for _, e := range events {
		if e.Event != "idle" || e.T < start.UnixNano() || e.T > end.UnixNano() {
			continue
		}
		c := by[e.ID]
		if c == nil {
			c = &counts{}
			by[e.ID], ids = c, append(ids, e.ID)
		}
		at := e.Time().Sub(start).Seconds()
		c.stmts = append(c.stmts, report.Count{At: at, N: e.Statements})
		c.cpu = append(c.cpu, report.Count{At: at, N: e.CPUMicros})
	}
	span := end.Sub(start).Seconds()
	w := max(idleReport.Seconds(), report.BucketWidth(span)) // no finer than the reports
	n := report.Buckets(span, w)
	o := idleOver{BucketS: w, Instances: make([]int, n), StatementsMean: make([]float64, n), StatementsMax: make([]float64, n),
		CPUMean: make([]float64, n), CPUMax: make([]float64, n)}
	for _, id := range ids {
		c := by[id]
		stmts, cpu := report.RateIn(c.stmts, span, w, n).PerSec, report.RateIn(c.cpu, span, w, n).PerSec
		for i := range n {
			// A bucket counts when the instance reported on both sides of its middle.
			if mid := (float64(i) + 0.5) * w; mid < c.stmts[0].At || mid > c.stmts[len(c.stmts)-1].At {
				continue
			}
			o.Instances[i]++
			o.StatementsMean[i] += stmts[i]
			o.StatementsMax[i] = max(o.StatementsMax[i], stmts[i])
			o.CPUMean[i] += cpu[i] / 1000
			o.CPUMax[i] = max(o.CPUMax[i], cpu[i]/1000)
		}
	}
	for i, k := range o.Instances {
		if k > 0 {
			o.StatementsMean[i] /= float64(k)
			o.CPUMean[i] /= float64(k)
		}
	}
	return o
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

// idleReport is how often an idle instance reports its statements and CPU.
const idleReport = time.Second

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
	opts.Workloads = []instance.Workload{instance.Idle{Report: idleReport}}
	g := instance.NewGroup(spawn, opts, nil)
	defer g.Stop(30 * time.Second)
	began := time.Now()
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
	res.WindowS = [2]float64{t0.Sub(began).Seconds(), t1.Sub(began).Seconds()}
	res.Over = idleOverTime(g, began, t1)

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
