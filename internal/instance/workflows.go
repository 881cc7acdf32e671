package instance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

// The step flow is the workflow of the workflow crash test and of the checker: five steps
// that write to the database ([workflow.DoTx]), each recording its run in FlowStepsTable in
// the step's own transaction, so that a step run twice shows as two rows. A flow started to
// fail has its fourth step fail on every attempt: it must end compensated, its steps 3, 2
// and 1 undone in that order.
const (
	StepFlowName  = "step-flow"
	StepFlowSteps = 5
	// StepFlowFailing is the step that fails on every attempt when the input says Fail.
	StepFlowFailing = 4
	// StepFlowAttempts is how many times a step is tried before it fails for good.
	StepFlowAttempts = 2
)

// StepFlowInput is a step flow's input.
type StepFlowInput struct {
	// Fail makes step StepFlowFailing fail on every attempt.
	Fail bool `json:"fail,omitempty"`
}

// errStepFlowFails is the error of the failing step.
var errStepFlowFails = errors.New("this step always fails")

// StepFlow registers the step flow on e, whose service is service, and returns its handle.
// Each step records its run (with instanceID) in the step's transaction and returns the
// row's id, which the history keeps as its result. A compensation records itself in
// FlowCompensationsTable keyed by its workflow and step, so one that runs again (they run at
// least once: a run killed after the compensation and before its end was stored repeats
// it) records nothing new, and the table's ids keep the order they first ran in. pause,
// jittered by half either way, is slept before each step, so that faults land in the
// middle of workflows; report, if not nil, hears of every compensation run before it
// records, by the step's idempotency key (workflow id "/" step name).
func StepFlow(e *workflow.Engine, s *store.Store, service, instanceID string, pause time.Duration,
	report func(key string)) (*workflow.Workflow[StepFlowInput], error) {
	record := "INSERT INTO " + FlowStepsTable + " (service, workflow_id, step, instance, at) VALUES ($1, $2, $3, $4, $5) RETURNING id"
	compensated := "INSERT INTO " + FlowCompensationsTable + " (service, workflow_id, step, instance) VALUES ($1, $2, $3, $4) " +
		"ON CONFLICT (service, workflow_id, step) DO NOTHING"
	retry := workflow.Retry{Attempts: StepFlowAttempts, Backoff: func(int) time.Duration { return 10 * time.Millisecond }}
	return workflow.Register(e, workflow.Def[StepFlowInput]{Name: StepFlowName, Run: func(wc *workflow.Context, in StepFlowInput) error {
		for step := 1; step <= StepFlowSteps; step++ {
			if pause > 0 && !loop.Sleep(wc, pause/2+rand.N(pause)) {
				return context.Cause(wc)
			}
			_, err := workflow.DoTx(wc, workflow.StepTx[int64]{Name: "step-" + strconv.Itoa(step), Retry: retry,
				Do: func(ctx context.Context, tx store.Tx, _ string) (int64, error) {
					if in.Fail && step == StepFlowFailing {
						return 0, errStepFlowFails
					}
					var id int64
					err := tx.QueryRow(ctx, record, service, wc.ID(), step, instanceID, time.Now().UnixNano()).Scan(&id)
					return id, err
				},
				Compensate: func(ctx context.Context, key string, _ int64) error {
					if report != nil {
						report(key)
					}
					_, err := s.Exec(ctx, compensated, service, wc.ID(), step, instanceID)
					return err
				}})
			if err != nil {
				return err
			}
		}
		return nil
	}})
}

// StartStepFlow starts the step flow id of flow (of service) in tx, and records the start
// in FlowStartsTable in the same transaction: the flows [CheckStepFlows] judges are those
// whose start committed.
func StartStepFlow(ctx context.Context, tx store.Tx, flow *workflow.Workflow[StepFlowInput], service, id string, in StepFlowInput) error {
	if _, err := flow.StartTx(ctx, tx, id, in); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, "INSERT INTO "+FlowStartsTable+" (service, workflow_id) VALUES ($1, $2)", service, id)
	return err
}

// Workflows is the workload "workflows": the instance runs the step flows that the crash
// test starts, reporting every compensation run as a "compensation" event (Key: the step's
// idempotency key).
type Workflows struct {
	// Concurrency is the workflow queue's concurrency on the instance. Defaults to 10.
	Concurrency int `json:"concurrency,omitempty"`
	// Pause is the step flow's pause before each step (see [StepFlow]).
	Pause time.Duration `json:"pause,omitempty"`
}

// Name implements Workload.
func (Workflows) Name() string { return "workflows" }

func (w Workflows) configure(cfg *twice.Config) {
	if w.Concurrency == 0 {
		w.Concurrency = 10
	}
	cfg.Jobs.Queues = append(cfg.Jobs.Queues, jobs.QueueConfig{Name: workflow.Queue, Concurrency: w.Concurrency})
}

func (w Workflows) start(_ context.Context, in *env) (func(), error) {
	node := in.node
	_, err := StepFlow(node.Workflows(), node.Store(), node.Service(), node.ID(), w.Pause, func(key string) {
		in.emit(Event{Event: "compensation", Key: key})
	})
	return func() {}, err
}

