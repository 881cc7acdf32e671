package idempotency_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/twicetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clientScope stands for an app's authentication: the X-Client header names the
// principal, as a verified token's subject would.
func clientScope(r *http.Request) string {
	if c := r.Header.Get("X-Client"); c != "" {
		return "client:" + c
	}
	return ""
}

// node opens an instance of "shop" with cfg and testnode's fast timings, which let a killed
// instance count as dead within a fraction of a second. Keys are scoped by clientScope
// unless cfg says otherwise.
func node(t testing.TB, db testdb.DB, cfg twice.Config) *twice.Node {
	t.Helper()
	if cfg.Idempotency.Scope == nil {
		cfg.Idempotency.Scope = clientScope
	}
	fast := testnode.Fast()
	cfg.HeartbeatInterval, cfg.DeadAfter, cfg.LeaseTTL, cfg.LeaderPoll = fast.HeartbeatInterval, fast.DeadAfter, fast.LeaseTTL, fast.LeaderPoll
	return testnode.Open(t, db, "shop", cfg)
}

// call is one request; client names its principal (see clientScope), "c1" unless set,
// none when "-".
type call struct {
	method, path, key, body, client, auth string
}

func do(h http.Handler, c call) *http.Response {
	if c.method == "" {
		c.method = http.MethodPost
	}
	if c.path == "" {
		c.path = "/orders"
	}
	r := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
	if c.key != "" {
		r.Header.Set(idempotency.Header, c.key)
	}
	if c.auth != "" {
		r.Header.Set("Authorization", c.auth)
	}
	switch c.client {
	case "":
		r.Header.Set("X-Client", "c1")
	case "-":
	default:
		r.Header.Set("X-Client", c.client)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func body(t testing.TB, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// problemType returns the type of a problem+json response, or "" for any other.
func problemType(t testing.TB, res *http.Response) string {
	t.Helper()
	if res.Header.Get("Content-Type") != "application/problem+json" {
		return ""
	}
	var p struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
	}
	if err := json.NewDecoder(res.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	if p.Status != res.StatusCode {
		t.Errorf("problem status %d on a %d response", p.Status, res.StatusCode)
	}
	return strings.TrimPrefix(p.Type, "urn:twice:problem:")
}

// orders counts its runs and answers 201 with the run number.
type orders struct{ runs atomic.Int32 }

func (o *orders) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := o.runs.Add(1)
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("Location", fmt.Sprintf("/orders/%d", n))
	http.SetCookie(w, &http.Cookie{Name: "c", Value: "v"})
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, "order %d for %s", n, b)
}

func TestMiddleware(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		n := node(t, db, twice.Config{})
		keys := n.Idempotency()

		t.Run("ReplayReturnsStoredResponse", func(t *testing.T) {
			o := &orders{}
			h := keys.Middleware(o)
			first := do(h, call{key: `"k-replay"`, body: "apples"})
			second := do(h, call{key: `"k-replay"`, body: "apples"})
			if o.runs.Load() != 1 {
				t.Fatalf("handler ran %d times", o.runs.Load())
			}
			if first.StatusCode != 201 || second.StatusCode != 201 {
				t.Fatalf("status %d then %d", first.StatusCode, second.StatusCode)
			}
			b1, b2 := body(t, first), body(t, second)
			if b1 != "order 1 for apples" || b1 != b2 {
				t.Errorf("bodies %q and %q", b1, b2)
			}
			if second.Header.Get("Location") != "/orders/1" || second.Header.Get(idempotency.ReplayedHeader) != "true" {
				t.Errorf("replayed headers %v", second.Header)
			}
			if first.Header.Get(idempotency.ReplayedHeader) != "" {
				t.Error("first response marked replayed")
			}
			if len(second.Cookies()) != 0 {
				t.Errorf("cookies replayed: %v", second.Cookies())
			}
			// A bare token is the same key as its quoted form.
			if res := do(h, call{key: "k-replay", body: "apples"}); res.StatusCode != 201 || o.runs.Load() != 1 {
				t.Errorf("bare key: status %d, runs %d", res.StatusCode, o.runs.Load())
			}
		})

		t.Run("DifferentRequestSameKeyIs422", func(t *testing.T) {
			o := &orders{}
			h := keys.Middleware(o)
			do(h, call{key: "k-422", body: "apples"})
			for _, c := range []call{{key: "k-422", body: "pears"}, {key: "k-422", body: "apples", path: "/other"},
				{key: "k-422", body: "apples", method: http.MethodPatch}} {
				res := do(h, c)
				if res.StatusCode != 422 || problemType(t, res) != "idempotency-key-reused" {
					t.Errorf("%+v: status %d", c, res.StatusCode)
				}
			}
			if o.runs.Load() != 1 {
				t.Errorf("handler ran %d times", o.runs.Load())
			}
		})

		t.Run("ScopedPerClient", func(t *testing.T) {
			o := &orders{}
			h := keys.Middleware(o)
			do(h, call{key: "k-scope", client: "a"})
			do(h, call{key: "k-scope", client: "b"})
			do(h, call{key: "k-scope", client: "a"})
			if o.runs.Load() != 2 {
				t.Errorf("handler ran %d times, want once per client", o.runs.Load())
			}
		})

		t.Run("MissingAndInvalidKeys", func(t *testing.T) {
			o := &orders{}
			optional := keys.Middleware(o)
			do(optional, call{})
			do(optional, call{})
			do(optional, call{method: http.MethodGet, key: "ignored"})
			do(optional, call{method: http.MethodGet, key: "ignored"})
			if o.runs.Load() != 4 {
				t.Errorf("requests without a key, or of other methods, ran %d times, want 4", o.runs.Load())
			}
			strict, err := idempotency.New(block.Deps{Store: n.Store(), Service: "shop", Instance: n.ID()}, idempotency.Config{Required: true, Scope: clientScope})
			if err != nil {
				t.Fatal(err)
			}
			res := do(strict.Middleware(o), call{})
			if res.StatusCode != 400 || problemType(t, res) != "idempotency-key-missing" {
				t.Errorf("missing key: %d", res.StatusCode)
			}
			for _, k := range []string{`"unterminated`, `"a" ; p=1`, "a b", `""`, `"` + strings.Repeat("x", 256) + `"`, "é"} {
				res := do(optional, call{key: k})
				if res.StatusCode != 400 || problemType(t, res) != "idempotency-key-invalid" {
					t.Errorf("key %.20q: status %d", k, res.StatusCode)
				}
			}
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.Header.Set("X-Client", "c1")
			r.Header.Add(idempotency.Header, "a")
			r.Header.Add(idempotency.Header, "b")
			w := httptest.NewRecorder()
			optional.ServeHTTP(w, r)
			if w.Code != 400 {
				t.Errorf("two keys: status %d", w.Code)
			}
		})

		t.Run("ConcurrentDuplicateIs409", func(t *testing.T) {
			entered, release := make(chan struct{}), make(chan struct{})
			h := keys.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(entered)
				<-release
				w.WriteHeader(http.StatusCreated)
			}))
			done := make(chan *http.Response)
			go func() { done <- do(h, call{key: "k-409"}) }()
			<-entered
			res := do(h, call{key: "k-409"})
			if res.StatusCode != 409 || res.Header.Get("Retry-After") == "" || problemType(t, res) != "idempotency-key-in-use" {
				t.Errorf("duplicate while running: %d %v", res.StatusCode, res.Header)
			}
			close(release)
			if res := <-done; res.StatusCode != 201 {
				t.Errorf("first: %d", res.StatusCode)
			}
			if res := do(h, call{key: "k-409"}); res.StatusCode != 201 || res.Header.Get(idempotency.ReplayedHeader) != "true" {
				t.Errorf("after it finished: %d", res.StatusCode)
			}
		})

		t.Run("Limits", func(t *testing.T) {
			small, err := idempotency.New(block.Deps{Store: n.Store(), Service: "shop", Instance: n.ID()}, idempotency.Config{MaxBodyBytes: 10, MaxResponseBytes: 100, Scope: clientScope})
			if err != nil {
				t.Fatal(err)
			}
			var runs atomic.Int32
			h := small.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				runs.Add(1)
				w.WriteHeader(http.StatusCreated)
				_, _ = w.Write([]byte(strings.Repeat("x", 150)))
			}))
			res := do(h, call{key: "k-big-req", body: strings.Repeat("b", 11)})
			if res.StatusCode != 413 || problemType(t, res) != "request-too-large" || runs.Load() != 0 {
				t.Errorf("large request: %d, runs %d", res.StatusCode, runs.Load())
			}
			res = do(h, call{key: "k-big-res"})
			if res.StatusCode != 201 || len(body(t, res)) != 150 || res.Header.Get("Idempotency-Stored") != "false" {
				t.Errorf("large response: %d %v", res.StatusCode, res.Header)
			}
			res = do(h, call{key: "k-big-res"})
			if res.StatusCode != 201 || problemType(t, res) != "idempotency-response-not-stored" || runs.Load() != 1 {
				t.Errorf("replay of an unstored response: %d, runs %d", res.StatusCode, runs.Load())
			}
		})

		t.Run("ServerErrorReleasesKey", func(t *testing.T) {
			var runs atomic.Int32
			h := keys.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if runs.Add(1) == 1 {
					http.Error(w, "busy", http.StatusServiceUnavailable)
					return
				}
				w.WriteHeader(http.StatusCreated)
			}))
			do(h, call{key: "k-5xx"})
			if res := do(h, call{key: "k-5xx"}); res.StatusCode != 201 || runs.Load() != 2 {
				t.Errorf("retry after a 503: %d, runs %d", res.StatusCode, runs.Load())
			}
			func() {
				defer func() { _ = recover() }()
				keys.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })).
					ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/p", strings.NewReader("")))
			}()
			r := httptest.NewRequest(http.MethodPost, "/p", nil)
			r.Header.Set("X-Client", "c1")
			r.Header.Set(idempotency.Header, "k-panic")
			func() {
				defer func() { _ = recover() }()
				keys.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })).ServeHTTP(httptest.NewRecorder(), r)
			}()
			if res := do(h, call{path: "/p", key: "k-panic"}); res.StatusCode != 201 {
				t.Errorf("retry after a panic: %d", res.StatusCode)
			}
		})
	})
}

