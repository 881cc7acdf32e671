package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// adminFlags are the flags of every jobs, queues and cron command.
type adminFlags struct {
	db      dbFlags
	service string
	asJSON  bool
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	a.db.register(fs)
	fs.StringVar(&a.service, "service", os.Getenv(twice.EnvService), "the service (default $"+twice.EnvService+", or the only one in the database)")
	fs.BoolVar(&a.asJSON, "json", false, "print JSON")
}

// parseN is [parseArgs] for commands that take exactly want positional arguments.
func parseN(fs *flag.FlagSet, args []string, want int, names string) ([]string, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != want {
		return nil, fmt.Errorf("%w: %s takes %s", errUsage, fs.Name(), names)
	}
	return pos, nil
}

// open opens the store and resolves the service.
func (a *adminFlags) open(ctx context.Context) (*store.Store, string, error) {
	s, err := a.db.open(ctx, true)
	if err != nil {
		return nil, "", err
	}
	service := a.service
	if service == "" {
		service, err = onlyService(ctx, s)
		if err != nil {
			s.Close()
			return nil, "", err
		}
	}
	return s, service, nil
}

// onlyService returns the one service with jobs, schedules or members in s.
func onlyService(ctx context.Context, s *store.Store) (string, error) {
	all, err := store.Services(ctx, s, jobs.Component(), cron.Component(), cluster.Component())
	if err != nil {
		return "", fmt.Errorf("%s: %w (is the schema migrated?)", s, err)
	}
	switch len(all) {
	case 0:
		return "", fmt.Errorf("%w: no service in %s yet: pass --service", errUsage, s)
	case 1:
		return all[0], nil
	}
	return "", fmt.Errorf("%w: %s has several services (%s): pass --service", errUsage, s, strings.Join(all, ", "))
}

func client(s *store.Store, service string) (*jobs.Client, error) {
	return jobs.New(block.Deps{Store: s, Service: service, Instance: toolInstance("twice-cli")}, jobs.Config{})
}

// parseList parses the comma-separated values of a flag (none if empty) with parse; an
// error is a usage error.
func parseList[T any](list string, parse func(string) (T, error)) ([]T, error) {
	if list == "" {
		return nil, nil
	}
	var out []T
	for _, v := range strings.Split(list, ",") {
		t, err := parse(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		out = append(out, t)
	}
	return out, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func jobsCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: jobs needs list, show, retry, cancel, discard or stats", errUsage)
	}
	var a adminFlags
	fs := flag.NewFlagSet("jobs "+args[0], flag.ContinueOnError)
	a.register(fs)
	switch args[0] {
	case "list":
		states := fs.String("state", "", "only these states, comma-separated (available, running, completed, cancelled, discarded, waiting)")
		queue := fs.String("queue", "", "only this queue")
		kind := fs.String("kind", "", "only this kind")
		tag := fs.String("tag", "", "only jobs with this tag")
		argsFilter := fs.String("args", "", `only jobs whose arguments have these top-level values, a JSON object: '{"user":"ann"}'`)
		limit := fs.Int("limit", 50, "at most this many jobs, newest first (max 10000)")
		if _, err := parseN(fs, args[1:], 0, "no arguments"); err != nil {
			return err
		}
		p := jobs.ListParams{Queue: *queue, Kind: *kind, Tag: *tag, Limit: *limit}
		if *argsFilter != "" {
			p.Args = json.RawMessage(*argsFilter)
		}
		if *limit < 1 || *limit > 10000 {
			return fmt.Errorf("%w: --limit %d is not between 1 and 10000", errUsage, *limit)
		}
		var err error
		if p.States, err = parseList(*states, jobs.ParseState); err != nil {
			return err
		}
		return withClient(ctx, &a, func(c *jobs.Client, _ *store.Store, _ string) error {
			rows, err := c.List(ctx, p)
			if err != nil {
				return err
			}
			if a.asJSON {
				return printJSON(stdout, rows)
			}
			printJobs(stdout, rows)
			return nil
		})
	case "show", "retry", "cancel", "discard":
		reason := ""
		if args[0] == "discard" {
			fs.StringVar(&reason, "reason", "", "why, recorded as the job's last error")
		}
		pos, err := parseN(fs, args[1:], 1, "one job id")
		if err != nil {
			return err
		}
		id, err := strconv.ParseInt(pos[0], 10, 64)
		if err != nil || id < 1 {
			return fmt.Errorf("%w: %q is not a job id", errUsage, pos[0])
		}
		return withClient(ctx, &a, func(c *jobs.Client, _ *store.Store, _ string) error {
			switch args[0] {
			case "retry":
				if err := c.Retry(ctx, id); err != nil {
					return err
				}
			case "cancel":
				if err := c.Cancel(ctx, id); err != nil {
					return err
				}
			case "discard":
				if err := c.Discard(ctx, id, reason); err != nil {
					return err
				}
			}
			row, err := c.Get(ctx, id)
			if err != nil {
				return err
			}
			if a.asJSON {
				return printJSON(stdout, row)
			}
			switch {
			case args[0] == "retry":
				fmt.Fprintf(stdout, "job %d is available again (attempt %d of %d)\n", id, row.Attempt, row.MaxAttempts)
			case args[0] == "cancel" && row.State == jobs.Running:
				fmt.Fprintf(stdout, "job %d is running on %s: cancellation requested; it stops within that instance's poll\n", id, row.Owner)
			case args[0] == "cancel":
				fmt.Fprintf(stdout, "job %d cancelled\n", id)
			case args[0] == "discard":
				fmt.Fprintf(stdout, "job %d discarded (attempt %d of %d): retry runs it again\n", id, row.Attempt, row.MaxAttempts)
			default:
				printJob(stdout, row)
			}
			return nil
		})
	case "stats":
		if _, err := parseN(fs, args[1:], 0, "no arguments"); err != nil {
			return err
		}
		return withClient(ctx, &a, func(c *jobs.Client, _ *store.Store, service string) error {
			return stats(ctx, c, service, a.asJSON, stdout)
		})
	}
	return fmt.Errorf("%w: unknown jobs command %q", errUsage, args[0])
}

