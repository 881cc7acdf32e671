// Package instance runs one twice node as a child process and reports what it sees as JSON
// lines on stdout; the parent side starts, kills, pauses and watches such processes. The
// demo, `twice bench failover` and the crash tests are built on it, so what they show is
// real processes dying, not goroutines pretending to.
package instance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// EnvOptions carries the JSON-encoded [Options] to a child process.
const EnvOptions = "TWICE_INSTANCE"

// Options configure a child instance.
type Options struct {
	DSN     string `json:"dsn"`
	Schema  string `json:"schema,omitempty"`
	Service string `json:"service"`
	// Bus is the node's Config.Bus: empty for the store-native bus, or NATS URLs.
	Bus string `json:"bus,omitempty"`
	// ClusterSecret is the node's Config.ClusterSecret.
	ClusterSecret []byte `json:"cluster_secret,omitempty"`
	// LeaseTTL, LeaderPoll, HeartbeatInterval and DeadAfter override the node defaults.
	LeaseTTL          time.Duration `json:"lease_ttl,omitempty"`
	LeaderPoll        time.Duration `json:"leader_poll,omitempty"`
	HeartbeatInterval time.Duration `json:"heartbeat_interval,omitempty"`
	DeadAfter         time.Duration `json:"dead_after,omitempty"`
	// FencedWrites makes the leader insert a row into FenceTable every few
	// milliseconds, each checked with twice.Fenced against the token of the term it started
	// in. The writer deliberately ignores the end of its term, like a worker that does not
	// notice it was paused, so that fencing alone must refuse its stale writes.
	FencedWrites bool `json:"fenced_writes,omitempty"`
	// Lock, if set, is a lock the instance takes at start and holds until it exits.
	Lock string `json:"lock,omitempty"`
	// Check runs the consistency checker's workload (see check.go).
	Check bool `json:"check,omitempty"`
	// Events, if set ("exactly-once" or "shared"), joins a consumer group that records
	// every event of EventsTopic it handles in EffectsTable.
	Events string `json:"events,omitempty"`
	// EventWork is how long handling one event takes (a sleep in the handler, inside the
	// group's transaction for exactly-once), so that kills land mid-batch.
	EventWork time.Duration `json:"event_work,omitempty"`
	// IdempotencyHTTP serves node.Idempotency().Middleware over HTTP on a free local port,
	// reported in an "http" event; BlockRequests makes its handler never answer, like a
	// request in flight when the process is killed. See http.go.
	IdempotencyHTTP bool          `json:"idempotency_http,omitempty"`
	BlockRequests   bool          `json:"block_requests,omitempty"`
	DeadOwnerGrace  time.Duration `json:"dead_owner_grace,omitempty"`
	// Propagation makes the instance report every cache invalidation and setting change it
	// applies, for the propagation benchmarks (`twice bench invalidation` and `config`).
	Propagation bool `json:"propagation,omitempty"`
	// CacheWriter makes the instance update CrashTable and invalidate it with InvalidateTx
	// in the same transaction, over and over, so it can be killed around its commits.
	CacheWriter bool `json:"cache_writer,omitempty"`
	// Verbose logs the node's info messages on stderr, not only its warnings.
	Verbose bool `json:"verbose,omitempty"`
	// Work makes the instance work jobs (and fire a schedule): see work.go.
	Work *WorkOptions `json:"work,omitempty"`
}

