package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice/health"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestHealth(t *testing.T) {
	t.Parallel()
	// Every request may see the details, and every probe runs the checks.
	details, quiet := func(*http.Request) bool { return true }, slog.New(slog.DiscardHandler)
	h := health.New(health.Config{Attrs: map[string]string{"instance": "i1"}, Details: details, CacheFor: -1, Logger: quiet})
	var dbDown, stuck atomic.Bool
	if err := h.Register("db", 0, func(ctx context.Context) error {
		if dbDown.Load() {
			return errors.New("connection refused")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.RegisterKind("loop", health.Liveness, 0, func(ctx context.Context) error {
		if stuck.Load() {
			return errors.New("heartbeat loop stuck")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A check that ignores its context still answers within its timeout.
	if err := h.Register("slow", 50*time.Millisecond, func(ctx context.Context) error {
		time.Sleep(time.Second)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.Register("db", 0, func(context.Context) error { return nil }); err == nil {
		t.Fatal("duplicate check name accepted")
	}

	start := time.Now()
	code, body := get(t, h, "/readyz")
	if code != 503 || !strings.Contains(body, "[-]slow failed: timed out") {
		t.Fatalf("readyz with a slow check = %d %q", code, body)
	}
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Fatalf("readyz waited %v for a check that overran its 50ms timeout", took)
	}

	h2 := health.New(health.Config{Details: details, CacheFor: -1, Logger: quiet})
	_ = h2.Register("db", 0, func(ctx context.Context) error {
		if dbDown.Load() {
			return errors.New("connection refused")
		}
		return nil
	})
	_ = h2.RegisterKind("loop", health.Liveness, 0, func(ctx context.Context) error {
		if stuck.Load() {
			return errors.New("heartbeat loop stuck")
		}
		return nil
	})
	_ = h2.Register("panics", 0, func(ctx context.Context) error {
		if dbDown.Load() {
			panic("boom")
		}
		return nil
	})
	for _, p := range []string{"/livez", "/readyz", "/prefix/readyz"} {
		if code, body := get(t, h2, p); code != 200 || body != "ok\n" {
			t.Fatalf("%s = %d %q", p, code, body)
		}
	}
	dbDown.Store(true)
	if code, _ := get(t, h2, "/livez"); code != 200 {
		t.Fatal("a database outage must not fail liveness")
	}
	code, body = get(t, h2, "/readyz")
	if code != 503 || !strings.Contains(body, "[-]db failed: connection refused") || !strings.Contains(body, "[-]panics failed: check panicked: boom") {
		t.Fatalf("readyz = %d %q", code, body)
	}
	code, body = get(t, h, "/healthz")
	var rep health.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	if code != 503 || rep.Status != "not_ready" || rep.Ready || !rep.Live || len(rep.Checks) != 3 || rep.Attrs["instance"] != "i1" {
		t.Fatalf("healthz = %d %+v", code, rep)
	}
	for _, c := range rep.Checks {
		if c.Name == "db" && (c.OK || c.Error != "connection refused" || c.DurationMS < 0) {
			t.Fatalf("db check result %+v", c)
		}
	}
	stuck.Store(true)
	if code, body := get(t, h2, "/livez"); code != 503 || !strings.Contains(body, "[-]loop failed: heartbeat loop stuck") {
		t.Fatalf("livez with a stuck loop = %d %q", code, body)
	}
	if code, _ := get(t, h2, "/nope"); code != 404 {
		t.Fatalf("unknown path = %d", code)
	}
	rec := httptest.NewRecorder()
	h2.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/readyz", nil))
	if rec.Code != 405 {
		t.Fatalf("POST = %d", rec.Code)
	}
}

// secret is what a check's error may carry that a stranger must never read.
const secret = "dial tcp 10.9.8.7:5432: password authentication failed for user alice on db.internal"

func failingHealth(t *testing.T, cfg health.Config) (*health.Health, *atomic.Int32) {
	t.Helper()
	var runs atomic.Int32
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := health.New(cfg)
	_ = h.Register("store", 0, func(context.Context) error { runs.Add(1); return errors.New(secret) })
	_ = h.RegisterKind("loop", health.Liveness, 0, func(context.Context) error { return nil })
	return h, &runs
}

// By default the endpoints answer anyone with a plain word and the status code: no
// check's error, no instance id.
func TestPlainByDefault(t *testing.T) {
	t.Parallel()
	h, _ := failingHealth(t, health.Config{Attrs: map[string]string{"instance": "host-4242-abc"}})
	for path, want := range map[string]string{"/livez": "ok\n", "/readyz": "not ready\n", "/readyz?verbose": "not ready\n"} {
		if code, body := get(t, h, path); body != want || (code == 200) != (want == "ok\n") {
			t.Errorf("%s = %d %q, want %q", path, code, body, want)
		}
	}
	code, body := get(t, h, "/healthz")
	if code != 503 || strings.Contains(body, "10.9.8.7") || strings.Contains(body, "alice") || strings.Contains(body, "host-4242") || strings.Contains(body, "store") {
		t.Errorf("/healthz = %d %s", code, body)
	}
	var rep health.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil || rep.Status != "not_ready" || !rep.Live || rep.Ready {
		t.Errorf("/healthz report %+v, %v", rep, err)
	}
}

// Details are shown only to the requests the configuration allows.
func TestDetailsByConfig(t *testing.T) {
	t.Parallel()
	h, _ := failingHealth(t, health.Config{Attrs: map[string]string{"instance": "host-4242-abc"}, CacheFor: -1,
		Details: func(r *http.Request) bool { return r.Header.Get("X-Operator") == "yes" }})
	operator := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("X-Operator", "yes")
		h.ServeHTTP(rec, r)
		return rec.Code, rec.Body.String()
	}
	if code, body := operator("/readyz"); code != 503 || body != "[-]store failed: "+secret+"\n[+]loop ok\nnot ready\n" {
		t.Errorf("operator /readyz = %d %q", code, body)
	}
	if _, body := operator("/livez"); body != "ok\n" {
		t.Errorf("operator /livez = %q", body)
	}
	if _, body := operator("/livez?verbose"); body != "[+]loop ok\nok\n" {
		t.Errorf("operator /livez?verbose = %q", body)
	}
	if _, body := operator("/healthz"); !strings.Contains(body, secret) || !strings.Contains(body, "host-4242-abc") {
		t.Errorf("operator /healthz = %s", body)
	}
	// ?verbose alone opens nothing.
	if _, body := get(t, h, "/readyz?verbose"); body != "not ready\n" {
		t.Errorf("stranger /readyz?verbose = %q", body)
	}
}

// Probes share runs: concurrent ones wait for the run in progress, later ones get its
// results until CacheFor has passed. Liveness probes never run readiness checks.
func TestProbesShareARun(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	var mu sync.Mutex // protects logs
	h, runs := failingHealth(t, health.Config{CacheFor: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(writer(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))})
	for range 20 {
		get(t, h, "/livez")
	}
	if runs.Load() != 0 {
		t.Fatalf("liveness probes ran the store check %d times", runs.Load())
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if code, _ := get(t, h, "/readyz"); code != 503 {
				t.Errorf("/readyz = %d", code)
			}
		})
	}
	wg.Wait()
	get(t, h, "/healthz")
	if runs.Load() != 1 {
		t.Errorf("21 probes within CacheFor ran the checks %d times, want once", runs.Load())
	}
	time.Sleep(150 * time.Millisecond) // past CacheFor: the next probe runs the checks again
	get(t, h, "/readyz")
	if runs.Load() != 2 {
		t.Errorf("a probe after CacheFor: %d runs, want 2", runs.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "health: check failing"); n != 1 || !strings.Contains(logs.String(), "alice") {
		t.Errorf("the failing check was logged %d times, want once with its error:\n%s", n, logs.String())
	}
}

type writer func(p []byte) (int, error)

func (f writer) Write(p []byte) (int, error) { return f(p) }

// Last runs nothing: it returns each check's latest result from whatever ran it, in the
// order the checks were registered, and when the oldest was taken.
func TestLast(t *testing.T) {
	t.Parallel()
	h := health.New(health.Config{Logger: slog.New(slog.DiscardHandler)})
	var runs atomic.Int32
	for _, name := range []string{"db", "payments"} {
		if err := h.Register(name, 0, func(context.Context) error {
			runs.Add(1)
			if name == "payments" {
				return errors.New("refused")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.RegisterKind("loop", health.Liveness, 0, func(context.Context) error { runs.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	if rs, at := h.Last(); rs != nil || !at.IsZero() {
		t.Fatalf("before any run: %+v at %v", rs, at)
	}
	before := time.Now()
	if code, _ := get(t, h, "/livez"); code != http.StatusOK {
		t.Fatalf("/livez = %d", code)
	}
	rs, first := h.Last()
	if len(rs) != 1 || rs[0].Name != "loop" || !rs[0].OK || first.Before(before) {
		t.Fatalf("after /livez: %+v at %v", rs, first)
	}
	time.Sleep(10 * time.Millisecond)
	if code, _ := get(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d", code)
	}
	n := runs.Load()
	rs, oldest := h.Last()
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "db,payments,loop" || rs[1].OK || rs[1].Error != "refused" || !rs[0].OK {
		t.Fatalf("after /readyz: %+v", rs)
	}
	if !oldest.After(first) { // /readyz ran the liveness check again
		t.Errorf("the oldest result is from %v, not after /livez's %v", oldest, first)
	}
	if runs.Load() != n {
		t.Error("Last ran checks")
	}
}