// A request whose principal is unknown never shares a key space with others: its key is
// ignored (or refused when keys are required), and nothing is stored for it.
func TestScopeFailsClosed(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		n := node(t, db, twice.Config{})
		o := &orders{}
		h := n.Idempotency().Middleware(o)
		var runs atomic.Int32
		htx := n.Idempotency().HandlerTx(func(w http.ResponseWriter, r *http.Request, tx store.Tx) error {
			runs.Add(1)
			w.WriteHeader(http.StatusCreated)
			return nil
		})
		for i := range 2 {
			for name, h := range map[string]http.Handler{"Middleware": h, "HandlerTx": htx} {
				res := do(h, call{key: "k-anon", client: "-", body: "apples"})
				if res.StatusCode != 201 || res.Header.Get(idempotency.IgnoredHeader) != "no-scope" || res.Header.Get(idempotency.ReplayedHeader) != "" {
					t.Errorf("%s, anonymous #%d: %d %v", name, i, res.StatusCode, res.Header)
				}
			}
		}
		if o.runs.Load() != 2 || runs.Load() != 2 {
			t.Errorf("anonymous requests with one key ran %d and %d times, want each twice: one was served another's response", o.runs.Load(), runs.Load())
		}
		var rows int
		if err := n.Store().QueryRow(context.Background(), "SELECT count(*) FROM twice_idempotency").Scan(&rows); err != nil || rows != 0 {
			t.Errorf("%d keys stored without a scope (%v)", rows, err)
		}
		// Required keys need a principal too.
		strict, err := idempotency.New(block.Deps{Store: n.Store(), Service: "shop", Instance: n.ID(), Logger: n.Logger()}, idempotency.Config{Required: true, Scope: clientScope})
		if err != nil {
			t.Fatal(err)
		}
		if res := do(strict.Middleware(o), call{key: "k-anon", client: "-"}); res.StatusCode != 400 || problemType(t, res) != "idempotency-scope-missing" || o.runs.Load() != 2 {
			t.Errorf("required, anonymous: %d, runs %d", res.StatusCode, o.runs.Load())
		}
		// The node's default scope is the session's user: a bare Authorization header is a
		// credential, not a principal, and no longer shares or splits a key space.
		user, err := idempotency.New(block.Deps{Store: n.Store(), Service: "shop", Instance: n.ID(), Logger: n.Logger()}, idempotency.Config{Scope: twice.UserScope})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if res := do(user.Middleware(o), call{key: "k-auth", client: "-", auth: "Bearer t"}); res.Header.Get(idempotency.IgnoredHeader) != "no-scope" {
				t.Errorf("Authorization without a session user: %d %v", res.StatusCode, res.Header)
			}
		}
		if _, err := idempotency.New(block.Deps{Store: n.Store(), Service: "shop", Instance: n.ID()}, idempotency.Config{}); err == nil {
			t.Error("New without a Scope accepted")
		}
	})
}

