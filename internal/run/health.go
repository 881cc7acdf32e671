package run

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// check runs the slot's active health checks until the runner stops: every HealthInterval
// while the instance is ready, ten times as often (at most every 100 ms) while it is not,
// so a started instance joins the balancer soon after it is up.
func (r *Runner) check(in *instance) {
	client := &http.Client{
		Timeout:   r.cfg.HealthTimeout,
		Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	url := "http://127.0.0.1:" + strconv.Itoa(in.port) + r.cfg.HealthPath
	fast := min(r.cfg.HealthInterval/10, 100*time.Millisecond)
	for {
		r.mu.Lock()
		pid, gen := in.pid, in.gen
		r.mu.Unlock()
		if pid != 0 {
			err := probe(r.ctx, client, url)
			r.record(in, gen, err)
		}
		r.mu.Lock()
		wait := r.cfg.HealthInterval
		if !in.healthy {
			wait = fast
		}
		r.mu.Unlock()
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// probe is one health check: nil for a response of 2xx or 3xx.
func probe(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue interface{ Timeout() bool }
		if errors.As(err, &ue) && ue.Timeout() {
			return errors.New("no answer in time")
		}
		return errors.New("no connection")
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// record applies a check's result to the process of generation gen, if it still runs.
func (r *Runner) record(in *instance, gen int, err error) {
	r.mu.Lock()
	if in.gen != gen || in.pid == 0 || r.stopping {
		r.mu.Unlock()
		return
	}
	was, first := in.healthy, !in.everUp
	in.healthy = err == nil
	if err == nil {
		in.everUp, in.fails = true, 0
	}
	r.mu.Unlock()
	switch {
	case err == nil && first:
		r.say("instance %d is ready", in.slot)
	case err == nil && !was:
		r.say("instance %d passes its health check again: back in the balancer", in.slot)
	case err != nil && was:
		r.say("instance %d failed its health check (%v): no traffic until it passes", in.slot, err)
	}
}

var errRolling = errors.New("run: a rolling restart is under way already")

// RollingRestart restarts the instances one at a time: each is taken out of the balancer,
// its requests in flight finish (for up to the grace period), it gets SIGTERM (SIGKILL after
// the grace period), starts again, and returns to the balancer once it passes its health
// check. It stops at the first instance not ready within ReadyTimeout, and refuses to run
// while another rolling restart is under way.
func (r *Runner) RollingRestart(ctx context.Context) error {
	r.mu.Lock()
	if r.rolling {
		r.mu.Unlock()
		return errRolling
	}
	r.rolling = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.rolling = false
		r.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(r.ctx, cancel)
	defer stop()

	r.say("rolling restart of %d instances", len(r.instances))
	for _, in := range r.instances {
		if err := r.restartOne(ctx, in); err != nil {
			r.say("rolling restart stopped: %v", err)
			return err
		}
	}
	r.say("rolling restart done")
	return nil
}

// Roll starts a rolling restart in the background, as SIGHUP or the key r ask for: one
// asked for while another is under way is refused, and said so.
func (r *Runner) Roll() {
	r.mu.Lock() // held while adding to wg: shutdown waits for wg only once stopping is set
	defer r.mu.Unlock()
	if r.stopping {
		return
	}
	r.wg.Go(func() {
		if err := r.RollingRestart(r.ctx); errors.Is(err, errRolling) {
			r.say("%v", err)
		}
	})
}

// restartOne drains, stops, starts and waits for one instance.
func (r *Runner) restartOne(ctx context.Context, in *instance) error {
	r.mu.Lock()
	in.draining = true
	pid, gen, exited := in.pid, in.gen, in.exited
	if pid != 0 {
		in.planned = true
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		in.draining = false
		r.mu.Unlock()
	}()
	if pid != 0 {
		r.say("instance %d: draining", in.slot)
		dctx, cancel := context.WithTimeout(ctx, r.cfg.Grace)
		r.waitIdle(dctx, in)
		cancel()
		r.stopPID(in, pid, exited)
	} else {
		select { // a slot left down, or waiting to restart: start it now
		case in.revive <- struct{}{}:
		default:
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	deadline := time.After(r.cfg.ReadyTimeout)
	for {
		r.mu.Lock()
		ready := in.gen > gen && in.pid != 0 && in.healthy
		r.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("instance %d not ready within %v", in.slot, r.cfg.ReadyTimeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// InstanceStatus is what [Runner.Instances] reports of one instance.
type InstanceStatus struct {
	Slot     int
	Port     int
	PID      int // 0 while no process runs
	State    State
	Restarts int   // restarts after an exit (crash or chaos), not rolling ones
	Requests int64 // requests passed to it
	Failures int64 // requests it failed to answer
}

// Instances reports every instance, by slot.
func (r *Runner) Instances() []InstanceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]InstanceStatus, len(r.instances))
	for i, in := range r.instances {
		out[i] = InstanceStatus{Slot: in.slot, Port: in.port, PID: in.pid, State: in.state(),
			Restarts: in.restarts, Requests: in.requests, Failures: in.failures}
	}
	return out
}

// Totals reports the requests the proxy took and those it could not pass to any instance.
func (r *Runner) Totals() (requests, failed int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.served, r.failed
}
