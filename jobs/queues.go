package jobs

import (
	"context"
	"fmt"
	"slices"
)

// Which queues an instance works. A queue is fetched on this instance when a worker whose
// kind names it (its [ArgsWithOpts] Opts().Queue, or [DefaultQueue]) is registered, when
// [Config].Queues lists it and some worker is registered, or when [Client.Queue] asks for
// it. A job enqueued to a queue that no instance works waits: each instance records the
// queues it works in twice_queue_workers, so [Client.Stats] (and `twice queues list`) can
// show queues with jobs and no live worker, and an instance that enqueues to a queue it
// does not work itself says so once in its log.

// queueConfig returns the configuration of queue, with defaults filled in.
func (c *Client) queueConfig(queue string) QueueConfig {
	qc := QueueConfig{Name: queue}
	if i := slices.IndexFunc(c.cfg.Queues, func(q QueueConfig) bool { return q.Name == queue }); i >= 0 {
		qc = c.cfg.Queues[i]
	}
	if qc.Concurrency <= 0 {
		qc.Concurrency = DefaultConcurrency
	}
	return qc
}

// ensureWorkedLocked starts the queue of a newly registered worker and, since this
// instance now runs jobs, every queue its Config lists.
func (c *Client) ensureWorkedLocked(queue string) {
	c.ensureProducerLocked(queue)
	for _, q := range c.cfg.Queues {
		c.ensureProducerLocked(q.Name)
	}
}

// announcePending records the queues this instance started fetching since the last call.
// The rescue loop calls it, so a failed write is tried again a second later.
func (c *Client) announcePending(ctx context.Context) error {
	c.mu.Lock()
	var queues []string
	for q := range c.unannounced {
		queues = append(queues, q)
	}
	c.mu.Unlock()
	if len(queues) == 0 {
		return nil
	}
	if _, err := c.s.Exec(ctx, c.q.announce, c.s.NowArg(), c.d.Service, c.d.Instance, c.s.List(queues)); err != nil {
		return fmt.Errorf("jobs: record the queues this instance works: %w", err)
	}
	for _, q := range queues {
		qc := c.queueConfig(q)
		if qc.GlobalLimit > 0 {
			if err := c.SetGlobalLimit(ctx, q, qc.GlobalLimit); err != nil {
				return err
			}
		}
		if qc.RateLimit.Limit > 0 {
			if err := c.SetRateLimit(ctx, q, qc.RateLimit); err != nil {
				return err
			}
		}
	}
	c.mu.Lock()
	for _, q := range queues {
		delete(c.unannounced, q)
	}
	c.mu.Unlock()
	return nil
}

// withdraw deletes this instance's record of the queues it works, once it has stopped.
func (c *Client) withdraw(ctx context.Context) {
	if _, err := c.s.Exec(ctx, c.q.withdraw, c.d.Service, c.d.Instance); err != nil {
		c.log.Debug("jobs: the record of this instance's queues stays until the leader prunes it", "err", err)
	}
}

// pruneQueueWorkers deletes the records of instances the cluster has forgotten (reaped).
func (c *Client) pruneQueueWorkers(ctx context.Context) error {
	_, err := c.s.Exec(ctx, c.q.pruneWorkers, c.d.Service)
	return err
}

// liveWorkers counts, per queue, the live instances that work it.
func (c *Client) liveWorkers(ctx context.Context) (map[string]int, error) {
	rows, err := c.s.Reader().Query(ctx, c.q.workers, c.s.NowArg(), c.d.Service)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var q string
		var n int
		if err := rows.Scan(&q, &n); err != nil {
			return nil, err
		}
		out[q] = n
	}
	return out, rows.Err()
}

// noteUnworkedLocked logs, once per queue, that this instance woke a queue it does not
// work: if it runs workers at all, it is likely meant to run these jobs too.
func (c *Client) noteUnworkedLocked(queue string) {
	if len(c.workers) == 0 || c.noted[queue] {
		return
	}
	c.noted[queue] = true
	c.log.Info("jobs: queue has new jobs but this instance does not work it; they run only on instances that do "+
		"(list it in Config.Jobs.Queues, or give the kind's Opts a Queue and register its worker)", "queue", queue)
}
