package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/internal/nodehook"
	"github.com/twicehq/twice/internal/rtclient"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/metrics"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/twicetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type ping struct {
	N int `json:"n"`
}

func (ping) Kind() string { return "ping" }

// scrape fetches url and parses the exposition, failing t on any error.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %s: %s", url, res.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parsing the scrape of %s: %v", url, err)
	}
	return fams
}

// value sums the series of family name whose labels include want: counters, gauges, and
// the sample counts of histograms. ok is false when no series matches.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) (sum float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				continue next
			}
		}
		ok = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, ok
}

// A short workload on three nodes (jobs enqueued and worked, a cache miss and hit, HTTP
// requests through the middleware, a session saved, an idempotent replay, a user
// connected, a hub message delivered, a leader elected), then each node's /metrics: the expected series are there with non-zero values,
// every series carries its instance's labels, and the cluster-level gauges come from
// exactly one instance, the leader.
func TestScrapeAfterWorkloadOnThreeNodes(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		cfg := twice.Config{}
		cfg.Idempotency.Scope = func(*http.Request) string { return "tests" }
		cfg.Realtime.Authenticate = func(*http.Request) (string, error) { return "ann", nil }
		nodes := twicetest.Open(t, 3, &twicetest.Options{Store: s, Service: "shop", Config: cfg})
		ctx := context.Background()

		ms := make([]*metrics.Metrics, len(nodes))
		urls := make([]string, len(nodes))
		for i, n := range nodes {
			m, err := metrics.New(n, metrics.Config{Interval: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ms[i] = m
			srv := httptest.NewServer(m.Handler())
			t.Cleanup(srv.Close)
			urls[i] = srv.URL + "/metrics"
			if err := jobs.Register(n.Jobs(), jobs.WorkFunc[ping](func(context.Context, *jobs.Job[ping]) error { return nil })); err != nil {
				t.Fatal(err)
			}
		}

		for _, n := range nodes {
			n.Presence() // every instance uses presence, so whichever leads exports the users online
		}
		// A tick a second on the first instance, run in-process (no job row, no histogram).
		if err := nodes[0].Cron().Add("pulse", "@every 1s", ping{}, &cron.Opts{Mode: cron.EveryInstance}); err != nil {
			t.Fatal(err)
		}
		if _, err := nodes[1].Presence().Connect(ctx, "ann", "lobby"); err != nil {
			t.Fatal(err)
		}

		// A hub client on the third instance gets a message published on the first.
		hub := httptest.NewServer(nodes[2].Realtime().Handler())
		t.Cleanup(hub.Close)
		rc := rtclient.New()
		if err := rc.Connect(ctx, "ws"+strings.TrimPrefix(hub.URL, "http"), nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rc.Drop)
		if err := rc.Subscribe(ctx, "lobby"); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, 30*time.Second, "subscribed", func() bool { return rc.Position("lobby").Known })
		if _, err := nodes[0].Realtime().Publish(ctx, "lobby", "hello"); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, 30*time.Second, "the message delivered", func() bool { return len(rc.Messages("lobby")) == 1 })

		const enqueued = 6
		for i := range enqueued {
			if _, err := nodes[i%3].Jobs().Enqueue(ctx, ping{N: i}, nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := twicetest.Work(ctx, nodes[0]); err != nil {
			t.Fatal(err)
		}

		prices, err := cache.New(nodes[0].Caches(), "prices", cache.Config[string, int]{
			Load: func(context.Context, string) (int, error) { return 450, nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // a miss, then a hit
			if _, err := prices.Get(ctx, "tea"); err != nil {
				t.Fatal(err)
			}
		}

		mux := http.NewServeMux()
		mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
			_ = session.From(r.Context()).Put("seen", r.PathValue("id"))
			fmt.Fprint(w, "item")
		})
		mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
		})
		mux.HandleFunc("GET /broken", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no", http.StatusInternalServerError)
		})
		jar, _ := cookiejar.New(nil)
		client := &http.Client{Jar: jar} // the second request loads the session the first saved
		app := httptest.NewServer(ms[0].MiddlewareFor(mux)(nodes[0].Sessions().Middleware(nodes[0].Idempotency().Middleware(mux))))
		t.Cleanup(app.Close)
		for _, path := range []string{"/items/1", "/items/2", "/broken", "/nowhere"} {
			res, err := client.Get(app.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
		}
		for range 2 { // the second is a replay
			req, _ := http.NewRequest(http.MethodPost, app.URL+"/orders", strings.NewReader("{}"))
			req.Header.Set("Idempotency-Key", "order-1")
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusCreated {
				t.Fatalf("POST /orders: %s", res.Status)
			}
		}

		testnode.EventuallyNil(t, 30*time.Second, func() error {
			if l := testnode.Leaders(nodes...); len(l) != 1 {
				return fmt.Errorf("%d leaders", len(l))
			}
			scrapes := make([]map[string]*dto.MetricFamily, len(nodes))
			for i := range nodes {
				scrapes[i] = scrape(t, urls[i])
			}
			return check(nodes, scrapes, enqueued)
		})
	})
}

