// Package cluster knows the instances of a service: membership with heartbeats in database
// time (starting, ready, draining, dead), and leader election on top of leases.
package cluster

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/safe"
	"github.com/twicehq/twice/store"
)

// State is where an instance is in its life.
type State string

const (
	StateStarting State = "starting" // registered, not yet serving
	StateReady    State = "ready"    // serving
	StateDraining State = "draining" // stopping: handing back leadership, leases and work
	StateDead     State = "dead"     // stopped heartbeating; never stored, only reported
)

// DefaultHeartbeatInterval is how often an instance heartbeats. A crash is noticed by the
// liveness lock, not by missed beats, so the heartbeat only bounds how long a paused or cut
// off instance counts as alive (DefaultDeadAfterBeats of them). Each beat is one
// transaction, which also renews the instance's leases (their TTL is three beats): every
// two seconds keeps an idle instance under one transaction a second.
const DefaultHeartbeatInterval = 2 * time.Second

// DefaultDeadAfterBeats is how many heartbeats an instance may miss before it counts as dead.
const DefaultDeadAfterBeats = 3

// DefaultKeepDead is how long the row of a dead instance stays listed before it is reaped.
const DefaultKeepDead = 10 * time.Minute

// Config describes this instance to the cluster.
type Config struct {
	Service string
	ID      string
	Host    string
	PID     int
	Version string
	// Addr is the address other instances or operators can reach this instance at.
	Addr string
	// HeartbeatInterval defaults to [DefaultHeartbeatInterval].
	HeartbeatInterval time.Duration
	// DeadAfter is how long without a heartbeat until the instance counts as dead. Defaults
	// to [DefaultDeadAfterBeats] heartbeat intervals.
	DeadAfter time.Duration
	// Logger defaults to slog.Default(). It should carry the instance id; the node's does.
	Logger *slog.Logger
	// Panics, if set, counts the panics recovered from OnStall callbacks; each is also
	// logged with its stack. Defaults to nil: logged only.
	Panics *atomic.Int64
	// NoLivenessLock turns off the liveness lock (see liveness.go): a crashed instance is
	// then noticed by its heartbeat alone, after DeadAfter. Needed where a session cannot
	// be kept, as behind PgBouncer in transaction mode.
	NoLivenessLock bool
	// Report, if set, says what the instance tells the others about itself: each heartbeat
	// (and registration) calls it and writes its result to the instance's row, in the
	// same statement, so it costs no statement of its own; [List] returns it as
	// [Member.Report]. It runs on the heartbeat loop: it must be quick and not block.
	// Defaults to nil: the instance reports nothing.
	Report func() Report
}

// Member is an instance as the database sees it.
type Member struct {
	ID           string        `json:"id"`
	Service      string        `json:"service"`
	Host         string        `json:"host"`
	PID          int           `json:"pid"`
	Version      string        `json:"version"`
	Addr         string        `json:"addr,omitempty"`
	State        State         `json:"state"` // StateDead when Alive is false
	StartedAt    time.Time     `json:"started_at"`
	HeartbeatAt  time.Time     `json:"heartbeat_at"`
	HeartbeatAge time.Duration `json:"heartbeat_age"` // in database time
	Uptime       time.Duration `json:"uptime"`        // since it registered, in database time
	DeadAfter    time.Duration `json:"dead_after"`
	Alive        bool          `json:"alive"`
	// Report is what the instance said of itself at its last heartbeat; nil if it says
	// nothing (see [Config.Report]).
	Report *Report `json:"report,omitempty"`
}

