// Command twice runs, inspects and measures services built on twice. `twice help` lists the
// commands and `twice COMMAND -h` shows one with its flags; both come from the one command
// table in usage.go. Unknown commands and flags print usage and exit with status 2.
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

// exitStatus reports a command's error and returns its exit status: 0, 1 for a failure, 2
// for a usage error, and for `twice check` 1 for violations and 3 when it could not run.
func exitStatus(err error, stdout, stderr io.Writer) int {
	if h, ok := errorsAsHelp(err); ok {
		fmt.Fprint(stdout, h.text)
		return 0
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		if msg := strings.TrimPrefix(err.Error(), errUsage.Error()+": "); msg != errUsage.Error() {
			fmt.Fprintln(stderr, "twice:", msg)
		}
		text := usage()
		var u *usageError
		if errors.As(err, &u) && lookup(u.cmd) != nil {
			text = lookup(u.cmd).usage()
		}
		fmt.Fprint(stderr, text)
		return 2
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

// dispatch runs the command args name, from the table in usage.go.
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	if isHelp(args[0]) {
		return helpCmd(ctx, args[1:], stdout, stderr)
	}
	c := lookup(args[0])
	if c == nil {
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	if len(c.lines) > 1 && len(args) > 1 && isHelp(args[1]) {
		return &helpError{text: c.usage()}
	}
	err := c.run(ctx, args[1:], stdout, stderr)
	if errors.Is(err, errUsage) {
		return &usageError{cmd: c.name, err: err}
	}
	return err
}

// parse parses a subcommand's flags; any error, and any leftover argument, is a usage error.
func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flagHelp(fs)
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
	fs.StringVar(&d.schema, "schema", os.Getenv(twice.EnvSchema), "PostgreSQL schema (default $"+twice.EnvSchema+", then the DSN's search_path)")
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
				return nil, flagHelp(fs)
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
