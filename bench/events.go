package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", as watermill-sql users open it
)

// eventsParams are the flags of `go run . events`.
type eventsParams struct {
	dsn        string
	events     int
	publishers int
	latency    int
	warmup     int // events published at the rate before the latency run's timed ones
	rate       int
	rounds     int
	systems    []string // keys from eventSystemKeys, in the order they run in the first round
	// cpuProfile, if set, is where the CPU profile of the first round's twice Publish
	// throughput run goes.
	cpuProfile string
}

// eventSystem is one event log under test in one configuration. Each call opens the system
// on a fresh database of its own and closes it before returning, so the database's
// counters and its backends' CPU belong to that call alone.
type eventSystem interface {
	name() (system, config, description string)
	// throughput publishes n events, one per transaction, from publishers goroutines on
	// one instance while a shared subscriber on a second instance consumes them. It returns
	// the time until the last publish committed and until the last event was handled
	// (zero for a system that only publishes).
	throughput(ctx context.Context, dsn string, n, publishers int) (publish, consume time.Duration, err error)
}

// latencySystem is an eventSystem with a consumer, whose latency can be measured.
type latencySystem interface {
	eventSystem
	// latency publishes n single events at rate per second, each carrying the time taken
	// before its transaction began, and returns when each was sent and how long it took to
	// reach the handler on the other instance.
	latency(ctx context.Context, dsn string, n, rate int) ([]timed, error)
}

// eventSystemKeys names the systems for --systems, in their default order.
func eventSystemKeys() []string {
	return []string{"twice", "twice-tx", "watermill", "watermill-tuned", "bare"}
}

func eventSystemFor(key string) eventSystem {
	switch key {
	case "twice":
		return twiceEvents{}
	case "twice-tx":
		return twiceEvents{tx: true}
	case "watermill":
		return watermillDefaults()
	case "watermill-tuned":
		return watermillTuned()
	case "bare":
		return bareEvents{}
	}
	return nil
}

