package instance

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/lease"
)

// FailoverParams configure [BenchFailover].
type FailoverParams struct {
	// Kills is how many times the leader is stopped.
	Kills int
	// Graceful stops the leader with SIGTERM (a drain) instead of SIGKILL.
	Graceful bool
	// Instances is how many instances run. Defaults to 3.
	Instances int
	// Progress receives one line per kill; nil discards them.
	Progress io.Writer
}

// FailoverResult is what [BenchFailover] measured.
type FailoverResult struct {
	Store       string    `json:"store"`
	Instances   int       `json:"instances"`
	Kills       int       `json:"kills"`
	Signal      string    `json:"signal"`
	LeaseTTLMS  float64   `json:"lease_ttl_ms"`
	PollMS      float64   `json:"leader_poll_ms"`
	FailoversMS []float64 `json:"failovers_ms"`
	P50MS       float64   `json:"p50_ms"`
	P99MS       float64   `json:"p99_ms"`
	MaxMS       float64   `json:"max_ms"`
}

// BenchFailover runs p.Instances instances, then p.Kills times stops the leader and measures
// how long until another instance is elected: from the signal to the new leader's own
// report of its election, both on this machine's clock. The stopped instance is restarted
// each time, so every kill finds a full cluster.
func BenchFailover(ctx context.Context, spawn Spawner, opts Options, p FailoverParams) (FailoverResult, error) {
	if p.Kills < 1 {
		return FailoverResult{}, fmt.Errorf("failover: need at least one kill, not %d", p.Kills)
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
	res := FailoverResult{Instances: p.Instances, Kills: p.Kills, Signal: "SIGKILL",
		LeaseTTLMS: ms(ttl), PollMS: ms(poll)}
	sig := syscall.SIGKILL
	if p.Graceful {
		sig, res.Signal = syscall.SIGTERM, "SIGTERM"
	}

	g := NewGroup(spawn, opts, nil)
	defer g.Stop(10 * time.Second)
	for i := range p.Instances {
		if _, err := g.Start(ctx, i); err != nil {
			return res, err
		}
	}
	// Every wait below is bounded: a cluster that never elects is a failure, not a hang.
	limit := 10*ttl + 30*time.Second
	for k := range p.Kills {
		wctx, cancel := context.WithTimeout(ctx, limit)
		_, _, err := g.WaitFor(wctx, 0, func(Event) bool { _, _, ok := g.Leader(); return ok })
		cancel()
		if err != nil {
			return res, fmt.Errorf("failover: no leader elected: %w", err)
		}
		// Kill at a random point of the renewal cycle, after the leader has renewed at
		// least once, so the figures cover every phase rather than one.
		sleep(ctx, ttl/2+rand.N(ttl/4))
		slot, elected, ok := g.Leader()
		if !ok {
			continue
		}
		_, from := g.Log()
		t0 := time.Now()
		if err := g.Signal(slot, sig); err != nil {
			return res, err
		}
		wctx, cancel = context.WithTimeout(ctx, limit)
		ev, _, err := g.WaitFor(wctx, from, func(e Event) bool { return e.Event == "elected" && e.Proc != slot })
		cancel()
		if err != nil {
			return res, fmt.Errorf("failover %d: no new leader after %s: %w", k+1, res.Signal, err)
		}
		d := ev.Time().Sub(t0)
		res.FailoversMS = append(res.FailoversMS, ms(d))
		fmt.Fprintf(p.Progress, "failover %d/%d: %s to leader %s (token %d); %s elected in %d ms (token %d)\n",
			k+1, p.Kills, res.Signal, elected.ID, elected.Token, ev.ID, d.Milliseconds(), ev.Token)
		proc := g.Proc(slot)
		select {
		case <-proc.done:
		case <-ctx.Done():
			return res, ctx.Err()
		}
		if _, err := g.Start(ctx, slot); err != nil {
			return res, err
		}
	}
	res.P50MS, res.P99MS, res.MaxMS = Percentile(res.FailoversMS, 50), Percentile(res.FailoversMS, 99), Percentile(res.FailoversMS, 100)
	return res, nil
}

// Percentile is the nearest-rank percentile p (0 < p <= 100) of xs.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
