package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/twicetest"
	"github.com/twicehq/twice/workflow"
)

// liveness bounds every wait: generous, since a loaded machine is slow, and never a
// measure of speed.
const liveness = 60 * time.Second

// quick retries steps without waiting long.
var quick = workflow.Retry{Backoff: func(int) time.Duration { return 10 * time.Millisecond }}

type order struct {
	ID     string `json:"id"`
	Amount int    `json:"amount"`
}

// ledger records every execution of a step or compensation in a table of the test's
// database, in the order they ran (ord, from a counter: every node runs in this process).
type ledger struct {
	s   *store.Store
	ord atomic.Int64
}

func newLedger(t *testing.T, n *twice.Node) *ledger {
	t.Helper()
	_, err := n.Store().Exec(context.Background(),
		`CREATE TABLE wf_exec (workflow TEXT NOT NULL, what TEXT NOT NULL, ord INTEGER NOT NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	return &ledger{s: n.Store()}
}

func (l *ledger) record(ctx context.Context, q store.Querier, workflow, what string) error {
	_, err := q.Exec(ctx, `INSERT INTO wf_exec (workflow, what, ord) VALUES ($1, $2, $3)`, workflow, what, l.ord.Add(1))
	return err
}

// ran returns what ran for workflow, in order.
func (l *ledger) ran(t *testing.T, workflow string) []string {
	t.Helper()
	rows, err := l.s.Query(context.Background(), `SELECT what FROM wf_exec WHERE workflow = $1 ORDER BY ord`, workflow)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var w string
		if err := rows.Scan(&w); err != nil {
			t.Fatal(err)
		}
		out = append(out, w)
	}
	return out
}

// step is a recorded step named name that returns its name and compensates by recording
// "undo name"; fail makes it fail with the attempt number.
func step(l *ledger, name string, fail bool) workflow.Step[string] {
	return workflow.Step[string]{
		Name: name,
		Do: func(ctx context.Context, key string) (string, error) {
			id, _, _ := strings.Cut(key, "/")
			if err := l.record(ctx, l.s, id, name); err != nil {
				return "", err
			}
			if fail {
				return "", fmt.Errorf("%s refused", name)
			}
			return name + "-done", nil
		},
		Compensate: func(ctx context.Context, key string, result string) error {
			id, _, _ := strings.Cut(key, "/")
			return l.record(ctx, l.s, id, "undo "+result)
		},
		Retry: workflow.Retry{Attempts: 2, Backoff: quick.Backoff}, CompensateRetry: quick,
	}
}

// open1 opens one node on s, with a ledger, and returns its workflow engine.
func open1(t *testing.T, s twicetest.Store) (*twice.Node, *ledger, *workflow.Engine) {
	t.Helper()
	node := twicetest.Open(t, 1, &twicetest.Options{Store: s})[0]
	return node, newLedger(t, node), node.Workflows()
}

func register(t *testing.T, e *workflow.Engine, d workflow.Def[order]) *workflow.Workflow[order] {
	t.Helper()
	wf, err := workflow.Register(e, d)
	if err != nil {
		t.Fatal(err)
	}
	return wf
}

// await waits until workflow id has ended and returns it.
func await(t *testing.T, e *workflow.Engine, id string) *workflow.Status {
	t.Helper()
	var st *workflow.Status
	testnode.EventuallyNil(t, liveness, func() error {
		var err error
		if st, err = e.Get(context.Background(), id); err != nil {
			return err
		}
		if !st.State.Finished() {
			return fmt.Errorf("workflow %s is %s", id, st.State)
		}
		return nil
	})
	return st
}

func equal(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

func TestCompletes(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		_, l, e := open1(t, s)
		var keys []string
		wf := register(t, e, workflow.Def[order]{Name: "order", Run: func(wc *workflow.Context, in order) error {
			a, err := workflow.Do(wc, step(l, "reserve", false))
			if err != nil {
				return err
			}
			total, err := workflow.Do(wc, workflow.Step[int]{Name: "charge", Do: func(ctx context.Context, key string) (int, error) {
				keys = append(keys, key)
				return in.Amount * 2, l.record(ctx, l.s, wc.ID(), "charge "+a)
			}})
			if err != nil {
				return err
			}
			_, err = workflow.Do(wc, workflow.Step[string]{Name: "ship", Do: func(ctx context.Context, key string) (string, error) {
				return "", l.record(ctx, l.s, wc.ID(), fmt.Sprintf("ship %d", total))
			}})
			return err
		}})
		if started, err := wf.Start(ctx, "o-1", order{ID: "o-1", Amount: 21}); err != nil || !started {
			t.Fatalf("Start: %v, %v", started, err)
		}
		st := await(t, e, "o-1")
		if st.State != workflow.Completed || st.Name != "order" || st.Version != 1 || string(st.Input) != `{"id":"o-1","amount":21}` {
			t.Fatalf("status: %+v", st)
		}
		equal(t, "executions", l.ran(t, "o-1"), []string{"reserve", "charge reserve-done", "ship 42"})
		var hist []string
		for _, s := range st.Steps {
			hist = append(hist, fmt.Sprintf("%d %s %s %d %s", s.Seq, s.Name, s.State, s.Attempts, s.Result))
		}
		equal(t, "history", hist, []string{`1 reserve completed 1 "reserve-done"`, "2 charge completed 1 42", `3 ship completed 1 ""`})
		equal(t, "idempotency keys", keys, []string{"o-1/charge"})
		if st.FinishedAt.IsZero() {
			t.Fatal("a finished workflow has no finished_at")
		}
	})
}

func TestCompensatesInReverse(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		_, l, e := open1(t, s)
		run := func(badUndo bool) func(*workflow.Context, order) error {
			return func(wc *workflow.Context, in order) error {
				for i, name := range []string{"one", "two", "three", "four"} {
					st := step(l, name, i == 3)
					if badUndo && name == "two" {
						st.CompensateRetry.Attempts = 2
						st.Compensate = func(ctx context.Context, key string, _ string) error {
							return errors.Join(l.record(ctx, l.s, wc.ID(), "undo two fails"), errors.New("the refund API is down"))
						}
					}
					if _, err := workflow.Do(wc, st); err != nil {
						return err
					}
				}
				return nil
			}
		}
		saga := register(t, e, workflow.Def[order]{Name: "saga", Run: run(false)})
		stuck := register(t, e, workflow.Def[order]{Name: "stuck", Run: run(true)})
		if _, err := saga.Start(ctx, "s-1", order{}); err != nil {
			t.Fatal(err)
		}
		if _, err := stuck.Start(ctx, "s-2", order{}); err != nil {
			t.Fatal(err)
		}

		st := await(t, e, "s-1")
		if st.State != workflow.Compensated || !strings.Contains(st.Error, `step "four" failed after 2 attempts: four refused`) {
			t.Fatalf("status: %s %q", st.State, st.Error)
		}
		equal(t, "executions", l.ran(t, "s-1"),
			[]string{"one", "two", "three", "four", "four", "undo three-done", "undo two-done", "undo one-done"})
		var comps []string
		for _, s := range st.Steps {
			comps = append(comps, fmt.Sprintf("%s %s %s %d", s.Name, s.State, s.Compensation, s.Attempts))
		}
		equal(t, "history", comps, []string{"one completed done 1", "two completed done 1", "three completed done 1", "four failed  2"})

		// A compensation that fails on every attempt leaves the workflow to a person, after
		// the others have run.
		st = await(t, e, "s-2")
		if st.State != workflow.Failed || !strings.Contains(st.Error, `compensation of step(s) ["two"] failed`) {
			t.Fatalf("status: %s %q", st.State, st.Error)
		}
		equal(t, "executions", l.ran(t, "s-2"),
			[]string{"one", "two", "three", "four", "four", "undo three-done", "undo two fails", "undo two fails", "undo one-done"})
		if c := st.Steps[1]; c.Compensation != "failed" || c.CompensationAttempts != 2 || c.CompensationError == "" {
			t.Fatalf("step two: %+v", c)
		}
	})
}

func TestStepTxCommitsWithItsCheckpoint(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		node, _, e := open1(t, s)
		if _, err := node.Store().Exec(ctx, `CREATE TABLE wf_stock (sku TEXT NOT NULL, held INTEGER NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		var attempts atomic.Int32
		wf := register(t, e, workflow.Def[order]{Name: "hold", Run: func(wc *workflow.Context, in order) error {
			_, err := workflow.DoTx(wc, workflow.StepTx[int]{Name: "hold", Retry: quick,
				Do: func(ctx context.Context, tx store.Tx, key string) (int, error) {
					if _, err := tx.Exec(ctx, `INSERT INTO wf_stock (sku, held) VALUES ('lamp', $1)`, in.Amount); err != nil {
						return 0, err
					}
					if attempts.Add(1) == 1 {
						return 0, errors.New("the first attempt fails after its write") // rolled back
					}
					return in.Amount, nil
				}})
			return err
		}})
		if _, err := wf.Start(ctx, "h-1", order{Amount: 3}); err != nil {
			t.Fatal(err)
		}
		st := await(t, e, "h-1")
		if st.State != workflow.Completed || st.Steps[0].Attempts != 2 {
			t.Fatalf("status: %+v", st)
		}
		var rows, held int
		if err := node.Store().QueryRow(ctx, `SELECT count(*), sum(held) FROM wf_stock`).Scan(&rows, &held); err != nil {
			t.Fatal(err)
		}
		if rows != 1 || held != 3 {
			t.Fatalf("stock rows %d holding %d, want the one committed attempt's", rows, held)
		}
	})
}

