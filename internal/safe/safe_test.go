package safe

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
)

func TestCall(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var count atomic.Int64
	cause := errors.New("cause")

	if err := Call(log, &count, "test: fn", func() error { return cause }); err != cause {
		t.Fatalf("Call passed %v through, want fn's own error", err)
	}
	if count.Load() != 0 || buf.Len() != 0 {
		t.Fatalf("an error that is not a panic was counted (%d) or logged (%q)", count.Load(), buf.String())
	}

	err := Call(log, &count, "test: fn", func() error { panic(cause) })
	var pe *PanicError
	if !errors.As(err, &pe) || pe.What != "test: fn" || !errors.Is(err, cause) {
		t.Fatalf("Call of a panicking fn = %v, want a *PanicError wrapping the panic value", err)
	}
	if err.Error() != "test: fn panicked: cause" {
		t.Errorf("error text %q", err.Error())
	}
	if !strings.Contains(buf.String(), "test: fn panicked") || !strings.Contains(buf.String(), "safe_test.go") {
		t.Errorf("log lacks the panic or its stack: %q", buf.String())
	}
	if !Do(nil, &count, "test: do", func() { panic(nil) }) {
		t.Error("Do reported no panic for panic(nil)")
	}
	if Do(log, nil, "test: do", func() {}) {
		t.Error("Do reported a panic for a function that returned")
	}
	if count.Load() != 2 {
		t.Errorf("count = %d, want 2", count.Load())
	}
}