func withClient(ctx context.Context, a *adminFlags, fn func(c *jobs.Client, s *store.Store, service string) error) error {
	s, service, err := a.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	c, err := client(s, service)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return fn(c, s, service)
}

func printJobs(w io.Writer, rows []*jobs.Row) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "no jobs")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tQUEUE\tKIND\tSTATE\tATTEMPT\tSCHEDULED\tOWNER\tERROR")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", r.ID, r.Queue, r.Kind, r.State, r.Attempt, r.MaxAttempts,
			r.ScheduledAt.UTC().Format(time.DateTime), r.Owner, oneLine(r.LastError, 60))
	}
	_ = tw.Flush()
}

func printJob(w io.Writer, r *jobs.Row) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	stamp := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	line("id", strconv.FormatInt(r.ID, 10))
	line("queue", r.Queue)
	line("kind", r.Kind)
	line("state", string(r.State))
	line("args", string(r.Args))
	line("priority", strconv.Itoa(r.Priority))
	line("attempt", fmt.Sprintf("%d of %d", r.Attempt, r.MaxAttempts))
	line("owner", r.Owner)
	line("key", r.Key)
	line("unique key", r.UniqueKey)
	if r.BatchID != 0 {
		line("batch", strconv.FormatInt(r.BatchID, 10))
	}
	if r.Timeout > 0 {
		line("timeout", r.Timeout.String())
	}
	if r.CancelRequested {
		line("cancel", "requested")
	}
	if len(r.Tags) > 0 {
		line("tags", strings.Join(r.Tags, ", "))
	}
	for k, v := range r.Meta {
		line("meta "+k, v)
	}
	line("created", stamp(r.CreatedAt))
	line("scheduled", stamp(r.ScheduledAt))
	line("attempted", stamp(r.AttemptedAt))
	line("finished", stamp(r.FinishedAt))
	line("last error", r.LastError)
	_ = tw.Flush()
}

// stats prints the queues' counts: `twice jobs stats` and `twice queues list`.
func stats(ctx context.Context, c *jobs.Client, service string, asJSON bool, w io.Writer) error {
	st, err := c.Stats(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(w, map[string]any{"service": service, "queues": st})
	}
	printStats(w, service, st)
	return nil
}

