package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/twicehq/twice/internal/check"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/redact"
	"github.com/twicehq/twice/internal/report"
	"github.com/twicehq/twice/store"
)

// errViolations makes `twice check` exit with status 1 after printing its report.
var errViolations = errors.New("check: invariants violated")

// errCheckNotRun makes `twice check` exit with status 3: the check could not run (the
// database was unreachable, the setup failed, an instance did not start), so it says
// nothing about the invariants, which a status of 1 would claim.
var errCheckNotRun = errors.New("check could not run")

// Exit statuses of `twice check` besides 0 (no violation) and 2 (usage).
const (
	exitViolations  = 1
	exitCheckNotRun = 3
)

// checkRunner runs a check: [check.Run], or a stand-in in tests of the exit statuses.
type checkRunner func(context.Context, check.Params) (*check.Report, error)

func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return checkWith(ctx, args, stdout, stderr, check.Run)
}

// checkWith is checkCmd with run doing the check. Every error but a usage error or
// violations means the check could not run.
func checkWith(ctx context.Context, args []string, stdout, stderr io.Writer, run checkRunner) error {
	err := checkRun(ctx, args, stdout, stderr, run)
	if err == nil || errors.Is(err, errUsage) || errors.Is(err, errViolations) || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return fmt.Errorf("%w: %w", errCheckNotRun, err)
}

func checkRun(ctx context.Context, args []string, stdout, stderr io.Writer, run checkRunner) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	kind := fs.String("store", "sqlite", "sqlite (a scratch file unless --dsn) or postgres (needs --dsn or $TWICE_DSN)")
	instances := fs.Int("instances", 3, "instance processes to run")
	duration := fs.Duration("duration", time.Minute, "how long to inject faults")
	short := fs.Bool("short", false, "the CI run: 30s of faults every 2s")
	faults := fs.String("faults", "", "comma-separated fault kinds (default: all the store supports): "+strings.Join(check.AllFaults, ","))
	every := fs.Duration("fault-every", 4*time.Second, "mean time between faults")
	restart := fs.String("pg-restart-cmd", "", "shell command that restarts the PostgreSQL server (enables the pg-restart fault)")
	ttl := fs.Duration("lease-ttl", time.Second, "lease TTL of the instances")
	seed := fs.Uint64("seed", 0, "seed of the fault schedule (default random, printed)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	logPath := fs.String("instance-log", "", "write the instances' own logs (warnings, elections) to this file")
	reportPath := fs.String("report", "", "write the run's HTML report (timeline, latency, invariants) to this file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *short {
		*duration, *every = 30*time.Second, 2*time.Second
	}
	if *instances < 2 || *instances > 20 {
		return fmt.Errorf("%w: check: --instances must be 2 to 20", errUsage)
	}
	if *duration < time.Second || *every < 100*time.Millisecond || *ttl < 200*time.Millisecond {
		return fmt.Errorf("%w: check: --duration, --fault-every or --lease-ttl too short", errUsage)
	}
	var faultList []string
	if *faults != "" {
		faultList = strings.Split(*faults, ",")
		for _, f := range faultList {
			if !slices.Contains(check.AllFaults, f) {
				return fmt.Errorf("%w: check: unknown fault %q", errUsage, f)
			}
		}
	}
	// The report's file is made now, so a path that cannot be written fails before the
	// minutes of the run, not after.
	var page *report.File
	if *reportPath != "" {
		var err error
		if page, err = createReport("check", *reportPath); err != nil {
			return err
		}
		defer page.Discard()
	}
	dsn, schema, cleanup, err := checkTarget(ctx, *kind, &db)
	if err != nil {
		return err
	}
	defer cleanup()
	spawn, err := instance.Self("__instance")
	if err != nil {
		return err
	}
	var instanceLog io.Writer
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			return fmt.Errorf("check: instance log: %w", err)
		}
		defer f.Close()
		instanceLog = f
	}
	progress := stdout
	if *asJSON {
		progress = stderr
	}
	fmt.Fprintf(progress, "twice check: %s, %d instances, faults for %v\n", *kind, *instances, *duration)
	rep, err := run(ctx, check.Params{DSN: dsn, Schema: schema, Instances: *instances, Duration: *duration,
		Faults: faultList, FaultEvery: *every, PGRestartCmd: *restart, LeaseTTL: *ttl, Seed: *seed,
		Spawn: spawn, Progress: progress, InstanceLog: instanceLog})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printCheck(stdout, rep)
	}
	if page != nil {
		if err := page.Write(rep.WriteHTML); err != nil {
			return fmt.Errorf("check: %w", err)
		}
		fmt.Fprintf(progress, "report: %s\n", page.Path())
	}
	if rep.Violations > 0 {
		return fmt.Errorf("%w: %d violations", errViolations, rep.Violations)
	}
	return nil
}

