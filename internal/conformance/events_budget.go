package conformance

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
)

// exerciseEventsBudget checks that a group's reads hold a bounded number of bytes: each read
// stops at MaxBatchBytes (but takes at least one event), and MaxBytes bounds the reads in
// hand across partitions.
func exerciseEventsBudget(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"ReadStopsAtTheByteBudget", eventsReadStopsAtTheByteBudget},
		{"GroupBudgetSpansPartitions", eventsGroupBudgetSpansPartitions},
	})
}

func eventsReadStopsAtTheByteBudget(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", testnode.Fast())
	sizes := []int{1000, 1000, 1000, 1000, 1000, 5000, 1000, 1000, 1000}
	var ms []events.Message
	for i, size := range sizes {
		ms = append(ms, events.Message{Topic: "blob", Key: "k", Payload: bytes.Repeat([]byte{byte('a' + i)}, size)})
	}
	if _, err := n.Events().Publish(ctx, ms...); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var batches [][]int // the payload sizes of each batch handled
	subscribe(t, n, events.GroupConfig{Name: "budget", Topics: []string{"blob"}, Partitions: 1, MaxBatchBytes: 2500,
		HandleBatch: func(_ context.Context, evs []events.Event) error {
			var b []int
			for _, e := range evs {
				b = append(b, len(e.Payload))
			}
			mu.Lock()
			batches = append(batches, b)
			mu.Unlock()
			return nil
		}})
	handled := func() int {
		mu.Lock()
		defer mu.Unlock()
		total := 0
		for _, b := range batches {
			total += len(b)
		}
		return total
	}
	testnode.Eventually(t, 20*time.Second, "every event handled", func() bool { return handled() == len(sizes) })
	mu.Lock()
	defer mu.Unlock()
	two := false
	for _, b := range batches {
		sum := 0
		for _, s := range b {
			sum += s
		}
		if sum > 2500 && len(b) > 1 {
			t.Errorf("a read of %d bytes in %d events passed its budget of 2500: %v", sum, len(b), batches)
		}
		if sum == 5000 && len(b) != 1 {
			t.Errorf("the event larger than the budget was not read alone: %v", batches)
		}
		two = two || len(b) == 2
	}
	if !two {
		t.Errorf("no read took two events, which fit the budget: %v", batches)
	}
}

// With MaxBytes equal to one read's budget, two partitions on one instance never hold
// events at once: the second read waits until the first batch is handled.
func eventsGroupBudgetSpansPartitions(t *testing.T, backend Backend) {
	ctx := context.Background()
	db := testdb.New(t, backend.Dialect)
	n := backend.node(t, db, "svc", testnode.Fast())
	var inside, worst, done atomic.Int32
	subscribe(t, n, events.GroupConfig{Name: "budget", Topics: []string{"blob"}, Partitions: 2, MaxBatchBytes: 2500,
		MaxBytes: 2500, HandleBatch: func(_ context.Context, evs []events.Event) error {
			raiseTo(&worst, inside.Add(1))
			time.Sleep(5 * time.Millisecond)
			inside.Add(-1)
			done.Add(int32(len(evs)))
			return nil
		}})
	var ms []events.Message
	for i := range 40 {
		ms = append(ms, events.Message{Topic: "blob", Key: strconv.Itoa(i), Payload: bytes.Repeat([]byte{'x'}, 1000)})
	}
	if _, err := n.Events().Publish(ctx, ms...); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 30*time.Second, "every event handled", func() bool { return done.Load() == 40 })
	if w := worst.Load(); w != 1 {
		t.Errorf("%d partitions held their events at once within a group budget of one read", w)
	}
}
