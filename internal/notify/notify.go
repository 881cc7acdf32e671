// Package notify calls the watchers a building block's users registered (settings'
// Watch, presence's Watch) on a goroutine of its own, in the order the block saw its
// changes, so that a slow watcher never holds up the block and a watcher may itself call
// the block. Each call goes through internal/safe: a watcher that panics is logged and
// counted, and the others, and its own later calls, go on.
package notify

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/twicehq/twice/internal/safe"
)

// Queue calls functions one at a time, in the order they were added. The zero Queue is not
// usable: make one with [New].
type Queue struct {
	log    *slog.Logger
	panics *atomic.Int64
	what   string // names the calls in logs and errors: "settings: Watch callback"

	mu      sync.Mutex // protects queue, closed, started
	queue   []func()
	closed  bool
	started bool // the goroutine runs: from the first call added
	wake    chan struct{}
	done    chan struct{}
}

// New returns a queue whose calls what names in logs ("settings: Watch callback"); their
// panics are added to panics (nil counts nothing). It starts no goroutine until the first
// [Queue.Add].
func New(log *slog.Logger, panics *atomic.Int64, what string) *Queue {
	return &Queue{log: log, panics: panics, what: what, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Add queues fns, to be called in order after every call queued before. After
// [Queue.Close] it does nothing.
func (q *Queue) Add(fns ...func()) {
	q.mu.Lock()
	if !q.closed {
		q.queue = append(q.queue, fns...)
		if !q.started {
			q.started = true
			go q.loop()
		}
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *Queue) loop() {
	defer close(q.done)
	for {
		q.mu.Lock()
		fns, closed := q.queue, q.closed
		q.queue = nil
		q.mu.Unlock()
		for _, fn := range fns {
			safe.Do(q.log, q.panics, q.what, fn)
		}
		if closed {
			return
		}
		if len(fns) == 0 {
			<-q.wake
		}
	}
}

// Close stops the queue once the calls already queued have been made, or when ctx ends: a
// watcher that never returns cannot hold Close forever.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	q.closed = true
	started := q.started
	q.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s still running at close: %w", q.what, context.Cause(ctx))
	}
}
