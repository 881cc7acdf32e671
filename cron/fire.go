package cron

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// maxTicksScanned bounds the ticks one look walks through for a schedule that has been
// down for very long (a one-second schedule down for 11 days); older ones are missed.
const maxTicksScanned = 1_000_000

func (c *Cron) upsert(ctx context.Context, sc *schedule) error {
	_, err := c.s.Exec(ctx, c.q.upsert, c.s.NowArg(), c.d.Service, sc.name, sc.expr, sc.tz,
		sc.args.KindName, string(sc.args.JSON), sc.optsJSON)
	return err
}

// Lead fires this instance's schedules while ctx lasts; the node runs it on the leader.
// Schedules stored but declared by no instance's code are marked undeclared and do not fire.
func (c *Cron) Lead(ctx context.Context) {
	if err := c.undeclare(ctx); err != nil && ctx.Err() == nil {
		c.log.Warn("cron: marking undeclared schedules failed", "err", err)
	}
	// The rounds fire with the term's ctx, which ends them when the term ends.
	l := loop.Start(func(context.Context) time.Duration {
		_, wait, err := c.Fire(ctx)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("cron: firing schedules failed; retrying", "err", err)
		}
		if poll := c.d.Poll(c.cfg.Poll); wait <= 0 || wait > poll {
			wait = poll
		}
		return wait
	})
	c.mu.Lock()
	c.leading = l
	c.mu.Unlock()
	<-ctx.Done()
	c.mu.Lock()
	if c.leading == l {
		c.leading = nil
	}
	c.mu.Unlock()
	l.Stop()
}

// undeclare re-stores this instance's schedules (the stored schedule follows the code of
// the leader) and marks every other stored schedule as undeclared.
func (c *Cron) undeclare(ctx context.Context) error {
	// Held across reading the declarations and storing them, so an Add racing the
	// election is never marked undeclared.
	c.declMu.Lock()
	defer c.declMu.Unlock()
	names := []string{}
	for _, sc := range c.declared(OncePerTick) {
		if err := c.upsert(ctx, sc); err != nil {
			return err
		}
		names = append(names, sc.name)
	}
	_, err := c.s.Exec(ctx, c.q.undeclare, c.d.Service, c.s.List(names))
	return err
}

// Fire fires every tick now due of this instance's once-per-tick schedules, each schedule
// in a transaction of its own, and returns how many jobs it enqueued and how long until the
// next tick of any of them. The node's leader calls it at each tick; tests call it directly.
func (c *Cron) Fire(ctx context.Context) (fired int, wait time.Duration, err error) {
	return c.fireListed(ctx, c.declared(OncePerTick))
}

// fireListed is Fire for the schedules listed, each fired only while it is still declared
// as listed (see fireOne).
func (c *Cron) fireListed(ctx context.Context, listed []*schedule) (fired int, wait time.Duration, err error) {
	var errs []error
	for _, sc := range listed {
		n, until, err := c.fireOne(ctx, sc)
		fired += n
		if err != nil {
			errs = append(errs, fmt.Errorf("cron: %s: %w", sc.name, err))
			continue
		}
		if wait == 0 || until < wait {
			wait = until
		}
	}
	return fired, wait, errors.Join(errs...)
}

