package forward_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/twicehq/twice/forward"
	"github.com/twicehq/twice/internal/httpx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var secret = []byte("0123456789abcdef0123456789abcdef")

// liveness bounds every wait for something the test made happen: it never times a result.
const liveness = 30 * time.Second

// instance is one instance of the test cluster: an HTTP server whose handler is the app
// behind the instance's forwarder.
type instance struct {
	id     string
	fwd    *forward.Forwarder
	srv    *httptest.Server
	served atomic.Int64 // requests the app handled here
}

// cluster is n instances, each with its own view of who owns which key.
type cluster struct {
	t      *testing.T
	client *http.Client

	mu     sync.Mutex
	owners map[string]map[string]string // viewer → key → owner ("" or absent: none)
	addrs  map[string]string            // instance → advertised address

	inst map[string]*instance

	release chan struct{} // lets /stream finish
	gone    chan struct{} // closed by /wait when its request is cancelled
}

// newCluster starts instances with the given ids; tweak adjusts each one's Config, and
// wrap, if given, wraps each one's whole handler.
func newCluster(t *testing.T, ids []string, tweak func(id string, c *forward.Config), wrap ...func(http.Handler) http.Handler) *cluster {
	t.Helper()
	c := &cluster{t: t, owners: map[string]map[string]string{}, addrs: map[string]string{}, inst: map[string]*instance{},
		release: make(chan struct{}), gone: make(chan struct{})}
	tr := &http.Transport{}
	c.client = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	for _, id := range ids {
		in := &instance{id: id}
		cfg := forward.Config{Secret: secret, Service: "svc", Instance: id, Key: pathKey,
			Locate: func(key string) (forward.Target, error) { return c.locate(id, key) },
			Logger: slog.New(slog.DiscardHandler)}
		if tweak != nil {
			tweak(id, &cfg)
		}
		f, err := forward.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		in.fwd = f
		h := f.Middleware(c.app(in))
		for _, w := range wrap {
			h = w(h)
		}
		in.srv = httptest.NewServer(h)
		t.Cleanup(in.srv.Close)
		t.Cleanup(f.Close)
		c.inst[id] = in
		c.owners[id] = map[string]string{}
		c.addrs[id] = in.srv.Listener.Addr().String()
	}
	return c
}

// pathKey is the Key of the test app: /k/KEY/…
func pathKey(r *http.Request) (string, bool) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/k/")
	if !ok {
		return "", false
	}
	key, _, _ := strings.Cut(rest, "/")
	return key, key != ""
}

// own makes owner the owner of key in every instance's view.
func (c *cluster) own(key, owner string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.owners {
		m[key] = owner
	}
}

// ownIn makes owner the owner of key in viewer's view only.
func (c *cluster) ownIn(viewer, key, owner string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.owners[viewer][key] = owner
}

func (c *cluster) locate(viewer, key string) (forward.Target, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	owner := c.owners[viewer][key]
	if owner == "" {
		return forward.Target{}, forward.ErrNoOwner
	}
	return forward.Target{Instance: owner, Addr: c.addrs[owner], Self: owner == viewer}, nil
}

// echo is what /k/KEY/echo answers.
type echo struct {
	Instance, ForwardedBy, Method, Path, Query, Host, Body string
	XFF, XFP, Forwarded, Hop                               string
}

func (c *cluster) app(in *instance) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/k/{key}/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		by, _ := forward.ForwardedBy(r.Context())
		_ = json.NewEncoder(w).Encode(echo{Instance: in.id, ForwardedBy: by, Method: r.Method, Path: r.URL.Path,
			Query: r.URL.RawQuery, Host: r.Host, Body: string(body), XFF: r.Header.Get("X-Forwarded-For"),
			XFP: r.Header.Get("X-Forwarded-Proto"), Forwarded: r.Header.Get("Forwarded"), Hop: r.Header.Get(forward.HopHeader)})
	})
	mux.HandleFunc("/k/{key}/stream", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "first")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-c.release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintln(w, "second")
	})
	mux.HandleFunc("/k/{key}/wait", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done()
		close(c.gone)
	})
	mux.HandleFunc("/k/{key}/die", func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	mux.HandleFunc("/k/{key}/ws", func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		by, _ := forward.ForwardedBy(r.Context())
		for {
			typ, msg, err := conn.Read(r.Context())
			if err != nil {
				return
			}
			reply := fmt.Sprintf("%s (at %s, forwarded by %s)", msg, in.id, by)
			if err := conn.Write(r.Context(), typ, []byte(reply)); err != nil {
				return
			}
		}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.served.Add(1)
		mux.ServeHTTP(w, r)
	})
}

