// Package instance runs one twice node as a child process and reports what it sees as JSON
// lines on stdout; the parent side starts, kills, pauses and watches such processes. What a
// child does besides being a node is a list of workloads, each registered under a name
// (workload.go) and asked for by the parent in [Options.Workloads]. The demo, the
// benchmarks, the consistency checker and the crash tests are built on it, so what they show
// is real processes dying, not goroutines pretending to.
package instance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/lease"
)

// EnvOptions carries the JSON-encoded [Options] to a child process. Not TWICE_INSTANCE:
// `twice run` gives every instance it starts that name, its slot.
const EnvOptions = "TWICE_INSTANCE_OPTIONS"

// Options configure a child instance: its node, and the workloads it runs.
type Options struct {
	DSN     string `json:"dsn"`
	Schema  string `json:"schema,omitempty"`
	Service string `json:"service"`
	// Bus is the node's Config.Bus: empty for the store-native bus, or NATS URLs.
	Bus string `json:"bus,omitempty"`
	// ClusterSecret is the node's Config.ClusterSecret.
	ClusterSecret []byte `json:"cluster_secret,omitempty"`
	// LeaseTTL, LeaderPoll, HeartbeatInterval, DeadAfter and DeadOwnerGrace (of the
	// idempotency keys) override the node defaults.
	LeaseTTL          time.Duration `json:"lease_ttl,omitempty"`
	LeaderPoll        time.Duration `json:"leader_poll,omitempty"`
	HeartbeatInterval time.Duration `json:"heartbeat_interval,omitempty"`
	DeadAfter         time.Duration `json:"dead_after,omitempty"`
	DeadOwnerGrace    time.Duration `json:"dead_owner_grace,omitempty"`
	// NoLivenessLock is the node's Config.NoLivenessLock: a crash is noticed by the
	// heartbeat and the leases alone.
	NoLivenessLock bool `json:"no_liveness_lock,omitempty"`
	// Verbose logs the node's info messages on stderr, not only its warnings.
	Verbose bool `json:"verbose,omitempty"`
	// Workloads are what the instance does besides being a node, each a registered
	// workload with its parameters (see workload.go). Without any, the instance only takes
	// part in the elections and reports its terms.
	Workloads []Workload `json:"-"`
}

