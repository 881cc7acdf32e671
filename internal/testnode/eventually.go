package testnode

import (
	"testing"
	"time"
)

// maxPoll is the longest pause between two looks at a condition. Looks start 1 ms apart
// and double, so a condition that holds at once costs nothing and one that takes seconds
// is looked at 50 times a second, not more.
const maxPoll = 20 * time.Millisecond

// Eventually calls cond until it returns true, and fails t naming what if it has not
// within limit. The limit is a liveness bound far above the time expected, not a
// measurement. cond runs on t's goroutine, so it may call t.Fatal.
func Eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for pause := time.Millisecond; !cond(); pause = min(2*pause, maxPoll) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(pause)
	}
}

// EventuallyNil calls check until it returns nil, and fails t with the last error it
// returned if that has not happened within limit: the error says what was awaited and
// what was seen instead.
func EventuallyNil(t testing.TB, limit time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for pause := time.Millisecond; ; pause = min(2*pause, maxPoll) {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", limit, err)
		}
		time.Sleep(pause)
	}
}