func (c *cluster) url(id, path string) string { return c.inst[id].srv.URL + path }

// do sends req and returns the status, headers and body.
func (c *cluster) do(req *http.Request) (int, http.Header, []byte) {
	c.t.Helper()
	resp, err := c.client.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

func (c *cluster) get(id, path string) (int, http.Header, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.url(id, path), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.do(req)
}

// decode reads the echo of a response (as c.do returns it).
func (c *cluster) decode(status int, _ http.Header, body []byte) echo {
	t := c.t
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	var e echo
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return e
}

// problem checks that a response is a problem of the given status and type.
func problem(t *testing.T, status int, h http.Header, body []byte, wantStatus int, wantType string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status %d, want %d: %s", status, wantStatus, body)
	}
	if ct := h.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var p httpx.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Type != httpx.ProblemType+wantType {
		t.Fatalf("problem type %q, want %q", p.Type, wantType)
	}
	if wantStatus == http.StatusServiceUnavailable && h.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q on a 503", h.Get("Retry-After"))
	}
}

func TestForwardsToTheOwner(t *testing.T) {
	t.Parallel()
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	c.own("k1", "b")
	req, _ := http.NewRequest(http.MethodPut, c.url("a", "/k/k1/echo?x=1&y=%2F"), strings.NewReader("hello"))
	req.Host = "app.example"
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-Forwarded-Proto", "https")
	status, _, body := c.do(req)
	e := c.decode(status, nil, body)
	want := echo{Instance: "b", ForwardedBy: "a", Method: "PUT", Path: "/k/k1/echo", Query: "x=1&y=%2F", Host: "app.example",
		Body: "hello", XFF: "203.0.113.9, 127.0.0.1", XFP: "https, http"}
	if e != want {
		t.Fatalf("owner saw %+v\nwant         %+v", e, want)
	}
	if c.inst["a"].served.Load() != 0 || c.inst["c"].served.Load() != 0 {
		t.Fatal("an instance that does not own the key ran the app")
	}
	if st := c.inst["a"].fwd.Stats(); st.Forwarded != 1 {
		t.Fatalf("a's stats %+v", st)
	}
	if st := c.inst["b"].fwd.Stats(); st.Received != 1 || st.Forwarded != 0 {
		t.Fatalf("b's stats %+v", st)
	}

	// Forwarded, when the client's request has one, gets this hop too.
	req, _ = http.NewRequest(http.MethodGet, c.url("c", "/k/k1/echo"), nil)
	req.Header.Set("Forwarded", "for=203.0.113.9;proto=https")
	e = c.decode(c.do(req))
	if e.Instance != "b" || e.ForwardedBy != "c" || e.Forwarded != "for=203.0.113.9;proto=https, for=127.0.0.1;proto=http" {
		t.Fatalf("owner saw %+v", e)
	}
}

func TestServesLocally(t *testing.T) {
	t.Parallel()
	c := newCluster(t, []string{"a", "b"}, nil)
	c.own("k1", "a")
	for _, path := range []string{"/k/k1/echo", "/other"} { // its own key; no key at all
		status, _, body := c.get("a", path)
		if path == "/other" {
			if status != http.StatusNotFound {
				t.Fatalf("%s: %d", path, status)
			}
			continue
		}
		if e := c.decode(status, nil, body); e.Instance != "a" || e.ForwardedBy != "" || e.XFF != "" {
			t.Fatalf("%s: %+v", path, e)
		}
	}
	if c.inst["a"].served.Load() != 2 || c.inst["b"].served.Load() != 0 || c.inst["a"].fwd.Stats().Forwarded != 0 {
		t.Fatal("a request was forwarded")
	}
}

func TestNoOwnerIs503(t *testing.T) {
	t.Parallel()
	c := newCluster(t, []string{"a", "b"}, func(_ string, cfg *forward.Config) { cfg.RetryAfter = 300 * time.Millisecond })
	status, h, body := c.get("a", "/k/nobody/echo")
	problem(t, status, h, body, http.StatusServiceUnavailable, "forward-no-owner")
	if c.inst["a"].served.Load()+c.inst["b"].served.Load() != 0 {
		t.Fatal("the app ran")
	}
}

