// Command twice runs, inspects and measures services built on twice.
//
//	twice demo                               three instances on a SQLite file: failover, drain, fencing
//	twice status [--dsn DSN] [--json]        members, leader and locks of every service
//	twice migrate up|down|status|sql         manage the schema
//	twice config get|set|delete|list|history cluster-wide settings of a service
//	twice bench failover --kills N [--json]  measure leader failover after SIGKILL
//	twice jobs list|show|retry|cancel|stats  inspect and steer jobs
//	twice queues list|pause|resume           queues, paused and resumed cluster-wide
//	twice cron list|trigger                  schedules with their last and next tick
//	twice bench events [--bus URL] [--json]  measure event throughput and propagation latency
//	twice check [--store postgres --dsn DSN]  inject faults into running instances, check invariants
//	twice bench invalidation|config [--json] measure how fast a change reaches every instance
//	twice version
//
// Every command that needs a database takes --dsn, defaulting to $TWICE_DSN and then to
// sqlite:./twice.db. Unknown commands and flags print usage and exit with status 2. `twice
// check` exits with 1 when it found a violation and 3 when it could not run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/store"
)

const usage = `twice: run a service as several instances, correctly.

Usage:
  twice demo [--dsn DSN]                     three local instances: failover, drain and fencing
  twice status [--dsn DSN] [--service NAME] [--json]
                                             members, leader and locks of each service
  twice migrate up [--dsn DSN]               apply pending migrations
  twice migrate down [--dsn DSN] [--steps N | --all]
                                             undo the last N migrations (default 1)
  twice migrate status [--dsn DSN] [--json]  list migrations and whether each is applied
  twice migrate sql [--dsn DSN | --dialect postgres|sqlite]
                                             print the SQL, for your own migration tool
  twice config get KEY --service NAME [--json]
                                             a setting's value
  twice config set KEY VALUE --service NAME [--type T] [--if-version N] [--actor WHO] [--json]
                                             change a setting on every instance; T is string,
                                             int, float, bool, duration or json (needed for a new key)
  twice config delete KEY --service NAME [--if-version N] [--actor WHO]
  twice config list [PREFIX] --service NAME [--json]
  twice config history [KEY] --service NAME [--limit N] [--json]
                                             who changed what, when
  twice bench failover [--dsn DSN] --kills N [--graceful] [--json]
                                             kill the leader N times; print failover p50/p99
  twice jobs list [--state S,S] [--queue Q] [--kind K] [--tag T] [--limit N]
                                             jobs, newest first
  twice jobs show|retry|cancel ID            one job; retry a finished one; cancel one
  twice jobs stats                           jobs per queue and state
  twice queues list                          queues, paused or not, with their counts
  twice queues pause|resume NAME             stop or restart a queue on every instance
  twice cron list                            schedules with their last and next tick
  twice cron trigger NAME                    run a schedule's job now
                                             (jobs, queues and cron take --dsn, --schema,
                                             --service and --json)
  twice bench events [--dsn DSN] [--bus nats://…] [--events N] [--publishers P]
                     [--latency-events N] [--rate R] [--json]
                                             event throughput, and propagation p50/p99 between instances
  twice check [--store sqlite|postgres] [--dsn DSN] [--duration 60s] [--short] [--faults LIST]
              [--pg-restart-cmd CMD] [--json]
                                             run instances under faults; check every invariant;
                                             exit 1 on a violation, 3 if the check could not run
  twice bench invalidation [--dsn DSN] [--bus nats://…] [--count N] [--instances N] [--burst N] [--json]
                                             time cache invalidations from commit to every instance
  twice bench config [--dsn DSN] [--bus nats://…] [--count N] [--instances N] [--json]
                                             time setting changes from commit to every watcher
  twice version                              print the version

DSN defaults to $TWICE_DSN, then sqlite:./twice.db.
`

// errUsage marks an error in the command line: usage is printed and the exit status is 2.
var errUsage = errors.New("usage")

func main() {
	if len(os.Args) > 1 && os.Args[1] == "__instance" {
		// Hidden: one instance started by demo or bench, configured by the environment.
		os.Exit(instance.Main())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return exitStatus(dispatch(ctx, args, stdout, stderr), stdout, stderr)
}

// exitStatus reports a command's error and returns its exit status.
func exitStatus(err error, stdout, stderr io.Writer) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		if msg := strings.TrimPrefix(err.Error(), errUsage.Error()+": "); msg != errUsage.Error() {
			fmt.Fprintln(stderr, "twice:", msg)
		}
		fmt.Fprint(stderr, usage)
		return 2
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case errors.Is(err, errCheckNotRun):
		fmt.Fprintln(stderr, "twice:", err)
		return exitCheckNotRun
	case errors.Is(err, errViolations):
		fmt.Fprintln(stderr, "twice:", err)
		return exitViolations
	default:
		fmt.Fprintln(stderr, "twice:", err)
		return 1
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "version":
		if err := parse(flag.NewFlagSet("version", flag.ContinueOnError), rest); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "twice", version())
		return nil
	case "migrate":
		return migrateCmd(ctx, rest, stdout)
	case "status":
		return statusCmd(ctx, rest, stdout)
	case "config":
		return configCmd(ctx, rest, stdout)
	case "bench":
		return benchCmd(ctx, rest, stdout, stderr)
	case "demo":
		return demoCmd(ctx, rest, stdout)
	case "jobs":
		return jobsCmd(ctx, rest, stdout)
	case "queues":
		return queuesCmd(ctx, rest, stdout)
	case "cron":
		return cronCmd(ctx, rest, stdout)
	case "check":
		return checkCmd(ctx, rest, stdout, stderr)
	case "help", "-h", "--help", "-help":
		return flag.ErrHelp
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
}

// parse parses a subcommand's flags; any error, and any leftover argument, is a usage error.
func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s: unexpected argument %q", errUsage, fs.Name(), fs.Arg(0))
	}
	return nil
}

// dbFlags are the flags of every command that opens the database.
type dbFlags struct {
	dsn    string
	schema string
}

func (d *dbFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.dsn, "dsn", "", "database: sqlite:PATH or postgres://… (default $TWICE_DSN, then "+store.DefaultDSN+")")
	fs.StringVar(&d.schema, "schema", "", "PostgreSQL schema (default: the DSN's search_path)")
}

func (d *dbFlags) resolve() string {
	if d.dsn == "" {
		d.dsn = os.Getenv(twice.EnvDSN)
	}
	if d.dsn == "" {
		d.dsn = store.DefaultDSN
	}
	return d.dsn
}

// open opens the store; with mustExist, a SQLite file that does not exist yet is an error
// rather than a new empty database.
func (d *dbFlags) open(ctx context.Context, mustExist bool) (*store.Store, error) {
	dsn := d.resolve()
	if mustExist {
		if p, err := store.ParseDSN(dsn); err == nil && p.Dialect == store.SQLite {
			if _, err := os.Stat(p.Path); err != nil {
				return nil, fmt.Errorf("%s: no database file there yet (start an instance, or run `twice migrate up`)", p)
			}
		}
	}
	return store.Open(ctx, dsn, &store.Options{Schema: d.schema})
}

func version() string { return twice.BuildVersion() }

// parseArgs parses flags wherever they are among the arguments (`set KEY VALUE --type int`)
// and returns the others in order. Everything after "--" is an argument, for values that
// start with a dash.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}
