package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/twicetest"
	"github.com/twicehq/twice/workflow"
)

// sleeper is a run of step one, a sleep of d named "nap", and step two.
func sleeper(l *ledger, d time.Duration) func(*workflow.Context, order) error {
	return func(wc *workflow.Context, in order) error {
		if _, err := workflow.Do(wc, step(l, "one", false)); err != nil {
			return err
		}
		if err := workflow.Sleep(wc, "nap", d); err != nil {
			return err
		}
		_, err := workflow.Do(wc, step(l, "two", false))
		return err
	}
}

// waiting waits until workflow id waits at its step seq, and returns that step.
func waiting(t *testing.T, e *workflow.Engine, id string, seq int) workflow.StepRecord {
	t.Helper()
	var h workflow.StepRecord
	testnode.EventuallyNil(t, liveness, func() error {
		st, err := e.Get(context.Background(), id)
		if err != nil {
			return err
		}
		if len(st.Steps) < seq || st.Steps[seq-1].State != "waiting" {
			return fmt.Errorf("workflow %s does not wait at step %d: %+v", id, seq, st.Steps)
		}
		h = st.Steps[seq-1]
		return nil
	})
	return h
}

// workflowJob returns the job of the workflow queue that is not finished.
func workflowJob(t *testing.T, jc *jobs.Client) *jobs.Row {
	t.Helper()
	rows, err := jc.List(context.Background(), jobs.ListParams{Queue: workflow.Queue, States: []jobs.State{jobs.Available, jobs.Running}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 {
		t.Fatalf("%d unfinished workflow jobs, want 1: %+v", len(rows), rows)
	}
	return rows[0]
}

func TestSleepSurvivesACrashWhereItWas(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s})
		l := newLedger(t, nodes[1]) // the node that lives on
		def := workflow.Def[order]{Name: "nap", Run: sleeper(l, 2*time.Second)}
		if _, err := register(t, nodes[0].Workflows(), def).Start(context.Background(), "n-1", order{}); err != nil {
			t.Fatal(err)
		}
		nap := waiting(t, nodes[0].Workflows(), "n-1", 2)
		if nap.Kind != "sleep" || nap.WakeAt.IsZero() {
			t.Fatalf("the sleep as stored: %+v", nap)
		}
		// Asleep, the workflow holds no worker: its job waits in the queue for the wake-up.
		testnode.EventuallyNil(t, liveness, func() error {
			if j := workflowJob(t, nodes[0].Jobs()); j.State != jobs.Available || j.ScheduledAt.Before(nap.WakeAt) {
				return fmt.Errorf("the sleeping workflow's job is %s, scheduled at %v; want available at %v", j.State, j.ScheduledAt, nap.WakeAt)
			}
			return nil
		})
		twicetest.Crash(t, nodes[0])
		register(t, nodes[1].Workflows(), def)
		st := await(t, nodes[1].Workflows(), "n-1")
		if st.State != workflow.Completed || len(st.Steps) != 3 {
			t.Fatalf("status: %+v", st)
		}
		// The sleep was not started again on the other instance, nor cut short.
		if got := st.Steps[1]; got.State != "completed" || !got.WakeAt.Equal(nap.WakeAt) {
			t.Fatalf("the sleep after the crash: %+v; first stored waking at %v", got, nap.WakeAt)
		}
		if two := st.Steps[2]; two.UpdatedAt.Before(nap.WakeAt) {
			t.Fatalf("step two completed at %v, before the sleep's end %v", two.UpdatedAt, nap.WakeAt)
		}
		equal(t, "executions", l.ran(t, "n-1"), []string{"one", "two"})
	})
}