// checkTarget resolves where the check runs. SQLite without --dsn gets a scratch file;
// PostgreSQL without --schema gets a scratch schema; both are removed afterwards.
func checkTarget(ctx context.Context, kind string, db *dbFlags) (dsn, schema string, cleanup func(), err error) {
	given := db.dsn != "" || os.Getenv("TWICE_DSN") != ""
	switch kind {
	case "sqlite":
		if given {
			dsn = db.resolve()
			if d, err := store.ParseDSN(dsn); err != nil || d.Dialect != store.SQLite {
				return "", "", nil, fmt.Errorf("%w: check: --store sqlite needs a DSN of the form sqlite:PATH", errUsage)
			}
			return dsn, "", func() {}, nil
		}
		dir, err := os.MkdirTemp("", "twice-check-")
		if err != nil {
			return "", "", nil, err
		}
		return "sqlite:" + filepath.Join(dir, "twice.db"), "", func() { os.RemoveAll(dir) }, nil
	case "postgres":
		if !given {
			return "", "", nil, fmt.Errorf("%w: check: --store postgres needs --dsn (or $TWICE_DSN)", errUsage)
		}
		dsn = db.resolve()
		if d, err := store.ParseDSN(dsn); err != nil || d.Dialect != store.Postgres {
			return "", "", nil, fmt.Errorf("%w: check: --store postgres with a DSN that is not postgres://", errUsage)
		}
		if db.schema != "" {
			return dsn, db.schema, func() {}, nil
		}
		schema = "twice_check_" + randHex(4)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return "", "", nil, fmt.Errorf("check: %s: %w", store.Redact(dsn), redact.Error(err, dsn))
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
			return "", "", nil, err
		}
		return dsn, schema, func() {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if c, err := pgx.Connect(cctx, dsn); err == nil {
				_, _ = c.Exec(cctx, "DROP SCHEMA "+schema+" CASCADE")
				c.Close(cctx)
			}
		}, nil
	default:
		return "", "", nil, fmt.Errorf("%w: check: --store must be sqlite or postgres, not %q", errUsage, kind)
	}
}

// createReport makes the file of cmd's --report page before the run, so a path that cannot
// be written fails before the minutes of the run, not after: as a usage error.
func createReport(cmd, path string) (*report.File, error) {
	f, err := report.Create(path)
	var pe *report.PathError
	if errors.As(err, &pe) {
		return nil, fmt.Errorf("%w: %s: --report %v", errUsage, cmd, pe)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return f, nil
}

func printCheck(w io.Writer, rep *check.Report) {
	var kinds []string
	for k := range rep.Faults {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	fmt.Fprintf(w, "\n%s, %d instances, %.0f s, seed %d\nfaults injected:", rep.Store, rep.Instances, rep.DurationS, rep.Seed)
	for _, k := range kinds {
		fmt.Fprintf(w, " %s %d", k, rep.Faults[k])
	}
	fmt.Fprintln(w)
	if rep.Stalls > 0 {
		fmt.Fprintf(w, "heartbeat stalls past dead-after on instances no fault explains: %d (an overloaded machine; judged as faults for jobs)\n", rep.Stalls)
	}
	fmt.Fprintln(w)
	width := len("INVARIANT")
	for _, inv := range rep.Invariants {
		width = max(width, len(inv.Name))
	}
	fmt.Fprintf(w, "%-*s  %10s  %10s\n", width, "INVARIANT", "OPERATIONS", "VIOLATIONS")
	for _, inv := range rep.Invariants {
		fmt.Fprintf(w, "%-*s  %10d  %10d\n", width, inv.Name, inv.Operations, inv.Violations)
	}
	for _, inv := range rep.Invariants {
		for _, d := range inv.Details {
			fmt.Fprintf(w, "  %s: %s\n", inv.Name, d)
		}
	}
	if rep.Violations == 0 {
		fmt.Fprintln(w, "\nverdict: OK, no violation")
	} else {
		fmt.Fprintf(w, "\nverdict: %d VIOLATIONS\n", rep.Violations)
	}
}
