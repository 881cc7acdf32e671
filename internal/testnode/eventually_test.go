package testnode

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// recorder is a test that records its failure instead of failing the real one.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run runs fn as the test body of r, on its own goroutine as the testing package does.
func (r *recorder) run(fn func(t testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
}

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	t.Parallel()
	calls := 0
	Eventually(t, 10*time.Second, "the third call", func() bool { calls++; return calls == 3 })
	if calls != 3 {
		t.Fatalf("%d calls, want 3", calls)
	}
}

func TestEventuallyFailsNamingWhat(t *testing.T) {
	t.Parallel()
	r := &recorder{TB: t}
	r.run(func(t testing.TB) { Eventually(t, 30*time.Millisecond, "the impossible", func() bool { return false }) })
	if !strings.Contains(r.failed, "the impossible: not within 30ms") {
		t.Fatalf("failure %q", r.failed)
	}
}

func TestEventuallyNilReportsTheLastError(t *testing.T) {
	t.Parallel()
	calls := 0
	EventuallyNil(t, 10*time.Second, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("%d calls, want 3", calls)
	}
	r := &recorder{TB: t}
	seen := 0
	r.run(func(t testing.TB) {
		EventuallyNil(t, 30*time.Millisecond, func() error { seen++; return fmt.Errorf("seen %d", seen) })
	})
	if want := fmt.Sprintf("not within 30ms: seen %d", seen); r.failed != want {
		t.Fatalf("failure %q, want %q", r.failed, want)
	}
}