// Event is one line a child prints.
type Event struct {
	Event string `json:"event"` // ready, elected, demoted, fenced, assigned, revoked, locked, write_error, http, handling, invalidated, setting, lost, stalling, stall, idle, members, connected, presence, quiesced, step, compensation, closed, error
	ID    string `json:"id,omitempty"`
	PID   int    `json:"pid,omitempty"`
	Token int64  `json:"token,omitempty"`
	// T is when it happened, in Unix nanoseconds on the machine's wall clock. For
	// "demoted" it is when the term ended: the lease's deadline if it expired (a paused
	// process cannot believe it leads past that: IsLeader checks it), else the moment of
	// release.
	T int64 `json:"t"`
	// From is, on "stalling" and "stall", when the cluster could first count the instance
	// dead (on "stall", T is when its heartbeats landed again).
	From   int64  `json:"from,omitempty"`
	Writes int    `json:"writes,omitempty"` // fenced writes accepted in the term, on "fenced"
	Addr   string `json:"addr,omitempty"`   // on "http": where the instance serves
	Err    string `json:"err,omitempty"`
	// Op is one operation of the checker workload, on "op" events.
	Op *Op `json:"op,omitempty"`
	// Key is the cache key or setting applied, on "invalidated" and "setting"; the join
	// or leave seen, on "presence"; the partition, on "assigned", "revoked" and "fenced"
	// of partition-writes; the step's idempotency key, on "step".
	Key string `json:"key,omitempty"`
	// Job, Attempt and Tick describe a job start ("job", "tick" events).
	Job     int64  `json:"job,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	Tick    string `json:"tick,omitempty"`
	// Statements and CPUMicros are, on "idle", the statements the node has run and the
	// CPU its process has used, both since it started.
	Statements int64 `json:"statements,omitempty"`
	CPUMicros  int64 `json:"cpu_us,omitempty"`
	// Members is, on "members", how many live instances the node lists.
	Members int `json:"members,omitempty"`
	// Proc is the parent's index of the process; children leave it zero.
	Proc int `json:"-"`
}

// Time returns e.T as a time.
func (e Event) Time() time.Time { return time.Unix(0, e.T) }

// IsChild reports whether this process was started as an instance.
func IsChild() bool { return os.Getenv(EnvOptions) != "" }

// Main runs the instance described by $TWICE_INSTANCE_OPTIONS until SIGTERM or SIGINT, then
// closes the node gracefully. It returns the process exit code.
func Main() int {
	var o Options
	if err := json.Unmarshal([]byte(os.Getenv(EnvOptions)), &o); err != nil {
		fmt.Fprintf(os.Stderr, "instance: bad %s: %v\n", EnvOptions, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "instance: %v\n", err)
		return 1
	}
	return 0
}

type emitter struct {
	mu  sync.Mutex // protects enc
	enc *json.Encoder
	id  string
}

func (e *emitter) emit(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ev.ID, ev.PID = e.id, os.Getpid()
	if ev.T == 0 {
		ev.T = time.Now().UnixNano()
	}
	_ = e.enc.Encode(ev)
}

// env is what the workloads of one instance run on, and what they share.
type env struct {
	node *twice.Node
	em   *emitter
	// writing ends when the parent asks the instance to quiesce (SIGUSR1), and at the
	// latest when it stops: workloads that write stop then, so the others can catch up.
	writing context.Context
	mux     *http.ServeMux // served if a workload adds a route (see handle)
	routes  bool
	seq     atomic.Int64
}

func (in *env) emit(ev Event) { in.em.emit(ev) }

// unique returns a value no other call returns, on this instance or another.
func (in *env) unique() int64 { return int64(os.Getpid())<<24 | in.seq.Add(1) }

// handle adds a route to the instance's HTTP server, which then serves on a free local port
// announced in an "http" event.
func (in *env) handle(pattern string, h http.Handler) {
	in.mux.Handle(pattern, h)
	in.routes = true
}

func run(ctx context.Context, o Options, out io.Writer) error {
	level := slog.LevelWarn
	if o.Verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg := twice.Config{
		DSN: o.DSN, Schema: o.Schema, Name: o.Service, Bus: o.Bus, ClusterSecret: o.ClusterSecret, Logger: logger,
		LeaseTTL: o.LeaseTTL, LeaderPoll: o.LeaderPoll, HeartbeatInterval: o.HeartbeatInterval, DeadAfter: o.DeadAfter,
		NoLivenessLock: o.NoLivenessLock,
		// The checker's client holds one fixed token (CheckAuth), so scoping by the
		// credential is safe here; a real API resolves its tokens to a principal.
		Idempotency: idempotency.Config{DeadOwnerGrace: o.DeadOwnerGrace, Scope: idempotency.AuthorizationScope},
	}
	for _, w := range o.Workloads {
		if c, ok := w.(configurer); ok {
			c.configure(&cfg)
		}
	}
	node, err := twice.Open(ctx, cfg)
	if err != nil {
		return err
	}
	em := &emitter{enc: json.NewEncoder(out), id: node.ID()}
	reportTerms(node, em)
	writing, quiesce := context.WithCancel(context.WithoutCancel(ctx))
	defer quiesce()
	in := &env{node: node, em: em, writing: writing, mux: http.NewServeMux()}
	var stops []func()
	for _, w := range o.Workloads {
		stop, err := w.start(ctx, in)
		if err != nil {
			return fmt.Errorf("workload %s: %w", w.Name(), err)
		}
		stops = append(stops, stop)
	}
	stopHTTP := func() {}
	if in.routes {
		if stopHTTP, err = serve(in.mux, em); err != nil {
			return err
		}
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	go func() {
		if _, ok := <-usr1; ok {
			quiesce()
			em.emit(Event{Event: "quiesced"})
		}
	}()
	em.emit(Event{Event: "ready"})
	<-ctx.Done()
	quiesce()
	// Workloads stop newest first, then the server: a request a workload holds up (see
	// IdempotencyHTTP.Block) is let go first, and every request ends before the node closes.
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
	stopHTTP()
	closeCtx, cancel := context.WithTimeout(context.Background(), loop.CloseTimeout)
	defer cancel()
	err = node.Close(closeCtx)
	em.emit(Event{Event: "closed"})
	return err
}

// reportTerms reports every term of leadership: "elected", then "demoted" when it ends.
func reportTerms(node *twice.Node, em *emitter) {
	node.Leader().OnElected(func(ctx context.Context) {
		l := lease.FromContext(ctx)
		em.emit(Event{Event: "elected", Token: l.Token()})
		<-ctx.Done()
		end := time.Now()
		if d := l.Deadline(); d.Before(end) {
			end = d
		}
		em.emit(Event{Event: "demoted", Token: l.Token(), T: end.UnixNano(), Err: context.Cause(ctx).Error()})
	})
}

// serve serves mux on a free local port and reports it in an "http" event.
func serve(mux *http.ServeMux, em *emitter) (stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	em.emit(Event{Event: "http", Addr: ln.Addr().String()})
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), loop.ReleaseTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