// Membership registers this instance and keeps it alive with heartbeats.
type Membership struct {
	s   *store.Store
	q   queries
	cfg Config
	log *slog.Logger

	state       atomic.Value // State
	lastOK      atomic.Int64 // monotonic nanoseconds since start of the last successful beat
	lastAttempt atomic.Int64 // same, of the last attempt, successful or not
	epoch       time.Time    // base for the two above

	live *liveness // nil without a liveness lock

	suspended atomic.Int32 // Suspend calls not yet resumed: the heartbeat loop skips its rounds

	mu        sync.Mutex // protects joined, stopped, beats, the callbacks, lastDeath, deathSeen
	onStall   []func(from, to time.Time)
	onDead    []func(ctx context.Context, id string)
	onDeath   []func()
	onLost    []func(err error)
	carried   []Carried
	joined    bool
	stopped   bool
	beats     *loop.Loop // heartbeats, from Join to Leave
	lastDeath time.Time  // the latest heartbeat of a dead member, as the last beat or registration saw it
	deathSeen bool       // registering has set lastDeath
}

// NewMembership validates cfg; [Membership.Join] registers.
func NewMembership(s *store.Store, cfg Config) (*Membership, error) {
	if cfg.Service == "" || cfg.ID == "" {
		return nil, errors.New("cluster: Config.Service and Config.ID are required")
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.HeartbeatInterval < 10*time.Millisecond {
		return nil, fmt.Errorf("cluster: heartbeat interval %v is below 10ms", cfg.HeartbeatInterval)
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = DefaultDeadAfterBeats * cfg.HeartbeatInterval
	}
	if cfg.DeadAfter <= cfg.HeartbeatInterval {
		return nil, fmt.Errorf("cluster: dead-after %v must be longer than the heartbeat interval %v", cfg.DeadAfter, cfg.HeartbeatInterval)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Membership{s: s, q: queriesFor(s), cfg: cfg, log: cfg.Logger, epoch: time.Now()}
	m.state.Store(StateStarting)
	if !cfg.NoLivenessLock {
		if b := livenessFor(s, cfg); b != nil {
			m.live = newLiveness(m, b)
		}
	}
	return m, nil
}

// Config returns the membership's configuration with defaults filled in.
func (m *Membership) Config() Config { return m.cfg }

// Join registers the instance as starting and begins heartbeating.
func (m *Membership) Join(ctx context.Context) error {
	m.mu.Lock()
	if m.joined || m.stopped {
		m.mu.Unlock()
		return errors.New("cluster: Join called twice or after Leave")
	}
	m.joined = true
	m.mu.Unlock()
	if m.live != nil {
		m.live.take(ctx) // without it, the watcher tries again
	}
	if err := m.register(ctx); err != nil {
		if m.live != nil {
			m.live.stop()
		}
		m.mu.Lock()
		m.joined = false
		m.mu.Unlock()
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped { // Leave ran meanwhile
		if m.live != nil {
			m.live.stop()
		}
		return errors.New("cluster: Leave called during Join")
	}
	m.beats = loop.StartEvery(m.cfg.HeartbeatInterval, m.beat)
	if m.live != nil {
		m.live.follow(m.successor(ctx))
		m.live.start()
	}
	return nil
}

func (m *Membership) register(ctx context.Context) error {
	c := m.cfg
	start := time.Now()
	m.lastAttempt.Store(int64(start.Sub(m.epoch)))
	var death store.Time
	err := m.s.Control().QueryRow(ctx, m.q.insert, m.s.NowArg(), c.Service, c.ID, c.Host, c.PID, c.Version, c.Addr,
		string(m.State()), c.DeadAfter.Milliseconds(), m.liveKey(), m.report()).Scan(&death)
	if err != nil {
		return fmt.Errorf("cluster: register %s: %w", c.ID, err)
	}
	m.landed(start)
	m.sawDeath(death.Time)
	return nil
}

// OnStall registers fn to run after heartbeats resume from a stall: a stretch from one
// successful beat's start to the next one's end of DeadAfter or more, during which the
// cluster may have counted this instance dead and rescued its work (its jobs may have run
// elsewhere too). from is when it could first be counted dead, to when it was alive again.
// fn runs on the heartbeat loop: it must not block.
func (m *Membership) OnStall(fn func(from, to time.Time)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onStall = append(m.onStall, fn)
}

// landed records a successful beat or registration that started at start, and reports a
// stall if the previous one started DeadAfter or more before now.
func (m *Membership) landed(start time.Time) {
	prev := m.lastOK.Swap(int64(start.Sub(m.epoch)))
	if prev == 0 {
		return
	}
	from, to := m.epoch.Add(time.Duration(prev)).Add(m.cfg.DeadAfter), time.Now()
	if to.Before(from) {
		return
	}
	m.log.Warn("cluster: heartbeats stalled past dead-after; the cluster may have counted this instance dead and rescued its work",
		"stalled", to.Sub(from.Add(-m.cfg.DeadAfter)).Round(time.Millisecond), "dead_after", m.cfg.DeadAfter)
	m.mu.Lock()
	fns := slices.Clone(m.onStall)
	m.mu.Unlock()
	for _, fn := range fns {
		safe.Do(m.log, m.cfg.Panics, "cluster: OnStall callback", func() { fn(from, to) })
	}
}

// beat is the heartbeat loop's round. A beat under way when Leave stops the loop runs to
// its end (Beat bounds it by DeadAfter).
func (m *Membership) beat(ctx context.Context) {
	if m.suspended.Load() > 0 {
		return
	}
	if err := m.Beat(context.WithoutCancel(ctx)); err != nil {
		m.log.Warn("cluster: heartbeat failed", "err", err)
	}
}

// Suspend stops the heartbeats until resume is called, as a fault for tests: the others
// count this instance dead after DeadAfter and rescue its work, while it goes on working.
// Its liveness lock stays held, as a live process's does, and a lease manager whose
// renewals the beats carry renews on its own when they are late. After resume, the next
// beat registers again if the row was reaped, and reports the stall (OnStall).
func (m *Membership) Suspend() (resume func()) {
	m.suspended.Add(1)
	var once sync.Once
	return func() { once.Do(func() { m.suspended.Add(-1) }) }
}

// Carried is a statement that rides in the heartbeat's transaction (see
// [Membership.Carry]): it runs in q and returns what to do once q has committed, given the
// time from before q's first statement was sent; nil if nothing.
type Carried func(ctx context.Context, q store.Querier) (committed func(ctx context.Context, sent time.Time), err error)

// Carry makes fn run in every heartbeat's transaction from the next beat on, so that what
// an instance renews at the heartbeat's pace costs no transaction of its own: the node
// renews its leases so ([lease.Manager.RenewIn]). If fn fails, the beat is rolled back and
// sent again alone: a failure of what it carries never costs the heartbeat.
func (m *Membership) Carry(fn Carried) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.carried = append(m.carried, fn)
}

// Beat heartbeats once, with what it carries. If the row is gone (this instance was
// declared dead and reaped while it was paused or cut off), it registers again.
func (m *Membership) Beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.DeadAfter)
	defer cancel()
	start := time.Now()
	m.lastAttempt.Store(int64(start.Sub(m.epoch)))
	m.mu.Lock()
	carried := slices.Clone(m.carried)
	m.mu.Unlock()
	b := beatArgs{report: m.report()}
	var after []func(context.Context, time.Time)
	var err error
	if len(carried) > 0 {
		after, err = m.beatCarrying(ctx, carried, &b)
		if err != nil && !errors.Is(err, store.ErrNoRows) && ctx.Err() == nil {
			m.log.Warn("cluster: a heartbeat's transaction failed; heartbeating alone", "err", err)
			after = nil
			err = m.beatAlone(ctx, &b)
		}
	} else {
		err = m.beatAlone(ctx, &b)
	}
	if errors.Is(err, store.ErrNoRows) {
		m.log.Warn("cluster: this instance's row was reaped (it was counted dead); registering again")
		return m.register(ctx)
	}
	if err != nil {
		return err
	}
	m.landed(start)
	for _, fn := range after {
		fn(ctx, start)
	}
	if m.live != nil {
		m.live.follow(b.succ.Int64)
	}
	m.sawDeath(b.death.Time)
	return nil
}

