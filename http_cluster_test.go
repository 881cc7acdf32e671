package twice_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/store"
)

// cluster3 is three instances of one service, each serving app over HTTP, behind a
// round-robin proxy: consecutive requests of a client go to different instances.
type cluster3 struct {
	nodes    []*twice.Node
	backends []*httptest.Server
	proxy    *httptest.Server
	client   *http.Client
	plain    *http.Client // no cookie jar
}

func newCluster3(t *testing.T, db testdb.DB, app func(n *twice.Node) http.Handler) *cluster3 {
	t.Helper()
	c := &cluster3{}
	transport := &http.Transport{MaxIdleConnsPerHost: 256}
	var proxies []*httputil.ReverseProxy
	for range 3 {
		n := testnode.Open(t, db, "shop", fast())
		id := n.ID()
		inner := app(n)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Instance", id)
			inner.ServeHTTP(w, r)
		}))
		u, _ := url.Parse(srv.URL)
		p := httputil.NewSingleHostReverseProxy(u)
		p.Transport = transport
		c.nodes, c.backends, proxies = append(c.nodes, n), append(c.backends, srv), append(proxies, p)
	}
	var next atomic.Uint64
	c.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxies[(next.Add(1)-1)%3].ServeHTTP(w, r)
	}))
	jar, _ := cookiejar.New(nil)
	c.client = &http.Client{Jar: jar, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	c.plain = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}} // no cap: every request on its own connection at once
	t.Cleanup(func() {
		c.proxy.Close()
		for _, b := range c.backends {
			b.Close()
		}
		transport.CloseIdleConnections()
		c.client.CloseIdleConnections()
		c.plain.CloseIdleConnections()
	})
	return c
}

// get sends a request through the proxy and returns the instance that served it and the
// body.
func (c *cluster3) do(t *testing.T, client *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

func (c *cluster3) call(t *testing.T, method, path string) (instance, body string) {
	t.Helper()
	req, err := http.NewRequest(method, c.proxy.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, b := c.do(t, c.client, req)
	if res.StatusCode >= 400 {
		t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, b)
	}
	return res.Header.Get("X-Instance"), b
}

// sessionApp is a small application on the node's sessions.
func sessionApp(n *twice.Node) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if err := session.SetUser(ctx, r.URL.Query().Get("user")); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		_ = session.Put(ctx, "name", r.URL.Query().Get("name"))
	})
	mux.HandleFunc("POST /set", func(w http.ResponseWriter, r *http.Request) {
		_ = session.Put(r.Context(), r.URL.Query().Get("k"), r.URL.Query().Get("v"))
	})
	mux.HandleFunc("POST /renew", func(w http.ResponseWriter, r *http.Request) {
		if err := session.Renew(r.Context()); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		out := map[string]string{"user": session.UserID(ctx)}
		for _, k := range session.Keys(ctx) {
			out[k], _ = session.Get[string](ctx, k)
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	return n.Sessions().Middleware(mux)
}

// fast returns testnode's fast timings with idempotency keys scoped to one client.
func fast() twice.Config {
	cfg := testnode.Fast()
	cfg.Idempotency.Scope = oneClient
	return cfg
}

// TestHTTPThreeInstances runs the HTTP building blocks on three instances behind a
// round-robin proxy, on each database. It lives outside the conformance package on
// purpose: its thousand concurrent requests would starve the lease renewals of the
// conformance suite's 400 ms-TTL tests running in the same process.
func TestHTTPThreeInstances(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		httpBlocks(t, db.Dialect)
	})
}

