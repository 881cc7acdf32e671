package bus

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/loop"
)

// flaky is a send that fails its first fails calls.
type flaky struct {
	mu    sync.Mutex
	fails int
	calls int
	sent  [][]wire
}

func (f *flaky) send(_ context.Context, msgs []wire) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.fails {
		return errors.New("connection reset")
	}
	f.sent = append(f.sent, msgs)
	return nil
}

func (f *flaky) count() (calls, sent int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, len(f.sent)
}

// A batch whose send fails transiently is sent again: a lost signal would cost the receivers
// that trust the bus their whole Backstop.
func TestBatchSendRetried(t *testing.T) {
	f := &flaky{fails: 2}
	b := newBatcher(0, f.send)
	defer b.close()
	if err := b.publish(context.Background(), wire{C: "c", F: "a"}); err != nil {
		t.Fatalf("publish after two failed sends: %v", err)
	}
	if calls, sent := f.count(); calls != 3 || sent != 1 {
		t.Fatalf("%d sends, %d succeeded; want the third to carry the batch", calls, sent)
	}
}

// A send that keeps failing is given up after sendAttempts, and its publishers hear why.
func TestBatchSendGivenUp(t *testing.T) {
	f := &flaky{fails: 1 << 30}
	b := newBatcher(0, f.send)
	defer b.close()
	if err := b.publish(context.Background(), wire{C: "c", F: "a"}); err == nil {
		t.Fatal("publish reported success for a batch never sent")
	}
	if calls, _ := f.count(); calls != sendAttempts {
		t.Fatalf("%d sends, want %d", calls, sendAttempts)
	}
}

// Close does not wait out the retries of a failing send.
func TestBatchCloseCutsRetries(t *testing.T) {
	f := &flaky{fails: 1 << 30}
	b := newBatcher(0, f.send)
	b.backoff = loop.Backoff{Min: time.Hour, Max: time.Hour}
	res := make(chan error, 1)
	go func() { res <- b.publish(context.Background(), wire{C: "c", F: "a"}) }()
	for {
		if calls, _ := f.count(); calls > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	b.close()
	if err := <-res; err == nil {
		t.Fatal("publish reported success for a batch never sent")
	}
	if calls, _ := f.count(); calls != 1 {
		t.Fatalf("%d sends; close should have cut the hour's wait after the first (%v)", calls, time.Since(start))
	}
}

// The pacer lets a quiet spell's first sends go at once, burst of them, then spaces the
// sends one window apart while they keep coming, and forgets the load once it has passed.
func TestPacerSpacesSendsUnderLoadOnly(t *testing.T) {
	const w = 4 * time.Millisecond
	p := pacer{window: w, burst: 2}
	t0 := time.Unix(1000, 0)
	at := func(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }
	steps := []struct {
		ready float64 // when a send is ready, in ms
		wait  float64 // how long it must wait, in ms
	}{
		{0, 0}, // the first send goes at once
		{0, 0}, // and a second with it: the burst
		{0, 4}, // a third waits a window
		{4, 4}, // under load, one per window
		{8.5, 3.5},
		{50, 0}, // after a quiet spell, at once again
		{50, 0}, // with the burst
		{51, 3}, // then one window after the burst began
		{100, 0},
		{105, 0}, // a light rate, with one close behind another: no waits
		{108, 0},
		{115, 0},
	}
	for i, s := range steps {
		got := p.wait(at(s.ready))
		if want := time.Duration(s.wait * float64(time.Millisecond)); got != want {
			t.Fatalf("step %d: a send ready at %v ms waits %v, want %v", i, s.ready, got, want)
		}
		p.sent(at(s.ready).Add(got))
	}
}
