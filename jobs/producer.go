package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/otelx"
	"github.com/twicehq/twice/internal/safe"
	"github.com/twicehq/twice/store"
)

// soonDelays are the extra looks a producer takes after a wake-up for jobs that may not be
// committed yet (see notifyInTx), as long as each look finds nothing.
var soonDelays = []time.Duration{2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}

// producer fetches and runs the jobs of one queue on this instance.
type producer struct {
	c     *Client
	queue string
	cfg   QueueConfig

	wakeCh chan struct{}
	soon   atomic.Bool
	freeCh chan struct{}
	stopCh chan struct{}
	done   chan struct{}
	once   sync.Once
	begun  atomic.Bool

	// stored says whether the queue's row set a cluster-wide limit (a GlobalLimit or a
	// RateLimit) when this instance last read it: see limited.
	stored atomic.Bool
	// slotIn is how long until a full rate window has room again, set by a fetch that
	// filled it (see underTurn) and taken by the loop, which looks again then.
	slotIn atomic.Int64

	// tasks hands fetched jobs to waiting workers; unbuffered, so a job never waits in it.
	// Only the loop sends on it: a job, or an empty task that retires the worker taking it
	// (see retire). The loop closes it when it ends, which ends every worker once its job
	// returns.
	tasks chan task
	// workers counts the worker goroutines that have not returned: the loop retires those
	// beyond what a poll's interval needed.
	workers atomic.Int32

	mu      sync.Mutex // protects running
	running map[int64]*runningJob
}

type runningJob struct {
	row    *Row
	cancel context.CancelCauseFunc
}

func newProducer(c *Client, queue string, cfg QueueConfig) *producer {
	return &producer{c: c, queue: queue, cfg: cfg, wakeCh: make(chan struct{}, 1), freeCh: make(chan struct{}, 1),
		stopCh: make(chan struct{}), done: make(chan struct{}), running: map[int64]*runningJob{}, tasks: make(chan task)}
}

func (p *producer) start() {
	p.begun.Store(true)
	context.AfterFunc(p.c.runCtx, p.cancelRunning)
	go p.loop()
}

// cancelRunning cancels the jobs running here with the cause the client's run context ended
// with. Each job's context is its own, not a child of that context: a child registers with
// its parent under the parent's lock, which every worker of every queue then took twice per
// job (a tenth of a busy instance's CPU). execute closes the gap for a job that starts after
// this ran.
func (p *producer) cancelRunning() {
	cause := context.Cause(p.c.runCtx)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.running {
		r.cancel(cause)
	}
}

func (p *producer) wake(soon bool) {
	if soon {
		p.soon.Store(true)
	}
	select {
	case p.wakeCh <- struct{}{}:
	default:
	}
}

func (p *producer) numRunning() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.running)
}

func (p *producer) loop() {
	defer close(p.done)
	defer close(p.tasks)
	// peak is the most jobs running at once since the last poll.
	var peak int
	every := p.c.cfg.Poll
	poll := time.NewTimer(every)
	defer poll.Stop()
	// restUntil is when the poll fires while the queue rests longer than its Poll (see
	// rest); zero while it polls at its Poll.
	var restUntil time.Time
	var soon, slot *time.Timer
	soonStep := -1
	more, woken, ticked := true, true, false
	threshold := max(1, p.cfg.Concurrency/4)
	failures := 0
	for {
		select {
		case <-p.stopCh:
			return
		default:
		}
		fetched := -1 // no look this round, or a failed one
		if free := p.cfg.Concurrency - p.numRunning(); more && free > 0 && (woken || free >= threshold || free == p.cfg.Concurrency) {
			n, err := p.fetch(free)
			peak = max(peak, p.cfg.Concurrency-free+n)
			switch {
			case err != nil:
				failures++
				if failures == 1 || failures%100 == 0 {
					p.c.log.Warn("jobs: fetch failed; retrying at the next poll", "queue", p.queue, "err", err, "failures", failures)
				}
				more = false
			default:
				failures = 0
				fetched = n
				more = n == free
				if n > 0 {
					soonStep = -1
				} else if soonStep >= 0 && soonStep < len(soonDelays) {
					soon = resetTimer(soon, soonDelays[soonStep])
				}
			}
			woken = false
		}
		var slotC <-chan time.Time
		if d := time.Duration(p.slotIn.Swap(0)); d > 0 {
			slot = resetTimer(slot, d)
		}
		if slot != nil {
			slotC = slot.C
		}
		if ticked {
			ticked = false
			wait := every
			if fetched == 0 && p.numRunning() == 0 {
				wait = p.rest() // the poll's look found nothing and nothing runs here
			}
			poll.Reset(wait)
			restUntil = time.Time{}
			if wait > every {
				restUntil = time.Now().Add(wait)
				p.retire(int(p.workers.Load())) // nothing runs: no worker is needed until a wake-up
			}
		}
		var soonC <-chan time.Time
		if soon != nil && soonStep >= 0 {
			soonC = soon.C
		}
		select {
		case <-p.stopCh:
			return
		case <-p.wakeCh:
			more, woken = true, true
			if p.soon.Swap(false) {
				soonStep = 0
			}
			// A woken queue is busy again: it polls at its Poll until a poll finds it quiet,
			// for the cancellations of what it starts and for work its look could not take.
			if !restUntil.IsZero() && time.Until(restUntil) > every {
				poll.Reset(every)
				restUntil = time.Time{}
			}
		case <-p.freeCh:
		case <-soonC:
			more, woken = true, true
			soonStep++
		case <-slotC:
			more, woken = true, true
		case <-poll.C:
			more, woken, ticked = true, true, true
			restUntil = time.Time{}
			// Workers beyond the most jobs that ran at once since the last poll waited
			// that whole time for nothing.
			p.retire(int(p.workers.Load()) - peak)
			peak = p.numRunning()
			if peak > 0 {
				p.c.kickCancels() // the backstop of the cancellation signal
			}
		}
	}
}

