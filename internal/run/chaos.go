package run

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"time"

	"github.com/twicehq/twice/internal/faultproxy"
)

// Fault is one kind of fault chaos injects.
type Fault string

// The faults. Delay and Drop act on the instance's database connections, through a
// fault proxy in front of PostgreSQL; they need a postgres:// URL DSN.
const (
	Kill  Fault = "kill"  // SIGKILL to the instance's process group
	Stop  Fault = "stop"  // SIGSTOP to the group, SIGCONT after the chaos period
	Delay Fault = "delay" // each chunk of its database traffic late by ChaosLatency, for the chaos period
	Drop  Fault = "drop"  // its database connections cut and refused, for the chaos period
)

var allFaults = []Fault{Kill, Stop, Delay, Drop}

func (f Fault) onDatabase() bool { return f == Delay || f == Drop }

// ParseFaults reads a comma-separated list of faults: kill, stop, delay, drop.
func ParseFaults(s string) ([]Fault, error) {
	var out []Fault
	for name := range strings.SplitSeq(s, ",") {
		f := Fault(strings.TrimSpace(name))
		switch f {
		case Kill, Stop, Delay, Drop:
		default:
			return nil, fmt.Errorf("run: fault %q: want kill, stop, delay or drop", string(f))
		}
		for _, g := range out {
			if g == f {
				return nil, fmt.Errorf("run: fault %q listed twice", string(f))
			}
		}
		out = append(out, f)
	}
	return out, nil
}

// chaosFaults are the faults chaos picks from: those asked for, or all that apply.
func (r *Runner) chaosFaults() ([]Fault, error) {
	if r.cfg.Chaos == 0 {
		return nil, nil
	}
	if len(r.cfg.Faults) == 0 {
		var out []Fault
		for _, f := range allFaults {
			if !f.onDatabase() || r.dbTarget != "" {
				out = append(out, f)
			}
		}
		return out, nil
	}
	for _, f := range r.cfg.Faults {
		if f.onDatabase() && r.dbTarget == "" {
			return nil, fmt.Errorf("run: the %s fault needs PostgreSQL as a postgres:// URL DSN", f)
		}
	}
	return r.cfg.Faults, nil
}

// chaos injects one fault on a random running instance every Chaos period, printing each.
func (r *Runner) chaos() {
	tick := time.NewTicker(r.cfg.Chaos)
	defer tick.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
		}
		r.mu.Lock()
		var running []*instance
		for _, in := range r.instances {
			if in.pid != 0 && !in.paused && !in.draining {
				running = append(running, in)
			}
		}
		if len(running) == 0 {
			r.mu.Unlock()
			continue
		}
		in := running[rand.IntN(len(running))]
		f := r.cfg.Faults[rand.IntN(len(r.cfg.Faults))]
		pid, gen := in.pid, in.gen
		if f == Stop {
			in.paused = true
		}
		r.mu.Unlock()
		r.inject(in, f, pid, gen, r.cfg.Chaos)
	}
}

// inject applies fault f to the process pid (generation gen) of in, and ends it after d.
func (r *Runner) inject(in *instance, f Fault, pid, gen int, d time.Duration) {
	switch f {
	case Kill:
		r.say("chaos: SIGKILL instance %d (pid %d)", in.slot, pid)
		syscall.Kill(-pid, syscall.SIGKILL)
	case Stop:
		r.say("chaos: SIGSTOP instance %d (pid %d) for %v", in.slot, pid, d)
		syscall.Kill(-pid, syscall.SIGSTOP)
		r.after(d, func() {
			r.mu.Lock()
			same := in.gen == gen && in.pid == pid
			if same {
				in.paused = false
			}
			r.mu.Unlock()
			if same {
				syscall.Kill(-pid, syscall.SIGCONT)
				r.say("chaos: SIGCONT instance %d (pid %d)", in.slot, pid)
			}
		})
	case Delay:
		r.say("chaos: instance %d's database traffic %v late for %v", in.slot, r.cfg.ChaosLatency, d)
		in.dbProxy.Set(faultproxy.Delay, r.cfg.ChaosLatency)
		r.after(d, func() {
			in.dbProxy.Set(faultproxy.Pass, 0)
			r.say("chaos: instance %d's database traffic flows again", in.slot)
		})
	case Drop:
		r.say("chaos: instance %d's database connections cut for %v", in.slot, d)
		in.dbProxy.Set(faultproxy.Drop, 0)
		r.after(d, func() {
			in.dbProxy.Set(faultproxy.Pass, 0)
			r.say("chaos: instance %d reaches its database again", in.slot)
		})
	}
}

// after runs f after d, or not at all once the runner stops (its proxies close, and stopping
// an instance continues it).
func (r *Runner) after(d time.Duration, f func()) {
	r.wg.Go(func() {
		select {
		case <-time.After(d):
			f()
		case <-r.ctx.Done():
		}
	})
}
