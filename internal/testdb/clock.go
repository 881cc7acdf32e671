package testdb

import (
	"sync"
	"testing"
	"time"
)

// Clock is a stub database clock that tests move by hand. One Clock shared by several
// stores is one database's time, as all instances see it.
type Clock struct {
	mu sync.Mutex // protects t
	t  time.Time
}

// NewClock returns a clock at the current time.
func NewClock() *Clock { return &Clock{t: time.Now().Truncate(time.Millisecond)} }

// NewClockAt returns a clock at t, for tests whose schedules must not cross a boundary (an
// hour, a day) that the current time might be close to.
func NewClockAt(t time.Time) *Clock { return &Clock{t: t.Truncate(time.Millisecond)} }

// Now implements store.Clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// AdvanceUntil moves the clock forward by step every tenth of a second until cond holds,
// and fails t if it does not within limit (real time). It is for tests that wait for a
// loop to act on the stub clock: a loop that first looks at the clock after a single
// advance would wait for the next one, so the clock keeps moving until the loop has acted.
func (c *Clock) AdvanceUntil(t testing.TB, step, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		c.Advance(step)
		time.Sleep(100 * time.Millisecond)
	}
}