// A claim whose instance died mid-request is taken over once the cluster counts the
// instance dead; until then a duplicate gets 409.
func TestDeadOwnerClaimIsRecovered(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		grace := twice.Config{Idempotency: idempotency.Config{DeadOwnerGrace: 100 * time.Millisecond}}
		a, b := node(t, db, grace), node(t, db, grace)
		entered, stuck := make(chan struct{}), make(chan struct{})
		var runs atomic.Int32
		handler := func(w http.ResponseWriter, r *http.Request) {
			if runs.Add(1) == 1 {
				close(entered)
				<-stuck // the instance "dies" here
				return
			}
			w.WriteHeader(http.StatusCreated)
		}
		ha, hb := a.Idempotency().Middleware(http.HandlerFunc(handler)), b.Idempotency().Middleware(http.HandlerFunc(handler))
		var wg sync.WaitGroup
		defer func() {
			close(stuck)
			wg.Wait()
		}()
		wg.Go(func() { do(ha, call{key: "k-dead"}) })
		<-entered
		if res := do(hb, call{key: "k-dead"}); res.StatusCode != 409 {
			t.Fatalf("while the owner lives: %d", res.StatusCode)
		}
		twicetest.Crash(t, a) // a dies mid-request, its claim held
		testnode.Eventually(t, 20*time.Second, "the dead instance's claim taken over", func() bool {
			res := do(hb, call{key: "k-dead"})
			if res.StatusCode != 201 && res.StatusCode != 409 {
				t.Fatalf("status %d; the dead instance's claim was never taken over", res.StatusCode)
			}
			return res.StatusCode == 201
		})
		if runs.Load() != 2 {
			t.Errorf("runs %d", runs.Load())
		}
	})
}