func TestStartTwiceAndInTx(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		node, l, e := open1(t, s)
		wf := register(t, e, workflow.Def[order]{Name: "once", Run: func(wc *workflow.Context, in order) error {
			_, err := workflow.Do(wc, step(l, "only", false))
			return err
		}})
		other := register(t, e, workflow.Def[order]{Name: "other", Run: func(*workflow.Context, order) error { return nil }})
		// Rolled back: the workflow never existed.
		tx, err := node.Store().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if started, err := wf.StartTx(ctx, tx, "w-1", order{}); err != nil || !started {
			t.Fatalf("StartTx: %v, %v", started, err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Get(ctx, "w-1"); !errors.Is(err, workflow.ErrNotFound) {
			t.Fatalf("after a rollback: %v", err)
		}
		// Committed, then started again: a no-op.
		err = node.Store().InTx(ctx, func(tx store.Tx) error {
			_, err := wf.StartTx(ctx, tx, "w-1", order{Amount: 1})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if started, err := wf.Start(ctx, "w-1", order{Amount: 2}); err != nil || started {
			t.Fatalf("second Start: %v, %v", started, err)
		}
		if _, err := other.Start(ctx, "w-1", order{}); !errors.Is(err, workflow.ErrIDTaken) {
			t.Fatalf("an id of another workflow: %v", err)
		}
		st := await(t, e, "w-1")
		if st.State != workflow.Completed || string(st.Input) != `{"id":"","amount":1}` {
			t.Fatalf("status: %+v", st)
		}
		equal(t, "executions", l.ran(t, "w-1"), []string{"only"})
		if _, err := wf.Start(ctx, "", order{}); !errors.Is(err, workflow.ErrInvalid) {
			t.Fatalf("empty id: %v", err)
		}
		if _, err := workflow.Register(e, workflow.Def[order]{Name: "once", Run: func(*workflow.Context, order) error { return nil }}); !errors.Is(err, workflow.ErrInvalid) {
			t.Fatalf("registering a version twice: %v", err)
		}
	})
}

func TestCancelCompensates(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		_, l, e := open1(t, s)
		inTwo, release := make(chan struct{}), make(chan struct{})
		wf := register(t, e, workflow.Def[order]{Name: "cancel", Run: func(wc *workflow.Context, in order) error {
			if _, err := workflow.Do(wc, step(l, "one", false)); err != nil {
				return err
			}
			two := step(l, "two", false)
			do := two.Do
			two.Do = func(ctx context.Context, key string) (string, error) {
				close(inTwo)
				<-release
				return do(context.WithoutCancel(ctx), key) // completes in spite of the cancellation
			}
			if _, err := workflow.Do(wc, two); err != nil {
				return err
			}
			_, err := workflow.Do(wc, step(l, "three", false))
			return err
		}})
		if _, err := wf.Start(ctx, "c-1", order{}); err != nil {
			t.Fatal(err)
		}
		<-inTwo
		if err := e.Cancel(ctx, "c-1"); err != nil {
			t.Fatal(err)
		}
		close(release)
		st := await(t, e, "c-1")
		if st.State != workflow.Cancelled || !st.CancelRequested {
			t.Fatalf("status: %+v", st)
		}
		equal(t, "executions", l.ran(t, "c-1"), []string{"one", "two", "undo two-done", "undo one-done"})
		if err := e.Cancel(ctx, "c-1"); !errors.Is(err, workflow.ErrFinished) {
			t.Fatalf("cancelling a finished workflow: %v", err)
		}
		if again, err := e.Get(ctx, "c-1"); err != nil || !again.CancelRequested || !again.UpdatedAt.Equal(st.UpdatedAt) {
			t.Fatalf("a refused cancellation changed the workflow: %+v, %v", again, err)
		}
		if err := e.Cancel(ctx, "nope"); !errors.Is(err, workflow.ErrNotFound) {
			t.Fatalf("cancelling an unknown workflow: %v", err)
		}
	})
}

