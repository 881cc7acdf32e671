package events_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// A log that was never started, as an instance that only publishes may hold, still
// announces what it publishes, with Publish and with PublishTx (watched until it commits):
// the readers on another instance, whose bus delivers and so lets them poll only at the
// Backstop (an hour here), get each event at once.
func TestPublishAnnouncesWithoutStart(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		cfg := testnode.Steady()
		cfg.Backstop = time.Hour
		node := testnode.Open(t, db, "svc", cfg) // migrates the schema
		got := make(chan string, 10)
		c, err := node.Events().Subscribe(ctx, events.GroupConfig{Name: "g", Topics: []string{"t"},
			Handle: func(_ context.Context, e events.Event) error {
				got <- e.Key
				return nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		testnode.Eventually(t, 30*time.Second, "the group's partitions assigned", func() bool {
			return len(c.Partitions()) == events.DefaultPartitions
		})

		s := db.Open(t, nil)
		b, err := bus.NewStore(ctx, s, bus.Config{Service: "svc", Instance: "publisher", Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close(ctx)
		pub, err := events.New(block.Deps{Store: s, Service: "svc", Instance: "publisher", Bus: b, Logger: testdb.Logger(t)}, events.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close(ctx)
		// Each event after the readers have settled into their wait: only a signal wakes
		// them within the test's bound.
		for i := range 4 {
			time.Sleep(200 * time.Millisecond)
			key := strconv.Itoa(i)
			msg := events.Message{Topic: "t", Key: key}
			if i%2 == 0 {
				_, err = pub.Publish(ctx, msg)
			} else {
				err = s.InTx(ctx, func(tx store.Tx) error {
					_, err := pub.PublishTx(ctx, tx, msg)
					return err
				})
			}
			if err != nil {
				t.Fatal(err)
			}
			select {
			case k := <-got:
				if k != key {
					t.Fatalf("handled key %q, want %q", k, key)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("event %d not handled in 20 s: the readers were not woken", i)
			}
		}
	})
}