func TestRetentionAndPrune(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		clock := testdb.NewClock()
		n := node(t, db, twice.Config{Clock: clock, Idempotency: idempotency.Config{Retention: time.Hour}})
		o := &orders{}
		h := n.Idempotency().Middleware(o)
		do(h, call{key: "k-old"})
		clock.Advance(59 * time.Minute)
		do(h, call{key: "k-old"})
		if o.runs.Load() != 1 {
			t.Fatalf("replay within retention ran the handler: %d", o.runs.Load())
		}
		clock.Advance(2 * time.Minute)
		// The leader may prune first (moving the clock ends its lease and a new term prunes
		// at once), so look at the table rather than at Prune's count.
		if _, err := n.Idempotency().Prune(context.Background()); err != nil {
			t.Fatal(err)
		}
		var rows int
		if err := n.Store().QueryRow(context.Background(), "SELECT count(*) FROM twice_idempotency").Scan(&rows); err != nil || rows != 0 {
			t.Errorf("%d rows after Prune (%v)", rows, err)
		}
		do(h, call{key: "k-old", body: "other"})
		if o.runs.Load() != 2 {
			t.Errorf("an expired key was still honoured: runs %d", o.runs.Load())
		}
	})
}

// HandlerTx commits the claim, the handler's writes and the response together.
func TestHandlerTx(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		n := node(t, db, twice.Config{})
		ctx := context.Background()
		if _, err := n.Store().Exec(ctx, "CREATE TABLE payments (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		var calls atomic.Int32
		h := n.Idempotency().HandlerTx(func(w http.ResponseWriter, r *http.Request, tx store.Tx) error {
			c := calls.Add(1)
			b, _ := io.ReadAll(r.Body)
			if _, err := tx.Exec(r.Context(), "INSERT INTO payments (id, amount) VALUES ($1, $2)", fmt.Sprint(c), len(b)); err != nil {
				return err
			}
			if string(b) == "fail" {
				return errors.New("card declined after the insert")
			}
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, "payment %d", c)
			return nil
		})
		count := func() (k int) {
			if err := n.Store().QueryRow(ctx, "SELECT count(*) FROM payments").Scan(&k); err != nil {
				t.Fatal(err)
			}
			return k
		}
		res := do(h, call{key: "p1", body: "10"})
		if res.StatusCode != 201 || body(t, res) != "payment 1" {
			t.Fatalf("first: %d", res.StatusCode)
		}
		res = do(h, call{key: "p1", body: "10"})
		if res.StatusCode != 201 || body(t, res) != "payment 1" || res.Header.Get(idempotency.ReplayedHeader) != "true" || count() != 1 {
			t.Errorf("replay: %d, %d payments", res.StatusCode, count())
		}
		if res := do(h, call{key: "p1", body: "20"}); res.StatusCode != 422 {
			t.Errorf("reuse: %d", res.StatusCode)
		}
		// A failure after the write rolls back the write and the claim together.
		if res := do(h, call{key: "p2", body: "fail"}); res.StatusCode != 500 || count() != 1 {
			t.Errorf("failed handler: %d, %d payments", res.StatusCode, count())
		}
		if res := do(h, call{key: "p2", body: "ok"}); res.StatusCode != 201 || count() != 2 {
			t.Errorf("retry after rollback: %d, %d payments", res.StatusCode, count())
		}
		// DoTx in the caller's own transaction.
		// Do opens its own transaction; a nil fingerprint is allowed.
		for i := range 2 {
			res, err := n.Idempotency().Do(ctx, idempotency.Params{Key: "nightly"}, func(ctx context.Context, tx store.Tx) (*idempotency.Response, error) {
				return &idempotency.Response{Status: 204}, nil
			})
			if err != nil || res.Status != 204 || res.Replayed != (i == 1) {
				t.Errorf("Do #%d: %+v, %v", i, res, err)
			}
		}
		// A 5xx is not kept: Do rolls back and says so, and the next call runs fn again.
		var doRuns int
		for range 2 {
			res, err := n.Idempotency().Do(ctx, idempotency.Params{Key: "flaky"}, func(ctx context.Context, tx store.Tx) (*idempotency.Response, error) {
				doRuns++
				return &idempotency.Response{Status: 502}, nil
			})
			if !errors.Is(err, idempotency.ErrServerError) || res == nil || res.Status != 502 {
				t.Errorf("Do with a 502: %+v, %v", res, err)
			}
		}
		if doRuns != 2 {
			t.Errorf("Do ran a 502 %d times, want twice", doRuns)
		}
		p := idempotency.Params{Scope: "job", Key: "refund-7", Fingerprint: []byte("refund 7")}
		for i := range 2 {
			var res *idempotency.Response
			err := n.Store().InTx(ctx, func(tx store.Tx) (err error) {
				res, err = n.Idempotency().DoTx(ctx, tx, p, func(ctx context.Context) (*idempotency.Response, error) {
					_, err := tx.Exec(ctx, "INSERT INTO payments (id, amount) VALUES ('refund-7', -10)")
					return &idempotency.Response{Status: 200, Body: []byte("refunded")}, err
				})
				return err
			})
			if err != nil || string(res.Body) != "refunded" || res.Replayed != (i == 1) {
				t.Errorf("DoTx #%d: %+v, %v", i, res, err)
			}
		}
	})
}

