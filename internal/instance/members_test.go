package instance_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
)

// TestMembersWatch: instances that watch on a signal say nothing before it; once signalled,
// each reports the members it lists, then a newcomer, and stops at Until.
func TestMembersWatch(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		opts := crashOptions(db)
		opts.Workloads = []instance.Workload{instance.Members{OnSignal: true, Until: 3}}
		g := instance.NewGroup(spawner(t), opts, nil)
		defer g.Stop(10 * time.Second)
		for i := range 2 {
			if _, err := g.Start(ctx, i); err != nil {
				t.Fatal(err)
			}
		}
		seen := func(slot, n int) func(instance.Event) bool {
			return func(e instance.Event) bool { return e.Proc == slot && e.Event == "members" && e.Members >= n }
		}
		events, from := g.Log()
		for _, e := range events {
			if e.Event == "members" {
				t.Fatalf("a report before the signal: %+v", e)
			}
		}
		for i := range 2 {
			if err := g.Signal(i, syscall.SIGUSR2); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 2 {
			if _, _, err := g.WaitFor(ctx, from, seen(i, 2)); err != nil {
				t.Fatalf("slot %d: %v", i, err)
			}
		}
		if _, err := g.Start(ctx, 2); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if _, _, err := g.WaitFor(ctx, from, seen(i, 3)); err != nil {
				t.Fatalf("slot %d never saw the third instance: %v", i, err)
			}
		}
	})
}