func printStats(w io.Writer, service string, st []jobs.QueueStats) {
	fmt.Fprintf(w, "service %s\n", service)
	if len(st) == 0 {
		fmt.Fprintln(w, "no jobs")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "QUEUE\tWORKERS\tPAUSED\tLIMIT\tRATE\tAVAILABLE\tLAG\tSCHEDULED\tRUNNING\tCOMPLETED\tCANCELLED\tDISCARDED\tWAITING")
	for _, q := range st {
		limit := "-"
		if q.GlobalLimit > 0 {
			limit = strconv.Itoa(q.GlobalLimit)
		}
		lag := "-"
		if q.Lag > 0 {
			lag = round(q.Lag).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%v\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", q.Queue, q.Workers, q.Paused, limit, q.RateLimit, q.Available, lag,
			q.Scheduled, q.Running, q.Completed, q.Cancelled, q.Discarded, q.Waiting)
	}
	_ = tw.Flush()
	for _, q := range st {
		if q.Workers == 0 && q.Available+q.Scheduled > 0 {
			fmt.Fprintf(w, "queue %s has jobs waiting (%d) and no live instance works it: list it in Config.Jobs.Queues, "+
				"or name it in the Opts of a kind whose worker is registered\n", q.Queue, q.Available+q.Scheduled)
		}
	}
}

func oneLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > n {
		s = s[:n-1] + "…"
	}
	return s
}

func queuesCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: queues needs list, pause or resume", errUsage)
	}
	var a adminFlags
	fs := flag.NewFlagSet("queues "+args[0], flag.ContinueOnError)
	a.register(fs)
	switch args[0] {
	case "list":
		if _, err := parseN(fs, args[1:], 0, "no arguments"); err != nil {
			return err
		}
		return withClient(ctx, &a, func(c *jobs.Client, _ *store.Store, service string) error {
			return stats(ctx, c, service, a.asJSON, stdout)
		})
	case "pause", "resume":
		pos, err := parseN(fs, args[1:], 1, "one queue name")
		if err != nil {
			return err
		}
		return withClient(ctx, &a, func(c *jobs.Client, _ *store.Store, service string) error {
			if args[0] == "pause" {
				err = c.PauseQueue(ctx, pos[0])
			} else {
				err = c.ResumeQueue(ctx, pos[0])
			}
			if err != nil {
				return err
			}
			if a.asJSON {
				return printJSON(stdout, map[string]any{"service": service, "queue": pos[0], "paused": args[0] == "pause"})
			}
			fmt.Fprintf(stdout, "queue %s of %s %sd\n", pos[0], service, args[0])
			return nil
		})
	}
	return fmt.Errorf("%w: unknown queues command %q", errUsage, args[0])
}

func cronCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: cron needs list or trigger", errUsage)
	}
	var a adminFlags
	fs := flag.NewFlagSet("cron "+args[0], flag.ContinueOnError)
	a.register(fs)
	switch args[0] {
	case "list":
		if _, err := parseN(fs, args[1:], 0, "no arguments"); err != nil {
			return err
		}
		return withClient(ctx, &a, func(_ *jobs.Client, s *store.Store, service string) error {
			es, err := cron.List(ctx, s, service)
			if err != nil {
				return err
			}
			if a.asJSON {
				return printJSON(stdout, map[string]any{"service": service, "schedules": es})
			}
			printCron(stdout, service, es)
			return nil
		})
	case "trigger":
		pos, err := parseN(fs, args[1:], 1, "one schedule name")
		if err != nil {
			return err
		}
		return withClient(ctx, &a, func(c *jobs.Client, s *store.Store, service string) error {
			r, err := cron.Trigger(ctx, c, s, service, pos[0])
			if err != nil {
				return err
			}
			if a.asJSON {
				return printJSON(stdout, map[string]any{"service": service, "schedule": pos[0], "job": r.ID})
			}
			fmt.Fprintf(stdout, "schedule %s triggered: job %d\n", pos[0], r.ID)
			return nil
		})
	}
	return fmt.Errorf("%w: unknown cron command %q", errUsage, args[0])
}

func printCron(w io.Writer, service string, es []cron.Entry) {
	fmt.Fprintf(w, "service %s\n", service)
	if len(es) == 0 {
		fmt.Fprintln(w, "no schedules")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tEXPRESSION\tTZ\tKIND\tLAST TICK\tNEXT TICK\tDECLARED")
	stamp := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.DateTime)
	}
	for _, e := range es {
		next := stamp(e.NextTick)
		if e.Error != "" {
			next = "error: " + e.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\n", e.Name, e.Expr, e.TZ, e.Kind, stamp(e.LastTick), next, e.Declared)
	}
	_ = tw.Flush()
}
