package notify_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/twicehq/twice/internal/notify"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Calls are made in order, one at a time; a panic is counted and the later calls go on;
// Close hands out what was queued before it, and nothing added after.
func TestQueueCallsInOrderAndDrains(t *testing.T) {
	var panics atomic.Int64
	q := notify.New(slog.New(slog.DiscardHandler), &panics, "test: callback")
	var mu sync.Mutex
	var got []int
	for i := range 100 {
		q.Add(func() {
			if i == 50 {
				panic("boom")
			}
			mu.Lock()
			got = append(got, i)
			mu.Unlock()
		})
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	q.Add(func() { t.Error("called after Close") })
	var want []int
	for i := range 100 {
		if i != 50 {
			want = append(want, i)
		}
	}
	if !slices.Equal(got, want) || panics.Load() != 1 {
		t.Fatalf("calls %v, panics %d", got, panics.Load())
	}
}

// A callback that never returns cannot hold Close past its context; a queue that never
// got a call starts no goroutine and closes at once.
func TestCloseIsBoundedByItsContext(t *testing.T) {
	if err := notify.New(nil, nil, "idle").Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	q := notify.New(slog.New(slog.DiscardHandler), nil, "test: callback")
	release := make(chan struct{})
	started := make(chan struct{})
	q.Add(func() { close(started); <-release })
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := q.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v", err)
	}
	close(release)
	if err := q.Close(context.Background()); err != nil {
		t.Fatalf("a second Close once the callback returned: %v", err)
	}
}
