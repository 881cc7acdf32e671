package workflow

import (
	"context"
	"errors"
	"fmt"

	"github.com/twicehq/twice/store"
)

// ErrNotFailed is returned when retrying a workflow that is not [Failed]: one still
// running or compensating, or one that ended otherwise. The error names its state.
var ErrNotFailed = errors.New("workflow: not failed")

// Retry runs the [Failed] workflow id again, once a person has fixed what failed it: the
// missing version deployed, the bug of a compensation fixed, the outside system it calls
// repaired.
//
//   - A workflow that had begun compensating (a compensation of one of its steps ran or
//     was tried) goes back to [Compensating]: the compensations that failed on every
//     attempt get a fresh set of attempts, those done are not run again, and it ends
//     [Compensated] or [Cancelled] (or Failed again).
//   - Any other goes back to [Running]: its function is replayed from the stored
//     history, so its completed steps are never run again and it resumes at its first
//     unfinished one. A step that had failed for good fails again from its history
//     (Retry does not run it again): a workflow that failed before its compensations ran
//     thus compensates.
//
// The workflow's error is kept, prefixed with "retried after: ", until the workflow
// fails or compensates again: a workflow that was retried says so, and why it had needed
// a person, whatever it ends as. The errors of its steps and compensations stay in their
// history.
//
// The workflow runs again on whichever live instance takes its job (a new one, enqueued
// in the same transaction). The row lock orders Retry against any other: of two
// concurrent retries, one runs it and the other returns ErrNotFailed. Retry returns
// [ErrNotFound] for an unknown id and ErrNotFailed, naming the state, for a workflow
// that is not Failed.
func (e *Engine) Retry(ctx context.Context, id string) error {
	var state State // as found; once retried, as it runs again
	retried := false
	err := e.s.InTx(ctx, func(tx store.Tx) error {
		retried = false
		var job int64
		if err := tx.QueryRow(ctx, e.q.lockFor, e.d.Service, id).Scan(&state, &job); err != nil {
			return err
		}
		if state != Failed {
			return nil
		}
		if err := tx.QueryRow(ctx, e.q.retry, e.s.NowArg(), e.d.Service, id).Scan(&state); err != nil {
			return err
		}
		retried = true
		if _, err := tx.Exec(ctx, e.q.retryComps, e.s.NowArg(), e.d.Service, id); err != nil {
			return err
		}
		// A successor job, which becomes the workflow's: its job of before has ended, or is
		// about to (it ran the workflow to Failed), and holds the key until then, which makes
		// the new one wait for it rather than run beside it.
		return e.succeed(ctx, tx, id, job)
	})
	switch {
	case errors.Is(err, store.ErrNoRows):
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	case err != nil:
		return fmt.Errorf("workflow: retry %q: %w", id, err)
	case !retried:
		return fmt.Errorf("%w: %q is %s; only a failed workflow can be retried", ErrNotFailed, id, state)
	}
	e.log.Info("workflow: retried", "workflow", id, "state", state)
	return nil
}
