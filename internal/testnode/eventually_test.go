package testnode

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

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
	failed := Failure(t, func(t testing.TB) { Eventually(t, 30*time.Millisecond, "the impossible", func() bool { return false }) })
	if !strings.Contains(failed, "the impossible: not within 30ms") {
		t.Fatalf("failure %q", failed)
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
	seen := 0
	failed := Failure(t, func(t testing.TB) {
		EventuallyNil(t, 30*time.Millisecond, func() error { seen++; return fmt.Errorf("seen %d", seen) })
	})
	if want := fmt.Sprintf("not within 30ms: seen %d", seen); failed != want {
		t.Fatalf("failure %q, want %q", failed, want)
	}
}
