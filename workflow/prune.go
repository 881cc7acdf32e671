package workflow

import (
	"context"
	"fmt"
	"time"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// DefaultRetention is [Config.Retention]'s default.
const DefaultRetention = 7 * 24 * time.Hour

// PruneInterval is how often the leader deletes the workflows past [Config.Retention].
const PruneInterval = 10 * time.Minute

// pruneBatch is how many workflows one transaction of [Engine.Prune] deletes.
const pruneBatch = 1000

// pruneSteps, pruneSignals and pruneWorkflows delete the steps, the signals (taken or
// not), then the rows, of the oldest $4
// workflows that ended completed, compensated or cancelled more than $3 ms ago; both
// choose the same ones in one transaction (a workflow that ends meanwhile ends now, not
// before the cut).
const (
	pruneEnded = `SELECT id FROM twice_workflows
  WHERE service = $2 AND state IN ('completed', 'compensated', 'cancelled') AND finished_at < {now} - {ms $3}
  ORDER BY finished_at, id LIMIT $4`
	pruneSteps     = `DELETE FROM twice_workflow_steps WHERE service = $2 AND workflow_id IN (` + pruneEnded + `)`
	pruneSignals   = `DELETE FROM twice_workflow_signals WHERE service = $2 AND workflow_id IN (` + pruneEnded + `)`
	pruneWorkflows = `DELETE FROM twice_workflows WHERE service = $2 AND id IN (` + pruneEnded + `)`
)

// Prune deletes the workflows that ended completed, compensated or cancelled longer ago
// than [Config.Retention], with their steps and signals, a thousand per transaction, and returns how
// many it deleted. [Failed] workflows, which need a person, stay. The leader runs it every
// [PruneInterval].
func (e *Engine) Prune(ctx context.Context) (int64, error) {
	if e.cfg.Retention < 0 {
		return 0, nil
	}
	steps, signals, rows := e.s.SQL(pruneSteps), e.s.SQL(pruneSignals), e.s.SQL(pruneWorkflows)
	age := e.cfg.Retention.Milliseconds()
	var total int64
	for {
		var n int64
		err := e.s.InTx(ctx, func(tx store.Tx) error {
			for _, q := range []string{steps, signals} {
				if _, err := tx.Exec(ctx, q, e.s.NowArg(), e.d.Service, age, pruneBatch); err != nil {
					return err
				}
			}
			var err error
			n, err = tx.Exec(ctx, rows, e.s.NowArg(), e.d.Service, age, pruneBatch)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("workflow: prune: %w", err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}

// Lead runs on the leader: it prunes the workflows past their retention every
// [PruneInterval].
func (e *Engine) Lead(ctx context.Context) {
	loop.Every(ctx, PruneInterval, func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, loop.BatchTimeout)
		defer cancel()
		if _, err := e.Prune(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("workflow: pruning ended workflows failed; the next round tries again", "err", err)
		}
	})
}
