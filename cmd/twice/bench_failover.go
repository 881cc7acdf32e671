package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/report"
	"github.com/twicehq/twice/lease"
)

// benchFailover runs `twice bench failover`: how long until another instance leads after
// the leader is killed (or drained).
func benchFailover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench failover", flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	kills := fs.Int("kills", 10, "how many times to stop the leader")
	graceful := fs.Bool("graceful", false, "stop the leader with SIGTERM (a drain) instead of SIGKILL")
	instances := fs.Int("instances", 3, "instances to run")
	ttl := fs.Duration("lease-ttl", 0, "leader lease TTL (default: the node default, "+lease.DefaultTTL.String()+")")
	poll := fs.Duration("leader-poll", 0, "leader poll interval (default: the node default, "+cluster.DefaultLeaderPoll.String()+")")
	noLive := fs.Bool("no-liveness-lock", false, "run the instances without liveness locks: a crash is noticed when the lease runs out")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	rep := addReport(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *kills < 1 || *kills > 10000 {
		return fmt.Errorf("%w: bench failover: --kills must be 1 to 10000", errUsage)
	}
	if *instances < 2 || *instances > 50 {
		return fmt.Errorf("%w: bench failover: --instances must be 2 to 50", errUsage)
	}
	if err := rep.create(); err != nil {
		return err
	}
	defer rep.discard()
	e, err := newBenchEnv(ctx, &db, "failover", *asJSON, stdout, stderr)
	if err != nil {
		return err
	}
	defer e.close()
	s, dsn, service, spawn, progress := e.store, e.dsn, e.service, e.spawn, e.progress
	fmt.Fprintf(progress, "bench failover: %d instances of %s on %s, %d × %s to the leader\n",
		*instances, service, s, *kills, map[bool]string{false: "SIGKILL", true: "SIGTERM"}[*graceful])
	res, err := measureFailover(ctx, spawn,
		instance.Options{DSN: dsn, Schema: db.schema, Service: service, LeaseTTL: *ttl, LeaderPoll: *poll, NoLivenessLock: *noLive},
		failoverParams{Kills: *kills, Graceful: *graceful, Instances: *instances, Progress: progress})
	if err != nil {
		return err
	}
	res.Store = string(s.Dialect())
	return rep.finish(stdout, progress, *asJSON, res)
}

func (r failoverResult) summary() string {
	return fmt.Sprintf("failover after %s on %s: p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d kills (lease TTL %.0f ms, leader poll %.0f ms, liveness lock %s)",
		r.Signal, r.Store, r.P50MS, r.P99MS, r.MaxMS, r.Kills, r.LeaseTTLMS, r.PollMS, onOff(r.LivenessLock))
}

func onOff(b bool) string { return map[bool]string{true: "on", false: "off"}[b] }

// page shows the run as a timeline: a lane per instance slot with its terms as leader,
// each failover as a band from the signal to the next election and a dot at its length,
// then every failover in a table.
func (r failoverResult) page() *report.Page {
	p := &report.Page{Title: fmt.Sprintf("twice bench failover: %s, %d instances", r.Store, r.Instances), Summary: r.summary(),
		Facts: []report.Fact{{Name: "store", Value: r.Store}, {Name: "instances", Value: strconv.Itoa(r.Instances)},
			{Name: "stop", Value: fmt.Sprintf("%s to the leader, %d times", r.Signal, r.Kills)},
			{Name: "lease TTL", Value: msText(r.LeaseTTLMS, 0)}, {Name: "leader poll", Value: msText(r.PollMS, 0)},
			{Name: "liveness lock", Value: onOff(r.LivenessLock)}}}
	c := report.Chart{ID: "timeline", Label: "failovers over the run", Span: r.DurationS, YUnit: "ms", Log: true,
		Lanes: instanceLanes(r.Instances), Keys: []report.Key{{Class: "term", Name: "leader"}, {Class: "gap", Name: "no leader"}}}
	dots, gaps, table := drawFailovers(r.Failovers, r.Signal)
	c.Series, c.Spans = []report.Series{dots}, gaps
	for _, t := range r.Terms {
		c.Bars = append(c.Bars, report.Bar{Lane: t.Slot, From: t.FromS, To: t.ToS, Class: "term", Thin: true,
			Title: fmt.Sprintf("%s led with token %d from %.1f s to %.1f s", t.Instance, t.Token, t.FromS, t.ToS)})
	}
	p.Sections = []report.Section{
		{ID: "run", Heading: "Timeline", Charts: []report.Chart{c},
			Note: "Top: how long each failover took, from the signal to the next leader's own report of its election, at the time of the signal (logarithmic). " +
				"Bottom: one lane per instance slot; a green bar marks when an instance believed it led (a stopped one is started again in its slot), " +
				"and a red band each failover, from the signal to the election. Hover over a dot or a band for what it is."},
		{ID: "figures-section", Heading: "Figures", Tables: []report.Table{
			figures(figure{"failover p50", msText(r.P50MS, 1)}, figure{"failover p99", msText(r.P99MS, 1)}, figure{"failover max", msText(r.MaxMS, 1)},
				figure{"bound when a crash waits for the lease (lease TTL + leader poll)", msText(r.LeaseTTLMS+r.PollMS, 0)}),
			table}},
	}
	return p
}

