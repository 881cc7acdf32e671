package conformance

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/workflow"
)

// exerciseWorkflows checks durable workflows across instances: workflows started on one
// instance run on any that has their definition, each step once, and a cancellation asked
// on one instance stops a workflow running on another, with its compensations.
func exerciseWorkflows(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"RunAnywhereEachStepOnce", workflowsRunAnywhereEachStepOnce},
		{"CancelFromAnotherInstance", workflowsCancelFromAnotherInstance},
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
	db, svc := testdb.New(t, backend.Dialect), uniqueService()
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
	db, svc := testdb.New(t, backend.Dialect), uniqueService()
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
