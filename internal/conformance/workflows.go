package conformance

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/twicetest"
	"github.com/twicehq/twice/workflow"
)

// exerciseWorkflows checks durable workflows across instances: workflows started on one
// instance run on any that has their definition, each step once, a cancellation asked
// on one instance stops a workflow running on another, with its compensations, a signal
// sent on one instance wakes a workflow waiting on another, and a sleep survives the crash
// of the instance that started it, neither restarted nor skipped.
func exerciseWorkflows(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"RunAnywhereEachStepOnce", workflowsRunAnywhereEachStepOnce},
		{"CancelFromAnotherInstance", workflowsCancelFromAnotherInstance},
		{"SignalFromAnotherInstance", workflowsSignalFromAnotherInstance},
		{"SleepSurvivesACrash", workflowsSleepSurvivesACrash},
	})
}

// ran counts the executions of steps and compensations, by workflow and name.
type ran struct {
	mu sync.Mutex // protects n
	n  map[string]int
}

func (r *ran) add(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[what]++
}

func (r *ran) count(what string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[what]
}

// counted is a step that counts its executions, and its compensation's, in r.
func counted(r *ran, name string, do func(ctx context.Context) error) workflow.Step[string] {
	return workflow.Step[string]{Name: name,
		Do: func(ctx context.Context, key string) (string, error) {
			r.add(key)
			if do != nil {
				if err := do(ctx); err != nil {
					return "", err
				}
			}
			return key, nil
		},
		Compensate: func(ctx context.Context, key, _ string) error {
			r.add("undo " + key)
			return nil
		}}
}

func awaitWorkflow(t *testing.T, n *twice.Node, id string) *workflow.Status {
	t.Helper()
	var st *workflow.Status
	testnode.EventuallyNil(t, time.Minute, func() error {
		var err error
		if st, err = n.Workflows().Get(context.Background(), id); err != nil {
			return err
		}
		if !st.State.Finished() {
			return fmt.Errorf("workflow %s is %s", id, st.State)
		}
		return nil
	})
	return st
}

