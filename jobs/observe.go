package jobs

import "time"

// Attempt describes one attempt of a job that ended on this instance, as an observer set
// with [Client.Observe] sees it.
type Attempt struct {
	Queue string
	Kind  string
	// State is where the attempt left the job: [Completed], [Cancelled], [Discarded], or
	// [Available] when it runs again (a retry, a snooze, a hand-back on shutdown).
	State State
	// Wait is how long the job waited in its queue before this attempt: from its scheduled
	// time to the attempt's start, both in database time.
	Wait time.Duration
	// Run is how long the attempt ran, on this instance's monotonic clock.
	Run time.Duration
}

// Observe sets fn to be called on the worker's goroutine each time an attempt of a job ends
// on this instance, before its outcome is recorded; nil stops it. It replaces the observer
// set before. fn must be quick and must not block: it delays the job's slot (package
// metrics observes histograms here). Setting it starts nothing, so it may be called before
// the client is used.
func (c *Client) Observe(fn func(Attempt)) {
	if fn == nil {
		c.observer.Store(nil)
		return
	}
	c.observer.Store(&fn)
}

// observe tells the observer, if any, that row's attempt ended in res after running since
// start.
func (c *Client) observe(row *Row, res result, start time.Time) {
	fn := c.observer.Load()
	if fn == nil {
		return
	}
	(*fn)(Attempt{Queue: row.Queue, Kind: row.Kind, State: stateOf(res.state),
		Wait: max(row.AttemptedAt.Sub(row.ScheduledAt), 0), Run: time.Since(start)})
}
