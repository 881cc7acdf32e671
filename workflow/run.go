package workflow

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twicehq/twice/internal/safe"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// work is the job worker: it runs (or resumes) one workflow. It returns an error only when
// the run must be tried again (the database failed, or the instance is shutting down: the
// job queue hands the job back); a workflow's own failure is recorded, not returned.
func (e *Engine) work(ctx context.Context, job *jobs.Job[runArgs]) error {
	id := job.Args.ID
	st, err := e.load(ctx, e.s, id)
	if errors.Is(err, ErrNotFound) {
		e.log.Warn("workflow: the job of a workflow that does not exist ran; nothing to do", "workflow", id)
		return nil
	}
	if err != nil {
		return err
	}
	if st.State.Finished() {
		return e.retire(ctx, job) // every job of an ended workflow is spare
	}
	d := e.def(st.Name, st.Version)
	if d == nil {
		vs := e.versions(st.Name)
		if len(vs) == 0 || st.Version > vs[len(vs)-1] {
			// A deploy half done: an instance that has the definition will run it.
			e.log.Warn("workflow: no definition here for a workflow; left for another instance",
				"workflow", id, "name", st.Name, "version", st.Version, "versions_here", vs)
			return jobs.Snooze(e.cfg.UnknownRetry)
		}
		return e.finish(ctx, id, Failed, fmt.Sprintf("%v: workflow %q %s was started with version %d, which is no longer registered (versions registered: %v)",
			ErrMismatch, st.Name, id, st.Version, vs))
	}
	if st.jobID != 0 && st.jobID != job.ID {
		// A signal or a cancellation found this job running and enqueued another to carry
		// the workflow on once this one had ended (or another run took it back since): this
		// one is spare.
		return nil
	}
	if err := e.retire(ctx, job); err != nil {
		return err
	}
	history := make(map[int]StepRecord, len(st.Steps))
	for _, h := range st.Steps {
		history[h.Seq] = h
	}
	wc := &Context{Context: ctx, e: e, id: id, name: st.Name, version: st.Version, history: history, job: job.ID,
		replay: st.State == Compensating, cancelled: st.CancelRequested && st.State == Compensating, names: map[string]int{}}
	runErr := safe.Call(e.log, e.d.Panics, "workflow "+st.Name, func() error { return d.run(wc, []byte(st.Input)) })
	if ctx.Err() != nil {
		return context.Cause(ctx) // shutdown or crash: the job queue hands the run to another instance
	}
	if wc.infra != nil {
		return wc.infra
	}
	if wc.fatal != nil {
		return e.finish(ctx, id, Failed, wc.fatal.Error())
	}
	if errors.Is(runErr, ErrMismatch) {
		return e.finish(ctx, id, Failed, runErr.Error())
	}
	if wc.asleep > 0 {
		// Waiting: the job comes back when the wait ends (or a signal or a cancellation
		// wakes it), holding no worker meanwhile.
		return jobs.Snooze(wc.asleep)
	}
	if st.State == Running {
		if runErr == nil {
			if i := slices.IndexFunc(st.Steps, func(h StepRecord) bool { return h.Seq > wc.seq }); i >= 0 {
				h := st.Steps[i]
				return e.finish(ctx, id, Failed, fmt.Sprintf("%v: workflow %q %s version %d returned after step %d, but the stored history has step %d %q",
					ErrMismatch, st.Name, id, st.Version, wc.seq, h.Seq, h.Name))
			}
			return e.finish(ctx, id, Completed, "")
		}
		if _, err := e.s.Exec(ctx, e.q.compensating, e.s.NowArg(), e.d.Service, id, store.ErrorText(runErr)); err != nil {
			return err
		}
	}
	return e.compensate(wc)
}

