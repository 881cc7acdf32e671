package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/twicehq/twice/internal/otelx"
	"github.com/twicehq/twice/internal/safe"
	"github.com/twicehq/twice/store"
)

// Context is a workflow's run: the context its function runs under (it ends when the
// instance shuts down or dies, and the workflow resumes elsewhere), and the replay of its
// stored history that [Do] and [DoTx] read.
type Context struct {
	context.Context
	e       *Engine
	id      string
	name    string
	version int

	history map[int]StepRecord // by seq, as loaded when the run began; parallel steps leave gaps
	replay  bool               // compensating: steps beyond the history do not run
	seq     int                // the place of the last step called
	names   map[string]int
	job     int64         // the job running the workflow: the one a signal wakes while it waits
	asleep  time.Duration // > 0: a wait suspended the run, to go on this much later

	// The steps of a [DoAll] run their attempts at once: what they record of the run is
	// written under mu. The workflow's function reads it only between steps, when none run.
	mu        sync.Mutex
	comps     []compensation // of the completed steps, in the order they completed
	cancelled bool           // a step found the cancellation requested
	fatal     error          // a mismatch: the workflow fails whatever its function does with it
	infra     error          // the database failed: the run is tried again, whatever the function returned
}

// broken records that the run cannot go on for a reason outside the workflow (the
// database), so that it is tried again instead of compensated.
func (c *Context) broken(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.infra = err
	return err
}

// fail records that the history does not match the code: the workflow fails, whatever
// its function does with the error. The first mismatch found is the one reported.
func (c *Context) fail(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fatal == nil {
		c.fatal = err
	}
	return c.fatal
}

// failed returns the mismatch recorded, if any.
func (c *Context) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fatal
}

// cancel records that the workflow's cancellation was found requested.
func (c *Context) cancel() {
	c.mu.Lock()
	c.cancelled = true
	c.mu.Unlock()
}

// bind records the compensation of a completed step.
func (c *Context) bind(comp compensation) {
	c.mu.Lock()
	c.comps = append(c.comps, comp)
	c.mu.Unlock()
}

// at returns the stored history row of place seq, if there is one.
func (c *Context) at(seq int) (StepRecord, bool) {
	h, ok := c.history[seq]
	return h, ok
}

// ID is the workflow's id.
func (c *Context) ID() string { return c.id }

// Name is the workflow's name.
func (c *Context) Name() string { return c.name }

// Version is the version of the definition the workflow runs with.
func (c *Context) Version() int { return c.version }

// Retry is a step's retry policy: how many attempts, and how long to wait between them.
type Retry struct {
	// Attempts is how many times the step (or its compensation) runs before it fails for
	// good. Defaults to the engine's Config: 3 for a step, 10 for a compensation.
	Attempts int
	// Backoff is the delay after failed attempt number attempt. Defaults to the engine's
	// Config.Backoff.
	Backoff func(attempt int) time.Duration
}

// Step is a step of a workflow whose result is a T, stored as JSON once it completes.
type Step[T any] struct {
	// Name names the step, unique within the workflow. Required.
	Name string
	// Do runs the step. key is the step's idempotency key (workflow id, "/", step name),
	// the same on every attempt and after a resume: pass it to outside systems so that a
	// repeated attempt is not a repeated effect. Required.
	Do func(ctx context.Context, key string) (T, error)
	// Compensate undoes the completed step, given its result, when the workflow fails or
	// is cancelled after it. Defaults to nil: nothing to undo.
	Compensate func(ctx context.Context, key string, result T) error
	// Retry is the step's retry policy; CompensateRetry its compensation's.
	Retry, CompensateRetry Retry
}

