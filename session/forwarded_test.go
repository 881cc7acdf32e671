package session

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

// FuzzOverTLS puts whatever a client may send in front of what one trusted, appending proxy
// adds, and checks that only the proxy's word counts: the client can never turn the
// proxy's https into "not TLS", nor its http into TLS, nor make an untrusted peer
// believed.
//
//	go test ./session -run '^$' -fuzz FuzzOverTLS -fuzztime 30s
func FuzzOverTLS(f *testing.F) {
	for _, s := range []struct {
		xfp, xff, fwd string
	}{
		{"", "", ""},
		{"http", "10.0.0.9", "for=10.0.0.9;proto=http"},
		{"https,https", "10.0.0.1, 10.0.0.2", `for="[::1]:80";proto=https`},
		{"HTTPS", "unknown", `proto=https;for=_hidden, for=10.0.0.1`},
		{"", "", `for="x`},
		{"", "", `for="\"`},
		{"", "", `for=a;for=b`},
		{"", "", `;;,, ;proto=https,`},
		{"", "", "proto=\"a\\\"b\""},
	} {
		f.Add(s.xfp, s.xff, s.fwd, true, false)
		f.Add(s.xfp, s.xff, s.fwd, false, true)
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	f.Fuzz(func(t *testing.T, xfp, xff, fwd string, https, ownLine bool) {
		for _, v := range []string{xfp, xff, fwd} {
			for i := 0; i < len(v); i++ {
				if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
					t.Skip("not a valid field value")
				}
			}
		}
		proto := "http"
		if https {
			proto = "https"
		}
		// The proxy at 10.1.1.1 serves client 192.0.2.7 and appends to every header.
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = "10.1.1.1:443"
		for name, v := range map[string][2]string{
			"X-Forwarded-Proto": {xfp, proto},
			"X-Forwarded-For":   {xff, "192.0.2.7"},
			"Forwarded":         {fwd, "for=192.0.2.7;proto=" + proto},
		} {
			switch {
			case v[0] == "":
				r.Header.Set(name, v[1])
			case ownLine:
				r.Header[name] = []string{v[0], v[1]}
			default:
				r.Header.Set(name, v[0]+", "+v[1])
			}
		}
		if got := overTLS(r, trusted); got != https {
			t.Fatalf("proxy said %s, client sent X-Forwarded-Proto %q, X-Forwarded-For %q, Forwarded %q: overTLS = %v",
				proto, xfp, xff, fwd, got)
		}
		// The same headers straight from an untrusted peer mean nothing.
		r.RemoteAddr = "192.0.2.7:1234"
		if overTLS(r, trusted) {
			t.Fatal("an untrusted peer's headers were believed")
		}
		// The parser never panics on the client's part alone, and returns no more than it
		// was given.
		if hops, ok := parseForwarded([]string{fwd}); ok {
			for _, h := range hops {
				if len(h.from) > len(fwd) || len(h.proto) > len(fwd) {
					t.Fatalf("%q parsed into %+v", fwd, hops)
				}
			}
		}
	})
}