// CheckStepFlows judges every step flow of service whose start was recorded
// ([StartStepFlow]), reading their histories through e:
//   - each ended, as its input says: completed, or compensated when it was to fail;
//   - each step that completed ran exactly once (one row in FlowStepsTable, whose id is the
//     result its history stores: the effect committed with the checkpoint), and no step
//     after a failed one ran;
//   - a compensated flow's failing step failed after its StepFlowAttempts attempts, and its
//     steps 3, 2, 1 were compensated, each recorded once, in that order; a completed flow
//     has no compensation.
//
// It returns how many flows it judged and one line per problem found.
func CheckStepFlows(ctx context.Context, s *store.Store, e *workflow.Engine, service string) (flows int, problems []string, err error) {
	runs := map[string]map[int][]int64{}
	err = scanRows(ctx, s, "SELECT workflow_id, step, id FROM "+FlowStepsTable+" WHERE service = $1", service, func(scan func(...any) error) error {
		var wf string
		var step int
		var id int64
		if err := scan(&wf, &step, &id); err != nil {
			return err
		}
		if runs[wf] == nil {
			runs[wf] = map[int][]int64{}
		}
		runs[wf][step] = append(runs[wf][step], id)
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	comps := map[string][]int{}
	err = scanRows(ctx, s, "SELECT workflow_id, step FROM "+FlowCompensationsTable+" WHERE service = $1 ORDER BY id", service, func(scan func(...any) error) error {
		var wf string
		var step int
		if err := scan(&wf, &step); err != nil {
			return err
		}
		comps[wf] = append(comps[wf], step)
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	var ids []string
	err = scanRows(ctx, s, "SELECT workflow_id FROM "+FlowStartsTable+" WHERE service = $1 ORDER BY workflow_id", service, func(scan func(...any) error) error {
		var id string
		err := scan(&id)
		ids = append(ids, id)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	for _, id := range ids {
		st, err := e.Get(ctx, id)
		if errors.Is(err, workflow.ErrNotFound) {
			problems = append(problems, fmt.Sprintf("workflow %s was started but does not exist", id))
			continue
		}
		if err != nil {
			return 0, nil, err
		}
		problems = append(problems, judgeStepFlow(st, runs[id], comps[id])...)
	}
	return len(ids), problems, nil
}

// judgeStepFlow returns the problems of one step flow (see [CheckStepFlows]), given the
// runs of its steps by step and its compensations in the order they first ran. A flow that
// did not end, or ended in the wrong state, has that one problem.
func judgeStepFlow(st *workflow.Status, runs map[int][]int64, comps []int) []string {
	var in StepFlowInput
	if err := json.Unmarshal(st.Input, &in); err != nil {
		return []string{fmt.Sprintf("workflow %s: input %s: %v", st.ID, st.Input, err)}
	}
	want, completed := workflow.Completed, StepFlowSteps
	if in.Fail {
		want, completed = workflow.Compensated, StepFlowFailing-1
	}
	switch {
	case !st.State.Finished():
		return []string{fmt.Sprintf("workflow %s did not end: it is %s", st.ID, st.State)}
	case st.State != want:
		return []string{fmt.Sprintf("workflow %s ended %s, want %s (%s)", st.ID, st.State, want, st.Error)}
	}
	var out []string
	for step := 1; step <= StepFlowSteps; step++ {
		rs, once := runs[step], step <= completed
		switch {
		case once && len(rs) != 1 || !once && len(rs) != 0:
			out = append(out, fmt.Sprintf("workflow %s: step %d ran %d times (completed: %v)", st.ID, step, len(rs), once))
		case once && (len(st.Steps) < step || st.Steps[step-1].State != "completed" || string(st.Steps[step-1].Result) != strconv.FormatInt(rs[0], 10)):
			out = append(out, fmt.Sprintf("workflow %s: step %d's history does not hold its run's id %d as completed", st.ID, step, rs[0]))
		}
	}
	wantComps, steps := []int{}, StepFlowSteps
	if in.Fail {
		wantComps, steps = []int{3, 2, 1}, StepFlowFailing
		if len(st.Steps) >= StepFlowFailing {
			if h := st.Steps[StepFlowFailing-1]; h.State != "failed" || h.Attempts != StepFlowAttempts {
				out = append(out, fmt.Sprintf("workflow %s: step %d is %s after %d attempts, want failed after %d", st.ID, h.Seq, h.State, h.Attempts, StepFlowAttempts))
			}
		}
		for _, h := range st.Steps[:min(completed, len(st.Steps))] {
			if h.Compensation != "done" {
				out = append(out, fmt.Sprintf("workflow %s: step %d's compensation is %q, want done", st.ID, h.Seq, h.Compensation))
			}
		}
	}
	if len(st.Steps) != steps {
		out = append(out, fmt.Sprintf("workflow %s: %d steps in its history, want %d", st.ID, len(st.Steps), steps))
	}
	if fmt.Sprint(comps) != fmt.Sprint(wantComps) {
		out = append(out, fmt.Sprintf("workflow %s: compensations recorded for steps %v, want %v in that order", st.ID, comps, wantComps))
	}
	return out
}

// scanRows runs q with the one argument arg on s's reader and calls each with every row's
// Scan.
func scanRows(ctx context.Context, s *store.Store, q string, arg any, each func(scan func(...any) error) error) error {
	rows, err := s.Reader().Query(ctx, q, arg)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}