// rest is how long a quiet queue (its poll found nothing, nothing of it runs here) waits
// for its next poll: until its first scheduled job is due, and at most the Backstop while
// the bus vouches for the wake-ups, which every write that makes a job available, now or
// later, sends (see afterFinish). Jobs available now that the look could not take (their
// key held by a job of another queue, the queue paused or at its GlobalLimit, this
// instance not counted alive) keep it at its Poll: nothing announces what frees them. A
// rate limit's full window is the exception: the fetch that filled it knows when it has
// room again, and the loop looks then (see underTurn).
func (p *producer) rest() time.Duration {
	every := p.c.cfg.Poll
	most := p.c.d.Poll(every)
	ctx, cancel := context.WithTimeout(context.Background(), loop.BatchTimeout)
	defer cancel()
	if most <= every {
		if !p.limited() {
			p.readLimit(ctx) // the only look at the queue's row while it polls
		}
		return every
	}
	until, ok, limited, err := p.c.due(ctx, p.queue)
	if err == nil {
		p.stored.Store(limited)
	}
	switch {
	case err != nil:
		p.c.log.Debug("jobs: looking for the next due job failed; polling", "queue", p.queue, "err", err)
		return every
	case !ok:
		return most
	case until <= 0:
		return every
	default:
		return min(until, most)
	}
}

// readLimit reads whether the queue's row sets a cluster-wide limit; a failure leaves what
// was last read.
func (p *producer) readLimit(ctx context.Context) {
	var limited bool
	if err := p.c.s.Reader().QueryRow(ctx, p.c.q.limitedQ, p.c.d.Service, p.queue).Scan(&limited); err != nil {
		p.c.log.Debug("jobs: reading the queue's limits failed", "queue", p.queue, "err", err)
		return
	}
	p.stored.Store(limited)
}

// due returns how long until the first available job of queue may run (at most zero if
// one may run now), ok false when the queue has none, and whether the queue's row sets a
// cluster-wide limit, which a resting queue learns this way at no statement of its own.
func (c *Client) due(ctx context.Context, queue string) (until time.Duration, ok bool, limited bool, err error) {
	var n int
	var m store.Micros
	if err := c.s.Reader().QueryRow(ctx, c.q.due, c.s.NowArg(), c.d.Service, queue).Scan(&n, &m, &limited); err != nil {
		return 0, false, false, fmt.Errorf("jobs: next due job of queue %s: %w", queue, err)
	}
	return m.Duration, n > 0, limited, nil
}

func resetTimer(t *time.Timer, d time.Duration) *time.Timer {
	if t == nil {
		return time.NewTimer(d)
	}
	t.Reset(d)
	return t
}

// fetch takes up to n available jobs and starts them.
func (p *producer) fetch(n int) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), loop.BatchTimeout)
	defer cancel()
	rows, err := p.c.e.fetch(ctx, p, n)
	if err != nil {
		return 0, err
	}
	for _, r := range rows {
		p.execute(r)
	}
	return len(rows), nil
}

