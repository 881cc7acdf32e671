package testnode

import (
	"fmt"
	"runtime"
	"testing"
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

func (r *recorder) Fatal(args ...any) {
	r.failed = fmt.Sprint(args...)
	runtime.Goexit()
}

// Failure runs fn as the body of a test whose Fatal and Fatalf record the message instead
// of failing t, on a goroutine of its own as the testing package runs a test, and returns
// that message: the failure a test helper gives its caller. It fails t if fn did not fail.
func Failure(t testing.TB, fn func(t testing.TB)) string {
	t.Helper()
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	if r.failed == "" {
		t.Fatal("testnode: the recorded test did not fail")
	}
	return r.failed
}