func TestCancelWakesASleepingWorkflow(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		_, l, e := open1(t, s)
		wf := register(t, e, workflow.Def[order]{Name: "long-nap", Run: sleeper(l, 24*time.Hour)})
		if _, err := wf.Start(ctx, "n-2", order{}); err != nil {
			t.Fatal(err)
		}
		waiting(t, e, "n-2", 2)
		if err := e.Cancel(ctx, "n-2"); err != nil {
			t.Fatal(err)
		}
		// Without the wake the workflow would compensate in a day: await would time out.
		st := await(t, e, "n-2")
		if st.State != workflow.Cancelled || st.Steps[1].State != "waiting" {
			t.Fatalf("status: %+v", st)
		}
		equal(t, "executions", l.ran(t, "n-2"), []string{"one", "undo one-done"})
	})
}

func TestSleepOfNothingGoesOn(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		_, l, e := open1(t, s)
		wf := register(t, e, workflow.Def[order]{Name: "no-nap", Run: func(wc *workflow.Context, in order) error {
			for i := range 3 { // a sleep's name may repeat
				if err := workflow.Sleep(wc, "tick", time.Duration(i)*time.Millisecond); err != nil {
					return err
				}
			}
			_, err := workflow.Do(wc, step(l, "one", false))
			return err
		}})
		if _, err := wf.Start(context.Background(), "n-3", order{}); err != nil {
			t.Fatal(err)
		}
		st := await(t, e, "n-3")
		if st.State != workflow.Completed || len(st.Steps) != 4 || st.Steps[2].Kind != "sleep" || st.Steps[3].Kind != "step" {
			t.Fatalf("status: %+v", st)
		}
		equal(t, "executions", l.ran(t, "n-3"), []string{"one"})
	})
}

func TestSignalsBeforeAndDuringTheWait(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		node, l, e := open1(t, s)
		inOne, release := make(chan struct{}), make(chan struct{})
		wf := register(t, e, workflow.Def[order]{Name: "approve", Run: func(wc *workflow.Context, in order) error {
			one := step(l, "one", false)
			do := one.Do
			one.Do = func(ctx context.Context, key string) (string, error) {
				close(inOne)
				<-release
				return do(ctx, key)
			}
			if _, err := workflow.Do(wc, one); err != nil {
				return err
			}
			for range 2 {
				got, err := workflow.WaitSignal[order](wc, "approval", 24*time.Hour)
				if err != nil {
					return err
				}
				if _, err := workflow.Do(wc, step(l, "got "+got.ID, false)); err != nil {
					return err
				}
			}
			return nil
		}})
		if _, err := wf.Start(ctx, "a-1", order{}); err != nil {
			t.Fatal(err)
		}
		<-inOne
		// A signal rolled back was never sent.
		tx, err := node.Store().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.SignalTx(ctx, tx, "a-1", "approval", order{ID: "rolled back"}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		// Sent before the workflow reaches its wait: kept for it.
		if err := e.Signal(ctx, "a-1", "approval", order{ID: "early"}); err != nil {
			t.Fatal(err)
		}
		close(release)
		// Sent while it waits, holding no worker: it wakes (not in a day).
		waiting(t, e, "a-1", 4)
		if err := e.Signal(ctx, "a-1", "approval", order{ID: "late"}); err != nil {
			t.Fatal(err)
		}
		st := await(t, e, "a-1")
		if st.State != workflow.Completed || st.Steps[1].Kind != "signal" || string(st.Steps[1].Result) != `{"id":"early","amount":0}` {
			t.Fatalf("status: %+v", st)
		}
		equal(t, "executions", l.ran(t, "a-1"), []string{"one", "got early", "got late"})
		if err := e.Signal(ctx, "a-1", "approval", order{}); !errors.Is(err, workflow.ErrFinished) {
			t.Fatalf("signalling a finished workflow: %v", err)
		}
		if err := e.Signal(ctx, "nope", "approval", order{}); !errors.Is(err, workflow.ErrNotFound) {
			t.Fatalf("signalling an unknown workflow: %v", err)
		}
		if err := e.Signal(ctx, "a-1", "", order{}); !errors.Is(err, workflow.ErrInvalid) {
			t.Fatalf("a signal without a name: %v", err)
		}
	})
}

