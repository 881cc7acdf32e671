// Package health serves an instance's liveness, readiness and detailed health over HTTP:
//
//	/livez    200 while the process works (its own loops are not stuck); a load balancer or
//	          orchestrator restarts the instance when this fails
//	/readyz   200 while every readiness check passes; traffic is routed away when it fails
//	/healthz  JSON: the overall status, and with details one entry per check
//
// The endpoints are usually reachable by anyone, so by default their bodies say only "ok",
// "not ready" or "not live" (the status code says the same): a check's error can name a
// database host, user or address. [Config.Details] opens the details to chosen requests,
// and every change of a check's result is logged with its error. Probes share their
// results for [Config.CacheFor] (one second), so a probing storm costs one run of the
// checks per second, and concurrent probes wait for the same run.
//
// The node registers its own checks (store reachable, registered in the cluster, not
// draining, all readiness; its heartbeat loop running, the only liveness check, which
// needs no database); users add theirs with [Health.Register].
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

// DefaultCacheFor is how long probes share a run of the checks by default.
const DefaultCacheFor = time.Second

// Config configures [Health].
type Config struct {
	// Attrs describe the instance (such as its id and service) in a detailed /healthz.
	// Defaults to none.
	Attrs map[string]string
	// Details says which requests are shown each check's name, result, error and duration,
	// and Attrs: /healthz always, /livez and /readyz when a check fails or with ?verbose.
	// Errors can name hosts, users and addresses, so open it to operators only: say, a
	// request to an internal listener, or one carrying an operator's token. Defaults to
	// nil: nobody; every body is plain.
	Details func(r *http.Request) bool
	// CacheFor is how long the results of a probe answer later ones; probes arriving
	// while the checks run wait for that run. Negative runs the checks for every probe.
	// Defaults to [DefaultCacheFor].
	CacheFor time.Duration
	// Logger receives a line each time a check starts or stops failing, with its error,
	// and the panics of checks. Defaults to slog.Default().
	Logger *slog.Logger
	// Panics, if set, counts the panics of checks; each is also logged with its stack and
	// fails its check. Defaults to nil: logged only.
	Panics *atomic.Int64
}

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
	cfg Config

	mu     sync.Mutex // protects checks, failing and last
	checks []check
	// failing holds the checks whose last run failed, so each change is logged once.
	failing map[string]bool
	// last holds each check's latest result and when it was taken, for Last.
	last map[string]taken

	live, all probe // the shared runs behind /livez, and behind /readyz and /healthz
}

// New returns a Health configured by cfg.
func New(cfg Config) *Health {
	if cfg.CacheFor == 0 {
		cfg.CacheFor = DefaultCacheFor
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Health{cfg: cfg, failing: map[string]bool{}, last: map[string]taken{}}
}

// taken is a check's result and when its run ended.
type taken struct {
	r  Result
	at time.Time
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

// Report is what /healthz returns; Attrs and Checks only where [Config.Details] allows.
type Report struct {
	Status string            `json:"status"` // "ok", "not_ready" or "not_live"
	Live   bool              `json:"live"`
	Ready  bool              `json:"ready"`
	Attrs  map[string]string `json:"attrs,omitempty"`
	Checks []Result          `json:"checks,omitempty"`
}

// probe is a shared, cached run of some kinds of check.
type probe struct {
	mu      sync.Mutex // protects everything below
	results []Result
	at      time.Time     // when results were taken
	running chan struct{} // closed when the run in progress ends; nil when none runs
}

// cached returns the results of a run of kinds no older than CacheFor, starting one if
// needed, or waiting for the one in progress. The run outlives the ctx of the probe that
// started it (the checks' timeouts bound it), since others may wait for it.
func (h *Health) cached(ctx context.Context, p *probe, kinds ...Kind) []Result {
	if h.cfg.CacheFor < 0 {
		return h.Run(ctx, kinds...)
	}
	p.mu.Lock()
	if p.results != nil && time.Since(p.at) < h.cfg.CacheFor {
		defer p.mu.Unlock()
		return p.results
	}
	if wait := p.running; wait != nil {
		p.mu.Unlock()
		select {
		case <-wait:
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.results
		case <-ctx.Done():
			return []Result{{Name: "probe", Kind: "readiness", Error: "gave up waiting: " + ctx.Err().Error()}}
		}
	}
	done := make(chan struct{})
	p.running = done
	p.mu.Unlock()
	rs := h.Run(context.WithoutCancel(ctx), kinds...)
	p.mu.Lock()
	p.results, p.at, p.running = rs, time.Now(), nil
	p.mu.Unlock()
	close(done)
	return rs
}

// Run runs the checks of the given kinds concurrently, each under its timeout, and logs
// every check whose result changed since its last run.
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
	h.logChanges(out)
	return out
}

// logChanges logs each check whose result changed since its last run, and keeps the
// results for Last.
func (h *Health) logChanges(rs []Result) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range rs {
		h.last[r.Name] = taken{r: r, at: now}
		switch {
		case !r.OK && !h.failing[r.Name]:
			h.failing[r.Name] = true
			h.cfg.Logger.Warn("health: check failing", "check", r.Name, "kind", r.Kind, "err", r.Error)
		case r.OK && h.failing[r.Name]:
			delete(h.failing, r.Name)
			h.cfg.Logger.Info("health: check passing again", "check", r.Name, "kind", r.Kind)
		}
	}
}

