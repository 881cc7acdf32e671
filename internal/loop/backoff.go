package loop

import (
	"log/slog"
	"math/rand/v2"
	"time"
)

// Backoff is the wait between attempts of something that failed: it starts at Min, doubles
// after each failure up to Max, and goes back to Min on [Backoff.Reset]. Each wait is
// spread by ±10% so instances that failed together do not retry together. The zero value
// waits [Retry]'s times.
type Backoff struct {
	// Min is the first wait. Defaults to Retry.Min.
	Min time.Duration
	// Max is the longest wait. Defaults to Retry.Max.
	Max time.Duration

	cur time.Duration
}

// The backoffs the blocks share.
var (
	// Retry is for background statements that failed because the database did not answer:
	// soon at first, then every few seconds while it stays away.
	Retry = Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	// Urgent is for writes others wait for (finished jobs, a request's outcome): a blip
	// should cost milliseconds, an outage at most a second between tries.
	Urgent = Backoff{Min: 10 * time.Millisecond, Max: time.Second}
)

// Next returns the wait before the next attempt and lengthens the one after.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = Retry.Min
	}
	if hi < lo {
		hi = max(Retry.Max, lo)
	}
	if b.cur < lo {
		b.cur = lo
	}
	d := b.cur
	b.cur = min(2*b.cur, hi)
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// Reset makes the next wait Min again, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Timeouts of background work that no caller's context bounds. Each names what it waits
// for, so the same wait has the same length in every block.
const (
	// StatementTimeout bounds one statement of a background loop (a fetch, a checkpoint, a
	// refresh): longer than any healthy statement, short enough that a loop stuck on a dead
	// connection tries a new one.
	StatementTimeout = 10 * time.Second
	// BatchTimeout bounds a statement that handles a whole batch (finishing a thousand jobs,
	// firing the ticks of every schedule).
	BatchTimeout = 30 * time.Second
	// ReleaseTimeout bounds handing something back on the way out (a lease, a claim, the
	// parts of a half-opened node, an HTTP server's connections): if the other side does
	// not answer, the thing expires by itself.
	ReleaseTimeout = 5 * time.Second
	// CloseTimeout bounds closing a whole node that no caller's context bounds (a process
	// shutting down on a signal): its blocks finish what they hold and hand it back.
	CloseTimeout = 10 * time.Second
	// SignalTimeout bounds sending a bus signal that is only a hint.
	SignalTimeout = time.Second
)

// Failing logs the turns of a task repeated in the background (a poll): a warning when it
// starts failing, and a note when it works again, not a line per round. Only the loop
// running the task touches it.
type Failing struct {
	failing bool
}

// Report records the outcome of a round: err, or nil when it worked. failMsg is logged,
// with err, when the task starts failing, okMsg when it works again.
func (f *Failing) Report(log *slog.Logger, err error, failMsg, okMsg string) {
	switch {
	case err != nil && !f.failing:
		log.Warn(failMsg, "err", err)
		f.failing = true
	case err == nil && f.failing:
		log.Info(okMsg)
		f.failing = false
	}
}
