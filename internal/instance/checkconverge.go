package instance

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// The checker's configuration and cache workload: now and then every instance sets the
// setting CheckSetting to a new value and, in the same transaction, writes the value to its
// service's row of CheckCachedTable, which every instance reads through a coherent cache,
// and invalidates that cache. The row is the truth both must converge to; GET /converge
// answers with this instance's view of both, as a Converged.
const CheckSetting = "check.value"

// Converged is an instance's view of the setting and of the cached row.
type Converged struct {
	Setting int64 `json:"setting"`
	Cache   int64 `json:"cache"`
}

// CheckConverge is the workload "check-converge" (see [CheckWorkloads]): the writer runs
// until the instance quiesces, a reader keeps the cache warm until it stops.
type CheckConverge struct{}

// Name implements Workload.
func (CheckConverge) Name() string { return "check-converge" }

func (CheckConverge) start(ctx context.Context, in *env) (func(), error) {
	node := in.node
	s := node.Store()
	if _, err := s.Exec(ctx, "INSERT INTO "+CheckCachedTable+" (service, value, writes) VALUES ($1, 0, 0) ON CONFLICT (service) DO NOTHING", node.Service()); err != nil {
		return nil, err
	}
	c, err := cache.New(node.Caches(), "check", cache.Config[string, int64]{
		Load: func(ctx context.Context, _ string) (int64, error) {
			var v int64
			err := s.QueryRow(ctx, "SELECT value FROM "+CheckCachedTable+" WHERE service = $1", node.Service()).Scan(&v)
			return v, err
		}})
	if err != nil {
		return nil, err
	}
	l := newLoops(ctx)
	writing := in.writing
	l.wg.Go(func() {
		for writing.Err() == nil {
			loop.Sleep(writing, 5*opPeriod)
			v := in.unique()
			_ = s.InTx(writing, func(tx store.Tx) error {
				if _, err := node.Settings().SetTx(writing, tx, CheckSetting, v, nil); err != nil {
					return err
				}
				if _, err := tx.Exec(writing, "UPDATE "+CheckCachedTable+" SET value = $1, writes = writes + 1 WHERE service = $2", v, node.Service()); err != nil {
					return err
				}
				return c.InvalidateTx(writing, tx, "v")
			})
		}
	})
	l.wg.Go(func() {
		for l.ctx.Err() == nil {
			_, _ = c.Get(l.ctx, "v")
			loop.Sleep(l.ctx, opPeriod)
		}
	})
	in.handle("GET /converge", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := c.Get(r.Context(), "v")
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Converged{Setting: node.Settings().Int(CheckSetting, 0), Cache: v})
	}))
	return l.stop, nil
}