func TestWaitSignalTimesOut(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		_, l, e := open1(t, s)
		wf := register(t, e, workflow.Def[order]{Name: "unanswered", Run: func(wc *workflow.Context, in order) error {
			_, err := workflow.WaitSignal[bool](wc, "approval", 100*time.Millisecond)
			if !errors.Is(err, workflow.ErrTimeout) {
				return fmt.Errorf("want a timeout, got %v", err)
			}
			_, err = workflow.Do(wc, step(l, "refuse", false))
			return err
		}})
		if _, err := wf.Start(ctx, "t-1", order{}); err != nil {
			t.Fatal(err)
		}
		st := await(t, e, "t-1")
		if st.State != workflow.Completed || st.Steps[0].State != "timedout" || st.Steps[0].WakeAt.After(st.Steps[0].UpdatedAt) {
			t.Fatalf("status: %+v", st)
		}
		equal(t, "executions", l.ran(t, "t-1"), []string{"refuse"})
	})
}

// A signal sent while the workflow's job runs (after it first waited) enqueues a successor
// job to wake it; the run going on takes the workflow's job back when it waits again, and
// the spare successor ends without running anything: no job is left behind. (The first
// signal may find the job still recorded running, its suspension not yet committed: that
// successor then carries the workflow on and cancels the suspended job, which is spare.)
func TestSignalWhileRunningLeavesNoSpareJob(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		node, l, e := open1(t, s)
		inHold, release := make(chan struct{}), make(chan struct{})
		wf := register(t, e, workflow.Def[order]{Name: "relay", Run: func(wc *workflow.Context, in order) error {
			for i, name := range []string{"a", "b", "c"} {
				if _, err := workflow.WaitSignal[int](wc, name, 24*time.Hour); err != nil {
					return err
				}
				st := step(l, "after "+name, false)
				if i == 0 {
					do := st.Do
					st.Do = func(ctx context.Context, key string) (string, error) {
						close(inHold)
						<-release
						return do(ctx, key)
					}
				}
				if _, err := workflow.Do(wc, st); err != nil {
					return err
				}
			}
			return nil
		}})
		if _, err := wf.Start(ctx, "r-1", order{}); err != nil {
			t.Fatal(err)
		}
		waiting(t, e, "r-1", 1)
		if err := e.Signal(ctx, "r-1", "a", 1); err != nil {
			t.Fatal(err)
		}
		<-inHold
		if err := e.Signal(ctx, "r-1", "b", 2); err != nil { // the job runs: a successor
			t.Fatal(err)
		}
		close(release)
		waiting(t, e, "r-1", 5)
		testnode.EventuallyNil(t, liveness, func() error {
			rows, err := node.Jobs().List(ctx, jobs.ListParams{Queue: workflow.Queue})
			if err != nil {
				return err
			}
			unfinished := 0
			for _, r := range rows {
				if !r.State.Finished() {
					unfinished++
				}
			}
			if len(rows) < 2 || unfinished != 1 {
				return fmt.Errorf("%d workflow jobs, %d unfinished; want the successors finished and one left", len(rows), unfinished)
			}
			return nil
		})
		if err := e.Signal(ctx, "r-1", "c", 3); err != nil {
			t.Fatal(err)
		}
		if st := await(t, e, "r-1"); st.State != workflow.Completed {
			t.Fatalf("status: %+v", st)
		}
		equal(t, "executions", l.ran(t, "r-1"), []string{"after a", "after b", "after c"})
		// The job that completed the workflow is recorded completed after the workflow is,
		// and a successor a signal enqueued meanwhile ends once it runs.
		testnode.EventuallyNil(t, liveness, func() error {
			rows, err := node.Jobs().List(ctx, jobs.ListParams{Queue: workflow.Queue, States: []jobs.State{jobs.Available, jobs.Running}})
			if err != nil {
				return err
			}
			for _, r := range rows {
				return fmt.Errorf("workflow job %d left %s", r.ID, r.State)
			}
			return nil
		})
	})
}
