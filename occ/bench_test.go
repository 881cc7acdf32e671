package occ_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/occ"
	"github.com/twicehq/twice/store"
)

// BenchmarkPreconditions measures the per-request cost of the preconditions middleware with
// a version lookup on the store: a GET answered 304 from If-None-Match, a PUT whose
// If-Match matches (the handler's versioned update included), and a request with no
// precondition.
//
//	go test ./occ -run '^$' -bench . -benchtime 2s
func BenchmarkPreconditions(b *testing.B) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			s, v := setup(b, testdb.New(b, d))
			h := docServer(b, s, v, occ.HTTPConfig{}, nil)
			run := func(b *testing.B, method string, header func() []string, want int) {
				b.ReportAllocs()
				for b.Loop() {
					if res := request(h, method, "/doc?title=x", header()...); res.StatusCode != want {
						b.Fatalf("status %d, want %d", res.StatusCode, want)
					}
				}
			}
			b.Run("NoPrecondition", func(b *testing.B) {
				run(b, http.MethodGet, func() []string { return nil }, http.StatusOK)
			})
			current := func() string {
				var ver int64
				if err := s.QueryRow(context.Background(), "SELECT version FROM docs WHERE id = 1").Scan(&ver); err != nil {
					b.Fatal(err)
				}
				return occ.ETag(ver)
			}
			etag := current()
			b.Run("IfNoneMatch304", func(b *testing.B) {
				run(b, http.MethodGet, func() []string { return []string{"If-None-Match", etag} }, http.StatusNotModified)
			})
			b.Run("IfMatchUpdate", func(b *testing.B) {
				run(b, http.MethodPut, func() []string { return []string{"If-Match", "*"} }, http.StatusNoContent)
			})
		})
	}
}
