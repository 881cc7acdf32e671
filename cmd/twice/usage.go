package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// command is one command of the CLI: `twice NAME …`. The table below is the only place the
// commands are listed: dispatch, the usage text and each command's help come from it.
type command struct {
	name  string
	lines []usageLine // one per subcommand; sub is "" for a command without any
	note  string      // said after the command's lines in its own help
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// usageLine is one subcommand: `twice NAME SUB ARGS`, and what it does. sub may list
// several names that share a line: "show|retry|cancel".
type usageLine struct{ sub, args, desc string }

// Notes on the defaults of shared flags, said in the help of the commands that take them.
const (
	dbNote      = "--dsn defaults to $TWICE_DSN, then sqlite:./twice.db; --schema to $TWICE_SCHEMA."
	serviceNote = "--service defaults to $TWICE_SERVICE."
	demoNote    = "The shop is built from examples/shop: run it in the repository (go run ./cmd/twice demo).\n" +
		"Its database is a fresh SQLite file unless --dsn or $TWICE_DSN names one; --scenario leader\n" +
		"runs on a scratch file too. --for, --port and --chaos are the shop's."
	adminNote = "Each takes --dsn, --schema, --service and --json. --service defaults to $TWICE_SERVICE,\nor the only service in the database.\n" + dbNote
)

// commands is set in init: the help command reads the table it is part of.
var commands []command

func init() {
	commands = []command{
		{name: "demo", run: noStderr(demoCmd), note: demoNote, lines: []usageLine{
			{"", "[--for D] [--port 8080] [--chaos D] [--dsn DSN]\n[--scenario shop|leader]",
				"the demo shop, three instances behind a proxy; --for D\nstops it and checks its pages; leader: the failover tour"}}},
		{name: "run", run: runCmd, note: runNote, lines: []usageLine{
			{"", "[-n 3] [--port 8080] [--health /readyz] [--interval 1s] [--fails 3] [--sticky]\n[--restart never|on-failure|always] [--chaos D] [--faults LIST] [--dsn DSN]\n[--grace 10s] -- CMD [ARGS…]",
				"N instances of any command behind a health-checking\nproxy: merged logs, restarts, rolling restart, chaos"}}},
		{name: "status", run: noStderr(statusCmd), note: serviceNote + "\n" + dbNote, lines: []usageLine{
			{"", "[--dsn DSN] [--service NAME] [--json]", "members, leader, locks and partition sets of each service"}}},
		{name: "top", run: noStderr(topCmd), note: serviceNote + "\n" + dbNote, lines: []usageLine{
			{"", "[--dsn DSN] [--service NAME] [--every 2s] [--count N] [--json]",
				"the cluster in the terminal, read again every 2s:\ninstances, leader, locks, partitions, queues and lag"}}},
		{name: "migrate", run: noStderr(migrateCmd), note: dbNote, lines: []usageLine{
			{"up", "[--dsn DSN]", "apply pending migrations"},
			{"down", "[--dsn DSN] [--steps N | --all]", "undo the last N migrations (default 1)"},
			{"status", "[--dsn DSN] [--json]", "list migrations and whether each is applied"},
			{"sql", "[--dsn DSN | --dialect postgres|sqlite]", "print the SQL, for your own migration tool"}}},
		{name: "config", run: noStderr(configCmd), note: serviceNote + "\n" + dbNote, lines: []usageLine{
			{"get", "KEY --service NAME [--json]", "a setting's value"},
			{"set", "KEY VALUE --service NAME [--type T] [--if-version N] [--actor WHO] [--json]",
				"change a setting on every instance; T is string,\nint, float, bool, duration or json (needed for a new key)"},
			{"delete", "KEY --service NAME [--if-version N] [--actor WHO]", "remove a setting on every instance"},
			{"list", "[PREFIX] --service NAME [--json]", "every setting, or those under PREFIX"},
			{"history", "[KEY] --service NAME [--limit N] [--json]", "who changed what, when"}}},
		{name: "jobs", run: noStderr(jobsCmd), note: adminNote, lines: []usageLine{
			{"list", "[--state S,S] [--queue Q] [--kind K] [--tag T] [--args JSON] [--limit N]", "jobs, newest first"},
			{"show|retry|cancel", "ID", "one job; retry a finished one; cancel one"},
			{"discard", "ID [--reason TEXT]", "end a job that neither runs nor has finished,\nwithout running it"},
			{"stats", "", "jobs per queue and state"}}},
		{name: "queues", run: noStderr(queuesCmd), note: adminNote, lines: []usageLine{
			{"list", "", "queues, paused or not, with their counts"},
			{"pause|resume", "NAME", "stop or restart a queue on every instance"}}},
		{name: "cron", run: noStderr(cronCmd), note: adminNote, lines: []usageLine{
			{"list", "", "schedules with their last and next tick"},
			{"trigger", "NAME", "run a schedule's job now"}}},
		{name: "workflows", run: noStderr(workflowsCmd), note: adminNote, lines: []usageLine{
			{"list", "[--state S,S] [--name N] [--limit N]", "workflows, newest first"},
			{"show", "ID", "one workflow with the history of its steps"},
			{"cancel", "ID", "stop a workflow at its next step; its compensations run"},
			{"retry", "ID", "run a failed workflow again once its cause is fixed: its failed\ncompensations, or its steps from the first unfinished one"},
			{"signal", "ID NAME JSON", "send a workflow a signal (workflow.WaitSignal) with a JSON payload"}}},
		{name: "dashboard", run: dashboardCmd, note: dashboardNote, lines: []usageLine{
			{"", "[--dsn DSN] [--service NAME] [--addr 127.0.0.1:8081] [--token T]\n[--read-only-token T] [--read-only] [--interval 2s]",
				"the web dashboard of a service, live: instances,\njobs, workflows, events, cron, settings, locks"}}},
		{name: "bench", run: benchCmd, note: dbNote + "\n--report FILE.html writes an HTML page of the run: charts over time and the figures.", lines: []usageLine{
			{"failover", "[--dsn DSN] --kills N [--graceful] [--json] [--report FILE.html]", "kill the leader N times; print failover p50/p99"},
			{"events", "[--dsn DSN] [--bus nats://…] [--events N] [--publishers P]\n[--latency-events N] [--rate R] [--json] [--report FILE.html]",
				"event throughput, and propagation p50/p99 between instances"},
			{"idle", "[--dsn DSN] [--bus nats://…] [--instances N] [--duration 30s] [--warmup 15s]\n[--json] [--report FILE.html]",
				"what idle instances cost: statements, transactions, connections and CPU per instance"},
			{"scale", "[--dsn DSN] [--bus nats://…] [--instances 100] [--idle 10s] [--kills K] [--jobs N]\n[--json] [--report FILE.html]",
				"many instances: idle cost, time to see a new one, failover p50/p99, job throughput"},
			{"partitions", "[--dsn DSN] [--instances 10] [--partitions 900] [--rounds 3]\n[--json] [--report FILE.html]",
				"a partition set's time to settle after a join, a graceful leave and a SIGKILL"},
			{"realtime", "[--dsn DSN] [--bus nats://…] [--signed=false] [--instances 3] [--clients 50] [--messages N]\n[--rate R] [--burst N] [--connections N] [--partitions 900] [--json] [--report FILE.html]",
				"hub delivery between instances p50/p99, deliveries/s, memory per\nconnection, and a partition set's rebalance times"},
			{"invalidation", "[--dsn DSN] [--bus nats://…] [--signed] [--count N] [--instances N] [--burst N]\n[--json] [--report FILE.html]",
				"time cache invalidations from commit to every instance"},
			{"config", "[--dsn DSN] [--bus nats://…] [--signed] [--count N] [--instances N]\n[--json] [--report FILE.html]",
				"time setting changes from commit to every watcher"},
			{"workflows", "[--dsn DSN] [--workflows N] [--instances K] [--concurrency C] [--kills K]\n[--hold 2s] [--latency N] [--rate R] [--json] [--report FILE.html]",
				"workflows of three steps completed per second (Do, then DoTx\n" +
					"steps); start-to-completed p50/p99 at --rate (stored created_at\n" +
					"to finished_at); after SIGKILL to the instance running a step,\n" +
					"the time to that step's start on another instance, by its report"}}},
		{name: "check", run: checkCmd, note: dbNote, lines: []usageLine{
			{"", "[--store sqlite|postgres] [--dsn DSN] [--duration 60s] [--short] [--faults LIST]\n[--pg-restart-cmd CMD] [--json] [--report FILE.html]",
				"run instances under faults; check every invariant;\nexit 1 on a violation, 3 if the check could not run;\n--report writes an HTML page: timeline, latency, invariants"}}},
		{name: "version", run: versionCmd, lines: []usageLine{{"", "", "print the version"}}},
		{name: "help", run: helpCmd, lines: []usageLine{{"", "[COMMAND]", "this text, or one command's"}}},
	}
}

func noStderr(f func(context.Context, []string, io.Writer) error) func(context.Context, []string, io.Writer, io.Writer) error {
	return func(ctx context.Context, args []string, stdout, _ io.Writer) error { return f(ctx, args, stdout) }
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// descColumn is where descriptions start; a longer command line puts its description on
// the next line.
const descColumn = 45

// writeLines writes the usage lines of c, or only the line of subcommand sub.
func (c *command) writeLines(w io.Writer, sub string) {
	for _, l := range c.lines {
		if sub != "" && !slices.Contains(strings.Split(l.sub, "|"), sub) {
			continue
		}
		cmd := strings.Join(strings.Fields("twice "+c.name+" "+l.sub), " ")
		argLines := strings.Split(l.args, "\n")
		head := "  " + cmd
		if argLines[0] != "" {
			head += " " + argLines[0]
		}
		var out []string
		out = append(out, head)
		for _, a := range argLines[1:] {
			out = append(out, strings.Repeat(" ", len("  "+cmd)+1)+a)
		}
		desc := strings.Split(l.desc, "\n")
		if last := out[len(out)-1]; len(last) < descColumn-1 {
			out[len(out)-1] = last + strings.Repeat(" ", descColumn-len(last)) + desc[0]
		} else {
			out = append(out, strings.Repeat(" ", descColumn)+desc[0])
		}
		for _, d := range desc[1:] {
			out = append(out, strings.Repeat(" ", descColumn)+d)
		}
		fmt.Fprintln(w, strings.Join(out, "\n"))
	}
}

// usage is the text `twice help` prints.
func usage() string {
	var b bytes.Buffer
	b.WriteString("twice: run a service as several instances, correctly.\n\nUsage:\n")
	for i := range commands {
		commands[i].writeLines(&b, "")
	}
	b.WriteString("\n`twice COMMAND -h` shows one command and its flags.\n" + dbNote + "\n" + serviceNote + "\n")
	return b.String()
}

// commandUsage is the help of one command: its lines and its note.
func (c *command) usage() string {
	var b bytes.Buffer
	b.WriteString("Usage:\n")
	c.writeLines(&b, "")
	if c.note != "" {
		b.WriteString("\n" + c.note + "\n")
	}
	if len(c.lines) > 1 {
		fmt.Fprintf(&b, "`twice %s COMMAND -h` shows a command's flags.\n", c.name)
	}
	return b.String()
}

// helpError asks run to print text on standard output and exit 0: the answer to -h.
type helpError struct{ text string }

func (h *helpError) Error() string { return "help requested" }

// Is makes a helpError a flag.ErrHelp.
func (h *helpError) Is(target error) bool { return target == flag.ErrHelp }

// usageError is a command-line error in command cmd ("" when there is no valid command):
// run prints it with that command's usage, and the exit status is 2.
type usageError struct {
	cmd string
	err error
}

func (u *usageError) Error() string { return u.err.Error() }
func (u *usageError) Unwrap() error { return u.err }

// flagHelp is the help of the subcommand whose flags fs holds: its usage line and flags.
func flagHelp(fs *flag.FlagSet) error {
	var b bytes.Buffer
	name, sub, _ := strings.Cut(fs.Name(), " ")
	b.WriteString("Usage:\n")
	if c := lookup(name); c != nil {
		c.writeLines(&b, sub)
	}
	b.WriteString("\nFlags:\n")
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	return &helpError{text: b.String()}
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help" || arg == "help"
}

func helpCmd(_ context.Context, args []string, _, _ io.Writer) error {
	switch {
	case len(args) == 0 || len(args) == 1 && isHelp(args[0]):
		return &helpError{text: usage()}
	case len(args) == 1 && lookup(args[0]) != nil:
		return &helpError{text: lookup(args[0]).usage()}
	}
	return fmt.Errorf("%w: help: no command %q", errUsage, strings.Join(args, " "))
}

func versionCmd(_ context.Context, args []string, stdout, _ io.Writer) error {
	if err := parse(flag.NewFlagSet("version", flag.ContinueOnError), args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "twice", version())
	return nil
}

// errorsAsHelp is errors.As for a *helpError.
func errorsAsHelp(err error) (*helpError, bool) {
	var h *helpError
	return h, errors.As(err, &h)
}
