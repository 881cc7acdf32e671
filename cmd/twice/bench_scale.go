package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/bus/natsbus"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/report"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// benchScale runs `twice bench scale`: what many instances of one service cost and how
// they behave together, each a process of its own.
func benchScale(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench scale", flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	busURL := fs.String("bus", "", "signal over NATS (nats://host:port) instead of the store-native bus")
	instances := fs.Int("instances", 100, "instances to run, each a process of its own")
	idle := fs.Duration("idle", 10*time.Second, "how long to measure the idle instances")
	kills := fs.Int("kills", 3, "how many times to SIGKILL the leader")
	jobCount := fs.Int("jobs", 20000, "no-op jobs for every instance to work from one queue")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	rep := addReport(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *instances < 2 || *instances > 500:
		return fmt.Errorf("%w: bench scale: --instances must be 2 to 500", errUsage)
	case *idle < 2*time.Second || *idle > time.Hour:
		return fmt.Errorf("%w: bench scale: --idle must be 2s to 1h", errUsage)
	case *kills < 1 || *kills > 1000:
		return fmt.Errorf("%w: bench scale: --kills must be 1 to 1000", errUsage)
	case *jobCount < 1 || *jobCount > 1000000:
		return fmt.Errorf("%w: bench scale: --jobs must be 1 to 1000000", errUsage)
	}
	if err := rep.create(); err != nil {
		return err
	}
	defer rep.discard()
	e, err := newBenchEnv(ctx, &db, "scale", *asJSON, stdout, stderr)
	if err != nil {
		return err
	}
	defer e.close()
	s, dsn, service, spawn, progress := e.store, e.dsn, e.service, e.spawn, e.progress
	fmt.Fprintf(progress, "bench scale: %d instances of %s on %s over %s\n", *instances, service, s, busName(*busURL))
	res, err := measureScale(ctx, spawn, s, instance.Options{DSN: dsn, Schema: db.schema, Service: service, Bus: *busURL},
		scaleParams{Instances: *instances, Settle: idleWarmup, Idle: *idle, Kills: *kills, Jobs: *jobCount, Progress: progress})
	if err != nil {
		return err
	}
	return rep.finish(stdout, progress, *asJSON, res)
}

// scaleParams configure [measureScale].
type scaleParams struct {
	// Instances is how many instances run, each a process.
	Instances int
	// Settle is waited after the start, before the idle window.
	Settle time.Duration
	// Idle is the idle window: at least 2s, for two reports of each instance in it.
	Idle time.Duration
	// Kills is how many times the leader is SIGKILLed.
	Kills int
	// Jobs is how many no-op jobs the instances work.
	Jobs int
	// Progress receives a line per phase; nil discards them.
	Progress io.Writer
}

// scaleResult is what [measureScale] measured, phase by phase.
type scaleResult struct {
	Store     string `json:"store"`
	Bus       string `json:"bus"`
	Instances int    `json:"instances"`
	// Note says what the figures are not, on SQLite.
	Note string `json:"note,omitempty"`
	// PoolMaxConns is each instance's main pool on PostgreSQL: pgx's default or the DSN's
	// pool_max_conns. MaxConnectionsPerInstance adds the control pool and the LISTEN
	// connection of the store-native bus: what the start was checked against.
	PoolMaxConns              int `json:"pool_max_conns,omitempty"`
	MaxConnectionsPerInstance int `json:"max_connections_per_instance,omitempty"`
	// StartS is how long starting every instance took, startParallel at a time, each
	// until it reported ready.
	StartS   float64       `json:"start_s"`
	Idle     scaleIdle     `json:"idle"`
	Join     scaleJoin     `json:"join"`
	Failover scaleFailover `json:"failover"`
	Jobs     scaleJobs     `json:"jobs"`
	// The run over time, for the HTML report, in seconds since the first instance
	// started: its length, when each phase began, and the instances' statements and CPU
	// (the idle workload's reports, through every phase).
	DurationS float64        `json:"duration_s"`
	Phases    []report.Phase `json:"phases"`
	Over      idleOver       `json:"over_time"`
}

// scaleIdle is the idle window: the instances running, nothing asked of them.
type scaleIdle struct {
	DurationS float64 `json:"duration_s"`
	// TransactionsPerSec and Connections are PostgreSQL's counts for the database
	// (pg_stat_database, pg_stat_activity), in total and divided by the instances;
	// connections less those there before the instances started. Absent on SQLite.
	TransactionsPerSec            *float64 `json:"transactions_per_sec,omitempty"`
	TransactionsPerSecPerInstance *float64 `json:"transactions_per_sec_per_instance,omitempty"`
	Connections                   *float64 `json:"connections,omitempty"`
	ConnectionsPerInstance        *float64 `json:"connections_per_instance,omitempty"`
	// StatementsPerSecPerInstance and CPUMSPerSecPerInstance are the means of the
	// instances' own reports, as `twice bench idle` measures them.
	StatementsPerSecPerInstance float64 `json:"statements_per_sec_per_instance"`
	CPUMSPerSecPerInstance      float64 `json:"cpu_ms_per_sec_per_instance"`
}

// scaleJoin is one more instance joining: how long until every other one lists it.
type scaleJoin struct {
	// ReadyMS is from starting the new instance's process to its "ready" event.
	ReadyMS float64 `json:"ready_ms"`
	// FirstSeenMS and AllSeenMS are from the same start to the first and the last of the
	// others listing it among the live members, each by its own report.
	FirstSeenMS float64 `json:"first_seen_ms"`
	AllSeenMS   float64 `json:"all_seen_ms"`
	// PollMS is how often each instance listed the members: nothing pushes membership,
	// so the last to see the newcomer is about one poll after the first.
	PollMS float64 `json:"members_poll_ms"`
}

// scaleFailover is the leader SIGKILLed Kills times, as `twice bench failover` measures it.
type scaleFailover struct {
	Kills       int       `json:"kills"`
	LeaseTTLMS  float64   `json:"lease_ttl_ms"`
	FailoversMS []float64 `json:"failovers_ms"`
	P50MS       float64   `json:"p50_ms"`
	P99MS       float64   `json:"p99_ms"`
	MaxMS       float64   `json:"max_ms"`
	// Failovers are the kills one by one, in seconds since the run started.
	Failovers []failover `json:"failovers"`
}

// scaleJobs is every instance working one queue of no-op jobs.
type scaleJobs struct {
	Jobs int `json:"jobs"`
	// EnqueueS is how long this process took to insert them, in batches of
	// enqueueBatch, into the paused queue.
	EnqueueS float64 `json:"enqueue_s"`
	// DurationS is from resuming the queue to the poll that found none left, or to the
	// limit, when Completed falls short of Jobs and Incomplete is set.
	DurationS  float64 `json:"duration_s"`
	Completed  int     `json:"completed"`
	Incomplete bool    `json:"incomplete,omitempty"`
	JobsPerSec float64 `json:"jobs_per_sec"`
	// Rate is the jobs completed per second from the resume on, from the polls of the
	// queue's counts: for the HTML report.
	Rate report.Rate `json:"jobs_per_sec_over_time"`
}

// summary is the result as one paragraph.
func (r scaleResult) summary() string {
	s := fmt.Sprintf("%d instances on %s over the %s bus started in %.1f s. Idle for %.0f s, each ran %.1f statements/s and used %.2f ms CPU per second",
		r.Instances, r.Store, r.Bus, r.StartS, r.Idle.DurationS, r.Idle.StatementsPerSecPerInstance, r.Idle.CPUMSPerSecPerInstance)
	if r.Idle.TransactionsPerSec != nil {
		s += fmt.Sprintf("; PostgreSQL counted %.0f transactions/s in total (%.1f per instance) and %.0f connections (%.1f per instance, pool_max_conns %d)",
			*r.Idle.TransactionsPerSec, *r.Idle.TransactionsPerSecPerInstance, *r.Idle.Connections, *r.Idle.ConnectionsPerInstance, r.PoolMaxConns)
	}
	s += fmt.Sprintf(". One more instance was ready in %.0f ms and listed by all the others within %.0f ms (the first after %.0f ms; each lists the members every %.0f ms).",
		r.Join.ReadyMS, r.Join.AllSeenMS, r.Join.FirstSeenMS, r.Join.PollMS)
	s += fmt.Sprintf(" After SIGKILL to the leader, another led in p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d kills (lease TTL %.0f ms).",
		r.Failover.P50MS, r.Failover.P99MS, r.Failover.MaxMS, len(r.Failover.FailoversMS), r.Failover.LeaseTTLMS)
	s += fmt.Sprintf(" All of them worked %d no-op jobs from one queue at %.0f jobs/s (%.1f s).", r.Jobs.Completed, r.Jobs.JobsPerSec, r.Jobs.DurationS)
	if r.Jobs.Incomplete {
		s += fmt.Sprintf(" That is %d of the %d enqueued: the rest were left when the time ran out.", r.Jobs.Completed, r.Jobs.Jobs)
	}
	if r.Note != "" {
		s += " " + r.Note
	}
	return s
}

// page shows the whole run phase by phase: what the instances cost (statements and CPU per
// second, through every phase, with the failovers' bands), the jobs worked per second, and
// the figures of each phase.
func (r scaleResult) page() *report.Page {
	dots, gaps, kills := drawFailovers(r.Failover.Failovers, "SIGKILL")
	cost := r.Over.charts(r.DurationS, r.Phases, nil)
	for i := range cost {
		cost[i].Spans = gaps
	}
	rows := []figure{{"start of every instance", report.Format(r.StartS, 1) + " s"},
		{"idle: statements per instance", report.Format(r.Idle.StatementsPerSecPerInstance, 1) + " /s"},
		{"idle: CPU per instance", msText(r.Idle.CPUMSPerSecPerInstance, 2) + "/s"}}
	if r.Idle.TransactionsPerSec != nil {
		rows = append(rows, figure{"idle: transactions (PostgreSQL's count)", fmt.Sprintf("%s /s, %s per instance", report.Format(*r.Idle.TransactionsPerSec, 0), report.Format(*r.Idle.TransactionsPerSecPerInstance, 1))},
			figure{"idle: connections (PostgreSQL's count)", fmt.Sprintf("%s, %s per instance", report.Format(*r.Idle.Connections, 0), report.Format(*r.Idle.ConnectionsPerInstance, 1))})
	}
	rows = append(rows, figure{"join: the new instance ready", msText(r.Join.ReadyMS, 0)},
		figure{"join: listed by the first other / by all", msText(r.Join.FirstSeenMS, 0) + " / " + msText(r.Join.AllSeenMS, 0)},
		figure{"failover p50 / p99 / max", fmt.Sprintf("%s / %s / %s", msText(r.Failover.P50MS, 0), msText(r.Failover.P99MS, 0), msText(r.Failover.MaxMS, 0))},
		figure{"jobs worked", fmt.Sprintf("%s of %s in %s s: %s /s", report.Format(float64(r.Jobs.Completed), 0), report.Format(float64(r.Jobs.Jobs), 0),
			report.Format(r.Jobs.DurationS, 1), report.Format(r.Jobs.JobsPerSec, 0))})
	return &report.Page{Title: fmt.Sprintf("twice bench scale: %s, %d instances", r.Store, r.Instances), Summary: r.summary(),
		Facts: []report.Fact{{Name: "store", Value: r.Store}, {Name: "bus", Value: r.Bus}, {Name: "instances", Value: strconv.Itoa(r.Instances)},
			{Name: "run", Value: fmt.Sprintf("%.0f s", r.DurationS)}},
		Sections: []report.Section{
			{ID: "run", Heading: "Over the run", Charts: append(cost, report.Chart{ID: "failovers-chart", Title: "failovers", Span: r.DurationS,
				YUnit: "ms", Log: true, Height: 120, Phases: r.Phases, Series: []report.Series{dots}, Spans: gaps}),
				Note: fmt.Sprintf("Each instance's statements and CPU per second from its own reports, in buckets of %g s: the mean of the instances reporting (solid) and the busiest one's (dashed), "+
					"through every phase (dashed lines); a red band is a failover after SIGKILL to the leader, from the signal to the next election, whose length the last chart shows (logarithmic).", r.Over.BucketS)},
			{ID: "jobs", Heading: "Jobs", Charts: []report.Chart{{ID: "jobs-chart", Label: "jobs worked per second", Span: r.Jobs.DurationS, YUnit: "jobs/s",
				Series: []report.Series{r.Jobs.Rate.Series("jobs completed", 3)}}},
				Note: fmt.Sprintf("Jobs completed per second by all the instances together, from the resume of their queue, in buckets of %g s (from the queue's counts, read every 100 ms).", r.Jobs.Rate.BucketS)},
			{ID: "figures-section", Heading: "Figures", Note: r.Note, Tables: []report.Table{figures(rows...), kills}},
		}}
}

// sqliteScaleNote is said of every run on SQLite.
const sqliteScaleNote = "On SQLite every instance shares one file on this one host, and every write waits for its one writer: the figures are one machine's, not a fleet's."

// measureScale runs p.Instances instances of one service and measures, phase by phase, what
// they cost at rest, how fast one more is seen by all, how fast the leader fails over, and
// how fast they work one queue together. Every instance runs the idle workload (a job
// worker, a schedule, a consumer group, a setting: a typical service at rest), the jobs
// workload, and a membership watch that only runs during the join phase.
func measureScale(ctx context.Context, spawn instance.Spawner, s *store.Store, opts instance.Options, p scaleParams) (scaleResult, error) {
	if p.Progress == nil {
		p.Progress = io.Discard
	}
	res := scaleResult{Store: string(s.Dialect()), Bus: "store", Instances: p.Instances}
	if opts.Bus != "" {
		res.Bus = "nats"
	}
	pg := s.Dialect() == store.Postgres
	var before pgCounts
	if pg {
		var err error
		if res.PoolMaxConns, res.MaxConnectionsPerInstance, err = checkConnections(ctx, s, opts, p.Instances+1, p.Progress); err != nil {
			return res, err
		}
		if before, err = readPGCounts(ctx, s); err != nil {
			return res, fmt.Errorf("bench scale: reading PostgreSQL's statistics: %w", err)
		}
	} else {
		res.Note = sqliteScaleNote
		fmt.Fprintln(p.Progress, "bench scale: "+sqliteScaleNote)
	}
	opts.Workloads = []instance.Workload{instance.Idle{Report: idleReport}, instance.Jobs{},
		instance.Members{OnSignal: true, Until: p.Instances + 1}}
	g := instance.NewGroup(spawn, opts, instanceLogTo())
	defer g.Stop(30 * time.Second)

	fmt.Fprintf(p.Progress, "bench scale: starting %d instances, %d at a time\n", p.Instances, startParallel)
	start := time.Now()
	phase := func(name string) {
		res.Phases = append(res.Phases, report.Phase{At: time.Since(start).Seconds(), Name: name})
	}
	phase("start")
	if err := startAll(ctx, g, p.Instances); err != nil {
		return res, fmt.Errorf("bench scale: %w", err)
	}
	res.StartS = time.Since(start).Seconds()
	fmt.Fprintf(p.Progress, "bench scale: %d instances started in %.1f s; settling %s, then idle for %s\n",
		p.Instances, res.StartS, p.Settle, p.Idle)
	phase("settle, idle")
	var err error
	if res.Idle, err = scaleIdleWindow(ctx, g, s, before, p); err != nil {
		return res, fmt.Errorf("bench scale: idle: %w", err)
	}
	phase("join")
	if res.Join, err = measureJoin(ctx, g, p.Instances, p.Progress); err != nil {
		return res, fmt.Errorf("bench scale: join: %w", err)
	}
	phase("failover")
	if res.Failover, err = scaleKills(ctx, g, opts, p.Kills, start, p.Progress); err != nil {
		return res, err
	}
	phase("jobs")
	if res.Jobs, err = measureJobThroughput(ctx, s, opts, p.Jobs, p.Progress); err != nil {
		return res, fmt.Errorf("bench scale: jobs: %w", err)
	}
	res.DurationS = time.Since(start).Seconds()
	res.Over = idleOverTime(g, start, time.Now())
	return res, nil
}

// scaleKills SIGKILLs the leader of g's instances kills times, as `twice bench failover`
// does.
func scaleKills(ctx context.Context, g *instance.Group, opts instance.Options, kills int, start time.Time, progress io.Writer) (scaleFailover, error) {
	ttl := opts.LeaseTTL
	if ttl == 0 {
		ttl = lease.DefaultTTL
	}
	res := scaleFailover{Kills: kills, LeaseTTLMS: ms(ttl)}
	var err error
	if res.Failovers, err = killLeaders(ctx, g, kills, syscall.SIGKILL, ttl, start, progress); err != nil {
		return res, fmt.Errorf("bench scale: %w", err)
	}
	f := failoverMS(res.Failovers)
	res.FailoversMS, res.P50MS, res.P99MS, res.MaxMS = f, percentile(f, 50), percentile(f, 99), percentile(f, 100)
	return res, nil
}

// checkConnections fails before anything starts if n instances may need more connections
// than the PostgreSQL server allows at all, rather than halfway through the start; if they
// fit only without the connections other clients hold now (those come and go), it warns on
// progress. It returns an instance's main pool and its most connections in all.
func checkConnections(ctx context.Context, s *store.Store, opts instance.Options, n int, progress io.Writer) (pool, perInstance int, err error) {
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		return 0, 0, fmt.Errorf("bench scale: %w", err)
	}
	pool = int(cfg.MaxConns)
	const control = 2 // the control pool's (store/postgres.go)
	listen := 0
	if opts.Bus == "" {
		listen = 1 // the store-native bus's LISTEN connection
	}
	perInstance = pool + control + listen
	var maxConns, reserved, inUse int
	err = s.QueryRow(ctx, `SELECT current_setting('max_connections')::int,
		current_setting('superuser_reserved_connections')::int + coalesce(current_setting('reserved_connections', true), '0')::int,
		(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')`).Scan(&maxConns, &reserved, &inUse)
	if err != nil {
		return 0, 0, fmt.Errorf("bench scale: reading max_connections: %w", err)
	}
	// This process adds a bus of its own for the jobs phase.
	need := n*perInstance + listen
	what := fmt.Sprintf("%d instances (one of them joins later) may open up to %d connections to PostgreSQL, "+
		"%d each (a pool of %d, %d for the control pool, %d LISTEN)", n, need, perInstance, pool, control, listen)
	switch {
	case need > maxConns-reserved:
		return 0, 0, fmt.Errorf("bench scale: %s, but max_connections is %d with %d reserved: "+
			"raise max_connections to at least %d (ALTER SYSTEM SET max_connections = %d, then restart PostgreSQL), "+
			"run fewer --instances, or give each a smaller pool with pool_max_conns in --dsn",
			what, maxConns, reserved, inUse+need+reserved, inUse+need+reserved)
	case inUse+need > maxConns-reserved:
		fmt.Fprintf(progress, "bench scale: warning: %s, and other clients hold %d of the %d max_connections (%d reserved): the run fails if they keep them\n",
			what, inUse, maxConns, reserved)
	}
	return pool, perInstance, nil
}

