package instance

import (
	"context"
	"fmt"
	"time"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// CheckWorkflows is the workload "check-workflows" (see [CheckWorkloads]): every instance
// starts step flows ([StepFlow]), one in five to fail at its fourth step, recording each
// start in its transaction, and runs them.
type CheckWorkflows struct{}

// Name implements Workload.
func (CheckWorkflows) Name() string { return "check-workflows" }

// checkFlowPause is the pause before each step of the checker's step flows: a flow lasts a
// quarter of a second or so, long enough for faults to catch flows in the middle.
const checkFlowPause = 40 * time.Millisecond

func (CheckWorkflows) start(ctx context.Context, in *env) (func(), error) {
	node := in.node
	s := node.Store()
	flow, err := StepFlow(node.Workflows(), s, node.Service(), node.ID(), checkFlowPause, nil)
	if err != nil {
		return nil, err
	}
	l := newLoops(ctx)
	starting := in.writing
	l.wg.Go(func() {
		for i := 0; starting.Err() == nil; i++ {
			// A start that fails is not tried again: the checker judges the flows whose start
			// committed, which FlowStartsTable lists.
			_ = s.InTx(starting, func(tx store.Tx) error {
				return StartStepFlow(starting, tx, flow, node.Service(), fmt.Sprintf("%s-%d", node.ID(), i), StepFlowInput{Fail: i%5 == 4})
			})
			loop.Sleep(starting, 5*opPeriod)
		}
	})
	return l.stop, nil
}
