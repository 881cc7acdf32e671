// Package lock gives cluster-wide named locks and counting semaphores on the database the
// service already has. A lock is a lease: renewed automatically while held, freed within
// its TTL if its holder dies, and carrying a fencing token so that a holder that paused past
// its TTL cannot make a write the next holder does not expect.
package lock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/twicehq/twice/lease"
)

// ErrClosed is returned once the instance is closing.
var ErrClosed = lease.ErrClosed

// ErrFenced is returned by [Lock.Check] when the lock has passed to another holder.
var ErrFenced = lease.ErrFenced

const (
	lockPrefix = "lock:"
	semPrefix  = "sem:"
)

// Locks hands out the locks of one service. Get it from the node (twice.Node.Locks).
type Locks struct {
	m *lease.Manager
}

// New returns the locks of the service m manages leases for.
func New(m *lease.Manager) *Locks { return &Locks{m: m} }

// Opts tunes one acquisition. A nil *Opts takes the defaults.
type Opts struct {
	// TTL is how long the lock outlives a holder that stops renewing it (crashed, paused,
	// cut off). Defaults to the node's lease TTL.
	TTL time.Duration
}

func (o *Opts) lease() *lease.AcquireOpts {
	if o == nil {
		return nil
	}
	return &lease.AcquireOpts{TTL: o.TTL}
}

// Lock is a held lock.
type Lock struct {
	name string
	l    *lease.Lease
}

// Name is the name the lock was acquired under.
func (k *Lock) Name() string { return k.name }

// Token is the fencing token: greater than that of every earlier holder of this lock.
func (k *Lock) Token() int64 { return k.l.Token() }

// Context is cancelled when the lock is lost (its holder could not renew it in time) or
// released. Work protected by the lock runs under it.
func (k *Lock) Context() context.Context { return k.l.Context() }

// Valid reports whether the lock is still held.
func (k *Lock) Valid() bool { return k.l.Valid() }

// Release frees the lock at once. Releasing twice is a no-op.
func (k *Lock) Release(ctx context.Context) error { return k.l.Release(ctx) }

// Check fences a write: inside the caller's transaction tx it returns [ErrFenced] unless
// this holder still has the lock, and keeps the lock from passing on until tx ends.
func (k *Lock) Check(ctx context.Context, tx any) error { return k.l.Check(ctx, tx) }

func validName(name string) error {
	if name == "" {
		return errors.New("lock: empty name")
	}
	if len(name) > lease.MaxNameLen-len(semPrefix)-12 {
		return fmt.Errorf("lock: name of %d bytes is too long (limit %d)", len(name), lease.MaxNameLen-len(semPrefix)-12)
	}
	return nil
}

// TryAcquire takes the lock called name if it is free, and returns ok=false if another
// holder (another instance, or another goroutine here) has it.
func (ls *Locks) TryAcquire(ctx context.Context, name string, opts *Opts) (lock *Lock, ok bool, err error) {
	if err := validName(name); err != nil {
		return nil, false, err
	}
	l, err := ls.m.TryAcquire(ctx, lockPrefix+name, opts.lease())
	if errors.Is(err, lease.ErrHeld) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return &Lock{name: name, l: l}, true, nil
}

// Acquire waits until it holds the lock called name, or ctx ends.
func (ls *Locks) Acquire(ctx context.Context, name string, opts *Opts) (*Lock, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	l, err := ls.m.Acquire(ctx, lockPrefix+name, opts.lease())
	if err != nil {
		return nil, err
	}
	return &Lock{name: name, l: l}, nil
}

// Do runs fn while holding the lock called name, waiting for it first. fn's context ends
// when ctx does or when the lock is lost; the lock is released when fn returns.
func (ls *Locks) Do(ctx context.Context, name string, opts *Opts, fn func(ctx context.Context) error) error {
	k, err := ls.Acquire(ctx, name, opts)
	if err != nil {
		return err
	}
	defer k.Release(context.WithoutCancel(ctx))
	return run(ctx, k, fn)
}

func run(ctx context.Context, k *Lock, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(k.Context(), func() { cancel(context.Cause(k.Context())) })
	defer stop()
	return fn(ctx)
}

// Held lists the locks held anywhere in the service, with their holders.
func (ls *Locks) Held(ctx context.Context) ([]lease.Info, error) {
	out, err := ls.m.List(ctx, lockPrefix)
	if err != nil {
		return nil, err
	}
	sems, err := ls.m.List(ctx, semPrefix)
	if err != nil {
		return nil, err
	}
	return append(out, sems...), nil
}

// Semaphore is a lock with several slots: at most Slots holders at once, cluster-wide.
type Semaphore struct {
	ls    *Locks
	name  string
	slots int
}

// Semaphore returns the semaphore called name with the given number of slots. Every
// instance must use the same number for the same name.
func (ls *Locks) Semaphore(name string, slots int) (*Semaphore, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if slots < 1 || slots > 1000 {
		return nil, fmt.Errorf("lock: semaphore %q: slots must be 1 to 1000, not %d", name, slots)
	}
	return &Semaphore{ls: ls, name: name, slots: slots}, nil
}

func (s *Semaphore) slot(i int) string { return semPrefix + s.name + "#" + strconv.Itoa(i) }

// TryAcquire takes a free slot, or returns ok=false if all are held.
func (s *Semaphore) TryAcquire(ctx context.Context, opts *Opts) (lock *Lock, ok bool, err error) {
	// Trying the slots from a random start spreads contending instances over the slots
	// instead of having all of them fight over slot 0.
	start := rand.IntN(s.slots)
	for i := range s.slots {
		l, err := s.ls.m.TryAcquire(ctx, s.slot((start+i)%s.slots), opts.lease())
		if errors.Is(err, lease.ErrHeld) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		return &Lock{name: s.name, l: l}, true, nil
	}
	return nil, false, nil
}

// Acquire waits for a free slot, or until ctx ends.
func (s *Semaphore) Acquire(ctx context.Context, opts *Opts) (*Lock, error) {
	backoff := 10 * time.Millisecond
	for {
		changed := s.ls.m.Changed()
		k, ok, err := s.TryAcquire(ctx, opts)
		if err != nil || ok {
			return k, err
		}
		wait := min(backoff, s.ls.m.TTL()/4)
		backoff = min(backoff*2, s.ls.m.TTL()/4)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-changed:
			t.Stop()
			backoff = 10 * time.Millisecond
		case <-t.C:
		}
	}
}

// Do runs fn while holding a slot, waiting for one first.
func (s *Semaphore) Do(ctx context.Context, opts *Opts, fn func(ctx context.Context) error) error {
	k, err := s.Acquire(ctx, opts)
	if err != nil {
		return err
	}
	defer k.Release(context.WithoutCancel(ctx))
	return run(ctx, k, fn)
}
