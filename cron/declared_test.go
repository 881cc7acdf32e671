package cron_test

import (
	"context"
	"testing"
	"time"

	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
)

type tick struct{}

func (tick) Kind() string { return "tick" }

// A schedule removed or declared anew while a look that listed it still runs fires as the
// code now declares it, not as it was listed (CI once saw a removed schedule fire).
func TestFireFollowsTheDeclarationsOfNow(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		clock := testdb.NewClock()
		cfg := testnode.Fast()
		cfg.Clock = clock
		n := testnode.Open(t, db, "svc", cfg)
		if err := jobs.Register(n.Jobs(), jobs.WorkFunc[tick](func(context.Context, *jobs.Job[tick]) error { return nil })); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"gone", "changed"} {
			if err := n.Cron().Add(name, "0 * * * *", tick{}, nil); err != nil {
				t.Fatal(err)
			}
		}
		fired, err := n.Cron().FireListedBefore(ctx, func() {
			n.Cron().Remove("gone")
			if err := n.Cron().Add("changed", "0 0 1 1 *", tick{}, nil); err != nil {
				t.Fatal(err)
			}
			clock.Advance(2 * time.Hour) // both listed schedules are now due
		})
		if err != nil {
			t.Fatal(err)
		}
		if fired != 0 {
			t.Errorf("the look fired %d ticks of schedules removed or changed after it listed them", fired)
		}
		if _, _, err := n.Cron().Fire(ctx); err != nil {
			t.Fatal(err)
		}
		rows, err := n.Jobs().List(ctx, jobs.ListParams{Kind: "tick"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			tt, _ := cron.TickTime(r)
			t.Errorf("job %d fired for schedule %q at %s", r.ID, r.Meta["cron"], tt)
		}
	})
}
