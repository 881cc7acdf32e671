// Package lease gives named, time-limited ownership with fencing tokens, in database time.
//
// A lease is not a lock: a holder that pauses (GC, SIGSTOP, a slow disk) longer than its TTL
// may wake still believing it holds the lease while another instance has taken it. Every
// acquisition therefore returns a token that strictly increases per name, and a write that
// must not happen under a lost lease checks the token in its own transaction with
// [Lease.Check]: a holder whose lease has passed to someone else is refused with [ErrFenced].
//
// A [Manager] renews all of an instance's leases in one statement every third of the TTL,
// or in its instance's heartbeat transaction when that carries them ([Manager.RenewIn]). Each
// lease also keeps a local deadline on the monotonic clock, measured from before the
// statement that last granted or renewed it was sent; when the deadline passes without a
// renewal the lease's context is cancelled, before the database could give the lease to
// anyone else.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/safe"
	"github.com/twicehq/twice/store"
)

var (
	// ErrHeld is returned by [Manager.TryAcquire] when another holder has the lease.
	ErrHeld = errors.New("lease: held by another holder")
	// ErrFenced is returned by [Lease.Check] when the lease has passed to another holder
	// (or was released) since this token was issued: the write must not happen.
	ErrFenced = errors.New("lease: fenced: this token no longer holds the lease")
	// ErrLost is the cause of a lease context cancelled because the lease expired or the
	// database no longer lists this holder.
	ErrLost = errors.New("lease: lost")
	// ErrReleased is the cause of a lease context cancelled by [Lease.Release].
	ErrReleased = errors.New("lease: released")
	// ErrClosed is returned once the manager has stopped.
	ErrClosed = errors.New("lease: manager closed")
)

// DefaultTTL is how long a lease lasts without renewal. It bounds how long a paused or cut
// off holder's lease blocks everyone else (a crashed holder's is freed at once, by its
// liveness lock); renewals happen every third of it, so two may fail before the lease is
// lost. Six seconds is the cluster's default DeadAfter: the heartbeat (every two seconds)
// carries the renewals, and an instance silent for six seconds loses its leases when it
// is counted dead.
const DefaultTTL = 6 * time.Second

// MaxNameLen is the longest lease name, in bytes.
const MaxNameLen = 255

// MinTTL is the shortest TTL a lease may have.
const MinTTL = 200 * time.Millisecond

// Config configures a [Manager].
type Config struct {
	// Service scopes every lease: services sharing a database never share a lease.
	Service string
	// Holder names this instance in the lease table. It must be unique among live holders.
	Holder string
	// TTL is the default lease duration. Defaults to [DefaultTTL].
	TTL time.Duration
	// Logger defaults to slog.Default(). It should carry the holder's id; the node's does.
	Logger *slog.Logger
	// OnRelease, if set, is called after leases were freed in the database (names, or nil
	// for all of this holder's), so other instances waiting for them can be woken at once
	// instead of at their next look. The node publishes it on the bus. It runs on the
	// releasing goroutine, which may be one of the library's.
	OnRelease func(ctx context.Context, names []string)
	// Panics, if set, counts the panics recovered from OnRelease; each is also logged with
	// its stack. Defaults to nil: logged only.
	Panics *atomic.Int64
}

// Manager acquires, renews and releases the leases of one holder. It is safe for concurrent
// use.
type Manager struct {
	s   *store.Store
	q   queries
	cfg Config
	log *slog.Logger

	mu        sync.Mutex        // protects held, acquiring, changed, closed, abandoned, lastRenew, carrier
	held      map[string]*Lease // by name
	acquiring map[string]int    // names a TryAcquire is taking, not yet in held
	changed   chan struct{}     // closed and replaced whenever a lease may have become free
	closed    bool
	abandoned bool          // Abandon closed it: nothing more is written
	lastRenew time.Time     // when the last renewal of every held lease was sent
	carrier   time.Duration // how often another transaction carries the renewals; 0: none

	wake  chan struct{} // tells the keeper the set of leases changed
	stop  chan struct{}
	done  chan struct{}
	frees sync.WaitGroup // rows of lost leases being freed (freeLost)

	renewFailures atomic.Uint64 // see RenewalFailures

	afterGrab func() // tests only: runs between a TryAcquire's statement and its lease joining held
}