func eventsMain(args []string) {
	fs := flag.NewFlagSet("events", flag.ExitOnError)
	var p eventsParams
	fs.StringVar(&p.dsn, "dsn", envOr("TWICE_BENCH_DSN", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"),
		"PostgreSQL URL of a database to connect to; every run creates a fresh database beside it and drops it afterwards")
	fs.IntVar(&p.events, "events", 20_000, "events in each throughput run")
	fs.IntVar(&p.publishers, "publishers", 4, "concurrent publishers in the throughput runs, one event per transaction")
	fs.IntVar(&p.latency, "latency-events", 2_000, "events in each latency run")
	fs.IntVar(&p.warmup, "warmup-events", 200, "events each latency run publishes at its rate before the timed ones, and does not time: "+
		"the first events on a fresh database wait for new connections and the first preparation of every statement")
	fs.IntVar(&p.rate, "rate", 200, "events per second in the latency runs")
	fs.IntVar(&p.rounds, "rounds", 3, "rounds; each runs every system once, in turn, and the median is reported")
	systems := fs.String("systems", strings.Join(eventSystemKeys(), ","), "systems to run, comma-separated: "+strings.Join(eventSystemKeys(), ", "))
	asJSON := fs.Bool("json", false, "print JSON")
	fs.StringVar(&p.cpuProfile, "cpuprofile", "", "write a CPU profile of the first round's twice Publish throughput run here (this process: both nodes and the publishers)")
	_ = fs.Parse(args)
	p.systems = strings.Split(*systems, ",")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runEvents(ctx, p, *asJSON, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench events:", err)
		os.Exit(1)
	}
}

// eventsRow is what one system measured: one round's figures, or the median of each figure
// over the rounds.
type eventsRow struct {
	System      string `json:"system"`
	Config      string `json:"config"`
	Description string `json:"description"`
	// Throughput run.
	PublishPerSec float64 `json:"publish_per_sec"`
	ConsumePerSec float64 `json:"consume_per_sec,omitempty"`
	// CommitsPerEvent is xact_commit of the throughput run's database, from its creation to
	// after its last backend exited, over the events: it includes the system's setup
	// (migrations), its background work during the run, and its close.
	CommitsPerEvent float64 `json:"commits_per_event"`
	// CPUSeconds is this process's user and system CPU over the throughput run, from the
	// system's open to its close; PostgresCPUSeconds is the CPU of the PostgreSQL backends
	// connected to the run's database over the same run (-1 when /proc cannot tell).
	CPUSeconds         float64 `json:"cpu_seconds"`
	PostgresCPUSeconds float64 `json:"postgres_cpu_seconds"`
	// Latency run: publish (before the transaction begins) to handler start.
	LatencyP50 float64 `json:"latency_p50_ms,omitempty"`
	LatencyP99 float64 `json:"latency_p99_ms,omitempty"`
	// Where the tail lies (see split): the p99 of the publish call alone, its commit
	// included, and of what followed until the handler started.
	PublishP99 float64 `json:"publish_p99_ms,omitempty"`
	AfterP99   float64 `json:"after_publish_p99_ms,omitempty"`
	// LatencyCommitsPerEvent is xact_commit of the latency run's database over its events:
	// what the light rate costs, idle polling included.
	LatencyCommitsPerEvent float64 `json:"latency_commits_per_event,omitempty"`
}

func runEvents(ctx context.Context, p eventsParams, asJSON bool, out io.Writer) error {
	switch {
	case p.events < 1 || p.publishers < 1 || p.latency < 1 || p.rate < 1 || p.rounds < 1:
		return errors.New("--events, --publishers, --latency-events, --rate and --rounds must be positive")
	case p.warmup < 0:
		return errors.New("--warmup-events must not be negative")
	case len(p.systems) == 0:
		return errors.New("--systems names no system")
	}
	var systems []eventSystem
	for _, k := range p.systems {
		sys := eventSystemFor(strings.TrimSpace(k))
		if sys == nil {
			return fmt.Errorf("--systems: unknown system %q (known: %s)", k, strings.Join(eventSystemKeys(), ", "))
		}
		systems = append(systems, sys)
	}
	h, err := newHarness(ctx, p.dsn)
	if err != nil {
		return err
	}
	defer h.close()
	progress("events: %d events from %d publishers, then %d at %d/s after %d untimed; %d systems, %d rounds, a fresh database per run",
		p.events, p.publishers, p.latency, p.rate, p.warmup, len(systems), p.rounds)
	rounds := make([][]eventsRow, len(systems))
	for r := range p.rounds {
		// Each round starts with the next system, so none always runs first or after the same one.
		for k := range systems {
			i := (r + k) % len(systems)
			profile := ""
			if r == 0 && systems[i] == (twiceEvents{}) {
				profile = p.cpuProfile
			}
			row, err := h.measure(ctx, systems[i], p, profile)
			if err != nil {
				s, cfg, _ := systems[i].name()
				return fmt.Errorf("%s %s, round %d: %w", s, cfg, r+1, err)
			}
			rounds[i] = append(rounds[i], row)
		}
	}
	medians := make([]eventsRow, len(systems))
	for i, rs := range rounds {
		medians[i] = medianRow(rs)
	}
	return reportEvents(out, asJSON, p, medians, rounds)
}

// measure runs sys once: its throughput run on one fresh database, its latency run on
// another. A CPU profile of the throughput run goes to profile, unless it is "".
func (h *harness) measure(ctx context.Context, sys eventSystem, p eventsParams, profile string) (eventsRow, error) {
	s, cfg, desc := sys.name()
	row := eventsRow{System: s, Config: cfg, Description: desc}
	progress("%s %s: throughput, %d events", s, cfg, p.events)
	var pub, all time.Duration
	use, err := h.onFreshDatabase(ctx, s+"_"+cfg, func(dsn string) error {
		_, err := profiled(profile, "", func() (time.Duration, error) {
			var err error
			pub, all, err = sys.throughput(ctx, dsn, p.events, p.publishers)
			return pub, err
		})
		return err
	})
	if err != nil {
		return row, fmt.Errorf("throughput: %w", err)
	}
	row.PublishPerSec = float64(p.events) / pub.Seconds()
	if all > 0 {
		row.ConsumePerSec = float64(p.events) / all.Seconds()
	}
	row.CommitsPerEvent = float64(use.commits) / float64(p.events)
	row.CPUSeconds, row.PostgresCPUSeconds = use.cpu, use.pgCPU
	ls, ok := sys.(latencySystem)
	if !ok {
		return row, nil
	}
	progress("%s %s: latency, %d events at %d/s after %d untimed", s, cfg, p.latency, p.rate, p.warmup)
	var lat []timed
	use, err = h.onFreshDatabase(ctx, s+"_"+cfg, func(dsn string) error {
		var err error
		lat, err = ls.latency(ctx, dsn, p.warmup+p.latency, p.rate)
		return err
	})
	if err != nil {
		return row, fmt.Errorf("latency: %w", err)
	}
	timedOnly := afterWarmup(lat, p.warmup)
	ds := durations(timedOnly)
	row.LatencyP50, row.LatencyP99 = percentile(ds, 0.50), percentile(ds, 0.99)
	row.PublishP99, row.AfterP99 = split(timedOnly)
	row.LatencyCommitsPerEvent = float64(use.commits) / float64(p.warmup+p.latency)
	return row, nil
}

func medianRow(rs []eventsRow) eventsRow {
	m := rs[0]
	med := func(f func(eventsRow) float64) float64 { return medianBy(rs, f) }
	m.PublishPerSec = med(func(r eventsRow) float64 { return r.PublishPerSec })
	m.ConsumePerSec = med(func(r eventsRow) float64 { return r.ConsumePerSec })
	m.CommitsPerEvent = med(func(r eventsRow) float64 { return r.CommitsPerEvent })
	m.CPUSeconds = med(func(r eventsRow) float64 { return r.CPUSeconds })
	m.PostgresCPUSeconds = med(func(r eventsRow) float64 { return r.PostgresCPUSeconds })
	m.LatencyP50 = med(func(r eventsRow) float64 { return r.LatencyP50 })
	m.LatencyP99 = med(func(r eventsRow) float64 { return r.LatencyP99 })
	m.PublishP99 = med(func(r eventsRow) float64 { return r.PublishP99 })
	m.AfterP99 = med(func(r eventsRow) float64 { return r.AfterP99 })
	m.LatencyCommitsPerEvent = med(func(r eventsRow) float64 { return r.LatencyCommitsPerEvent })
	return m
}

// eventsRatios compares the medians the issue asks about; a ratio is 0 when a system it
// needs did not run.
type eventsRatios struct {
	TwiceVsWatermillTunedConsume float64 `json:"twice_vs_watermill_tuned_consume"`
	TwicePublishVsBare           float64 `json:"twice_publish_vs_bare"`
	TwiceTxPublishVsBare         float64 `json:"twice_tx_publish_vs_bare"`
}

func ratios(rows []eventsRow) eventsRatios {
	find := func(sys, cfg string) eventsRow {
		for _, r := range rows {
			if r.System == sys && r.Config == cfg {
				return r
			}
		}
		return eventsRow{}
	}
	div := func(a, b float64) float64 {
		if a == 0 || b == 0 {
			return 0
		}
		return a / b
	}
	tw, tx, wt, bare := find("twice", "Publish"), find("twice", "PublishTx"), find("watermill", "tuned"), find("bare", "INSERT+COMMIT")
	return eventsRatios{
		TwiceVsWatermillTunedConsume: div(tw.ConsumePerSec, wt.ConsumePerSec),
		TwicePublishVsBare:           div(tw.PublishPerSec, bare.PublishPerSec),
		TwiceTxPublishVsBare:         div(tx.PublishPerSec, bare.PublishPerSec),
	}
}

func reportEvents(out io.Writer, asJSON bool, p eventsParams, rows []eventsRow, rounds [][]eventsRow) error {
	rt := ratios(rows)
	if asJSON {
		type system struct {
			eventsRow
			Rounds []eventsRow `json:"rounds"`
		}
		res := struct {
			Events        int          `json:"events"`
			Publishers    int          `json:"publishers"`
			LatencyEvents int          `json:"latency_events"`
			WarmupEvents  int          `json:"warmup_events"`
			Rate          int          `json:"rate"`
			Rounds        int          `json:"rounds"`
			Ratios        eventsRatios `json:"ratios"`
			Systems       []system     `json:"systems"`
		}{Events: p.events, Publishers: p.publishers, LatencyEvents: p.latency, WarmupEvents: p.warmup, Rate: p.rate, Rounds: p.rounds, Ratios: rt}
		for i, r := range rows {
			res.Systems = append(res.Systems, system{eventsRow: r, Rounds: rounds[i]})
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(out, "%d events from %d publishers, one per transaction; latency: %d events at %d/s after %d untimed; median of %d rounds\n\n",
		p.events, p.publishers, p.latency, p.rate, p.warmup, p.rounds)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SYSTEM\tCONFIG\tPUBLISH/s\tCONSUME/s\tp50 ms\tp99 ms\tPUBLISH p99\tAFTER p99\tCOMMITS/event\tCPU s bench\tCPU s postgres\tCOMMITS/event at rate")
	dash := func(v float64, format string) string {
		if v <= 0 {
			return "-"
		}
		return fmt.Sprintf(format, v)
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%s\t%s\n", r.System, r.Config, r.PublishPerSec,
			dash(r.ConsumePerSec, "%.0f"), dash(r.LatencyP50, "%.2f"), dash(r.LatencyP99, "%.2f"),
			dash(r.PublishP99, "%.2f"), dash(r.AfterP99, "%.2f"), r.CommitsPerEvent,
			r.CPUSeconds, dash(r.PostgresCPUSeconds, "%.2f"), dash(r.LatencyCommitsPerEvent, "%.2f"))
	}
	_ = tw.Flush()
	fmt.Fprintln(out)
	for _, r := range rows {
		fmt.Fprintf(out, "%s %s: %s\n", r.System, r.Config, r.Description)
	}
	fmt.Fprintln(out, "\nCOMMITS/event: xact_commit of the run's database, setup and close included. CPU s: the throughput")
	fmt.Fprintln(out, "run, open to close; bench is this process (twice and watermill run in it), postgres the backends")
	fmt.Fprintln(out, "connected to the run's database (not the WAL writer, checkpointer or other background processes).")
	fmt.Fprintln(out, "xact_commit also counts a transaction for each NOTIFY in every connection listening on the database,")
	fmt.Fprintln(out, "which reads the notification in it: twice's two nodes listen, so each of its bus sends counts three;")
	fmt.Fprintln(out, "watermill polls. PUBLISH p99 is the 99th percentile of the publish call alone (its commit included),")
	fmt.Fprintln(out, "AFTER p99 that of what followed until the handler started; each is a percentile of its own.")
	if rt.TwiceVsWatermillTunedConsume > 0 {
		fmt.Fprintf(out, "\ntwice Publish vs watermill tuned, consume: %.2fx%s (target 1.3x)\n", rt.TwiceVsWatermillTunedConsume,
			roundSpread(rounds, func(r eventsRatios) float64 { return r.TwiceVsWatermillTunedConsume }))
	}
	if rt.TwicePublishVsBare > 0 {
		fmt.Fprintf(out, "twice Publish vs bare INSERT+COMMIT, publish: %.2f (target 0.80)\n", rt.TwicePublishVsBare)
	}
	if rt.TwiceTxPublishVsBare > 0 {
		fmt.Fprintf(out, "twice PublishTx vs bare INSERT+COMMIT, publish: %.2f\n", rt.TwiceTxPublishVsBare)
	}
	return nil
}

// roundSpread is " (rounds a to b)", the range of one ratio over the rounds, taken within
// each round; "" for a single round. rounds holds each system's rounds.
func roundSpread(rounds [][]eventsRow, ratio func(eventsRatios) float64) string {
	if len(rounds) == 0 || len(rounds[0]) < 2 {
		return ""
	}
	var rs []float64
	for k := range rounds[0] {
		var row []eventsRow
		for _, sys := range rounds {
			if k < len(sys) {
				row = append(row, sys[k])
			}
		}
		if r := ratio(ratios(row)); r > 0 {
			rs = append(rs, r)
		}
	}
	if len(rs) < 2 {
		return ""
	}
	return fmt.Sprintf(" (rounds %.2fx to %.2fx)", slices.Min(rs), slices.Max(rs))
}

// harness creates and drops the runs' databases and measures what each run cost.
type harness struct {
	base  *url.URL  // the --dsn URL; a run's DSN is it with the database replaced
	admin *pgx.Conn // on --dsn's database: CREATE and DROP DATABASE, the counters
}

func newHarness(ctx context.Context, dsn string) (*harness, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, errors.New("--dsn must be a postgres:// URL")
	}
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	return &harness{base: u, admin: admin}, nil
}

func (h *harness) close() { _ = h.admin.Close(context.Background()) }

func (h *harness) dsnFor(db string) string {
	u := *h.base
	u.Path = "/" + db
	u.RawPath = ""
	return u.String()
}

// runUse is what one run cost.
type runUse struct {
	commits int64   // xact_commit of the run's database
	cpu     float64 // this process's CPU seconds
	pgCPU   float64 // the database's backends' CPU seconds; -1 if unknown
}

// onFreshDatabase creates a database, runs fn on it and measures it: this process's CPU
// over fn, its backends' CPU, and, once every backend has exited (a backend flushes its
// statistics when it exits, and at most once a second before), its committed transactions.
// The database is dropped afterwards.
func (h *harness) onFreshDatabase(ctx context.Context, label string, fn func(dsn string) error) (runUse, error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	db := "bench_ev_" + strings.NewReplacer("-", "_", "+", "_").Replace(strings.ToLower(label)) + "_" + hex.EncodeToString(b)
	if _, err := h.admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		return runUse{}, err
	}
	defer func() {
		_, _ = h.admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
	}()
	commits0, err := h.commits(ctx, db)
	if err != nil {
		return runUse{}, err
	}
	sampler, err := startBackendCPU(ctx, h.base.String(), db)
	if err != nil {
		return runUse{}, err
	}
	cpu0 := processCPU()
	err = fn(h.dsnFor(db))
	cpu1 := processCPU()
	pgCPU := sampler.stop()
	if err != nil {
		return runUse{}, err
	}
	if err := h.waitNoBackends(ctx, db); err != nil {
		return runUse{}, err
	}
	commits1, err := h.commits(ctx, db)
	if err != nil {
		return runUse{}, err
	}
	return runUse{commits: commits1 - commits0, cpu: cpu1 - cpu0, pgCPU: pgCPU}, nil
}

