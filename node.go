package twice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/health"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/otelx"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/lock"
	"github.com/twicehq/twice/partition"
	"github.com/twicehq/twice/presence"
	"github.com/twicehq/twice/realtime"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/settings"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

// Components are the schemas of every building block, in the order they are migrated.
func Components() []store.Component {
	return []store.Component{lease.Component(), cluster.Component(), bus.Component(), events.Component(),
		session.Component(), idempotency.Component(), settings.Component(), jobs.Component(), cron.Component(),
		partition.Component(), presence.Component(), realtime.Component(), workflow.Component()}
}

// LeaseChannel is the bus channel on which released lease names are announced. A message
// on it is a hint: waiters and followers look at the lease table at once instead of at
// their next poll; it frees and grants nothing.
const LeaseChannel = "twice.lease"

// Node is one instance of a service: registered in the cluster, heartbeating, campaigning
// for leadership, and the door to every building block. Open one per process; Close it on
// shutdown so the rest of the cluster takes over at once.
type Node struct {
	cfg Config
	log *slog.Logger

	store    *store.Store
	bus      bus.Bus
	cuttable *bus.Cuttable // bus, which twicetest can cut (see internal/nodehook)
	signer   *bus.Signer   // of Config.ClusterSecret; nil without one
	tracer   *otelx.Tracer // of Config.Tracing; nil without one
	members  *cluster.Membership
	leases   *lease.Manager
	leader   *cluster.Leader
	locks    *lock.Locks
	health   *health.Health
	blocks   blocks

	// panics counts the panics recovered from the users' code the node runs (see Panics).
	panics    atomic.Int64
	draining  atomic.Bool
	closeOnce sync.Once
	closeErr  error

	// requests and failed count the HTTP requests the instance answered, and those that
	// failed (see CountRequest).
	requests, failed atomic.Int64
}

// Open connects to the database, migrates it (see [Config.Migrate]), registers this
// instance and starts heartbeating and campaigning for leadership. The node is ready when
// Open returns.
func Open(ctx context.Context, cfg Config) (*Node, error) {
	given := cfg
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("instance", cfg.InstanceID, "service", cfg.Name)
	warnDefaults(log, given, cfg)
	s, err := store.Open(ctx, cfg.DSN, &store.Options{Schema: cfg.Schema, Clock: cfg.Clock, Logger: log, Observer: cfg.Observer})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, store: s, tracer: otelx.New(cfg.Tracing)}
	if err := n.start(ctx); err != nil {
		n.abort()
		return nil, err
	}
	log.Info("twice: node ready", "dsn", s.String(), "version", cfg.Version)
	return n, nil
}

