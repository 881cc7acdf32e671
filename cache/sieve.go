package cache

import (
	"sync"
	"sync/atomic"
	"time"
)

// shard is one lock's worth of the cache: the entries under SIEVE eviction, the loads in
// flight and the keys held by this instance's uncommitted InvalidateTx calls. Keeping all
// three under one mutex is what makes "check the load was not overtaken by an
// invalidation, then install it" atomic with respect to the invalidation.
//
// SIEVE (Zhang et al., NSDI 2024) keeps entries in insertion order and a hand that walks
// from the oldest towards the newest, evicting the first entry not visited since the hand
// last passed it. A hit only sets a flag, so hits share a read lock instead of relinking a
// list under an exclusive one as LRU must, and on web workloads it misses less than LRU.
type shard[V any] struct {
	mu      sync.RWMutex // protects everything below; visited flags are atomic
	entries map[string]*entry[V]
	newest  *entry[V]
	oldest  *entry[V]
	hand    *entry[V]
	cap     int
	// calls are the loads in flight, one per key. An invalidation marks a key's call stale
	// and forgets it, so its result is returned to the callers already waiting but never
	// installed, and later callers start a fresh load.
	calls map[string]*call[V]
	// holds are keys this instance invalidated inside a transaction that has not been
	// seen to commit: token → deadline. While a key is held it is not cached here.
	holds map[string]map[uint64]time.Time
	// allHolds are open InvalidateAllTx calls: while any is, nothing is cached here.
	allHolds map[uint64]time.Time

	hits, misses atomic.Uint64
	_            [64]byte // keeps the next shard's lock and counters off this cache line
}

type entry[V any] struct {
	key     string
	val     V
	expires time.Time
	visited atomic.Bool
	newer   *entry[V]
	older   *entry[V]
}

// call is one load in flight. val and err are written before done is closed.
type call[V any] struct {
	done  chan struct{}
	start time.Time
	stale bool // set under the shard lock when an invalidation overtook the load
	val   V
	err   error
}

func newShard[V any](capacity int) *shard[V] {
	return &shard[V]{
		entries: map[string]*entry[V]{},
		cap:     capacity,
		calls:   map[string]*call[V]{},
		holds:   map[string]map[uint64]time.Time{},
		// allHolds stays nil until InvalidateAllTx needs it.
	}
}

// lookup returns the live entry for k under the read lock.
func (s *shard[V]) lookup(k string, now time.Time) (V, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lookupLocked(k, now)
}

// lookupLocked needs s.mu held, for reading at least.
func (s *shard[V]) lookupLocked(k string, now time.Time) (V, bool) {
	e := s.entries[k]
	if e == nil || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	if !e.visited.Load() { // a hot entry's flag is set already: do not write its cache line again
		e.visited.Store(true)
	}
	return e.val, true
}

// install puts k in the shard and returns how many entries were evicted to make room and
// how many of those had expired. Needs s.mu.
func (s *shard[V]) install(k string, v V, expires, now time.Time) (evicted, expired int) {
	if e := s.entries[k]; e != nil {
		e.val, e.expires = v, expires
		e.visited.Store(false)
		return 0, 0
	}
	for len(s.entries) >= s.cap {
		if s.evict(now) {
			expired++
		}
		evicted++
	}
	e := &entry[V]{key: k, val: v, expires: expires, older: s.newest}
	if s.newest != nil {
		s.newest.newer = e
	}
	s.newest = e
	if s.oldest == nil {
		s.oldest = e
	}
	s.entries[k] = e
	return evicted, expired
}

// evict removes one entry: the first the hand finds unvisited or expired. It reports
// whether that entry had expired. Needs s.mu and at least one entry.
func (s *shard[V]) evict(now time.Time) (expired bool) {
	h := s.hand
	if h == nil {
		h = s.oldest
	}
	for h.visited.Load() && now.Before(h.expires) {
		h.visited.Store(false)
		if h = h.newer; h == nil {
			h = s.oldest
		}
	}
	s.hand = h // remove moves it on to the next newer entry, where the next eviction starts
	s.remove(h)
	return !now.Before(h.expires)
}

// remove unlinks e, moving the hand past it. Needs s.mu.
func (s *shard[V]) remove(e *entry[V]) {
	if s.hand == e {
		s.hand = e.newer
	}
	if e.newer != nil {
		e.newer.older = e.older
	} else {
		s.newest = e.older
	}
	if e.older != nil {
		e.older.newer = e.newer
	} else {
		s.oldest = e.newer
	}
	e.newer, e.older = nil, nil
	delete(s.entries, e.key)
}

// invalidate drops k and revokes the load of k in flight, if any. It reports whether
// there was anything to drop or revoke. Needs s.mu.
func (s *shard[V]) invalidate(k string) bool {
	found := false
	if e := s.entries[k]; e != nil {
		s.remove(e)
		found = true
	}
	if c := s.calls[k]; c != nil {
		c.stale = true
		delete(s.calls, k)
		found = true
	}
	return found
}

// flush drops every entry and revokes every load in flight. Holds stay: their
// transactions are still open. Needs s.mu.
func (s *shard[V]) flush() int {
	n := len(s.entries)
	clear(s.entries)
	s.newest, s.oldest, s.hand = nil, nil, nil
	for k, c := range s.calls {
		c.stale = true
		delete(s.calls, k)
	}
	return n
}

// held reports whether k is held by an open InvalidateTx or InvalidateAllTx, dropping
// expired holds. Needs s.mu for writing.
func (s *shard[V]) held(k string, now time.Time) bool {
	if expire(s.allHolds, now) > 0 {
		return true
	}
	hs := s.holds[k]
	if expire(hs, now) == 0 {
		delete(s.holds, k)
		return false
	}
	return true
}

// expire drops the holds past their deadline and returns how many remain.
func expire(hs map[uint64]time.Time, now time.Time) int {
	for token, until := range hs {
		if !now.Before(until) {
			delete(hs, token)
		}
	}
	return len(hs)
}

// holdAll marks the whole shard as held by token until the deadline. Needs s.mu.
func (s *shard[V]) holdAll(token uint64, until time.Time) {
	if s.allHolds == nil {
		s.allHolds = map[uint64]time.Time{}
	}
	s.allHolds[token] = until
}

// hold marks k as held by token until the deadline. Needs s.mu.
func (s *shard[V]) hold(k string, token uint64, until time.Time) {
	if s.holds[k] == nil {
		s.holds[k] = map[uint64]time.Time{}
	}
	s.holds[k][token] = until
}

// releaseAll ends token's hold on the whole shard. Needs s.mu.
func (s *shard[V]) releaseAll(token uint64) { delete(s.allHolds, token) }

// release ends token's hold on k. Needs s.mu.
func (s *shard[V]) release(k string, token uint64) {
	if hs := s.holds[k]; hs != nil {
		delete(hs, token)
		if len(hs) == 0 {
			delete(s.holds, k)
		}
	}
}

func (s *shard[V]) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.entries)
}
