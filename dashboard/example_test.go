package dashboard_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/dashboard"
)

// The dashboard mounted under /admin/ in the application's own mux, behind a token.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "twice-dashboard-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "twice.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	d, err := dashboard.Handler(node, dashboard.Config{Token: "s3cret"})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	mux := http.NewServeMux()
	mux.Handle("/admin/", http.StripPrefix("/admin", d))

	for _, token := range []string{"", "s3cret"} {
		req := httptest.NewRequest("GET", "/admin/jobs", nil)
		if token != "" {
			req.SetBasicAuth("alice", token)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	}
	// Output:
	// 401 text/plain; charset=utf-8
	// 200 text/html; charset=utf-8
}
