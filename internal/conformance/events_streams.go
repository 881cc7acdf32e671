package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// exerciseEventsStreams checks event-sourced streams: retention keeps them, and a
// projection built from them catches up.
func exerciseEventsStreams(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"RetentionKeepsStreams", eventsRetentionKeepsStreams},
		{"StreamsAndProjection", eventsStreamsAndProjection},
	})
}

func eventsRetentionKeepsStreams(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	clock := testdb.NewClock()
	cfg := testnode.Fast()
	cfg.Clock = clock
	cfg.Events.Retention = time.Hour
	a := backend.node(t, db, "svc", cfg)
	old, err := a.Events().Publish(ctx, msgs("t", 4, 1)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Events().Append(ctx, "order-1", events.NoStream, events.Message{Payload: []byte("placed")}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	fresh, err := a.Events().Publish(ctx, msgs("t", 1, 1)...)
	if err != nil {
		t.Fatal(err)
	}
	// The leader prunes too; between it and this call, the four old events go.
	if n, err := a.Events().Prune(ctx); err != nil || n > 4 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
	for _, id := range old {
		if _, err := a.Events().Get(ctx, id); !errors.Is(err, events.ErrNotFound) {
			t.Fatalf("old event %d: %v", id, err)
		}
	}
	if _, err := a.Events().Get(ctx, fresh[0]); err != nil {
		t.Fatalf("fresh event pruned: %v", err)
	}
	if evs, err := a.Events().Load(ctx, "order-1", nil); err != nil || len(evs) != 1 {
		t.Fatalf("stream pruned: %d, %v", len(evs), err)
	}
}

func eventsStreamsAndProjection(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a, b := backend.node(t, db, "svc", testnode.Fast()), backend.node(t, db, "svc", testnode.Fast())
	if _, err := a.Store().Exec(ctx, "CREATE TABLE order_view (stream TEXT PRIMARY KEY, status TEXT NOT NULL, version BIGINT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	v, err := a.Events().Append(ctx, "order-1", events.NoStream,
		events.Message{Payload: []byte("placed")}, events.Message{Payload: []byte("paid")})
	if err != nil || v != 2 {
		t.Fatalf("Append = %d, %v", v, err)
	}
	_, err = a.Events().Append(ctx, "order-1", 1, events.Message{Payload: []byte("cancelled")})
	var conflict *events.ConflictError
	if !errors.As(err, &conflict) || !errors.Is(err, events.ErrConflict) || conflict.Actual != 2 || conflict.Expected != 1 {
		t.Fatalf("stale append: %v", err)
	}
	// Concurrent appenders at one version: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := range 8 {
		n := []*twice.Node{a, b}[i%2]
		wg.Go(func() {
			_, err := n.Events().Append(ctx, "order-1", 2, events.Message{Payload: []byte("shipped")})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, events.ErrConflict):
				conflicts++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || conflicts != 7 {
		t.Fatalf("%d appends won and %d conflicted; want 1 and 7", wins, conflicts)
	}
	evs, err := b.Events().Load(ctx, "order-1", nil)
	if err != nil || len(evs) != 3 || evs[2].Version != 3 || evs[0].Topic != "order" || evs[0].Key != "order-1" {
		t.Fatalf("Load = %+v, %v", evs, err)
	}
	if evs, err := b.Events().Load(ctx, "order-1", &events.LoadOpts{After: 2}); err != nil || len(evs) != 1 {
		t.Fatalf("Load after 2 = %d, %v", len(evs), err)
	}
	// A projection: an exactly-once group writing the read model in its transaction.
	for _, n := range []*twice.Node{a, b} {
		subscribe(t, n, events.GroupConfig{Name: "order-view", Topics: []string{"order"}, Mode: events.ExactlyOnce, Rebalance: 50 * time.Millisecond,
			HandleTx: func(ctx context.Context, tx store.Tx, e events.Event) error {
				_, err := tx.Exec(ctx, `INSERT INTO order_view (stream, status, version) VALUES ($1, $2, $3)
					ON CONFLICT (stream) DO UPDATE SET status = excluded.status, version = excluded.version
					WHERE order_view.version < excluded.version`, e.Stream, string(e.Payload), e.Version)
				return err
			}})
	}
	for i := range 20 {
		if _, err := a.Events().Append(ctx, fmt.Sprintf("order-%d", i+2), events.NoStream,
			events.Message{Payload: []byte("placed")}, events.Message{Payload: []byte("paid")}); err != nil {
			t.Fatal(err)
		}
	}
	testnode.Eventually(t, 30*time.Second, "read model caught up", func() bool {
		return count(t, a.Store(), "SELECT count(*) FROM order_view WHERE status IN ('paid', 'shipped')") == 21
	})
}
