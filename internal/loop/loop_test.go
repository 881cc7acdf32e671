package loop

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor polls cond until it holds or the test's patience runs out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestKickRunsARound(t *testing.T) {
	var n atomic.Int32
	l := Start(func(context.Context) time.Duration { n.Add(1); return Forever })
	defer l.Stop()
	waitFor(t, "the first round", func() bool { return n.Load() == 1 })
	l.Kick()
	waitFor(t, "the kicked round", func() bool { return n.Load() == 2 })
	// Forever means no round without a kick.
	time.Sleep(20 * time.Millisecond)
	if got := n.Load(); got != 2 {
		t.Fatalf("rounds = %d without a kick, want 2", got)
	}
}

func TestStepChoosesTheWait(t *testing.T) {
	var n atomic.Int32
	l := Start(func(context.Context) time.Duration { n.Add(1); return time.Millisecond })
	defer l.Stop()
	waitFor(t, "rounds on their own", func() bool { return n.Load() >= 5 })
}

func TestStartAfterWaitsOrIsKicked(t *testing.T) {
	var n atomic.Int32
	l := StartAfter(time.Hour, func(context.Context) time.Duration { n.Add(1); return Forever })
	defer l.Stop()
	time.Sleep(20 * time.Millisecond)
	if n.Load() != 0 {
		t.Fatal("a round ran before the first wait or a kick")
	}
	l.Kick()
	waitFor(t, "the kicked first round", func() bool { return n.Load() == 1 })
}

func TestStopCancelsTheRoundAndWaits(t *testing.T) {
	started := make(chan struct{})
	var ended atomic.Bool
	l := Start(func(ctx context.Context) time.Duration {
		close(started)
		<-ctx.Done()
		ended.Store(true)
		return Forever
	})
	<-started
	l.Stop()
	if !ended.Load() {
		t.Fatal("Stop returned before the round did")
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done is open after Stop")
	}
	l.Stop() // idempotent
	l.Kick() // harmless after Stop
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 40 * time.Millisecond}
	want := []time.Duration{10, 20, 40, 40}
	for i, w := range want {
		w *= time.Millisecond
		if got := b.Next(); got < w*9/10 || got > w*11/10 {
			t.Fatalf("wait %d = %v, want %v ±10%%", i, got, w)
		}
	}
	b.Reset()
	if got := b.Next(); got > 11*time.Millisecond {
		t.Fatalf("after Reset the wait is %v, want about Min", got)
	}
	var zero Backoff
	if got := zero.Next(); got < Retry.Min*9/10 || got > Retry.Min*11/10 {
		t.Fatalf("the zero Backoff waits %v first, want Retry.Min", got)
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep reported an interruption")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep ignored its cancelled context")
	}
}

func TestEveryUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(ctx, time.Millisecond, func(context.Context) {
			if n.Add(1) == 3 {
				cancel()
			}
		})
	}()
	<-done
	if n.Load() != 3 {
		t.Fatalf("fn ran %d times, want 3", n.Load())
	}
}

// A call that outlasts the interval and ends ctx is the last: the tick already waiting
// does not bring another. Each run has it waiting, and a select between it and ctx's end
// picks at random, so without the check one run in two called fn again.
func TestEveryStopsWhenACallEndsItsContext(t *testing.T) {
	for i := range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		var n int
		Every(ctx, time.Millisecond, func(context.Context) {
			n++
			time.Sleep(3 * time.Millisecond) // the next tick is waiting by now
			cancel()
		})
		if n != 1 {
			t.Fatalf("run %d: fn ran %d times after it ended the context, want 1", i, n)
		}
	}
}

func TestStartEveryKeepsABeatAndIsKicked(t *testing.T) {
	var n atomic.Int32
	l := StartEvery(time.Hour, func(context.Context) { n.Add(1) })
	time.Sleep(20 * time.Millisecond)
	if n.Load() != 0 {
		t.Fatal("a round ran before the first beat or a kick")
	}
	l.Kick()
	waitFor(t, "the kicked round", func() bool { return n.Load() == 1 })
	l.Stop()
	l.Kick() // harmless after Stop

	n.Store(0)
	beat := StartEvery(time.Millisecond, func(context.Context) { n.Add(1) })
	defer beat.Stop()
	waitFor(t, "rounds on the beat", func() bool { return n.Load() >= 5 })
}