// scaleIdleWindow waits p.Settle, then measures the instances over p.Idle: PostgreSQL's
// counts against before (taken before any instance started), and the instances' reports.
func scaleIdleWindow(ctx context.Context, g *instance.Group, s *store.Store, before pgCounts, p scaleParams) (scaleIdle, error) {
	var res scaleIdle
	if !loop.Sleep(ctx, p.Settle) {
		return res, ctx.Err()
	}
	pg := s.Dialect() == store.Postgres
	var start, end pgCounts
	var err error
	t0 := time.Now()
	if pg {
		if start, err = readPGCounts(ctx, s); err != nil {
			return res, err
		}
	}
	if !loop.Sleep(ctx, p.Idle) {
		return res, ctx.Err()
	}
	t1 := time.Now()
	res.DurationS = t1.Sub(t0).Seconds()
	if pg {
		if end, err = readPGCounts(ctx, s); err != nil {
			return res, err
		}
		n := float64(p.Instances)
		tx := float64(end.xacts-start.xacts) / res.DurationS
		conns := float64((start.conns+end.conns)/2 - before.conns)
		txPer, connsPer := tx/n, conns/n
		res.TransactionsPerSec, res.TransactionsPerSecPerInstance = &tx, &txPer
		res.Connections, res.ConnectionsPerInstance = &conns, &connsPer
	}
	if _, res.StatementsPerSecPerInstance, res.CPUMSPerSecPerInstance, err = idleFigures(g, p.Instances, t0, t1); err != nil {
		return res, err
	}
	line := fmt.Sprintf("bench scale: idle for %.1f s: %.1f statements/s and %.2f ms CPU/s per instance",
		res.DurationS, res.StatementsPerSecPerInstance, res.CPUMSPerSecPerInstance)
	if pg {
		line += fmt.Sprintf("; %.0f transactions/s and %.0f connections in total", *res.TransactionsPerSec, *res.Connections)
	}
	fmt.Fprintln(p.Progress, line)
	return res, nil
}