// beatArgs are what a heartbeat writes besides its time and state, and what it reads.
type beatArgs struct {
	report any // the instance's report (see Config.Report), or NULL

	succ  sql.NullInt64 // the successor's liveness key
	death store.Time    // the latest heartbeat among dead members
}

// beatIn runs the heartbeat's statement in q.
func (m *Membership) beatIn(ctx context.Context, q store.Querier, b *beatArgs) error {
	var idle any
	return q.QueryRow(ctx, m.q.beat, m.s.NowArg(), m.cfg.Service, m.cfg.ID, string(m.State()), b.report).Scan(&b.succ, &b.death, &idle)
}

// report is the instance's report as its row holds it: NULL without Config.Report, or if
// it cannot be encoded (then logged).
func (m *Membership) report() any {
	if m.cfg.Report == nil {
		return nil
	}
	r, err := encodeReport(m.cfg.Report())
	if err != nil {
		m.log.Warn("cluster: this instance's report cannot be encoded; it reports nothing", "err", err)
		return nil
	}
	return r
}

// beatAlone heartbeats with one statement, sent a second time at once if the first fails:
// the control pool does not ping a connection before each use (see store.Store.Control),
// so the first statement after the server ended a session (a restart, an idle timeout)
// fails, and the pool has dropped that connection by the second.
func (m *Membership) beatAlone(ctx context.Context, b *beatArgs) error {
	var err error
	for range 2 {
		err = m.beatIn(ctx, m.s.Control(), b)
		if err == nil || errors.Is(err, store.ErrNoRows) || ctx.Err() != nil {
			break
		}
	}
	return err
}

