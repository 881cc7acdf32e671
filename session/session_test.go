package session_test

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/store"
)

func TestMain(m *testing.M) {
	// scs.New starts a cleanup goroutine for its default memory store, which the adapter
	// replaces but cannot stop.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/alexedwards/scs/v2/memstore.(*MemStore).startCleanup"))
}

type bundle struct {
	s     *store.Store
	m     *session.Sessions
	clock *testdb.Clock
}

// setup opens a migrated store on db with a stub clock and sessions on it.
func setup(t testing.TB, db testdb.DB, cfg session.Config) *bundle {
	t.Helper()
	return setupLogged(t, db, cfg, testdb.Logger(t))
}

// setupLogged is setup with the sessions logging to log.
func setupLogged(t testing.TB, db testdb.DB, cfg session.Config, log *slog.Logger) *bundle {
	t.Helper()
	clock := testdb.NewClock()
	s := db.Open(t, &store.Options{Clock: clock})
	if _, err := store.NewMigrator(s, session.Component()).Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, err := session.New(block.Deps{Store: s, Service: "shop", Logger: log}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{s: s, m: m, clock: clock}
}

// serve runs fn behind the middleware for one request carrying cookie (if any) and returns
// the response.
func (b *bundle) serve(t testing.TB, cookie *http.Cookie, fn func(w http.ResponseWriter, r *http.Request)) *http.Response {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if cookie != nil {
		r.AddCookie(cookie)
	}
	w := httptest.NewRecorder()
	b.m.Middleware(http.HandlerFunc(fn)).ServeHTTP(w, r)
	return w.Result()
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex // protects b
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func sessionCookie(res *http.Response) *http.Cookie {
	for _, c := range res.Cookies() {
		if c.Name == session.DefaultCookieName {
			return c
		}
	}
	return nil
}

func put(t testing.TB, kv ...any) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < len(kv); i += 2 {
			if err := session.Put(r.Context(), kv[i].(string), kv[i+1]); err != nil {
				t.Error(err)
			}
		}
	}
}

func get[T any](t testing.TB, b *bundle, c *http.Cookie, key string) (v T, ok bool) {
	t.Helper()
	b.serve(t, c, func(w http.ResponseWriter, r *http.Request) { v, ok = session.Get[T](r.Context(), key) })
	return v, ok
}