// measureJoin starts one more instance, in slot n, and times how long until each of the
// instances in slots 0 to n-1 lists it: their membership watch (the [instance.Members]
// workload) runs from now until they list n+1 live instances. The newcomer is stopped
// again afterwards, so the next phases find n instances.
func measureJoin(ctx context.Context, g *instance.Group, n int, progress io.Writer) (scaleJoin, error) {
	res := scaleJoin{PollMS: ms(instance.DefaultMembersPoll)}
	// A second more per instance: on a small machine a hundred of them share its cores with
	// the server, and a start alone takes seconds.
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(n)*time.Second)
	defer cancel()
	_, from := g.Log()
	for i := range n {
		if err := g.Signal(i, syscall.SIGUSR2); err != nil {
			return res, err
		}
	}
	// Each reports what it lists once it watches; only then can it see the newcomer come.
	for i := range n {
		if _, _, err := g.WaitFor(ctx, from, func(e instance.Event) bool { return e.Proc == i && e.Event == "members" }); err != nil {
			return res, fmt.Errorf("instance %d does not watch the members: %w", i, err)
		}
	}
	_, from = g.Log()
	t0 := time.Now()
	p, err := g.Start(ctx, n)
	if err != nil {
		return res, err
	}
	res.ReadyMS = ms(time.Since(t0))
	first, last := int64(0), int64(0)
	for i := range n {
		ev, _, err := g.WaitFor(ctx, from, func(e instance.Event) bool {
			return e.Proc == i && e.Event == "members" && e.Members >= n+1
		})
		if err != nil {
			return res, fmt.Errorf("instance %d never listed the new instance %s: %w", i, p.ID, err)
		}
		if first == 0 || ev.T < first {
			first = ev.T
		}
		last = max(last, ev.T)
	}
	res.FirstSeenMS, res.AllSeenMS = ms(time.Unix(0, first).Sub(t0)), ms(time.Unix(0, last).Sub(t0))
	fmt.Fprintf(progress, "bench scale: one more instance, %s, was ready in %.0f ms and listed by all %d others in %.0f ms (the first after %.0f ms)\n",
		p.ID, res.ReadyMS, n, res.AllSeenMS, res.FirstSeenMS)
	if err := g.Signal(n, syscall.SIGTERM); err != nil {
		return res, err
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		return res, fmt.Errorf("the new instance did not stop: %w", ctx.Err())
	}
	return res, nil
}