// retire cancels the job that job succeeds, if any (see runArgs.After). That one is not
// running (jobs of one key run one at a time), and it did not take the workflow back
// (this job is the workflow's): it is spare. Its run may have been suspended until a
// wait ended (a wait reached just before the wake that enqueued this job), so, left
// alone, it would stay in the queue until then, only to end doing nothing.
func (e *Engine) retire(ctx context.Context, job *jobs.Job[runArgs]) error {
	if job.Args.After == 0 {
		return nil
	}
	err := e.jobs.Cancel(ctx, job.Args.After)
	if err == nil || errors.Is(err, jobs.ErrFinished) || errors.Is(err, jobs.ErrNotFound) {
		return nil
	}
	return fmt.Errorf("workflow: retiring spare job %d: %w", job.Args.After, err)
}

// compensate runs the compensations of the completed steps, the last place first (the
// steps of a [DoAll] too, one at a time), each until it succeeds or its attempts run out,
// and ends the workflow.
func (e *Engine) compensate(wc *Context) error {
	slices.SortFunc(wc.comps, func(a, b compensation) int { return a.seq - b.seq })
	var failed []string
	for _, c := range slices.Backward(wc.comps) {
		switch wc.history[c.seq].Compensation {
		case "done":
			continue
		case stepFailed:
			failed = append(failed, c.name)
			continue
		}
		ok, err := e.compensateOne(wc, c)
		if err != nil {
			return err
		}
		if !ok {
			failed = append(failed, c.name)
		}
	}
	cancelled := wc.cancelled
	if !cancelled {
		var cr bool
		if err := e.s.QueryRow(wc, e.q.cancelRequested, e.d.Service, wc.id).Scan(&cr); err != nil {
			return err
		}
		cancelled = cr
	}
	switch {
	case len(failed) > 0:
		return e.finish(wc, wc.id, Failed, fmt.Sprintf("compensation of step(s) %q failed on every attempt: a person must look", failed))
	case cancelled:
		return e.finish(wc, wc.id, Cancelled, "")
	}
	return e.finish(wc, wc.id, Compensated, "")
}

// compensateOne runs c until it succeeds (true) or runs out of attempts (false). An error
// means the run must stop here (the database failed, or the instance is going away).
func (e *Engine) compensateOne(wc *Context, c compensation) (bool, error) {
	attempts := wc.history[c.seq].CompensationAttempts
	maxAttempts, backoff := e.retry(c.retry, e.cfg.CompensationAttempts)
	for {
		attempts++
		err := safe.Call(e.log, e.d.Panics, "workflow compensation "+c.name, func() error { return c.run(wc) })
		if wc.Err() != nil {
			return false, context.Cause(wc)
		}
		if err == nil {
			_, err := e.s.Exec(wc, e.q.compDone, e.s.NowArg(), e.d.Service, wc.id, c.seq, attempts)
			return err == nil, err
		}
		var perm *permanentError
		final := attempts >= maxAttempts || errors.As(err, &perm)
		state := stepRetrying
		if final {
			state = stepFailed
		}
		if _, werr := e.s.Exec(wc, e.q.compFailed, e.s.NowArg(), e.d.Service, wc.id, c.seq, state, attempts, store.ErrorText(err)); werr != nil {
			return false, werr
		}
		if final {
			e.log.Error("workflow: a compensation failed on every attempt; the workflow needs a person",
				"workflow", wc.id, "step", c.name, "attempts", attempts, "err", err)
			return false, nil
		}
		if err := sleep(wc, backoff(attempts)); err != nil {
			return false, err
		}
	}
}

// finish ends the workflow id in state, with msg as its error when it is not empty.
func (e *Engine) finish(ctx context.Context, id string, state State, msg string) error {
	if state == Failed {
		e.log.Error("workflow: failed; a person must look", "workflow", id, "err", msg)
	}
	_, err := e.s.Exec(ctx, e.q.finish, e.s.NowArg(), e.d.Service, id, string(state), store.Text(msg, store.MaxErrorText))
	return err
}