// beatCarrying heartbeats and runs carried in one transaction, and returns what carried
// asked to run after the commit.
func (m *Membership) beatCarrying(ctx context.Context, carried []Carried, b *beatArgs) (after []func(context.Context, time.Time), err error) {
	tx, err := m.s.BeginControl(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err := m.beatIn(ctx, tx, b); err != nil {
		return nil, err
	}
	for _, fn := range carried {
		a, err := fn(ctx, tx)
		if err != nil {
			return nil, err
		}
		if a != nil {
			after = append(after, a)
		}
	}
	return after, tx.Commit(ctx)
}

// sawDeath runs the OnDeath callbacks when a beat finds that a member went silent since the
// beat before: the latest heartbeat among dead members moved forward. The first baseline
// is taken when the instance registers, not at its first beat: a member that dies between
// the two (a slow first beat on a busy database) is news, and a follower that looked at
// the leader lease meanwhile may be sleeping its Backstop, waiting to be told.
func (m *Membership) sawDeath(latest time.Time) {
	m.mu.Lock()
	news := m.deathSeen && latest.After(m.lastDeath)
	if !m.deathSeen || latest.After(m.lastDeath) {
		m.lastDeath, m.deathSeen = latest, true
	}
	fns := slices.Clone(m.onDeath)
	m.mu.Unlock()
	if news {
		m.deaths(fns)
	}
}

func (m *Membership) deaths(fns []func()) {
	for _, fn := range fns {
		safe.Do(m.log, m.cfg.Panics, "cluster: OnDeath callback", fn)
	}
}

// liveKey is the key to record for this instance's liveness lock: NULL while it holds none.
func (m *Membership) liveKey() any {
	if m.live == nil {
		return nil
	}
	if k := m.live.current(); k != 0 {
		return k
	}
	return nil
}

// setKey records a new liveness lock's key.
func (m *Membership) setKey(ctx context.Context, key int64) error {
	if _, err := m.s.Control().Exec(ctx, m.q.setKey, m.cfg.Service, m.cfg.ID, key); err != nil {
		return fmt.Errorf("cluster: record the liveness lock: %w", err)
	}
	return nil
}

// successor is the liveness key of the next live instance in the ring, 0 if there is none
// (or it cannot be read now: the next heartbeat reads it again).
func (m *Membership) successor(ctx context.Context) int64 {
	var succ sql.NullInt64
	if err := m.s.Control().QueryRow(ctx, m.q.successor, m.s.NowArg(), m.cfg.Service, m.cfg.ID).Scan(&succ); err != nil {
		m.log.Debug("cluster: reading the instance to watch failed; the next heartbeat reads it", "err", err)
		return 0
	}
	return succ.Int64
}

// OnDead registers fn to run when this instance finds, by its liveness lock, that another
// instance's process is gone, once the database counts that instance dead. fn runs on the
// liveness watcher: it must not block for long, and a panic is recovered and counted.
func (m *Membership) OnDead(fn func(ctx context.Context, id string)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onDead = append(m.onDead, fn)
}

// OnDeath registers fn to run when this instance finds another instance dead: by its
// liveness lock (after the OnDead callbacks), or at a heartbeat that finds a member whose
// heartbeat went DeadAfter old since the beat before (a paused, cut off or lost instance).
// It says only that some instance died, and may run more than once for one death; blocks
// that rescue work by liveness look again when it runs, and need not poll for deaths
// more often than as a backstop. fn runs on the heartbeat or the liveness watcher: it
// must not block, and a panic is recovered and counted.
func (m *Membership) OnDeath(fn func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onDeath = append(m.onDeath, fn)
}

// OnLivenessLost registers fn to run when this instance's liveness lock session ends while
// its process lives (the server terminated it or restarted): the others may now count it
// dead and take over its work, so fn should give up what it holds. A new lock is taken
// afterwards. A panic in fn is recovered and counted.
func (m *Membership) OnLivenessLost(fn func(err error)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onLost = append(m.onLost, fn)
}

// buried marks the holder of liveness key dead, and runs the OnDead callbacks for it.
func (m *Membership) buried(ctx context.Context, key int64) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.DeadAfter)
	defer cancel()
	var id string
	err := m.s.Control().QueryRow(ctx, m.q.markDead, m.s.NowArg(), m.cfg.Service, key).Scan(&id)
	if errors.Is(err, store.ErrNoRows) {
		return // another watcher was first, or the instance left
	}
	if err != nil {
		m.log.Warn("cluster: an instance's liveness lock is gone but it cannot be marked dead; its heartbeat will show it", "err", err)
		return
	}
	m.log.Info("cluster: an instance's process is gone (its liveness lock was freed); taking over its work now", "dead", id)
	m.mu.Lock()
	fns, deaths := slices.Clone(m.onDead), slices.Clone(m.onDeath)
	m.mu.Unlock()
	for _, fn := range fns {
		safe.Do(m.log, m.cfg.Panics, "cluster: OnDead callback", func() { fn(ctx, id) })
	}
	m.deaths(deaths)
}

