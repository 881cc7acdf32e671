package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/report"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

// benchWorkflows runs `twice bench workflows`: how many workflows of three steps instance
// processes complete per second, how long one takes at a light rate, and how long after a
// SIGKILL to the instance running a workflow another instance resumes it.
func benchWorkflows(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench workflows", flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	n := fs.Int("workflows", 5000, "workflows of three steps started into their paused queue, then timed from its resume until every one completed;\n"+
		"once with Do steps, once with DoTx steps")
	instances := fs.Int("instances", 3, "instances to run, each a process of its own")
	kills := fs.Int("kills", 10, "how many times to SIGKILL the instance running a workflow's step; each resumption is timed from the signal\n"+
		"to the step's start on another instance, by that instance's own report, both on this machine's clock; no instance is\n"+
		"killed within "+settle.String()+" of its start, before its liveness is watched (0: none)")
	concurrency := fs.Int("concurrency", 0, "workflows each instance runs at once, and fetches at most at a time (default: the jobs default, "+
		strconv.Itoa(jobs.DefaultConcurrency)+")")
	hold := fs.Duration("hold", 2*time.Second, "how long the step that a kill interrupts runs (it sleeps)")
	latency := fs.Int("latency", 200, "workflows started one at a time at --rate while their queue runs; the latency is each one's stored\n"+
		"created_at to finished_at, database time (0: none)")
	rate := fs.Float64("rate", 50, "workflows started per second for the latency")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	rep := addReport(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *n < 1 || *n > 1000000:
		return fmt.Errorf("%w: bench workflows: --workflows must be 1 to 1000000", errUsage)
	case *instances < 2 || *instances > 50:
		return fmt.Errorf("%w: bench workflows: --instances must be 2 to 50 (a workflow resumes on another instance)", errUsage)
	case *concurrency < 0 || *concurrency > 100000:
		return fmt.Errorf("%w: bench workflows: --concurrency must be 1 to 100000 (0: the jobs default)", errUsage)
	case *kills < 0 || *kills > 1000:
		return fmt.Errorf("%w: bench workflows: --kills must be 0 to 1000", errUsage)
	case *hold < 200*time.Millisecond || *hold > time.Minute:
		return fmt.Errorf("%w: bench workflows: --hold must be 200ms to 1m", errUsage)
	case *latency < 0 || *latency > workflow.MaxList:
		return fmt.Errorf("%w: bench workflows: --latency must be 0 to %d", errUsage, workflow.MaxList)
	case !(*rate >= 1 && *rate <= 10000):
		return fmt.Errorf("%w: bench workflows: --rate must be 1 to 10000 per second", errUsage)
	}
	if err := rep.create(); err != nil {
		return err
	}
	defer rep.discard()
	e, err := newBenchEnv(ctx, &db, "workflows", *asJSON, stdout, stderr)
	if err != nil {
		return err
	}
	defer e.close()
	fmt.Fprintf(e.progress, "bench workflows: %d instances of %s on %s\n", *instances, e.service, e.store)
	res, err := measureWorkflows(ctx, e.spawn, e.store, instance.Options{DSN: e.dsn, Schema: db.schema, Service: e.service},
		workflowsParams{Instances: *instances, Concurrency: *concurrency, Workflows: *n, Latency: *latency, Rate: *rate, Kills: *kills, Hold: *hold, Progress: e.progress})
	if err != nil {
		return err
	}
	return rep.finish(stdout, e.progress, *asJSON, res)
}

// workflowsParams configure [measureWorkflows].
type workflowsParams struct {
	// Instances is how many instances run, each a process; Concurrency is the workflows'
	// queue's concurrency on each (0: the jobs default).
	Instances, Concurrency int
	// Workflows is how many workflows each throughput run completes.
	Workflows int
	// Latency is how many workflows are started one at a time, Rate per second, for the
	// latency; 0 skips it.
	Latency int
	Rate    float64
	// Kills is how many times the instance running a step is SIGKILLed; 0 skips it. Hold
	// is how long that step runs.
	Kills int
	Hold  time.Duration
	// Progress receives a line per phase and per kill; nil discards them.
	Progress io.Writer
}