// The middleware and HandlerTx decide alike what a finished request leaves under its key,
// for every kind of response: what the retry gets is the same through either face. Where
// HandlerTx keeps nothing (a 5xx), its transaction rolls back, so the retry runs the
// handler's effect again exactly as it runs the middleware's handler again.
func TestFacesStoreAlike(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		n := node(t, db, twice.Config{})
		ctx := context.Background()
		if _, err := n.Store().Exec(ctx, "CREATE TABLE effects (k TEXT NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		effects := func(key string) (c int) {
			if err := n.Store().QueryRow(ctx, "SELECT count(*) FROM effects WHERE k = $1", key).Scan(&c); err != nil {
				t.Fatal(err)
			}
			return c
		}
		type retry struct {
			status     int
			replayed   bool
			problem    string
			runs       int32
			storedFlag string // Idempotency-Stored on the first response
		}
		for _, tc := range []struct {
			name                  string
			status, size, effects int // effects: what HandlerTx commits
			storeErrors           bool
			want                  retry
		}{
			{name: "small", status: 201, size: 10, effects: 1, want: retry{status: 201, replayed: true, runs: 1}},
			{name: "over MaxResponseBytes", status: 201, size: 150, effects: 1, want: retry{status: 201, problem: "idempotency-response-not-stored", runs: 1, storedFlag: "false"}},
			{name: "4xx", status: 409, size: 10, effects: 1, want: retry{status: 409, replayed: true, runs: 1}},
			{name: "5xx", status: 503, size: 10, effects: 0, want: retry{status: 503, runs: 2}},
			{name: "5xx stored", status: 503, size: 10, effects: 1, storeErrors: true, want: retry{status: 503, replayed: true, runs: 1}},
		} {
			keys, err := idempotency.New(block.Deps{Store: n.Store(), Service: "shop", Instance: n.ID(), Logger: n.Logger()}, idempotency.Config{Scope: clientScope, MaxResponseBytes: 100, StoreServerErrors: tc.storeErrors})
			if err != nil {
				t.Fatal(err)
			}
			var runs atomic.Int32
			write := func(w http.ResponseWriter) {
				runs.Add(1)
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(strings.Repeat("x", tc.size)))
			}
			for face, h := range map[string]http.Handler{
				"Middleware": keys.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { write(w) })),
				"HandlerTx": keys.HandlerTx(func(w http.ResponseWriter, r *http.Request, tx store.Tx) error {
					if _, err := tx.Exec(r.Context(), "INSERT INTO effects (k) VALUES ($1)", tc.name); err != nil {
						return err
					}
					write(w)
					return nil
				}),
			} {
				runs.Store(0)
				key := strings.ReplaceAll("k-"+face+"-"+tc.name, " ", "-")
				first := do(h, call{key: key})
				if first.StatusCode != tc.status || len(body(t, first)) != tc.size || first.Header.Get("Idempotency-Stored") != tc.want.storedFlag {
					t.Errorf("%s, %s: first %d %v", face, tc.name, first.StatusCode, first.Header)
				}
				res := do(h, call{key: key})
				got := retry{status: res.StatusCode, replayed: res.Header.Get(idempotency.ReplayedHeader) == "true",
					problem: problemType(t, res), runs: runs.Load(), storedFlag: first.Header.Get("Idempotency-Stored")}
				if got.problem == "idempotency-response-not-stored" {
					got.replayed = false // a replay of the status alone
				}
				if got != tc.want {
					t.Errorf("%s, %s: retry %+v, want %+v", face, tc.name, got, tc.want)
				}
			}
			if e := effects(tc.name); e != tc.effects {
				t.Errorf("HandlerTx, %s: %d effects committed, want %d", tc.name, e, tc.effects)
			}
		}
	})
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{`"8e03978e-40d5-43e8-bc93-6894a57f9324"`, "abc", `"a\"b\\c"`, `""`, `"a" ;x`, `"\x"`, "a,b", " \t\"k\" ", `"` + strings.Repeat("z", 300) + `"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		key, err := idempotency.ParseKey([]string{v})
		if err != nil {
			if !errors.Is(err, idempotency.ErrKeyInvalid) || key != "" {
				t.Fatalf("%q: %q, %v", v, key, err)
			}
			return
		}
		if key == "" || len(key) > idempotency.MaxKeyLen {
			t.Fatalf("%q gave key of %d bytes", v, len(key))
		}
		for i := 0; i < len(key); i++ {
			if key[i] < 0x20 || key[i] > 0x7e {
				t.Fatalf("%q gave key %q with a non-printable byte", v, key)
			}
		}
		// A key survives being sent quoted again.
		quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(key) + `"`
		if again, err := idempotency.ParseKey([]string{quoted}); err != nil || again != key {
			t.Fatalf("%q: re-quoted %q parsed as %q, %v", v, quoted, again, err)
		}
	})
}

