// Package health serves an instance's liveness, readiness and detailed health over HTTP:
//
//	/livez    200 while the process works (its own loops are not stuck); a load balancer or
//	          orchestrator restarts the instance when this fails
//	/readyz   200 while every readiness check passes; traffic is routed away when it fails
//	/healthz  JSON with one entry per check, its status and how long it took
//
// The node registers its own checks (store reachable, registered in the cluster, not
// draining); users add theirs with [Health.Register].
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/internal/safe"
)

// DefaultTimeout bounds a check registered without a timeout.
const DefaultTimeout = 2 * time.Second

// CheckFunc reports a problem as an error. It must respect ctx.
type CheckFunc func(ctx context.Context) error

// Kind says what a check counts for.
type Kind int

const (
	// Readiness checks decide /readyz: whether this instance should receive traffic.
	Readiness Kind = iota
	// Liveness checks decide /livez: whether the process must be restarted. Keep them for
	// failures a restart fixes; a database outage is not one.
	Liveness
)

type check struct {
	name    string
	kind    Kind
	timeout time.Duration
	fn      CheckFunc
}

// Health holds the checks of one instance. Its zero value is not usable; call [New].
type Health struct {
	// Logger receives the panics of checks. Set it before the first probe. Defaults to
	// slog.Default().
	Logger *slog.Logger
	// Panics, if set, counts the panics of checks; each is also logged with its stack and
	// fails its check. Set it before the first probe. Defaults to nil: logged only.
	Panics *atomic.Int64

	mu     sync.Mutex // protects checks
	checks []check
	attrs  map[string]string
}

// New returns a Health whose /healthz output carries attrs (such as instance and service).
func New(attrs map[string]string) *Health {
	return &Health{attrs: attrs}
}

// Register adds a readiness check: /readyz fails while fn fails or takes longer than
// timeout (0 means [DefaultTimeout]). Names must be unique.
func (h *Health) Register(name string, timeout time.Duration, fn CheckFunc) error {
	return h.RegisterKind(name, Readiness, timeout, fn)
}

// RegisterKind adds a check of the given kind.
func (h *Health) RegisterKind(name string, kind Kind, timeout time.Duration, fn CheckFunc) error {
	if name == "" || fn == nil {
		return errors.New("health: a check needs a name and a function")
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if slices.ContainsFunc(h.checks, func(c check) bool { return c.name == name }) {
		return fmt.Errorf("health: check %q already registered", name)
	}
	h.checks = append(h.checks, check{name: name, kind: kind, timeout: timeout, fn: fn})
	return nil
}

// Result is the outcome of one check.
type Result struct {
	Name       string  `json:"name"`
	Kind       string  `json:"kind"`
	OK         bool    `json:"ok"`
	Error      string  `json:"error,omitempty"`
	DurationMS float64 `json:"duration_ms"`
}

// Report is what /healthz returns.
type Report struct {
	Status string            `json:"status"` // "ok", "not_ready" or "not_live"
	Live   bool              `json:"live"`
	Ready  bool              `json:"ready"`
	Attrs  map[string]string `json:"attrs,omitempty"`
	Checks []Result          `json:"checks"`
}

// Run runs the checks of the given kinds concurrently, each under its timeout.
func (h *Health) Run(ctx context.Context, kinds ...Kind) []Result {
	h.mu.Lock()
	var todo []check
	for _, c := range h.checks {
		if slices.Contains(kinds, c.kind) {
			todo = append(todo, c)
		}
	}
	h.mu.Unlock()
	out := make([]Result, len(todo))
	var wg sync.WaitGroup
	for i, c := range todo {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			start := time.Now()
			err := h.runCheck(cctx, c.fn)
			r := Result{Name: c.name, Kind: kindName(c.kind), OK: err == nil,
				DurationMS: float64(time.Since(start).Microseconds()) / 1000}
			if err != nil {
				r.Error = err.Error()
			}
			out[i] = r
		})
	}
	wg.Wait()
	return out
}

// runCheck returns fn's error, or the context's if fn overruns its timeout: a check that
// ignores its context cannot hold a probe up.
func (h *Health) runCheck(ctx context.Context, fn CheckFunc) error {
	done := make(chan error, 1)
	go func() {
		done <- safe.Call(h.Logger, h.Panics, "check", func() error { return fn(ctx) })
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("timed out: %w", context.Cause(ctx))
	}
}

func kindName(k Kind) string {
	if k == Liveness {
		return "liveness"
	}
	return "readiness"
}

// Report runs every check.
func (h *Health) Report(ctx context.Context) Report {
	rs := h.Run(ctx, Liveness, Readiness)
	rep := Report{Live: true, Ready: true, Attrs: h.attrs, Checks: rs}
	for _, r := range rs {
		if !r.OK {
			if r.Kind == "liveness" {
				rep.Live = false
			}
			rep.Ready = false
		}
	}
	switch {
	case !rep.Live:
		rep.Status = "not_live"
	case !rep.Ready:
		rep.Status = "not_ready"
	default:
		rep.Status = "ok"
	}
	return rep
}

// Ready runs the readiness and liveness checks and returns the failures.
func (h *Health) Ready(ctx context.Context) (bool, []Result) {
	return failures(h.Run(ctx, Liveness, Readiness))
}

// Live runs the liveness checks and returns the failures.
func (h *Health) Live(ctx context.Context) (bool, []Result) {
	return failures(h.Run(ctx, Liveness))
}

func failures(rs []Result) (bool, []Result) {
	var bad []Result
	for _, r := range rs {
		if !r.OK {
			bad = append(bad, r)
		}
	}
	return len(bad) == 0, bad
}

// ServeHTTP answers /livez, /readyz and /healthz by the last element of the path, so the
// handler can be mounted under any prefix (http.StripPrefix is not needed).
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	switch last := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]; last {
	case "livez":
		ok, bad := h.Live(r.Context())
		plain(w, ok, bad)
	case "readyz":
		ok, bad := h.Ready(r.Context())
		plain(w, ok, bad)
	case "healthz":
		rep := h.Report(r.Context())
		w.Header().Set("Content-Type", "application/json")
		if !rep.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	default:
		http.NotFound(w, r)
	}
}

func plain(w http.ResponseWriter, ok bool, bad []Result) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if ok {
		fmt.Fprintln(w, "ok")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	for _, r := range bad {
		fmt.Fprintf(w, "%s: %s\n", r.Name, r.Error)
	}
}
