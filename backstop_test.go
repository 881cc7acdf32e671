package twice_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// With a bus that vouches for its delivery the blocks look at the database only every
// Backstop, so whatever they wait for must be signalled. These tests set Backstop to an
// hour: what they wait for happens only if it was signalled.

// A Replay is announced: a running, idle reader reloads its checkpoint and handles the
// events again.
func TestReplayReachesIdleReaders(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		cfg := testnode.Steady()
		cfg.Backstop = time.Hour
		n := testnode.Open(t, db, "replay-signal", cfg)
		var handled atomic.Int32
		c, err := n.Events().Subscribe(ctx, events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 2,
			Handle: func(context.Context, events.Event) error { handled.Add(1); return nil }})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if _, err := n.Events().Publish(ctx, events.Message{Topic: "t", Key: "k", Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, 30*time.Second, "the event handled", func() bool { return handled.Load() == 1 })
		if err := n.Events().Replay(ctx, "g", nil); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, 30*time.Second, "the event handled again after the replay", func() bool { return handled.Load() == 2 })
	})
}

// A member that joins a group is announced: the members holding its share give it up at
// once, and each ends with half of the partitions.
func TestJoinRebalancesAtOnce(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		cfg := testnode.Steady()
		cfg.Backstop = time.Hour
		group := events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 4,
			Handle: func(context.Context, events.Event) error { return nil }}
		a := testnode.Open(t, db, "join-signal", cfg)
		ca, err := a.Events().Subscribe(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		defer ca.Close(ctx)
		testnode.Eventually(t, 30*time.Second, "the first member holding every partition", func() bool { return len(ca.Partitions()) == 4 })
		b := testnode.Open(t, db, "join-signal", cfg)
		cb, err := b.Events().Subscribe(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		defer cb.Close(ctx)
		testnode.Eventually(t, 30*time.Second, "two partitions each", func() bool {
			return len(ca.Partitions()) == 2 && len(cb.Partitions()) == 2
		})
	})
}

// Backstop is validated and defaults to 30 seconds.
func TestBackstopConfig(t *testing.T) {
	db := testdb.New(t, store.SQLite)
	ctx := context.Background()
	if _, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Name: "backstop", Backstop: -time.Second, Logger: testdb.Logger(t)}); err == nil {
		t.Fatal("a negative Backstop was accepted")
	}
	n := testnode.Open(t, db, "backstop", twice.Config{})
	if got := n.Config().Backstop; got != 30*time.Second {
		t.Fatalf("Backstop defaults to %v, want 30s", got)
	}
}
