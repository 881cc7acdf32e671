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
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/store"
)

// principal is where this example's authentication leaves the client it found.
type principal struct{}

// A client retries a POST with the same Idempotency-Key: the handler runs once and the
// retry gets the stored response, although the client refreshed its access token in
// between, because the key belongs to the principal the token stands for (a JWT's issuer
// and subject, an API key's client), not to the token. The authentication runs before the
// idempotency middleware, so Scope finds its principal; a request without one runs without
// idempotency.
func Example() {
	dir, _ := os.MkdirTemp("", "twice-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "shop.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler),
		Idempotency: idempotency.Config{Scope: func(r *http.Request) string {
			p, _ := r.Context().Value(principal{}).(string)
			return p // "" when unauthenticated: the key is ignored
		}}})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	// Stands for verifying a bearer token (a JWT's signature and expiry, an API key's hash).
	subjects := map[string]string{"token-1": "https://id.example|ann", "token-2": "https://id.example|ann", "token-3": "https://id.example|bob"}
	authenticate := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if sub, ok := subjects[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]; ok {
				r = r.WithContext(context.WithValue(r.Context(), principal{}, "sub:"+sub))
			}
			next.ServeHTTP(w, r)
		})
	}
	orders := 0
	app := authenticate(node.Idempotency().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		orders++
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "order %d", orders)
	})))
	post := func(token, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
		r.Header.Set(idempotency.Header, `"3f1c7a52-9a8e-4d3b-b0a1-5f1e2d3c4b5a"`)
		r.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		app.ServeHTTP(w, r)
		return w
	}
	first := post("token-1", `{"sku":"apple"}`)
	retry := post("token-2", `{"sku":"apple"}`) // refreshed token, same user
	other := post("token-2", `{"sku":"pear"}`)  // same key, another request
	bob := post("token-3", `{"sku":"apple"}`)   // another user's key space
	anon := post("", `{"sku":"apple"}`)         // nobody: no idempotency
	fmt.Println(first.Code, first.Body.String())
	fmt.Println(retry.Code, retry.Body.String(), "replayed:", retry.Header().Get(idempotency.ReplayedHeader))
	fmt.Println(other.Code, other.Header().Get("Content-Type"))
	fmt.Println(bob.Code, bob.Body.String())
	fmt.Println(anon.Code, anon.Body.String(), "ignored:", anon.Header().Get(idempotency.IgnoredHeader))
	fmt.Println("orders placed:", orders)
	fmt.Printf("%+v\n", node.Idempotency().Stats()) // counted on this instance, for metrics
	// Output:
	// 201 order 1
	// 201 order 1 replayed: true
	// 422 application/problem+json
	// 201 order 2
	// 201 order 3 ignored: no-scope
	// orders placed: 3
	// {Replays:1 Reused:1 InUse:0}
}

// For effects in the service's database, HandlerTx claims the key, runs the handler's writes
// and stores the response in one transaction, so a retry finds all of them or none. Keys
// belong to the session's user, the node's default scope, so the session middleware runs
// first; an anonymous request runs without idempotency.
func ExampleKeys_HandlerTx() {
	dir, _ := os.MkdirTemp("", "twice-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "shop.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)
	if _, err := node.Store().Exec(ctx, "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, total INTEGER NOT NULL)"); err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		if err := session.SetUser(r.Context(), "ann"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.Handle("POST /orders", node.Idempotency().HandlerTx(func(w http.ResponseWriter, r *http.Request, tx store.Tx) error {
		var id int64
		err := tx.QueryRow(r.Context(), "INSERT INTO orders (user_id, total) VALUES ($1, $2) RETURNING id",
			session.UserID(r.Context()), 4200).Scan(&id)
		if err != nil {
			return err // rolled back: neither the order nor the key's response exists
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%d}`, id)
		return nil
	}))
	app := node.Sessions().Middleware(mux) // outside: the key's scope is the session's user

	login := httptest.NewRecorder()
	app.ServeHTTP(login, httptest.NewRequest(http.MethodPost, "/login", nil))
	cookie := login.Result().Cookies()[0]
	order := func(cookie *http.Cookie) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(`{"sku":"apple"}`))
		r.Header.Set(idempotency.Header, `"order-7f3a"`)
		if cookie != nil {
			r.AddCookie(cookie)
		}
		w := httptest.NewRecorder()
		app.ServeHTTP(w, r)
		return w
	}
	first := order(cookie)
	retry := order(cookie) // the client never saw the first answer, and sends it again
	anon := order(nil)
	fmt.Println(first.Code, first.Body.String())
	fmt.Println(retry.Code, retry.Body.String(), "replayed:", retry.Header().Get(idempotency.ReplayedHeader))
	fmt.Println(anon.Code, anon.Body.String(), "ignored:", anon.Header().Get(idempotency.IgnoredHeader))
	var orders int
	if err := node.Store().Reader().QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&orders); err != nil {
		log.Fatal(err)
	}
	fmt.Println("orders:", orders)
	// Output:
	// 201 {"id":1}
	// 201 {"id":1} replayed: true
	// 201 {"id":2} ignored: no-scope
	// orders: 2
}