func (c *Cron) fireOne(ctx context.Context, sc *schedule) (fired int, until time.Duration, err error) {
	q := c.q
	var late, skipped int // of the ticks this look passed: fired after their grace, and not fired
	err = c.s.InTx(ctx, func(tx store.Tx) error {
		fired, late, skipped = 0, 0, 0 // a retried transaction counts again
		var last, updated, now store.Time
		var lastJob *int64
		err := tx.QueryRow(ctx, q.lock, c.s.NowArg(), c.d.Service, sc.name).Scan(&last, &lastJob, &updated, &now)
		if !c.current(sc) {
			return nil // removed or declared anew since Fire listed it: the new declaration fires
		}
		if errors.Is(err, sql.ErrNoRows) {
			// Deleted by hand: store it again; it fires from now on.
			_, err := tx.Exec(ctx, q.upsert, c.s.NowArg(), c.d.Service, sc.name, sc.expr, sc.tz, sc.args.KindName,
				string(sc.args.JSON), sc.optsJSON)
			return err
		}
		if err != nil {
			return err
		}
		anchor := last.Time
		if anchor.IsZero() {
			anchor = updated.Time
		}
		plan := plan(sc, anchor, now.Time)
		until = sc.sched.Next(now.Time).Sub(now.Time)
		if plan.advance.IsZero() {
			return nil
		}
		fire := plan.fire
		if sc.opts.Overlap != OverlapAllow && len(fire) > 0 {
			busy, err := c.busy(ctx, lastJob)
			if err != nil {
				return err
			}
			switch {
			case busy && sc.opts.Overlap == OverlapSkip:
				c.log.Info("cron: tick skipped: the previous one still runs", "schedule", sc.name, "tick", plan.advance)
				fire = nil
			case busy:
				return nil // wait: the ticks stay due
			default:
				fire = fire[len(fire)-1:] // the rest would overlap it
			}
		}
		params := make([]jobs.Params, len(fire))
		for i, tick := range fire {
			params[i] = c.tickParams(sc, tick)
		}
		var newest any
		if len(params) > 0 {
			rs, err := c.jobs.EnqueueManyTx(ctx, tx, params)
			if err != nil {
				return err
			}
			for i, r := range rs {
				if !r.Duplicate {
					fired++
					if slices.Contains(plan.missed, fire[i]) {
						late++
					}
				}
			}
			newest = rs[len(rs)-1].ID
		}
		if len(plan.missed) > 0 {
			c.log.Warn("cron: ticks missed beyond the grace period", "schedule", sc.name, "missed", plan.missedCount,
				"policy", sc.opts.CatchUp, "fired_for_them", len(plan.missed))
		}
		// Every tick due, on time or missed, that this look passes without firing.
		skipped = plan.missedCount + len(plan.fire) - len(plan.missed) - len(fire)
		_, err = tx.Exec(ctx, q.advance, c.d.Service, sc.name, c.s.TimeArg(plan.advance), newest)
		return err
	})
	if err != nil {
		return 0, until, err
	}
	c.fired.Add(uint64(fired))
	c.late.Add(uint64(late))
	c.skipped.Add(uint64(skipped))
	return fired, until, nil
}

// tickPlan is what one look decides for a schedule.
type tickPlan struct {
	fire        []time.Time // ticks to fire, oldest first
	missed      []time.Time // the missed ticks among fire
	missedCount int         // every missed tick, fired or not
	advance     time.Time   // the new last tick; zero if none is due
}

// plan lists the ticks after anchor due at now and applies the catch-up policy to those
// older than the grace period.
func plan(sc *schedule, anchor, now time.Time) tickPlan {
	var p tickPlan
	limit := 1
	if sc.opts.CatchUp == CatchUpAll {
		limit = sc.opts.CatchUpLimit
	}
	late := now.Add(-sc.opts.Grace)
	var onTime []time.Time
	t := anchor
	for range maxTicksScanned {
		t = sc.sched.Next(t)
		if t.IsZero() || t.After(now) {
			break
		}
		p.advance = t
		if t.After(late) {
			onTime = append(onTime, t)
			continue
		}
		p.missedCount++
		p.missed = append(p.missed, t)
		if len(p.missed) > limit {
			p.missed = p.missed[1:]
		}
	}
	if sc.opts.CatchUp == CatchUpSkip {
		p.missed = nil
	}
	p.fire = append(append(p.fire, p.missed...), onTime...)
	return p
}