// runCheck returns fn's error, or the context's if fn overruns its timeout: a check that
// ignores its context cannot hold a probe up.
func (h *Health) runCheck(ctx context.Context, fn CheckFunc) error {
	done := make(chan error, 1)
	go func() {
		done <- safe.Call(h.cfg.Logger, h.cfg.Panics, "check", func() error { return fn(ctx) })
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

// Last returns the latest result of each check that has run, in the order they were
// registered, and when the oldest of them was taken (zero if none has run). It runs
// nothing: the results are those of the latest probe or run, whoever asked for it. The
// node reports them to the other instances with its heartbeat (see cluster.Report).
func (h *Health) Last() (rs []Result, oldest time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.checks {
		t, ok := h.last[c.name]
		if !ok {
			continue
		}
		rs = append(rs, t.r)
		if oldest.IsZero() || t.at.Before(oldest) {
			oldest = t.at
		}
	}
	return rs, oldest
}

// Report runs every check.
func (h *Health) Report(ctx context.Context) Report {
	return h.report(h.Run(ctx, Liveness, Readiness))
}

func (h *Health) report(rs []Result) Report {
	rep := Report{Live: true, Ready: true, Attrs: h.cfg.Attrs, Checks: rs}
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
// handler can be mounted under any prefix (http.StripPrefix is not needed). Bodies are
// plain unless [Config.Details] allows the request more; results are shared for
// [Config.CacheFor].
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	details := h.cfg.Details != nil && h.cfg.Details(r)
	switch last := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]; last {
	case "livez":
		plain(w, r, h.cached(r.Context(), &h.live, Liveness), details, "not live")
	case "readyz":
		plain(w, r, h.cached(r.Context(), &h.all, Liveness, Readiness), details, "not ready")
	case "healthz":
		rep := h.report(h.cached(r.Context(), &h.all, Liveness, Readiness))
		if !details {
			rep.Attrs, rep.Checks = nil, nil
		}
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

// plain writes "ok" or the failure word; with details, after every check's result when a
// check failed or ?verbose asks, in the style of Kubernetes' endpoints.
func plain(w http.ResponseWriter, r *http.Request, rs []Result, details bool, failed string) {
	ok, _ := failures(rs)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	if details && (!ok || r.URL.Query().Has("verbose")) {
		for _, c := range rs {
			if c.OK {
				fmt.Fprintf(w, "[+]%s ok\n", c.Name)
			} else {
				fmt.Fprintf(w, "[-]%s failed: %s\n", c.Name, c.Error)
			}
		}
	}
	if ok {
		fmt.Fprintln(w, "ok")
	} else {
		fmt.Fprintln(w, failed)
	}
}
