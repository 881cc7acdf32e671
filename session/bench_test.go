package session_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/store"
)

// BenchmarkMiddleware measures the per-request cost of the session middleware in front of
// an empty handler: without a cookie, reading a stored session, and writing one key.
//
//	go test ./session -run '^$' -bench Middleware -benchtime 2s
func BenchmarkMiddleware(b *testing.B) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			bd := setup(b, testdb.New(b, d), session.Config{})
			c := sessionCookie(bd.serve(b, nil, put(b, "user", "ann", "cart", []string{"apple", "pear"})))
			run := func(b *testing.B, cookie *http.Cookie, fn http.HandlerFunc) {
				h := bd.m.Middleware(fn)
				b.ReportAllocs()
				for b.Loop() {
					r := httptest.NewRequest(http.MethodGet, "/", nil)
					if cookie != nil {
						r.AddCookie(cookie)
					}
					h.ServeHTTP(httptest.NewRecorder(), r)
				}
			}
			b.Run("Baseline", func(b *testing.B) { // the request and recorder alone, without the middleware
				b.ReportAllocs()
				for b.Loop() {
					http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
				}
			})
			b.Run("NoCookie", func(b *testing.B) { run(b, nil, func(http.ResponseWriter, *http.Request) {}) })
			b.Run("Read", func(b *testing.B) {
				run(b, c, func(w http.ResponseWriter, r *http.Request) { _, _ = session.Get[string](r.Context(), "user") })
			})
			i := 0
			b.Run("WriteOneKey", func(b *testing.B) {
				run(b, c, func(w http.ResponseWriter, r *http.Request) { i++; _ = session.Put(r.Context(), "n", i) })
			})
		})
	}
}
