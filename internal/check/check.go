// Package check is twice's consistency checker: it runs real instance processes of a
// workload against SQLite or PostgreSQL, injects faults for a while (SIGKILL, SIGSTOP past a
// lease, dropped, delayed or blackholed database connections, a PostgreSQL restart), records
// what every instance saw, and checks the invariants of each building block against that
// history and the database. `twice check` is its command.
package check

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/twicehq/twice/internal/clusterkey"
	"github.com/twicehq/twice/internal/faultproxy"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

// Fault kinds.
const (
	FaultKill      = "kill"       // SIGKILL an instance, restart it
	FaultStop      = "stop"       // SIGSTOP an instance for longer than a lease, then SIGCONT
	FaultDrop      = "drop"       // reset an instance's database connections (PostgreSQL)
	FaultDelay     = "delay"      // delay an instance's database traffic (PostgreSQL)
	FaultBlackhole = "blackhole"  // partition an instance from the database (PostgreSQL)
	FaultRestart   = "pg-restart" // restart the PostgreSQL server (needs PGRestartCmd)
)

// AllFaults lists every fault kind.
var AllFaults = []string{FaultKill, FaultStop, FaultDrop, FaultDelay, FaultBlackhole, FaultRestart}

// Params configure a [Run].
type Params struct {
	// DSN and Schema name the database under test.
	DSN    string
	Schema string
	// Instances is how many instance processes run. Defaults to 3.
	Instances int
	// Duration is how long faults are injected. Defaults to 60 seconds.
	Duration time.Duration
	// Faults are the kinds to inject; nil means every kind the store supports (network
	// faults need PostgreSQL, a restart needs PGRestartCmd).
	Faults []string
	// FaultEvery is the mean time between faults. Defaults to 4 seconds.
	FaultEvery time.Duration
	// PGRestartCmd restarts the PostgreSQL server, run with sh -c.
	PGRestartCmd string
	// LeaseTTL of the instances. Defaults to 1 second, so pauses past it are short.
	LeaseTTL time.Duration
	// Seed makes the fault schedule repeatable. Defaults to a random seed, reported.
	Seed uint64
	// Spawn starts one instance process.
	Spawn instance.Spawner
	// Progress receives a line per fault; nil discards.
	Progress io.Writer
	// InstanceLog receives the instances' own logs (warnings and elections); nil discards.
	InstanceLog io.Writer
}

// Report is the outcome of a run.
type Report struct {
	Store     string         `json:"store"`
	Instances int            `json:"instances"`
	DurationS float64        `json:"duration_s"`
	Seed      uint64         `json:"seed"`
	Faults    map[string]int `json:"faults"`
	// Stalls counts the times an instance's heartbeats stopped landing for its dead-after
	// with no injected fault to explain it (an overloaded machine; on SQLite, a pause of
	// any instance explains it, since the paused one may hold the write lock): the cluster
	// may have counted it dead, so its jobs are judged as if it had been faulted.
	Stalls     int         `json:"stalls"`
	Invariants []Invariant `json:"invariants"`
	// Violations is the sum over the invariants; a run passes when it is 0.
	Violations int `json:"violations"`
	// Timeline is what happened when, for the HTML report ([Report.WriteHTML]).
	Timeline *Timeline `json:"timeline,omitempty"`
}

// Invariant is the verdict on one property.
type Invariant struct {
	Name       string   `json:"name"`
	Operations int      `json:"operations"`
	Violations int      `json:"violations"`
	Details    []string `json:"details,omitempty"` // the first few violations
	// Found places the first violations (up to maxFound) on the run's timeline.
	Found []Found `json:"found,omitempty"`
}

// Found is one violation: when it happened or, when the history cannot tell (a verdict on
// the final state, or on the history as a whole), when the checker found it.
type Found struct {
	At     time.Time `json:"at"`
	Detail string    `json:"detail"`
}

// maxFound bounds the violations of one invariant placed on the timeline: past a hundred,
// more marks hide the run rather than show it.
const maxFound = 100

// violate counts a violation that happened at at (zero: now, when it was found).
func (inv *Invariant) violate(at time.Time, format string, args ...any) {
	if at.IsZero() {
		at = time.Now()
	}
	detail := fmt.Sprintf(format, args...)
	inv.Violations++
	inv.Details = append(inv.Details, detail)
	if len(inv.Found) < maxFound {
		inv.Found = append(inv.Found, Found{At: at, Detail: detail})
	}
}

