package jobs

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// completer records finished attempts in batches: while one statement runs, the next batch
// gathers, so a busy instance finishes hundreds of jobs per statement and an idle one
// records each job at once.
type completer struct {
	c *Client
	l *loop.Loop

	mu      sync.Mutex // protects pending, spare, closed
	pending []result
	// spare is the array of a batch already recorded, which pending takes when a batch
	// takes all of it: a busy instance then gathers its results without growing a new
	// array for each batch.
	spare  []result
	closed bool
}

func newCompleter(c *Client) *completer {
	k := &completer{c: c}
	k.l = loop.StartAfter(loop.Forever, k.step)
	return k
}

func (k *completer) add(r result) {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return // its attempt stays running under this owner and is rescued
	}
	k.pending = append(k.pending, r)
	k.mu.Unlock()
	k.l.Kick()
}

// take returns the next batch. One that takes all that is pending takes its array too,
// and pending goes on in the spare one, if any.
func (k *completer) take() []result {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := min(len(k.pending), k.c.cfg.CompleteBatch)
	if n == 0 {
		return nil
	}
	if n == len(k.pending) {
		batch := k.pending
		k.pending, k.spare = k.spare, nil
		return batch
	}
	batch := k.pending[:n:n]
	k.pending = k.pending[n:]
	return batch
}

// reuse keeps the array of batch, recorded and no longer read, for the pending results of
// a later batch; an array grown by a burst beyond a few batches is left to the collector.
func (k *completer) reuse(batch []result) {
	if cap(batch) > 4*k.c.cfg.CompleteBatch {
		return
	}
	clear(batch) // its errors and queue names
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.spare == nil && !k.closed {
		k.spare = batch[:0]
	}
}

// step records batches until none is pending; each add kicks it.
func (k *completer) step(ctx context.Context) time.Duration {
	for {
		batch := k.take()
		if len(batch) == 0 || !k.flushRetrying(ctx, batch) {
			return loop.Forever
		}
		k.reuse(batch)
	}
}

// flushRetrying records a batch, retrying while the database is unreachable, until ctx
// (the loop's) ends; it reports whether the batch was recorded. A statement under way
// runs to its end even then. An instance that never manages to record is eventually
// declared dead and its jobs rescued.
func (k *completer) flushRetrying(ctx context.Context, batch []result) bool {
	wait := loop.Urgent
	for attempt := 1; ; attempt++ {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loop.BatchTimeout)
		err := k.c.finish(fctx, batch)
		cancel()
		if err == nil {
			return true
		}
		if attempt == 1 || attempt%50 == 0 {
			k.c.log.Warn("jobs: recording finished jobs failed; retrying", "count", len(batch), "err", err)
		}
		if !loop.Sleep(ctx, wait.Next()) {
			return false
		}
	}
}

// drain records what is still pending once the loop has stopped, within limit.
func (k *completer) drain(limit time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		batch := k.take()
		if len(batch) == 0 {
			return
		}
		if err := k.c.finish(ctx, batch); err != nil {
			k.c.log.Warn("jobs: recording finished jobs on shutdown failed; they will be rescued", "count", len(batch), "err", err)
			return
		}
	}
}

// close stops taking results, stops the loop and records what is pending, waiting for
// that until ctx ends.
func (k *completer) close(ctx context.Context) {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.closed = true
	k.mu.Unlock()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		k.l.Stop()
		k.drain(loop.StatementTimeout)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
	}
}

// abandon stops taking results and stops the loop, dropping what is pending, as a crash
// would: those attempts stay running under this instance until they are rescued. A batch
// whose statement is under way is recorded.
func (k *completer) abandon() {
	k.mu.Lock()
	k.closed, k.pending = true, nil
	k.mu.Unlock()
	k.l.Stop()
}

// finish records a batch of finished attempts, then releases the batches it completed and
// wakes the queues where it made room.
func (c *Client) finish(ctx context.Context, batch []result) error {
	done, err := c.e.finish(ctx, batch)
	if err != nil {
		return err
	}
	if len(done) < len(batch) {
		got := make(map[int64]bool, len(done))
		for _, d := range done {
			got[d.id] = true
		}
		for _, r := range batch {
			if !got[r.id] {
				c.log.Warn("jobs: result refused: the attempt is no longer this instance's (rescued, handed back or cancelled)",
					"job", r.id, "attempt", r.attempt)
			}
		}
	}
	return c.afterFinish(ctx, done)
}

// completedFrom is what a batch's completions recorded as ids (all of unkeyed jobs) tell
// the caller: the rest is known from the batch, which is sorted by id (see sortByID), so
// each id's result is found by binary search, with no map built per batch.
func completedFrom(batch []result, ids []int64) []finished {
	done := make([]finished, 0, len(ids))
	for _, id := range ids {
		var r result
		if i, ok := slices.BinarySearchFunc(batch, id, func(r result, id int64) int { return cmp.Compare(r.id, id) }); ok {
			r = batch[i]
		}
		f := finished{id: id, state: bitCompleted, queue: r.queue}
		if r.batchID != 0 {
			b := r.batchID
			f.batchID = &b
		}
		done = append(done, f)
	}
	return done
}

func scanIDList(rows store.Rows) ([]int64, error) {
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// finished is a job the finish or rescue statement moved.
type finished struct {
	id      int64
	key     *string
	batchID *int64
	state   int
	queue   string
}

func scanFinished(rows store.Rows, err error) ([]finished, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []finished
	for rows.Next() {
		var f finished
		if err := rows.Scan(&f.id, &f.key, &f.batchID, &f.state, &f.queue); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// afterFinish releases the batch callbacks whose last member just finished and wakes the
// queues where finishing made room: a freed key, a released callback, a job made available
// again, now (handed back, rescued) or later (a retry, a snooze). A queue resting until its
// next due job (see producer.rest) learns of a sooner one only from that wake-up. It runs
// after the finishing statement committed, so the last member of a batch to commit always
// sees the others finished.
func (c *Client) afterFinish(ctx context.Context, done []finished) error {
	wake := map[string]bool{}
	var batches []int64
	for _, f := range done {
		if f.key != nil || f.state == bitAvailable {
			wake[f.queue] = true
		}
		if f.batchID != nil && f.state != bitAvailable {
			batches = append(batches, *f.batchID)
		}
	}
	if len(batches) > 0 {
		rows, err := c.s.Query(ctx, c.q.releaseBatches, c.s.NowArg(), c.d.Service, c.s.List(batches))
		if err != nil {
			return fmt.Errorf("jobs: release batch callbacks: %w", err)
		}
		if err := collectQueues(rows, wake); err != nil {
			return err
		}
	}
	c.wakeQueues(ctx, wake)
	return nil
}

func collectQueues(rows store.Rows, into map[string]bool) error {
	defer rows.Close()
	for rows.Next() {
		var q string
		if err := rows.Scan(&q); err != nil {
			return err
		}
		into[q] = true
	}
	return rows.Err()
}
