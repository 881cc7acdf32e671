package jobs

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// Lead runs the queue's upkeep while this instance leads, until ctx ends: every
// PruneInterval it deletes finished jobs past their retention (and forgets which queues
// reaped instances worked) and releases batch callbacks a lost race left waiting. It is
// harmless if two instances run it at once.
func (c *Client) Lead(ctx context.Context) {
	loop.Every(ctx, c.cfg.PruneInterval, func(ctx context.Context) {
		if _, err := c.Prune(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("jobs: prune failed", "err", err)
		}
		if err := c.releaseWaiting(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("jobs: releasing batch callbacks failed", "err", err)
		}
	})
}

// rescueRound rescues the jobs of dead instances (and records the queues this instance
// started working since its last round), when the cluster finds one dead and every
// RescueInterval (Backstop while the bus vouches; see [block.Deps.Poll]). It runs on every instance,
// not only the leader: a rescue must not wait for an election when the leader is among
// the dead, and two rescuers never move a job twice (the statement skips rows another
// holds, and a rescued job has no owner left to be dead).
func (c *Client) rescueRound(ctx context.Context) time.Duration {
	wait := c.d.Poll(c.cfg.RescueInterval)
	if err := c.announcePending(ctx); err != nil && ctx.Err() == nil {
		c.log.Debug("jobs: retrying in a second", "err", err)
		wait = c.cfg.RescueInterval
	}
	if _, err := c.Rescue(ctx); err != nil && ctx.Err() == nil {
		c.log.Warn("jobs: rescue failed", "err", err)
		wait = c.cfg.RescueInterval
	}
	return wait
}

// Rescue makes the running jobs of instances that are no longer alive available again (or
// discards them when that was their last attempt, or cancels them if that was asked) and
// returns how many it moved. A job on a live instance is never touched, however long it runs.
func (c *Client) Rescue(ctx context.Context) (int, error) {
	done, err := c.e.rescue(ctx)
	if err != nil || len(done) == 0 {
		return 0, err
	}
	return len(done), c.afterFinish(ctx, done)
}

// readRescued reads and logs the jobs a rescue statement moved.
func (c *Client) readRescued(rows store.Rows, err error) ([]finished, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var done []finished
	for rows.Next() {
		var f finished
		var lastErr string
		var attempt int
		if err := rows.Scan(&f.id, &f.key, &f.batchID, &f.state, &f.queue, &lastErr, &attempt); err != nil {
			return nil, err
		}
		c.log.Info("jobs: rescued a job from a dead instance", "job", f.id, "attempt", attempt, "state", stateOf(f.state), "why", lastErr)
		done = append(done, f)
	}
	return done, rows.Err()
}

// pruneBatch is the most rows one prune statement deletes, so pruning a long backlog never
// holds locks for long.
const pruneBatch = 10000

// Prune deletes finished jobs older than their retention and returns how many. It also
// forgets which queues the instances the cluster has reaped worked.
func (c *Client) Prune(ctx context.Context) (int64, error) {
	if err := c.pruneQueueWorkers(ctx); err != nil {
		return 0, fmt.Errorf("jobs: prune the queues of reaped instances: %w", err)
	}
	var total int64
	for {
		n, err := c.s.Exec(ctx, c.q.prune, c.s.NowArg(), c.d.Service, c.cfg.CompletedRetention.Milliseconds(),
			c.cfg.CancelledRetention.Milliseconds(), c.cfg.DiscardedRetention.Milliseconds(), pruneBatch)
		total += n
		if err != nil || n < pruneBatch {
			return total, err
		}
	}
}

// releaseWaiting is the backstop for batch callbacks: it makes available every callback
// whose members have all finished.
func (c *Client) releaseWaiting(ctx context.Context) error {
	rows, err := c.s.Query(ctx, c.q.batchBackstop, c.s.NowArg(), c.d.Service)
	if err != nil {
		return err
	}
	wake := map[string]bool{}
	if err := collectQueues(rows, wake); err != nil {
		return err
	}
	c.wakeQueues(ctx, wake)
	return nil
}

// notifier sends wake-ups for committed jobs from one goroutine, so an enqueue never waits
// for the bus and a burst of enqueues to a queue costs one signal.
type notifier struct {
	c *Client
	l *loop.Loop

	mu      sync.Mutex // protects pending
	pending map[string]bool
}

func newNotifier(c *Client) *notifier {
	n := &notifier{c: c, pending: map[string]bool{}}
	n.l = loop.StartAfter(loop.Forever, n.step)
	return n
}

func (n *notifier) send(queues map[string]bool) {
	n.mu.Lock()
	for q := range queues {
		n.pending[q] = true
	}
	n.mu.Unlock()
	n.l.Kick()
}

// step sends what is pending. A wake-up taken is sent even if the client closes meanwhile.
func (n *notifier) step(ctx context.Context) time.Duration {
	n.mu.Lock()
	qs := n.pending
	n.pending = map[string]bool{}
	n.mu.Unlock()
	for q := range qs {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loop.SignalTimeout)
		n.c.publish(sctx, WakeChannel, q)
		cancel()
	}
	return loop.Forever
}

func (n *notifier) close() { n.l.Stop() }
