package lease

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twicehq/twice/store"
)

// Lease is a held lease. Its [Lease.Context] is cancelled the moment it is lost or released;
// its [Lease.Token] fences writes made under it.
type Lease struct {
	m     *Manager
	name  string
	token int64
	ttl   time.Duration

	ctx    context.Context
	cancel context.CancelCauseFunc

	acquired time.Time // when this process got the lease

	mu       sync.Mutex // protects deadline, timer, ended
	deadline time.Time  // on the monotonic clock
	timer    *time.Timer
	ended    bool
}

// holderDeadline is when a holder must stop believing in a lease granted or renewed by a
// statement sent at sent. The database expires the lease at its own clock's reading when
// it ran the statement plus ttl, which is no earlier than sent+ttl; the margin covers the
// database clock's resolution (SQLite keeps milliseconds) and a small difference in clock
// rates, so the holder always lets go first.
func holderDeadline(sent time.Time, ttl time.Duration) time.Time {
	return sent.Add(ttl - ttl/100 - 2*time.Millisecond)
}

type ctxKey struct{}

// FromContext returns the lease whose [Lease.Context] ctx is or derives from, or nil. Code
// handed only a context (a leader callback, a job) finds the lease to fence its writes with.
func FromContext(ctx context.Context) *Lease {
	l, _ := ctx.Value(ctxKey{}).(*Lease)
	return l
}

func (m *Manager) newLease(name string, token int64, ttl time.Duration, sent time.Time) *Lease {
	l := &Lease{m: m, name: name, token: token, ttl: ttl, acquired: time.Now(), deadline: holderDeadline(sent, ttl)}
	l.ctx, l.cancel = context.WithCancelCause(context.WithValue(context.Background(), ctxKey{}, l))
	// The timer may fire at once (a process paused while acquiring wakes past the
	// deadline); holding mu makes lose wait until l.timer is set.
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = time.AfterFunc(time.Until(l.deadline), func() {
		l.lose(fmt.Errorf("%w: not renewed within its TTL of %v", ErrLost, ttl))
	})
	return l
}

// Name is the lease's name.
func (l *Lease) Name() string { return l.name }

// Token is the fencing token: strictly greater than every token issued before for this name.
func (l *Lease) Token() int64 { return l.token }

// AcquiredAt is when this process got the lease, on its monotonic clock.
func (l *Lease) AcquiredAt() time.Time { return l.acquired }

// TTL is the lease's duration without renewal.
func (l *Lease) TTL() time.Duration { return l.ttl }

// Context is cancelled when the lease is lost or released; context.Cause says which
// ([ErrLost] or [ErrReleased], or [ErrClosed] after [Manager.Abandon]). Work that must only
// happen under the lease runs under it.
func (l *Lease) Context() context.Context { return l.ctx }

// Deadline is when the lease ends unless renewed, on this process's monotonic clock: a little
// before the database could let anyone else take it.
func (l *Lease) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// Valid reports whether the lease is still held: not released, not lost, and its deadline
// not passed. A process that wakes from a pause longer than the TTL sees false at once,
// before any timer has fired.
func (l *Lease) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.ended && time.Now().Before(l.deadline)
}

// extend moves the deadline to sent+ttl after a renewal sent at sent succeeded.
func (l *Lease) extend(sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended || !time.Now().Before(l.deadline) {
		// Too late: the lease may already count as lost; a renewal cannot revive it.
		return
	}
	l.deadline = holderDeadline(sent, l.ttl)
	l.timer.Reset(time.Until(l.deadline))
}

// lose ends the lease locally with cause, without touching the database.
func (l *Lease) lose(cause error) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	l.ended = true
	l.timer.Stop()
	l.mu.Unlock()
	l.cancel(cause)
	l.m.forget(l)
	if errors.Is(cause, ErrLost) {
		l.m.log.Warn("lease: lost", "lease", l.name, "token", l.token, "cause", cause)
		l.m.freeLost(l)
	}
}

// Release gives the lease back so another holder can take it at once. Releasing a lease
// that was already lost or released is a no-op.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	ended := l.ended
	l.mu.Unlock()
	if ended {
		return nil
	}
	l.lose(ErrReleased)
	return l.releaseRow(ctx)
}

// releaseRow frees the lease's row if it still carries this token.
func (l *Lease) releaseRow(ctx context.Context) error {
	if err := l.m.freeRow(ctx, l.name, l.token); err != nil {
		// The row keeps our holder until it expires; nothing is unsafe, only slower.
		return fmt.Errorf("lease: release %q: %w", l.name, err)
	}
	return nil
}

// Check fences a write: called inside the caller's transaction tx (a *sql.Tx, pgx.Tx or
// [store.Tx] on the lease's database), it returns [ErrFenced] unless this token is still the
// lease's current one. On PostgreSQL it also locks the lease row against a new acquisition
// until tx ends, so the write and the token check commit as one: no newer holder can act
// between them. On SQLite the transaction's write lock does the same.
//
// Keep the transaction short after Check: on PostgreSQL it sets the transaction's
// idle_in_transaction_session_timeout to the lease TTL, so a holder that stalls (or is
// frozen) inside it has the transaction aborted by the server instead of blocking the next
// holder forever. On SQLite a process frozen inside a write transaction blocks every writer
// until it resumes.
//
// Check does not look at the local deadline: a holder whose lease expired but was not yet
// taken by anyone else may still write, which is safe because nobody holds a newer token.
func (l *Lease) Check(ctx context.Context, tx any) error {
	q, err := l.m.s.Wrap(tx)
	if err != nil {
		return err
	}
	return l.m.check(ctx, q, l.name, l.token, l.ttl)
}

func (m *Manager) check(ctx context.Context, q store.Querier, name string, token int64, ttl time.Duration) error {
	var holder *string
	var current int64
	var setting any
	err := q.QueryRow(ctx, m.q.check, m.cfg.Service, name, strconv.FormatInt(ttl.Milliseconds(), 10)).Scan(&holder, &current, &setting)
	if errors.Is(err, store.ErrNoRows) {
		return fmt.Errorf("%w: lease %q does not exist", ErrFenced, name)
	}
	if err != nil {
		return fmt.Errorf("lease: check %q: %w", name, err)
	}
	switch {
	case current != token:
		return fmt.Errorf("%w: lease %q token %d, current %d", ErrFenced, name, token, current)
	case holder == nil:
		return fmt.Errorf("%w: lease %q token %d was released", ErrFenced, name, token)
	case *holder != m.cfg.Holder:
		return fmt.Errorf("%w: lease %q token %d is held by %s", ErrFenced, name, token, *holder)
	}
	return nil
}

// CheckToken fences a write made under a token that was passed along (to a job, say) rather
// than a [Lease] held in this process: it returns [ErrFenced] unless token is still the
// current token of the lease called name and this manager's holder has it.
func (m *Manager) CheckToken(ctx context.Context, tx any, name string, token int64) error {
	q, err := m.s.Wrap(tx)
	if err != nil {
		return err
	}
	return m.check(ctx, q, name, token, m.cfg.TTL)
}