// workflowsResult is what [measureWorkflows] measured.
type workflowsResult struct {
	Store     string `json:"store"`
	Instances int    `json:"instances"`
	// Concurrency is how many workflows each instance runs at once.
	Concurrency int `json:"concurrency"`
	// Steps is how many steps each workflow of the throughput and latency runs has.
	Steps int `json:"steps"`
	// Workflows is how many each throughput run completed. StartsPerSec is how fast this
	// process started them (inserted with their jobs, startBatch per transaction) into the
	// paused queue; WorkflowsPerSec (Do steps) and WorkflowsPerSecDoTx (DoTx steps) how
	// fast the instances completed them from the queue's resume, in DurationS and
	// DurationDoTxS.
	Workflows           int     `json:"workflows"`
	StartsPerSec        float64 `json:"starts_per_sec"`
	WorkflowsPerSec     float64 `json:"workflows_per_sec"`
	DurationS           float64 `json:"duration_s"`
	WorkflowsPerSecDoTx float64 `json:"workflows_per_sec_dotx"`
	DurationDoTxS       float64 `json:"duration_dotx_s"`
	// Rate and RateDoTx are the workflows completed per second from the resume on, for
	// the HTML report.
	Rate     report.Rate `json:"workflows_per_sec_over_time"`
	RateDoTx report.Rate `json:"workflows_per_sec_dotx_over_time"`
	// LatencyWorkflows were started one at a time, LatencyRate per second, with the queue
	// running: the percentiles of each one's time from its start to its completion, both
	// in database time (created_at and finished_at: on PostgreSQL the start of the
	// transaction that started it, and of the statement that marked it completed).
	LatencyWorkflows int       `json:"latency_workflows"`
	LatencyRate      float64   `json:"latency_rate_per_sec"`
	LatencyMS        []float64 `json:"start_to_completed_ms"`
	LatencyP50MS     float64   `json:"start_to_completed_ms_p50"`
	LatencyP99MS     float64   `json:"start_to_completed_ms_p99"`
	LatencyMaxMS     float64   `json:"start_to_completed_ms_max"`
	// Kills is how many times the instance running the step "hold" (HoldMS long) of a
	// workflow was SIGKILLed; ResumeMS how long after each the step started again on
	// another instance.
	Kills       int       `json:"kills"`
	HoldMS      float64   `json:"hold_ms"`
	ResumeMS    []float64 `json:"resume_ms"`
	ResumeP50MS float64   `json:"resume_ms_p50"`
	ResumeP99MS float64   `json:"resume_ms_p99"`
	ResumeMaxMS float64   `json:"resume_ms_max"`
	// Resumes are the kills one by one, in seconds since the first instance started.
	Resumes []resumption `json:"resumes"`
	// RunS is the whole run's length, from the first instance's start.
	RunS float64 `json:"run_s"`
}

// resumption is one kill of the instance running a workflow's step: when, in seconds
// since the run started, which instance was killed, and which resumed the step how long
// after.
type resumption struct {
	AtS      float64 `json:"at_s"`
	Workflow string  `json:"workflow"`
	Slot     int     `json:"slot"`
	Killed   string  `json:"killed"`
	NextSlot int     `json:"next_slot"`
	Next     string  `json:"next"`
	MS       float64 `json:"ms"`
}

// startBatch is how many workflows one transaction starts for a throughput run.
const startBatch = 500

// settle is how long after an instance is ready `twice bench workflows` may kill it (see
// killRunning): its neighbour in the ring of liveness locks watches it from its next
// heartbeat on.
const settle = cluster.DefaultHeartbeatInterval * 3 / 2