func TestSessions(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Run("PutGetAndCookie", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			res := b.serve(t, nil, func(w http.ResponseWriter, r *http.Request) {})
			if c := sessionCookie(res); c != nil {
				t.Fatalf("a request that stores nothing got a cookie: %v", c)
			}
			res = b.serve(t, nil, put(t, "cart", []string{"apple"}, "n", 3))
			c := sessionCookie(res)
			if c == nil {
				t.Fatal("no cookie")
			}
			if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure || len(c.Value) != 43 {
				t.Errorf("cookie %+v: want HttpOnly, SameSite=Lax, Path=/, not Secure over plain HTTP, 43 characters", c)
			}
			if c.MaxAge <= 0 || c.Expires.IsZero() {
				t.Errorf("cookie %+v does not persist until the session's expiry", c)
			}
			if cart, ok := get[[]string](t, b, c, "cart"); !ok || len(cart) != 1 || cart[0] != "apple" {
				t.Errorf("cart = %v, %v", cart, ok)
			}
			if n, ok := get[int](t, b, c, "n"); !ok || n != 3 {
				t.Errorf("n = %v, %v", n, ok)
			}
			if _, ok := get[int](t, b, c, "cart"); ok {
				t.Error("a []string decoded as an int")
			}
			res = b.serve(t, c, func(w http.ResponseWriter, r *http.Request) {
				session.Remove(r.Context(), "n")
				w.WriteHeader(http.StatusNoContent)
			})
			if sessionCookie(res) != nil {
				t.Error("a change without a new token set the cookie again")
			}
			if _, ok := get[int](t, b, c, "n"); ok {
				t.Error("removed key still there")
			}
			// Only the hash of the token is stored.
			var n int
			if err := b.s.QueryRow(context.Background(), "SELECT count(*) FROM twice_sessions WHERE token_hash = $1", []byte(c.Value)).Scan(&n); err != nil || n != 0 {
				t.Errorf("token stored in clear: %d, %v", n, err)
			}
		})

		t.Run("SaveAndChangesAfterTheHeaders", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			// A streaming handler saves first, so the new session's cookie goes out with the
			// first flush.
			res := b.serve(t, nil, func(w http.ResponseWriter, r *http.Request) {
				_ = session.Put(r.Context(), "a", 1)
				if err := session.From(r.Context()).Save(r.Context()); err != nil {
					t.Error(err)
				}
				_, _ = w.Write([]byte("streaming"))
				http.NewResponseController(w).Flush()
			})
			c := sessionCookie(res)
			if c == nil {
				t.Fatal("no cookie after Save")
			}
			// A change to a stored session after the headers went out is still saved.
			b.serve(t, c, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusAccepted)
				_ = session.Put(r.Context(), "b", 2)
			})
			if v, ok := get[int](t, b, c, "b"); !ok || v != 2 {
				t.Errorf("change after the headers lost: %v %v", v, ok)
			}
		})

		t.Run("DestroyDuringSaveNeverFails", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			for range 30 {
				c := sessionCookie(b.serve(t, nil, put(t, "a", 0, "b", 0, "c", 0)))
				var wg sync.WaitGroup
				codes := make(chan int, 2)
				wg.Go(func() { codes <- b.serve(t, c, put(t, "a", 1, "b", 1, "c", 1)).StatusCode })
				wg.Go(func() {
					codes <- b.serve(t, c, func(w http.ResponseWriter, r *http.Request) {
						if err := session.Destroy(r.Context()); err != nil {
							http.Error(w, err.Error(), http.StatusInternalServerError)
						}
					}).StatusCode
				})
				wg.Wait()
				close(codes)
				for code := range codes {
					if code != http.StatusOK {
						t.Fatalf("status %d: a destroy racing a save failed (deadlock?)", code)
					}
				}
			}
		})

		t.Run("ParallelRequestsKeepEveryKey", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			c := sessionCookie(b.serve(t, nil, put(t, "seed", 0)))
			// Every request loads the session before any of them saves, the interleaving
			// in which a whole-session store loses all but one change.
			const n = 8
			var loaded sync.WaitGroup
			loaded.Add(n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					b.serve(t, c, func(w http.ResponseWriter, r *http.Request) {
						loaded.Done()
						loaded.Wait()
						if err := session.Put(r.Context(), "k"+string(rune('a'+i)), i); err != nil {
							t.Error(err)
						}
						if err := session.Put(r.Context(), "same", i); err != nil {
							t.Error(err)
						}
					})
				})
			}
			wg.Wait()
			var keys []string
			var same int
			b.serve(t, c, func(w http.ResponseWriter, r *http.Request) {
				keys = session.Keys(r.Context())
				same, _ = session.Get[int](r.Context(), "same")
			})
			if len(keys) != n+2 {
				t.Fatalf("keys %v: want seed, same and %d others; a parallel update was lost", keys, n)
			}
			// The same key ends with one of the writes whole.
			if same < 0 || same >= n {
				t.Errorf("same = %d", same)
			}
		})

		// A request held up between loading the session and saving it (its instance paused;
		// its client gave up and retried elsewhere) must not put its old value back over
		// what a request begun after it wrote: the checker found that lost update.
		t.Run("AHeldRequestKeepsANewerWrite", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			c := sessionCookie(b.serve(t, nil, put(t, "k", 0, "other", 0)))
			held, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
			go func() {
				defer close(done)
				b.serve(t, c, func(w http.ResponseWriter, r *http.Request) {
					if err := session.Put(r.Context(), "k", 1); err != nil {
						t.Error(err)
					}
					session.Remove(r.Context(), "other")
					close(held)
					<-release
				})
			}()
			<-held
			b.clock.Advance(time.Millisecond)
			b.serve(t, c, put(t, "k", 2, "other", 2))
			close(release)
			<-done
			var k, other int
			var ok bool
			b.serve(t, c, func(w http.ResponseWriter, r *http.Request) {
				k, _ = session.Get[int](r.Context(), "k")
				other, ok = session.Get[int](r.Context(), "other")
			})
			if k != 2 || !ok || other != 2 {
				t.Fatalf("k = %d, other = %d (present %v): the held request undid the newer writes, want 2 and 2", k, other, ok)
			}
		})

		// The guard does not stop a request from writing a key again after saving it.
		t.Run("ARequestRewritesItsOwnKey", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			c := sessionCookie(b.serve(t, nil, put(t, "k", 0)))
			b.serve(t, c, func(w http.ResponseWriter, r *http.Request) {
				if err := session.Put(r.Context(), "k", 1); err != nil {
					t.Error(err)
				}
				if err := session.From(r.Context()).Save(r.Context()); err != nil {
					t.Error(err)
				}
				b.clock.Advance(time.Millisecond)
				if err := session.Put(r.Context(), "k", 2); err != nil {
					t.Error(err)
				}
			})
			var k int
			b.serve(t, c, func(w http.ResponseWriter, r *http.Request) { k, _ = session.Get[int](r.Context(), "k") })
			if k != 2 {
				t.Fatalf("k = %d after the request wrote 1, saved, then wrote 2", k)
			}
		})

		t.Run("RenewInvalidatesOldToken", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			old := sessionCookie(b.serve(t, nil, put(t, "cart", "x")))
			res := b.serve(t, old, func(w http.ResponseWriter, r *http.Request) {
				if err := session.SetUser(r.Context(), "u1"); err != nil {
					t.Error(err)
				}
			})
			nw := sessionCookie(res)
			if nw == nil || nw.Value == old.Value {
				t.Fatalf("login did not renew the token: %v", nw)
			}
			if _, ok := get[string](t, b, old, "cart"); ok {
				t.Error("old token still works after renew")
			}
			if v, ok := get[string](t, b, nw, "cart"); !ok || v != "x" {
				t.Errorf("values lost on renew: %q %v", v, ok)
			}
			var user string
			b.serve(t, nw, func(w http.ResponseWriter, r *http.Request) { user = session.UserID(r.Context()) })
			if user != "u1" {
				t.Errorf("user %q", user)
			}
			// A request still holding the old token changes nothing.
			b.serve(t, old, put(t, "cart", "planted"))
			if v, _ := get[string](t, b, nw, "cart"); v != "x" {
				t.Errorf("a request with the old token changed the renewed session: %q", v)
			}
			// Renew after the headers went out is refused: the cookie could not follow.
			b.serve(t, nw, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusOK)
				if err := session.Renew(r.Context()); !errors.Is(err, session.ErrHeadersWritten) {
					t.Errorf("Renew after WriteHeader = %v", err)
				}
			})
		})

		// Logging out (or in as someone else) takes the old user's values with it, stored or
		// put in the same request; a login from an anonymous session keeps the guest's.
		t.Run("LogoutClearsValues", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			setUser := func(c *http.Cookie, user string, kv ...any) *http.Cookie {
				t.Helper()
				res := b.serve(t, c, func(w http.ResponseWriter, r *http.Request) {
					_ = session.Put(r.Context(), "pending", "before "+user)
					if err := session.SetUser(r.Context(), user); err != nil {
						t.Error(err)
					}
					put(t, kv...)(w, r)
				})
				if nw := sessionCookie(res); nw != nil {
					return nw
				}
				return c
			}
			guest := sessionCookie(b.serve(t, nil, put(t, "cart", "apple")))
			ann := setUser(guest, "ann", "card", "ann's")
			if v, ok := get[string](t, b, ann, "cart"); !ok || v != "apple" {
				t.Errorf("login lost the guest's cart: %q %v", v, ok)
			}
			for _, next := range []string{"", "bob"} {
				before := setUser(ann, "ann", "card", "ann's")
				after := setUser(before, next, "theme", "dark")
				var keys []string
				var user string
				b.serve(t, after, func(w http.ResponseWriter, r *http.Request) {
					keys, user = session.Keys(r.Context()), session.UserID(r.Context())
				})
				if user != next || len(keys) != 1 || keys[0] != "theme" {
					t.Errorf("after ann's session passed to %q: user %q, keys %v; want only what was put after", next, user, keys)
				}
				ann = after
			}
			var rows int
			if err := b.s.QueryRow(context.Background(), "SELECT count(*) FROM twice_session_values WHERE key IN ('card', 'cart')").Scan(&rows); err != nil || rows != 0 {
				t.Errorf("%d of ann's values still stored (%v)", rows, err)
			}
		})

		// A 103 Early Hints response is not the response: the session is saved, and a token
		// renewed after the hints reaches the client, with the final headers.
		t.Run("EarlyHintsDoNotSaveEarly", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			old := sessionCookie(b.serve(t, nil, put(t, "cart", "x")))
			srv := httptest.NewServer(b.m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Link", "</app.css>; rel=preload; as=style")
				w.WriteHeader(http.StatusEarlyHints)
				if err := session.SetUser(r.Context(), "ann"); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				_ = session.Put(r.Context(), "after", 1)
				w.WriteHeader(http.StatusOK)
			})))
			defer srv.Close()
			var hints []int
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				Got1xxResponse: func(code int, _ textproto.MIMEHeader) error { hints = append(hints, code); return nil },
			})
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			req.AddCookie(old)
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if len(hints) != 1 || hints[0] != http.StatusEarlyHints || res.StatusCode != http.StatusOK {
				t.Fatalf("informational %v, final %d", hints, res.StatusCode)
			}
			nw := sessionCookie(res)
			if nw == nil || nw.Value == old.Value {
				t.Fatalf("the token renewed after the hints never reached the client: %v", nw)
			}
			var user string
			var after int
			b.serve(t, nw, func(w http.ResponseWriter, r *http.Request) {
				user = session.UserID(r.Context())
				after, _ = session.Get[int](r.Context(), "after")
			})
			if user != "ann" || after != 1 {
				t.Errorf("with the new token: user %q, after %d", user, after)
			}
		})

		t.Run("DestroyAndLogOutEverywhere", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			login := func(user, ua string) *http.Cookie {
				r := httptest.NewRequest(http.MethodPost, "/", nil)
				r.Header.Set("User-Agent", ua)
				w := httptest.NewRecorder()
				b.m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if err := session.SetUser(r.Context(), user); err != nil {
						t.Error(err)
					}
				})).ServeHTTP(w, r)
				return sessionCookie(w.Result())
			}
			phone, laptop, other := login("ann", "phone"), login("ann", "laptop"), login("bob", "x")
			ctx := context.Background()
			list, err := b.m.List(ctx, "ann")
			if err != nil || len(list) != 2 {
				t.Fatalf("List = %+v, %v", list, err)
			}
			for _, i := range list {
				if i.ID == "" || (i.UserAgent != "phone" && i.UserAgent != "laptop") || i.CreatedAt.IsZero() || !i.Deadline.After(i.LastSeen) {
					t.Errorf("info %+v", i)
				}
			}
			res := b.serve(t, phone, func(w http.ResponseWriter, r *http.Request) {
				if err := session.Destroy(r.Context()); err != nil {
					t.Error(err)
				}
			})
			if c := sessionCookie(res); c == nil || c.MaxAge >= 0 {
				t.Errorf("Destroy did not delete the cookie: %v", c)
			}
			if list, _ := b.m.List(ctx, "ann"); len(list) != 1 {
				t.Errorf("after Destroy: %+v", list)
			}
			n, err := b.m.DestroyUser(ctx, "ann")
			if err != nil || n != 1 {
				t.Fatalf("DestroyUser = %d, %v", n, err)
			}
			var user string
			b.serve(t, laptop, func(w http.ResponseWriter, r *http.Request) { user = session.UserID(r.Context()) })
			if user != "" {
				t.Error("a session survived DestroyUser")
			}
			b.serve(t, other, func(w http.ResponseWriter, r *http.Request) { user = session.UserID(r.Context()) })
			if user != "bob" {
				t.Errorf("another user's session was destroyed: %q", user)
			}
			list, _ = b.m.List(ctx, "bob")
			if ok, err := b.m.DestroyID(ctx, list[0].ID); !ok || err != nil {
				t.Errorf("DestroyID = %v, %v", ok, err)
			}
		})

		t.Run("Count", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{IdleTimeout: time.Hour})
			ctx := context.Background()
			count := func(want session.Counts) {
				t.Helper()
				if c, err := b.m.Count(ctx); err != nil || c != want {
					t.Errorf("Count = %+v, %v; want %+v", c, err, want)
				}
			}
			count(session.Counts{})
			for _, user := range []string{"ann", "ann", "bob"} {
				b.serve(t, nil, func(w http.ResponseWriter, r *http.Request) {
					if err := session.SetUser(r.Context(), user); err != nil {
						t.Error(err)
					}
				})
			}
			b.serve(t, nil, put(t, "cart", "apple")) // signed in to nobody
			count(session.Counts{Sessions: 4, Users: 2})
			b.clock.Advance(2 * time.Hour) // past the idle timeout
			count(session.Counts{})
		})

		// A caller's own SQLite connection may lack foreign_keys, so the foreign key's
		// cascade cannot be relied on to delete a destroyed session's values there.
		t.Run("DestroyUserTxLeavesNoValues", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			b.serve(t, nil, func(w http.ResponseWriter, r *http.Request) {
				if err := session.SetUser(r.Context(), "ann"); err != nil {
					t.Error(err)
				}
				put(t, "cart", "apple")(w, r)
			})
			ctx := context.Background()
			values := func() (n int) {
				t.Helper()
				if err := b.s.Reader().QueryRow(ctx, b.s.SQL("SELECT count(*) FROM twice_session_values")).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			if n := values(); n != 1 {
				t.Fatalf("%d values stored, want 1", n)
			}
			var n int64
			if db.Dialect == store.SQLite {
				own, err := sql.Open("sqlite", "file:"+b.s.DSN().Path+"?_pragma=busy_timeout(10000)")
				if err != nil {
					t.Fatal(err)
				}
				defer own.Close()
				tx, err := own.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if n, err = b.m.DestroyUserTx(ctx, tx, "ann"); err != nil {
					t.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
			} else {
				tx, err := b.s.Pool().Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n, err = b.m.DestroyUserTx(ctx, tx, "ann"); err != nil {
					t.Fatal(err)
				}
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if n != 1 || values() != 0 {
				t.Errorf("DestroyUserTx destroyed %d sessions and left %d values; want 1 and none", n, values())
			}
		})

		t.Run("MalformedCookieIsNoSession", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			good := sessionCookie(b.serve(t, nil, put(t, "k", 1)))
			flip := []byte(good.Value)
			flip[5] ^= 1
			for _, v := range []string{"", "x", good.Value[:42], good.Value + "A", good.Value + "=", string(flip),
				strings.Repeat("A", 5000), "!!!!" + good.Value[4:], "\x00" + good.Value[1:]} {
				res := b.serve(t, &http.Cookie{Name: session.DefaultCookieName, Value: v}, func(w http.ResponseWriter, r *http.Request) {
					if _, ok := session.Get[int](r.Context(), "k"); ok {
						t.Errorf("cookie %.50q gave a session", v)
					}
				})
				if res.StatusCode != http.StatusOK {
					t.Errorf("cookie %.50q: status %d", v, res.StatusCode)
				}
			}
			// A planted or stale cookie of the same name before the real one does not hide it.
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Cookie", session.DefaultCookieName+"="+string(flip)+"; "+session.DefaultCookieName+"="+good.Value)
			w := httptest.NewRecorder()
			b.m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, ok := session.Get[int](r.Context(), "k"); !ok {
					t.Error("the valid cookie after an invalid one was not used")
				}
			})).ServeHTTP(w, r)
		})

		t.Run("IdleAndAbsoluteTimeouts", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{IdleTimeout: 10 * time.Minute, Lifetime: time.Hour})
			c := sessionCookie(b.serve(t, nil, put(t, "k", 1)))
			// Used every 9 minutes, the session lives until its absolute limit.
			for range 6 {
				b.clock.Advance(9 * time.Minute)
				if _, ok := get[int](t, b, c, "k"); !ok {
					t.Fatal("session ended while in use")
				}
			}
			b.clock.Advance(7 * time.Minute) // 61 minutes after it began
			if _, ok := get[int](t, b, c, "k"); ok {
				t.Error("session outlived its Lifetime")
			}
			c = sessionCookie(b.serve(t, nil, put(t, "k", 1)))
			b.clock.Advance(11 * time.Minute)
			if _, ok := get[int](t, b, c, "k"); ok {
				t.Error("session outlived its IdleTimeout")
			}
			n, err := b.m.Prune(context.Background())
			if err != nil || n != 2 {
				t.Errorf("Prune = %d, %v; want the 2 expired sessions", n, err)
			}
			var rows int
			if err := b.s.QueryRow(context.Background(), "SELECT count(*) FROM twice_session_values").Scan(&rows); err != nil || rows != 0 {
				t.Errorf("%d value rows left after prune (%v)", rows, err)
			}
		})

		t.Run("PopIsOnce", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			c := sessionCookie(b.serve(t, nil, put(t, "flash", "saved")))
			var got atomic.Int32
			var wg sync.WaitGroup
			for range 6 {
				wg.Go(func() {
					b.serve(t, c, func(w http.ResponseWriter, r *http.Request) {
						v, ok, err := session.Pop[string](r.Context(), "flash")
						if err != nil {
							t.Error(err)
						}
						if ok && v == "saved" {
							got.Add(1)
						}
					})
				})
			}
			wg.Wait()
			if got.Load() != 1 {
				t.Errorf("flash popped %d times, want once", got.Load())
			}
		})

		t.Run("SecureCookie", func(t *testing.T) {
			t.Parallel()
			proxy := netip.MustParsePrefix("10.0.0.0/8")
			b := setup(t, testdb.New(t, db.Dialect), session.Config{TrustedProxies: []netip.Prefix{proxy}})
			// Header values separated by "|" are sent as separate field lines.
			for _, tc := range []struct {
				name, remote, xfp, xff, fwd string
				tls, want                   bool
			}{
				{name: "plain", remote: "192.0.2.1:1"},
				{name: "tls", remote: "192.0.2.1:1", tls: true, want: true},
				{name: "untrusted proxy", remote: "192.0.2.1:1", xfp: "https"},
				{name: "untrusted Forwarded", remote: "192.0.2.1:1", fwd: "proto=https"},
				{name: "trusted proxy", remote: "10.1.2.3:1", xfp: "https", want: true},
				{name: "trusted proxy http", remote: "10.1.2.3:1", xfp: "http"},
				// An appending proxy: the leftmost values are the client's own.
				{name: "client's https before the proxy's http", remote: "10.1.2.3:1", xfp: "https, http"},
				{name: "client's http before the proxy's https", remote: "10.1.2.3:1", xfp: "http, https", want: true},
				{name: "proxy's value on a line of its own", remote: "10.1.2.3:1", xfp: "http|https", want: true},
				// A CDN (10.0.0.1, trusted) in front of the load balancer: its value counts.
				{name: "chain of trusted proxies", remote: "10.0.0.2:1", xfp: "https, http", xff: "192.0.2.9, 10.0.0.1", want: true},
				{name: "untrusted hop in the chain", remote: "10.0.0.2:1", xfp: "https, http", xff: "192.0.2.9, 198.51.100.1"},
				{name: "chain that does not line up", remote: "10.0.0.2:1", xfp: "https, http", xff: "10.0.0.1"},
				{name: "trusted Forwarded", remote: "10.1.2.3:1", fwd: `for=1.2.3.4;proto=https`, want: true},
				{name: "client's Forwarded before the proxy's", remote: "10.1.2.3:1", fwd: `proto=http, for=192.0.2.9;proto=https`, want: true},
				{name: "client's https Forwarded", remote: "10.1.2.3:1", fwd: `for=x;proto=https, for=192.0.2.9;proto=http`},
				{name: "Forwarded chain", remote: "10.1.2.3:1", fwd: `for=192.0.2.9;proto=https, for="[::ffff:10.0.0.1]:80";proto=http`, want: true},
				{name: "Forwarded quote swallowing the proxy's element", remote: "10.1.2.3:1", fwd: `for="x, for=192.0.2.9;proto=https`},
				{name: "Forwarded parameter twice", remote: "10.1.2.3:1", fwd: `for=192.0.2.9;proto=http;proto=https`},
				// Either header saying https is enough: a forged http cannot strip Secure.
				{name: "forged http in the other header", remote: "10.1.2.3:1", xfp: "http", fwd: `for=192.0.2.9;proto=https`, want: true},
				{name: "forged http Forwarded", remote: "10.1.2.3:1", xfp: "https", fwd: `for=192.0.2.9;proto=http`, want: true},
			} {
				r := httptest.NewRequest(http.MethodGet, "/", nil)
				r.RemoteAddr = tc.remote
				if tc.tls {
					r.TLS = &tls.ConnectionState{}
				}
				for name, v := range map[string]string{"X-Forwarded-Proto": tc.xfp, "X-Forwarded-For": tc.xff, "Forwarded": tc.fwd} {
					if v != "" {
						r.Header[name] = strings.Split(v, "|")
					}
				}
				w := httptest.NewRecorder()
				b.m.Middleware(http.HandlerFunc(put(t, "k", 1))).ServeHTTP(w, r)
				if c := sessionCookie(w.Result()); c == nil || c.Secure != tc.want {
					t.Errorf("%s: cookie %v, want Secure=%v", tc.name, c, tc.want)
				}
			}
		})

		// Without TrustedProxies, a request through an HTTPS proxy gets no Secure cookie: that
		// is logged, once, so a deployment behind a load balancer finds out.
		t.Run("MissingTrustedProxiesIsLogged", func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			b := setupLogged(t, testdb.New(t, db.Dialect), session.Config{}, slog.New(slog.NewTextHandler(&logs, nil)))
			serve := func(xfp string) {
				r := httptest.NewRequest(http.MethodGet, "/", nil)
				r.Header.Set("X-Forwarded-Proto", xfp)
				b.m.Middleware(http.HandlerFunc(put(t, "k", 1))).ServeHTTP(httptest.NewRecorder(), r)
			}
			serve("http")
			if logs.String() != "" {
				t.Errorf("logged for a plain-HTTP proxy: %s", logs.String())
			}
			serve("https")
			serve("https")
			if n := strings.Count(logs.String(), "TrustedProxies is empty"); n != 1 {
				t.Errorf("warned %d times, want once: %s", n, logs.String())
			}
		})

		t.Run("StoreDownIsAnErrorNotANewSession", func(t *testing.T) {
			t.Parallel()
			b := setup(t, testdb.New(t, db.Dialect), session.Config{})
			c := sessionCookie(b.serve(t, nil, put(t, "k", 1)))
			b.s.Close()
			called := false
			res := b.serve(t, c, func(w http.ResponseWriter, r *http.Request) { called = true })
			if called || res.StatusCode != http.StatusInternalServerError || res.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("status %d %q, handler called %v", res.StatusCode, res.Header.Get("Content-Type"), called)
			}
		})
	})
}

