package forward

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"testing"
	"time"
)

func TestAppendForwarded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		remote                string
		in                    http.Header
		xff, xfp, fwd, xfhost string
	}{
		{remote: "192.0.2.1:5000", in: http.Header{}, xff: "192.0.2.1", xfp: "http"},
		{remote: "[2001:db8::1]:5000", in: http.Header{"X-Forwarded-For": {"203.0.113.9", "198.51.100.2"},
			"X-Forwarded-Proto": {"https"}, "Forwarded": {"for=203.0.113.9;proto=https"}, "X-Forwarded-Host": {"app.example"}},
			xff: "203.0.113.9, 198.51.100.2, 2001:db8::1", xfp: "https, http",
			fwd: `for=203.0.113.9;proto=https, for="[2001:db8::1]";proto=http`, xfhost: "app.example"},
		{remote: "", in: http.Header{"X-Forwarded-For": {"203.0.113.9"}}, xff: "203.0.113.9", xfp: "http"},
	} {
		in := httptest.NewRequest(http.MethodGet, "/", nil)
		in.RemoteAddr, in.Header = tc.remote, tc.in
		pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
		pr.Out.Header = http.Header{}
		appendForwarded(pr)
		h := pr.Out.Header
		if h.Get("X-Forwarded-For") != tc.xff || h.Get("X-Forwarded-Proto") != tc.xfp || h.Get("Forwarded") != tc.fwd ||
			h.Get("X-Forwarded-Host") != tc.xfhost {
			t.Errorf("remote %q, in %v: out %v", tc.remote, tc.in, h)
		}
	}
}

func TestRefusalsAreLoggedOnceAMinute(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	f, err := New(Config{Secret: testSecret, Service: "svc", Instance: "b", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Key:    func(*http.Request) (string, bool) { return "k", true },
		Locate: func(string) (Target, error) { return Target{Self: true}, nil },
		Now:    func() time.Time { return time.Unix(1e9, 0) }}) // a minute never passes
	if err != nil {
		t.Fatal(err)
	}
	h := f.Middleware(http.NotFoundHandler())
	for range 5 {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set(HopHeader, "forged")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Fatalf("status %d", rec.Code)
		}
	}
	if n := strings.Count(logs.String(), "refused a request"); n != 1 {
		t.Fatalf("%d warnings for 5 refusals:\n%s", n, logs.String())
	}
	if f.Stats().Refused != 5 {
		t.Fatalf("stats %+v", f.Stats())
	}
}
