package testnode

import (
	"slices"
	"sync"
)

// Seen records the values a callback was called with (a watcher's events), for a test that
// waits for a call with [Eventually] and then checks them all. It is safe for concurrent
// use; the zero Seen is empty.
type Seen[T comparable] struct {
	mu   sync.Mutex // protects seen
	seen []T
}

// Add records v: pass it as the callback.
func (s *Seen[T]) Add(v T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, v)
}

// List returns every value recorded, in the order they came.
func (s *Seen[T]) List() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// Has reports whether v was recorded.
func (s *Seen[T]) Has(v T) bool { return s.Count(v) > 0 }

// Count is how many times v was recorded.
func (s *Seen[T]) Count(v T) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, x := range s.seen {
		if x == v {
			n++
		}
	}
	return n
}