// enqueueBatch is how many jobs one EnqueueMany inserts.
const enqueueBatch = 1000

// measureJobThroughput enqueues n no-op jobs into the default queue, paused meanwhile, which
// every instance works (the [instance.Jobs] workload), then resumes it and times until none
// is left. This process signals on the instances' bus, as an instance would, so the resume
// wakes them at once rather than at their next poll.
func measureJobThroughput(ctx context.Context, s *store.Store, opts instance.Options, n int, progress io.Writer) (scaleJobs, error) {
	res := scaleJobs{Jobs: n}
	self := toolInstance("twice-bench")
	b, err := openBus(ctx, s, opts.Bus, opts.Service, self)
	if err != nil {
		return res, err
	}
	defer b.Close(context.WithoutCancel(ctx))
	jc, err := jobs.New(block.Deps{Store: s, Bus: b, Service: opts.Service, Instance: self}, jobs.Config{})
	if err != nil {
		return res, err
	}
	defer jc.Close(context.WithoutCancel(ctx))
	if err := jc.PauseQueue(ctx, jobs.DefaultQueue); err != nil {
		return res, err
	}
	t := time.Now()
	for from := 0; from < n; from += enqueueBatch {
		params := make([]jobs.Params, 0, enqueueBatch)
		for i := from; i < min(n, from+enqueueBatch); i++ {
			params = append(params, jobs.Params{Args: instance.CrashJob{N: i}})
		}
		if _, err := jc.EnqueueMany(ctx, params); err != nil {
			return res, err
		}
	}
	res.EnqueueS = time.Since(t).Seconds()
	fmt.Fprintf(progress, "bench scale: %d jobs enqueued in %.1f s; resuming their queue\n", n, res.EnqueueS)
	before, err := queueStats(ctx, jc, jobs.DefaultQueue)
	if err != nil {
		return res, err
	}
	// Bounded: a queue that does not drain is a failure, not a hang.
	limit := time.Minute + time.Duration(n)*10*time.Millisecond
	t0 := time.Now()
	if err := jc.ResumeQueue(ctx, jobs.DefaultQueue); err != nil {
		return res, err
	}
	counts := []report.Count{{}}
	for {
		// The poll's period bounds the figure's precision: 100ms of a run of seconds.
		if !loop.Sleep(ctx, 100*time.Millisecond) {
			return res, ctx.Err()
		}
		st, err := queueStats(ctx, jc, jobs.DefaultQueue)
		if err != nil {
			return res, err
		}
		res.DurationS, res.Completed = time.Since(t0).Seconds(), st.Completed-before.Completed
		counts = append(counts, report.Count{At: res.DurationS, N: int64(res.Completed)})
		if st.Available+st.Scheduled+st.Running == 0 {
			if res.Completed < n {
				return res, fmt.Errorf("%d of %d jobs completed (%d discarded, %d cancelled)", res.Completed, n, st.Discarded, st.Cancelled)
			}
			break
		}
		// What was measured is kept: the phases before this one took long enough.
		if time.Since(t0) > limit {
			res.Incomplete = true
			fmt.Fprintf(progress, "bench scale: only %d of %d jobs completed within %s\n", res.Completed, n, limit)
			break
		}
	}
	res.JobsPerSec = float64(res.Completed) / res.DurationS
	res.Rate = report.RateOver(counts, res.DurationS)
	fmt.Fprintf(progress, "bench scale: %d jobs worked in %.1f s: %.0f jobs/s\n", res.Completed, res.DurationS, res.JobsPerSec)
	return res, nil
}

// queueStats are the counts of queue.
func queueStats(ctx context.Context, jc *jobs.Client, queue string) (jobs.QueueStats, error) {
	all, err := jc.Stats(ctx)
	if err != nil {
		return jobs.QueueStats{}, err
	}
	for _, q := range all {
		if q.Queue == queue {
			return q, nil
		}
	}
	return jobs.QueueStats{Queue: queue}, nil
}

// openBus opens the bus of a service's instances for this process, which runs none: the
// store-native one, or NATS at busURL.
func openBus(ctx context.Context, s *store.Store, busURL, service, self string) (bus.Bus, error) {
	if busURL == "" {
		return bus.NewStore(ctx, s, bus.Config{Service: service, Instance: self})
	}
	b, err := natsbus.New(ctx, natsbus.Config{URL: busURL, Service: service, Instance: self, Store: s})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// instanceLogTo is where the instances' logs go: $TWICE_BENCH_INSTANCE_LOG names a file for
// them (to see why a run went wrong); by default they are discarded.
func instanceLogTo() io.Writer {
	name := os.Getenv("TWICE_BENCH_INSTANCE_LOG")
	if name == "" {
		return nil
	}
	f, err := os.Create(name)
	if err != nil {
		return nil
	}
	return f
}
