package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/twicetest"
	"github.com/twicehq/twice/workflow"
)

// barrier is a step body that returns only once n steps have entered it (or its context
// ends): steps run one after the other never get past it.
type barrier struct {
	mu      sync.Mutex
	entered int
	all     chan struct{}
	n       int
}

func newBarrier(n int) *barrier { return &barrier{n: n, all: make(chan struct{})} }

func (b *barrier) wait(ctx context.Context) error {
	b.mu.Lock()
	if b.entered++; b.entered == b.n {
		close(b.all)
	}
	b.mu.Unlock()
	select {
	case <-b.all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fan returns n recorded steps named prefix/i whose result is i*10, each passing b
// first when b is not nil.
func fan(l *ledger, prefix string, n int, b *barrier) []workflow.Step[int] {
	var steps []workflow.Step[int]
	for i := range n {
		name := fmt.Sprintf("%s/%d", prefix, i)
		st := step(l, name, false)
		steps = append(steps, workflow.Step[int]{Name: name, Retry: st.Retry, CompensateRetry: st.CompensateRetry,
			Do: func(ctx context.Context, key string) (int, error) {
				if b != nil {
					if err := b.wait(ctx); err != nil {
						return 0, err
					}
				}
				_, err := st.Do(ctx, key)
				return i * 10, err
			},
			Compensate: func(ctx context.Context, key string, r int) error { return st.Compensate(ctx, key, name+"-done") },
		})
	}
	return steps
}

func TestDoAllFansOutAndAggregates(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		_, l, e := open1(t, s)
		var sum atomic.Int64
		wf := register(t, e, workflow.Def[order]{Name: "fan", Run: func(wc *workflow.Context, in order) error {
			if _, err := workflow.Do(wc, step(l, "prepare", false)); err != nil {
				return err
			}
			// Five steps that each wait for all five: they only complete if they run at once.
			prices, err := workflow.DoAll(wc, fan(l, "price", 5, newBarrier(5))...)
			if err != nil {
				return err
			}
			if !slices.Equal(prices, []int{0, 10, 20, 30, 40}) {
				return workflow.Permanent(fmt.Errorf("results %v out of order", prices))
			}
			total, err := workflow.Do(wc, workflow.Step[int]{Name: "sum", Do: func(context.Context, string) (int, error) {
				n := 0
				for _, p := range prices {
					n += p
				}
				return n, nil
			}})
			sum.Store(int64(total))
			return err
		}})
		if _, err := wf.Start(context.Background(), "f-1", order{}); err != nil {
			t.Fatal(err)
		}
		st := await(t, e, "f-1")
		if st.State != workflow.Completed || sum.Load() != 100 {
			t.Fatalf("sum %d, status %+v", sum.Load(), st)
		}
		var names []string
		for i, h := range st.Steps {
			if h.Seq != i+1 || h.State != "completed" {
				t.Fatalf("step %d: %+v", i+1, h)
			}
			names = append(names, h.Name)
		}
		equal(t, "history", names, []string{"prepare", "price/0", "price/1", "price/2", "price/3", "price/4", "sum"})
		ran := l.ran(t, "f-1")
		slices.Sort(ran[1:6])
		equal(t, "executions", ran, []string{"prepare", "price/0", "price/1", "price/2", "price/3", "price/4"})
	})
}

func TestDoAllRunsAtMostStepConcurrency(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		cfg := twice.Config{Workflows: workflow.Config{StepConcurrency: 2}}
		node := twicetest.Open(t, 1, &twicetest.Options{Store: s, Config: cfg})[0]
		var running, most atomic.Int64
		var steps []workflow.Step[int]
		for i := range 6 {
			steps = append(steps, workflow.Step[int]{Name: fmt.Sprint(i), Do: func(ctx context.Context, _ string) (int, error) {
				n := running.Add(1)
				defer running.Add(-1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				// Long enough for six steps let run at once to be seen at once; a bound on
				// nothing.
				time.Sleep(20 * time.Millisecond)
				return i, nil
			}})
		}
		wf := register(t, node.Workflows(), workflow.Def[order]{Name: "bounded", Run: func(wc *workflow.Context, in order) error {
			_, err := workflow.DoAll(wc, steps...)
			return err
		}})
		if _, err := wf.Start(context.Background(), "b-1", order{}); err != nil {
			t.Fatal(err)
		}
		if st := await(t, node.Workflows(), "b-1"); st.State != workflow.Completed || len(st.Steps) != 6 {
			t.Fatalf("status: %+v", st)
		}
		if m := most.Load(); m > 2 {
			t.Fatalf("%d steps ran at once; StepConcurrency is 2", m)
		}
	})
}

