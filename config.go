package twice

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/health"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/presence"
	"github.com/twicehq/twice/realtime"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/settings"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

// MigrateMode says what [Open] does about the database schema.
type MigrateMode int

const (
	// MigrateAuto applies pending migrations under a migration lock at Open, so the first of
	// any number of instances starting together migrates and the rest wait for it.
	MigrateAuto MigrateMode = iota
	// MigrateOff never changes the schema: Open fails with [store.ErrMigrationsPending] if
	// it is behind. For teams that apply `twice migrate sql` with their own tool.
	MigrateOff
)

// EnvDSN is the environment variable [Config.DSN] defaults to, so one binary runs on the
// embedded SQLite file on a laptop and on PostgreSQL in production without a code change.
const EnvDSN = "TWICE_DSN"

// EnvService is the environment variable [Config.Name] defaults to. The twice command's
// --service defaults to it too, so a service and the CLI started with it agree.
const EnvService = "TWICE_SERVICE"

// EnvSchema is the environment variable [Config.Schema] defaults to, as the twice command's
// --schema does.
const EnvSchema = "TWICE_SCHEMA"

// Config configures a [Node]. The zero value runs on the embedded SQLite default.
type Config struct {
	// DSN names the database all instances of the service share: "sqlite:PATH",
	// "postgres://…" or the libpq form "host=… dbname=… user=…". Defaults to $TWICE_DSN,
	// or "sqlite:./twice.db" (Open then logs a warning: instances started in different
	// directories would share nothing).
	DSN string
	// Name is the service. Services sharing a database are isolated from each other: each
	// has its own members, leader and locks. Defaults to $TWICE_SERVICE, or the
	// executable's base name (Open then logs a warning: differently named builds would
	// silently form separate services).
	Name string
	// Schema is the PostgreSQL schema for twice's tables. Defaults to $TWICE_SCHEMA, or the
	// DSN's search_path, usually "public".
	Schema string
	// Migrate says whether Open applies pending migrations. Defaults to [MigrateAuto].
	Migrate MigrateMode
	// Bus selects the transport of signals between instances: empty for the store-native
	// bus (LISTEN/NOTIFY on PostgreSQL, a polled table on SQLite), or a NATS URL
	// ("nats://host:4222", a comma-separated list for a cluster) for package natsbus.
	// Defaults to empty.
	Bus string
	// NATS configures the connection to the NATS server of Bus: credentials, NKey, TLS.
	// Defaults to none: the URL alone.
	NATS NATSConfig
	// ClusterSecret, shared by every instance of the service, signs every bus message
	// (HMAC-SHA256 over channel, payload, sender and send time); messages not signed with
	// it, altered, or older than a minute are dropped and counted ([Node.BusStats]).
	// Without it anyone who can NOTIFY on the database (any role) or publish on the NATS
	// subjects can send signals, which are only hints but can make instances do work. At
	// least 32 bytes; instances need clocks within a minute of each other. The same secret
	// authenticates the requests instances forward to each other ([Node.Forwarder], which
	// needs it; their clocks must then agree within 10 s). Defaults to none: messages
	// unsigned.
	ClusterSecret []byte

	// InstanceID names this instance; unique among live instances. Defaults to
	// host-pid-random.
	InstanceID string
	// AdvertiseAddr is where other instances and operators can reach this instance
	// ("host:port", or an http(s) URL): the address [Node.Forwarder] sends other instances'
	// requests to, shown by `twice status`. Defaults to empty.
	AdvertiseAddr string
	// Version is the build version shown by `twice status`. Defaults to the main module's
	// version from the build info, or "devel".
	Version string

	// HeartbeatInterval is how often the instance heartbeats, in database time. Defaults to
	// 2 seconds: one transaction that also renews every lease the instance holds. A crash
	// is noticed by the liveness lock; the heartbeat bounds how long a paused or cut off
	// instance counts as alive. Halve it (and LeaseTTL) to notice those twice as fast, for
	// twice the idle cost.
	HeartbeatInterval time.Duration
	// DeadAfter is how long without a heartbeat until the instance counts as dead and its
	// work is rescued. Defaults to 3 heartbeat intervals. A crashed process is noticed
	// sooner, by its liveness lock (see NoLivenessLock); DeadAfter covers a paused process,
	// a lost machine or a cut network.
	DeadAfter time.Duration
	// NoLivenessLock turns off the liveness lock. By default each instance holds one for as
	// long as its process lives (on PostgreSQL a session advisory lock on a connection of
	// its own, on SQLite a file lock in the directory DB.live beside the database file),
	// and another instance waits for it: when the process dies, the kernel frees the lock,
	// and its leadership, locks and running jobs move within milliseconds instead of after
	// LeaseTTL and DeadAfter. Turn it off behind a pooler that does not keep sessions
	// (PgBouncer in transaction mode); a crash is then noticed by the heartbeat alone.
	NoLivenessLock bool
	// LeaseTTL is how long the leader lease, and locks by default, outlive a holder that
	// stops renewing them; renewals happen every third of it, carried by the heartbeat's
	// transaction when it beats that often (by default it does: one transaction every two
	// seconds heartbeats and renews every lease the instance holds). It bounds failover after a
	// pause or a lost machine: followers look at the lease when it is due to run out. After
	// a crash the liveness lock frees them sooner, and a release (a graceful Close, a crash)
	// is announced on the bus and wakes followers at once. Defaults to 6 seconds, as
	// DeadAfter: an instance silent that long is counted dead and loses its leases.
	LeaseTTL time.Duration
	// LeaderPoll is how long a follower waits before it looks again after another instance
	// won an election it also tried for. Defaults to 100 milliseconds.
	LeaderPoll time.Duration
	// KeepDead is how long a dead instance stays listed before the leader removes its row.
	// Defaults to 10 minutes.
	KeepDead time.Duration
	// Backstop is how often the building blocks look at the database for work or changes
	// whose signal was lost, while the bus vouches for delivering signals (LISTEN or NATS
	// connected; SQLite always): settings, cron, the rescue of jobs, event readers. While the
	// bus does not (a dropped connection, reported at once) they look at the Poll of their
	// own configuration, and a reconnection makes them all look at once. Work that falls due
	// by time alone (a scheduled job) does not wait for it. Set it no longer than those
	// Polls to always poll at them. Defaults to 30 seconds.
	Backstop time.Duration
	// Tracing, when set, traces the messages of jobs, events and workflows with
	// OpenTelemetry, following its messaging conventions: "send <queue>" where a job is
	// enqueued (or an event published, "send <topic>"), its context carried in the job's
	// Meta (the event's Headers) as W3C traceparent and tracestate, and "process <queue>"
	// around each attempt (each handling), linked to the span that sent it and parent of
	// what the handler traces; a workflow's steps are "step <name>" spans inside the
	// process span of its run. Give it the TracerProvider of your OpenTelemetry SDK (whose
	// resource names the service). Nil, the default, traces nothing and costs nothing.
	Tracing trace.TracerProvider

	// Each building block's own configuration. A block starts when the application first
	// uses it (its accessor on the Node); what it works on (store, bus, service, instance,
	// logger) is the node's.

	// Jobs configures [Node.Jobs]: queues, retries, retention. Jobs.Queues lists the queues
	// this instance works besides its workers' own, with their concurrency: append to it,
	// e.g. cfg.Jobs.Queues = append(cfg.Jobs.Queues, jobs.QueueConfig{Name: "mail"}).
	// Defaults to the zero jobs.Config's defaults.
	Jobs jobs.Config
	// Cron configures [Node.Cron]. Defaults to the zero cron.Config's defaults.
	Cron cron.Config
	// Workflows configures [Node.Workflows]: the default retries of steps and
	// compensations. Defaults to the zero workflow.Config's defaults.
	Workflows workflow.Config
	// Events configures [Node.Events]: retention (7 days; stream events are kept
	// forever), the readers' poll, the largest payload. Defaults to the zero events.Config's
	// defaults.
	Events events.Config
	// Caches configures [Node.Caches]. Defaults to the zero cache.ManagerConfig's defaults.
	Caches cache.ManagerConfig
	// Settings configures [Node.Settings]: the poll, the history kept. Defaults to the zero
	// settings.Config's defaults.
	Settings settings.Config
	// Presence configures [Node.Presence]: the poll. Defaults to the zero presence.Config's
	// defaults.
	Presence presence.Config
	// Realtime configures [Node.Realtime]: who connects (Authenticate, required to serve
	// its endpoint), which rooms they may join, origins, history kept, send buffer.
	// Defaults to the zero realtime.Config's defaults.
	Realtime realtime.Config
	// Sessions configures [Node.Sessions]: cookie, timeouts, trusted proxies. Defaults to
	// the zero session.Config's defaults.
	Sessions session.Config
	// Idempotency configures [Node.Idempotency]: methods, scope, retention, limits; its
	// Scope defaults to [UserScope]. Defaults to the zero idempotency.Config's defaults.
	Idempotency idempotency.Config
	// Health configures [Node.Health]: who may see the checks' details (nobody by
	// default: plain bodies) and how long probes share results; Attrs and Logger are the
	// node's. Defaults to the zero health.Config.
	Health health.Config

	// Logger receives the node's logs, each with the instance id. Defaults to slog.Default().
	Logger *slog.Logger
	// Clock replaces database time. For tests only; leave nil in production.
	Clock store.Clock
	// Observer sees every statement twice runs (see [store.Observer]): for tests of what
	// your service costs the database, and for metrics. Defaults to nil: none.
	Observer store.Observer
}

