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

	"github.com/prometheus/client_golang/prometheus"

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

// Add a node's collectors to a registry of your own, beside your application's.
func ExampleMetrics_Register() {
	dir, err := os.MkdirTemp("", "twice-metrics-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "twice.db"), Name: "shop",
		InstanceID: "shop-1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	reg := prometheus.NewRegistry()
	orders := prometheus.NewCounter(prometheus.CounterOpts{Name: "shop_orders_total", Help: "Orders placed."})
	reg.MustRegister(orders)
	m, err := metrics.New(node, metrics.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Register(reg); err != nil {
		log.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "twice_up" || f.GetName() == "shop_orders_total" {
			fmt.Print(f.GetName())
			for _, l := range f.GetMetric()[0].GetLabel() {
				fmt.Printf(" %s=%s", l.GetName(), l.GetValue())
			}
			fmt.Println()
		}
	}
	// Output:
	// shop_orders_total
	// twice_up instance_id=shop-1 service=shop
}

// Count what the middlewares around the mux answer too: MiddlewareFor names the route from
// the mux before the request reaches them.
func ExampleMetrics_MiddlewareFor() {
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
	m, err := metrics.New(node, metrics.Config{TargetLabels: true})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cart", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "empty") })
	app := m.MiddlewareFor(mux)(node.Sessions().Middleware(mux)) // the session middleware copies the request
	app.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/cart", nil))

	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for line := range strings.Lines(w.Body.String()) {
		if strings.HasPrefix(line, "twice_http_requests_total") {
			fmt.Print(line)
		}
	}
	// Output:
	// twice_http_requests_total{code="2xx",method="GET",route="GET /cart"} 1
}