// crashMidway starts workflow id of def on nodes[0], whose second step blocks until the
// node crashes, crashes it, and returns once it has.
func crashMidway(t *testing.T, nodes []*twice.Node, l *ledger, id string, register func(*workflow.Engine) *workflow.Workflow[order]) {
	t.Helper()
	wf := register(nodes[0].Workflows())
	if _, err := wf.Start(context.Background(), id, order{}); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, liveness, "the second step runs", func() bool { return len(l.ran(t, id)) == 2 })
	twicetest.Crash(t, nodes[0])
}

// blocking is a run of steps one, two (which blocks on its first execution in this
// process until its context ends) and three.
func blocking(l *ledger, names ...string) func(*workflow.Context, order) error {
	var first atomic.Bool
	first.Store(true)
	return func(wc *workflow.Context, in order) error {
		for i, name := range names {
			st := step(l, name, false)
			if i == 1 {
				do := st.Do
				st.Do = func(ctx context.Context, key string) (string, error) {
					v, err := do(ctx, key)
					if first.CompareAndSwap(true, false) {
						<-ctx.Done()
						return "", ctx.Err()
					}
					return v, err
				}
			}
			if _, err := workflow.Do(wc, st); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestCrashResumesWithoutRerunningCompletedSteps(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s})
		l := newLedger(t, nodes[1]) // the node that lives on
		run := blocking(l, "one", "two", "three")
		def := workflow.Def[order]{Name: "resume", Run: run}
		crashMidway(t, nodes, l, "r-1", func(e *workflow.Engine) *workflow.Workflow[order] { return register(t, e, def) })
		register(t, nodes[1].Workflows(), def) // only now, so that nodes[0] ran the workflow first
		st := await(t, nodes[1].Workflows(), "r-1")
		if st.State != workflow.Completed {
			t.Fatalf("status: %+v", st)
		}
		// Step two had not completed when its node crashed: it runs again; step one does not.
		equal(t, "executions", l.ran(t, "r-1"), []string{"one", "two", "two", "three"})
	})
}

