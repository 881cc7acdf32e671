package dashboard

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/internal/loop"
)

// hub keeps the one snapshot every viewer sees. While at least one viewer is connected, a
// single refresher reads it every interval and hands it to all of them; while nobody is
// connected nothing is read, and a page load reads only when the last snapshot is older
// than the interval. So the database's cost depends on the interval, not on the viewers.
type hub struct {
	interval time.Duration
	read     func(ctx context.Context, seq int64) *snapshot

	readMu    sync.Mutex // serializes reads, so concurrent page loads share one
	refreshes atomic.Int64

	mu      sync.Mutex // protects everything below
	snap    *snapshot
	viewers map[chan *snapshot]struct{}
	running bool          // a refresher runs
	done    chan struct{} // closed by close
	closed  bool
}

func newHub(interval time.Duration, read func(ctx context.Context, seq int64) *snapshot) *hub {
	return &hub{interval: interval, read: read, viewers: map[chan *snapshot]struct{}{}, done: make(chan struct{})}
}

// current returns the last snapshot if it is younger than the interval, and otherwise
// reads a new one (once, however many ask at the same time).
func (h *hub) current(ctx context.Context) *snapshot {
	if s := h.fresh(); s != nil {
		return s
	}
	h.readMu.Lock()
	defer h.readMu.Unlock()
	if s := h.fresh(); s != nil {
		return s // read by whoever held readMu before us
	}
	return h.refreshLocked(ctx)
}

func (h *hub) fresh() *snapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.snap != nil && time.Since(h.snap.At) < h.interval {
		return h.snap
	}
	return nil
}

// refreshLocked reads a snapshot and keeps it; readMu is held.
func (h *hub) refreshLocked(ctx context.Context) *snapshot {
	s := h.read(ctx, h.refreshes.Add(1))
	h.mu.Lock()
	h.snap = s
	h.mu.Unlock()
	return s
}

// join adds a viewer, starting the refresher if it is the first. The channel receives
// each new snapshot (a slow viewer misses intermediate ones, never blocks the others)
// and is closed when the hub closes. leave removes the viewer.
func (h *hub) join() (ch chan *snapshot, leave func()) {
	ch = make(chan *snapshot, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(ch)
		return ch, func() {}
	}
	h.viewers[ch] = struct{}{}
	if !h.running {
		h.running = true
		go h.refresher()
	}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.viewers[ch]; ok {
			delete(h.viewers, ch)
			close(ch)
		}
	}
}

// refresher reads a snapshot at once and then every interval, and hands each to every
// viewer, until none is left or the hub closes.
func (h *hub) refresher() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-h.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if !h.refresh(ctx) {
		return
	}
	loop.Every(ctx, h.interval, func(ctx context.Context) {
		if !h.refresh(ctx) {
			cancel()
		}
	})
}

// refresh reads a snapshot and hands it to every viewer; with none left (or the hub
// closed) it reports false, and the refresher ends.
func (h *hub) refresh(ctx context.Context) bool {
	h.readMu.Lock()
	s := h.refreshLocked(ctx)
	h.readMu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.viewers) == 0 || h.closed {
		h.running = false
		return false
	}
	for ch := range h.viewers {
		select {
		case <-ch: // drop the snapshot it has not taken yet
		default:
		}
		ch <- s
	}
	return true
}

// idle reports whether no refresher runs: for tests.
func (h *hub) idle() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.running
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	close(h.done)
	for ch := range h.viewers {
		delete(h.viewers, ch)
		close(ch)
	}
}