// busy reports whether the job of the previous tick has not finished yet.
func (c *Cron) busy(ctx context.Context, id *int64) (bool, error) {
	if id == nil {
		return false, nil
	}
	row, err := c.jobs.Get(ctx, *id)
	if errors.Is(err, jobs.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return !row.State.Finished(), nil
}

// allStates makes a tick's unique key cover its whole life, so it never fires twice while
// its job exists; after pruning, the stored last tick keeps it from firing again.
var allStates = []jobs.State{jobs.Available, jobs.Running, jobs.Completed, jobs.Cancelled, jobs.Discarded, jobs.Waiting}

// Meta keys of a tick's job: the schedule's name and the tick, in RFC 3339 UTC.
const (
	metaSchedule = "cron"
	metaTick     = "tick"
)

func (c *Cron) tickParams(sc *schedule, tick time.Time) jobs.Params {
	var o jobs.Opts
	if sc.opts.Job != nil {
		o = *sc.opts.Job
	}
	stamp := tick.UTC().Format(time.RFC3339Nano)
	o.RunAt, o.Delay = tick, 0
	// Stored as "<kind>|cron|<schedule>|<tick>": the job's UniqueKey.
	o.Unique = &jobs.Unique{Key: "cron|" + sc.name + "|" + stamp, States: allStates}
	o.Meta = tickMeta(sc.name, stamp, o.Meta)
	return jobs.Params{Args: sc.args, Opts: &o}
}

// tickMeta is a tick's meta: extra, and the schedule and tick, which extra cannot override.
func tickMeta(schedule, stamp string, extra map[string]string) map[string]string {
	meta := make(map[string]string, len(extra)+2)
	for k, v := range extra {
		meta[k] = v
	}
	meta[metaSchedule], meta[metaTick] = schedule, stamp
	return meta
}

// TickTime returns the tick a job of a schedule runs for, in both modes: the worker of a
// schedule's kind calls it with its job's Row. It is false for a job that no tick fired
// (a manual Trigger, or a job enqueued by hand). Unlike the Row's ScheduledAt, which a
// retry moves, the tick stays the same on every attempt.
func TickTime(row *jobs.Row) (time.Time, bool) {
	if row == nil || row.Meta[metaSchedule] == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, row.Meta[metaTick])
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// everyInstance returns the step that runs the every-instance schedules of this process at
// their ticks, in database time.
func (c *Cron) everyInstance() loop.Step {
	next := map[string]time.Time{}
	return func(ctx context.Context) time.Duration {
		wait := c.d.Poll(c.cfg.Poll)
		if scs := c.declared(EveryInstance); len(scs) > 0 {
			now, err := c.s.Now(ctx)
			if err != nil && ctx.Err() == nil {
				c.log.Warn("cron: reading database time failed", "err", err)
			}
			for _, sc := range scs {
				if err != nil {
					break
				}
				if next[sc.name].IsZero() {
					next[sc.name] = sc.sched.Next(now)
				}
				if !now.Before(next[sc.name]) && c.current(sc) {
					c.runHere(ctx, sc, next[sc.name])
					next[sc.name] = sc.sched.Next(now)
				}
				wait = min(wait, next[sc.name].Sub(now))
			}
		}
		return max(wait, time.Millisecond)
	}
}

func (c *Cron) runHere(ctx context.Context, sc *schedule, tick time.Time) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		meta := tickMeta(sc.name, tick.UTC().Format(time.RFC3339Nano), nil)
		c.fired.Add(1)
		if err := c.jobs.RunHere(ctx, sc.args, meta); err != nil {
			c.log.Warn("cron: every-instance tick failed", "schedule", sc.name, "tick", tick, "err", err)
		}
	}()
}

// Entry is a stored schedule, as `twice cron list` shows it.
type Entry struct {
	Name     string          `json:"name"`
	Expr     string          `json:"expr"`
	TZ       string          `json:"tz"`
	Kind     string          `json:"kind"`
	Args     json.RawMessage `json:"args"`
	Opts     json.RawMessage `json:"opts"`
	Declared bool            `json:"declared"`
	// LastTick is the last tick fired; zero if none yet.
	LastTick  time.Time `json:"last_tick,omitzero"`
	LastJobID int64     `json:"last_job_id,omitempty"`
	// NextTick is the next tick to fire (in the past if it is overdue).
	NextTick time.Time `json:"next_tick,omitzero"`
	// Error is set when the stored expression no longer parses.
	Error string `json:"error,omitempty"`
}

