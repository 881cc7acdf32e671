package session_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/session"
)

// Sessions live in the database, so any instance serves any request of a session. Log in
// with SetUser (it renews the token), then read the session on a later request.
func Example() {
	dir, _ := os.MkdirTemp("", "twice-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "shop.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		if err := session.SetUser(r.Context(), "ann"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_ = session.Put(r.Context(), "cart", []string{"apple"})
	})
	mux.HandleFunc("GET /cart", func(w http.ResponseWriter, r *http.Request) {
		cart, _ := session.Get[[]string](r.Context(), "cart")
		fmt.Fprintf(w, "%s has %v", session.UserID(r.Context()), cart)
	})
	app := node.Sessions().Middleware(mux)
	var ops []string // the store's statements, as package metrics times them
	node.Sessions().Observe(func(op string, d time.Duration) { ops = append(ops, op) })

	w := httptest.NewRecorder()
	app.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/login", nil))
	cookie := w.Result().Cookies()[0]
	fmt.Println("cookie:", cookie.Name, "HttpOnly:", cookie.HttpOnly, "SameSite=Lax:", cookie.SameSite == http.SameSiteLaxMode)

	r := httptest.NewRequest(http.MethodGet, "/cart", nil)
	r.AddCookie(cookie)
	w = httptest.NewRecorder()
	app.ServeHTTP(w, r)
	fmt.Println(w.Body.String())
	fmt.Println("statements:", ops)

	// Log out everywhere, for example after a password change.
	n, _ := node.Sessions().DestroyUser(ctx, "ann")
	fmt.Println("sessions ended:", n)
	// Output:
	// cookie: twice_session HttpOnly: true SameSite=Lax: true
	// ann has [apple]
	// statements: [save load]
	// sessions ended: 1
}
