package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"syscall"
	"time"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/report"
)

// benchPartitions runs `twice bench partitions`: how long a partition set takes to settle
// again after an instance joins, leaves gracefully, and is killed.
func benchPartitions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench partitions", flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	instances := fs.Int("instances", 10, "instances in the set before each join")
	partitions := fs.Int("partitions", 900, "partitions of the set")
	rounds := fs.Int("rounds", 3, "rounds of join, leave and kill")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	rep := addReport(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *instances < 2 || *instances > 50 {
		return fmt.Errorf("%w: bench partitions: --instances must be 2 to 50", errUsage)
	}
	if *partitions < 1 || *partitions > 4096 {
		return fmt.Errorf("%w: bench partitions: --partitions must be 1 to 4096", errUsage)
	}
	if *rounds < 1 || *rounds > 100 {
		return fmt.Errorf("%w: bench partitions: --rounds must be 1 to 100", errUsage)
	}
	if err := rep.create(); err != nil {
		return err
	}
	defer rep.discard()
	e, err := newBenchEnv(ctx, &db, "partitions", *asJSON, stdout, stderr)
	if err != nil {
		return err
	}
	defer e.close()
	fmt.Fprintf(e.progress, "bench partitions: %d instances of %s on %s sharing %d partitions, %d rounds of a join, a graceful leave and a SIGKILL\n",
		*instances, e.service, e.store, *partitions, *rounds)
	opts := instance.Options{DSN: e.dsn, Schema: db.schema, Service: e.service,
		Workloads: []instance.Workload{instance.PartitionWrites{Partitions: *partitions, NoWrites: true}}}
	res, err := measureRebalance(ctx, e.spawn, opts, *instances, *partitions, *rounds, e.progress)
	if err != nil {
		return err
	}
	res.Store = string(e.store.Dialect())
	return rep.finish(stdout, e.progress, *asJSON, res)
}

// rebalanceResult is what `twice bench partitions` measures: from the change (the new
// instance's join, the SIGTERM, the SIGKILL) until every partition is assigned again,
// evenly, as the instances report their assignments.
type rebalanceResult struct {
	Store      string      `json:"store"`
	Instances  int         `json:"instances"`
	Partitions int         `json:"partitions"`
	Rounds     []rebalance `json:"rounds"`
	JoinMS     float64     `json:"join_ms"`  // median
	LeaveMS    float64     `json:"leave_ms"` // median
	KillMS     float64     `json:"kill_ms"`  // median
}

// rebalance is one round: each change's time to settle, and how many partitions it moved.
type rebalance struct {
	JoinMS     float64 `json:"join_ms"`
	JoinMoved  int     `json:"join_moved"`
	LeaveMS    float64 `json:"leave_ms"`
	LeaveMoved int     `json:"leave_moved"`
	KillMS     float64 `json:"kill_ms"`
	KillMoved  int     `json:"kill_moved"`
}

func (r rebalanceResult) summary() string {
	return fmt.Sprintf("partition set of %d on %s, %d→%d→%d instances: settled after a join in %.0f ms, a graceful leave in %.0f ms, a SIGKILL in %.0f ms (medians of %d rounds)",
		r.Partitions, r.Store, r.Instances, r.Instances+1, r.Instances, r.JoinMS, r.LeaveMS, r.KillMS, len(r.Rounds))
}

func (r rebalanceResult) page() *report.Page {
	t := report.Table{ID: "rounds", Head: []string{"round", "join ms", "moved", "leave ms", "moved", "kill ms", "moved"}}
	for i, x := range r.Rounds {
		t.Rows = append(t.Rows, []report.Cell{report.Text(strconv.Itoa(i + 1)), report.Num(x.JoinMS, 0), report.Num(float64(x.JoinMoved), 0),
			report.Num(x.LeaveMS, 0), report.Num(float64(x.LeaveMoved), 0), report.Num(x.KillMS, 0), report.Num(float64(x.KillMoved), 0)})
	}
	return &report.Page{Title: fmt.Sprintf("twice bench partitions: %s, %d partitions", r.Store, r.Partitions), Summary: r.summary(),
		Facts: []report.Fact{{Name: "store", Value: r.Store}, {Name: "partitions", Value: strconv.Itoa(r.Partitions)},
			{Name: "instances", Value: fmt.Sprintf("%d, one more during a join", r.Instances)}},
		Sections: []report.Section{{ID: "rounds-section", Heading: "Rounds",
			Note: "Each round: an instance joins (timed from its call to Join), the same one leaves with SIGTERM, then another is killed with SIGKILL and started again. " +
				"A change has settled when every partition is assigned to a live instance and each holds its even share, as the instances report it. Moved counts the assignments the change caused.",
			Tables: []report.Table{t}}}}
}

// assignments follows the set's partitions through the instances' reports.
type assignments struct {
	owner map[int]instance.Event // partition → its current assignment ("assigned", not yet "revoked")
}

