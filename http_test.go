package twice_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/labstack/echo/v4"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/occ"
	"github.com/twicehq/twice/session"
)

// oneClient scopes every request to one client, as if all came from one authenticated
// user: for tests about something other than scopes.
func oneClient(*http.Request) string { return "client:test" }

// The HTTP building blocks are plain func(http.Handler) http.Handler middleware: they work
// with the standard mux, chi and echo alike.
func TestMiddlewareWithRouters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(t.TempDir(), "t.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler), Idempotency: idempotency.Config{Scope: oneClient}})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(ctx)
	pre := occ.Preconditions(occ.HTTPConfig{RequireIfMatch: true}, func(*http.Request) (int64, bool, error) { return 3, true, nil })

	orders := 0
	order := func(w http.ResponseWriter, r *http.Request) {
		orders++
		_ = session.Put(r.Context(), "last", orders)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "created")
	}
	doc := func(w http.ResponseWriter, r *http.Request) {
		v, _ := occ.Expected(r.Context())
		occ.SetETag(w, v+1)
	}

	std := http.NewServeMux()
	std.Handle("POST /orders", node.Idempotency().Middleware(http.HandlerFunc(order)))
	std.Handle("PUT /doc", pre(http.HandlerFunc(doc)))

	ch := chi.NewRouter()
	ch.Use(node.Sessions().Middleware)
	ch.With(node.Idempotency().Middleware).Post("/orders", order)
	ch.With(pre).Put("/doc", doc)

	e := echo.New()
	e.Use(echo.WrapMiddleware(node.Sessions().Middleware))
	e.POST("/orders", echo.WrapHandler(http.HandlerFunc(order)), echo.WrapMiddleware(node.Idempotency().Middleware))
	e.PUT("/doc", echo.WrapHandler(http.HandlerFunc(doc)), echo.WrapMiddleware(pre))

	for name, h := range map[string]http.Handler{"net/http": node.Sessions().Middleware(std), "chi": ch, "echo": e} {
		t.Run(name, func(t *testing.T) {
			orders = 0
			var cookie *http.Cookie
			for i := range 2 {
				r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("{}"))
				r.Header.Set(idempotency.Header, `"`+name+`"`)
				if cookie != nil {
					r.AddCookie(cookie)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != http.StatusCreated || w.Body.String() != "created" {
					t.Fatalf("POST #%d: %d %q", i, w.Code, w.Body)
				}
				if i == 0 {
					if cs := w.Result().Cookies(); len(cs) == 1 {
						cookie = cs[0]
					} else {
						t.Fatalf("no session cookie: %v", w.Header())
					}
				} else if w.Header().Get(idempotency.ReplayedHeader) != "true" {
					t.Error("retry not replayed")
				}
			}
			if orders != 1 {
				t.Errorf("handler ran %d times", orders)
			}
			for _, c := range []struct {
				ifMatch string
				want    int
			}{{"", 428}, {`"2"`, 412}, {`"3"`, 200}} {
				r := httptest.NewRequest(http.MethodPut, "/doc", nil)
				if c.ifMatch != "" {
					r.Header.Set("If-Match", c.ifMatch)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != c.want {
					t.Errorf("PUT If-Match %q: %d, want %d", c.ifMatch, w.Code, c.want)
				}
				if c.want == 200 && w.Header().Get("ETag") != `"4"` {
					t.Errorf("ETag %q", w.Header().Get("ETag"))
				}
			}
		})
	}
}

// The leader prunes expired sessions and idempotency keys on its own.
func TestLeaderPrunesExpiredRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := testdb.NewClock()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(t.TempDir(), "t.db"), Name: "shop",
		Logger: testdb.Logger(t), Clock: clock,
		Sessions:    session.Config{IdleTimeout: time.Minute, PruneInterval: 20 * time.Millisecond},
		Idempotency: idempotency.Config{Retention: time.Minute, PruneInterval: 20 * time.Millisecond, Scope: oneClient}})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(ctx)
	h := node.Sessions().Middleware(node.Idempotency().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = session.Put(r.Context(), "k", 1)
	})))
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set(idempotency.Header, "k1")
	h.ServeHTTP(httptest.NewRecorder(), r)
	count := func() (n int) {
		var a, b int
		if err := node.Store().QueryRow(ctx, "SELECT (SELECT count(*) FROM twice_sessions), (SELECT count(*) FROM twice_idempotency)").Scan(&a, &b); err != nil {
			t.Fatal(err)
		}
		return a + b
	}
	if count() != 2 {
		t.Fatalf("%d rows, want a session and a key", count())
	}
	clock.Advance(2 * time.Minute)
	// A liveness bound, far above the interval.
	testnode.Eventually(t, 20*time.Second, "expired rows pruned", func() bool { return count() == 0 })
}

// With the session middleware first, the node scopes idempotency keys by the session's user:
// two users sending the same key never see each other's responses.
func TestIdempotencyScopedBySessionUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(t.TempDir(), "t.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(ctx)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		_ = session.SetUser(r.Context(), r.URL.Query().Get("u"))
	})
	mux.Handle("POST /orders", node.Idempotency().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "order for "+session.UserID(r.Context()))
	})))
	h := node.Sessions().Middleware(mux)
	login := func(u string) *http.Cookie {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/login?u="+u, nil))
		return w.Result().Cookies()[0]
	}
	for _, u := range []string{"ann", "bob"} {
		r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("{}"))
		r.AddCookie(login(u))
		r.Header.Set(idempotency.Header, "same-key")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Body.String() != "order for "+u || w.Header().Get(idempotency.ReplayedHeader) != "" {
			t.Errorf("%s got %q (replayed %q)", u, w.Body, w.Header().Get(idempotency.ReplayedHeader))
		}
	}
}

// The node scopes keys by the session's user, so the session middleware must run first.
// Misordered, keys are ignored (never shared) and the session middleware says so once.
func TestIdempotencyMiddlewareOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var logs strings.Builder
	var mu sync.Mutex // protects logs
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(t.TempDir(), "t.db"), Name: "shop",
		Logger: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return logs.Write(p)
		}), nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(ctx)
	orders := 0
	order := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		orders++
		w.WriteHeader(http.StatusCreated)
	})
	sessions, keys := node.Sessions().Middleware, node.Idempotency().Middleware
	login := httptest.NewRecorder()
	sessions(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = session.SetUser(r.Context(), "ann")
	})).ServeHTTP(login, httptest.NewRequest(http.MethodPost, "/login", nil))
	cookie := login.Result().Cookies()[0]
	for _, tc := range []struct {
		name   string
		h      http.Handler
		orders int
	}{
		{"sessions first", sessions(keys(order)), 1},
		{"idempotency first", keys(sessions(order)), 2},
	} {
		orders = 0
		for range 2 {
			r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader("{}"))
			r.AddCookie(cookie)
			r.Header.Set(idempotency.Header, `"`+tc.name+`"`)
			tc.h.ServeHTTP(httptest.NewRecorder(), r)
		}
		if orders != tc.orders {
			t.Errorf("%s: %d orders, want %d", tc.name, orders, tc.orders)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "put Sessions.Middleware outside Idempotency.Middleware"); n != 1 {
		t.Errorf("the misorder was logged %d times, want once:\n%s", n, logs.String())
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