func workflowsRunAnywhereEachStepOnce(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	r := &ran{n: map[string]int{}}
	var starter *workflow.Workflow[int]
	nodes := make([]*twice.Node, 3)
	for i := range nodes {
		n := backend.node(t, db, svc, testnode.Calm())
		nodes[i] = n
		wf, err := workflow.Register(n.Workflows(), workflow.Def[int]{Name: "three", Run: func(wc *workflow.Context, in int) error {
			for _, name := range []string{"a", "b", "c"} {
				if _, err := workflow.Do(wc, counted(r, name, nil)); err != nil {
					return err
				}
			}
			return nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			starter = wf
		}
	}
	const count = 30
	for i := range count {
		if _, err := starter.Start(ctx, fmt.Sprintf("w-%d", i), i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range count {
		id := fmt.Sprintf("w-%d", i)
		if st := awaitWorkflow(t, nodes[2], id); st.State != workflow.Completed || len(st.Steps) != 3 {
			t.Fatalf("%s: %+v", id, st)
		}
		for _, name := range []string{"a", "b", "c"} {
			if n := r.count(id + "/" + name); n != 1 {
				t.Fatalf("step %s of %s ran %d times", name, id, n)
			}
		}
	}
}

func workflowsCancelFromAnotherInstance(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	r := &ran{n: map[string]int{}}
	runner, other := backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm())
	inTwo, release := make(chan struct{}), make(chan struct{})
	wf, err := workflow.Register(runner.Workflows(), workflow.Def[int]{Name: "held", Run: func(wc *workflow.Context, in int) error {
		if _, err := workflow.Do(wc, counted(r, "one", nil)); err != nil {
			return err
		}
		hold := func(context.Context) error { close(inTwo); <-release; return nil }
		if _, err := workflow.Do(wc, counted(r, "two", hold)); err != nil {
			return err
		}
		_, err := workflow.Do(wc, counted(r, "three", nil))
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wf.Start(ctx, "held-1", 0); err != nil {
		t.Fatal(err)
	}
	<-inTwo
	if err := other.Workflows().Cancel(ctx, "held-1"); err != nil {
		t.Fatal(err)
	}
	close(release)
	st := awaitWorkflow(t, other, "held-1")
	if st.State != workflow.Cancelled {
		t.Fatalf("status: %s %q", st.State, st.Error)
	}
	for what, want := range map[string]int{"held-1/one": 1, "held-1/two": 1, "held-1/three": 0, "undo held-1/two": 1, "undo held-1/one": 1} {
		if n := r.count(what); n != want {
			t.Fatalf("%s ran %d times, want %d", what, n, want)
		}
	}
}

// waitsAt waits until workflow id, read on n, waits at its step seq, and returns that step.
func waitsAt(t *testing.T, n *twice.Node, id string, seq int) workflow.StepRecord {
	t.Helper()
	var h workflow.StepRecord
	testnode.EventuallyNil(t, time.Minute, func() error {
		st, err := n.Workflows().Get(context.Background(), id)
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

// Only the waiting workflow's instance has its definition; the signal, sent on another,
// wakes it when it commits (its wait would otherwise last a day), and is taken once.
func workflowsSignalFromAnotherInstance(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	r := &ran{n: map[string]int{}}
	runner, other := backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm())
	wf, err := workflow.Register(runner.Workflows(), workflow.Def[int]{Name: "approve", Run: func(wc *workflow.Context, in int) error {
		if _, err := workflow.Do(wc, counted(r, "before", nil)); err != nil {
			return err
		}
		who, err := workflow.WaitSignal[string](wc, "approval", 24*time.Hour)
		if err != nil {
			return err
		}
		_, err = workflow.Do(wc, counted(r, "approved by "+who, nil))
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wf.Start(ctx, "ap-1", 0); err != nil {
		t.Fatal(err)
	}
	waitsAt(t, other, "ap-1", 2)
	if err := other.Workflows().Signal(ctx, "ap-1", "approval", "alice"); err != nil {
		t.Fatal(err)
	}
	st := awaitWorkflow(t, other, "ap-1")
	if st.State != workflow.Completed || len(st.Steps) != 3 || string(st.Steps[1].Result) != `"alice"` {
		t.Fatalf("status: %+v", st)
	}
	for _, what := range []string{"ap-1/before", "ap-1/approved by alice"} {
		if n := r.count(what); n != 1 {
			t.Fatalf("%s ran %d times, want 1", what, n)
		}
	}
}

// The instance that started a workflow crashes while the workflow sleeps: a survivor
// runs the rest once the sleep's stored wake-up time has come, not a full sleep later.
func workflowsSleepSurvivesACrash(t *testing.T, backend Backend) {
	ctx := context.Background()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	r := &ran{n: map[string]int{}}
	doomed, survivor := backend.node(t, db, svc, testnode.Calm()), backend.node(t, db, svc, testnode.Calm())
	def := workflow.Def[int]{Name: "nap", Run: func(wc *workflow.Context, in int) error {
		if _, err := workflow.Do(wc, counted(r, "before", nil)); err != nil {
			return err
		}
		if err := workflow.Sleep(wc, "nap", 2*time.Second); err != nil {
			return err
		}
		_, err := workflow.Do(wc, counted(r, "after", nil))
		return err
	}}
	wf, err := workflow.Register(doomed.Workflows(), def)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wf.Start(ctx, "nap-1", 0); err != nil {
		t.Fatal(err)
	}
	nap := waitsAt(t, survivor, "nap-1", 2)
	twicetest.Crash(t, doomed)
	if _, err := workflow.Register(survivor.Workflows(), def); err != nil {
		t.Fatal(err)
	}
	st := awaitWorkflow(t, survivor, "nap-1")
	if st.State != workflow.Completed || len(st.Steps) != 3 {
		t.Fatalf("status: %+v", st)
	}
	if got := st.Steps[1]; got.State != "completed" || !got.WakeAt.Equal(nap.WakeAt) || st.Steps[2].UpdatedAt.Before(nap.WakeAt) {
		t.Fatalf("the sleep, first stored waking at %v, ended as %+v; the step after it completed at %v", nap.WakeAt, got, st.Steps[2].UpdatedAt)
	}
	for _, what := range []string{"nap-1/before", "nap-1/after"} {
		if n := r.count(what); n != 1 {
			t.Fatalf("%s ran %d times, want 1", what, n)
		}
	}
}