func (n *Node) start(ctx context.Context) error {
	cfg := n.cfg
	m := store.NewMigrator(n.store, Components()...)
	if cfg.Migrate == MigrateAuto {
		steps, err := m.Up(ctx)
		if err != nil {
			return fmt.Errorf("twice: migrate %s: %w", n.store, err)
		}
		for _, st := range steps {
			n.log.Info("twice: migrated", "step", st.String())
		}
	} else if err := m.Check(ctx); err != nil {
		return err
	}

	host, _ := os.Hostname()
	// The health checks exist before the first heartbeat, which reports their results.
	n.health = n.newHealth()
	var err error
	n.members, err = cluster.NewMembership(n.store, cluster.Config{
		Service: cfg.Name, ID: cfg.InstanceID, Host: host, PID: os.Getpid(), Version: cfg.Version,
		Addr: cfg.AdvertiseAddr, HeartbeatInterval: cfg.HeartbeatInterval, DeadAfter: cfg.DeadAfter, Logger: n.log,
		Panics: &n.panics, NoLivenessLock: cfg.NoLivenessLock, Report: n.report,
	})
	if err != nil {
		return err
	}
	if err := n.members.Join(ctx); err != nil {
		return err
	}
	b, err := n.openBus(ctx)
	if err != nil {
		return err
	}
	n.cuttable = bus.NewCuttable(b, n.log, &n.panics)
	n.bus = n.cuttable
	n.leases, err = lease.NewManager(n.store, lease.Config{Service: cfg.Name, Holder: cfg.InstanceID, TTL: cfg.LeaseTTL,
		Logger: n.log, OnRelease: n.announceRelease, Panics: &n.panics})
	if err != nil {
		return err
	}
	// The heartbeat carries the renewals of this instance's leases: one transaction a
	// beat for both. The manager renews by itself only if a beat is late, or a lease's
	// TTL needs renewals more often than the heartbeat comes.
	n.members.Carry(n.leases.RenewIn)
	n.leases.Carried(cfg.HeartbeatInterval)
	n.locks = lock.New(n.leases)
	lc := cluster.LeaderConfig{TTL: cfg.LeaseTTL, Poll: cfg.LeaderPoll, Logger: n.log, Panics: &n.panics}
	if cfg.DeadAfter <= cfg.LeaseTTL {
		// A silent leader is found dead before its lease runs out, and that wakes the
		// followers (below): they need not look at each renewal.
		lc.Backstop = func() time.Duration {
			if bus.Delivering(n.bus) {
				return cfg.Backstop
			}
			return 0
		}
	}
	n.leader = cluster.NewLeader(n.leases, lc)
	n.members.OnDeath(n.leader.Died)
	n.leader.OnElected(n.reapDead)
	// An instance whose process is gone (its liveness lock was freed) has its leases freed
	// now, and announced, so that leadership, locks and partitions move at once; blocks
	// that rescue work by liveness hear of it too (see cluster.Membership.OnDead). One
	// whose lock session ends while it lives gives up its leases first, since the others
	// may take them over now. A death noticed before this point is taken over when the
	// leases expire.
	n.members.OnDead(func(ctx context.Context, id string) {
		if _, err := n.leases.ReleaseDead(ctx, id); err != nil {
			n.log.Warn("twice: freeing a dead instance's leases failed; they expire at their deadlines", "dead", id, "err", err)
		}
	})
	n.members.OnLivenessLost(n.leases.LoseAll)
	// Released leases wake waiters everywhere at once; a lost signal only means they wake
	// at their next look.
	n.bus.Subscribe(LeaseChannel, func(m bus.Message) {
		n.leases.Poke()
		if m.Lost || string(m.Payload) == cluster.LeaderLease {
			n.leader.Poke()
		}
	})
	if err := n.build(); err != nil {
		return err
	}
	return n.members.SetState(ctx, cluster.StateReady)
}

// announceRelease tells every instance which leases were just freed.
func (n *Node) announceRelease(ctx context.Context, names []string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	for _, name := range names {
		if err := n.bus.Publish(ctx, LeaseChannel, []byte(name)); err != nil {
			n.log.Debug("twice: announcing a released lease failed; others find it at their next look", "lease", name, "err", err)
		}
	}
}

// abort undoes a half-finished Open.
func (n *Node) abort() {
	ctx, cancel := context.WithTimeout(context.Background(), loop.ReleaseTimeout)
	defer cancel()
	_ = n.closeBlocks(ctx)
	if n.leader != nil {
		_ = n.leader.Stop(ctx)
	}
	if n.leases != nil {
		_ = n.leases.Close(ctx)
	}
	if n.members != nil {
		_ = n.members.Leave(ctx)
	}
	if n.bus != nil {
		_ = n.bus.Close(ctx)
	}
	_ = n.store.Shutdown(ctx)
}

