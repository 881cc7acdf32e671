package instance

import (
	"context"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/store"
)

// CrashCache is the cache instances with [Options.CacheWriter] invalidate CrashTable's row in.
const CrashCache = "crash"

// writeAndInvalidate bumps the row's version and invalidates it with InvalidateTx in the
// same transaction, as fast as it can, until ctx ends or the process is killed: a kill lands
// before, during or after a commit.
func writeAndInvalidate(ctx context.Context, node *twice.Node) error {
	c, err := cache.New(node.Caches(), CrashCache, cache.Config[int, int]{
		Load: func(ctx context.Context, id int) (int, error) {
			var v int
			err := node.Store().Reader().QueryRow(ctx, "SELECT v FROM "+CrashTable+" WHERE id = $1", id).Scan(&v)
			return v, err
		},
	})
	if err != nil {
		return err
	}
	go func() {
		for ctx.Err() == nil {
			_ = node.Store().InTx(ctx, func(tx store.Tx) error {
				if _, err := tx.Exec(ctx, "UPDATE "+CrashTable+" SET v = v + 1 WHERE id = 1"); err != nil {
					return err
				}
				return c.InvalidateTx(ctx, tx, 1)
			})
		}
	}()
	return nil
}