// check returns what is missing from the three scrapes, or nil.
func check(nodes []*twice.Node, scrapes []map[string]*dto.MetricFamily, enqueued int) error {
	var total = func(name string, want ...string) float64 {
		sum := 0.0
		for _, f := range scrapes {
			v, _ := value(f, name, want...)
			sum += v
		}
		return sum
	}
	// Every series of every instance carries its service and instance id.
	for i, f := range scrapes {
		for name, fam := range f {
			for _, m := range fam.Metric {
				labels := map[string]string{}
				for _, l := range m.Label {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["service"] != "shop" || labels["instance_id"] != nodes[i].ID() {
					return fmt.Errorf("node %d: %s has labels %v, want service shop and instance_id %s", i, name, labels, nodes[i].ID())
				}
			}
		}
		if v, _ := value(f, "twice_up"); v != 1 {
			return fmt.Errorf("node %d: twice_up %v", i, v)
		}
		if _, ok := value(f, "process_start_time_seconds"); !ok {
			return fmt.Errorf("node %d: no process collector", i)
		}
	}

	// The cluster-level gauges come from the leader alone.
	exporters := 0
	for i, f := range scrapes {
		_, jobsOK := value(f, "twice_jobs")
		_, workersOK := value(f, "twice_queue_workers")
		_, usersOK := value(f, "twice_presence_users")
		_, lagOK := value(f, "twice_queue_lag_seconds")
		if jobsOK != workersOK || jobsOK != usersOK || jobsOK != lagOK {
			return fmt.Errorf("node %d: twice_jobs %v, twice_queue_workers %v, twice_presence_users %v, twice_queue_lag_seconds %v",
				i, jobsOK, workersOK, usersOK, lagOK)
		}
		if !jobsOK {
			continue
		}
		exporters++
		if !nodes[i].IsLeader() {
			return fmt.Errorf("node %d exports twice_jobs but does not lead", i)
		}
		if v, _ := value(f, "twice_jobs", "queue", "default", "state", "completed"); v != float64(enqueued) {
			return fmt.Errorf("leader: twice_jobs{queue=default,state=completed} is %v, want %d", v, enqueued)
		}
		if v, _ := value(f, "twice_queue_workers", "queue", "default"); v != 3 {
			return fmt.Errorf("leader: twice_queue_workers{queue=default} is %v, want 3", v)
		}
	}
	if exporters != 1 {
		return fmt.Errorf("%d instances export the cluster-level gauges, want exactly 1", exporters)
	}

	for _, c := range []struct {
		name string
		want float64
		lbl  []string
	}{
		{"twice_job_duration_seconds", float64(enqueued), []string{"queue", "default", "state", "completed"}},
		{"twice_job_wait_seconds", float64(enqueued), []string{"queue", "default"}},
		{"twice_leader", 1, nil},
		{"twice_cache_misses_total", 1, []string{"cache", "prices"}},
		{"twice_cache_hits_total", 1, []string{"cache", "prices"}},
		{"twice_http_requests_total", 2, []string{"route", "GET /items/{id}", "method", "GET", "code", "2xx"}},
		{"twice_http_requests_total", 1, []string{"route", "GET /broken", "code", "5xx"}},
		{"twice_http_requests_total", 1, []string{"route", "unmatched", "code", "4xx"}},
		{"twice_http_requests_total", 2, []string{"route", "POST /orders", "code", "2xx"}},
		{"twice_http_request_duration_seconds", 6, nil},
		{"twice_idempotency_replays_total", 1, nil},
		{"twice_presence_users", 1, nil}, // from the leader alone
		{"twice_realtime_connections", 1, nil},
		{"twice_realtime_messages_delivered_total", 1, nil},
	} {
		if got := total(c.name, c.lbl...); got != c.want {
			return fmt.Errorf("%s%v summed over the instances is %v, want %v", c.name, c.lbl, got, c.want)
		}
	}
	for _, c := range []struct {
		name string
		lbl  []string
	}{
		{"twice_leader_terms_total", nil},
		{"twice_cron_ticks_total", []string{"outcome", "fired"}},
		{"twice_bus_round_trip_seconds", nil},
		{"twice_session_store_seconds", []string{"op", "save"}},
		{"twice_session_store_seconds", []string{"op", "load"}},
	} {
		if got := total(c.name, c.lbl...); got < 1 {
			return fmt.Errorf("%s%v summed over the instances is %v, want at least 1", c.name, c.lbl, got)
		}
	}
	for _, name := range []string{"twice_panics_recovered_total", "twice_lease_renewal_failures_total", "twice_bus_lost_signals_total"} {
		for i, f := range scrapes {
			if _, ok := value(f, name); !ok {
				return fmt.Errorf("node %d: no %s", i, name)
			}
		}
	}
	return nil
}

// counts counts the statements that count jobs by state.
type counts struct{ n atomic.Int64 }

func (c *counts) Statement(q string) {
	if strings.Contains(q, "count(*)") && strings.Contains(q, "GROUP BY 1, 2, 3") {
		c.n.Add(1)
	}
}

// Fifty scrapes of each of three instances within one interval cost one count of the jobs,
// on the leader; the followers run none.
func TestScrapesShareOneReadingOnTheLeader(t *testing.T) {
	obs := &counts{}
	nodes := twicetest.Open(t, 3, &twicetest.Options{Config: twice.Config{Observer: obs}})
	testnode.Eventually(t, 30*time.Second, "a leader", func() bool { return len(testnode.Leaders(nodes...)) == 1 })
	var urls []string
	for _, n := range nodes {
		m, err := metrics.New(n, metrics.Config{Interval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(m.Handler())
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
	}
	for range 50 {
		for _, u := range urls {
			scrape(t, u)
		}
	}
	if n := obs.n.Load(); n != 1 {
		t.Fatalf("150 scrapes counted the jobs %d times, want once", n)
	}
}

// The route is the pattern the mux matched; a panicking handler counts as a 5xx.
func TestMiddlewareAroundTheMux(t *testing.T) {
	nodes := twicetest.Open(t, 1, nil)
	m, err := metrics.New(nodes[0], metrics.Config{TargetLabels: true})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	h := m.Middleware(mux)
	for _, path := range []string{"/users/1", "/users/2", "/nothing"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic did not go on")
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/panic", nil))
	}()
	req := httptest.NewRequest("BREW", "/users/3", nil)
	h.ServeHTTP(httptest.NewRecorder(), req)

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	f := scrape(t, srv.URL)
	for _, c := range []struct {
		want float64
		lbl  []string
	}{
		{2, []string{"route", "GET /users/{id}", "method", "GET", "code", "2xx"}},
		{1, []string{"route", "unmatched", "method", "GET", "code", "4xx"}},
		{1, []string{"route", "unmatched", "method", "other", "code", "4xx"}}, // BREW: 405, no pattern
		{1, []string{"route", "GET /panic", "code", "5xx"}},
	} {
		if got, _ := value(f, "twice_http_requests_total", c.lbl...); got != c.want {
			t.Errorf("twice_http_requests_total%v = %v, want %v", c.lbl, got, c.want)
		}
	}
	if _, ok := value(f, "twice_up", "instance_id", nodes[0].ID()); ok {
		t.Error("TargetLabels set, yet the series carry instance_id")
	}
}

// Making the metrics and scraping them, on the leader too, starts no building block: a
// service pays only for the blocks it uses.
func TestScrapeStartsNoBlock(t *testing.T) {
	nodes := twicetest.Open(t, 1, nil)
	testnode.Eventually(t, 30*time.Second, "the node leads", nodes[0].IsLeader)
	m, err := metrics.New(nodes[0], metrics.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	f := scrape(t, srv.URL)
	if v, _ := value(f, "twice_leader"); v != 1 {
		t.Errorf("twice_leader = %v on the only node", v)
	}
	if started, _ := nodehook.Blocks(nodes[0]); len(started) != 0 {
		t.Fatalf("the scrape started %d blocks: %v", len(started), started)
	}
}