// failoverParams configure [measureFailover].
type failoverParams struct {
	// Kills is how many times the leader is stopped.
	Kills int
	// Graceful stops the leader with SIGTERM (a drain) instead of SIGKILL.
	Graceful bool
	// Instances is how many instances run. Defaults to 3.
	Instances int
	// Progress receives one line per kill; nil discards them.
	Progress io.Writer
}

// failoverResult is what [measureFailover] measured.
type failoverResult struct {
	Store      string  `json:"store"`
	Instances  int     `json:"instances"`
	Kills      int     `json:"kills"`
	Signal     string  `json:"signal"`
	LeaseTTLMS float64 `json:"lease_ttl_ms"`
	PollMS     float64 `json:"leader_poll_ms"`
	// LivenessLock is whether the instances held liveness locks (see Config.NoLivenessLock).
	LivenessLock bool      `json:"liveness_lock"`
	FailoversMS  []float64 `json:"failovers_ms"`
	P50MS        float64   `json:"p50_ms"`
	P99MS        float64   `json:"p99_ms"`
	MaxMS        float64   `json:"max_ms"`
	// The run over time, for the HTML report, in seconds since the first instance
	// started: its length, each failover and each leadership term.
	DurationS float64      `json:"duration_s"`
	Failovers []failover   `json:"failovers"`
	Terms     []leaderTerm `json:"terms"`
}

// failover is one stop of the leader: when, in seconds since the run started, the leader
// in which slot was stopped, and which instance led next, how long after.
type failover struct {
	AtS      float64 `json:"at_s"`
	Slot     int     `json:"slot"`
	Leader   string  `json:"leader"`
	NextSlot int     `json:"next_slot"`
	Next     string  `json:"next"`
	MS       float64 `json:"ms"`
}

// leaderTerm is one instance's term as leader, in seconds since the run started.
type leaderTerm struct {
	Slot     int     `json:"slot"`
	Instance string  `json:"instance"`
	Token    int64   `json:"token"`
	FromS    float64 `json:"from_s"`
	ToS      float64 `json:"to_s"`
}

// leaderTerms are the terms of g's instances since start, until end.
func leaderTerms(g *instance.Group, start, end time.Time) []leaderTerm {
	events, _ := g.Log()
	var out []leaderTerm
	for _, t := range instance.Terms(events, end) {
		out = append(out, leaderTerm{Slot: t.Proc, Instance: t.ID, Token: t.Token, FromS: t.Start.Sub(start).Seconds(), ToS: t.End.Sub(start).Seconds()})
	}
	return out
}

// failoverMS are the failovers' lengths, in order.
func failoverMS(fs []failover) []float64 {
	out := make([]float64, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.MS)
	}
	return out
}

// measureFailover runs p.Instances instances, then p.Kills times stops the leader and measures
// how long until another instance is elected: from the signal to the new leader's own
// report of its election, both on this machine's clock. The stopped instance is restarted
// each time, so every kill finds a full cluster.
func measureFailover(ctx context.Context, spawn instance.Spawner, opts instance.Options, p failoverParams) (failoverResult, error) {
	if p.Kills < 1 {
		return failoverResult{}, fmt.Errorf("failover: need at least one kill, not %d", p.Kills)
	}
	if p.Instances == 0 {
		p.Instances = 3
	}
	if p.Progress == nil {
		p.Progress = io.Discard
	}
	ttl := opts.LeaseTTL
	if ttl == 0 {
		ttl = lease.DefaultTTL
	}
	poll := opts.LeaderPoll
	if poll == 0 {
		poll = cluster.DefaultLeaderPoll
	}
	res := failoverResult{Instances: p.Instances, Kills: p.Kills, Signal: "SIGKILL",
		LeaseTTLMS: ms(ttl), PollMS: ms(poll), LivenessLock: !opts.NoLivenessLock}
	sig := syscall.SIGKILL
	if p.Graceful {
		sig, res.Signal = syscall.SIGTERM, "SIGTERM"
	}

	g := instance.NewGroup(spawn, opts, nil)
	defer g.Stop(10 * time.Second)
	start := time.Now()
	for i := range p.Instances {
		if _, err := g.Start(ctx, i); err != nil {
			return res, err
		}
	}
	var err error
	if res.Failovers, err = killLeaders(ctx, g, p.Kills, sig, ttl, start, p.Progress); err != nil {
		return res, err
	}
	end := time.Now()
	res.DurationS, res.Terms = end.Sub(start).Seconds(), leaderTerms(g, start, end)
	res.FailoversMS = failoverMS(res.Failovers)
	res.P50MS, res.P99MS, res.MaxMS = percentile(res.FailoversMS, 50), percentile(res.FailoversMS, 99), percentile(res.FailoversMS, 100)
	return res, nil
}