func (h *harness) commits(ctx context.Context, db string) (int64, error) {
	// A fresh snapshot of the statistics, not the one this session cached.
	if _, err := h.admin.Exec(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
		return 0, err
	}
	var n int64
	err := h.admin.QueryRow(ctx, "SELECT coalesce(xact_commit, 0) FROM pg_stat_database WHERE datname = $1", db).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return n, err
}

// waitNoBackends waits until no backend is connected to db, so every one has flushed its
// statistics.
func (h *harness) waitNoBackends(ctx context.Context, db string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		if err := h.admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", db).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d backends still connected to %s a minute after the run closed", n, db)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// backendCPU samples the CPU time of the backends connected to one database from
// /proc/<pid>/stat every 100 ms and keeps each backend's latest figure, so a backend that
// exits loses at most its last 100 ms. It works only where the server's processes are
// visible in this machine's /proc.
type backendCPU struct {
	stopc chan struct{}
	done  chan float64
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux
// architecture Go runs on.
const clockTicks = 100

func startBackendCPU(ctx context.Context, dsn, db string) (*backendCPU, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	b := &backendCPU{stopc: make(chan struct{}), done: make(chan float64, 1)}
	go func() {
		defer conn.Close(context.Background())
		ticks := map[int]int64{} // pid → utime+stime
		seen, read := 0, 0
		sample := func() {
			rows, err := conn.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = $1", db)
			if err != nil {
				return
			}
			pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
			if err != nil {
				return
			}
			for _, pid := range pids {
				seen++
				if t, ok := procTicks(int(pid)); ok {
					read++
					ticks[int(pid)] = t
				}
			}
		}
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for running := true; running; {
			sample()
			select {
			case <-t.C:
			case <-b.stopc:
				sample() // the backends that have not exited yet
				running = false
			case <-ctx.Done():
				running = false
			}
		}
		if seen > 0 && read == 0 {
			b.done <- -1 // the server's processes are not ours to see
			return
		}
		var sum int64
		for _, v := range ticks {
			sum += v
		}
		b.done <- float64(sum) / clockTicks
	}()
	return b, nil
}

// stop takes no further sample and returns the CPU seconds seen.
func (b *backendCPU) stop() float64 {
	close(b.stopc)
	return <-b.done
}

// procTicks reads a process's user and system time, in clock ticks.
func procTicks(pid int) (int64, bool) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may hold spaces; the fields after it start with
	// the state (field 3), so utime (14) and stime (15) are the 12th and 13th.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	var u, st int64
	if _, err := fmt.Sscan(f[11], &u); err != nil {
		return 0, false
	}
	if _, err := fmt.Sscan(f[12], &st); err != nil {
		return 0, false
	}
	return u + st, true
}

