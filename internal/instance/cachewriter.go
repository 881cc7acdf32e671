package instance

import (
	"context"
	"sync"

	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/store"
)

// CrashCache is the cache a [CacheWriter] invalidates CrashTable's row in.
const CrashCache = "crash"

// CacheWriter is the workload "cache-writer": the instance bumps the version of CrashTable's
// row and invalidates it with InvalidateTx in the same transaction, as fast as it can, until
// it stops or is killed: a kill lands before, during or after a commit.
type CacheWriter struct{}

// Name implements Workload.
func (CacheWriter) Name() string { return "cache-writer" }

func (CacheWriter) start(ctx context.Context, in *env) (func(), error) {
	node := in.node
	c, err := cache.New(node.Caches(), CrashCache, cache.Config[int, int]{
		Load: func(ctx context.Context, id int) (int, error) {
			var v int
			err := node.Store().Reader().QueryRow(ctx, "SELECT v FROM "+CrashTable+" WHERE id = $1", id).Scan(&v)
			return v, err
		},
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			_ = node.Store().InTx(ctx, func(tx store.Tx) error {
				if _, err := tx.Exec(ctx, "UPDATE "+CrashTable+" SET v = v + 1 WHERE id = 1"); err != nil {
					return err
				}
				return c.InvalidateTx(ctx, tx, 1)
			})
		}
	})
	return func() { cancel(); wg.Wait() }, nil
}