// livenessLost runs the OnLivenessLost callbacks.
func (m *Membership) livenessLost(err error) {
	m.log.Warn("cluster: this instance's liveness lock was lost while it runs; others may take over its work now, so it gives up what it holds", "err", err)
	m.mu.Lock()
	fns := slices.Clone(m.onLost)
	m.mu.Unlock()
	for _, fn := range fns {
		safe.Do(m.log, m.cfg.Panics, "cluster: OnLivenessLost callback", func() { fn(err) })
	}
}

// State is this instance's own state.
func (m *Membership) State() State { return m.state.Load().(State) }

// SetState records a new state locally at once and in the database.
func (m *Membership) SetState(ctx context.Context, st State) error {
	m.state.Store(st)
	if _, err := m.s.Control().Exec(ctx, m.q.setState, m.cfg.Service, m.cfg.ID, string(st)); err != nil {
		return fmt.Errorf("cluster: set state %s: %w", st, err)
	}
	return nil
}

// Registered reports whether the last successful heartbeat is recent enough that the
// cluster still counts this instance alive.
func (m *Membership) Registered() bool {
	ok := m.lastOK.Load()
	return ok > 0 && time.Since(m.epoch.Add(time.Duration(ok))) < m.cfg.DeadAfter
}

// LastBeat is when the last successful heartbeat started (zero before the first). The
// cluster may count this instance dead once it is DeadAfter old.
func (m *Membership) LastBeat() time.Time {
	ok := m.lastOK.Load()
	if ok == 0 {
		return time.Time{}
	}
	return m.epoch.Add(time.Duration(ok))
}