// httpBlocks runs the HTTP building blocks on three instances behind a round-robin proxy.
func httpBlocks(t *testing.T, dialect store.Dialect) {
	t.Run("Sessions", func(t *testing.T) {
		t.Parallel()
		c := newCluster3(t, testdb.New(t, dialect), sessionApp)
		state := func() (string, map[string]string) {
			inst, b := c.call(t, http.MethodGet, "/state")
			var m map[string]string
			if err := json.Unmarshal([]byte(b), &m); err != nil {
				t.Fatal(err)
			}
			return inst, m
		}
		loginOn, _ := c.call(t, http.MethodPost, "/login?user=ann&name=Ann")
		readOn, st := state()
		if loginOn == readOn || loginOn == "" {
			t.Fatalf("login on %s and read on %s: the proxy did not alternate", loginOn, readOn)
		}
		if st["user"] != "ann" || st["name"] != "Ann" {
			t.Fatalf("instance %s read %v after login on %s", readOn, st, loginOn)
		}

		// Parallel updates of different keys, spread over the three instances, all survive.
		const parallel = 30
		var wg sync.WaitGroup
		served := sync.Map{}
		for i := range parallel {
			wg.Go(func() {
				inst, _ := c.call(t, http.MethodPost, fmt.Sprintf("/set?k=k%02d&v=%d", i, i))
				served.Store(inst, true)
			})
		}
		wg.Wait()
		n := 0
		served.Range(func(any, any) bool { n++; return true })
		_, st = state()
		for i := range parallel {
			if st[fmt.Sprintf("k%02d", i)] != fmt.Sprint(i) {
				t.Errorf("key k%02d lost: %v", i, st)
			}
		}
		if n != 3 {
			t.Errorf("updates served by %d instances, want 3", n)
		}

		// Renew on one instance: the old token stops working on every instance at once.
		u, _ := url.Parse(c.proxy.URL)
		old := c.client.Jar.Cookies(u)
		c.call(t, http.MethodPost, "/renew")
		fresh := c.client.Jar.Cookies(u)
		if len(old) != 1 || len(fresh) != 1 || old[0].Value == fresh[0].Value {
			t.Fatalf("renew did not change the token: %v -> %v", old, fresh)
		}
		for _, b := range c.backends {
			for _, tc := range []struct {
				cookie *http.Cookie
				user   string
			}{{old[0], ""}, {fresh[0], "ann"}} {
				req, _ := http.NewRequest(http.MethodGet, b.URL+"/state", nil)
				req.AddCookie(tc.cookie)
				res, body := c.do(t, c.plain, req)
				var m map[string]string
				_ = json.Unmarshal([]byte(body), &m)
				if m["user"] != tc.user {
					t.Errorf("instance %s with the %s token: user %q, want %q", res.Header.Get("X-Instance"),
						map[bool]string{true: "old", false: "new"}[tc.user == ""], m["user"], tc.user)
				}
			}
		}
	})

	t.Run("IdempotencyThousandDuplicates", func(t *testing.T) {
		t.Parallel()
		for _, form := range []string{"Middleware", "HandlerTx"} {
			t.Run(form, func(t *testing.T) {
				db := testdb.New(t, dialect)
				var runs atomic.Int32
				app := func(n *twice.Node) http.Handler {
					if form == "Middleware" {
						return n.Idempotency().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
							k := runs.Add(1)
							time.Sleep(20 * time.Millisecond) // long enough for duplicates to pile up
							w.WriteHeader(http.StatusCreated)
							fmt.Fprintf(w, "order %d on %s", k, n.ID())
						}))
					}
					return n.Idempotency().HandlerTx(func(w http.ResponseWriter, r *http.Request, tx store.Tx) error {
						k := runs.Add(1)
						if _, err := tx.Exec(r.Context(), "INSERT INTO orders (id) VALUES ($1)", k); err != nil {
							return err
						}
						w.WriteHeader(http.StatusCreated)
						fmt.Fprintf(w, "order %d on %s", k, n.ID())
						return nil
					})
				}
				c := newCluster3(t, db, app)
				if _, err := c.nodes[0].Store().Exec(context.Background(), "CREATE TABLE orders (id INTEGER PRIMARY KEY)"); err != nil {
					t.Fatal(err)
				}
				requests := 1000
				if form == "HandlerTx" {
					requests = 300 // the thousand is the middleware's; this shows the same for the other form
				}
				var wg sync.WaitGroup
				var mu sync.Mutex // protects statuses, bodies, instances
				statuses, bodies, instances := map[int]int{}, map[string]int{}, map[string]bool{}
				start := make(chan struct{})
				for i := range requests {
					wg.Go(func() {
						<-start
						// Round robin straight to the instances: a proxy in between would
						// double the connections and the CPU without changing what is shown.
						req, _ := http.NewRequest(http.MethodPost, c.backends[i%3].URL+"/orders", strings.NewReader(`{"sku":"apple"}`))
						req.Header.Set(idempotency.Header, `"order-1"`)
						res, err := c.plain.Do(req)
						if err != nil {
							t.Error(err)
							return
						}
						b, _ := io.ReadAll(res.Body)
						res.Body.Close()
						mu.Lock()
						defer mu.Unlock()
						statuses[res.StatusCode]++
						instances[res.Header.Get("X-Instance")] = true
						if res.StatusCode == http.StatusCreated {
							bodies[string(b)]++
						}
					})
				}
				close(start)
				wg.Wait()
				t.Logf("%d requests over %d instances: statuses %v", requests, len(instances), statuses)
				if runs.Load() != 1 {
					t.Errorf("handler ran %d times, want exactly once", runs.Load())
				}
				if len(bodies) != 1 || statuses[http.StatusCreated]+statuses[http.StatusConflict] != requests || len(instances) != 3 {
					t.Errorf("bodies %v, statuses %v, instances %d", bodies, statuses, len(instances))
				}
				if form == "HandlerTx" {
					var k int
					if err := c.nodes[1].Store().QueryRow(context.Background(), "SELECT count(*) FROM orders").Scan(&k); err != nil || k != 1 {
						t.Errorf("%d orders (%v), want 1", k, err)
					}
				}
			})
		}
	})
}