// A panicking HandlerTx handler rolls its transaction back, claim included, and the panic
// goes on to the server (which recovers it per request): no connection is kept, and a
// retry with the key runs.
func TestHandlerTxPanic(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		if db.Dialect == store.Postgres {
			// Fewer connections than panics: each leaked transaction would keep one.
			db.DSN += "&pool_max_conns=3"
		}
		n := node(t, db, twice.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // a regression fails, not hangs
		defer cancel()
		if _, err := n.Store().Exec(ctx, "CREATE TABLE payments (id TEXT PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		h := n.Idempotency().HandlerTx(func(w http.ResponseWriter, r *http.Request, tx store.Tx) error {
			b, _ := io.ReadAll(r.Body)
			if _, err := tx.Exec(r.Context(), "INSERT INTO payments (id) VALUES ($1)", string(b)); err != nil {
				return err
			}
			if string(b) == "panic" {
				panic("boom")
			}
			w.WriteHeader(http.StatusCreated)
			return nil
		})
		serve := func(body string) (code int, panicked any) {
			defer func() { panicked = recover() }()
			r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/pay", strings.NewReader(body))
			r.Header.Set(idempotency.Header, "k")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			return w.Code, nil
		}
		for range 5 {
			if _, p := serve("panic"); p != "boom" {
				t.Fatalf("recovered %v, want the handler's panic", p)
			}
		}
		if code, _ := serve("ok"); code != http.StatusCreated {
			t.Fatalf("retry after the panics: %d, want 201 (a panicking request kept its claim or its connection)", code)
		}
		var k int
		if err := n.Store().QueryRow(ctx, "SELECT count(*) FROM payments").Scan(&k); err != nil || k != 1 {
			t.Fatalf("%d payments (%v), want only the retry's", k, err)
		}
		if err := n.Close(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