func TestOwnerDownIs503(t *testing.T) {
	t.Parallel()
	c := newCluster(t, []string{"a", "b"}, nil)
	c.own("k1", "b")
	c.inst["b"].srv.Close() // b died: its port refuses connections
	status, h, body := c.get("a", "/k/k1/echo")
	problem(t, status, h, body, http.StatusServiceUnavailable, "forward-owner-unreachable")
	if st := c.inst["a"].fwd.Stats(); st.Unavailable != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOwnerFailingMidRequestIs502(t *testing.T) {
	t.Parallel()
	c := newCluster(t, []string{"a", "b"}, nil)
	c.own("k1", "b")
	req, _ := http.NewRequest(http.MethodPost, c.url("a", "/k/k1/die"), strings.NewReader("x"))
	status, h, body := c.do(req)
	problem(t, status, h, body, http.StatusBadGateway, "forward-owner-failed")
	if h.Get("Retry-After") != "" {
		t.Fatal("a request the owner may have run is answered with Retry-After")
	}
}

func TestBodyOverTheBoundIs413(t *testing.T) {
	t.Parallel()
	c := newCluster(t, []string{"a", "b"}, func(_ string, cfg *forward.Config) { cfg.MaxBodyBytes = 1024 })
	c.own("k1", "b")
	post := func(n int, chunked bool) (int, http.Header, []byte) {
		var r io.Reader = bytes.NewReader(bytes.Repeat([]byte("x"), n))
		if chunked {
			r = io.MultiReader(r) // hides the length: sent chunked
		}
		req, _ := http.NewRequest(http.MethodPost, c.url("a", "/k/k1/echo"), r)
		return c.do(req)
	}
	for _, chunked := range []bool{false, true} {
		if e := c.decode(post(1024, chunked)); e.Instance != "b" || len(e.Body) != 1024 {
			t.Fatalf("chunked %v: a body at the bound: %+v", chunked, e)
		}
		status, h, body := post(1025, chunked)
		problem(t, status, h, body, http.StatusRequestEntityTooLarge, "forward-body-too-large")
	}
	if c.inst["b"].served.Load() != 2 {
		t.Fatalf("b served %d", c.inst["b"].served.Load())
	}
	// The receiver holds to its own bound: a signed request from an instance with a larger
	// one is refused too.
	big := capture(t, "a", "b", http.MethodPost, "/k/k1/echo", strings.Repeat("x", 2048), nil)
	status, h, body := c.replay("b", big, nil)
	problem(t, status, h, body, http.StatusRequestEntityTooLarge, "forward-body-too-large")
	if c.inst["b"].served.Load() != 2 {
		t.Fatal("b served a body over its bound")
	}
}

func TestStripPrefixedRoutesForwardTheOriginalTarget(t *testing.T) {
	t.Parallel()
	c := newCluster(t, []string{"a", "b"}, nil, func(h http.Handler) http.Handler { return http.StripPrefix("/api", h) })
	c.own("k1", "b")
	status, _, body := c.get("a", "/api/k/k1/echo?q=1")
	if e := c.decode(status, nil, body); e.Instance != "b" || e.Path != "/k/k1/echo" || e.Query != "q=1" {
		t.Fatalf("owner saw %+v", e)
	}
}

func TestResponsesStream(t *testing.T) {
	t.Parallel()
	c := newCluster(t, []string{"a", "b"}, nil)
	c.own("k1", "b")
	resp, err := c.client.Get(c.url("a", "/k/k1/stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	// The owner waits for release after the first line: the client reads it before.
	if line, err := rd.ReadString('\n'); err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(c.release)
	if rest, err := io.ReadAll(rd); err != nil || string(rest) != "second\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
}

func TestClientCancellationReachesTheOwner(t *testing.T) {
	t.Parallel()
	c := newCluster(t, []string{"a", "b"}, nil)
	c.own("k1", "b")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url("a", "/k/k1/wait"), nil)
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d", resp.StatusCode)
	}
	cancel()
	select {
	case <-c.gone:
	case <-time.After(liveness):
		t.Fatal("the owner's request was not cancelled with the client's")
	}
}

func TestWebSocketThroughAForward(t *testing.T) {
	t.Parallel()
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	c.own("room", "c")
	ctx, cancel := context.WithTimeout(context.Background(), liveness)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, strings.Replace(c.url("a", "/k/room/ws"), "http", "ws", 1),
		&websocket.DialOptions{HTTPClient: c.client})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for i := range 3 {
		msg := fmt.Sprintf("hello %d", i)
		if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := msg + " (at c, forwarded by a)"; string(got) != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if err := conn.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	if c.inst["a"].served.Load() != 0 || c.inst["c"].served.Load() != 1 {
		t.Fatal("the upgrade was not served by its owner alone")
	}
}

// recorded is a request an instance forwarded, caught at the owner's address.
type recorded struct {
	method, uri string
	header      http.Header
	body        []byte
}

// capture returns the request that a forwarder of instance from configured by tweak sends
// to instance to for method, path and body.
func capture(t *testing.T, from, to, method, path, body string, tweak func(*forward.Config)) recorded {
	t.Helper()
	got := make(chan recorded, 1)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- recorded{method: r.Method, uri: r.RequestURI, header: r.Header.Clone(), body: b}
	}))
	defer sink.Close()
	cfg := forward.Config{Secret: secret, Service: "svc", Instance: from, Key: pathKey, Logger: slog.New(slog.DiscardHandler),
		Locate: func(string) (forward.Target, error) {
			return forward.Target{Instance: to, Addr: sink.URL}, nil
		}}
	if tweak != nil {
		tweak(&cfg)
	}
	f, err := forward.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	rec := httptest.NewRecorder()
	f.Middleware(http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest(method, path, rd))
	if rec.Code != http.StatusOK {
		t.Fatalf("capture: %d %s", rec.Code, rec.Body)
	}
	return <-got
}

