package cache

import (
	"container/list"
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"
)

// lru is the textbook LRU (a map and a list under one mutex), kept here only to compare
// SIEVE against: hit ratio on a skewed workload, and the cost of a hit under contention.
type lru struct {
	mu    sync.Mutex // protects m, order
	m     map[string]*list.Element
	order *list.List
	cap   int
}

func newLRU(capacity int) *lru {
	return &lru{m: map[string]*list.Element{}, order: list.New(), cap: capacity}
}

func (l *lru) get(k string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.m[k]; ok {
		l.order.MoveToFront(e)
		return true
	}
	if l.order.Len() >= l.cap {
		old := l.order.Back()
		l.order.Remove(old)
		delete(l.m, old.Value.(string))
	}
	l.m[k] = l.order.PushFront(k)
	return false
}

// zipfKeys draws n keys from a Zipf distribution over universe keys, as web caches see.
func zipfKeys(n, universe int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, seed))
	z := rand.NewZipf(r, 1.1, 1, uint64(universe-1))
	keys := make([]string, n)
	for i := range keys {
		keys[i] = strconv.FormatUint(z.Uint64(), 10)
	}
	return keys
}

// BenchmarkHitRatio reports the hit ratio of SIEVE and of LRU on the same Zipf trace with
// a cache of 1% of the key space. Run with -bench HitRatio -benchtime 1x.
func BenchmarkHitRatio(b *testing.B) {
	keys := zipfKeys(1_000_000, 100_000, 7)
	b.Run("sieve", func(b *testing.B) {
		for b.Loop() {
			s := newShard[struct{}](1000)
			now, far := time.Unix(0, 0), time.Unix(1<<40, 0)
			hits := 0
			for _, k := range keys {
				if _, ok := s.lookupLocked(k, now); ok {
					hits++
				} else {
					s.install(k, struct{}{}, far, now)
				}
			}
			b.ReportMetric(100*float64(hits)/float64(len(keys)), "hit%")
		}
	})
	b.Run("lru", func(b *testing.B) {
		for b.Loop() {
			l := newLRU(1000)
			hits := 0
			for _, k := range keys {
				if l.get(k) {
					hits++
				}
			}
			b.ReportMetric(100*float64(hits)/float64(len(keys)), "hit%")
		}
	})
}

// BenchmarkGetHit measures a cache hit through the public Get, from parallel goroutines.
func BenchmarkGetHit(b *testing.B) {
	m := startedManager(b, (&memNet{}).open("a"), ManagerConfig{})
	defer m.Close(context.Background())
	c, err := New(m, "bench", Config[string, int]{Load: func(ctx context.Context, k string) (int, error) { return len(k), nil }})
	if err != nil {
		b.Fatal(err)
	}
	keys := zipfKeys(1<<16, 5000, 3)
	ctx := context.Background()
	for _, k := range keys {
		if _, err := c.Get(ctx, k); err != nil {
			b.Fatal(err)
		}
	}
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(len(keys))
		for pb.Next() {
			_, _ = c.Get(ctx, keys[i&(len(keys)-1)])
			i++
		}
	})
}

// BenchmarkLRUHit is the same workload on the textbook LRU, for comparison.
func BenchmarkLRUHit(b *testing.B) {
	l := newLRU(10_000)
	keys := zipfKeys(1<<16, 5000, 3)
	for _, k := range keys {
		l.get(k)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(len(keys))
		for pb.Next() {
			l.get(keys[i&(len(keys)-1)])
			i++
		}
	})
}