// List returns the once-per-tick schedules stored for service in s.
func List(ctx context.Context, s *store.Store, service string) ([]Entry, error) {
	rows, err := s.Reader().Query(ctx, s.SQL(templates.list), service)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		var last, updated store.Time
		var lastJob *int64
		var args, opts []byte
		if err := rows.Scan(&e.Name, &e.Expr, &e.TZ, &e.Kind, &args, &opts, &e.Declared, &last, &lastJob, &updated); err != nil {
			return nil, err
		}
		e.Args, e.Opts = json.RawMessage(args), json.RawMessage(opts)
		e.LastTick = last.Time
		if lastJob != nil {
			e.LastJobID = *lastJob
		}
		anchor := last.Time
		if anchor.IsZero() {
			anchor = updated.Time
		}
		if sc, err := parseStored(e.Expr, e.TZ); err != nil {
			e.Error = err.Error()
		} else {
			e.NextTick = sc.Next(anchor)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func parseStored(expr, tz string) (Schedule, error) {
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, err
	}
	sc, _, err := Parse(expr, loc)
	return sc, err
}

// Trigger enqueues a schedule's job now, outside its ticks, as an operator's manual run.
func Trigger(ctx context.Context, jc *jobs.Client, s *store.Store, service, name string) (jobs.Result, error) {
	var kind string
	var args, optsJSON []byte
	err := s.Reader().QueryRow(ctx, s.SQL(templates.get), service, name).Scan(&kind, &args, &optsJSON)
	if errors.Is(err, sql.ErrNoRows) {
		return jobs.Result{}, fmt.Errorf("%w: %q in service %q", ErrNotFound, name, service)
	}
	if err != nil {
		return jobs.Result{}, err
	}
	var o Opts
	if err := json.Unmarshal(optsJSON, &o); err != nil {
		return jobs.Result{}, fmt.Errorf("cron: %s: stored options: %w", name, err)
	}
	var jo jobs.Opts
	if o.Job != nil {
		jo = *o.Job
	}
	jo.Unique, jo.RunAt = nil, time.Time{}
	jo.Meta = map[string]string{metaSchedule: name, "trigger": "manual"}
	return jc.Enqueue(ctx, jobs.Raw{KindName: kind, JSON: args}, &jo)
}

// Trigger enqueues the named schedule's job now; see the package-level [Trigger].
func (c *Cron) Trigger(ctx context.Context, name string) (jobs.Result, error) {
	return Trigger(ctx, c.jobs, c.s, c.d.Service, name)
}

// Tick is a tick a schedule fired, as its job tells: the time it was for, and how its job
// went.
type Tick struct {
	Tick    time.Time  `json:"tick"`
	JobID   int64      `json:"job_id"`
	State   jobs.State `json:"state"`
	Attempt int        `json:"attempt"`
	Error   string     `json:"error,omitempty"`
}

// recentScan is how many of a kind's newest jobs [Recent] looks through.
const recentScan = 200

// Recent returns the latest ticks the schedule name, whose jobs are of kind, fired, newest
// first, at most n: those among the kind's 200 newest jobs still kept (see the jobs
// Config's retention), with their jobs' states. Every-instance ticks leave no job, and
// are not listed. One statement.
func Recent(ctx context.Context, jc *jobs.Client, name, kind string, n int) ([]Tick, error) {
	rows, err := jc.List(ctx, jobs.ListParams{Kind: kind, Limit: recentScan})
	if err != nil {
		return nil, err
	}
	var out []Tick
	for _, r := range rows {
		t, ok := TickTime(r)
		if !ok || r.Meta[metaSchedule] != name {
			continue
		}
		out = append(out, Tick{Tick: t, JobID: r.ID, State: r.State, Attempt: r.Attempt, Error: r.LastError})
		if len(out) == n {
			break
		}
	}
	return out, nil
}
