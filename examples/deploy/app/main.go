// Command app is the example service of examples/deploy: a small HTTP service on a twice
// node, run three times behind HAProxy, in Kubernetes or with docker compose.
//
// It reads its settings from the environment, as `twice run` and the files beside it give
// them:
//
//	PORT              the port it listens on (all interfaces). Defaults to 8080.
//	TWICE_DSN         the database, read by twice.Config (postgres://… or sqlite:PATH).
//	TWICE_SCHEMA      the PostgreSQL schema of twice's tables and the counter's, read by twice.Config.
//	TWICE_SERVICE     the service's name. Defaults to "deploy-example".
//	TWICE_INSTANCE    how the instance names itself in responses and logs. Defaults to the
//	                  host name (the pod's name in Kubernetes).
//	SHUTDOWN_DELAY    how long /readyz answers 503 after SIGTERM while requests are still
//	                  served, so that the balancer stops sending new ones before the server
//	                  closes. Defaults to 5s.
//	SHUTDOWN_TIMEOUT  how long in-flight requests may take to finish after the delay, and
//	                  then the node's drain. Defaults to 20s.
//
// Endpoints:
//
//	GET  /           which instance served the request
//	POST /count      adds one to a counter, under a cluster-wide lock whose fencing token
//	                 the write checks in its transaction; answers the new value
//	GET  /count      the counter
//	GET  /members    the service's instances, as the cluster sees them (JSON)
//	GET  /livez      the process works (never asks the database)
//	GET  /readyz     the instance should receive traffic (503 from SIGTERM on)
//	GET  /healthz    both, as JSON
//
// On SIGTERM (or SIGINT) it shuts down in the order a balancer needs: readiness off, wait
// SHUTDOWN_DELAY while still serving, stop accepting and finish the requests in flight,
// then close the node (jobs, locks and leadership handed over), and exit. A second signal
// skips the rest of the wait.
package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// settings are what the environment says.
type settings struct {
	port            string
	service         string
	instance        string
	shutdownDelay   time.Duration
	shutdownTimeout time.Duration
}

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := fromEnv(os.Getenv)
	if err != nil {
		logger.Error("app: bad environment", "err", err)
		os.Exit(2)
	}
	logger = logger.With("replica", s.instance)
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if err := run(context.Background(), s, logger, stop); err != nil {
		logger.Error("app: stopped", "err", err)
		os.Exit(1)
	}
}

// fromEnv reads the settings with getenv, with clear errors for values that do not parse.
func fromEnv(getenv func(string) string) (settings, error) {
	s := settings{
		port:            getenv("PORT"),
		service:         getenv(twice.EnvService),
		instance:        getenv("TWICE_INSTANCE"),
		shutdownDelay:   5 * time.Second,
		shutdownTimeout: 20 * time.Second,
	}
	if s.port == "" {
		s.port = "8080"
	}
	if p, err := strconv.Atoi(s.port); err != nil || p < 1 || p > 65535 {
		return s, fmt.Errorf("PORT %q is not a port number", s.port)
	}
	if s.service == "" {
		s.service = "deploy-example"
	}
	if s.instance == "" {
		s.instance, _ = os.Hostname()
	}
	for _, d := range []struct {
		name string
		to   *time.Duration
	}{{"SHUTDOWN_DELAY", &s.shutdownDelay}, {"SHUTDOWN_TIMEOUT", &s.shutdownTimeout}} {
		v := getenv(d.name)
		if v == "" {
			continue
		}
		dur, err := time.ParseDuration(v)
		if err != nil || dur < 0 {
			return s, fmt.Errorf("%s %q is not a duration such as 5s", d.name, v)
		}
		*d.to = dur
	}
	return s, nil
}