// SinceLastAttempt is how long ago the heartbeat loop last tried to beat; a large value means
// the loop itself is stuck, not merely the database.
func (m *Membership) SinceLastAttempt() time.Duration {
	return time.Since(m.epoch.Add(time.Duration(m.lastAttempt.Load())))
}

// Members lists every instance of the service, dead ones included until they are reaped.
func (m *Membership) Members(ctx context.Context) ([]Member, error) {
	return List(ctx, m.s, m.cfg.Service)
}

// List lists the instances of service, dead ones included until they are reaped.
func List(ctx context.Context, s *store.Store, service string) ([]Member, error) {
	rows, err := s.Reader().Query(ctx, s.SQL(templates.list), s.NowArg(), service)
	if err != nil {
		return nil, fmt.Errorf("cluster: members: %w", err)
	}
	defer rows.Close()
	var out []Member
	for rows.Next() {
		var mb Member
		var started, beat store.Time
		var age, up store.Micros
		var deadMS int64
		var st string
		var report *string
		if err := rows.Scan(&mb.ID, &mb.Service, &mb.Host, &mb.PID, &mb.Version, &mb.Addr, &st,
			&started, &beat, &deadMS, &age, &up, &report); err != nil {
			return nil, fmt.Errorf("cluster: members: %w", err)
		}
		mb.StartedAt, mb.HeartbeatAt, mb.HeartbeatAge, mb.Uptime = started.Time, beat.Time, age.Duration, up.Duration
		mb.Report = decodeReport(report, mb.HeartbeatAge)
		mb.DeadAfter = time.Duration(deadMS) * time.Millisecond
		mb.Alive = mb.HeartbeatAge < mb.DeadAfter
		mb.State = State(st)
		if !mb.Alive {
			mb.State = StateDead
		}
		out = append(out, mb)
	}
	return out, rows.Err()
}

// Reap deletes the rows of instances dead for longer than keep. One instance (the leader)
// runs it; it is harmless when two do.
func (m *Membership) Reap(ctx context.Context, keep time.Duration) (int64, error) {
	n, err := m.s.Exec(ctx, m.q.reap, m.s.NowArg(), m.cfg.Service, keep.Milliseconds())
	if err != nil {
		return 0, fmt.Errorf("cluster: reap: %w", err)
	}
	return n, nil
}

// Leave stops heartbeating and removes this instance's row.
func (m *Membership) Leave(ctx context.Context) error {
	m.stopBeats()
	_, err := m.s.Control().Exec(ctx, m.q.leave, m.cfg.Service, m.cfg.ID)
	// The row goes first, so that the watcher of this instance finds nobody to bury.
	if m.live != nil {
		m.live.stop()
	}
	if err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// Abandon ends the instance's membership as a crash of its process would, for tests that
// crash an instance: the heartbeats stop and the liveness lock is given up, as the kernel
// frees a dead process's, but the row stays as it was, state included. The others find the
// instance dead at once by its lock (after DeadAfter without one, by its heartbeat) and
// take over its work; the leader reaps the row after its KeepDead.
func (m *Membership) Abandon() {
	m.stopBeats()
	if m.live != nil {
		m.live.stop()
	}
}

// stopBeats ends the heartbeats for good; a beat under way runs to its end.
func (m *Membership) stopBeats() {
	m.mu.Lock()
	m.stopped = true
	beats := m.beats
	m.mu.Unlock()
	if beats != nil {
		beats.Stop()
	}
}
