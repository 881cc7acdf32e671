package metrics_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/metrics"
)

// Serve a node's metrics at /metrics and count the application's requests by route.
func Example() {
	dir, err := os.MkdirTemp("", "twice-metrics-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "twice.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	// TargetLabels: the scrape configuration names the service and instance, so the
	// series below carry only their own labels.
	m, err := metrics.New(node, metrics.Config{TargetLabels: true})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "an item") })
	srv := httptest.NewServer(m.Middleware(mux))
	defer srv.Close()

	for _, path := range []string{"/items/1", "/items/2", "/nowhere"} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			log.Fatal(err)
		}
		res.Body.Close()
	}
	for !node.IsLeader() { // a service of one instance elects it at once
		time.Sleep(10 * time.Millisecond)
	}
	res, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		log.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "twice_http_requests_total") || strings.HasPrefix(line, "twice_leader ") ||
			strings.HasPrefix(line, "twice_up ") {
			fmt.Println(line)
		}
	}
	// Output:
	// twice_http_requests_total{code="2xx",method="GET",route="GET /items/{id}"} 2
	// twice_http_requests_total{code="4xx",method="GET",route="unmatched"} 1
	// twice_leader 1
	// twice_up 1
}