// killLeaders stops the leader of g's instances kills times with sig and returns each
// failover, its time since start and how long it took: from the signal to the new leader's
// own report of its election, both on this machine's clock. The stopped instance is
// restarted in its slot each time, so every kill finds a full cluster. ttl is the
// instances' lease TTL.
func killLeaders(ctx context.Context, g *instance.Group, kills int, sig syscall.Signal, ttl time.Duration, start time.Time, progress io.Writer) ([]failover, error) {
	name := map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGTERM: "SIGTERM"}[sig]
	var out []failover
	// Every wait below is bounded: a cluster that never elects is a failure, not a hang.
	limit := 10*ttl + 30*time.Second
	for k := range kills {
		wctx, cancel := context.WithTimeout(ctx, limit)
		_, _, err := g.WaitFor(wctx, 0, func(instance.Event) bool { _, _, ok := g.Leader(); return ok })
		cancel()
		if err != nil {
			return out, fmt.Errorf("failover: no leader elected: %w", err)
		}
		// Kill at a random point of the renewal cycle, after the leader has renewed at
		// least once, so the figures cover every phase rather than one.
		loop.Sleep(ctx, ttl/2+rand.N(ttl/4))
		slot, elected, ok := g.Leader()
		if !ok {
			continue
		}
		_, from := g.Log()
		t0 := time.Now()
		if err := g.Signal(slot, sig); err != nil {
			return out, err
		}
		wctx, cancel = context.WithTimeout(ctx, limit)
		ev, _, err := g.WaitFor(wctx, from, func(e instance.Event) bool { return e.Event == "elected" && e.Proc != slot })
		cancel()
		if err != nil {
			return out, fmt.Errorf("failover %d: no new leader after %s: %w", k+1, name, err)
		}
		d := ev.Time().Sub(t0)
		out = append(out, failover{AtS: t0.Sub(start).Seconds(), Slot: slot, Leader: elected.ID, NextSlot: ev.Proc, Next: ev.ID, MS: ms(d)})
		fmt.Fprintf(progress, "failover %d/%d: %s to leader %s (token %d); %s elected in %d ms (token %d)\n",
			k+1, kills, name, elected.ID, elected.Token, ev.ID, d.Milliseconds(), ev.Token)
		select {
		case <-g.Proc(slot).Done():
		case <-ctx.Done():
			return out, ctx.Err()
		}
		if _, err := g.Start(ctx, slot); err != nil {
			return out, err
		}
	}
	return out, nil
}

// percentile is the nearest-rank percentile p (0 < p <= 100) of xs.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// drawFailovers draws failovers after sig: a dot of each one's length at its time, a band
// from the signal to the election, and a table of them all.
func drawFailovers(fs []failover, sig string) (dots report.Series, gaps []report.Span, table report.Table) {
	dots = report.Series{Name: "failover time", Style: "dots"}
	table = report.Table{ID: "failovers", Head: []string{"#", "at", "stopped", "next leader", "failover"}}
	for i, f := range fs {
		title := fmt.Sprintf("failover %d at %.1f s: %s to %s (instance %d); %s (instance %d) elected after %.1f ms",
			i+1, f.AtS, sig, f.Leader, f.Slot, f.Next, f.NextSlot, f.MS)
		dots.X, dots.Y, dots.Titles = append(dots.X, f.AtS), append(dots.Y, f.MS), append(dots.Titles, title)
		gaps = append(gaps, report.Span{From: f.AtS, To: f.AtS + f.MS/1000, Class: "gap", Title: title})
		table.Rows = append(table.Rows, []report.Cell{report.Num(float64(i+1), 0), {Text: fmt.Sprintf("%.1f s", f.AtS), Num: true},
			report.Text(fmt.Sprintf("%s (instance %d)", f.Leader, f.Slot)), report.Text(fmt.Sprintf("%s (instance %d)", f.Next, f.NextSlot)),
			{Text: msText(f.MS, 1), Num: true}})
	}
	table.Bars(4, failoverMS(fs), []int{0})
	return dots, gaps, table
}