func (r workflowsResult) summary() string {
	s := fmt.Sprintf("%d instances on %s completed %d workflows of %d steps at %.0f workflows/s with Do steps (%.1f s) and %.0f/s with DoTx steps (%.1f s); this process started them at %.0f/s.",
		r.Instances, r.Store, r.Workflows, r.Steps, r.WorkflowsPerSec, r.DurationS, r.WorkflowsPerSecDoTx, r.DurationDoTxS, r.StartsPerSec)
	if r.LatencyWorkflows > 0 {
		s += fmt.Sprintf(" Started one at a time at %.0f/s, a workflow took p50 %.1f ms, p99 %.1f ms, max %.1f ms from its start to its completion (database time, %d workflows).",
			r.LatencyRate, r.LatencyP50MS, r.LatencyP99MS, r.LatencyMaxMS, r.LatencyWorkflows)
	}
	if r.Kills > 0 {
		s += fmt.Sprintf(" After SIGKILL to the instance running a workflow's step, another instance started the step again in p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d kills.",
			r.ResumeP50MS, r.ResumeP99MS, r.ResumeMaxMS, r.Kills)
	}
	return s
}

// page shows the throughput runs over time, each resumption at its time with its length,
// and the figures.
func (r workflowsResult) page() *report.Page {
	span := max(r.DurationS, r.DurationDoTxS)
	p := &report.Page{Title: fmt.Sprintf("twice bench workflows: %s, %d instances", r.Store, r.Instances), Summary: r.summary(),
		Facts: []report.Fact{{Name: "store", Value: r.Store},
			{Name: "instances", Value: fmt.Sprintf("%d, each running up to %d workflows at once", r.Instances, r.Concurrency)},
			{Name: "throughput", Value: fmt.Sprintf("%s workflows of %d steps, twice", report.Format(float64(r.Workflows), 0), r.Steps)},
			{Name: "kills", Value: fmt.Sprintf("%d, during a step of %s", r.Kills, msText(r.HoldMS, 0))}}}
	p.Sections = append(p.Sections, report.Section{ID: "throughput", Heading: "Throughput",
		Charts: []report.Chart{{ID: "throughput-chart", Label: "workflows completed per second", Span: span, YUnit: "workflows/s",
			Series: []report.Series{r.Rate.Series("Do steps", 0), r.RateDoTx.Series("DoTx steps", 1)}}},
		Note: fmt.Sprintf("Workflows completed per second by all the instances together, from the resume of their queue, in buckets of %g s "+
			"(from the queue's counts, read every %s): the run with Do steps and the one with DoTx steps, each from its own resume.", r.Rate.BucketS, meterBeat)})
	rows := []figure{{"throughput, Do steps", report.Format(r.WorkflowsPerSec, 0) + " /s"},
		{"throughput, DoTx steps", report.Format(r.WorkflowsPerSecDoTx, 0) + " /s"},
		{"starts (this process)", report.Format(r.StartsPerSec, 0) + " /s"}}
	if r.LatencyWorkflows > 0 {
		rows = append(rows, figure{"start to completed p50 / p99 / max", fmt.Sprintf("%s / %s / %s",
			msText(r.LatencyP50MS, 1), msText(r.LatencyP99MS, 1), msText(r.LatencyMaxMS, 1))})
	}
	var tables []report.Table
	if r.Kills > 0 {
		rows = append(rows, figure{"resumption p50 / p99 / max", fmt.Sprintf("%s / %s / %s",
			msText(r.ResumeP50MS, 0), msText(r.ResumeP99MS, 0), msText(r.ResumeMaxMS, 0))})
		dots, table := drawResumes(r.Resumes)
		p.Sections = append(p.Sections, report.Section{ID: "resumes", Heading: "Resumption after SIGKILL",
			Charts: []report.Chart{{ID: "resumes-chart", Label: "time to resume after each kill", Span: r.RunS, YUnit: "ms", Log: true,
				Series: []report.Series{dots}}},
			Note: "Each kill at its time since the first instance started: how long from the SIGKILL to the interrupted step's start on another instance, " +
				"by that instance's own report (logarithmic). Hover over a dot for the instances."})
		tables = append(tables, table)
	}
	p.Sections = append(p.Sections, report.Section{ID: "figures-section", Heading: "Figures", Tables: append([]report.Table{figures(rows...)}, tables...)})
	return p
}

