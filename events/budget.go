package events

import "sync"

// byteBudget bounds the bytes of events a consumer holds on this instance: each read of a
// partition takes its share before it runs and gives back what it did not use, and the
// rest once its events are handled. A read waits while the group's other reads hold the
// budget, so a group's memory does not grow with its partitions.
type byteBudget struct {
	mu      sync.Mutex // protects free, waiting, changed
	free    int
	waiting int
	changed chan struct{} // closed when bytes come back while someone waits
}

func newByteBudget(n int) *byteBudget { return &byteBudget{free: n, changed: make(chan struct{})} }

// acquire takes n bytes, waiting until that many are free. It reports false if quit or
// done closed first.
func (b *byteBudget) acquire(n int, quit, done <-chan struct{}) bool {
	b.mu.Lock()
	for b.free < n {
		b.waiting++
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-quit:
			b.giveUp()
			return false
		case <-done:
			b.giveUp()
			return false
		}
		b.mu.Lock()
		b.waiting--
	}
	b.free -= n
	b.mu.Unlock()
	return true
}

func (b *byteBudget) giveUp() {
	b.mu.Lock()
	b.waiting--
	b.mu.Unlock()
}

// release gives n bytes back. A negative n takes more: a read whose one event was larger
// than its share (a read always takes at least one event).
func (b *byteBudget) release(n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.free += n
	if n > 0 && b.waiting > 0 {
		close(b.changed)
		b.changed = make(chan struct{})
	}
	b.mu.Unlock()
}