// NewManager returns a manager and starts its renewal loop; call [Manager.Close] to stop it.
func NewManager(s *store.Store, cfg Config) (*Manager, error) {
	if cfg.Service == "" || cfg.Holder == "" {
		return nil, errors.New("lease: Config.Service and Config.Holder are required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < MinTTL {
		return nil, fmt.Errorf("lease: TTL %v is below the minimum %v", cfg.TTL, MinTTL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{
		s: s, q: queriesFor(s), cfg: cfg, log: cfg.Logger,
		held:      map[string]*Lease{},
		acquiring: map[string]int{},
		changed:   make(chan struct{}),
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	go m.keep()
	return m, nil
}

// Service is the service the manager's leases belong to.
func (m *Manager) Service() string { return m.cfg.Service }

// Holder is the name this manager holds leases under.
func (m *Manager) Holder() string { return m.cfg.Holder }

// TTL is the manager's default lease duration.
func (m *Manager) TTL() time.Duration { return m.cfg.TTL }

// AcquireOpts tunes one acquisition. A nil *AcquireOpts takes the defaults.
type AcquireOpts struct {
	// TTL overrides the manager's TTL for this lease. At least [MinTTL].
	TTL time.Duration
}

func (m *Manager) ttl(opts *AcquireOpts) (time.Duration, error) {
	if opts == nil || opts.TTL == 0 {
		return m.cfg.TTL, nil
	}
	if opts.TTL < MinTTL {
		return 0, fmt.Errorf("lease: TTL %v is below the minimum %v", opts.TTL, MinTTL)
	}
	return opts.TTL, nil
}

// TryAcquire takes the lease called name if it is free or expired, and returns [ErrHeld]
// if another holder (or another caller in this process) has it.
func (m *Manager) TryAcquire(ctx context.Context, name string, opts *AcquireOpts) (*Lease, error) {
	if name == "" {
		return nil, errors.New("lease: empty name")
	}
	if len(name) > MaxNameLen {
		return nil, fmt.Errorf("lease: name of %d bytes is longer than the limit of %d", len(name), MaxNameLen)
	}
	ttl, err := m.ttl(opts)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if _, mine := m.held[name]; mine {
		m.mu.Unlock()
		return nil, ErrHeld
	}
	// Until the lease is in held, a renewal that runs meanwhile (the heartbeat's) renews
	// its row too, and must not take it for a stale row to free (see applyRenewal).
	m.acquiring[name]++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if m.acquiring[name]--; m.acquiring[name] == 0 {
			delete(m.acquiring, name)
		}
		m.mu.Unlock()
	}()

	sent := time.Now()
	token, err := m.grab(ctx, name, ttl)
	if err != nil {
		return nil, err
	}
	if m.afterGrab != nil {
		m.afterGrab()
	}
	l := m.newLease(name, token, ttl, sent)

	m.mu.Lock()
	if m.closed {
		abandoned := m.abandoned
		m.mu.Unlock()
		l.lose(ErrClosed)
		if !abandoned {
			_ = l.releaseRow(context.WithoutCancel(ctx))
		}
		return nil, ErrClosed
	}
	if len(m.held) == 0 {
		m.lastRenew = sent // the first lease held is due for renewal a third of a TTL on
	}
	m.held[name] = l
	m.mu.Unlock()
	m.poke()
	return l, nil
}

// grab runs the acquisition statements and returns the new token, or ErrHeld.
func (m *Manager) grab(ctx context.Context, name string, ttl time.Duration) (int64, error) {
	args := []any{m.s.NowArg(), m.cfg.Service, name, m.cfg.Holder, ttl.Milliseconds()}
	var token int64
	err := m.s.Control().QueryRow(ctx, m.q.acquire, args...).Scan(&token)
	if errors.Is(err, store.ErrNoRows) {
		// Either the lease is held, or it has never existed.
		err = m.s.Control().QueryRow(ctx, m.q.insert, args...).Scan(&token)
		if errors.Is(err, store.ErrNoRows) {
			return 0, ErrHeld
		}
	}
	if err != nil {
		return 0, fmt.Errorf("lease: acquire %q: %w", name, err)
	}
	return token, nil
}

// Acquire waits until it holds the lease called name, or ctx ends.
func (m *Manager) Acquire(ctx context.Context, name string, opts *AcquireOpts) (*Lease, error) {
	backoff := 10 * time.Millisecond
	for {
		changed := m.Changed()
		l, err := m.TryAcquire(ctx, name, opts)
		if !errors.Is(err, ErrHeld) {
			return l, err
		}
		// Sleep until the lease expires, but wake early if a holder in this process
		// releases it or the bus says it changed (Poke), and look again at least every
		// quarter TTL for releases by other processes.
		wait := min(backoff, m.cfg.TTL/4)
		if info, err := m.Info(ctx, name); err == nil && info.Held() && info.Remaining > 0 {
			wait = min(wait, info.Remaining+time.Millisecond)
		}
		backoff = min(backoff*2, m.cfg.TTL/4)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-m.stop:
			t.Stop()
			return nil, ErrClosed
		case <-changed:
			t.Stop()
			backoff = 10 * time.Millisecond
		case <-t.C:
		}
	}
}

// Changed returns a channel closed the next time a lease of this manager may have become
// free: released or lost here, or announced by [Manager.Poke]. Waiters take it before they
// look at the table, so no release between the look and the wait is missed.
func (m *Manager) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// Poke wakes every [Manager.Acquire] waiting in this process, to look at the lease table
// again: the bus calls it when another instance releases a lease.
func (m *Manager) Poke() {
	m.mu.Lock()
	defer m.mu.Unlock()
	close(m.changed)
	m.changed = make(chan struct{})
}

// Info describes a lease as the database sees it.
type Info struct {
	Name       string        `json:"name"`
	Holder     string        `json:"holder"` // empty when released
	Token      int64         `json:"token"`
	AcquiredAt time.Time     `json:"acquired_at"`
	ExpiresAt  time.Time     `json:"expires_at"`
	Remaining  time.Duration `json:"remaining"` // until expiry, in database time; negative once expired
}

// Held reports whether a holder has the lease and it has not expired.
func (i Info) Held() bool { return i.Holder != "" && i.Remaining > 0 }

// ErrNotFound is returned by [Manager.Info] for a lease never acquired.
var ErrNotFound = errors.New("lease: not found")

// Info reads the lease called name. It does not queue behind this process's writes.
func (m *Manager) Info(ctx context.Context, name string) (Info, error) {
	return Lookup(ctx, m.s, m.cfg.Service, name)
}

// List returns the held, unexpired leases whose names start with prefix.
func (m *Manager) List(ctx context.Context, prefix string) ([]Info, error) {
	return List(ctx, m.s, m.cfg.Service, prefix)
}

// Lookup reads the lease called name of service without a manager, for tools that only
// look (such as twice status).
func Lookup(ctx context.Context, s *store.Store, service, name string) (Info, error) {
	return scanInfo(s.Reader().QueryRow(ctx, s.SQL(templates.info), s.NowArg(), service, name))
}

// List returns the held, unexpired leases of service whose names start with prefix.
func List(ctx context.Context, s *store.Store, service, prefix string) ([]Info, error) {
	rows, err := s.Reader().Query(ctx, s.SQL(templates.list), s.NowArg(), service, prefix)
	if err != nil {
		return nil, fmt.Errorf("lease: list: %w", err)
	}
	defer rows.Close()
	var out []Info
	for rows.Next() {
		i, err := scanInfo(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, i)
	}
	return out, rows.Err()
}

func scanInfo(row store.Row) (Info, error) {
	var i Info
	var acq, exp store.Time
	var rem store.Micros
	if err := row.Scan(&i.Name, &i.Holder, &i.Token, &acq, &exp, &rem); err != nil {
		if errors.Is(err, store.ErrNoRows) {
			return i, ErrNotFound
		}
		return i, fmt.Errorf("lease: %w", err)
	}
	i.AcquiredAt, i.ExpiresAt, i.Remaining = acq.Time, exp.Time, rem.Duration
	return i, nil
}

// keep renews every held lease in one statement, every third of the shortest TTL held. When
// a carrier renews them (see [Manager.Carried]) often enough, it renews only after the
// carrier is half its period late.
func (m *Manager) keep() {
	defer close(m.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		due, any := m.renewDue()
		if any {
			t.Reset(time.Until(due))
		} else {
			t.Stop()
		}
		select {
		case <-m.stop:
			return
		case <-m.wake:
			continue
		case <-t.C:
		}
		m.renew()
	}
}

// renewDue is when the keeper renews next, and false when no lease is held.
func (m *Manager) renewDue() (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var shortest time.Duration
	for _, l := range m.held {
		if shortest == 0 || l.ttl < shortest {
			shortest = l.ttl
		}
	}
	if shortest == 0 {
		return time.Time{}, false
	}
	every := shortest / 3
	if m.carrier > 0 && m.carrier <= every {
		every += m.carrier / 2
	}
	return m.lastRenew.Add(every), true
}

// Carried tells the manager that another transaction renews its leases every period by
// [Manager.RenewIn] (the node's heartbeat does): its own renewals then stop unless the
// carrier is late, or a lease's TTL needs them more often. Zero turns that off.
func (m *Manager) Carried(period time.Duration) {
	m.mu.Lock()
	m.carrier = period
	m.mu.Unlock()
	m.poke()
}

// RenewalFailures is how many statements renewing this manager's leases have failed since
// it started, its own and those carried in another transaction ([Manager.RenewIn]). A
// failure is retried; leases expire only at their deadlines. Package metrics exports it.
func (m *Manager) RenewalFailures() uint64 { return m.renewFailures.Load() }

// RenewIn renews every lease held inside q, a transaction of the caller's on this manager's
// database (the node runs it in the heartbeat's). The leases are extended only by the
// returned function, which the caller runs once q has committed, with the time from
// before q's first statement was sent; if q does not commit, the leases stay as they were
// and the manager renews them itself when they need it.
func (m *Manager) RenewIn(ctx context.Context, q store.Querier) (committed func(ctx context.Context, sent time.Time), err error) {
	snapshot, _ := m.snapshot()
	if len(snapshot) == 0 {
		return func(context.Context, time.Time) {}, nil
	}
	renewed, err := m.renewRows(ctx, q)
	if err != nil {
		m.renewFailures.Add(1)
		return nil, err
	}
	return func(ctx context.Context, sent time.Time) { m.applyRenewal(ctx, snapshot, renewed, sent) }, nil
}

// snapshot returns the leases held and the earliest of their deadlines.
func (m *Manager) snapshot() (map[string]*Lease, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	snapshot := make(map[string]*Lease, len(m.held))
	var earliest time.Time
	for name, l := range m.held {
		snapshot[name] = l
		if d := l.Deadline(); earliest.IsZero() || d.Before(earliest) {
			earliest = d
		}
	}
	return snapshot, earliest
}

// renewRows runs the renewal statement in q and returns the names and tokens it renewed.
func (m *Manager) renewRows(ctx context.Context, q store.Querier) (map[string]int64, error) {
	rows, err := q.Query(ctx, m.q.renew, m.s.NowArg(), m.cfg.Service, m.cfg.Holder)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	renewed := map[string]int64{}
	for rows.Next() {
		var name string
		var token int64
		if err := rows.Scan(&name, &token); err != nil {
			return nil, err
		}
		renewed[name] = token
	}
	return renewed, rows.Err()
}

func (m *Manager) renew() {
	snapshot, earliest := m.snapshot()
	if len(snapshot) == 0 {
		return
	}
	// A renewal that answers after the earliest deadline is useless for that lease; do not
	// let a hung connection hold the keeper past it.
	ctx, cancel := context.WithDeadline(context.Background(), earliest)
	defer cancel()
	sent := time.Now()
	renewed, err := m.renewRows(ctx, m.s.Control())
	if err != nil {
		m.renewFailures.Add(1)
		m.log.Warn("lease: renewal failed; leases expire at their deadlines unless a later renewal succeeds", "err", err)
		// Try again at the next third of a TTL, not at once.
		m.mu.Lock()
		m.lastRenew = sent
		m.mu.Unlock()
		return
	}
	m.applyRenewal(ctx, snapshot, renewed, sent)
}

// applyRenewal extends the leases of snapshot that a renewal sent at sent renewed, and ends
// those it did not.
func (m *Manager) applyRenewal(ctx context.Context, snapshot map[string]*Lease, renewed map[string]int64, sent time.Time) {
	m.mu.Lock()
	if sent.After(m.lastRenew) {
		m.lastRenew = sent
	}
	m.mu.Unlock()
	m.poke()
	for name, l := range snapshot {
		if tok, ok := renewed[name]; ok && tok == l.token {
			l.extend(sent)
		} else {
			l.lose(fmt.Errorf("%w: the database no longer lists %s with token %d", ErrLost, m.cfg.Holder, l.token))
		}
	}
	// A row we renewed that no live lease of ours stands for (it was lost locally after its
	// deadline, or its release failed) would be renewed forever and block everyone: free it.
	for name, tok := range renewed {
		m.mu.Lock()
		l, acquiring := m.held[name], m.acquiring[name] > 0
		m.mu.Unlock()
		if !acquiring && (l == nil || l.token != tok) {
			if err := m.freeRow(ctx, name, tok); err != nil {
				m.log.Warn("lease: cannot free a stale lease row", "lease", name, "token", tok, "err", err)
			}
		}
	}
}

// freeRow frees the row of lease name if this holder still has it with token, and then
// announces it (Config.OnRelease). Every row this manager frees goes through here or
// through Close and ReleaseDead, which announce too: an instance waiting for a lease may
// sleep until it is told (a follower of the leader does), so a lease that ends without an
// announcement could keep it waiting for its whole backstop.
func (m *Manager) freeRow(ctx context.Context, name string, token int64) error {
	n, err := m.s.Control().Exec(ctx, m.q.release, m.s.NowArg(), m.cfg.Service, name, m.cfg.Holder, token)
	if err != nil {
		return err
	}
	if n > 0 && m.cfg.OnRelease != nil {
		m.onRelease(ctx, []string{name})
	}
	return nil
}

// freeLost frees, in the background, the row of l, which this process has stopped
// believing in (its deadline passed, a renewal came back too late, or the liveness lock was
// lost) while the database may still list it as held until it expires, or longer if a
// renewal already in flight extends it. Nobody else would hear that the lease ended: its
// holder is alive, so no death is found. Freeing and announcing it lets the others take it
// at once. The row is freed only if it still carries l's token, so a newer holder is never
// touched.
func (m *Manager) freeLost(l *Lease) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return // Close frees every row of this holder
	}
	m.frees.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.frees.Done()
		ctx, cancel := context.WithTimeout(context.Background(), loop.ReleaseTimeout)
		defer cancel()
		if err := m.freeRow(ctx, l.name, l.token); err != nil {
			m.log.Warn("lease: freeing a lost lease failed; it ends at its deadline in the database", "lease", l.name, "token", l.token, "err", err)
		}
	}()
}