// openSQL opens a database/sql handle on dsn through pgx's stdlib driver, keeping up to
// idle connections between transactions (database/sql's default of 2 would close and
// reopen connections under four publishers).
func openSQL(dsn string, idle int) (*sql.DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxIdleConns(idle)
	return db, nil
}

// consumption counts handled events and says when all have been.
type consumption struct {
	total int64
	n     atomic.Int64
	done  chan struct{}
}

func newConsumption(total int) *consumption {
	return &consumption{total: int64(total), done: make(chan struct{})}
}

func (c *consumption) add() {
	if c.n.Add(1) == c.total {
		close(c.done)
	}
}

// wait returns when every event has been handled; it fails when none has been for 30 s
// (a lost event would hang the benchmark otherwise).
func (c *consumption) wait(ctx context.Context) error {
	last, since := c.n.Load(), time.Now()
	for {
		select {
		case <-c.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if now := c.n.Load(); now != last {
			last, since = now, time.Now()
		} else if time.Since(since) > 30*time.Second {
			return fmt.Errorf("consumer stuck at %d of %d events for 30s", now, c.total)
		}
	}
}

// publishAll runs publishers goroutines that call publish n times in all, and returns how
// long that took.
func publishAll(ctx context.Context, n, publishers int, publish func(i int) error) (time.Duration, error) {
	var next atomic.Int64
	errs := make(chan error, publishers)
	start := time.Now()
	for range publishers {
		go func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					errs <- nil
					return
				}
				if err := publish(int(i)); err != nil {
					next.Store(int64(n)) // the others stop too
					errs <- err
					return
				}
			}
		}()
	}
	var err error
	for range publishers {
		err = errors.Join(err, <-errs)
	}
	return time.Since(start), err
}

// publishAndConsume publishes n events as publishAll does and waits until got has
// counted them all; it returns the time until the last publish and until the last event.
func publishAndConsume(ctx context.Context, n, publishers int, got *consumption, publish func(i int) error) (time.Duration, time.Duration, error) {
	start := time.Now()
	pubTime, err := publishAll(ctx, n, publishers, publish)
	if err != nil {
		return 0, 0, err
	}
	if err := got.wait(ctx); err != nil {
		return 0, 0, err
	}
	return pubTime, time.Since(start), nil
}

// paceEvents calls send n times, the i-th at start + i/rate, so a slow send does not slow
// the rate.
func paceEvents(ctx context.Context, n, rate int, send func(i int) error) error {
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
		if err := send(i); err != nil {
			return err
		}
	}
	return nil
}