// limited reports whether the queue is fetched under a cluster-wide limit: one this
// instance is configured with, or one it read from the queue's row.
func (p *producer) limited() bool {
	return p.cfg.GlobalLimit > 0 || p.cfg.RateLimit.Limit > 0 || p.stored.Load()
}

// slot asks the loop to look again in d, when a full rate window has room.
func (p *producer) slot(d time.Duration) {
	if d > 0 {
		p.slotIn.Store(int64(d))
	}
}

// fetchStatement is the fetch statement for the queue's path: a fetch without a limit
// claims nothing from a queue whose row sets one, so an instance that has not read the
// limit yet never exceeds it; it learns it when its queue rests (see rest).
func (p *producer) fetchStatement(unlimited, limited string) string {
	if p.limited() {
		return limited
	}
	return unlimited
}

// execute runs a fetched job on a worker goroutine: a waiting one if there is one, else a
// new one. Workers stay for the next job, so a busy queue does not pay for a goroutine and
// its stack growth per job; the loop retires those a poll's interval did not need.
func (p *producer) execute(row *Row) {
	ctx, cancel := context.WithCancelCause(context.Background())
	p.mu.Lock()
	p.running[row.ID] = &runningJob{row: row, cancel: cancel}
	p.mu.Unlock()
	// After the entry: either cancelRunning finds it, or the run context has already ended.
	if p.c.runCtx.Err() != nil {
		cancel(context.Cause(p.c.runCtx))
	}
	t := task{row: row, ctx: ctx, cancel: cancel}
	select {
	case p.tasks <- t:
	default:
		p.workers.Add(1)
		go p.worker(t)
	}
}

// retire ends up to n waiting workers. A worker still on its way back from a job is not
// waiting, and stays.
func (p *producer) retire(n int) {
	for range n {
		select {
		case p.tasks <- task{}:
		default:
			return
		}
	}
}

// task is a fetched job on its way to a worker, or, with no row, the end of the worker.
type task struct {
	row    *Row
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// worker runs t, then the jobs the loop hands it, until it is retired or the loop ends.
// It waits on the channel alone: a timer of its own in that wait, reset for every job,
// cost a busy instance an eighth of its CPU.
func (p *producer) worker(t task) {
	defer p.workers.Add(-1)
	for {
		res := p.c.work(t.ctx, t.row)
		t.cancel(nil)
		p.mu.Lock()
		delete(p.running, t.row.ID)
		p.mu.Unlock()
		p.c.comp.add(res)
		select {
		case p.freeCh <- struct{}{}:
		default:
		}
		var ok bool
		if t, ok = <-p.tasks; !ok || t.row == nil {
			return
		}
	}
}

// runs reports whether job id runs here.
func (p *producer) runs(id int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running[id] != nil
}

// cancelJob cancels the context of job id if it runs here. Only the cancel loop calls it,
// for jobs whose cancellation the database records.
func (p *producer) cancelJob(id int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.running[id]; r != nil {
		r.cancel(ErrCancelled)
	}
}

func (p *producer) stopFetching() {
	p.once.Do(func() { close(p.stopCh) })
	if p.begun.Load() {
		<-p.done
	}
}

// waitIdle waits until no job runs or ctx ends.
func (p *producer) waitIdle(ctx context.Context) {
	for p.numRunning() > 0 {
		if !loop.Sleep(ctx, 5*time.Millisecond) {
			return
		}
	}
}

// handBackRunning returns the jobs still running here (their workers ignored the
// cancellation) to the queue, without counting the attempt.
func (p *producer) handBackRunning(ctx context.Context) error {
	p.mu.Lock()
	stuck := make([]*Row, 0, len(p.running))
	for _, r := range p.running {
		stuck = append(stuck, r.row)
	}
	p.mu.Unlock()
	if len(stuck) == 0 {
		return nil
	}
	c := p.c
	if err := c.e.handBack(ctx, stuck); err != nil {
		return fmt.Errorf("jobs: hand back %d running jobs of queue %s: %w", len(stuck), p.queue, err)
	}
	c.log.Warn("jobs: handed back jobs whose workers did not return after shutdown", "queue", p.queue, "count", len(stuck))
	c.publish(ctx, WakeChannel, p.queue)
	return nil
}

// result is one finished attempt, as the finish statement takes it.
type result struct {
	id      int64
	attempt int
	state   int
	delayMS int64
	err     *string
	undo    int
	queue   string
	keyed   bool  // the job holds a key, to be released with it
	batchID int64 // the job's batch, 0 for none
}

var errTimeout = errors.New("jobs: attempt timed out")

// work runs one attempt and decides its outcome.
func (c *Client) work(ctx context.Context, row *Row) result {
	c.mu.Lock()
	wk := c.workers[row.Kind]
	c.mu.Unlock()
	timeout := row.Timeout
	if timeout == 0 {
		timeout = c.cfg.Timeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, errTimeout)
		defer cancel()
	}
	start := time.Now()
	ctx, span := c.traceProcess(ctx, row)
	var err error
	if wk == nil {
		err = fmt.Errorf("%w: %q on instance %s", ErrNoWorker, row.Kind, c.d.Instance)
	} else {
		err = c.safeRun(ctx, wk.run, row)
	}
	span.End(err)
	res := c.outcome(ctx, row, err)
	c.observe(row, res, start)
	return res
}