func TestMismatchFailsClearly(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		cases := []struct {
			name  string
			after workflow.Def[order]
			want  string
		}{
			{"renamed step", workflow.Def[order]{Name: "m", Version: 1},
				`workflow "m" m-1 was started with version 1, whose step 1 is "one"; the code of version 1 calls "uno" there`},
			{"version gone", workflow.Def[order]{Name: "m", Version: 2},
				`workflow "m" m-1 was started with version 1, which is no longer registered (versions registered: [2])`},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s})
				l := newLedger(t, nodes[1]) // the node that lives on
				crashMidway(t, nodes, l, "m-1", func(e *workflow.Engine) *workflow.Workflow[order] {
					return register(t, e, workflow.Def[order]{Name: "m", Version: 1, Run: blocking(l, "one", "two", "three")})
				})
				// The code changed while the workflow ran.
				c.after.Run = blocking(l, "uno", "two", "three")
				e := nodes[1].Workflows()
				register(t, e, c.after)
				st := await(t, e, "m-1")
				if st.State != workflow.Failed || !strings.Contains(st.Error, c.want) || !strings.Contains(st.Error, workflow.ErrMismatch.Error()) {
					t.Fatalf("status %s, error %q; want one saying %q", st.State, st.Error, c.want)
				}
				equal(t, "executions", l.ran(t, "m-1"), []string{"one", "two"})
			})
		}
	})
}

