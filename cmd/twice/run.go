package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/twicehq/twice"
	runner "github.com/twicehq/twice/internal/run"
)

// runNote is the help of `twice run` after its usage line.
const runNote = `Each instance gets PORT (its own, chosen free), TWICE_INSTANCE (1 to N) and TWICE_DSN
(--dsn, then $TWICE_DSN, then sqlite:.twice/twice.db here; twice.Config reads it). It must
listen on PORT on 127.0.0.1 or every interface and answer --health with 2xx when ready.
SIGHUP, or the key r on a terminal, restarts the instances one at a time; Ctrl-C stops
all (SIGTERM, SIGKILL after --grace or at a second Ctrl-C).
Chaos faults: kill (SIGKILL), stop (SIGSTOP for D), and on a postgres:// DSN delay and drop
(its database connections, through a proxy of its own).`

// runCmd is `twice run`: the flags, the terminal, SIGHUP and the key r around internal/run.
func runCmd(ctx context.Context, args []string, stdout, _ io.Writer) error {
	cfg, err := runConfig(args)
	if err != nil {
		return err
	}
	out, _ := stdout.(*os.File)
	tty := out != nil && runner.IsTerminal(out)
	cfg.Out, cfg.Color, cfg.StatusLine = stdout, tty && os.Getenv("NO_COLOR") == "", tty
	hup := make(chan os.Signal, 1) // before Start: once the proxy is announced, SIGHUP restarts
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	r, err := runner.Start(ctx, cfg)
	if err != nil {
		return err
	}
	if tty && runner.IsTerminal(os.Stdin) {
		keys, stop := context.WithCancel(ctx)
		restored := make(chan struct{})
		defer func() { stop(); <-restored }() // the terminal back as it was before we exit
		go func() {
			defer close(restored)
			runner.ReadKeys(keys, os.Stdin, func(k byte) {
				if k == 'r' || k == 'R' {
					r.Roll()
				}
			})
		}()
	}
	// The first Ctrl-C (or SIGTERM) reaches main's context too and stops everything gently;
	// the second leaves the instances no more grace.
	stops := make(chan os.Signal, 2)
	signal.Notify(stops, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(stops)
	n := 0
	for {
		select {
		case <-hup:
			r.Roll()
		case <-stops:
			if n++; n == 2 {
				r.Kill()
			}
		case <-r.Done():
			return r.Wait()
		}
	}
}

// runConfig reads the command line of `twice run`: flags, then the command (after "--" when
// it has flags of its own).
func runConfig(args []string) (runner.Config, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	n := fs.Int("n", runner.InstancesDefault, "how many instances, 1 to 64")
	port := fs.Int("port", 8080, "the proxy's port on 127.0.0.1 (0: a free one, printed)")
	health := fs.String("health", runner.HealthPathDefault, "the health check's path: 2xx or 3xx passes")
	interval := fs.Duration("interval", runner.HealthIntervalDefault, "how often a ready instance is checked")
	fails := fs.Int("fails", runner.FailAfterDefault, "failed requests in a row that take an instance out until it passes a check")
	sticky := fs.Bool("sticky", false, "send each client back to its instance, by the cookie "+runner.StickyCookie)
	restart := fs.String("restart", string(runner.OnFailure), "what to do when an instance exits: never, on-failure or always (with backoff)")
	chaos := fs.Duration("chaos", 0, "inject one fault on a random instance every D (0: never)")
	faults := fs.String("faults", "", "the faults chaos picks from: kill,stop,delay,drop (default: all that apply)")
	dsn := fs.String("dsn", "", "the database all instances share (default $TWICE_DSN, then sqlite:.twice/twice.db)")
	grace := fs.Duration("grace", runner.GraceDefault, "how long an instance has between SIGTERM and SIGKILL")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return runner.Config{}, flagHelp(fs)
		}
		return runner.Config{}, fmt.Errorf("%w: run: %v", errUsage, err)
	}
	cmd := fs.Args()
	if len(cmd) == 0 {
		return runner.Config{}, fmt.Errorf("%w: run needs a command: twice run -n 3 -- ./myservice", errUsage)
	}
	bad := func(format string, a ...any) (runner.Config, error) {
		return runner.Config{}, fmt.Errorf("%w: run: "+format, append([]any{errUsage}, a...)...)
	}
	switch {
	case *n < 1 || *n > 64:
		return bad("-n %d: want 1 to 64", *n)
	case *port < 0 || *port > 65535:
		return bad("--port %d: want 0 to 65535", *port)
	case *interval < 10*time.Millisecond:
		return bad("--interval %v: want at least 10ms", *interval)
	case *fails < 1:
		return bad("--fails %d: want at least 1", *fails)
	case *chaos != 0 && *chaos < 10*time.Millisecond:
		return bad("--chaos %v: want at least 10ms, or 0 for none", *chaos)
	case *grace <= 0:
		return bad("--grace %v: want more than 0", *grace)
	case len(*health) == 0 || (*health)[0] != '/':
		return bad("--health %q: want a path starting with /", *health)
	case *faults != "" && *chaos == 0:
		return bad("--faults needs --chaos")
	}
	policy, err := runner.ParseRestart(*restart)
	if err != nil {
		return runner.Config{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	var fl []runner.Fault
	if *faults != "" {
		if fl, err = runner.ParseFaults(*faults); err != nil {
			return runner.Config{}, fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	if *dsn == "" {
		*dsn = os.Getenv(twice.EnvDSN)
	}
	return runner.Config{
		Command: cmd, Instances: *n, Listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)),
		HealthPath: *health, HealthInterval: *interval, FailAfter: *fails, Sticky: *sticky,
		Restart: policy, Chaos: *chaos, Faults: fl, DSN: *dsn, Grace: *grace,
	}, nil
}