func (n *Node) newHealth() *health.Health {
	hc := n.cfg.Health
	hc.Attrs, hc.Logger, hc.Panics = map[string]string{"instance": n.cfg.InstanceID, "service": n.cfg.Name}, n.log, &n.panics
	h := health.New(hc)
	// Registering can only fail on a duplicate name, which these fixed names are not.
	_ = h.Register("draining", 0, func(context.Context) error {
		if n.draining.Load() {
			return errors.New("instance is draining")
		}
		return nil
	})
	_ = h.Register("store", 0, n.store.Ping)
	_ = h.Register("cluster", 0, func(context.Context) error {
		if !n.members.Registered() {
			return fmt.Errorf("no successful heartbeat in the last %v", n.cfg.DeadAfter)
		}
		return nil
	})
	// A heartbeat loop that has not even tried for many intervals is stuck in this
	// process (a deadlock), which a restart fixes; a database outage is not.
	_ = h.RegisterKind("heartbeat-loop", health.Liveness, 0, func(context.Context) error {
		if since := n.members.SinceLastAttempt(); since > 10*n.cfg.DeadAfter {
			return fmt.Errorf("heartbeat loop has not run for %v", since.Round(time.Second))
		}
		return nil
	})
	return h
}

// reapDead runs on the leader: it removes the rows of instances dead for longer than
// KeepDead, looking every tenth of KeepDead (a row stays at most that much longer), and
// at least every DeadAfter.
func (n *Node) reapDead(ctx context.Context) {
	loop.Every(ctx, max(n.cfg.DeadAfter, n.cfg.KeepDead/10), func(ctx context.Context) {
		if k, err := n.members.Reap(ctx, n.cfg.KeepDead); err != nil && ctx.Err() == nil {
			n.log.Warn("twice: reaping dead instances failed", "err", err)
		} else if k > 0 {
			n.log.Info("twice: removed dead instances", "count", k)
		}
	})
}

// ID is this instance's id.
func (n *Node) ID() string { return n.cfg.InstanceID }

// Service is the service this instance belongs to.
func (n *Node) Service() string { return n.cfg.Name }

// Config returns the node's configuration with defaults filled in.
func (n *Node) Config() Config { return n.cfg }

// Logger is the node's logger, carrying the instance id.
func (n *Node) Logger() *slog.Logger { return n.log }

// Store is the node's database: use its Pool (PostgreSQL) or DB for the business
// transactions that twice's Tx operations and [Fenced] join.
func (n *Node) Store() *store.Store { return n.store }

// Bus carries signals between the instances of the service (see package bus).
func (n *Node) Bus() bus.Bus { return n.bus }

// Leader is this service's leader election.
func (n *Node) Leader() *cluster.Leader { return n.leader }

// IsLeader is shorthand for n.Leader().IsLeader().
func (n *Node) IsLeader() bool { return n.leader.IsLeader() }

// Locks are the service's cluster-wide locks and semaphores.
func (n *Node) Locks() *lock.Locks { return n.locks }

// Leases is the node's lease manager, for building blocks and advanced uses; most code
// wants [Node.Locks] or [Node.Leader].
func (n *Node) Leases() *lease.Manager { return n.leases }

// Health serves /livez, /readyz and /healthz; add your own checks with its Register.
func (n *Node) Health() *health.Health { return n.health }

// Ready reports whether the node should receive traffic: registered, reachable, not
// draining. It does not run the user's checks; /readyz does.
func (n *Node) Ready() bool { return !n.draining.Load() && n.members.Registered() }

// LastHeartbeat is when this instance's last successful heartbeat started. The other
// instances may count it dead, and rescue its jobs, once it is Config.DeadAfter old: alert
// well before that.
func (n *Node) LastHeartbeat() time.Time { return n.members.LastBeat() }

// OnHeartbeatStall registers fn to run when heartbeats resume after a stall long enough
// for the cluster to count this instance dead (a pause, a long GC, a database that did
// not answer): its jobs may have been rescued and run elsewhere meanwhile. from is when
// it could first be counted dead, to when it was alive again. fn must not block. Each
// stall is also logged as a warning.
func (n *Node) OnHeartbeatStall(fn func(from, to time.Time)) { n.members.OnStall(fn) }

