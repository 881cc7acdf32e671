package twice_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/health"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
)

func probe(h http.Handler, path string) (int, string) {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
	return w.Code, w.Body.String()
}

// The node's health endpoints tell a stranger only ok or not: not the database's address,
// user or file, not the instance id. Liveness needs no database: with the store gone the
// instance is not ready but stays live past the heartbeat loop's own limit, so an
// orchestrator never restarts instances for a database outage.
func TestHealthEndpoints(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		n := testnode.Open(t, db, "shop", fast())
		// Ready means a heartbeat within DeadAfter (200 ms here), which a loaded machine
		// can miss for a moment right after Open (CI did, while a benchmark ran beside it).
		var code int
		var body string
		testnode.Eventually(t, 20*time.Second, "ready", func() bool {
			code, body = probe(n.Health(), "/readyz")
			return code == 200
		})
		if body != "ok\n" {
			t.Fatalf("/readyz = %d %q", code, body)
		}
		verbose := testnode.Open(t, db, "shop", twice.Config{Health: health.Config{Details: func(*http.Request) bool { return true }}})
		if _, body := probe(verbose.Health(), "/readyz?verbose"); !strings.Contains(body, "[+]store ok") {
			t.Errorf("/readyz?verbose with details = %q", body)
		}
		n.Store().Close()
		testnode.Eventually(t, 20*time.Second, "not ready with the store closed", func() bool {
			code, body := probe(n.Health(), "/readyz")
			if code == 503 && body != "not ready\n" {
				t.Errorf("/readyz = %q", body)
			}
			return code == 503
		})
		_, body = probe(n.Health(), "/healthz")
		leaks := []string{n.ID(), "postgres@", "127.0.0.1", "twice.db", "closed"}
		for _, leak := range leaks {
			if strings.Contains(body, leak) {
				t.Errorf("/healthz shows %q: %s", leak, body)
			}
		}
		// The heartbeat loop counts as stuck after 10 × DeadAfter without an attempt; a
		// database that refuses every beat must not look like that.
		for end := time.Now().Add(12 * fast().DeadAfter); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if code, body := probe(n.Health(), "/livez"); code != 200 || body != "ok\n" {
				t.Fatalf("/livez = %d %q with the database gone", code, body)
			}
		}
	})
}