// run serves until a signal arrives on stop, then shuts down in order.
func run(ctx context.Context, s settings, logger *slog.Logger, stop <-chan os.Signal) error {
	node, err := twice.Open(ctx, twice.Config{Name: s.service, Logger: logger})
	if err != nil {
		return err
	}
	a, err := newApp(ctx, node, s.instance)
	if err != nil {
		_ = node.Close(ctx)
		return err
	}
	srv := &http.Server{
		Handler:           a.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		// Longer than the balancer keeps idle connections to the instance (HAProxy closes
		// them within seconds), so the balancer closes first and never sends a request on
		// a connection the server is closing.
		IdleTimeout: 2 * time.Minute,
	}
	ln, err := net.Listen("tcp", ":"+s.port)
	if err != nil {
		_ = node.Close(ctx)
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("app: serving", "addr", ln.Addr().String(), "service", s.service)

	select {
	case err := <-served:
		_ = node.Close(ctx)
		return err
	case sig := <-stop:
		logger.Info("app: shutting down: readiness off", "signal", sig.String(), "delay", s.shutdownDelay)
	}
	// 1. Readiness off, still serving: the balancer sees /readyz fail and stops sending.
	a.stopping.Store(true)
	select {
	case <-time.After(s.shutdownDelay):
	case <-stop:
		logger.Warn("app: second signal: not waiting for the balancer")
	}
	// 2. Stop accepting, finish what is in flight. The node is still open, so requests that
	// use it (the counter's lock) complete normally.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdownTimeout)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	// 3. Drain the node: locks released, leadership handed over, membership left.
	if err := node.Close(sctx); err != nil {
		errs = append(errs, fmt.Errorf("node close: %w", err))
	}
	logger.Info("app: stopped")
	return errors.Join(errs...)
}

// app holds what the handlers need.
type app struct {
	node     *twice.Node
	instance string
	stopping atomic.Bool // set on SIGTERM: /readyz fails from then on
}

// newApp migrates the counter's table and registers the readiness check that SIGTERM turns
// off.
func newApp(ctx context.Context, node *twice.Node, instance string) (*app, error) {
	dir, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	c, err := store.LoadComponent("deploy_example", dir, store.Table{Name: "deploy_counters", Service: "service"})
	if err != nil {
		return nil, err
	}
	if _, err := store.NewMigrator(node.Store(), c).Up(ctx); err != nil {
		return nil, err
	}
	a := &app{node: node, instance: instance}
	err = node.Health().Register("accepting", 0, func(context.Context) error {
		if a.stopping.Load() {
			return errors.New("shutting down")
		}
		return nil
	})
	return a, err
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /livez", a.node.Health())
	mux.Handle("GET /readyz", a.node.Health())
	mux.Handle("GET /healthz", a.node.Health())
	mux.HandleFunc("GET /{$}", a.hello)
	mux.HandleFunc("POST /count", a.increment)
	mux.HandleFunc("GET /count", a.count)
	mux.HandleFunc("GET /members", a.members)
	return instanceHeader(a.instance, mux)
}

// instanceHeader names the instance that served every response.
func instanceHeader(instance string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Instance", instance)
		h.ServeHTTP(w, r)
	})
}

func (a *app) hello(w http.ResponseWriter, _ *http.Request) {
	fmt.Fprintf(w, "hello from instance %s (%s)\n", a.instance, a.node.ID())
}

// counter is the answer of /count.
type counter struct {
	Count    int64  `json:"count"`
	Instance string `json:"instance"`
}

const counterName = "hits"

// increment reads the counter and writes it back plus one under a cluster-wide lock. The
// read and the write are separate statements on purpose: the lock makes them one step
// across instances, and the fencing check refuses the write if the lock passed to another
// holder meanwhile (this one paused past its TTL).
func (a *app) increment(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	lk, err := a.node.Locks().Acquire(ctx, "counter", nil)
	if err != nil {
		a.fail(w, "acquire the lock", err)
		return
	}
	defer lk.Release(context.WithoutCancel(ctx))
	var n int64
	err = a.node.Store().InTx(ctx, func(tx store.Tx) error {
		if err := lk.Check(ctx, tx); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, "SELECT n FROM deploy_counters WHERE service = $1 AND name = $2",
			a.node.Service(), counterName).Scan(&n)
		if err != nil && !errors.Is(err, store.ErrNoRows) {
			return err
		}
		n++
		_, err = tx.Exec(ctx, `INSERT INTO deploy_counters (service, name, n) VALUES ($1, $2, $3)
			ON CONFLICT (service, name) DO UPDATE SET n = excluded.n`, a.node.Service(), counterName, n)
		return err
	})
	if err != nil {
		a.fail(w, "increment", err)
		return
	}
	writeJSON(w, counter{Count: n, Instance: a.instance})
}

func (a *app) count(w http.ResponseWriter, r *http.Request) {
	var n int64
	err := a.node.Store().Reader().QueryRow(r.Context(), "SELECT n FROM deploy_counters WHERE service = $1 AND name = $2",
		a.node.Service(), counterName).Scan(&n)
	if err != nil && !errors.Is(err, store.ErrNoRows) {
		a.fail(w, "read the counter", err)
		return
	}
	writeJSON(w, counter{Count: n, Instance: a.instance})
}

func (a *app) members(w http.ResponseWriter, r *http.Request) {
	ms, err := a.node.Members(r.Context())
	if err != nil {
		a.fail(w, "list the members", err)
		return
	}
	writeJSON(w, ms)
}

// fail logs err and answers 500 without it: errors can name hosts and users.
func (a *app) fail(w http.ResponseWriter, what string, err error) {
	a.node.Logger().Error("app: "+what, "err", err)
	http.Error(w, what+" failed", http.StatusInternalServerError)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