// Member is an instance of the service as the cluster sees it.
type Member struct {
	cluster.Member
	Leader bool `json:"leader"`
}

// Members lists the service's instances, dead ones included until they are reaped, each
// with what it reported at its last heartbeat (its health checks' latest results and its
// request counts: [cluster.Member.Report]).
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	return Members(ctx, n.store, n.cfg.Name)
}

// Members lists the instances of service in the database s, marking the leader.
func Members(ctx context.Context, s *store.Store, service string) ([]Member, error) {
	ms, err := cluster.List(ctx, s, service)
	if err != nil {
		return nil, err
	}
	leader, err := lease.Lookup(ctx, s, service, cluster.LeaderLease)
	if err != nil && !errors.Is(err, lease.ErrNotFound) {
		return nil, err
	}
	out := make([]Member, len(ms))
	for i, m := range ms {
		out[i] = Member{Member: m, Leader: leader.Held() && leader.Holder == m.ID}
	}
	return out, nil
}

// Close drains the node: readiness turns false first, then leadership is handed over, every
// lease and lock is released, and the instance leaves the cluster. The release is announced,
// so another instance leads within milliseconds (within the lease TTL if the announcement
// is lost unreported). ctx bounds the whole drain. Close is idempotent; after
// twicetest.Crash it does nothing.
func (n *Node) Close(ctx context.Context) error {
	n.closeOnce.Do(func() { n.closeErr = n.drain(ctx) })
	return n.closeErr
}

func (n *Node) drain(ctx context.Context) error {
	start := time.Now()
	n.draining.Store(true)
	var errs []error
	if err := n.members.SetState(ctx, cluster.StateDraining); err != nil {
		errs = append(errs, err)
	}
	if err := n.closeBlocks(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.leader.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.leases.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.members.Leave(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.bus.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.store.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	n.log.Info("twice: node closed", "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// crash stops the node as a crash of its process would, for twicetest.Crash: every loop
// and goroutine of it ends and its connections close, but it hands nothing over, releases
// nothing and stays a member, so the others find it dead (at once by its liveness lock,
// which goes as a dead process's does; after DeadAfter without one) and take over what it
// held. It reports false, doing nothing, if the node was closed (or crashed) already.
func (n *Node) crash() bool {
	crashed := false
	n.closeOnce.Do(func() {
		crashed = true
		n.abandon()
	})
	return crashed
}

func (n *Node) abandon() {
	ctx, cancel := context.WithTimeout(context.Background(), loop.CloseTimeout)
	defer cancel()
	n.log.Warn("twice: crashing on purpose (twicetest.Crash): nothing is handed over")
	// The heartbeats stop first, so that no beat renews what is being abandoned; the
	// liveness lock goes last, once nothing of the node runs, as a dead process's does.
	n.members.Suspend()
	n.leader.Abandon()
	n.leases.Abandon() // the terms, and the work of the blocks under their leases, end here
	n.abandonBlocks(ctx)
	_ = n.leader.Stop(ctx) // nothing left to release: it waits for the term's callbacks
	_ = n.bus.Close(ctx)
	if err := n.store.Shutdown(ctx); err != nil {
		n.log.Warn("twice: the crashed node's store is still closing", "err", err)
	}
	n.members.Abandon()
}

// Fenced checks, inside the caller's transaction tx (a *sql.Tx, pgx.Tx or store.Tx), that
// lease l is still held with its token, so a write made in tx cannot come from a holder
// that paused past its lease while another took over. It returns [ErrFenced] otherwise.
// Hold the leader's lease with n.Leader().Lease(), or a lock's with its Check method.
func Fenced(ctx context.Context, tx any, l *lease.Lease) error {
	if l == nil {
		return fmt.Errorf("%w: no lease held", ErrFenced)
	}
	return l.Check(ctx, tx)
}

// ErrFenced is returned by [Fenced] when the lease has passed to a newer holder.
var ErrFenced = lease.ErrFenced