// traceProcess starts the span of an attempt (see package otelx): "process <queue>",
// linked to the span that enqueued the job, whose context its Meta carries. Without a
// tracer it does nothing.
func (c *Client) traceProcess(ctx context.Context, row *Row) (context.Context, otelx.Span) {
	if c.d.Tracer == nil {
		return ctx, otelx.Span{}
	}
	return c.d.Tracer.Process(ctx, row.Queue, row.ID, []map[string]string{row.Meta},
		attribute.String("twice.job.kind", row.Kind), attribute.Int("twice.job.attempt", row.Attempt))
}

// safeRun runs a worker, turning its panic into the attempt's error (logged and counted);
// the error keeps the stack, so the job's last error shows where it panicked.
func (c *Client) safeRun(ctx context.Context, run func(context.Context, *Row) error, row *Row) error {
	// A constant name: this runs for every job, and the stack names the worker anyway.
	err := safe.Call(c.log, c.d.Panics, "jobs: worker", func() error { return run(ctx, row) })
	var p *safe.PanicError
	if errors.As(err, &p) {
		return fmt.Errorf("%w\n%s", p, p.Stack)
	}
	return err
}

// backoff is Config.Backoff, which falls back to [DefaultBackoff] if it panics.
func (c *Client) backoff(attempt int) time.Duration {
	var d time.Duration
	if safe.Call(c.log, c.d.Panics, "jobs: Backoff", func() error { d = c.cfg.Backoff(attempt); return nil }) != nil {
		return DefaultBackoff(attempt)
	}
	return d
}

func (c *Client) outcome(ctx context.Context, row *Row, err error) result {
	res := result{id: row.ID, attempt: row.Attempt, queue: row.Queue, keyed: row.Key != "", batchID: row.BatchID}
	msg := func(e error) *string {
		s := capError(e.Error())
		return &s
	}
	cause := context.Cause(ctx)
	var snooze *snoozeError
	var cancelled *cancelError
	var decode *decodeError
	switch {
	case err == nil:
		res.state = bitCompleted
	case errors.Is(cause, ErrCancelled):
		// Sent as "interrupted, run again": the finish statement records it cancelled only
		// if the job's cancel_requested flag is set, so no message on the bus, nor any
		// mistake on this side, can cancel a job nobody asked to cancel.
		res.state, res.undo, res.err = bitAvailable, 1, msg(fmt.Errorf("cancelled while running: %w", err))
	case errors.Is(cause, ErrShutdown):
		// Handed back: another instance runs it, and this attempt does not count.
		res.state, res.undo, res.err = bitAvailable, 1, msg(fmt.Errorf("handed back on shutdown of %s: %w", c.d.Instance, err))
	case errors.As(err, &snooze):
		res.state, res.undo, res.delayMS = bitAvailable, 1, snooze.d.Milliseconds()
	case errors.As(err, &cancelled):
		res.state, res.err = bitCancelled, msg(err)
	case errors.As(err, &decode):
		res.state, res.err = bitDiscarded, msg(err)
	default:
		if errors.Is(cause, errTimeout) {
			err = fmt.Errorf("%w after %v: %w", errTimeout, row.Timeout, err)
		}
		res.err = msg(err)
		if row.Attempt >= row.MaxAttempts {
			res.state = bitDiscarded
		} else {
			res.state, res.delayMS = bitAvailable, max(c.backoff(row.Attempt).Milliseconds(), 0)
		}
	}
	return res
}
