package idempotency_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/idempotency"
)

// A client retries a POST with the same Idempotency-Key: the handler runs once and the
// retry gets the stored response.
func Example() {
	dir, _ := os.MkdirTemp("", "twice-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "shop.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	orders := 0
	app := node.Idempotency().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		orders++
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "order %d", orders)
	}))
	post := func(body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
		r.Header.Set(idempotency.Header, `"3f1c7a52-9a8e-4d3b-b0a1-5f1e2d3c4b5a"`)
		w := httptest.NewRecorder()
		app.ServeHTTP(w, r)
		return w
	}
	first := post(`{"sku":"apple"}`)
	retry := post(`{"sku":"apple"}`)
	other := post(`{"sku":"pear"}`)
	fmt.Println(first.Code, first.Body.String())
	fmt.Println(retry.Code, retry.Body.String(), "replayed:", retry.Header().Get(idempotency.ReplayedHeader))
	fmt.Println(other.Code, other.Header().Get("Content-Type"))
	fmt.Println("orders placed:", orders)
	// Output:
	// 201 order 1
	// 201 order 1 replayed: true
	// 422 application/problem+json
	// orders placed: 1
}