func (r *Report) add(inv Invariant) {
	if len(inv.Details) > 5 {
		inv.Details = inv.Details[:5]
	}
	r.Invariants = append(r.Invariants, inv)
	r.Violations += inv.Violations
}

// Run runs the workload under faults and checks it.
func Run(ctx context.Context, p Params) (*Report, error) {
	if p.Instances == 0 {
		p.Instances = 3
	}
	if p.Duration == 0 {
		p.Duration = time.Minute
	}
	if p.FaultEvery == 0 {
		p.FaultEvery = 4 * time.Second
	}
	if p.LeaseTTL == 0 {
		p.LeaseTTL = time.Second
	}
	if p.Seed == 0 {
		p.Seed = rand.Uint64()
	}
	if p.Progress == nil {
		p.Progress = io.Discard
	}
	s, err := store.Open(ctx, p.DSN, &store.Options{Schema: p.Schema})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	faults, err := faultKinds(p, s.Dialect())
	if err != nil {
		return nil, err
	}
	if _, err := store.NewMigrator(s, instance.Components()...).Up(ctx); err != nil {
		return nil, err
	}
	b := make([]byte, 3)
	_, _ = crand.Read(b)
	service := "check-" + hex.EncodeToString(b)
	flows, closeFlows, err := flowEngine(s, service)
	if err != nil {
		return nil, err
	}
	defer closeFlows()

	r := &run{p: p, s: s, service: service, flows: flows, faults: faults, rng: rand.New(rand.NewPCG(p.Seed, p.Seed>>1)),
		report: &Report{Store: string(s.Dialect()), Instances: p.Instances, Seed: p.Seed, Faults: map[string]int{}},
		rec:    &recorder{}}
	defer r.cleanup()
	r.phase("start instances")
	if err := r.start(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	r.phase("faults")
	r.http = newHTTPLoad(r.g, r.rec)
	r.http.start(ctx)
	r.rt = newRTLoad(r.http)
	r.rt.start(ctx)
	if err := r.inject(ctx); err != nil {
		return nil, err
	}
	r.phase("heal")
	recovered := r.heal(ctx)
	r.http.stop()
	r.rt.stop()
	r.phase("drain")
	caughtUp := r.drain(ctx)
	r.phase("verify")
	sessions, idem, err := r.http.verify(ctx, r.s, r.service)
	if err != nil {
		return nil, err
	}
	r.report.add(sessions)
	r.report.add(idem)
	converged, err := r.http.converge(ctx, r.s, r.service)
	if err != nil {
		return nil, err
	}
	r.report.add(converged)
	r.report.add(r.rt.verify(ctx))
	r.g.Stop(20 * time.Second)
	r.report.DurationS = time.Since(start).Seconds()
	if err := r.analyze(ctx, recovered && caughtUp); err != nil {
		return nil, err
	}
	return r.report, nil
}

func faultKinds(p Params, d store.Dialect) ([]string, error) {
	want := p.Faults
	explicit := want != nil
	if !explicit {
		want = AllFaults
	}
	var out []string
	for _, f := range want {
		switch f {
		case FaultKill, FaultStop:
		case FaultDrop, FaultDelay, FaultBlackhole:
			if d != store.Postgres {
				if explicit {
					return nil, fmt.Errorf("check: fault %q needs PostgreSQL: SQLite has no connection to cut", f)
				}
				continue
			}
		case FaultRestart:
			if d != store.Postgres || p.PGRestartCmd == "" {
				if explicit {
					return nil, fmt.Errorf("check: fault %q needs PostgreSQL and --pg-restart-cmd", f)
				}
				continue
			}
		default:
			return nil, fmt.Errorf("check: unknown fault %q (known: %s)", f, strings.Join(AllFaults, ", "))
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, errors.New("check: no fault to inject")
	}
	return out, nil
}

type run struct {
	p       Params
	s       *store.Store
	service string
	flows   *workflow.Engine // reads the workflows the instances run
	faults  []string
	rng     *rand.Rand
	report  *Report
	g       *instance.Group
	proxies []*faultproxy.Proxy
	http    *httpLoad
	rt      *rtLoad
	log     []faultRec // every fault injected, for judging duplicate job runs
	rec     *recorder  // every operation, for the report's charts
	phases  []Phase    // the stages so far; the last one's End is set when the next begins
}

// faultRec is one injected fault (or a stall): what, on which instance (empty for all) in
// which slot (-1 for all), from when to when.
type faultRec struct {
	kind       string
	instance   string
	slot       int
	start, end time.Time
}

// phase ends the current stage of the run and begins the next, called name.
func (r *run) phase(name string) {
	now := time.Now()
	if n := len(r.phases); n > 0 {
		r.phases[n-1].End = now
	}
	r.phases = append(r.phases, Phase{Name: name, Start: now})
}

func (r *run) start(ctx context.Context) error {
	// A cluster secret, as production should have: every bus message is signed, and the
	// realtime hub's messages travel on the bus (its direct path is under the faults too).
	opts := instance.Options{DSN: r.p.DSN, Schema: r.p.Schema, Service: r.service, Workloads: instance.CheckWorkloads(),
		ClusterSecret: clusterkey.Random(), LeaseTTL: r.p.LeaseTTL, LeaderPoll: 50 * time.Millisecond,
		HeartbeatInterval: r.p.LeaseTTL / 4, DeadAfter: r.p.LeaseTTL, DeadOwnerGrace: r.p.LeaseTTL}
	r.g = instance.NewGroup(r.p.Spawn, opts, r.p.InstanceLog)
	if r.s.Dialect() == store.Postgres {
		u, err := url.Parse(r.p.DSN)
		if err != nil || u.Host == "" {
			// url.Parse's error repeats the DSN, password included.
			return fmt.Errorf("check: %s: PostgreSQL needs the URL form of the DSN (postgres://HOST:PORT/…) to put fault proxies in front of it", store.Redact(r.p.DSN))
		}
		for range r.p.Instances {
			px, err := faultproxy.New(u.Host)
			if err != nil {
				return err
			}
			r.proxies = append(r.proxies, px)
		}
		r.g.Configure = func(slot int, o *instance.Options) {
			pu := *u
			pu.Host = r.proxies[slot].Addr()
			o.DSN = pu.String()
		}
	}
	for i := range r.p.Instances {
		if _, err := r.g.Start(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// inject runs faults until the duration is over, one at a time, cycling through the kinds
// so every kind is injected.
func (r *run) inject(ctx context.Context) error {
	end := time.Now().Add(r.p.Duration)
	for i := 0; time.Now().Before(end); i++ {
		wait := r.p.FaultEvery/2 + time.Duration(r.rng.Int64N(int64(r.p.FaultEvery)))
		sleep(ctx, min(wait, time.Until(end)))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !time.Now().Before(end) {
			break
		}
		kind := r.faults[i%len(r.faults)]
		slot := r.target()
		rec := faultRec{kind: kind, slot: -1, start: time.Now()}
		if p := r.g.Proc(slot); p != nil && kind != FaultRestart {
			rec.instance, rec.slot = p.ID, slot
		}
		if err := r.fault(ctx, kind, slot); err != nil {
			return fmt.Errorf("check: fault %s on instance %d: %w", kind, slot, err)
		}
		rec.end = time.Now()
		r.log = append(r.log, rec)
		r.report.Faults[kind]++
	}
	return nil
}

// target picks the leader two times in three (faults matter most there), else any instance.
func (r *run) target() int {
	if slot, _, ok := r.g.Leader(); ok && r.rng.IntN(3) > 0 {
		return slot
	}
	return r.rng.IntN(r.p.Instances)
}

func (r *run) fault(ctx context.Context, kind string, slot int) error {
	ttl := r.p.LeaseTTL
	id := "?"
	if p := r.g.Proc(slot); p != nil {
		id = p.ID
	}
	fmt.Fprintf(r.p.Progress, "%s %-10s instance %d (%s)\n", time.Now().Format("15:04:05.000"), kind, slot, id)
	switch kind {
	case FaultKill:
		if err := r.g.Kill(slot); err != nil {
			return err
		}
		sleep(ctx, time.Duration(r.rng.Int64N(int64(ttl))))
		_, err := r.g.Start(ctx, slot)
		return err
	case FaultStop:
		if err := r.g.Signal(slot, syscall.SIGSTOP); err != nil {
			return err
		}
		sleep(ctx, ttl*3/2+time.Duration(r.rng.Int64N(int64(ttl))))
		return r.g.Signal(slot, syscall.SIGCONT)
	case FaultDrop:
		r.proxies[slot].Set(faultproxy.Drop, 0)
		sleep(ctx, ttl+time.Duration(r.rng.Int64N(int64(ttl))))
		r.proxies[slot].Set(faultproxy.Pass, 0)
	case FaultDelay:
		r.proxies[slot].Set(faultproxy.Delay, ttl/10+time.Duration(r.rng.Int64N(int64(ttl/2))))
		sleep(ctx, 2*ttl)
		r.proxies[slot].Set(faultproxy.Pass, 0)
	case FaultBlackhole:
		r.proxies[slot].Set(faultproxy.Blackhole, 0)
		sleep(ctx, ttl*3/2+time.Duration(r.rng.Int64N(int64(ttl))))
		r.proxies[slot].Set(faultproxy.Pass, 0)
	case FaultRestart:
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		out, err := exec.CommandContext(cctx, "sh", "-c", r.p.PGRestartCmd).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", r.p.PGRestartCmd, err, out)
		}
	}
	return nil
}

// heal ends every fault and waits for the cluster to settle with a leader; it reports
// whether it did.
func (r *run) heal(ctx context.Context) bool {
	for _, px := range r.proxies {
		px.Set(faultproxy.Pass, 0)
	}
	for i := range r.p.Instances {
		_ = r.g.Signal(i, syscall.SIGCONT)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*r.p.LeaseTTL+10*time.Second)
	defer cancel()
	_, from := r.g.Log()
	// Recovered: a leader elected after the last fault, which has written.
	_, _, err := r.g.WaitFor(wctx, from, func(e instance.Event) bool {
		return e.Event == "op" && e.Op.Kind == "write" && e.Op.Result == "ok"
	})
	if err != nil {
		if _, _, ok := r.g.Leader(); !ok {
			return false
		}
	}
	sleep(ctx, r.p.LeaseTTL) // let the workload run unharmed for a moment
	return true
}

// drain stops the publishers, enqueuers and workflow starters and waits until both
// consumer groups have handled every committed event, every job and every workflow has
// finished, and the schedule has fired up to now; it reports whether all of that happened within the limit.
func (r *run) drain(ctx context.Context) bool {
	for i := range r.p.Instances {
		_ = r.g.Signal(i, syscall.SIGUSR1)
	}
	since := time.Now()
	deadline := since.Add(time.Minute)
	for time.Now().Before(deadline) {
		var published, eo, shared, unfinished int
		var lastTick string
		err := r.s.Reader().QueryRow(ctx, `SELECT
			(SELECT count(*) FROM twice_events WHERE service = $1 AND topic = $2),
			(SELECT count(DISTINCT event_id) FROM `+instance.EffectsCheckTable+` WHERE service = $1 AND grp = $3),
			(SELECT count(DISTINCT event_id) FROM `+instance.EffectsCheckTable+` WHERE service = $1 AND grp = $4),
			(SELECT count(*) FROM twice_jobs WHERE service = $1 AND kind IN ('check-job', 'check-tick') AND state <> 4),
			(SELECT coalesce(max(tick), '') FROM `+instance.CheckTickRuns+` WHERE service = $1)`,
			r.service, instance.CheckTopic, instance.CheckGroupEO, instance.CheckGroupShared).Scan(&published, &eo, &shared, &unfinished, &lastTick)
		tick, _ := time.Parse(time.RFC3339Nano, lastTick)
		if err == nil && eo >= published && shared >= published && unfinished == 0 && !tick.Before(since.Add(-2*time.Second)) {
			flows, err := r.flows.List(ctx, workflow.ListParams{States: []workflow.State{workflow.Running, workflow.Compensating}, Limit: 1})
			if err == nil && len(flows) == 0 {
				return true
			}
		}
		sleep(ctx, 100*time.Millisecond)
	}
	return false
}

func (r *run) cleanup() {
	if r.g != nil {
		r.g.Stop(20 * time.Second)
	}
	for _, px := range r.proxies {
		px.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = store.DeleteService(ctx, r.s, r.service, instance.Components()...)
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
