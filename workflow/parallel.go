package workflow

import (
	"errors"
	"sync"
)

// DoAll runs the steps at once and waits for all of them: a fan-out whose results come
// back in the order of steps (the map of a map-reduce; the workflow's function reduces
// them). Each step is a step as [Do] runs it, with its own place in the workflow (in the
// order of steps), retry policy, idempotency key and compensation, and its own stored
// result: after a crash, the resumed run returns the results of the steps that completed
// and runs only the others. At most Config.StepConcurrency of them run at a time.
//
// A step that fails for good does not interrupt the others: DoAll waits for every step,
// and the results of those that completed are kept, and compensated (the last place
// first, one at a time) if the workflow then fails. The error is nil when every step
// completed; else it joins the failures ([*StepError], [ErrCancelled]) in the order of
// steps, so that [errors.As] and [errors.Is] find them, and the results of the steps
// that failed are zero values. A mismatch with the stored history, found at any of the
// steps, is returned alone, as [Do] returns it.
//
// Step names must be unique in the workflow, as for every step: name each fan-out step
// after its item ("price/" + sku, say).
func DoAll[T any](ctx *Context, steps ...Step[T]) ([]T, error) {
	results := make([]T, len(steps))
	errs := make([]error, len(steps))
	var wg sync.WaitGroup
	slots := make(chan struct{}, ctx.e.cfg.StepConcurrency)
	for i, s := range steps {
		p, v, err := begin(ctx, s.Name, s.Retry, s.CompensateRetry, s.Compensate)
		if p == nil {
			results[i], errs[i] = v, err
			continue
		}
		do := doOf(s)
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			results[i], errs[i] = p.run(do, nil)
		})
	}
	wg.Wait()
	if err := ctx.failed(); err != nil {
		return results, err
	}
	return results, errors.Join(errs...)
}