// Event is one line a child prints.
type Event struct {
	Event string `json:"event"` // ready, elected, demoted, fenced, locked, write_error, http, handling, invalidated, setting, lost, stall, closed, error
	ID    string `json:"id,omitempty"`
	PID   int    `json:"pid,omitempty"`
	Token int64  `json:"token,omitempty"`
	// T is when it happened, in Unix nanoseconds on the machine's wall clock. For
	// "demoted" it is when the term ended: the lease's deadline if it expired (a paused
	// process cannot believe it leads past that: IsLeader checks it), else the moment of
	// release.
	T int64 `json:"t"`
	// From is, on "stall", when the cluster could first count the instance dead (T is when
	// its heartbeats landed again).
	From   int64  `json:"from,omitempty"`
	Writes int    `json:"writes,omitempty"` // fenced writes accepted in the term, on "fenced" and "demoted"
	Addr   string `json:"addr,omitempty"`   // on "http": where the instance serves
	Err    string `json:"err,omitempty"`
	// Op is one operation of the checker workload, on "op" events.
	Op *Op `json:"op,omitempty"`
	// Key is the cache key or setting applied, on "invalidated" and "setting".
	Key string `json:"key,omitempty"`
	// Job, Attempt and Tick describe a job start ("job", "tick" events).
	Job     int64  `json:"job,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	Tick    string `json:"tick,omitempty"`
	// Proc is the parent's index of the process; children leave it zero.
	Proc int `json:"-"`
}

// Time returns e.T as a time.
func (e Event) Time() time.Time { return time.Unix(0, e.T) }

// FencedWrite is one accepted write, in commit order.
type FencedWrite struct {
	Token    int64
	Instance string
}

// FencedWrites returns the writes the leaders of service made, in the order they committed:
// on SQLite the id order is the commit order (one writer); on PostgreSQL a write fenced
// by token n commits before token n+1 can be issued, so ids of later terms are higher.
func FencedWrites(ctx context.Context, s *store.Store, service string) ([]FencedWrite, error) {
	rows, err := s.Reader().Query(ctx, "SELECT token, instance FROM "+FenceTable+" WHERE service = $1 ORDER BY id", service)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []FencedWrite
	for rows.Next() {
		var w FencedWrite
		if err := rows.Scan(&w.Token, &w.Instance); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// IsChild reports whether this process was started as an instance.
func IsChild() bool { return os.Getenv(EnvOptions) != "" }

// Main runs the instance described by $TWICE_INSTANCE until SIGTERM or SIGINT, then closes
// the node gracefully. It returns the process exit code.
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

func run(ctx context.Context, o Options, out io.Writer) error {
	level := slog.LevelWarn
	if o.Verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	node, err := twice.Open(ctx, twice.Config{
		DSN: o.DSN, Schema: o.Schema, Name: o.Service, Bus: o.Bus, ClusterSecret: o.ClusterSecret, Logger: logger,
		LeaseTTL: o.LeaseTTL, LeaderPoll: o.LeaderPoll, HeartbeatInterval: o.HeartbeatInterval, DeadAfter: o.DeadAfter,
		// The checker's client holds one fixed token (CheckAuth), so scoping by the
		// credential is safe here; a real API resolves its tokens to a principal.
		Idempotency: idempotency.Config{DeadOwnerGrace: o.DeadOwnerGrace, Scope: idempotency.AuthorizationScope},
		Jobs:        o.jobsConfig(),
	})
	if err != nil {
		return err
	}
	em := &emitter{enc: json.NewEncoder(out), id: node.ID()}
	node.Leader().OnElected(func(ctx context.Context) {
		l := lease.FromContext(ctx)
		em.emit(Event{Event: "elected", Token: l.Token()})
		var writes writeCount
		if o.FencedWrites {
			go fencedWriter(node, l, em, &writes)
		}
		<-ctx.Done()
		end := time.Now()
		if d := l.Deadline(); d.Before(end) {
			end = d
		}
		em.emit(Event{Event: "demoted", Token: l.Token(), T: end.UnixNano(), Writes: writes.get(),
			Err: context.Cause(ctx).Error()})
	})
	if o.Work != nil {
		if err := startWork(node, o.Work, em); err != nil {
			return err
		}
	}
	if o.Lock != "" {
		k, err := node.Locks().Acquire(ctx, o.Lock, nil)
		if err != nil {
			return err
		}
		em.emit(Event{Event: "locked", Token: k.Token()})
	}
	stopCheck := func() {}
	if o.Check {
		var quiesce func()
		stopCheck, quiesce = startCheck(ctx, node, em)
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		defer signal.Stop(usr1)
		go func() {
			if _, ok := <-usr1; ok {
				quiesce()
				em.emit(Event{Event: "quiesced"})
			}
		}()
	}
	if err := consumeEvents(ctx, node, o); err != nil {
		return err
	}
	stopHTTP := func() {}
	if o.IdempotencyHTTP {
		stopHTTP = serveIdempotency(node, o, em)
	}
	if o.Propagation {
		if err := watchPropagation(node, em); err != nil {
			return err
		}
	}
	if o.CacheWriter {
		if err := writeAndInvalidate(ctx, node); err != nil {
			return err
		}
	}
	em.emit(Event{Event: "ready"})
	<-ctx.Done()
	stopHTTP() // requests end before the node they use closes
	stopCheck()
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = node.Close(closeCtx)
	em.emit(Event{Event: "closed"})
	return err
}

type writeCount struct {
	mu sync.Mutex // protects n
	n  int
}

func (w *writeCount) add() {
	w.mu.Lock()
	w.n++
	w.mu.Unlock()
}

func (w *writeCount) get() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// fencedWriter writes under l's token until a write is fenced.
func fencedWriter(node *twice.Node, l *lease.Lease, em *emitter, writes *writeCount) {
	ctx := context.Background()
	for {
		err := node.Store().InTx(ctx, func(tx store.Tx) error {
			if err := twice.Fenced(ctx, tx, l); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+FenceTable+" (service, token, instance) VALUES ($1, $2, $3)", node.Service(), l.Token(), node.ID())
			return err
		})
		switch {
		case errors.Is(err, twice.ErrFenced):
			em.emit(Event{Event: "fenced", Token: l.Token(), Writes: writes.get(), Err: err.Error()})
			return
		case err != nil:
			// A closed store means the node is shutting down.
			if node.Store().Ping(ctx) != nil {
				return
			}
			em.emit(Event{Event: "write_error", Token: l.Token(), Err: err.Error()})
		default:
			writes.add()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sleep waits for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
