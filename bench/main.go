// Command bench compares twice with other libraries on the same PostgreSQL. It is a module
// of its own so that the twice library never depends on them.
//
// Without a subcommand it runs twice's job queue and River v0.51.1 side by side on the same
// database, in the same run, each at its own defaults and tuned, and prints a table (or
// JSON with --json):
//
//	go run . --dsn postgres://postgres@127.0.0.1:5432/test?sslmode=disable
//
// Work is the time to drain N pre-inserted no-op jobs until every one is recorded as
// completed; insert is bulk insertion (twice EnqueueMany, River InsertManyFast); latency is
// enqueue to handler start for single jobs at a light rate, after --warmup (200) jobs
// enqueued the same way and not timed. Beside its p99 the table splits the tail: ENQUEUE
// p99 is the enqueue call's own (its commit included), AFTER p99 that of what followed
// until the handler started (the wake-up, the fetch, the hand-off). Each round also
// measures the floor of the server at the same rate: an INSERT's commit, then an UPDATE of
// the row by its id from a second connection, with no wake-up (see floorLatency); a queue
// that commits its enqueue and its claim cannot be faster. The SQLite figure is twice with
// three local processes working one file. --report FILE.html writes a page of the run with
// twice and River side by side: the figures, each work run's jobs per second over time, and
// each latency run's percentiles over time.
//
// --rounds N runs every system and configuration N times, the systems taking turns and each
// round starting with the next; the table and JSON's figures are the medians, JSON's rounds
// the figures of each round, and the work ratio of twice defaults to River tuned is also
// shown as its range over the rounds, each round's from two runs close in time. It defaults
// to 1; on a shared machine one run's ratio swings widely, so a comparison wants 3 or more.
//
// --statements resets pg_stat_statements as each work run starts working and reads it when
// the run ends, and prints each system's top 5 statements by execution time (calls, total
// ms, rows, µs per row), summed over the rounds; JSON has them as statements. A run's
// statements are those naming its schema (both systems qualify their tables with it), so
// BEGIN, COMMIT and the bench's own polls are not among them. The reset clears the server's
// statistics for every database. The server needs shared_preload_libraries =
// 'pg_stat_statements' (and a restart); without it the bench says so and goes on. With
// --cpuprofile, the two show where twice's time goes, in its process and in PostgreSQL.
// --memprofile writes the allocations of the same run (every 512th byte sampled), which
// show what feeds the garbage collector: `go tool pprof -sample_index=alloc_space`.
//
// The events subcommand runs twice's event log against watermill v1.5.1 with
// watermill-sql/v4 v4.1.2 (PostgreSQL schema and offsets adapters, publishing through a
// *sql.Tx), at watermill's defaults (poll 1 s, batch 100) and tuned (poll 10 ms, batch
// 1000), and against a bare loop of BEGIN, INSERT of one row and COMMIT, the publishing
// side's physical limit:
//
//	go run . events --dsn postgres://postgres@127.0.0.1:5432/test?sslmode=disable [--rounds 3] [--json] [--cpuprofile f]
//
// Each system runs the shape of `twice bench events`: 4 publishers, one event per
// transaction, 20,000 events (--events), consumed by a shared group (twice, 8 partitions)
// or consumer group (watermill) on a second instance in this process; then 2,000 single
// events at 200/s (--latency-events, --rate) after 200 untimed ones (--warmup-events),
// timed from before the publishing transaction begins to the handler, its tail split as the
// jobs' is (PUBLISH p99, AFTER p99). twice runs twice: with Publish, as `twice bench
// events` does, and with PublishTx in a *sql.Tx like watermill's. Every run gets a database
// of its own, created beside the --dsn database and dropped afterwards; the systems take
// turns, each round starting with the next, and the table shows the median of --rounds
// rounds. Beside throughput and latency it reports commits per event (xact_commit of the
// run's database in pg_stat_database, read once its last backend has exited, setup and
// close included), this process's CPU seconds over the throughput run (twice and watermill
// both run in it), and the CPU seconds of the PostgreSQL backends connected to the run's
// database, read from /proc when the server runs on this machine (WAL writer, checkpointer
// and other background processes not included). --systems picks some of twice, twice-tx,
// watermill, watermill-tuned and bare. --cpuprofile writes a CPU profile of this process
// over the first round's twice Publish throughput run.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/report"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// envChild marks a child process of the SQLite benchmark; it carries the DSN.
const envChild = "TWICE_BENCH_CHILD"