// forget drops l from the held set if it is still there, and wakes local waiters.
func (m *Manager) forget(l *Lease) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.held[l.name] == l {
		delete(m.held, l.name)
		close(m.changed)
		m.changed = make(chan struct{})
	}
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Close stops renewing and releases every lease this manager holds, so other instances can
// take them at once instead of waiting for them to expire.
func (m *Manager) Close(ctx context.Context) error {
	held, first := m.stopKeeping(false)
	if !first {
		return nil
	}
	for _, l := range held {
		l.lose(ErrReleased)
	}
	_, err := m.s.Control().Exec(ctx, m.q.releaseAll, m.s.NowArg(), m.cfg.Service, m.cfg.Holder)
	if err != nil {
		return fmt.Errorf("lease: release on close: %w", err)
	}
	if len(held) > 0 && m.cfg.OnRelease != nil {
		names := make([]string, len(held))
		for i, l := range held {
			names[i] = l.name
		}
		m.onRelease(ctx, names)
	}
	return nil
}

// Abandon stops renewing as a crashed process would, for tests that crash an instance:
// every lease ends here at once, its context cancelled with [ErrClosed], and nothing is
// written or announced. The rows stay as they are, held in the database until their
// deadlines, or until another instance finds this holder dead and frees them
// ([Manager.ReleaseDead]). Close after Abandon does nothing.
func (m *Manager) Abandon() {
	held, _ := m.stopKeeping(true)
	for _, l := range held {
		l.lose(ErrClosed)
	}
}