// StepTx is a step that writes to the service's own database: its effect and its
// checkpoint commit in one transaction, so the effect happens exactly once.
type StepTx[T any] struct {
	// Name names the step, unique within the workflow. Required.
	Name string
	// Do runs the step in tx, which the step's checkpoint joins; returning an error rolls
	// both back. Required.
	Do func(ctx context.Context, tx store.Tx, key string) (T, error)
	// Compensate undoes the completed step, given its result. Defaults to nil: nothing.
	Compensate func(ctx context.Context, key string, result T) error
	// Retry is the step's retry policy; CompensateRetry its compensation's.
	Retry, CompensateRetry Retry
}

// permanentError marks an error that no retry will fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent, returned by a step, fails it at once, without its remaining attempts.
func Permanent(err error) error { return &permanentError{err: err} }

// StepError is what [Do] and [DoTx] return for a step that failed for good.
type StepError struct {
	Step     string
	Attempts int
	Err      string // the last attempt's error, as stored
	err      error  // the error itself, when this run saw it
}

func (e *StepError) Error() string {
	attempts := "attempts"
	if e.Attempts == 1 {
		attempts = "attempt"
	}
	return fmt.Sprintf("workflow: step %q failed after %d %s: %s", e.Step, e.Attempts, attempts, e.Err)
}

// Unwrap returns the last attempt's error when this run saw it (not after a resume).
func (e *StepError) Unwrap() error { return e.err }

// compensation is a completed step's compensation, its result bound.
type compensation struct {
	seq   int
	name  string
	retry Retry
	run   func(ctx context.Context) error
}

// Do runs the step s of the workflow, or returns its stored result if it completed
// before. It retries s by its Retry policy and returns a [*StepError] once it fails for
// good, [ErrCancelled] without running once the workflow is cancelled, and an error
// wrapping [ErrMismatch] when the stored history holds another step at this place.
func Do[T any](ctx *Context, s Step[T]) (T, error) {
	return step(ctx, s.Name, s.Retry, s.CompensateRetry, s.Compensate, doOf(s), nil)
}

// doOf returns s.Do, or for a step without one a function that fails it for good.
func doOf[T any](s Step[T]) func(context.Context, string) (T, error) {
	if s.Do == nil {
		return func(context.Context, string) (T, error) {
			var zero T
			return zero, Permanent(fmt.Errorf("%w: step %q has no Do", ErrInvalid, s.Name))
		}
	}
	return s.Do
}

// DoTx is [Do] for a step that writes to the service's own database: s.Do runs in a
// transaction that also records the step completed, so its effect commits exactly once.
func DoTx[T any](ctx *Context, s StepTx[T]) (T, error) {
	return step(ctx, s.Name, s.Retry, s.CompensateRetry, s.Compensate, nil, func(c context.Context, tx store.Tx, key string) (T, error) {
		if s.Do == nil {
			var zero T
			return zero, Permanent(fmt.Errorf("%w: step %q has no Do", ErrInvalid, s.Name))
		}
		return s.Do(c, tx, key)
	})
}

// errDone is how a step's transaction learns that another run completed the step: it
// rolls back, and the stored result is returned.
var errDone = errors.New("workflow: step completed by another run")

func step[T any](wc *Context, name string, retry, compRetry Retry, comp func(context.Context, string, T) error,
	do func(context.Context, string) (T, error), doTx func(context.Context, store.Tx, string) (T, error)) (T, error) {
	p, v, err := begin(wc, name, retry, compRetry, comp)
	if p == nil {
		return v, err
	}
	return p.run(do, doTx)
}

// pending is a step called that has to run: its place, key and the attempts made before.
type pending[T any] struct {
	wc       *Context
	seq      int
	name     string
	key      string
	attempts int
	retry    Retry
	bind     func(T)
}

