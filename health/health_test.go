package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
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
	h := health.New(map[string]string{"instance": "i1"})
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
	if code != 503 || !strings.Contains(body, "slow: timed out") {
		t.Fatalf("readyz with a slow check = %d %q", code, body)
	}
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Fatalf("readyz waited %v for a check that overran its 50ms timeout", took)
	}

	h2 := health.New(nil)
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
	if code != 503 || !strings.Contains(body, "db: connection refused") || !strings.Contains(body, "panics: check panicked: boom") {
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
	if code, body := get(t, h2, "/livez"); code != 503 || !strings.Contains(body, "loop: heartbeat loop stuck") {
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