func TestCrashWhileCompensatingResumesTheRest(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s})
		l := newLedger(t, nodes[1]) // the node that lives on
		var first atomic.Bool
		first.Store(true)
		def := workflow.Def[order]{Name: "undo", Run: func(wc *workflow.Context, in order) error {
			for i, name := range []string{"one", "two", "three"} {
				st := step(l, name, i == 2)
				if name == "one" {
					undo := st.Compensate
					st.Compensate = func(ctx context.Context, key, result string) error {
						err := undo(ctx, key, result)
						if first.CompareAndSwap(true, false) {
							<-ctx.Done() // the node crashes here
							return ctx.Err()
						}
						return err
					}
				}
				if _, err := workflow.Do(wc, st); err != nil {
					return err
				}
			}
			return nil
		}}
		if _, err := register(t, nodes[0].Workflows(), def).Start(context.Background(), "u-1", order{}); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, liveness, "the first compensation runs", func() bool { return len(l.ran(t, "u-1")) == 6 })
		twicetest.Crash(t, nodes[0])
		register(t, nodes[1].Workflows(), def)
		st := await(t, nodes[1].Workflows(), "u-1")
		if st.State != workflow.Compensated {
			t.Fatalf("status: %s %q", st.State, st.Error)
		}
		// Step two's compensation completed before the crash: it does not run again.
		equal(t, "executions", l.ran(t, "u-1"),
			[]string{"one", "two", "three", "three", "undo two-done", "undo one-done", "undo one-done"})
	})
}

func TestBadDefinitions(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		_, l, e := open1(t, s)
		run := func(*workflow.Context, order) error { return nil }
		for _, d := range []workflow.Def[order]{{Name: "", Run: run}, {Name: "x", Version: -1, Run: run}, {Name: "x"}, {Name: "a\nb", Run: run}} {
			if _, err := workflow.Register(e, d); !errors.Is(err, workflow.ErrInvalid) {
				t.Fatalf("Register(%+v): %v", d, err)
			}
		}
		// A step name used twice would give two steps one idempotency key: the workflow
		// fails, saying so, after the first has run.
		wf := register(t, e, workflow.Def[order]{Name: "twice", Run: func(wc *workflow.Context, in order) error {
			if _, err := workflow.Do(wc, step(l, "a", false)); err != nil {
				return err
			}
			_, err := workflow.Do(wc, step(l, "a", false))
			return err
		}})
		if _, err := wf.Start(context.Background(), "d-1", order{}); err != nil {
			t.Fatal(err)
		}
		st := await(t, e, "d-1")
		if st.State != workflow.Failed || !strings.Contains(st.Error, `calls step "a" twice (steps 1 and 2)`) {
			t.Fatalf("status: %s %q", st.State, st.Error)
		}
		equal(t, "executions", l.ran(t, "d-1"), []string{"a"})
	})
}

func TestCancelInterruptsARunningStep(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s})
		l := newLedger(t, nodes[0])
		wf := register(t, nodes[0].Workflows(), workflow.Def[order]{Name: "long", Run: func(wc *workflow.Context, in order) error {
			if _, err := workflow.Do(wc, step(l, "one", false)); err != nil {
				return err
			}
			two := step(l, "two", false)
			do := two.Do
			two.Do = func(ctx context.Context, key string) (string, error) {
				if _, err := do(ctx, key); err != nil {
					return "", err
				}
				<-ctx.Done() // a step that would run for ever but for the cancellation
				return "", ctx.Err()
			}
			_, err := workflow.Do(wc, two)
			return err
		}})
		if _, err := wf.Start(ctx, "l-1", order{}); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, liveness, "step two runs", func() bool { return len(l.ran(t, "l-1")) == 2 })
		if err := nodes[1].Workflows().Cancel(ctx, "l-1"); err != nil { // from another instance
			t.Fatal(err)
		}
		st := await(t, nodes[0].Workflows(), "l-1")
		if st.State != workflow.Cancelled || len(st.Steps) != 1 {
			t.Fatalf("status: %+v", st)
		}
		// Step two was interrupted, not completed: only step one is compensated.
		equal(t, "executions", l.ran(t, "l-1"), []string{"one", "two", "undo one-done"})
	})
}