// replay sends r to instance id, with its method, target, body and hop header changed by
// edit.
func (c *cluster) replay(id string, r recorded, edit func(*recorded)) (int, http.Header, []byte) {
	c.t.Helper()
	r.header = r.header.Clone()
	if edit != nil {
		edit(&r)
	}
	req, err := http.NewRequest(r.method, c.url(id, r.uri), bytes.NewReader(r.body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header = r.header
	return c.do(req)
}

func TestSignedRequestsOnlyAreTrusted(t *testing.T) {
	t.Parallel()
	c := newCluster(t, []string{"a", "b"}, nil)
	c.own("k1", "b")
	genuine := capture(t, "a", "b", http.MethodPost, "/k/k1/echo?n=1", "pay 10", nil)
	if genuine.header.Get(forward.HopHeader) == "" {
		t.Fatal("the forwarded request carries no hop header")
	}

	// The genuine request is served: the refusals below are for what was changed.
	e := c.decode(c.replay("b", genuine, nil))
	if e.Instance != "b" || e.ForwardedBy != "a" || e.Body != "pay 10" || e.Hop != "" {
		t.Fatalf("owner saw %+v", e)
	}

	other := append([]byte(nil), secret...)
	other[0] ^= 1
	for _, tc := range []struct {
		name string
		edit func(*recorded)
		typ  string
	}{
		{"unsigned", func(r *recorded) { r.header.Set(forward.HopHeader, "from-outside") }, "forward-malformed"},
		{"empty", func(r *recorded) { r.header.Set(forward.HopHeader, "") }, "forward-malformed"},
		{"twice", func(r *recorded) { r.header.Add(forward.HopHeader, r.header.Get(forward.HopHeader)) }, "forward-malformed"},
		{"other body", func(r *recorded) { r.body = []byte("pay 1000") }, "forward-forged"},
		{"other query", func(r *recorded) { r.uri = "/k/k1/echo?n=2" }, "forward-forged"},
		{"other path", func(r *recorded) { r.uri = "/k/k2/echo?n=1" }, "forward-forged"},
		{"other method", func(r *recorded) { r.method = http.MethodPut }, "forward-forged"},
		{"other sender", func(r *recorded) { r.header.Set(forward.HopHeader, swapField(r.header.Get(forward.HopHeader), 1, "c")) }, "forward-forged"},
		{"other time", func(r *recorded) {
			h := strings.Split(r.header.Get(forward.HopHeader), ".")
			h[3] = h[3][:len(h[3])-1] + string('0'+(h[3][len(h[3])-1]-'0'+1)%10) // a few ms off: within validity
			r.header.Set(forward.HopHeader, strings.Join(h, "."))
		}, "forward-forged"},
		{"other target", func(r *recorded) { r.header.Set(forward.HopHeader, swapField(r.header.Get(forward.HopHeader), 2, "c")) }, "forward-forged"},
		{"other secret", func(r *recorded) {
			*r = capture(t, "a", "b", http.MethodPost, "/k/k1/echo?n=1", "pay 10", func(c *forward.Config) { c.Secret = other })
		}, "forward-forged"},
		{"other service", func(r *recorded) {
			*r = capture(t, "a", "b", http.MethodPost, "/k/k1/echo?n=1", "pay 10", func(c *forward.Config) { c.Service = "svc2" })
		}, "forward-forged"},
		{"stale", func(r *recorded) {
			*r = capture(t, "a", "b", http.MethodPost, "/k/k1/echo?n=1", "pay 10", func(c *forward.Config) {
				c.Now = func() time.Time { return time.Now().Add(-time.Minute) }
			})
		}, "forward-stale"},
		{"from the future", func(r *recorded) {
			*r = capture(t, "a", "b", http.MethodPost, "/k/k1/echo?n=1", "pay 10", func(c *forward.Config) {
				c.Now = func() time.Time { return time.Now().Add(time.Minute) }
			})
		}, "forward-stale"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := c.replay("b", genuine, tc.edit)
			problem(t, status, h, body, http.StatusForbidden, tc.typ)
		})
	}
	if st := c.inst["b"].fwd.Stats(); st.Received != 1 {
		t.Fatalf("b's stats %+v", st)
	}
	if n := c.inst["b"].served.Load(); n != 1 {
		t.Fatalf("the app ran %d times; only the genuine request should have reached it", n)
	}

	// Signed for another instance that used b's address before: genuine but misdirected.
	status, h, body := c.replay("b", capture(t, "a", "old-b", http.MethodGet, "/k/k1/echo", "", nil), nil)
	problem(t, status, h, body, http.StatusServiceUnavailable, "forward-misdirected")
	if n := c.inst["b"].served.Load(); n != 1 {
		t.Fatal("a request signed for another instance was served")
	}
}

// swapField replaces field i (an instance id) of a hop header value.
func swapField(v string, i int, id string) string {
	parts := strings.Split(v, ".")
	parts[i] = base64.RawURLEncoding.EncodeToString([]byte(id))
	return strings.Join(parts, ".")
}

func TestSignedRequestsAreNeverForwardedAgain(t *testing.T) {
	t.Parallel()
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	// a and b disagree about the owner (ownership is moving): each says the other.
	c.ownIn("a", "k1", "b")
	c.ownIn("b", "k1", "a")
	c.ownIn("c", "k1", "a")
	status, h, body := c.get("a", "/k/k1/echo")
	problem(t, status, h, body, http.StatusServiceUnavailable, "forward-not-owner")
	if st := c.inst["b"].fwd.Stats(); st.NotOwner != 1 || st.Forwarded != 0 {
		t.Fatalf("b's stats %+v", st)
	}
	if st := c.inst["a"].fwd.Stats(); st.Forwarded != 1 || st.Received != 0 {
		t.Fatalf("a's stats %+v: the request came back", st)
	}

	// b's view moves to c: b still does not forward a signed request.
	c.ownIn("b", "k1", "c")
	status, h, body = c.get("a", "/k/k1/echo")
	problem(t, status, h, body, http.StatusServiceUnavailable, "forward-not-owner")
	for id, in := range c.inst {
		if in.served.Load() != 0 {
			t.Fatalf("%s ran the app", id)
		}
	}
	// Once a's view agrees, the request reaches the owner.
	c.own("k1", "c")
	if e := c.decode(c.get("a", "/k/k1/echo")); e.Instance != "c" || e.ForwardedBy != "a" {
		t.Fatalf("owner saw %+v", e)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	_, err := forward.New(forward.Config{})
	if err == nil {
		t.Fatal("an empty Config was accepted")
	}
	for _, want := range []string{"Secret is required", "Service is required", "Instance is required", "Key function", "Locate function"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	short := []byte("hunter2-hunter2")
	_, err = forward.New(forward.Config{Secret: short, Service: "s", Instance: "i", Key: pathKey,
		Locate: func(string) (forward.Target, error) { return forward.Target{}, nil }, Validity: time.Millisecond, MaxBodyBytes: -1})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v", err)
	}
	for _, want := range []string{"at least 32", "Validity", "MaxBodyBytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestOwnerWithoutAnAddress(t *testing.T) {
	t.Parallel()
	f, err := forward.New(forward.Config{Secret: secret, Service: "svc", Instance: "a", Key: pathKey, Logger: slog.New(slog.DiscardHandler),
		Locate: func(string) (forward.Target, error) { return forward.Target{Instance: "b", Addr: "ftp://b/x"}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	f.Middleware(http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/k/x/echo", nil))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "forward-owner-address") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	// Any error of Locate, not only ErrNoOwner, is a 503.
	f, err = forward.New(forward.Config{Secret: secret, Service: "svc", Instance: "a", Key: pathKey, Logger: slog.New(slog.DiscardHandler),
		Locate: func(string) (forward.Target, error) { return forward.Target{}, errors.New("membership unreadable") }})
	if err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	f.Middleware(http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/k/x/echo", nil))
	problem(t, rec.Code, rec.Header(), rec.Body.Bytes(), http.StatusServiceUnavailable, "forward-no-owner")
}
