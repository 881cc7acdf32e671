package settings

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/twicehq/twice/internal/safe"
)

type watcher struct {
	key       string // "" for every key
	fn        func(Setting)
	cancelled atomic.Bool
}

// note is one change to hand to the watchers that were registered when it was applied.
type note struct {
	v  Setting
	to []*watcher
}

// notifier calls watchers on a goroutine of its own, in the order changes were applied, so
// a slow watcher never holds up the local copy and a watcher may itself call Set.
// A watcher that panics is logged and counted (see [Config.Panics]); the others, and its
// own later calls, go on.
type notifier struct {
	log    *slog.Logger
	panics *atomic.Int64

	mu      sync.Mutex // protects queue, closed, started
	queue   []note
	closed  bool
	started bool // the goroutine runs: from the first change handed to a watcher
	wake    chan struct{}
	done    chan struct{}
}

func newNotifier(log *slog.Logger, panics *atomic.Int64) *notifier {
	return &notifier{log: log, panics: panics, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (n *notifier) add(x note) {
	n.mu.Lock()
	if !n.closed {
		n.queue = append(n.queue, x)
		if !n.started {
			n.started = true
			go n.loop()
		}
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) loop() {
	defer close(n.done)
	for {
		n.mu.Lock()
		q, closed := n.queue, n.closed
		n.queue = nil
		n.mu.Unlock()
		for _, x := range q {
			for _, w := range x.to {
				if !w.cancelled.Load() {
					safe.Do(n.log, n.panics, "settings: Watch callback", func() { w.fn(x.v) })
				}
			}
		}
		if closed {
			return
		}
		if len(q) == 0 {
			<-n.wake
		}
	}
}

// close stops the notifier once the changes already queued have been handed out, or when
// ctx ends: a watcher that never returns cannot hold Close forever.
func (n *notifier) close(ctx context.Context) error {
	n.mu.Lock()
	n.closed = true
	started := n.started
	n.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case n.wake <- struct{}{}:
	default:
	}
	select {
	case <-n.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("settings: a Watch callback still running at close: %w", context.Cause(ctx))
	}
}

// Watch calls fn with the current setting of key (if it is set) and then with every new
// version of it this instance applies, deletions included (Deleted set). Versions only go
// up; one superseded before this instance read it is skipped, since a watcher wants the
// configuration as it is, not every step to it (the history has those). Calls come in
// order, one at a time, on a goroutine shared by all watchers of these settings: keep fn
// quick. cancel stops the calls.
func (s *Settings) Watch(key string, fn func(Setting)) (cancel func()) {
	return s.watch(key, fn)
}

// WatchAll is [Settings.Watch] for every key: fn gets every current setting, then every
// change.
func (s *Settings) WatchAll(fn func(Setting)) (cancel func()) {
	return s.watch("", fn)
}

func (s *Settings) watch(key string, fn func(Setting)) func() {
	w := &watcher{key: key, fn: fn}
	s.mu.Lock()
	id := s.nextW
	s.nextW++
	s.watchers[id] = w
	// The current values are queued under the same lock as later changes, so fn sees
	// each version once and in order.
	var cur []Setting
	for k, v := range s.vals {
		if !v.Deleted && (key == "" || k == key) {
			cur = append(cur, v)
		}
	}
	sortByKey(cur)
	for _, v := range cur {
		s.notes.add(note{v: v, to: []*watcher{w}})
	}
	s.mu.Unlock()
	return func() {
		w.cancelled.Store(true)
		s.mu.Lock()
		delete(s.watchers, id)
		s.mu.Unlock()
	}
}

func sortByKey(vs []Setting) {
	slices.SortFunc(vs, func(a, b Setting) int { return strings.Compare(a.Key, b.Key) })
}