// drawResumes draws each resumption at its time and lists them in a table.
func drawResumes(rs []resumption) (report.Series, report.Table) {
	dots := report.Series{Name: "time to resume", Style: "dots"}
	table := report.Table{ID: "resumes", Head: []string{"#", "at", "killed", "resumed on", "time to resume"}}
	var ms []float64
	for i, r := range rs {
		title := fmt.Sprintf("kill %d at %.1f s: SIGKILL to %s (instance %d) running %s; resumed on %s (instance %d) after %.1f ms",
			i+1, r.AtS, r.Killed, r.Slot, r.Workflow, r.Next, r.NextSlot, r.MS)
		dots.X, dots.Y, dots.Titles = append(dots.X, r.AtS), append(dots.Y, r.MS), append(dots.Titles, title)
		table.Rows = append(table.Rows, []report.Cell{report.Num(float64(i+1), 0), {Text: fmt.Sprintf("%.1f s", r.AtS), Num: true},
			report.Text(fmt.Sprintf("%s (instance %d)", r.Killed, r.Slot)), report.Text(fmt.Sprintf("%s (instance %d)", r.Next, r.NextSlot)),
			{Text: msText(r.MS, 1), Num: true}})
		ms = append(ms, r.MS)
	}
	table.Bars(4, ms, []int{0})
	return dots, table
}

// measureWorkflows runs p.Instances instances that run the workflows of
// [instance.BenchFlows], and measures, phase by phase: the latency of workflows started one
// at a time, the throughput of Do steps and of DoTx steps, and the resumption after kills.
// This process starts the workflows, as a tool would, with an engine whose queue does not
// run.
func measureWorkflows(ctx context.Context, spawn instance.Spawner, s *store.Store, opts instance.Options, p workflowsParams) (workflowsResult, error) {
	if p.Progress == nil {
		p.Progress = io.Discard
	}
	res := workflowsResult{Store: string(s.Dialect()), Instances: p.Instances, Concurrency: p.Concurrency, Steps: 3, Workflows: p.Workflows,
		Kills: p.Kills, HoldMS: ms(p.Hold)}
	if res.Concurrency == 0 {
		res.Concurrency = jobs.DefaultConcurrency
	}
	opts.Workloads = []instance.Workload{instance.WorkflowBench{Hold: p.Hold, Concurrency: p.Concurrency}}
	g := instance.NewGroup(spawn, opts, instanceLogTo())
	defer g.Stop(30 * time.Second)
	start := time.Now()
	if err := startAll(ctx, g, p.Instances); err != nil {
		return res, fmt.Errorf("bench workflows: %w", err)
	}
	ready := time.Now()
	b, err := newWorkflowStarter(ctx, s, opts.Service)
	if err != nil {
		return res, fmt.Errorf("bench workflows: %w", err)
	}
	defer b.close()
	if p.Latency > 0 {
		res.LatencyWorkflows, res.LatencyRate = p.Latency, p.Rate
		if res.LatencyMS, err = b.latency(ctx, p.Latency, p.Rate, p.Progress); err != nil {
			return res, fmt.Errorf("bench workflows: latency: %w", err)
		}
		res.LatencyP50MS, res.LatencyP99MS, res.LatencyMaxMS = percentile(res.LatencyMS, 50), percentile(res.LatencyMS, 99), percentile(res.LatencyMS, 100)
	}
	do, err := b.throughput(ctx, b.flows.Three, "do", p.Workflows, p.Progress)
	if err != nil {
		return res, fmt.Errorf("bench workflows: Do steps: %w", err)
	}
	tx, err := b.throughput(ctx, b.flows.ThreeTx, "dotx", p.Workflows, p.Progress)
	if err != nil {
		return res, fmt.Errorf("bench workflows: DoTx steps: %w", err)
	}
	res.StartsPerSec = float64(2*p.Workflows) / (do.startS + tx.startS)
	res.WorkflowsPerSec, res.DurationS, res.Rate = float64(p.Workflows)/do.durationS, do.durationS, do.rate
	res.WorkflowsPerSecDoTx, res.DurationDoTxS, res.RateDoTx = float64(p.Workflows)/tx.durationS, tx.durationS, tx.rate
	if p.Kills > 0 {
		if res.Resumes, err = b.killRunning(ctx, g, p.Kills, p.Hold, start, ready, p.Progress); err != nil {
			return res, fmt.Errorf("bench workflows: %w", err)
		}
		for _, r := range res.Resumes {
			res.ResumeMS = append(res.ResumeMS, r.MS)
		}
		res.ResumeP50MS, res.ResumeP99MS, res.ResumeMaxMS = percentile(res.ResumeMS, 50), percentile(res.ResumeMS, 99), percentile(res.ResumeMS, 100)
	}
	res.RunS = time.Since(start).Seconds()
	return res, nil
}

