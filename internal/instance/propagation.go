package instance

import (
	"context"
	"time"

	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/settings"
)

// PropagationCache is the cache every instance of a propagation benchmark makes.
const PropagationCache = "bench"

// Propagation is the workload "propagation", for the benchmarks of how fast a change
// reaches every instance: the instance makes the cache PropagationCache and watches every
// setting, and reports every invalidation and setting change it applies as an
// "invalidated" or "setting" event, and every bus loss as "lost".
type Propagation struct{}

// Name implements Workload.
func (Propagation) Name() string { return "propagation" }

func (Propagation) start(_ context.Context, in *env) (func(), error) {
	node := in.node
	// Entries are not needed: an invalidation is applied whether or not its key is cached.
	if _, err := cache.New(node.Caches(), PropagationCache, cache.Config[string, string]{
		Load: func(_ context.Context, k string) (string, error) { return k, nil },
	}); err != nil {
		return nil, err
	}
	node.Caches().Observe(func(inv cache.Invalidation) {
		switch {
		case inv.Lost:
			in.emit(Event{Event: "lost"})
		case inv.Cache == PropagationCache:
			now := time.Now().UnixNano()
			for _, k := range inv.Keys {
				in.emit(Event{Event: "invalidated", Key: k, T: now})
			}
		}
	})
	node.Settings().WatchAll(func(v settings.Setting) {
		in.emit(Event{Event: "setting", Key: v.Key, T: time.Now().UnixNano()})
	})
	return func() {}, nil
}
