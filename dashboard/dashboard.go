package dashboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/health"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/presence"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/settings"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

// IntervalDefault is how often the shared snapshot is read while someone watches.
const IntervalDefault = 2 * time.Second

// Config configures a dashboard.
type Config struct {
	// Token, if set, is required of every request: as the password of HTTP basic auth (the
	// user name is recorded as who acted) or as "Authorization: Bearer TOKEN". Defaults to
	// empty: without a token (nor ReadOnlyToken) only requests from loopback addresses are
	// served, unless NoAuth.
	Token string
	// ReadOnlyToken, if set, is a second token that may look but not act. Defaults to
	// empty: none.
	ReadOnlyToken string
	// ReadOnly hides and refuses every action, whatever the token. Defaults to false.
	ReadOnly bool
	// NoAuth serves requests from any address without a token, for a dashboard mounted
	// behind the application's own authentication. Defaults to false.
	NoAuth bool
	// Interval is how often the shared snapshot is read from the database while at least
	// one viewer is connected; nothing is read while nobody watches. Defaults to
	// [IntervalDefault].
	Interval time.Duration
	// Logger records the actions taken, with who took them. Defaults to the node's logger
	// (Handler) or slog.Default() (New).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = IntervalDefault
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	if c.Interval < 0 {
		return fmt.Errorf("dashboard: Interval %v is negative", c.Interval)
	}
	if c.NoAuth && (c.Token != "" || c.ReadOnlyToken != "") {
		return errors.New("dashboard: NoAuth with a token: choose one")
	}
	if c.ReadOnlyToken != "" && c.ReadOnlyToken == c.Token {
		return errors.New("dashboard: ReadOnlyToken is the same as Token")
	}
	return nil
}

// Target is what a dashboard shows and acts on: one service in one database.
type Target struct {
	// Store is the service's database. Required.
	Store *store.Store
	// Service is the service's name. Required.
	Service string
	// Bus, if set, announces actions (a retried job's wake-up, a cancellation) to the
	// running instances; without it they notice at their next poll.
	Bus bus.Bus
	// Instance names who acts in the records the blocks keep (a setting's history).
	// Defaults to "dashboard@HOST".
	Instance string
	// Health, if set, is the local instance's health checks, run at each refresh and shown
	// in full on the cluster page (every instance's latest results are shown from their
	// heartbeats' reports, with or without it).
	Health *health.Health
}

// Dashboard is the dashboard's HTTP handler. Mount it under a prefix with
// [http.StripPrefix]; its links are relative. Close ends its live streams.
type Dashboard struct {
	cfg    Config
	t      Target
	jobs   *jobs.Client
	flows  *workflow.Engine
	events *events.Log
	sets   *settings.Settings
	pres   *presence.Presence
	sess   *session.Sessions
	mux    http.Handler
	hub    *hub
	live   liveCache
	// requests keeps the instances' request counts of recent snapshots.
	requests requestHistory

	setsMu sync.Mutex // serializes the settings' refresh and reads
}

// Handler returns the dashboard of node's service: its database, its bus and its health
// checks. It starts none of node's building blocks: it reads their tables.
func Handler(n *twice.Node, cfg Config) (*Dashboard, error) {
	if cfg.Logger == nil {
		cfg.Logger = n.Logger()
	}
	return New(Target{Store: n.Store(), Service: n.Service(), Bus: n.Bus(), Instance: n.ID(), Health: n.Health()}, cfg)
}

// New returns the dashboard of t, for a process that runs no instance of the service (as
// `twice dashboard` does).
func New(t Target, cfg Config) (*Dashboard, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if t.Store == nil || t.Service == "" {
		return nil, errors.New("dashboard: Target needs a Store and a Service")
	}
	if t.Instance == "" {
		host, _ := os.Hostname()
		t.Instance = "dashboard@" + host
	}
	d := block.Deps{Store: t.Store, Bus: t.Bus, Service: t.Service, Instance: t.Instance, Logger: cfg.Logger}
	db := &Dashboard{cfg: cfg, t: t}
	var err error
	if db.jobs, err = jobs.New(d, jobs.Config{}); err != nil {
		return nil, err
	}
	if db.flows, err = workflow.New(d, db.jobs, workflow.Config{}); err != nil {
		return nil, err
	}
	if db.events, err = events.New(d, events.Config{}); err != nil {
		return nil, err
	}
	if db.sets, err = settings.New(d, settings.Config{}); err != nil {
		return nil, err
	}
	if db.pres, err = presence.New(d, presence.Config{}); err != nil {
		return nil, err
	}
	if db.sess, err = session.New(d, session.Config{}); err != nil {
		return nil, err
	}
	db.hub = newHub(cfg.Interval, db.read)
	db.mux = db.routes()
	return db, nil
}

// ServeHTTP serves the dashboard's pages, its live stream and its actions.
func (db *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) { db.mux.ServeHTTP(w, r) }

// Close ends the live streams of every viewer and stops the refresher; call it before the
// server's Shutdown, which waits for streams to end. It also stops what an action started
// in the dashboard's own jobs client (the wake-ups of a job a retried workflow enqueued).
func (db *Dashboard) Close() {
	db.hub.close()
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	if err := db.jobs.Close(ctx); err != nil {
		db.cfg.Logger.Warn("dashboard: closing its jobs client", "err", err)
	}
}

// refreshes is how many times the shared snapshot has been read: for tests.
func (db *Dashboard) refreshes() int64 { return db.hub.refreshes.Load() }

// readTimeout bounds one snapshot's reads.
const readTimeout = 10 * time.Second

func (db *Dashboard) context(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), readTimeout)
}
