package workflow_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/twicetest"
	"github.com/twicehq/twice/workflow"
)

// Prune deletes, with their steps and signals, the workflows that ended completed, compensated or
// cancelled longer ago than the retention; one that failed (a person must look) and one
// still running stay.
func TestPrune(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		cfg := twice.Config{Workflows: workflow.Config{Retention: 100 * time.Millisecond}}
		n := twicetest.Open(t, 1, &twicetest.Options{Store: s, Config: cfg})[0]
		l, e := newLedger(t, n), n.Workflows()
		release := make(chan struct{})
		defer close(release)
		wf := register(t, e, workflow.Def[order]{Name: "prune", Run: func(wc *workflow.Context, in order) error {
			if _, err := workflow.Do(wc, step(l, "one", false)); err != nil {
				return err
			}
			switch in.ID {
			case "compensated":
				_, err := workflow.Do(wc, step(l, "two", true))
				return err
			case "failed":
				two := step(l, "two", false)
				two.Compensate = func(context.Context, string, string) error { return errors.New("cannot undo") }
				if _, err := workflow.Do(wc, two); err != nil {
					return err
				}
				_, err := workflow.Do(wc, step(l, "three", true))
				return err
			case "running":
				_, err := workflow.Do(wc, workflow.Step[string]{Name: "wait", Do: func(ctx context.Context, _ string) (string, error) {
					<-release
					return "", nil
				}})
				return err
			}
			return nil
		}})
		for _, id := range []string{"completed", "compensated", "failed", "running"} {
			err := n.Store().InTx(ctx, func(tx store.Tx) error {
				if _, err := wf.StartTx(ctx, tx, id, order{ID: id}); err != nil {
					return err
				}
				return e.SignalTx(ctx, tx, id, "never-waited-for", id) // kept until the workflow goes
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		for id, want := range map[string]workflow.State{"completed": workflow.Completed, "compensated": workflow.Compensated, "failed": workflow.Failed} {
			if st := await(t, e, id); st.State != want {
				t.Fatalf("%s ended %s", id, st.State)
			}
		}
		testnode.EventuallyNil(t, liveness, func() error {
			if _, err := e.Prune(ctx); err != nil {
				return err
			}
			for _, id := range []string{"completed", "compensated"} {
				if _, err := e.Get(ctx, id); !errors.Is(err, workflow.ErrNotFound) {
					return errors.New(id + " is still there")
				}
			}
			return nil
		})
		for _, id := range []string{"failed", "running"} {
			if st, err := e.Get(ctx, id); err != nil || len(st.Steps) == 0 {
				t.Errorf("%s after pruning: %+v, %v", id, st, err)
			}
		}
		var left int
		if err := n.Store().QueryRow(ctx, `SELECT count(*) FROM twice_workflow_steps WHERE workflow_id IN ('completed', 'compensated')`).Scan(&left); err != nil || left != 0 {
			t.Errorf("steps of pruned workflows left: %d (%v)", left, err)
		}
		if err := n.Store().QueryRow(ctx, `SELECT count(*) FROM twice_workflow_signals WHERE workflow_id IN ('completed', 'compensated')`).Scan(&left); err != nil || left != 0 {
			t.Errorf("signals of pruned workflows left: %d (%v)", left, err)
		}
		if err := n.Store().QueryRow(ctx, `SELECT count(*) FROM twice_workflow_signals WHERE workflow_id IN ('failed', 'running')`).Scan(&left); err != nil || left != 2 {
			t.Errorf("signals of kept workflows: %d (%v), want 2", left, err)
		}
	})
}
