package workflow_test

import (
	"context"
	"errors"
	"testing"

	"github.com/twicehq/twice/twicetest"
	"github.com/twicehq/twice/workflow"
)

// List keeps the states and the definition asked for, newest first, up to the limit, and
// refuses a state or a limit it does not know.
func TestList(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		_, l, e := open1(t, s)
		ok := register(t, e, workflow.Def[order]{Name: "ok", Run: func(wc *workflow.Context, in order) error {
			_, err := workflow.Do(wc, step(l, "one", false))
			return err
		}})
		bad := register(t, e, workflow.Def[order]{Name: "bad", Run: func(wc *workflow.Context, in order) error {
			if _, err := workflow.Do(wc, step(l, "one", false)); err != nil {
				return err
			}
			_, err := workflow.Do(wc, workflow.Step[string]{Name: "fails", Retry: quick, Do: func(context.Context, string) (string, error) {
				return "", workflow.Permanent(errors.New("no"))
			}})
			return err
		}})
		for _, id := range []string{"a", "b"} {
			if _, err := ok.Start(ctx, id, order{}); err != nil {
				t.Fatal(err)
			}
			await(t, e, id)
		}
		if _, err := bad.Start(ctx, "c", order{}); err != nil {
			t.Fatal(err)
		}
		await(t, e, "c")
		ids := func(p workflow.ListParams) []string {
			t.Helper()
			ws, err := e.List(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, w := range ws {
				out = append(out, w.ID)
			}
			return out
		}
		equal(t, "all", ids(workflow.ListParams{}), []string{"c", "b", "a"})
		equal(t, "completed", ids(workflow.ListParams{States: []workflow.State{workflow.Completed}}), []string{"b", "a"})
		equal(t, "compensated", ids(workflow.ListParams{States: []workflow.State{workflow.Compensated}}), []string{"c"})
		equal(t, "by name", ids(workflow.ListParams{Name: "ok", Limit: 1}), []string{"b"})
		if _, err := e.List(ctx, workflow.ListParams{States: []workflow.State{"asleep"}}); !errors.Is(err, workflow.ErrInvalid) {
			t.Errorf("an unknown state: %v", err)
		}
		if _, err := e.List(ctx, workflow.ListParams{Limit: workflow.MaxList + 1}); !errors.Is(err, workflow.ErrInvalid) {
			t.Errorf("a limit over MaxList: %v", err)
		}
	})
}
