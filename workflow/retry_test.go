package workflow_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/twicetest"
	"github.com/twicehq/twice/workflow"
)

// A compensation that fails on every attempt leaves the workflow Failed; once its cause is
// fixed, a retry (two at once, from two instances: one wins) runs that compensation again,
// and only it, and the workflow ends Compensated. The workflow had waited before it failed,
// so its job was recorded as the one to wake: the retry's new job must take over from it.
func TestRetryAfterTheCompensationIsFixed(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s})
		l := newLedger(t, nodes[0])
		var fixed atomic.Bool
		def := workflow.Def[order]{Name: "refund", Run: func(wc *workflow.Context, in order) error {
			if err := workflow.Sleep(wc, "settle", time.Millisecond); err != nil {
				return err
			}
			for _, name := range []string{"one", "two", "three"} {
				st := step(l, name, name == "three")
				if name == "two" {
					undo := st.Compensate
					st.CompensateRetry.Attempts = 2
					st.Compensate = func(ctx context.Context, key, result string) error {
						if !fixed.Load() {
							return errors.Join(l.record(ctx, l.s, wc.ID(), "undo two fails"), errors.New("the refund API is down"))
						}
						return undo(ctx, key, result)
					}
				}
				if _, err := workflow.Do(wc, st); err != nil {
					return err
				}
			}
			return nil
		}}
		wf := register(t, nodes[0].Workflows(), def)
		register(t, nodes[1].Workflows(), def)
		if _, err := wf.Start(ctx, "f-1", order{}); err != nil {
			t.Fatal(err)
		}
		st := await(t, nodes[0].Workflows(), "f-1")
		if st.State != workflow.Failed {
			t.Fatalf("status: %s %q", st.State, st.Error)
		}
		before := []string{"one", "two", "three", "three", "undo two fails", "undo two fails", "undo one-done"}
		equal(t, "executions before the retry", l.ran(t, "f-1"), before)

		fixed.Store(true)
		errs := make([]error, len(nodes))
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Go(func() { errs[i] = n.Workflows().Retry(ctx, "f-1") })
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, workflow.ErrNotFailed):
				t.Fatalf("a concurrent retry: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d of two concurrent retries ran the workflow: %v", won, errs)
		}

		st = await(t, nodes[1].Workflows(), "f-1")
		if st.State != workflow.Compensated ||
			!strings.HasPrefix(st.Error, `retried after: compensation of step(s) ["two"] failed on every attempt`) {
			t.Fatalf("status after the retry: %s %q", st.State, st.Error)
		}
		// Only the failed compensation ran again, once: no step, no compensation done before.
		equal(t, "executions", l.ran(t, "f-1"), append(before, "undo two-done"))
		if two := st.Steps[2]; two.Name != "two" || two.Compensation != "done" || two.CompensationAttempts != 1 {
			t.Fatalf("step two: %+v", two)
		}
		if st.FinishedAt.IsZero() || !st.FinishedAt.After(st.CreatedAt) {
			t.Fatalf("finished at %v", st.FinishedAt)
		}

		err := nodes[0].Workflows().Retry(ctx, "f-1")
		if !errors.Is(err, workflow.ErrNotFailed) || !strings.Contains(err.Error(), "compensated") {
			t.Fatalf("retrying a compensated workflow: %v", err)
		}
		if err := nodes[0].Workflows().Retry(ctx, "nope"); !errors.Is(err, workflow.ErrNotFound) {
			t.Fatalf("retrying an unknown workflow: %v", err)
		}
	})
}