// stopKeeping closes the manager to new leases (abandoned: without writing even the row of
// one granted meanwhile), stops the renewals and waits for the rows of lost leases being
// freed. It returns the leases held, and whether this was the first call: a later one
// returns none, once the first has stopped the renewals.
func (m *Manager) stopKeeping(abandon bool) (held []*Lease, first bool) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		<-m.done
		return nil, false
	}
	m.closed, m.abandoned = true, abandon
	held = make([]*Lease, 0, len(m.held))
	for _, l := range m.held {
		held = append(held, l)
	}
	m.mu.Unlock()
	close(m.stop)
	<-m.done
	m.frees.Wait()
	return held, true
}

// ReleaseDead frees every lease that holder, another instance, still holds, when the
// caller knows holder's process is gone (its liveness lock was freed; see the cluster
// package): the leases are taken over now instead of at their deadlines. The tokens are
// left as they are, so the next holder of each gets a newer one, and a write checked
// against an older token is refused as ever. Config.OnRelease is told the freed names.
func (m *Manager) ReleaseDead(ctx context.Context, holder string) ([]string, error) {
	if holder == m.cfg.Holder {
		return nil, errors.New("lease: ReleaseDead of this manager's own holder")
	}
	rows, err := m.s.Control().Query(ctx, m.q.releaseDead, m.s.NowArg(), m.cfg.Service, holder)
	if err != nil {
		return nil, fmt.Errorf("lease: release the leases of %s: %w", holder, err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("lease: release the leases of %s: %w", holder, err)
		}
		names = append(names, name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lease: release the leases of %s: %w", holder, err)
	}
	m.Poke()
	if len(names) > 0 && m.cfg.OnRelease != nil {
		m.onRelease(ctx, names)
	}
	return names, nil
}

// LoseAll ends every lease this manager holds, locally and at once, with a cause that wraps
// [ErrLost]: for when others may take them over before their deadlines (this instance's
// liveness lock was lost; see the cluster package). The rows are left to expire or to be
// freed by the next renewal; the manager keeps working and can acquire again.
func (m *Manager) LoseAll(cause error) {
	m.mu.Lock()
	held := make([]*Lease, 0, len(m.held))
	for _, l := range m.held {
		held = append(held, l)
	}
	m.mu.Unlock()
	for _, l := range held {
		l.lose(fmt.Errorf("%w: %w", ErrLost, cause))
	}
}

// onRelease calls Config.OnRelease, which must not end the process if it panics.
func (m *Manager) onRelease(ctx context.Context, names []string) {
	safe.Do(m.log, m.cfg.Panics, "lease: OnRelease callback", func() { m.cfg.OnRelease(ctx, names) })
}
