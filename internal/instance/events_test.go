package instance_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// Consumers are killed with SIGKILL again and again while events flow. An exactly-once
// group must leave every event's effect exactly once; a shared group must lose none.
func TestKilledConsumers(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"exactly-once", "shared"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testdb.Each(t, func(t *testing.T, db testdb.DB) {
				t.Parallel()
				killedConsumers(t, db, mode)
			})
		})
	}
}

func killedConsumers(t *testing.T, db testdb.DB, mode string) {
	ctx := context.Background()
	s := db.Open(t, nil)
	if _, err := store.NewMigrator(s, instance.Components()...).Up(ctx); err != nil {
		t.Fatal(err)
	}
	const service = "svc"
	b, err := bus.NewStore(ctx, s, bus.Config{Service: service, Instance: "publisher", Logger: testdb.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	log, err := events.New(block.Deps{Store: s, Service: service, Instance: "publisher", Bus: b, Logger: testdb.Logger(t)}, events.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close(ctx)

	opts := instance.Options{DSN: db.DSN, Schema: db.Schema, Service: service, Workloads: []instance.Workload{instance.Consume{Mode: mode, Work: time.Millisecond}},
		LeaseTTL: 500 * time.Millisecond, LeaderPoll: 50 * time.Millisecond,
		HeartbeatInterval: 100 * time.Millisecond, DeadAfter: 400 * time.Millisecond}
	g := instance.NewGroup(spawner(t), opts, t.Output())
	defer g.Stop(10 * time.Second)
	const procs = 3
	for i := range procs {
		if _, err := g.Start(ctx, i); err != nil {
			t.Fatal(err)
		}
	}

	// Publish in small transactions until the kills are done.
	var published []int64
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ids, err := log.Publish(ctx, events.Message{Topic: instance.EventsTopic, Key: strconv.Itoa(i % 13)},
				events.Message{Topic: instance.EventsTopic, Key: strconv.Itoa(i % 7)})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			published = append(published, ids...)
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	})
	const kills = 20
	for k := range kills {
		time.Sleep(100*time.Millisecond + rand.N(150*time.Millisecond))
		slot := rand.IntN(procs)
		if err := g.Kill(slot); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Start(ctx, slot); err != nil {
			t.Fatalf("restart after kill %d: %v", k+1, err)
		}
	}
	close(stop)
	wg.Wait()

	mu.Lock()
	want := len(published)
	mu.Unlock()
	// Liveness only: the survivors take the partitions over within a lease TTL or two.
	deadline := time.Now().Add(60 * time.Second)
	testnode.EventuallyNil(t, time.Until(deadline), func() error {
		if n := distinctEffects(t, s); n < want {
			return fmt.Errorf("%d of %d events took effect", n, want)
		}
		return nil
	})
	var rows, dups int
	if err := s.Reader().QueryRow(ctx, "SELECT count(*) FROM "+instance.EffectsTable).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := s.Reader().QueryRow(ctx, "SELECT count(*) FROM (SELECT event_id FROM "+instance.EffectsTable+
		" GROUP BY event_id HAVING count(*) > 1) d").Scan(&dups); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d events, %d kills, %d effect rows, %d events with more than one", mode, want, kills, rows, dups)
	if mode == "exactly-once" && (dups != 0 || rows != want) {
		t.Fatalf("exactly-once: %d effect rows for %d events, %d duplicated", rows, want, dups)
	}
	// A shared group records its effect before its checkpoint commits, so the lag reaches
	// zero a moment after the last effect appears.
	testnode.EventuallyNil(t, time.Until(deadline), func() error {
		lag, err := log.Lag(ctx, instance.EventsGroup)
		if err != nil || lag.DeadLetters != 0 {
			t.Fatalf("Lag = %+v, %v", lag, err)
		}
		if lag.Pending != 0 {
			return fmt.Errorf("Lag = %+v", lag)
		}
		return nil
	})
}

func distinctEffects(t *testing.T, s *store.Store) int {
	var n int
	if err := s.Reader().QueryRow(context.Background(), "SELECT count(DISTINCT event_id) FROM "+instance.EffectsTable).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