// workflowStarter is this process's side of the benchmark: an engine that starts the
// workflows (its job queue does not run), the jobs client that pauses, resumes and counts
// their queue, and a bus on which their starts and the resume wake the instances.
type workflowStarter struct {
	s      *store.Store
	engine *workflow.Engine
	jc     *jobs.Client
	flows  instance.BenchFlows
	close  func()
}

func newWorkflowStarter(ctx context.Context, s *store.Store, service string) (*workflowStarter, error) {
	self := toolInstance("twice-bench")
	b, err := openBus(ctx, s, "", service, self)
	if err != nil {
		return nil, err
	}
	d := block.Deps{Store: s, Bus: b, Service: service, Instance: self}
	jc, err := jobs.New(d, jobs.Config{})
	if err != nil {
		b.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	w := &workflowStarter{s: s, jc: jc, close: func() {
		jc.Close(context.WithoutCancel(ctx))
		b.Close(context.WithoutCancel(ctx))
	}}
	if w.engine, err = workflow.New(d, jc, workflow.Config{}); err == nil {
		w.flows, err = instance.RegisterBenchFlows(w.engine, 0, nil)
	}
	if err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

// completed is how many jobs of the workflows' queue have completed: one per workflow
// that ended.
func (w *workflowStarter) completed(ctx context.Context) (int, error) {
	st, err := queueStats(ctx, w.jc, workflow.Queue)
	if st.Discarded > 0 && err == nil {
		err = fmt.Errorf("%d workflow jobs discarded", st.Discarded)
	}
	return st.Completed, err
}

// waitEnded polls the workflows' queue until want more of its jobs have completed than
// before, or limit passes; every poll's count, since t0, goes to counts if not nil, and
// every two seconds a line to progress.
func (w *workflowStarter) waitEnded(ctx context.Context, before, want int, t0 time.Time, limit time.Duration, counts *[]report.Count, progress io.Writer) error {
	shown := t0
	for {
		n, err := w.completed(ctx)
		if err != nil {
			return err
		}
		if counts != nil {
			*counts = append(*counts, report.Count{At: time.Since(t0).Seconds(), N: int64(n - before)})
			if time.Since(shown) >= 2*time.Second {
				fmt.Fprintf(progress, "bench workflows: %d of %d ended after %.0f s\n", n-before, want, time.Since(t0).Seconds())
				shown = time.Now()
			}
		}
		if n-before >= want {
			return nil
		}
		if time.Since(t0) > limit {
			return fmt.Errorf("%d of %d workflows ended within %s", n-before, want, limit)
		}
		if !loop.Sleep(ctx, meterBeat) {
			return ctx.Err()
		}
	}
}

// allCompleted checks that no workflow of name ended otherwise than completed, or is
// still running.
func (w *workflowStarter) allCompleted(ctx context.Context, name string) error {
	other, err := w.engine.List(ctx, workflow.ListParams{Name: name, Limit: 1,
		States: []workflow.State{workflow.Running, workflow.Compensating, workflow.Compensated, workflow.Cancelled, workflow.Failed}})
	if err != nil {
		return err
	}
	if len(other) > 0 {
		return fmt.Errorf("workflow %s is %s, not completed: %s", other[0].ID, other[0].State, other[0].Error)
	}
	return nil
}

// throughputRun is one throughput run: how long the starts took, and the completions
// from the resume on.
type throughputRun struct {
	startS, durationS float64
	rate              report.Rate
}

// throughput starts n workflows of wf, ids prefix-0 to prefix-(n-1), with their queue
// paused, then resumes it and times until all n have ended, each completed.
func (w *workflowStarter) throughput(ctx context.Context, wf *workflow.Workflow[int], prefix string, n int, progress io.Writer) (throughputRun, error) {
	var res throughputRun
	if err := w.jc.PauseQueue(ctx, workflow.Queue); err != nil {
		return res, err
	}
	t := time.Now()
	for from := 0; from < n; from += startBatch {
		err := w.s.InTx(ctx, func(tx store.Tx) error {
			for i := from; i < min(n, from+startBatch); i++ {
				if _, err := wf.StartTx(ctx, tx, prefix+"-"+strconv.Itoa(i), i); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	res.startS = time.Since(t).Seconds()
	fmt.Fprintf(progress, "bench workflows: %d workflows %s started in %.1f s; resuming their queue\n", n, wf.Name(), res.startS)
	before, err := w.completed(ctx)
	if err != nil {
		return res, err
	}
	// Bounded: workflows that do not end are a failure, not a hang.
	limit := time.Minute + time.Duration(n)*10*time.Millisecond
	t0 := time.Now()
	if err := w.jc.ResumeQueue(ctx, workflow.Queue); err != nil {
		return res, err
	}
	counts := []report.Count{{}}
	if err := w.waitEnded(ctx, before, n, t0, limit, &counts, progress); err != nil {
		return res, err
	}
	res.durationS = time.Since(t0).Seconds()
	res.rate = report.RateOver(counts, res.durationS)
	if err := w.allCompleted(ctx, wf.Name()); err != nil {
		return res, err
	}
	fmt.Fprintf(progress, "bench workflows: %d workflows %s completed in %.2f s: %.0f workflows/s\n", n, wf.Name(), res.durationS, float64(n)/res.durationS)
	return res, nil
}

// latency starts n workflows of three Do steps one at a time, rate per second, with their
// queue running, and returns each one's time from its start to its completion, from the
// timestamps the engine stored in database time.
func (w *workflowStarter) latency(ctx context.Context, n int, rate float64, progress io.Writer) ([]float64, error) {
	fmt.Fprintf(progress, "bench workflows: starting %d workflows %s one at a time, %.0f per second\n", n, instance.BenchThree, rate)
	before, err := w.completed(ctx)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	ids := map[string]bool{}
	for i := range n {
		if !loop.Sleep(ctx, time.Until(t0.Add(time.Duration(float64(i)/rate*float64(time.Second))))) {
			return nil, ctx.Err()
		}
		id := "latency-" + strconv.Itoa(i)
		if _, err := w.flows.Three.Start(ctx, id, i); err != nil {
			return nil, err
		}
		ids[id] = true
	}
	if err := w.waitEnded(ctx, before, n, t0, time.Minute+time.Duration(float64(n)/rate*float64(time.Second)), nil, progress); err != nil {
		return nil, err
	}
	ws, err := w.engine.List(ctx, workflow.ListParams{Name: instance.BenchThree, Limit: workflow.MaxList})
	if err != nil {
		return nil, err
	}
	var out []float64
	for _, s := range ws {
		if !ids[s.ID] {
			continue
		}
		if s.State != workflow.Completed {
			return nil, fmt.Errorf("workflow %s is %s, not completed: %s", s.ID, s.State, s.Error)
		}
		out = append(out, ms(s.FinishedAt.Sub(s.CreatedAt)))
	}
	if len(out) != n {
		return nil, fmt.Errorf("%d of the %d workflows started are listed", len(out), n)
	}
	fmt.Fprintf(progress, "bench workflows: start to completed p50 %.1f ms, p99 %.1f ms\n", percentile(out, 50), percentile(out, 99))
	return out, nil
}

// killRunning kills times starts a workflow of [instance.BenchFlows].Hold, waits until an
// instance of g runs its step "hold", SIGKILLs that instance at a random point of the
// step's first half, and measures how long until another instance starts the step again:
// from the signal to that instance's own report of the step's start, both on this
// machine's clock. That covers noticing the death, rescuing the workflow's job, fetching
// it, and replaying the step that completed before. The killed instance is restarted each
// time, so every kill finds a full cluster, and no kill comes sooner than settle after an
// instance was ready: the instances watch each other's liveness locks in a ring,
// and a newcomer's neighbour only watches it from its next heartbeat on (a newcomer killed
// sooner is noticed then, up to a heartbeat interval later, which is not what this
// measures). At the end every such workflow must have completed, its step "before" run
// once: a completed step never runs again.
func (w *workflowStarter) killRunning(ctx context.Context, g *instance.Group, kills int, hold time.Duration, start, ready time.Time, progress io.Writer) ([]resumption, error) {
	var out []resumption
	if !loop.Sleep(ctx, time.Until(ready.Add(settle))) {
		return out, ctx.Err()
	}
	// Every wait is bounded: a workflow never resumed is a failure, not a hang.
	limit := 30*time.Second + 5*hold
	step := func(id string, not int, from int) (instance.Event, error) {
		wctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		ev, _, err := g.WaitFor(wctx, from, func(e instance.Event) bool {
			return e.Event == "step" && e.Key == id+"/hold" && e.Proc != not
		})
		return ev, err
	}
	for k := range kills {
		id := "hold-" + strconv.Itoa(k)
		_, from := g.Log()
		if _, err := w.flows.Hold.Start(ctx, id, k); err != nil {
			return out, err
		}
		first, err := step(id, -1, from)
		if err != nil {
			return out, fmt.Errorf("workflow %s: its step never started: %w", id, err)
		}
		if !loop.Sleep(ctx, time.Until(first.Time().Add(hold/10+rand.N(hold*4/10)))) {
			return out, ctx.Err()
		}
		slot := first.Proc
		_, from = g.Log()
		t0 := time.Now()
		if t0.Sub(first.Time()) > hold*3/4 {
			return out, fmt.Errorf("workflow %s: the kill would come %s after its step started, too close to its end: run with a longer --hold", id, t0.Sub(first.Time()))
		}
		if err := g.Signal(slot, syscall.SIGKILL); err != nil {
			return out, err
		}
		next, err := step(id, slot, from)
		if err != nil {
			return out, fmt.Errorf("workflow %s: not resumed after SIGKILL to %s: %w", id, first.ID, err)
		}
		r := resumption{AtS: t0.Sub(start).Seconds(), Workflow: id, Slot: slot, Killed: first.ID, NextSlot: next.Proc, Next: next.ID,
			MS: ms(next.Time().Sub(t0))}
		out = append(out, r)
		fmt.Fprintf(progress, "resume %d/%d: SIGKILL to %s running %s; %s started its step again after %.0f ms\n",
			k+1, kills, r.Killed, id, r.Next, r.MS)
		select {
		case <-g.Proc(slot).Done():
		case <-ctx.Done():
			return out, ctx.Err()
		}
		if _, err := g.Start(ctx, slot); err != nil {
			return out, err
		}
		if !loop.Sleep(ctx, settle) {
			return out, ctx.Err()
		}
	}
	return out, w.checkHeld(ctx, g, kills, limit)
}

// checkHeld waits until the kills workflows of Hold have ended and checks each completed
// and ran its step "before" once, though its instance was killed after it.
func (w *workflowStarter) checkHeld(ctx context.Context, g *instance.Group, kills int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for k := range kills {
		id := "hold-" + strconv.Itoa(k)
		for {
			st, err := w.engine.Get(ctx, id)
			if err != nil {
				return err
			}
			if st.State == workflow.Completed {
				break
			}
			if st.State.Finished() || time.Now().After(deadline) {
				return fmt.Errorf("workflow %s is %s after its resumption: %s", id, st.State, st.Error)
			}
			if !loop.Sleep(ctx, meterBeat) {
				return ctx.Err()
			}
		}
	}
	events, _ := g.Log()
	runs := map[string]int{}
	for _, e := range events {
		if e.Event == "step" && strings.HasSuffix(e.Key, "/before") {
			runs[e.Key]++
		}
	}
	for k := range kills {
		key := "hold-" + strconv.Itoa(k) + "/before"
		if runs[key] != 1 {
			return fmt.Errorf("step %s ran %d times: a completed step ran again on resumption", key, runs[key])
		}
	}
	if i := slices.IndexFunc(events, func(e instance.Event) bool { return e.Event == "error" }); i >= 0 {
		return fmt.Errorf("an instance reported an error: %s", events[i].Err)
	}
	return nil
}