// begin is the part of a step that follows the workflow's order: it gives the step its
// place, checks it against the stored history, and returns the step's outcome when it is
// known without running it (stored, failed for good, or not to run), or else the pending
// step to [pending.run].
func begin[T any](wc *Context, name string, retry, compRetry Retry, comp func(context.Context, string, T) error) (*pending[T], T, error) {
	var zero T
	wc.seq++
	seq := wc.seq
	if err := wc.failed(); err != nil {
		return nil, zero, err
	}
	if wc.asleep > 0 {
		return nil, zero, errAsleep
	}
	if prev, dup := wc.names[name]; dup {
		return nil, zero, wc.fail(fmt.Errorf("%w: workflow %q %s version %d calls step %q twice (steps %d and %d): step names must be unique",
			ErrMismatch, wc.name, wc.id, wc.version, name, prev, seq))
	}
	if err := checkName("step name", name, MaxNameLen); err != nil {
		return nil, zero, wc.fail(fmt.Errorf("%w: workflow %q step %d: %v", ErrMismatch, wc.name, seq, err))
	}
	wc.names[name] = seq
	key := wc.id + "/" + name
	p := &pending[T]{wc: wc, seq: seq, name: name, key: key, retry: retry, bind: func(v T) {
		if comp != nil {
			wc.bind(compensation{seq: seq, name: name, retry: compRetry,
				run: func(ctx context.Context) error { return comp(ctx, key, v) }})
		}
	}}
	if h, ok := wc.at(seq); ok {
		if err := wc.matches(h, kindStep, name); err != nil {
			return nil, zero, err
		}
		switch h.State {
		case stepCompleted:
			v, err := decode[T](h.Result)
			if err != nil {
				return nil, zero, wc.fail(fmt.Errorf("%w: workflow %q %s step %d %q: stored result: %v", ErrMismatch, wc.name, wc.id, seq, name, err))
			}
			p.bind(v)
			return nil, v, nil
		case stepFailed:
			return nil, zero, &StepError{Step: name, Attempts: h.Attempts, Err: h.Error}
		}
		p.attempts = h.Attempts
	}
	if wc.replay {
		// Compensating: the function is replayed only to bind the completed steps'
		// compensations; nothing new runs.
		return nil, zero, errCompensating
	}
	if wc.cancelled {
		return nil, zero, ErrCancelled
	}
	return p, zero, nil
}

// run runs the pending step's attempts until one completes or the step fails for good. The
// steps of a [DoAll] run at once, each in its own goroutine: run writes to the workflow's
// Context only through its locked methods.
func (p *pending[T]) run(do func(context.Context, string) (T, error), doTx func(context.Context, store.Tx, string) (T, error)) (T, error) {
	var zero T
	wc, seq, name, key := p.wc, p.seq, p.name, p.key
	e := wc.e
	maxAttempts, backoff := e.retry(p.retry, e.cfg.StepAttempts)
	for {
		var cancel bool
		if err := e.s.QueryRow(wc, e.q.cancelRequested, e.d.Service, wc.id).Scan(&cancel); err != nil {
			return zero, wc.broken(fmt.Errorf("workflow: step %q: %w", name, err))
		}
		if cancel {
			wc.cancel()
			return zero, ErrCancelled
		}
		p.attempts++
		attempts := p.attempts
		var v T
		var encoded []byte
		actx, stop := context.WithCancelCause(wc)
		forget := e.track(wc.id, seq, stop)
		actx, span := wc.traceStep(actx, name, attempts)
		err := safe.Call(e.log, e.d.Panics, "workflow step "+name, func() error {
			if doTx == nil {
				var err error
				if v, err = do(actx, key); err != nil {
					return err
				}
				encoded, v, err = roundTrip(v)
				return err
			}
			return e.s.InTx(actx, func(tx store.Tx) error {
				r, err := doTx(actx, tx, key)
				if err != nil {
					return err
				}
				if encoded, v, err = roundTrip(r); err != nil {
					return err
				}
				return e.done(wc, tx, seq, name, attempts, encoded)
			})
		})
		span.End(err)
		interrupted := errors.Is(context.Cause(actx), ErrCancelled)
		forget()
		if err == nil && doTx == nil {
			err = e.done(wc, e.s, seq, name, attempts, encoded)
		}
		if errors.Is(err, errDone) {
			v, err := stored(wc, seq, name, p.bind)
			if err != nil && wc.failed() == nil {
				return v, wc.broken(err)
			}
			return v, err
		}
		if err == nil {
			p.bind(v)
			return v, nil
		}
		if wc.Err() != nil {
			return zero, context.Cause(wc) // the run ends here; the step runs again on resume
		}
		if interrupted {
			wc.cancel() // Cancel interrupted the attempt: not a failure of the step
			return zero, ErrCancelled
		}
		var perm *permanentError
		final := attempts >= maxAttempts || errors.As(err, &perm)
		state := stepRetrying
		if final {
			state = stepFailed
		}
		if _, werr := e.s.Exec(wc, e.q.stepFailed, e.s.NowArg(), e.d.Service, wc.id, seq, name, state, attempts, store.ErrorText(err)); werr != nil {
			return zero, wc.broken(fmt.Errorf("workflow: step %q: recording a failed attempt: %w", name, werr))
		}
		if final {
			return zero, &StepError{Step: name, Attempts: attempts, Err: err.Error(), err: err}
		}
		if err := sleep(wc, backoff(attempts)); err != nil {
			return zero, err
		}
	}
}