type params struct {
	dsn        string
	work       int
	insert     int
	latency    int
	warmup     int
	rate       int
	sqliteWork int
	only       string
	cpuProfile string
	memProfile string
	rounds     int
	statements bool
	txLatency  bool
	secret     []byte // twice's Config.ClusterSecret; nil unless --signed
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "events" {
		eventsMain(os.Args[2:])
		return
	}
	if dsn := os.Getenv(envChild); dsn != "" {
		if err := child(dsn); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	var p params
	flag.StringVar(&p.dsn, "dsn", envOr("TWICE_BENCH_DSN", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL database both systems run on")
	flag.IntVar(&p.work, "work", 100_000, "jobs drained in each work run")
	flag.IntVar(&p.insert, "insert", 100_000, "jobs bulk-inserted in each insert run")
	flag.IntVar(&p.latency, "latency", 2_000, "single jobs enqueued in each latency run (its p99 is the 20th slowest of the default 2,000)")
	flag.IntVar(&p.warmup, "warmup", 200, "jobs each latency run enqueues at its rate before the timed ones, and does not time: "+
		"the first jobs on a run's fresh schema wait for new connections and first statement preparations")
	flag.IntVar(&p.rate, "rate", 100, "jobs per second in the latency runs")
	flag.IntVar(&p.sqliteWork, "sqlite-work", 30_000, "jobs drained by three processes on SQLite (0 skips it)")
	flag.StringVar(&p.only, "only", "both", "twice, river or both")
	flag.StringVar(&p.cpuProfile, "cpuprofile", "", "write a CPU profile of twice's default work run (the first round's) here")
	flag.StringVar(&p.memProfile, "memprofile", "", "write an allocation profile of twice's default work run (the first round's) here")
	flag.IntVar(&p.rounds, "rounds", 1, "rounds; each runs every system once, in turn, and the median is reported (a comparison wants 3 or more)")
	flag.BoolVar(&p.statements, "statements", false, "report each work run's top statements from pg_stat_statements, when the server has it loaded")
	flag.BoolVar(&p.txLatency, "tx-latency", false, "twice's latency runs enqueue with EnqueueTx in a transaction that then commits")
	signed := flag.Bool("signed", false, "twice's nodes sign their bus messages with a random cluster secret")
	asJSON := flag.Bool("json", false, "print JSON")
	reportPath := flag.String("report", "", "write an HTML page of the run to this file: twice and River side by side")
	flag.Parse()
	if *signed {
		p.secret = make([]byte, 32)
		_, _ = rand.Read(p.secret)
	}
	os.Exit(benchmark(context.Background(), p, *asJSON, *reportPath))
}

// benchmark runs the benchmark, prints its result and writes its page to reportPath unless
// that is empty. It returns the exit status: 2 when no page can be written there (found
// before anything runs), 1 for a failure.
func benchmark(ctx context.Context, p params, asJSON bool, reportPath string) int {
	var page *report.File
	if reportPath != "" {
		var err error
		if page, err = report.Create(reportPath); err != nil {
			fmt.Fprintln(os.Stderr, "bench: --report", err)
			var pe *report.PathError
			if errors.As(err, &pe) {
				return 2
			}
			return 1
		}
		defer page.Discard()
	}
	res, err := run(ctx, p)
	if err == nil {
		err = res.print(os.Stdout, asJSON)
	}
	if err == nil && page != nil {
		if err = page.Write(res.page().Write); err == nil {
			progress("report: %s", page.Path())
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// row is one measured configuration.
type row struct {
	System     string  `json:"system"`
	Config     string  `json:"config"`
	WorkPerSec float64 `json:"work_jobs_per_sec"`
	InsertPer  float64 `json:"insert_jobs_per_sec"`
	LatencyP50 float64 `json:"latency_p50_ms"`
	LatencyP99 float64 `json:"latency_p99_ms"`
	// Where the tail lies (see split): the p99 of the enqueue call alone, and of what
	// followed until the handler started.
	EnqueueP99  float64 `json:"enqueue_p99_ms"`
	AfterP99    float64 `json:"after_enqueue_p99_ms"`
	Description string  `json:"description"`
	// Over time, for --report: the work run's jobs per second from the moment it starts
	// working, and the latency run's percentiles by when the jobs were enqueued.
	WorkS    float64        `json:"work_s"`
	Work     report.Rate    `json:"work_over_time"`
	LatencyS float64        `json:"latency_s"`
	Latency  report.Latency `json:"latency_over_time"`
}

// system is one queue under test in one configuration.
type system interface {
	name() (system, config, description string)
	// work pre-inserts n jobs, then works them and returns when all are completed. Its
	// handler counts the jobs on w, which it starts when working starts.
	work(ctx context.Context, schema string, n int, w *workMeter) (time.Duration, error)
	insert(ctx context.Context, schema string, n int) (time.Duration, error)
	latency(ctx context.Context, schema string, n, rate int) ([]timed, error)
}

// result is a whole run: a row per system and configuration, each figure the median of its
// rounds, and twice's figure on SQLite.
type result struct {
	p            params
	rows         []row
	rounds       [][]row // per system, as in rows: its figures in each round
	sqlitePerSec float64
	sqliteRounds []float64
	floor        row                // the median of floorRounds: see floorLatency
	floorRounds  []row              // the floor's latency figures in each round
	statements   []systemStatements // with --statements, per system as in rows
}

func run(ctx context.Context, p params) (result, error) {
	res := result{p: p}
	if p.rounds < 1 {
		return res, errors.New("--rounds must be positive")
	}
	if p.warmup < 0 {
		return res, errors.New("--warmup must not be negative")
	}
	admin, err := pgx.Connect(ctx, p.dsn)
	if err != nil {
		return res, err
	}
	defer admin.Close(context.Background())
	var systems []system
	if p.only != "river" {
		systems = append(systems, twiceDefaults(p), twiceTuned(p))
	}
	if p.only != "twice" {
		systems = append(systems, riverDefaults(p), riverTuned(p))
	}
	var stats *statementStats
	if p.statements {
		if stats, err = openStatementStats(ctx, admin); err != nil {
			return res, err
		}
	}
	rounds := make([][]row, len(systems))
	used := make([][]statement, len(systems))
	for r := range p.rounds {
		// Each round starts with the next system, so none always runs first or after the same one.
		for k := range systems {
			i := (r + k) % len(systems)
			rw, st, err := measure(ctx, admin, systems[i], p, r, stats)
			if err != nil {
				return res, err
			}
			rounds[i], used[i] = append(rounds[i], rw), append(used[i], st...)
		}
		progress("round %d: floor: %d pairs of commits at %d/s after %d untimed", r+1, p.latency, p.rate, p.warmup)
		var lat []timed
		_, err := withSchema(ctx, admin, func(schema string) (time.Duration, error) {
			var err error
			lat, err = floorLatency(ctx, p.dsn, schema, p.warmup+p.latency, p.rate)
			return 0, err
		})
		if err != nil {
			return res, err
		}
		fr := row{System: floorName, Config: "two commits", Description: "INSERT, then UPDATE by id from a second connection; no wake-up"}
		fr.latencies(afterWarmup(lat, p.warmup))
		res.floorRounds = append(res.floorRounds, fr)
		if p.sqliteWork > 0 && p.only != "river" {
			progress("round %d: twice sqlite: work %d with 3 processes", r+1, p.sqliteWork)
			d, err := sqliteWork(ctx, p.sqliteWork)
			if err != nil {
				return res, fmt.Errorf("sqlite: %w", err)
			}
			res.sqliteRounds = append(res.sqliteRounds, float64(p.sqliteWork)/d.Seconds())
		}
	}
	res.rounds = rounds
	if len(res.floorRounds) > 0 {
		res.floor = medianOfRounds(res.floorRounds)
	}
	for i, rs := range rounds {
		res.rows = append(res.rows, medianOfRounds(rs))
		if stats != nil {
			res.statements = append(res.statements, systemStatements{System: res.rows[i].System, Config: res.rows[i].Config, Top: topStatements(used[i], 5)})
		}
	}
	res.sqlitePerSec = median(res.sqliteRounds)
	return res, nil
}

// measure runs sys once, round r: its work, insert and latency runs, each in a fresh schema.
// With stats it also returns the statements of the work run, from when it starts working.
func measure(ctx context.Context, admin *pgx.Conn, sys system, p params, r int, stats *statementStats) (row, []statement, error) {
	s, cfg, desc := sys.name()
	rw := row{System: s, Config: cfg, Description: desc}
	progress("round %d: %s %s: work %d", r+1, s, cfg, p.work)
	var w workMeter
	var st []statement
	var resetErr error
	d, err := withSchema(ctx, admin, func(schema string) (time.Duration, error) {
		if stats != nil {
			// The reset runs as the run starts working, before its clock starts: the
			// statements are the draining's, not the pre-insertion's.
			w.onStart = func() { resetErr = stats.reset(ctx) }
		}
		var d time.Duration
		var err error
		if (p.cpuProfile != "" || p.memProfile != "") && s == "twice" && cfg == "defaults" && r == 0 {
			d, err = profiled(p.cpuProfile, p.memProfile, func() (time.Duration, error) { return sys.work(ctx, schema, p.work, &w) })
		} else {
			d, err = sys.work(ctx, schema, p.work, &w)
		}
		if err == nil && stats != nil {
			if err = resetErr; err == nil {
				st, err = stats.read(ctx, schema)
			}
		}
		return d, err
	})
	rw.Work = w.stop(d)
	if err != nil {
		return rw, nil, fmt.Errorf("%s %s work: %w", s, cfg, err)
	}
	rw.WorkS, rw.WorkPerSec = d.Seconds(), float64(p.work)/d.Seconds()
	progress("round %d: %s %s: insert %d", r+1, s, cfg, p.insert)
	d, err = withSchema(ctx, admin, func(schema string) (time.Duration, error) { return sys.insert(ctx, schema, p.insert) })
	if err != nil {
		return rw, nil, fmt.Errorf("%s %s insert: %w", s, cfg, err)
	}
	rw.InsertPer = float64(p.insert) / d.Seconds()
	progress("round %d: %s %s: latency %d at %d/s after %d untimed", r+1, s, cfg, p.latency, p.rate, p.warmup)
	var lat []timed
	_, err = withSchema(ctx, admin, func(schema string) (time.Duration, error) {
		var err error
		lat, err = sys.latency(ctx, schema, p.warmup+p.latency, p.rate)
		return 0, err
	})
	if err != nil {
		return rw, nil, fmt.Errorf("%s %s latency: %w", s, cfg, err)
	}
	rw.latencies(afterWarmup(lat, p.warmup))
	return rw, st, nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// profiled runs fn with a CPU profile written to cpu and an allocation profile to mem; an
// empty path skips that profile. The allocation profile counts from the process's start,
// but the run it wraps is the first of the bench, so little comes before it.
func profiled(cpu, mem string, fn func() (time.Duration, error)) (time.Duration, error) {
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 0, err
		}
		defer pprof.StopCPUProfile()
	}
	if mem == "" {
		return fn()
	}
	f, err := os.Create(mem)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	// A finer rate than Go's default (one sample per 512 KiB), for what fn allocates.
	prev := runtime.MemProfileRate
	runtime.MemProfileRate = 512
	defer func() { runtime.MemProfileRate = prev }()
	d, err := fn()
	if err != nil {
		return d, err
	}
	runtime.GC() // the profile is as of the last collection
	return d, pprof.Lookup("allocs").WriteTo(f, 0)
}

// withSchema runs fn in a fresh schema, dropped afterwards, so no run sees another's rows
// or dead tuples.
func withSchema(ctx context.Context, admin *pgx.Conn, fn func(schema string) (time.Duration, error)) (time.Duration, error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	schema := "bench_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		return 0, err
	}
	defer admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	return fn(schema)
}

// find is the row of a system in a configuration, or none.
func (res result) find(sys, cfg string) row {
	for _, r := range res.rows {
		if r.System == sys && r.Config == cfg {
			return r
		}
	}
	return row{}
}

// print writes the result as a table, or JSON.
func (res result) print(out io.Writer, asJSON bool) error {
	find, rows, sqlitePerSec := res.find, res.rows, res.sqlitePerSec
	if asJSON {
		doc := map[string]any{
			"twice_work_jobs_per_sec":         find("twice", "defaults").WorkPerSec,
			"river_work_jobs_per_sec":         find("river", "tuned").WorkPerSec,
			"twice_insert_jobs_per_sec":       find("twice", "defaults").InsertPer,
			"river_insert_jobs_per_sec":       find("river", "defaults").InsertPer,
			"twice_latency_p99_ms":            find("twice", "defaults").LatencyP99,
			"river_latency_p99_ms":            find("river", "tuned").LatencyP99,
			"twice_sqlite_3proc_jobs_per_sec": sqlitePerSec,
			"runs":                            rows,
			"rounds":                          res.byRound(),
		}
		if res.sqliteRounds != nil {
			doc["twice_sqlite_3proc_rounds"] = res.sqliteRounds
		}
		if res.floorRounds != nil {
			doc["floor"], doc["floor_rounds"] = res.floor, res.floorRounds
		}
		if ratios := res.workRatios(); ratios != nil {
			doc["twice_vs_river_tuned_work_rounds"] = ratios
		}
		if res.statements != nil {
			doc["statements"] = res.statements
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	if n := len(res.byRound()); n > 1 {
		fmt.Fprintf(out, "median of %d rounds, the systems taking turns\n\n", n)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SYSTEM\tCONFIG\tWORK jobs/s\tINSERT jobs/s\tLATENCY p50 ms\tp99 ms\tENQUEUE p99\tAFTER p99\tSETTINGS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\n", r.System, r.Config, r.WorkPerSec, r.InsertPer, r.LatencyP50, r.LatencyP99,
			r.EnqueueP99, r.AfterP99, r.Description)
	}
	_ = tw.Flush()
	fmt.Fprintln(out, "ENQUEUE p99 is the 99th percentile of the enqueue call alone (its commit included), AFTER p99 that of what followed until the handler started")
	if f := res.floor; f.LatencyP99 > 0 {
		fmt.Fprintf(out, "\nfloor of this server, two one-row commits in series at %d/s (%s): p50 %.2f ms, p99 %.2f ms (first commit p99 %.2f, second %.2f)\n",
			res.p.rate, f.Description, f.LatencyP50, f.LatencyP99, f.EnqueueP99, f.AfterP99)
	}
	if sqlitePerSec > 0 {
		fmt.Fprintf(out, "\ntwice on SQLite, 3 processes on one file: %.0f jobs/s\n", sqlitePerSec)
	}
	if c := res.comparisons(); len(c) > 0 {
		fmt.Fprintf(out, "\n%s\n", strings.Join(c, "\n"))
	}
	if res.statements != nil {
		fmt.Fprintln(out)
		printStatements(out, res.statements, len(res.byRound()))
	}
	return nil
}

// comparisons are twice's figures against River's, each against the target it has.
func (res result) comparisons() []string {
	var out []string
	if t, r := res.find("twice", "defaults"), res.find("river", "tuned"); t.WorkPerSec > 0 && r.WorkPerSec > 0 {
		spread := ""
		if ratios := res.workRatios(); len(ratios) > 1 {
			spread = fmt.Sprintf(" (rounds %.2fx to %.2fx)", slices.Min(ratios), slices.Max(ratios))
		}
		floor := ""
		if res.floor.LatencyP99 > 0 {
			floor = fmt.Sprintf("; the floor's %.2f ms", res.floor.LatencyP99)
		}
		out = append(out, fmt.Sprintf("twice defaults vs River tuned: work %.2fx%s (target 2.5x), p99 %.2f ms (target 3 ms%s)", t.WorkPerSec/r.WorkPerSec, spread, t.LatencyP99, floor))
	}
	if t, r := res.find("twice", "defaults"), res.find("river", "defaults"); t.InsertPer > 0 && r.InsertPer > 0 {
		out = append(out, fmt.Sprintf("bulk insert, twice EnqueueMany vs River InsertManyFast: %.2fx (target 1.5x)", t.InsertPer/r.InsertPer))
	}
	return out
}

// pool opens a pgx pool whose connections work in schema.
func pool(ctx context.Context, dsn, schema string, size int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	if size > 0 {
		cfg.MaxConns = size
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// waitCount polls count until it reaches n; the bound is a liveness guard only.
func waitCount(ctx context.Context, n int, count func(context.Context) (int, error)) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		got, err := count(ctx)
		if err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d jobs completed in 10 minutes", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitWorked waits until the handler has run n times, then until the database records n
// completions.
func waitWorked(ctx context.Context, worked *atomic.Int64, n int, count func(context.Context) (int, error)) error {
	if err := waitCount(ctx, n, func(context.Context) (int, error) { return int(worked.Load()), nil }); err != nil {
		return err
	}
	return waitCount(ctx, n, count)
}

// latencyRecorder collects enqueue-to-start latencies, and when each enqueue returned to
// its producer: the split of a job's latency between its enqueue's commit and what follows.
type latencyRecorder struct {
	mu       sync.Mutex              // protects got and returned
	got      []timed                 // as each handler starts; returned not yet filled in
	returned map[int64]time.Duration // by sent time: from sending to the producer's call returning
}

func (l *latencyRecorder) add(sentUnixNano int64) {
	sent := time.Unix(0, sentUnixNano)
	d := time.Since(sent)
	l.mu.Lock()
	l.got = append(l.got, timed{sent: sent, d: d})
	l.mu.Unlock()
}

// sent records that the producer's call for the job sent at sentUnixNano returned, its
// commit done. Each job's sent time is its key: a producer sends one at a time.
func (l *latencyRecorder) sent(sentUnixNano int64) {
	d := time.Since(time.Unix(0, sentUnixNano))
	l.mu.Lock()
	if l.returned == nil {
		l.returned = make(map[int64]time.Duration)
	}
	l.returned[sentUnixNano] = d
	l.mu.Unlock()
}

func (l *latencyRecorder) n() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.got)
}

// timed returns the jobs whose handlers started, each with the time its producer's call
// took where that was recorded.
func (l *latencyRecorder) timed() []timed {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.got)
	for i := range out {
		out[i].returned = l.returned[out[i].sent.UnixNano()]
	}
	return out
}

// pace calls send n times at rate per second.
func pace(ctx context.Context, n, rate int, send func(i int) error) error {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := range n {
		if err := send(i); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// sqliteWork drains n jobs with three child processes on one SQLite file.
func sqliteWork(ctx context.Context, n int) (time.Duration, error) {
	dir, err := os.MkdirTemp("", "twice-bench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	dsn := "sqlite:" + filepath.Join(dir, "bench.db")
	s, err := store.Open(ctx, dsn, nil)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	if _, err := store.NewMigrator(s, twice.Components()...).Up(ctx); err != nil {
		return 0, err
	}
	jc, err := jobs.New(block.Deps{Store: s, Service: "bench", Instance: "bench-loader"}, jobs.Config{})
	if err != nil {
		return 0, err
	}
	defer jc.Close(ctx)
	if err := insertTwice(ctx, jc, n); err != nil {
		return 0, err
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	var kids []*exec.Cmd
	var gos []io.WriteCloser
	defer func() {
		for _, g := range gos {
			_ = g.Close() // a child exits when its standard input closes
		}
		for _, k := range kids {
			_ = k.Wait()
		}
	}()
	for range 3 {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envChild+"="+dsn)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return 0, err
		}
		outp, err := cmd.StdoutPipe()
		if err != nil {
			return 0, err
		}
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		kids = append(kids, cmd)
		gos = append(gos, in)
		if line, err := bufio.NewReader(outp).ReadString('\n'); err != nil || line != "ready\n" {
			return 0, fmt.Errorf("child not ready: %q %v", line, err)
		}
	}
	start := time.Now()
	for _, g := range gos {
		if _, err := io.WriteString(g, "go\n"); err != nil {
			return 0, err
		}
	}
	err = waitCount(ctx, n, func(ctx context.Context) (int, error) {
		st, err := jc.Stats(ctx)
		if err != nil || len(st) == 0 {
			return 0, err
		}
		return st[0].Completed, nil
	})
	return time.Since(start), err
}

// child is one SQLite worker process: it opens a node, says "ready", registers its no-op
// worker when told "go", and exits when its standard input closes.
func child(dsn string) error {
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: dsn, Name: "bench", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer node.Close(ctx)
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return err
	}
	if err := jobs.Register(node.Jobs(), jobs.WorkFunc[noopArgs](func(context.Context, *jobs.Job[noopArgs]) error { return nil })); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, in)
	return nil
}
