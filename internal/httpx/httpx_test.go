package httpx

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
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

// A recorder keeps at most its limit in memory; a larger body goes to a file, comes back
// whole, and the file goes with Close.
func TestRecorderSpillsPastItsLimit(t *testing.T) {
	t.Parallel()
	r := NewRecorder(10)
	_, _ = r.Write([]byte("0123456789"))
	if r.Spilled() || r.body.Len() != 10 {
		t.Fatalf("spilled %v at the limit", r.Spilled())
	}
	for range 3 {
		if n, err := r.Write([]byte("abcdefgh")); n != 8 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	status, _, body := r.Result()
	if !r.Spilled() || r.body.Len() != 0 || body != nil || status != http.StatusOK {
		t.Fatalf("after 34 bytes: spilled %v, %d bytes in memory, body %q", r.Spilled(), r.body.Len(), body)
	}
	var out strings.Builder
	if err := r.WriteBody(&out); err != nil || out.String() != "0123456789abcdefghabcdefghabcdefgh" {
		t.Fatalf("WriteBody = %q, %v", out.String(), err)
	}
	name := r.file.Name()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", name, err)
	}
}
