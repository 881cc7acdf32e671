package workflow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// Kinds of a workflow's history rows.
const (
	kindStep  = "step"
	kindSleep = "sleep"
)

// stepWaiting is the state of a wait not yet over.
const stepWaiting = "waiting"

// errAsleep is what a wait returns when the workflow must wait on: its function should
// return it (whatever it returns, the run ends there and the workflow resumes when the
// wait is over, on any instance). Steps called after it return it too, without running.
var errAsleep = errors.New("workflow: waiting; return this error from the workflow's function")

// matches checks that the stored history row h is a kind named name, and fails the
// workflow, naming both, when it is not.
func (c *Context) matches(h StepRecord, kind, name string) error {
	if h.Kind == kind && h.Name == name {
		return nil
	}
	was, is := fmt.Sprintf("%q", h.Name), fmt.Sprintf("%q", name)
	if h.Kind != kind {
		was, is = h.Kind+" "+was, kind+" "+is
	}
	return c.fail(fmt.Errorf("%w: workflow %q %s was started with version %d, whose step %d is %s; the code of version %d calls %s there",
		ErrMismatch, c.name, c.id, c.version, h.Seq, was, c.version, is))
}

// nextWait advances c to its next place for a wait ([Sleep], [WaitSignal]) of kind named name. It returns the
// place, and the stored row when the wait is over already (nil when it is to be waited).
func (c *Context) nextWait(kind, name string) (int, *StepRecord, error) {
	c.seq++
	seq := c.seq
	if err := c.failed(); err != nil {
		return seq, nil, err
	}
	if c.asleep > 0 {
		return seq, nil, errAsleep
	}
	if err := checkName(kind+" name", name, MaxNameLen); err != nil {
		return seq, nil, c.fail(fmt.Errorf("%w: workflow %q step %d: %v", ErrMismatch, c.name, seq, err))
	}
	if h, ok := c.at(seq); ok {
		if err := c.matches(h, kind, name); err != nil {
			return seq, nil, err
		}
		if h.State != stepWaiting {
			return seq, &h, nil
		}
	}
	if c.replay {
		return seq, nil, errCompensating // compensating: nothing new waits
	}
	if c.cancelled {
		return seq, nil, ErrCancelled
	}
	return seq, nil, nil
}

// Sleep makes the workflow wait d, durably: the wake-up time is stored when the workflow
// first reaches the sleep (in database time), so a workflow whose instance dies or shuts
// down mid-sleep sleeps on where it was on any other, never starting the sleep again nor
// skipping it. A sleeping workflow holds no worker: its job is put back in the queue until
// the wake-up time.
//
// Sleep returns nil once the time has come. Before that it returns an error that the
// workflow's function must return (the run ends there and resumes at the wake-up time,
// replaying the steps before the sleep from their stored results), so call it as
//
//	if err := workflow.Sleep(wc, "cooling-off", 24*time.Hour); err != nil {
//		return err
//	}
//
// name names the sleep in the workflow's history; unlike a step's, it may repeat (a sleep
// in a loop). Once the workflow's cancellation is requested, Sleep returns [ErrCancelled],
// and a cancellation wakes a sleeping workflow at once.
func Sleep(ctx *Context, name string, d time.Duration) error {
	seq, done, err := ctx.nextWait(kindSleep, name)
	if err != nil || done != nil {
		return err
	}
	return ctx.wait(seq, kindSleep, name, d, func(store.Tx, time.Duration) (bool, error) { return false, nil })
}

// wait waits at place seq: in one transaction it records this run's job as the one to
// wake, stores the wait with its wake-up time d from now if it is new, and calls check
// with the transaction and the time left; check says whether the wait is over (and
// records how). When it is not and time is left, the run is suspended until then; when
// no time is left, the wait is over and completed.
func (c *Context) wait(seq int, kind, name string, d time.Duration, check func(tx store.Tx, left time.Duration) (bool, error)) error {
	e := c.e
	var left time.Duration
	var over bool
	err := e.s.InTx(c, func(tx store.Tx) error {
		var cancel bool
		if err := tx.QueryRow(c, e.q.claim, e.d.Service, c.id, c.job).Scan(&cancel); err != nil {
			return err
		}
		if cancel {
			c.cancel()
			return ErrCancelled
		}
		if _, err := tx.Exec(c, e.q.waitAt, e.s.NowArg(), e.d.Service, c.id, seq, name, kind, max(d, 0).Milliseconds()); err != nil {
			return err
		}
		var gotName, gotKind, state, result string
		var age store.Micros
		if err := tx.QueryRow(c, e.q.waitGet, e.s.NowArg(), e.d.Service, c.id, seq).Scan(&gotName, &gotKind, &state, &result, &age); err != nil {
			return err
		}
		if err := c.matches(StepRecord{Seq: seq, Name: gotName, Kind: gotKind}, kind, name); err != nil {
			return err
		}
		if state != stepWaiting {
			// Another run ended the wait since this one loaded the history: the next run
			// replays it.
			return fmt.Errorf("another run ended the wait at step %d", seq)
		}
		left = age.Duration
		var err error
		if over, err = check(tx, left); err != nil || over || left > 0 {
			return err
		}
		over = true
		_, err = tx.Exec(c, e.q.waitDone, e.s.NowArg(), e.d.Service, c.id, seq, stepCompleted, "")
		return err
	})
	switch {
	case errors.Is(err, ErrCancelled):
		return err
	case errors.Is(err, ErrMismatch):
		return c.fail(err)
	case errors.Is(err, store.ErrNoRows):
		return c.broken(fmt.Errorf("workflow: %s %q: the workflow %s has ended meanwhile", kind, name, c.id))
	case err != nil:
		return c.broken(fmt.Errorf("workflow: %s %q: %w", kind, name, err))
	case !over:
		// The job's snooze is counted in whole milliseconds: round up, never wake early.
		c.asleep = left.Truncate(time.Millisecond) + time.Millisecond
		return errAsleep
	}
	return nil
}

// wake makes the job of workflow id, job (0 if it never waited), run now, in q: the
// transaction that gives it a reason to (a signal, a cancellation), so that it runs once
// that commits. A job that is not running (asleep) is made due; one that runs (and may be
// about to sleep) gets a successor, keyed like it so that it runs once it has ended, which
// becomes the workflow's job.
func (e *Engine) wake(ctx context.Context, q store.Querier, id string, job int64) error {
	if job == 0 {
		return nil // it never waited: its job runs, or is due, and will see what q wrote
	}
	err := e.jobs.RetryTx(ctx, q, job)
	if err == nil || !(errors.Is(err, jobs.ErrRunning) || errors.Is(err, jobs.ErrNotFound)) {
		return err
	}
	return e.succeed(ctx, q, id, job)
}

// succeed enqueues, in q, a job that carries workflow id on after its job (0 for none),
// keyed like it so that it runs only once that one has ended, and records it as the
// workflow's job. A job that is not the workflow's when it runs ends at once; the
// successor, once it runs, cancels the one it succeeds should it still wait in the queue
// (see Engine.retire).
func (e *Engine) succeed(ctx context.Context, q store.Querier, id string, job int64) error {
	r, err := e.jobs.EnqueueTx(ctx, q, runArgs{ID: id, After: job}, &jobs.Opts{Key: id, MaxAttempts: runAttempts})
	if err != nil {
		return err
	}
	_, err = q.Exec(ctx, e.q.setJob, e.d.Service, id, r.ID)
	return err
}
