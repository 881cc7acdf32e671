package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twicehq/twice/store"
)

// kindSignal is the kind of a history row of [WaitSignal].
const kindSignal = "signal"

// stepTimedOut is the state of a wait for a signal whose time ran out.
const stepTimedOut = "timedout"

// ErrTimeout is what [WaitSignal] returns when no signal came in time. The workflow can
// branch on it (errors.Is), or return it to compensate.
var ErrTimeout = errors.New("workflow: no signal before the timeout")

// MaxSignalBytes is the largest payload a signal carries, encoded as JSON.
const MaxSignalBytes = MaxInputBytes

// WaitSignal waits up to timeout for a signal named name sent to the workflow with
// [Engine.Signal] (an approval, say), from any instance, and returns its payload decoded
// into a T. Signals are kept until a wait takes them, oldest first, each once: one sent
// before the workflow reaches the wait is there when it does. When no signal comes in
// time it returns [ErrTimeout]; a timeout of 0 or less takes only a signal already sent.
// The outcome is stored, so a replay returns the same payload, or ErrTimeout, again.
//
// Like [Sleep], a workflow that must wait holds no worker: WaitSignal then returns an error
// that the workflow's function must return (the run ends; the signal's commit, the
// timeout or a cancellation resumes it on any instance):
//
//	ok, err := workflow.WaitSignal[bool](wc, "approval", 72*time.Hour)
//	if errors.Is(err, workflow.ErrTimeout) {
//		ok = false // nobody answered: refuse
//	} else if err != nil {
//		return err
//	}
//
// name names the wait in the workflow's history as well as the signal; it may repeat (a
// wait in a loop takes one signal each time). Once the workflow's cancellation is
// requested, WaitSignal returns [ErrCancelled].
func WaitSignal[T any](ctx *Context, name string, timeout time.Duration) (T, error) {
	var zero T
	seq, done, err := ctx.nextWait(kindSignal, name)
	if err != nil {
		return zero, err
	}
	payload := ""
	if done != nil {
		if done.State == stepTimedOut {
			return zero, ErrTimeout
		}
		payload = string(done.Result)
	} else {
		e := ctx.e
		timedOut := false
		err := ctx.wait(seq, kindSignal, name, timeout, func(tx store.Tx, left time.Duration) (bool, error) {
			err := tx.QueryRow(ctx, e.q.consume, e.d.Service, ctx.id, name, seq).Scan(&payload)
			switch {
			case errors.Is(err, store.ErrNoRows) && left > 0:
				return false, nil
			case errors.Is(err, store.ErrNoRows):
				timedOut = true
				_, err := tx.Exec(ctx, e.q.waitDone, e.s.NowArg(), e.d.Service, ctx.id, seq, stepTimedOut, "")
				return true, err
			case err != nil:
				return false, err
			}
			_, err = tx.Exec(ctx, e.q.waitDone, e.s.NowArg(), e.d.Service, ctx.id, seq, stepCompleted, payload)
			return true, err
		})
		if err != nil {
			return zero, err
		}
		if timedOut {
			return zero, ErrTimeout
		}
	}
	var v T
	if err := json.Unmarshal([]byte(payload), &v); err != nil {
		return zero, fmt.Errorf("workflow: signal %q of workflow %s: decode its payload %.100s into %T: %w", name, ctx.id, payload, v, err)
	}
	return v, nil
}

// Signal sends the workflow id the signal name with payload (encoded as JSON), from any
// instance: the workflow's [WaitSignal] for name takes it, now if it waits (it is woken
// once the signal commits) or when it gets there. It returns [ErrNotFound] for an unknown
// workflow and [ErrFinished] for one that has ended.
func (e *Engine) Signal(ctx context.Context, id, name string, payload any) error {
	return e.s.InTx(ctx, func(tx store.Tx) error { return e.signal(ctx, tx, id, name, payload) })
}

// SignalTx is [Engine.Signal] inside the caller's transaction (any transaction
// [store.Store.Wrap] accepts): the signal exists, and wakes the workflow, only if tx
// commits.
func (e *Engine) SignalTx(ctx context.Context, tx any, id, name string, payload any) error {
	q, err := e.s.Wrap(tx)
	if err != nil {
		return err
	}
	return e.signal(ctx, q, id, name, payload)
}

func (e *Engine) signal(ctx context.Context, q store.Querier, id, name string, payload any) error {
	if err := checkName("signal name", name, MaxNameLen); err != nil {
		return err
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("%w: encode the payload of signal %q: %v", ErrInvalid, name, err)
	}
	if len(b) > MaxSignalBytes {
		return fmt.Errorf("%w: the payload of signal %q is %d bytes, more than %d", ErrInvalid, name, len(b), MaxSignalBytes)
	}
	var state State
	var job int64
	err = q.QueryRow(ctx, e.q.lockFor, e.d.Service, id).Scan(&state, &job)
	switch {
	case errors.Is(err, store.ErrNoRows):
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	case err != nil:
		return fmt.Errorf("workflow: signal %q to %q: %w", name, id, err)
	case state.Finished():
		return fmt.Errorf("%w: %q is %s; signal %q not sent", ErrFinished, id, state, name)
	}
	if _, err := q.Exec(ctx, e.q.signal, e.s.NowArg(), e.d.Service, id, name, string(b)); err != nil {
		return fmt.Errorf("workflow: signal %q to %q: %w", name, id, err)
	}
	if err := e.wake(ctx, q, id, job); err != nil {
		return fmt.Errorf("workflow: signal %q to %q: waking the workflow: %w", name, id, err)
	}
	return nil
}
