package instance

import (
	"context"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

// WorkflowBench is the workload "workflow-bench": the instance runs the workflows of
// `twice bench workflows` ([RegisterBenchFlows]) and prints a "step" event, with the
// step's idempotency key (workflow id, "/", step name) as its Key, whenever a step of
// [BenchFlows].Hold starts.
type WorkflowBench struct {
	// Hold is how long the step "hold" of BenchFlows.Hold sleeps.
	Hold time.Duration `json:"hold,omitempty"`
	// Concurrency is the workflows' queue's concurrency on the instance: how many
	// workflows it runs at once, and fetches at most in one statement. Defaults to the
	// jobs default.
	Concurrency int `json:"concurrency,omitempty"`
}

// Name implements Workload.
func (WorkflowBench) Name() string { return "workflow-bench" }

func (w WorkflowBench) configure(cfg *twice.Config) {
	if w.Concurrency > 0 {
		cfg.Jobs.Queues = append(cfg.Jobs.Queues, jobs.QueueConfig{Name: workflow.Queue, Concurrency: w.Concurrency})
	}
}

func (w WorkflowBench) start(_ context.Context, in *env) (func(), error) {
	_, err := RegisterBenchFlows(in.node.Workflows(), w.Hold, func(key string) {
		in.emit(Event{Event: "step", Key: key})
	})
	return func() {}, err
}

// BenchFlows are the workflows of `twice bench workflows`, each of an int.
type BenchFlows struct {
	// Three is three cheap steps ([workflow.Do]), each adding one to the last's result.
	Three *workflow.Workflow[int]
	// ThreeTx is Three with [workflow.DoTx] steps: each step's checkpoint commits in a
	// transaction of its own, which the step writes nothing else to.
	ThreeTx *workflow.Workflow[int]
	// Hold is a step "before", a step "hold" that sleeps for the hold given to
	// [RegisterBenchFlows] (so that an instance can be killed while it runs), and a step
	// "after".
	Hold *workflow.Workflow[int]
}

// Names of the workflows in [BenchFlows].
const (
	BenchThree   = "bench-three"
	BenchThreeTx = "bench-three-tx"
	BenchHold    = "bench-hold"
)

// RegisterBenchFlows registers the workflows of [BenchFlows] on e. started, if not nil, is
// called with the idempotency key of every step of Hold as the step starts. The benchmark
// itself registers them too, only to start them: its engine's job queue does not run.
func RegisterBenchFlows(e *workflow.Engine, hold time.Duration, started func(key string)) (BenchFlows, error) {
	var f BenchFlows
	var err error
	f.Three, err = workflow.Register(e, workflow.Def[int]{Name: BenchThree, Run: func(wc *workflow.Context, n int) error {
		for _, name := range []string{"one", "two", "three"} {
			var err error
			if n, err = workflow.Do(wc, workflow.Step[int]{Name: name,
				Do: func(context.Context, string) (int, error) { return n + 1, nil }}); err != nil {
				return err
			}
		}
		return nil
	}})
	if err != nil {
		return f, err
	}
	f.ThreeTx, err = workflow.Register(e, workflow.Def[int]{Name: BenchThreeTx, Run: func(wc *workflow.Context, n int) error {
		for _, name := range []string{"one", "two", "three"} {
			var err error
			if n, err = workflow.DoTx(wc, workflow.StepTx[int]{Name: name,
				Do: func(context.Context, store.Tx, string) (int, error) { return n + 1, nil }}); err != nil {
				return err
			}
		}
		return nil
	}})
	if err != nil {
		return f, err
	}
	if started == nil {
		started = func(string) {}
	}
	f.Hold, err = workflow.Register(e, workflow.Def[int]{Name: BenchHold, Run: func(wc *workflow.Context, n int) error {
		for _, name := range []string{"before", "hold", "after"} {
			if _, err := workflow.Do(wc, workflow.Step[int]{Name: name, Do: func(ctx context.Context, key string) (int, error) {
				started(key)
				if name != "hold" {
					return n, nil
				}
				select {
				case <-ctx.Done():
					return 0, ctx.Err()
				case <-time.After(hold):
					return n, nil
				}
			}}); err != nil {
				return err
			}
		}
		return nil
	}})
	return f, err
}
