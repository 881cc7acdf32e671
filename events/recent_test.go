package events_test

import (
	"context"
	"errors"
	"testing"

	"github.com/twicehq/twice/events"
)

// Recent reads a topic's newest events first, only that topic's, and refuses a limit
// outside 1 to MaxLoad.
func TestRecent(t *testing.T) {
	node, cleanup := openNode()
	defer cleanup()
	ctx := context.Background()
	evs := node.Events()
	if _, err := evs.Publish(ctx, events.Message{Topic: "a", Key: "1"}, events.Message{Topic: "b", Key: "2"}, events.Message{Topic: "a", Key: "3"}); err != nil {
		t.Fatal(err)
	}
	got, err := evs.Recent(ctx, "a", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Key != "3" || got[1].Key != "1" {
		t.Fatalf("Recent(a) = %+v; want keys 3, 1", got)
	}
	if got, err := evs.Recent(ctx, "a", 1); err != nil || len(got) != 1 || got[0].Key != "3" {
		t.Fatalf("Recent(a, 1) = %+v, %v; want key 3", got, err)
	}
	if got, err := evs.Recent(ctx, "", 10); err != nil || len(got) != 3 || got[1].Topic != "b" {
		t.Fatalf(`Recent("") = %+v, %v; want all three, newest first`, got, err)
	}
	for _, limit := range []int{0, -1, events.MaxLoad + 1} {
		if _, err := evs.Recent(ctx, "a", limit); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("Recent with limit %d: %v; want ErrInvalid", limit, err)
		}
	}
}