// A step of a fan-out that fails for good lets the others finish; the workflow's function
// gets the failure, and the completed steps are compensated, the last place first.
func TestDoAllFailureCompensatesTheCompleted(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		_, l, e := open1(t, s)
		var got atomic.Value
		wf := register(t, e, workflow.Def[order]{Name: "fan-fail", Run: func(wc *workflow.Context, in order) error {
			if _, err := workflow.Do(wc, step(l, "prepare", false)); err != nil {
				return err
			}
			_, err := workflow.DoAll(wc, step(l, "a", false), step(l, "b", true), step(l, "c", false))
			got.Store(fmt.Sprint(err))
			var se *workflow.StepError
			if !errors.As(err, &se) || se.Step != "b" {
				return workflow.Permanent(fmt.Errorf("want b's StepError, got %v", err))
			}
			return err
		}})
		if _, err := wf.Start(context.Background(), "ff-1", order{}); err != nil {
			t.Fatal(err)
		}
		st := await(t, e, "ff-1")
		if st.State != workflow.Compensated {
			t.Fatalf("status %+v; DoAll returned %v", st, got.Load())
		}
		ran := l.ran(t, "ff-1")
		// prepare, then a, b, b (two attempts) and c in any order, then the undos by place.
		first := slices.Clone(ran[1:5])
		slices.Sort(first)
		equal(t, "fan-out", first, []string{"a", "b", "b", "c"})
		equal(t, "compensations", ran[5:], []string{"undo c-done", "undo a-done", "undo prepare-done"})
	})
}

// A crash in the middle of a fan-out: the resumed run on another node returns the results
// of the steps that completed (the history has a gap where the unfinished one was) and
// runs only the unfinished one again.
func TestDoAllCrashRunsOnlyTheUnfinished(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s})
		l := newLedger(t, nodes[1])
		var first atomic.Bool
		first.Store(true)
		def := workflow.Def[order]{Name: "fan-crash", Run: func(wc *workflow.Context, in order) error {
			steps := []workflow.Step[string]{step(l, "a", false), step(l, "b", false), step(l, "c", false)}
			do := steps[1].Do
			steps[1].Do = func(ctx context.Context, key string) (string, error) {
				v, err := do(ctx, key)
				if first.CompareAndSwap(true, false) {
					<-ctx.Done() // the node crashes here
					return "", ctx.Err()
				}
				return v, err
			}
			got, err := workflow.DoAll(wc, steps...)
			if err != nil {
				return err
			}
			_, err = workflow.Do(wc, step(l, "after "+got[0]+" "+got[1]+" "+got[2], false))
			return err
		}}
		wf := register(t, nodes[0].Workflows(), def)
		if _, err := wf.Start(context.Background(), "fc-1", order{}); err != nil {
			t.Fatal(err)
		}
		testnode.EventuallyNil(t, liveness, func() error {
			st, err := nodes[1].Workflows().Get(context.Background(), "fc-1")
			if err != nil {
				return err
			}
			if n := len(l.ran(t, "fc-1")); n != 3 || len(st.Steps) != 2 {
				return fmt.Errorf("%d executions and %d steps stored; want a and c stored and b running", n, len(st.Steps))
			}
			return nil
		})
		twicetest.Crash(t, nodes[0])
		register(t, nodes[1].Workflows(), def)
		st := await(t, nodes[1].Workflows(), "fc-1")
		if st.State != workflow.Completed {
			t.Fatalf("status: %+v", st)
		}
		ran := l.ran(t, "fc-1")
		head := slices.Clone(ran[:3])
		slices.Sort(head)
		equal(t, "before the crash", head, []string{"a", "b", "c"})
		equal(t, "after the crash", ran[3:], []string{"b", "after a-done b-done c-done"})
	})
}

// Cancelling a workflow in the middle of a fan-out interrupts every step of it still
// running, wherever the cancellation is asked; the steps that completed are compensated.
func TestDoAllCancelInterruptsEveryRunningStep(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		nodes := twicetest.Open(t, 2, &twicetest.Options{Store: s})
		l := newLedger(t, nodes[0])
		forever := func(name string) workflow.Step[string] {
			st := step(l, name, false)
			do := st.Do
			st.Do = func(ctx context.Context, key string) (string, error) {
				if _, err := do(ctx, key); err != nil {
					return "", err
				}
				<-ctx.Done() // would run for ever but for the cancellation
				return "", ctx.Err()
			}
			return st
		}
		wf := register(t, nodes[0].Workflows(), workflow.Def[order]{Name: "fan-cancel", Run: func(wc *workflow.Context, in order) error {
			_, err := workflow.DoAll(wc, forever("a"), step(l, "b", false), forever("c"))
			return err
		}})
		if _, err := wf.Start(ctx, "fx-1", order{}); err != nil {
			t.Fatal(err)
		}
		testnode.EventuallyNil(t, liveness, func() error {
			st, err := nodes[0].Workflows().Get(ctx, "fx-1")
			if err != nil {
				return err
			}
			if n := len(l.ran(t, "fx-1")); n != 3 || len(st.Steps) != 1 {
				return fmt.Errorf("%d executions, %d steps stored; want a and c running and b completed", n, len(st.Steps))
			}
			return nil
		})
		if err := nodes[1].Workflows().Cancel(ctx, "fx-1"); err != nil {
			t.Fatal(err)
		}
		st := await(t, nodes[0].Workflows(), "fx-1")
		if st.State != workflow.Cancelled || len(st.Steps) != 1 || st.Steps[0].Name != "b" {
			t.Fatalf("status: %+v", st)
		}
		ran := l.ran(t, "fx-1")
		head := slices.Clone(ran[:3])
		slices.Sort(head)
		equal(t, "fan-out", head, []string{"a", "b", "c"})
		equal(t, "compensations", ran[3:], []string{"undo b-done"})
	})
}
