package instance

import (
	"context"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/settings"
)

// PropagationCache is the cache every instance of a propagation benchmark makes.
const PropagationCache = "bench"

// watchPropagation makes the benchmark's cache and settings watcher on a child and reports
// every invalidation and setting it applies as an "invalidated" or "setting" event.
func watchPropagation(node *twice.Node, em *emitter) error {
	// Entries are not needed: an invalidation is applied whether or not its key is cached.
	if _, err := cache.New(node.Caches(), PropagationCache, cache.Config[string, string]{
		Load: func(_ context.Context, k string) (string, error) { return k, nil },
	}); err != nil {
		return err
	}
	node.Caches().Observe(func(inv cache.Invalidation) {
		switch {
		case inv.Lost:
			em.emit(Event{Event: "lost"})
		case inv.Cache == PropagationCache:
			now := time.Now().UnixNano()
			for _, k := range inv.Keys {
				em.emit(Event{Event: "invalidated", Key: k, T: now})
			}
		}
	})
	node.Settings().WatchAll(func(v settings.Setting) {
		em.emit(Event{Event: "setting", Key: v.Key, T: time.Now().UnixNano()})
	})
	return nil
}
