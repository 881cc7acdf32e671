// Package cron fires schedules exactly once per tick across all instances of a service.
//
// A tick is a job (see package jobs) whose unique key is (schedule, tick time), inserted by
// the leader in the same transaction that records the tick as the schedule's last (the
// worker sees it as the job's UniqueKey; [TickTime] gives the tick itself); two
// instances that both believe they lead still fire it once, and a restart resumes from the
// last fired tick, so none is skipped. Ticks are computed in database time. Ticks that come
// due while no instance can fire them (a failover, a cluster that was down) fire late, as
// themselves, within a grace period; older ones are "missed" and follow the schedule's
// catch-up policy. Expressions are parsed by github.com/netresearch/go-cron, the
// maintained fork of robfig/cron: five fields, an optional leading seconds field,
// descriptors (@hourly, @every 90s) and CRON_TZ= prefixes.
package cron

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gocron "github.com/netresearch/go-cron"

	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// Mode says where a schedule's ticks run.
type Mode string

const (
	// OncePerTick fires each tick once across the cluster, as a job. The default.
	OncePerTick Mode = "once"
	// EveryInstance runs each tick's worker in-process on every live instance: no row, no
	// retry. For per-instance upkeep such as flushing a local buffer. Each instance runs
	// the ticks that come due while it runs, from when it starts: there is no stored last
	// tick to catch up from and no job whose end a next tick could wait for, so [Add]
	// refuses CatchUp (other than CatchUpSkip, which is what happens), CatchUpLimit, Grace,
	// Overlap (other than OverlapAllow) and Job for such a schedule. Guard a tick that may
	// outlast its interval in the worker itself (a sync.Mutex's TryLock).
	EveryInstance Mode = "every-instance"
)

// CatchUp says what happens to ticks missed for longer than the grace period.
type CatchUp string

const (
	// CatchUpOnce fires the latest missed tick once, standing for all of them. The default.
	CatchUpOnce CatchUp = "once"
	// CatchUpSkip fires none of them.
	CatchUpSkip CatchUp = "skip"
	// CatchUpAll fires every missed tick, at most CatchUpLimit of the most recent.
	CatchUpAll CatchUp = "all"
)

// Overlap says what happens to a tick while the previous tick's job has not finished.
type Overlap string

const (
	// OverlapAllow fires it anyway. The default.
	OverlapAllow Overlap = "allow"
	// OverlapSkip drops it.
	OverlapSkip Overlap = "skip"
	// OverlapWait holds it until the previous job finishes, then fires (the wait counts
	// against the grace period: a tick held past it follows the catch-up policy).
	OverlapWait Overlap = "wait"
)

// Defaults of [Opts] and [Config].
const (
	DefaultGrace        = time.Minute
	DefaultCatchUpLimit = 100
	DefaultPoll         = time.Second
)

// Opts configure one schedule. A nil *Opts is valid.
type Opts struct {
	// Mode defaults to [OncePerTick].
	Mode Mode `json:"mode,omitempty"`
	// CatchUp defaults to [CatchUpOnce].
	CatchUp CatchUp `json:"catch_up,omitempty"`
	// CatchUpLimit bounds [CatchUpAll]. Defaults to 100.
	CatchUpLimit int `json:"catch_up_limit,omitempty"`
	// Overlap defaults to [OverlapAllow].
	Overlap Overlap `json:"overlap,omitempty"`
	// Grace is how late a tick may still fire as itself; older ticks are missed. Defaults
	// to 1 minute, well above a leader failover.
	Grace time.Duration `json:"grace,omitempty"`
	// Location is the time zone the expression is read in, unless it starts with
	// CRON_TZ=. Defaults to UTC.
	Location *time.Location `json:"-"`
	// Job are the options of each tick's job (queue, priority, attempts, timeout, tags).
	// Its Unique and RunAt are set by cron. Defaults to the kind's and the queue's.
	Job *jobs.Opts `json:"job,omitempty"`
}

// Config configures [Cron]. What it works on (store, service, logger) comes in its
// [block.Deps].
type Config struct {
	// Poll is the longest the leader sleeps between looks at its schedules while the bus
	// cannot vouch for its delivery (block.Deps.Backstop applies while it can); it wakes at
	// each tick regardless. Defaults to 1 second.
	Poll time.Duration
}

