package idempotency_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// BenchmarkMiddleware measures the per-request cost of the Idempotency-Key middleware in
// front of a handler that writes a small JSON body: a new key each time (claim and stored
// response), the same through HandlerTx, a replay, and a request without a key.
//
//	go test ./idempotency -run '^$' -bench Middleware -benchtime 2s
func BenchmarkMiddleware(b *testing.B) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			db := testdb.New(b, d)
			s := db.Open(b, nil)
			if _, err := store.NewMigrator(s, twice.Components()...).Up(context.Background()); err != nil {
				b.Fatal(err)
			}
			keys, err := idempotency.New(block.Deps{Store: s, Service: "bench", Instance: "bench-1"}, idempotency.Config{Scope: func(*http.Request) string { return "client:bench" }})
			if err != nil {
				b.Fatal(err)
			}
			h := keys.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				_, _ = w.Write([]byte(`{"id":42,"status":"created"}`))
			}))
			serve := func(key string) {
				r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"sku":"apple","qty":1}`))
				if key != "" {
					r.Header.Set(idempotency.Header, key)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != http.StatusCreated {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
			b.Run("NoKey", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					serve("")
				}
			})
			b.Run("NewKey", func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					i++
					serve(fmt.Sprintf("%s-%d", b.Name(), i))
				}
			})
			// HandlerTx: claim, handler and stored response in one transaction (one commit
			// where the middleware needs two).
			htx := keys.HandlerTx(func(w http.ResponseWriter, r *http.Request, tx store.Tx) error {
				w.WriteHeader(http.StatusCreated)
				_, err := w.Write([]byte(`{"id":42,"status":"created"}`))
				return err
			})
			b.Run("HandlerTxNewKey", func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					i++
					r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"sku":"apple","qty":1}`))
					r.Header.Set(idempotency.Header, fmt.Sprintf("%s-%d", b.Name(), i))
					w := httptest.NewRecorder()
					htx.ServeHTTP(w, r)
					if w.Code != http.StatusCreated {
						b.Fatalf("status %d: %s", w.Code, w.Body)
					}
				}
			})
			serve("replayed")
			b.Run("Replay", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					serve("replayed")
				}
			})
		})
	}
}
