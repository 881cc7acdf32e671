package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/twicehq/twice/internal/loop"
)

// Liveness locks: noticing a crashed instance in milliseconds.
//
// A heartbeat can only say that an instance has been silent for a while, so on its own it
// makes the cluster wait DeadAfter before it takes over a dead instance's work. The kernel
// knows sooner: when a process dies, its database session ends and its file locks go. So
// each instance holds a liveness lock for as long as it lives (on PostgreSQL a session
// advisory lock on a connection of its own, on SQLite a file lock in a directory beside
// the database file) and records its key in its member row. The live instances form a
// ring by id, and each one waits for the lock of the next: on PostgreSQL a loop on the
// server that tries it every 100 ms on a second connection that holds no lock, committing
// every 500 ms (see pg.go: a blocked lock request would hold its snapshot, and with it
// the removal of the database's dead rows, for the whole wait); on SQLite a non-blocking
// try every [livenessPoll], a system call with no database statement. When the wait ends,
// the holder's process is gone: the watcher marks it dead in the database (see
// [Membership.OnDead]), and the ring closes over the gap.
//
// What the lock cannot see is covered by the heartbeat, as before: a paused process (SIGSTOP,
// a long GC) and a lost machine or network keep their lock or its session, so they count as
// dead only after DeadAfter, and their leases only expire at their deadlines. Fencing tokens
// are unchanged, so an early takeover, were it ever mistaken, cannot let a stale write in.
//
// A process that lives on while its lock session ends (PostgreSQL terminated the backend, or
// restarted) is told at once, and [Membership.OnLivenessLost] callbacks run: the node gives
// up every lease locally, so it stops believing it leads as the others are told they may
// take over. It then takes a new lock under a new key.

// livenessPoll is how often a SQLite instance tries its successor's file lock.
var livenessPoll = 25 * time.Millisecond // a variable for tests

// errLivenessLost is returned by a backend whose own lock is gone while the process lives.
var errLivenessLost = errors.New("cluster: this instance's liveness lock session ended")

// livenessBackend holds this instance's liveness lock and waits for another's. One
// goroutine uses it at a time.
type livenessBackend interface {
	// hold takes a new lock under a new key, giving up any earlier one.
	hold(ctx context.Context, key int64) error
	// watch waits until the lock of key is free, which means its holder is gone (true),
	// until ctx ends, or until this instance's own lock is lost (errLivenessLost). Any other
	// error is worth trying again.
	watch(ctx context.Context, key int64) (bool, error)
	// idle waits until ctx ends or this instance's own lock is lost (errLivenessLost).
	idle(ctx context.Context) error
	// forget lets go of key, which watch found free, and whatever it left behind.
	forget(ctx context.Context, key int64)
	// close gives up this instance's lock.
	close()
}

// newKey returns a random positive key, so that no two instances' locks ever share one and
// a key is never held twice.
func newKey() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.BigEndian.Uint64(b[:])>>1) | 1
}

// liveness runs this instance's side of the ring: it holds the lock and watches the
// successor's, on a loop of its own.
type liveness struct {
	m       *Membership
	b       livenessBackend
	backoff loop.Backoff
	watcher *loop.Loop

	mu     sync.Mutex // protects key, succ, cancel
	key    int64      // this instance's key; 0 while it holds no lock
	succ   int64      // the successor's key; 0 when there is none
	cancel context.CancelFunc
}

func newLiveness(m *Membership, b livenessBackend) *liveness {
	return &liveness{m: m, b: b, backoff: loop.Backoff{Min: 100 * time.Millisecond, Max: m.cfg.DeadAfter}}
}

// take holds a new lock and returns its key, or 0 if the lock could not be taken (the
// instance then runs on heartbeats alone, and the watcher tries again).
func (lv *liveness) take(ctx context.Context) int64 {
	key := newKey()
	if err := lv.b.hold(ctx, key); err != nil {
		lv.m.log.Warn("cluster: cannot take a liveness lock; until it can, a crash of this instance is noticed by its heartbeat alone", "err", err)
		return 0
	}
	lv.mu.Lock()
	lv.key = key
	lv.mu.Unlock()
	return key
}

// current is this instance's key, 0 while it holds no lock.
func (lv *liveness) current() int64 {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	return lv.key
}

// follow makes succ the lock to watch, interrupting a wait for another.
func (lv *liveness) follow(succ int64) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if succ == lv.succ {
		return
	}
	lv.succ = succ
	if lv.cancel != nil {
		lv.cancel()
	}
}

// start starts the watcher.
func (lv *liveness) start() { lv.watcher = loop.Start(lv.round) }

// round waits once: for the successor's lock to come free, for this instance's own lock to
// be lost, or for the successor to change; it takes a new lock if this instance holds none.
func (lv *liveness) round(stopping context.Context) time.Duration {
	ctx, cancel := context.WithCancel(stopping)
	defer cancel()
	lv.mu.Lock()
	lv.cancel = cancel
	succ, key := lv.succ, lv.key
	lv.mu.Unlock()

	var dead bool
	var err error
	switch {
	case key == 0:
		if key = lv.take(ctx); key == 0 {
			return lv.backoff.Next()
		}
		if err = lv.m.setKey(ctx, key); err != nil {
			lv.mu.Lock()
			lv.key = 0 // the next round takes another, which gives this one up
			lv.mu.Unlock()
		}
	case succ == 0:
		err = lv.b.idle(ctx)
	default:
		dead, err = lv.b.watch(ctx, succ)
	}
	switch {
	case dead:
		bg := context.WithoutCancel(stopping)
		lv.m.buried(bg, succ)
		lv.b.forget(bg, succ)
		lv.follow(lv.m.successor(bg))
	case errors.Is(err, errLivenessLost):
		lv.mu.Lock()
		lv.key = 0
		lv.mu.Unlock()
		lv.m.livenessLost(err)
		return 0
	case err != nil && ctx.Err() == nil:
		lv.m.log.Debug("cluster: liveness watch failed; trying again", "err", err)
		return lv.backoff.Next()
	}
	lv.backoff.Reset()
	return 0
}

// stop ends the watch and gives up the lock.
func (lv *liveness) stop() {
	if lv.watcher != nil {
		lv.watcher.Stop()
	}
	lv.b.close()
}
