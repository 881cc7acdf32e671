package twicetest

import (
	"context"
	"fmt"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/jobs"
)

// WorkLimit is how long [Work] waits when its context has no deadline of its own.
const WorkLimit = 30 * time.Second

// unworkedGrace is how long a queue may hold jobs that no live instance works before
// [Work] gives up on it: a worker registered just before Work is announced to the others
// a moment later.
const unworkedGrace = 2 * time.Second

// Work waits until no job of n's service is available to run now or running, on any of
// its nodes, and returns the service's queues as [jobs.Client.Stats] counts them then.
// The nodes' own workers run the jobs, as in production; jobs scheduled for later (a retry
// in its backoff, an Opts.RunAt or Delay) are left, and so are paused queues. It fails with
// the queues that still hold work when ctx ends (after [WorkLimit] if ctx has no
// deadline), and at once, naming the queue, when jobs wait in a queue that no live
// instance works: a kind whose worker nobody registered, or a queue missing from
// Config.Jobs.Queues.
func Work(ctx context.Context, n *twice.Node) ([]jobs.QueueStats, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, WorkLimit)
		defer cancel()
	}
	unworked := map[string]time.Time{} // queue → since when it has had jobs and no worker
	var busy []jobs.QueueStats         // as the last look found them
	for {
		stats, err := n.Jobs().Stats(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, stuck(ctx, busy)
			}
			return nil, fmt.Errorf("twicetest: Work: reading the queues: %w", err)
		}
		busy = pending(stats)
		if len(busy) == 0 {
			return stats, nil
		}
		for _, s := range busy {
			if s.Workers > 0 || s.Available == 0 {
				delete(unworked, s.Queue)
				continue
			}
			since, ok := unworked[s.Queue]
			if !ok {
				unworked[s.Queue] = time.Now()
			} else if time.Since(since) > unworkedGrace {
				return stats, fmt.Errorf("twicetest: Work: queue %q has %d jobs and no live instance works it: register a worker for their kinds, or list the queue in Config.Jobs.Queues", s.Queue, s.Available)
			}
		}
		select {
		case <-ctx.Done():
			return stats, stuck(ctx, busy)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// pending returns the queues that hold work to wait for: jobs available now or running,
// in a queue that is not paused.
func pending(stats []jobs.QueueStats) []jobs.QueueStats {
	var busy []jobs.QueueStats
	for _, s := range stats {
		if !s.Paused && (s.Available > 0 || s.Running > 0) {
			busy = append(busy, s)
		}
	}
	return busy
}

// stuck is Work's error when ctx ended before the queues busy emptied.
func stuck(ctx context.Context, busy []jobs.QueueStats) error {
	var out []string
	for _, s := range busy {
		out = append(out, fmt.Sprintf("queue %q: %d available, %d running, worked by %d instances", s.Queue, s.Available, s.Running, s.Workers))
	}
	return fmt.Errorf("twicetest: Work: the queues still held work when the context ended (%v):%s", context.Cause(ctx), lines(out))
}
