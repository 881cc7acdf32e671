package conformance

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
)

// exerciseEventsReplay checks replay from an id or a time, and that a replay reaches a
// group while it runs.
func exerciseEventsReplay(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"ReplayFromIDAndTime", eventsReplayFromIDAndTime},
		{"ReplayReachesARunningGroup", eventsReplayReachesARunningGroup},
	})
}

func eventsReplayFromIDAndTime(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	clock := testdb.NewClock()
	// Steady timings: a shared group is at least once, and a 400 ms partition lease lost
	// under a loaded machine would hand an event out twice, past the exact counts below.
	cfg := testnode.Steady()
	cfg.Clock = clock
	a := backend.node(t, db, "svc", cfg)
	ids1, err := a.Events().Publish(ctx, msgs("t", 5, 1)...)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	mark := clock.Now()
	ids2, err := a.Events().Publish(ctx, msgs("t", 5, 1)...)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	c := subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 2, Handle: rec.handler("a")})
	testnode.Eventually(t, 20*time.Second, "first pass", func() bool { return len(rec.all()) == 10 })
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Events().Replay(ctx, "g", &events.ReplayOpts{FromTime: mark}); err != nil {
		t.Fatal(err)
	}
	if lag, err := a.Events().Lag(ctx, "g"); err != nil || lag.Pending != 5 {
		t.Fatalf("after replay from time: %+v, %v", lag, err)
	}
	if err := a.Events().Replay(ctx, "g", &events.ReplayOpts{FromID: ids1[3]}); err != nil {
		t.Fatal(err)
	}
	if lag, err := a.Events().Lag(ctx, "g"); err != nil || lag.Pending != 7 {
		t.Fatalf("after replay from id: %+v, %v", lag, err)
	}
	rec2 := newRecorder()
	subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 2, Handle: rec2.handler("a")})
	testnode.Eventually(t, 20*time.Second, "second pass", func() bool { return len(rec2.all()) == 7 })
	want := append(ids1[3:], ids2...)
	var got []int64
	for _, e := range rec2.all() {
		got = append(got, e.ID)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	if err := a.Events().Replay(ctx, "nope", nil); !errors.Is(err, events.ErrNoGroup) {
		t.Fatalf("Replay of an unknown group: %v", err)
	}
}

func eventsReplayReachesARunningGroup(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	a := backend.node(t, db, "svc", testnode.Fast())
	rec := newRecorder()
	subscribe(t, a, events.GroupConfig{Name: "g", Topics: []string{"t"}, Partitions: 1, Handle: rec.handler("a")})
	if _, err := a.Events().Publish(ctx, msgs("t", 3, 1)...); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 20*time.Second, "first pass", func() bool { return len(rec.all()) == 3 })
	if err := a.Events().Replay(ctx, "g", nil); err != nil {
		t.Fatal(err)
	}
	// The idle reader notices at its next poll (1 s by default).
	testnode.Eventually(t, 30*time.Second, "the replay", func() bool { return len(rec.all()) == 6 })
}