func TestConfig(t *testing.T) {
	t.Parallel()
	b := setup(t, testdb.New(t, store.SQLite), session.Config{})
	if _, err := session.New(block.Deps{Store: b.s}, session.Config{}); err == nil {
		t.Error("New without a service accepted")
	}
	for _, cfg := range []session.Config{
		{IdleTimeout: time.Millisecond},
		{SameSite: http.SameSiteNoneMode, Secure: session.SecureNever},
		{CookieName: "__Host-s"},
		{CookieName: "__Host-s", Secure: session.SecureAlways, Domain: "example.com"},
		{CookieName: "__Secure-s"},
	} {
		if _, err := session.New(block.Deps{Store: b.s, Service: "shop"}, cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	if err := session.Put(context.Background(), "k", 1); !errors.Is(err, session.ErrNoSession) {
		t.Errorf("Put outside the middleware = %v", err)
	}
}

func FuzzDecodeToken(f *testing.F) {
	f.Add("")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB")
	f.Add("_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-A")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	f.Add(strings.Repeat("A", 4096))
	f.Fuzz(func(t *testing.T, v string) {
		hash, err := session.DecodeToken(v)
		if err != nil {
			if hash != nil {
				t.Fatal("hash with an error")
			}
			return
		}
		if len(v) != 43 || len(hash) != 32 {
			t.Fatalf("accepted %q (%d bytes) with a %d-byte hash", v, len(v), len(hash))
		}
		if strings.ContainsAny(v, "+/=") {
			t.Fatalf("accepted a non-base64url token %q", v)
		}
	})
}
