// Package loop runs the background work of twice's building blocks: one goroutine per
// loop that does a step at start, whenever it is kicked and whenever the wait the last step
// asked for has passed, until it is stopped. It replaces the kick, stop and done channels
// every block used to write out by hand, and holds the backoff and the named timeouts they
// share.
package loop

import (
	"context"
	"sync"
	"time"
)

// Forever, returned by a [Step], waits for the next [Loop.Kick] however long it takes.
const Forever time.Duration = -1

// A Step does one round of a loop's work and returns how long to wait before the next
// round, unless the loop is kicked sooner: 0 runs the next round at once, [Forever] waits
// for a kick. ctx ends when the loop is stopped.
type Step func(ctx context.Context) time.Duration

// Loop is a goroutine running a [Step] until [Loop.Stop]. The zero Loop is not usable: make
// one with [Start].
type Loop struct {
	kick   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Start runs step on a goroutine of its own: at once, then as step asks.
func Start(step Step) *Loop { return StartAfter(0, step) }

// StartAfter is [Start] with the first round after wait (or a kick), for loops whose first
// round has nothing to do yet.
func StartAfter(wait time.Duration, step Step) *Loop {
	l := newLoop()
	go l.run(wait, step)
	return l
}

// StartEvery runs step on a goroutine of its own each time d passes and whenever it is
// kicked; the first round is after d or the first kick. The beat is fixed, as a
// [time.Ticker]'s: a kicked or slow round does not move the next one, and a beat missed
// during a slow round runs at once after it. It is the shape of a poll that a signal can
// bring forward (a heartbeat, a settings poll, a bus poller).
func StartEvery(d time.Duration, step func(ctx context.Context)) *Loop {
	l := newLoop()
	go l.runEvery(d, step)
	return l
}

func newLoop() *Loop {
	ctx, cancel := context.WithCancel(context.Background())
	return &Loop{kick: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

func (l *Loop) run(wait time.Duration, step Step) {
	defer close(l.done)
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		if wait != 0 {
			var tick <-chan time.Time
			if wait > 0 {
				if t == nil {
					t = time.NewTimer(wait)
				} else {
					t.Reset(wait)
				}
				tick = t.C
			}
			select {
			case <-l.ctx.Done():
				return
			case <-l.kick:
			case <-tick:
			}
			if t != nil {
				t.Stop()
			}
		}
		if l.ctx.Err() != nil {
			return
		}
		wait = step(l.ctx)
	}
}

func (l *Loop) runEvery(d time.Duration, step func(ctx context.Context)) {
	defer close(l.done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.kick:
		case <-t.C:
		}
		if l.ctx.Err() != nil {
			return
		}
		step(l.ctx)
	}
}

// Kick makes the loop run its next round now, or right after the round in progress. Kicks
// while one is pending merge into it; Kick never blocks.
func (l *Loop) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Stop cancels the context of the round in progress and waits for the loop to end. It is
// idempotent and safe to call from several goroutines, but not from the step itself.
func (l *Loop) Stop() {
	l.once.Do(l.cancel)
	<-l.done
}

// Stopping is closed once [Loop.Stop] has been called.
func (l *Loop) Stopping() <-chan struct{} { return l.ctx.Done() }

// Done is closed once the loop has ended.
func (l *Loop) Done() <-chan struct{} { return l.done }

// Sleep waits for d or until ctx ends, and reports whether the whole d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Every calls fn each time d passes, until ctx ends; the first call is after d. It is the
// shape of a leader's upkeep: fn's ctx is the term's. fn is never called once ctx has
// ended: when a call outlasts d, the ticker's next tick is already waiting, and a select
// picks at random between it and ctx's end (the dashboard's refresher, stopping itself
// from fn, read the database once more with nobody watching).
func Every(ctx context.Context, d time.Duration, fn func(ctx context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ctx.Err() != nil {
			return
		}
		fn(ctx)
	}
}
