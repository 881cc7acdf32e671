package session_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/alexedwards/scs/v2"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/session"
)

var (
	_ scs.Store    = (*session.SCSStore)(nil)
	_ scs.CtxStore = (*session.SCSStore)(nil)
)

// An scs application switches its store to twice with one line, and two instances see the
// same sessions.
func TestSCSStore(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		a, b := setup(t, db, session.Config{}), setup(t, db, session.Config{})
		managers := []*scs.SessionManager{scs.New(), scs.New()}
		managers[0].Store = a.m.SCSStore() // the one line
		managers[1].Store = b.m.SCSStore()

		mux := func(sm *scs.SessionManager) http.Handler {
			m := http.NewServeMux()
			m.HandleFunc("/put", func(w http.ResponseWriter, r *http.Request) { sm.Put(r.Context(), "msg", "hello") })
			m.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(sm.GetString(r.Context(), "msg"))) })
			m.HandleFunc("/destroy", func(w http.ResponseWriter, r *http.Request) { _ = sm.Destroy(r.Context()) })
			return sm.LoadAndSave(m)
		}
		do := func(sm *scs.SessionManager, path string, c *http.Cookie) *httptest.ResponseRecorder {
			r := httptest.NewRequest(http.MethodGet, path, nil)
			if c != nil {
				r.AddCookie(c)
			}
			w := httptest.NewRecorder()
			mux(sm).ServeHTTP(w, r)
			return w
		}
		res := do(managers[0], "/put", nil)
		cookies := res.Result().Cookies()
		if len(cookies) != 1 {
			t.Fatalf("cookies %v", cookies)
		}
		if got := do(managers[1], "/get", cookies[0]).Body.String(); got != "hello" {
			t.Fatalf("the other instance read %q", got)
		}
		ctx := context.Background()
		if _, found, err := a.m.SCSStore().FindCtx(ctx, cookies[0].Value); !found || err != nil {
			t.Fatalf("FindCtx = %v, %v", found, err)
		}
		// Expiry is scs's, checked against database time; prune removes expired rows.
		if err := a.m.SCSStore().CommitCtx(ctx, "old", []byte("x"), a.clock.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		a.clock.Advance(2 * time.Minute)
		if _, found, _ := a.m.SCSStore().FindCtx(ctx, "old"); found {
			t.Error("expired scs session found")
		}
		if n, err := a.m.Prune(ctx); err != nil || n != 1 {
			t.Errorf("Prune = %d, %v", n, err)
		}
		do(managers[1], "/destroy", cookies[0])
		if got := do(managers[0], "/get", cookies[0]).Body.String(); got != "" {
			t.Errorf("destroyed session still read %q", got)
		}
	})
}