func (a *assignments) apply(e instance.Event) {
	p, err := strconv.Atoi(e.Key)
	if err != nil {
		return
	}
	switch e.Event {
	case "assigned":
		if cur, ok := a.owner[p]; !ok || e.Token > cur.Token {
			a.owner[p] = e
		}
	case "revoked":
		if cur, ok := a.owner[p]; ok && cur.Token == e.Token && cur.ID == e.ID {
			delete(a.owner, p)
		}
	}
}

// settled reports whether every partition is assigned to one of live (instance ids) and
// each holds P/n or P/n+1.
func (a *assignments) settled(parts int, live map[string]bool) bool {
	if len(a.owner) != parts || len(live) == 0 {
		return false
	}
	load := map[string]int{}
	for _, e := range a.owner {
		if !live[e.ID] {
			return false
		}
		load[e.ID]++
	}
	base := parts / len(live)
	for id := range live {
		if l := load[id]; l < base || l > base+1 {
			return false
		}
	}
	return true
}

// measureRebalance runs n instances of the set, then each round a join, a graceful leave
// and a kill, each timed until the set settles again.
func measureRebalance(ctx context.Context, spawn instance.Spawner, opts instance.Options, n, parts, rounds int, progress io.Writer) (rebalanceResult, error) {
	res := rebalanceResult{Instances: n, Partitions: parts}
	g := instance.NewGroup(spawn, opts, nil)
	defer g.Stop(10 * time.Second)
	for i := range n {
		if _, err := g.Start(ctx, i); err != nil {
			return res, err
		}
	}
	live := func(slots ...int) map[string]bool {
		out := map[string]bool{}
		for _, s := range slots {
			if p := g.Proc(s); p != nil && !p.Exited() {
				out[p.ID] = true
			}
		}
		return out
	}
	slots := func(k int) []int {
		out := make([]int, k)
		for i := range out {
			out[i] = i
		}
		return out
	}
	// settle waits, from log position from, until the set settles over the instances of
	// want, and returns when it did (the last report it needed) and how many assignments
	// happened since from.
	a := &assignments{owner: map[int]instance.Event{}}
	pos := 0
	settle := func(from int, want []int) (time.Time, int, error) {
		ids := live(want...)
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		_, _, err := g.WaitFor(wctx, pos, func(e instance.Event) bool {
			pos++
			a.apply(e)
			return a.settled(parts, ids)
		})
		if err != nil {
			return time.Time{}, 0, fmt.Errorf("bench partitions: the set did not settle over %d instances: %w", len(ids), err)
		}
		// Settled with the reports up to pos: the change's moves are the assignments among
		// them, and it settled at the latest of their times.
		var at time.Time
		moved := 0
		since, _ := g.Since(from)
		for _, e := range since[:max(0, pos-from)] {
			if e.Event == "assigned" {
				moved++
				if e.Time().After(at) {
					at = e.Time()
				}
			}
		}
		return at, moved, nil
	}
	if _, _, err := settle(0, slots(n)); err != nil {
		return res, err
	}
	var joins, leaves, kills []float64
	for r := range rounds {
		var x rebalance
		_, from := g.Log()
		p, err := g.Start(ctx, n)
		if err != nil {
			return res, err
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		joining, _, err := g.WaitFor(wctx, from, func(e instance.Event) bool { return e.Event == "joining" && e.ID == p.ID })
		cancel()
		if err != nil {
			return res, fmt.Errorf("bench partitions: the new instance did not start: %w", err)
		}
		at, moved, err := settle(from, slots(n+1))
		if err != nil {
			return res, err
		}
		x.JoinMS, x.JoinMoved = ms(at.Sub(joining.Time())), moved

		_, from = g.Log()
		t0 := time.Now()
		if err := g.Signal(n, syscall.SIGTERM); err != nil {
			return res, err
		}
		if at, x.LeaveMoved, err = settle(from, slots(n)); err != nil {
			return res, err
		}
		x.LeaveMS = ms(at.Sub(t0))
		<-p.Done()

		victim := r % n
		_, from = g.Log()
		t0 = time.Now()
		if err := g.Kill(victim); err != nil {
			return res, err
		}
		rest := []int{}
		for _, s := range slots(n) {
			if s != victim {
				rest = append(rest, s)
			}
		}
		if at, x.KillMoved, err = settle(from, rest); err != nil {
			return res, err
		}
		x.KillMS = ms(at.Sub(t0))
		_, from = g.Log()
		if _, err := g.Start(ctx, victim); err != nil {
			return res, err
		}
		if _, _, err := settle(from, slots(n)); err != nil {
			return res, err
		}
		fmt.Fprintf(progress, "round %d: join %.0f ms (%d moved), leave %.0f ms (%d moved), kill %.0f ms (%d moved)\n",
			r+1, x.JoinMS, x.JoinMoved, x.LeaveMS, x.LeaveMoved, x.KillMS, x.KillMoved)
		res.Rounds = append(res.Rounds, x)
		joins, leaves, kills = append(joins, x.JoinMS), append(leaves, x.LeaveMS), append(kills, x.KillMS)
	}
	res.JoinMS, res.LeaveMS, res.KillMS = percentile(joins, 50), percentile(leaves, 50), percentile(kills, 50)
	return res, nil
}
