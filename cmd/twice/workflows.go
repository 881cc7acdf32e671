package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/workflow"
)

// workflowsCmd runs `twice workflows list|show|cancel|retry|signal`: the service's workflows,
// from a machine that runs no instance.
func workflowsCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: workflows needs list, show, cancel, retry or signal", errUsage)
	}
	var a adminFlags
	fs := flag.NewFlagSet("workflows "+args[0], flag.ContinueOnError)
	a.register(fs)
	switch args[0] {
	case "list":
		states := fs.String("state", "", "only these states, comma-separated (running, compensating, completed, compensated, cancelled, failed)")
		name := fs.String("name", "", "only workflows of this definition")
		limit := fs.Int("limit", 50, "at most this many workflows, newest first (max 10000)")
		if _, err := parseN(fs, args[1:], 0, "no arguments"); err != nil {
			return err
		}
		if *limit < 1 || *limit > workflow.MaxList {
			return fmt.Errorf("%w: --limit %d is not between 1 and %d", errUsage, *limit, workflow.MaxList)
		}
		p := workflow.ListParams{Name: *name, Limit: *limit}
		var err error
		if p.States, err = parseList(*states, workflow.ParseState); err != nil {
			return err
		}
		return withEngine(ctx, &a, false, func(e *workflow.Engine, _ bus.Bus) error {
			ws, err := e.List(ctx, p)
			if err != nil {
				return err
			}
			if a.asJSON {
				return printJSON(stdout, ws)
			}
			printWorkflows(stdout, ws)
			return nil
		})
	case "signal":
		pos, err := parseN(fs, args[1:], 3, "a workflow id, a signal name and its payload as JSON")
		if err != nil {
			return err
		}
		if !json.Valid([]byte(pos[2])) {
			return fmt.Errorf("%w: the payload %q is not JSON (quote a string: '\"yes\"')", errUsage, pos[2])
		}
		return withEngine(ctx, &a, false, func(e *workflow.Engine, _ bus.Bus) error {
			if err := e.Signal(ctx, pos[0], pos[1], json.RawMessage(pos[2])); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "workflow %s: signal %q sent; a wait for it takes it\n", pos[0], pos[1])
			return nil
		})
	case "show", "cancel", "retry":
		pos, err := parseN(fs, args[1:], 1, "one workflow id")
		if err != nil {
			return err
		}
		id, cmd := pos[0], args[0]
		return withEngine(ctx, &a, cmd != "show", func(e *workflow.Engine, b bus.Bus) error {
			switch cmd {
			case "cancel":
				if err := e.Cancel(ctx, id); err != nil {
					return err
				}
			case "retry":
				if err := e.Retry(ctx, id); err != nil {
					return err
				}
				// The workflow's new job is committed: a hint to the instances to look for it
				// now (they read the queue; the message itself changes nothing). Lost, the
				// job waits for their next poll.
				_ = b.Publish(ctx, jobs.WakeChannel, []byte(workflow.Queue))
			}
			st, err := e.Get(ctx, id)
			if err != nil {
				return err
			}
			switch {
			case a.asJSON:
				return printJSON(stdout, st)
			case cmd == "cancel":
				fmt.Fprintf(stdout, "workflow %s: cancellation requested; it stops at its next step, then compensates (now %s)\n", id, st.State)
			case cmd == "retry":
				fmt.Fprintf(stdout, "workflow %s: retried; it runs again on a live instance (now %s)\n", id, st.State)
			default:
				printWorkflow(stdout, st)
			}
			return nil
		})
	}
	return fmt.Errorf("%w: unknown workflows command %q", errUsage, args[0])
}

// withEngine opens the store and a workflow engine of the service; with announce, also the
// service's store-native bus, given to fn and to the engine, so that a cancellation reaches
// a step running now and a retried workflow is taken at once (signed with
// $TWICE_CLUSTER_SECRET: instances that have a secret drop unsigned signals, and the step
// then finishes first, the retried workflow waits for a poll).
func withEngine(ctx context.Context, a *adminFlags, announce bool, fn func(e *workflow.Engine, b bus.Bus) error) error {
	s, service, err := a.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	d := block.Deps{Store: s, Service: service, Instance: toolInstance("twice-cli")}
	if announce {
		b, err := toolBus(ctx, s, service, d.Instance)
		if err != nil {
			return err
		}
		defer b.Close(ctx)
		d.Bus = b
	}
	jc, err := client(s, service)
	if err != nil {
		return err
	}
	defer jc.Close(ctx)
	e, err := workflow.New(d, jc, workflow.Config{})
	if err != nil {
		return err
	}
	return fn(e, d.Bus)
}

func printWorkflows(w io.Writer, ws []workflow.Summary) {
	if len(ws) == 0 {
		fmt.Fprintln(w, "no workflows")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tVERSION\tSTATE\tCREATED\tUPDATED\tERROR")
	for _, s := range ws {
		state := string(s.State)
		if s.CancelRequested && !s.State.Finished() {
			state += " (cancelling)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", s.ID, s.Name, s.Version, state,
			s.CreatedAt.UTC().Format(time.DateTime), s.UpdatedAt.UTC().Format(time.DateTime), oneLine(s.Error, 60))
	}
	_ = tw.Flush()
}

func printWorkflow(w io.Writer, st *workflow.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	line("id", st.ID)
	line("name", st.Name)
	line("version", strconv.Itoa(st.Version))
	line("state", string(st.State))
	if st.CancelRequested {
		line("cancel", "requested")
	}
	line("input", string(st.Input))
	line("created", st.CreatedAt.UTC().Format(time.RFC3339Nano))
	line("updated", st.UpdatedAt.UTC().Format(time.RFC3339Nano))
	if !st.FinishedAt.IsZero() {
		line("finished", st.FinishedAt.UTC().Format(time.RFC3339Nano))
	}
	line("error", st.Error)
	_ = tw.Flush()
	if len(st.Steps) == 0 {
		fmt.Fprintln(w, "no step has run")
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tNAME\tSTATE\tATTEMPTS\tCOMPENSATION\tRESULT OR ERROR")
	for _, r := range st.Steps {
		comp := r.Compensation
		if r.CompensationError != "" {
			comp += ": " + oneLine(r.CompensationError, 40)
		}
		out, name := string(r.Result), r.Name
		if r.Error != "" {
			out = r.Error
		}
		if r.Kind != "" && r.Kind != "step" {
			name = r.Kind + " " + name // a wait
			if r.State == "waiting" {
				out = "until " + r.WakeAt.UTC().Format(time.RFC3339Nano)
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", r.Seq, name, r.State, r.Attempts, comp, oneLine(out, 60))
	}
	_ = tw.Flush()
}
