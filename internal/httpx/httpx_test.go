package httpx

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// codes records the status codes written to it; httptest.ResponseRecorder would take a 1xx
// for the final status.
type codes struct {
	http.ResponseWriter
	got []int
}

func (c *codes) WriteHeader(code int) { c.got = append(c.got, code) }

// The rule every middleware with a before-headers hook relies on: informational responses
// pass through without running the hook, and only the final status counts as written.
func TestHookWriterInformational(t *testing.T) {
	t.Parallel()
	for _, first := range []int{http.StatusContinue, http.StatusProcessing, http.StatusEarlyHints} {
		w := &codes{ResponseWriter: httptest.NewRecorder()}
		ran := 0
		h := &HookWriter{ResponseWriter: w, Before: func() bool { ran++; return true }}
		h.WriteHeader(first)
		if ran != 0 || h.HeadersWritten() {
			t.Errorf("%d: hook ran %d times, headers written %v", first, ran, h.HeadersWritten())
		}
		h.WriteHeader(http.StatusOK)
		if ran != 1 || !h.HeadersWritten() || len(w.got) != 2 || w.got[0] != first || w.got[1] != http.StatusOK {
			t.Errorf("%d then 200: hook ran %d times, written %v", first, ran, w.got)
		}
	}
	// 101 ends the HTTP exchange: the hook runs before it.
	w := &codes{ResponseWriter: httptest.NewRecorder()}
	ran := 0
	h := &HookWriter{ResponseWriter: w, Before: func() bool { ran++; return true }}
	h.WriteHeader(http.StatusSwitchingProtocols)
	if ran != 1 || !h.HeadersWritten() {
		t.Errorf("101: hook ran %d times, headers written %v", ran, h.HeadersWritten())
	}
	// A hook that wrote its own response swallows later informational statuses too.
	w = &codes{ResponseWriter: httptest.NewRecorder()}
	h = &HookWriter{ResponseWriter: w, Before: func() bool { return false }}
	h.WriteHeader(http.StatusOK)
	h.WriteHeader(http.StatusEarlyHints)
	if len(w.got) != 0 {
		t.Errorf("after a dropped response: %v", w.got)
	}
}