const maxNameLen = 128

var validService = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)

// withDefaults returns a copy of c with zero fields filled in.
func (c Config) withDefaults() Config {
	if c.DSN == "" {
		c.DSN = os.Getenv(EnvDSN)
	}
	if c.DSN == "" {
		c.DSN = store.DefaultDSN
	}
	if c.Name == "" {
		c.Name = os.Getenv(EnvService)
	}
	if c.Name == "" {
		c.Name = strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe")
	}
	if c.Schema == "" {
		c.Schema = os.Getenv(EnvSchema)
	}
	if c.InstanceID == "" {
		host, _ := os.Hostname()
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		c.InstanceID = fmt.Sprintf("%s-%d-%s", shortHost(host), os.Getpid(), hex.EncodeToString(b))
	}
	if c.Version == "" {
		c.Version = BuildVersion()
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = cluster.DefaultHeartbeatInterval
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = cluster.DefaultDeadAfterBeats * c.HeartbeatInterval
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = lease.DefaultTTL
	}
	if c.LeaderPoll == 0 {
		c.LeaderPoll = cluster.DefaultLeaderPoll
	}
	if c.KeepDead == 0 {
		c.KeepDead = cluster.DefaultKeepDead
	}
	if c.Backstop == 0 {
		c.Backstop = block.DefaultBackstop
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// warnDefaults logs, once per Open, the defaults that let instances silently part ways:
// a Name taken from the executable (two builds named differently are two services, with
// two leaders and cron firing twice) and the SQLite file in the working directory
// (instances started elsewhere share nothing). given is the Config as passed to Open.
func warnDefaults(log *slog.Logger, given, c Config) {
	if given.Name == "" && os.Getenv(EnvService) == "" {
		log.Warn("twice: Name defaults to the executable's name; set Config.Name or $"+EnvService+
			" so that every build of the service joins the same service", "name", c.Name)
	}
	if given.DSN == "" && os.Getenv(EnvDSN) == "" {
		path := strings.TrimPrefix(c.DSN, "sqlite:")
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
		log.Warn("twice: DSN defaults to a SQLite file in the working directory; set Config.DSN or $"+EnvDSN+
			" so that instances started elsewhere share the database", "dsn", c.DSN, "file", path)
	}
}

func (c Config) validate() error {
	var errs []error
	if len(c.Name) > maxNameLen || !validService.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("service Name %q must be 1 to %d letters, digits, '.', '_', ':' or '-'", c.Name, maxNameLen))
	}
	if len(c.InstanceID) > maxNameLen || !validService.MatchString(c.InstanceID) {
		errs = append(errs, fmt.Errorf("InstanceID %q must be 1 to %d letters, digits, '.', '_', ':' or '-'", c.InstanceID, maxNameLen))
	}
	if c.HeartbeatInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("HeartbeatInterval %v is below 10ms", c.HeartbeatInterval))
	}
	if c.DeadAfter <= c.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("DeadAfter %v must be longer than HeartbeatInterval %v", c.DeadAfter, c.HeartbeatInterval))
	}
	if c.LeaseTTL < lease.MinTTL {
		errs = append(errs, fmt.Errorf("LeaseTTL %v is below the minimum %v", c.LeaseTTL, lease.MinTTL))
	}
	if c.LeaderPoll < time.Millisecond || c.LeaderPoll > c.LeaseTTL {
		errs = append(errs, fmt.Errorf("LeaderPoll %v must be between 1ms and LeaseTTL %v", c.LeaderPoll, c.LeaseTTL))
	}
	if c.Backstop < 0 {
		errs = append(errs, fmt.Errorf("a negative Backstop %v", c.Backstop))
	}
	if err := validBus(c.Bus); err != nil {
		errs = append(errs, err)
	}
	if err := c.NATS.validate(c.Bus); err != nil {
		errs = append(errs, err)
	}
	if err := validSecret(c.ClusterSecret); err != nil {
		errs = append(errs, err)
	}
	if c.Migrate != MigrateAuto && c.Migrate != MigrateOff {
		errs = append(errs, fmt.Errorf("unknown Migrate mode %d", c.Migrate))
	}
	if len(errs) > 0 {
		return fmt.Errorf("twice: invalid Config: %w", errors.Join(errs...))
	}
	return nil
}

func shortHost(h string) string {
	h, _, _ = strings.Cut(h, ".")
	h = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, h)
	if h == "" || h[0] == '-' {
		h = "host" + h
	}
	if len(h) > 40 {
		h = h[:40]
	}
	return h
}

// BuildVersion is the version of the running binary: its main module's version, or its VCS
// revision, or "devel". [Config.Version] defaults to it.
func BuildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}
