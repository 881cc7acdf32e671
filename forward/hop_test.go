package forward

import (
	"bytes"
	"crypto/sha256"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func TestHopRoundTrips(t *testing.T) {
	t.Parallel()
	f := testForwarder(t)
	s := signed{method: "POST", uri: "/k/1?x=y", body: sha256.Sum256([]byte("body"))}
	h := sign(f.key, "a.b-1", "c/d é", time.UnixMilli(1700000000123), s)
	got, err := parseHop(h.String())
	if err != nil {
		t.Fatal(err)
	}
	if got.from != h.from || got.to != h.to || got.at != h.at || !bytes.Equal(got.tag, h.tag) {
		t.Fatalf("parsed %+v from %+v", got, h)
	}
	if !got.verify(f.key, s) {
		t.Fatal("a hop does not verify")
	}
	for _, bad := range []string{"", "v1", "v2.YQ.Yg.1." + h.String()[len(h.String())-43:], "v1..Yg.1.x", "v1.YQ.Yg.-1.x",
		"v1.YQ.Yg.1.short", "v1.YQ.Yg.99999999999999999999." + h.String()[len(h.String())-43:], "v1.Y!.Yg.1.x"} {
		if _, err := parseHop(bad); err == nil {
			t.Errorf("parseHop(%q) accepted it", bad)
		}
	}
}

func testForwarder(t testing.TB) *Forwarder {
	f, err := New(Config{Secret: testSecret, Service: "svc", Instance: "b", Logger: slog.New(slog.DiscardHandler),
		Key:    func(*http.Request) (string, bool) { return "k", true },
		Locate: func(string) (Target, error) { return Target{Self: true}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// FuzzHopHeader feeds arbitrary HopHeader values: the parser never panics, what it accepts
// formats back to itself, and the middleware never serves a request whose header does not sign it (the genuine seed
// signs another request).
func FuzzHopHeader(f *testing.F) {
	fw := testForwarder(f)
	genuine := sign(fw.key, "a", "b", time.Now(), signed{method: "GET", uri: "/", body: sha256.Sum256(nil)})
	for _, seed := range []string{genuine.String(), "v1.YQ.Yg.1.AAAA", "v1....", "", "v1.YQ.Yg.0." + string(bytes.Repeat([]byte("A"), 43))} {
		f.Add(seed)
	}
	served := false
	h := fw.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { served = true }))
	f.Fuzz(func(t *testing.T, v string) {
		if hp, err := parseHop(v); err == nil {
			again, err := parseHop(hp.String())
			if err != nil || again.from != hp.from || again.to != hp.to || again.at != hp.at || !bytes.Equal(again.tag, hp.tag) {
				t.Fatalf("%q parses to %+v, which formats to %q: %+v, %v", v, hp, hp.String(), again, err)
			}
		}
		served = false
		req := httptest.NewRequest(http.MethodPost, "/k/1", bytes.NewReader([]byte("x")))
		req.Header[HopHeader] = []string{v}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if served || rec.Code != http.StatusForbidden {
			t.Fatalf("header %q: status %d, served %v", v, rec.Code, served)
		}
	})
}
