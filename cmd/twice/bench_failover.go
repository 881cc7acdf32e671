package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/loop"
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
	if err := parse(fs, args); err != nil {
		return err
	}
	if *kills < 1 || *kills > 10000 {
		return fmt.Errorf("%w: bench failover: --kills must be 1 to 10000", errUsage)
	}
	if *instances < 2 || *instances > 50 {
		return fmt.Errorf("%w: bench failover: --instances must be 2 to 50", errUsage)
	}
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
	if *asJSON {
		return printJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "failover after %s on %s: p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d kills (lease TTL %.0f ms, leader poll %.0f ms, liveness lock %s)\n",
		res.Signal, res.Store, res.P50MS, res.P99MS, res.MaxMS, res.Kills, res.LeaseTTLMS, res.PollMS, map[bool]string{true: "on", false: "off"}[res.LivenessLock])
	return nil
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
	for i := range p.Instances {
		if _, err := g.Start(ctx, i); err != nil {
			return res, err
		}
	}
	var err error
	if res.FailoversMS, err = killLeaders(ctx, g, p.Kills, sig, ttl, p.Progress); err != nil {
		return res, err
	}
	res.P50MS, res.P99MS, res.MaxMS = percentile(res.FailoversMS, 50), percentile(res.FailoversMS, 99), percentile(res.FailoversMS, 100)
	return res, nil
}

// killLeaders stops the leader of g's instances kills times with sig and returns how long
// each failover took, in ms: from the signal to the new leader's own report of its election,
// both on this machine's clock. The stopped instance is restarted in its slot each time, so
// every kill finds a full cluster. ttl is the instances' lease TTL.
func killLeaders(ctx context.Context, g *instance.Group, kills int, sig syscall.Signal, ttl time.Duration, progress io.Writer) ([]float64, error) {
	name := map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGTERM: "SIGTERM"}[sig]
	var out []float64
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
		out = append(out, ms(d))
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