// traceStep starts the span of an attempt of step name (see package otelx): "step
// <name>", inside the span of the job that runs the workflow. Without a tracer it does
// nothing.
func (c *Context) traceStep(ctx context.Context, name string, attempt int) (context.Context, otelx.Span) {
	t := c.e.d.Tracer
	if t == nil {
		return ctx, otelx.Span{}
	}
	return t.Internal(ctx, "step "+name, attribute.String("twice.workflow.id", c.id),
		attribute.String("twice.workflow.name", c.name), attribute.Int("twice.workflow.step.attempt", attempt))
}

// errCompensating is what a step beyond the history returns while the workflow's
// function is replayed for its compensations.
var errCompensating = errors.New("workflow: compensating")

// Step states as stored.
const (
	stepCompleted = "completed"
	stepRetrying  = "retrying"
	stepFailed    = "failed"
)

// done records step seq completed with its result, on q (the step's transaction for a
// StepTx). It returns errDone when another run completed it first.
func (e *Engine) done(c *Context, q store.Querier, seq int, name string, attempts int, result []byte) error {
	var got int
	err := q.QueryRow(c, e.q.stepDone, e.s.NowArg(), e.d.Service, c.id, seq, name, attempts, string(result)).Scan(&got)
	if errors.Is(err, store.ErrNoRows) {
		return errDone
	}
	return err
}

// stored returns the result another run stored for step seq.
func stored[T any](c *Context, seq int, name string, bind func(T)) (T, error) {
	var zero T
	st, err := c.e.load(c, c.e.s, c.id)
	if err != nil {
		return zero, err
	}
	i := slices.IndexFunc(st.Steps, func(h StepRecord) bool { return h.Seq == seq })
	if i < 0 || st.Steps[i].Name != name || st.Steps[i].State != stepCompleted {
		return zero, c.fail(fmt.Errorf("%w: workflow %q %s step %d: another run stored another step than %q", ErrMismatch, c.name, c.id, seq, name))
	}
	v, err := decode[T](st.Steps[i].Result)
	if err != nil {
		return zero, err
	}
	bind(v)
	return v, nil
}

// roundTrip encodes v and decodes it again, so that a step returns on its first run what
// it returns when replayed.
func roundTrip[T any](v T) ([]byte, T, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, v, Permanent(fmt.Errorf("workflow: encode step result %T: %w", v, err))
	}
	d, err := decode[T](b)
	return b, d, err
}

func decode[T any](b []byte) (T, error) {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return v, Permanent(fmt.Errorf("workflow: decode step result into %T: %w", v, err))
	}
	return v, nil
}

// retry fills r's defaults.
func (e *Engine) retry(r Retry, attempts int) (int, func(int) time.Duration) {
	if r.Attempts > 0 {
		attempts = r.Attempts
	}
	if r.Backoff == nil {
		return attempts, e.cfg.Backoff
	}
	return attempts, r.Backoff
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