// MaxNameLen is the longest schedule name.
const MaxNameLen = 128

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]*$`)

// ErrInvalid wraps every rejected schedule.
var ErrInvalid = errors.New("cron: invalid schedule")

// ErrClosed is returned by Start once the cron is closed.
var ErrClosed = errors.New("cron: closed")

// ErrNotFound is returned for a schedule the service does not have.
var ErrNotFound = errors.New("cron: schedule not found")

// Cron holds the schedules declared by this instance's code.
type Cron struct {
	d    block.Deps
	s    *store.Store
	q    *queries
	jobs *jobs.Client
	cfg  Config
	log  *slog.Logger

	declMu    sync.Mutex // serialises Add with the leader's undeclare
	mu        sync.Mutex // protects schedules, started, stopped, every, leading
	schedules map[string]*schedule
	started   bool
	stopped   bool
	every     *loop.Loop     // runs the every-instance schedules, from Start to Close
	leading   *loop.Loop     // fires the once-per-tick schedules while this instance leads
	wg        sync.WaitGroup // every-instance ticks running

	fired, late, skipped atomic.Uint64 // see Stats
}

// Stats counts this instance's ticks since it started.
type Stats struct {
	// Fired counts the ticks this instance fired: once-per-tick ticks whose job it
	// enqueued while it led, and every-instance ticks it ran.
	Fired uint64 `json:"fired"`
	// Late counts the fired ticks that fired after their grace period (caught up after a
	// failover or a cluster that was down, by CatchUpOnce or CatchUpAll).
	Late uint64 `json:"late"`
	// Skipped counts the due ticks it passed without firing them: missed beyond the grace
	// period and not caught up (CatchUpSkip, or more than CatchUpLimit), or skipped because
	// the previous tick's job still ran (OverlapSkip, or the older of several due).
	Skipped uint64 `json:"skipped"`
}

// Stats returns this instance's tick counts. It runs no statement.
func (c *Cron) Stats() Stats {
	return Stats{Fired: c.fired.Load(), Late: c.late.Load(), Skipped: c.skipped.Load()}
}

type schedule struct {
	name  string
	expr  string // as declared, without the CRON_TZ prefix we add
	tz    string
	sched Schedule
	args  jobs.Raw
	opts  Opts
	// optsJSON is opts as stored, for `twice cron trigger`.
	optsJSON string
}

// New returns the cron of d's service, firing ticks as jobs of jc. It starts nothing and
// runs no statement: see [Cron.Start] and [Cron.Lead].
func New(d block.Deps, jc *jobs.Client, cfg Config) (*Cron, error) {
	d = d.WithDefaults()
	if err := d.Validate("cron", false); err != nil {
		return nil, err
	}
	if jc == nil {
		return nil, errors.New("cron: a jobs client is required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	return &Cron{d: d, s: d.Store, q: queriesFor(d.Store), jobs: jc, cfg: cfg, log: d.Logger, schedules: map[string]*schedule{}}, nil
}

// Schedule computes a schedule's ticks.
type Schedule interface {
	// Next returns the first tick strictly after t.
	Next(t time.Time) time.Time
}

// parser accepts five fields with an optional leading seconds field, and descriptors.
var parser = gocron.MustNewParser(gocron.SecondOptional | gocron.Minute | gocron.Hour | gocron.Dom | gocron.Month |
	gocron.Dow | gocron.Descriptor)

// Parse parses expr in loc (UTC when nil; a CRON_TZ= or TZ= prefix overrides it) and
// returns the schedule and the time zone's name.
func Parse(expr string, loc *time.Location) (Schedule, string, error) {
	expr = strings.TrimSpace(expr)
	if expr == "" {
		return nil, "", errors.New("empty expression")
	}
	if len(expr) > gocron.MaxSpecLength {
		return nil, "", fmt.Errorf("expression of %d bytes is longer than %d", len(expr), gocron.MaxSpecLength)
	}
	if loc == nil {
		loc = time.UTC
	}
	tz := loc.String()
	spec := expr
	if strings.HasPrefix(expr, "CRON_TZ=") || strings.HasPrefix(expr, "TZ=") {
		name, _, _ := strings.Cut(expr[strings.Index(expr, "=")+1:], " ")
		tz = name
	} else {
		spec = "CRON_TZ=" + tz + " " + expr
	}
	sc, err := parser.Parse(spec)
	if err != nil {
		return nil, "", err
	}
	if every, ok := sc.(gocron.ConstantDelaySchedule); ok {
		if every.Delay < time.Second {
			return nil, "", fmt.Errorf("@every %v is shorter than a second", every.Delay)
		}
		return aligned{every.Delay}, tz, nil
	}
	return sc, tz, nil
}

// aligned is @every d with ticks at multiples of d since the Unix epoch, so every instance
// and every restart computes the same ticks.
type aligned struct{ d time.Duration }

func (a aligned) Next(t time.Time) time.Time {
	return time.Unix(0, (t.UnixNano()/int64(a.d)+1)*int64(a.d)).In(t.Location())
}

// Add declares a schedule: args is the job each tick enqueues (and the worker of its kind
// runs). A bad expression or option is an error naming the schedule. Declaring a name again
// replaces it; the stored schedule follows the code, and ticks of a changed expression
// continue from the last tick fired.
func (c *Cron) Add(name, expr string, args jobs.Args, opts *Opts) error {
	sc, err := c.declare(name, expr, args, opts)
	if err != nil {
		return err
	}
	c.declMu.Lock()
	defer c.declMu.Unlock()
	if sc.opts.Mode == OncePerTick {
		// Add has no context; a declaration at startup may wait behind a busy writer as
		// long as a batch does.
		ctx, cancel := context.WithTimeout(context.Background(), loop.BatchTimeout)
		defer cancel()
		if err := c.upsert(ctx, sc); err != nil {
			return fmt.Errorf("cron: %s: %w", name, err)
		}
	}
	c.mu.Lock()
	c.schedules[name] = sc
	c.mu.Unlock()
	c.poke()
	return nil
}

func (c *Cron) declare(name, expr string, args jobs.Args, opts *Opts) (*schedule, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalid, name, fmt.Sprintf(format, a...))
	}
	if len(name) > MaxNameLen || !validName.MatchString(name) {
		return nil, bad("a name is 1 to %d letters, digits, '.', '_', ':', '/' or '-'", MaxNameLen)
	}
	var o Opts
	if opts != nil {
		o = *opts
	}
	if o.Mode == EveryInstance {
		if why := everyInstanceRefuses(o); why != "" {
			return nil, bad("%s", why)
		}
	}
	sc, tz, err := Parse(expr, o.Location)
	if err != nil {
		return nil, bad("expression %q: %v", expr, err)
	}
	if args == nil {
		return nil, bad("nil job arguments")
	}
	data, err := json.Marshal(args)
	if err != nil {
		return nil, bad("encode arguments: %v", err)
	}
	if o.Mode == "" {
		o.Mode = OncePerTick
	}
	if o.CatchUp == "" {
		o.CatchUp = CatchUpOnce
	}
	if o.Overlap == "" {
		o.Overlap = OverlapAllow
	}
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.CatchUpLimit <= 0 {
		o.CatchUpLimit = DefaultCatchUpLimit
	}
	switch {
	case o.Mode != OncePerTick && o.Mode != EveryInstance:
		return nil, bad("mode %q", o.Mode)
	case o.CatchUp != CatchUpOnce && o.CatchUp != CatchUpSkip && o.CatchUp != CatchUpAll:
		return nil, bad("catch-up policy %q", o.CatchUp)
	case o.Overlap != OverlapAllow && o.Overlap != OverlapSkip && o.Overlap != OverlapWait:
		return nil, bad("overlap policy %q", o.Overlap)
	}
	stored, err := json.Marshal(o)
	if err != nil {
		return nil, bad("encode options: %v", err)
	}
	return &schedule{name: name, expr: strings.TrimSpace(expr), tz: tz, sched: sc,
		args: jobs.Raw{KindName: args.Kind(), JSON: data}, opts: o, optsJSON: string(stored)}, nil
}

// everyInstanceRefuses names the options an EveryInstance schedule cannot honour, and why;
// "" if there is none.
func everyInstanceRefuses(o Opts) string {
	switch {
	case o.CatchUp != "" && o.CatchUp != CatchUpSkip, o.CatchUpLimit != 0, o.Grace != 0:
		return fmt.Sprintf("CatchUp %q, CatchUpLimit and Grace have no meaning in mode %s: each instance runs the ticks "+
			"due while it runs, with no stored last tick to catch up from (missed ticks are skipped)", o.CatchUp, EveryInstance)
	case o.Overlap != "" && o.Overlap != OverlapAllow:
		return fmt.Sprintf("Overlap %q has no meaning in mode %s: a tick runs in-process, with no job whose end the "+
			"next tick could wait for; guard a slow tick in the worker (a sync.Mutex's TryLock)", o.Overlap, EveryInstance)
	case o.Job != nil:
		return fmt.Sprintf("Job options have no meaning in mode %s: a tick runs in-process, not as a job", EveryInstance)
	}
	return ""
}

// Remove stops this instance declaring a schedule.
func (c *Cron) Remove(name string) {
	c.mu.Lock()
	delete(c.schedules, name)
	c.mu.Unlock()
}

// current reports whether sc is still this instance's declaration of its name. A loop
// lists the declarations, then fires them one by one; a schedule removed or declared
// anew in between must not fire as it was listed.
func (c *Cron) current(sc *schedule) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.schedules[sc.name] == sc
}

// poke makes the leader's loop and the every-instance loop look at the schedules now.
func (c *Cron) poke() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range []*loop.Loop{c.every, c.leading} {
		if l != nil {
			l.Kick()
		}
	}
}

func (c *Cron) declared(mode Mode) []*schedule {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*schedule, 0, len(c.schedules))
	for _, sc := range c.schedules {
		if sc.opts.Mode == mode {
			out = append(out, sc)
		}
	}
	return out
}

// Start runs the every-instance schedules of this process until Close. The node calls it
// when the application first uses its cron.
func (c *Cron) Start(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return ErrClosed
	}
	if c.started {
		return nil
	}
	c.started = true
	c.every = loop.Start(c.everyInstance())
	return nil
}

// Close ends the every-instance loop. The leader's loop ends with its term (the node
// hands leadership over after Close).
func (c *Cron) Close(context.Context) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	every := c.every
	c.mu.Unlock()
	if every != nil {
		every.Stop()
	}
	c.wg.Wait()
	return nil
}

// Abandon is Close, for tests that crash an instance (see block.Block): Close writes
// nothing, and the leader's loop ends with its term.
func (c *Cron) Abandon(ctx context.Context) { _ = c.Close(ctx) }