// A workflow failed by a version no longer registered resumes, once the version is
// deployed again and it is retried, at its first unfinished step: its completed step does
// not run again. A running workflow cannot be retried.
func TestRetryAfterTheVersionIsDeployed(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s})
		l := newLedger(t, nodes[1]) // the node that lives on
		crashMidway(t, nodes, l, "v-1", func(e *workflow.Engine) *workflow.Workflow[order] {
			return register(t, e, workflow.Def[order]{Name: "v", Version: 1, Run: blocking(l, "one", "two", "three")})
		})
		e := nodes[1].Workflows()
		waits := register(t, e, workflow.Def[order]{Name: "v", Version: 2, Run: func(wc *workflow.Context, in order) error {
			_, err := workflow.WaitSignal[string](wc, "never", time.Hour)
			return err
		}})
		st := await(t, e, "v-1")
		if st.State != workflow.Failed || !strings.Contains(st.Error, "no longer registered") {
			t.Fatalf("status: %s %q", st.State, st.Error)
		}

		// Deployed again: the steps of version 1, which no longer block.
		register(t, e, workflow.Def[order]{Name: "v", Version: 1, Run: func(wc *workflow.Context, in order) error {
			for _, name := range []string{"one", "two", "three"} {
				if _, err := workflow.Do(wc, step(l, name, false)); err != nil {
					return err
				}
			}
			return nil
		}})
		if err := e.Retry(ctx, "v-1"); err != nil {
			t.Fatal(err)
		}
		st = await(t, e, "v-1")
		if st.State != workflow.Completed || !strings.HasPrefix(st.Error, "retried after: "+workflow.ErrMismatch.Error()) {
			t.Fatalf("status after the retry: %s %q", st.State, st.Error)
		}
		// Step two had not completed when its node crashed: it runs again; step one does not.
		equal(t, "executions", l.ran(t, "v-1"), []string{"one", "two", "two", "three"})

		if err := e.Retry(ctx, "v-1"); !errors.Is(err, workflow.ErrNotFailed) || !strings.Contains(err.Error(), "completed") {
			t.Fatalf("retrying a completed workflow: %v", err)
		}
		if _, err := waits.Start(ctx, "w-1", order{}); err != nil {
			t.Fatal(err)
		}
		if err := e.Retry(ctx, "w-1"); !errors.Is(err, workflow.ErrNotFailed) || !strings.Contains(err.Error(), "running") {
			t.Fatalf("retrying a running workflow: %v", err)
		}
	})
}

// holder is a job that holds a key until its test lets it go.
type holder struct{}

func (holder) Kind() string { return "test.holder" }

// A retried workflow's new job is keyed by the workflow's id, like the job that ran it
// before: while a job of that key still runs (as the one before does between the failure
// and its completion), the new one waits for it, then runs the workflow; it is neither
// run beside it nor lost.
func TestRetryWaitsForAJobHoldingTheKey(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		node, l, e := open1(t, s)
		var fixed atomic.Bool
		wf := register(t, e, workflow.Def[order]{Name: "held", Run: func(wc *workflow.Context, in order) error {
			one := step(l, "one", false)
			undo := one.Compensate
			one.CompensateRetry.Attempts = 1
			one.Compensate = func(ctx context.Context, key, result string) error {
				if !fixed.Load() {
					return errors.New("not yet")
				}
				return undo(ctx, key, result)
			}
			if _, err := workflow.Do(wc, one); err != nil {
				return err
			}
			_, err := workflow.Do(wc, step(l, "two", true))
			return err
		}})
		if _, err := wf.Start(ctx, "k-1", order{}); err != nil {
			t.Fatal(err)
		}
		if st := await(t, e, "k-1"); st.State != workflow.Failed {
			t.Fatalf("status: %s %q", st.State, st.Error)
		}

		holding, release := make(chan struct{}), make(chan struct{})
		err := jobs.Register(node.Jobs(), jobs.WorkFunc[holder](func(ctx context.Context, _ *jobs.Job[holder]) error {
			close(holding)
			<-release
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := node.Jobs().Enqueue(ctx, holder{}, &jobs.Opts{Key: "k-1"}); err != nil {
			t.Fatal(err)
		}
		<-holding
		fixed.Store(true)
		if err := e.Retry(ctx, "k-1"); err != nil {
			t.Fatal(err)
		}
		st, err := e.Get(ctx, "k-1")
		if err != nil || st.State != workflow.Compensating {
			t.Fatalf("while the key is held: %+v, %v", st, err)
		}
		close(release)
		if st := await(t, e, "k-1"); st.State != workflow.Compensated {
			t.Fatalf("status after the retry: %s %q", st.State, st.Error)
		}
		equal(t, "executions", l.ran(t, "k-1"), []string{"one", "two", "two", "undo one-done"})
	})
}
