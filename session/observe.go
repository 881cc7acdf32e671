package session

import "time"

// The operations an observer set with [Sessions.Observe] is told about.
const (
	// OpLoad is the read of a request's session from the store.
	OpLoad = "load"
	// OpSave is the write of a session's changes (or of its renewed expiry) to the store.
	OpSave = "save"
)

// Observe sets fn to be called after each statement the sessions run against the store for
// a request: op is [OpLoad] or [OpSave], d how long it took, on this instance's monotonic
// clock. nil stops it; it replaces the observer set before. fn runs on the request's
// goroutine and must be quick (package metrics observes a histogram here).
func (m *Sessions) Observe(fn func(op string, d time.Duration)) {
	if fn == nil {
		m.observer.Store(nil)
		return
	}
	m.observer.Store(&fn)
}

// observe tells the observer, if any, that op ran since start.
func (m *Sessions) observe(op string, start time.Time) {
	if fn := m.observer.Load(); fn != nil {
		(*fn)(op, time.Since(start))
	}
}
