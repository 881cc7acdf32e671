package cache

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/safe"
)

// ManagerConfig configures a [Manager].
type ManagerConfig struct {
	// Logger defaults to slog.Default(). It should carry the instance id.
	Logger *slog.Logger
	// Panics, if set, counts the panics recovered from loaders; each is also logged with
	// its stack and fails its load. Defaults to nil: logged only.
	Panics *atomic.Int64
}

// Manager is one instance's caches: it receives every invalidation on the bus and hands it
// to the cache it names. A node has one ([twice.Node.Caches]); make caches on it with
// [New].
type Manager struct {
	bus    bus.Bus
	log    *slog.Logger
	panics *atomic.Int64 // counts loaders' and observers' panics; may be nil

	mu        sync.Mutex // protects caches, observers, nextObs
	caches    map[string]invalidator
	observers map[int]func(Invalidation)
	nextObs   int

	unsubscribe func()
	// loadMu orders starting a load against Close: a load is counted in loads only while
	// the manager is open, so Close's Wait never races an Add.
	loadMu sync.RWMutex
	closed atomic.Bool
	loads  sync.WaitGroup // loads in flight, waited for by Close

	// tokens name this instance's InvalidateTx calls, so it recognises its own message
	// when the transaction has committed. A random base keeps them apart from other
	// instances' without relying on the bus's sender id.
	tokenBase uint64
	tokenSeq  atomic.Uint64
}

// invalidator is the untyped side of a [Cache], which the manager drives.
type invalidator interface {
	apply(m message)
	flush()
}

// Invalidation is what an instance received and applied, as reported to [Manager.Observe].
type Invalidation struct {
	// Cache is the cache's name; empty when Lost is set.
	Cache string
	// Keys are the invalidated keys in their encoded form (see [Config.Key]); nil when
	// All is set.
	Keys []string
	// All is set when the whole cache was flushed.
	All bool
	// Lost is set when every cache on this instance was flushed because the bus reported
	// that invalidations may have been missed.
	Lost bool
	// From is the instance that sent it.
	From string
}

// NewManager starts receiving invalidations from b. Close it when the instance stops.
func NewManager(b bus.Bus, cfg ManagerConfig) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var seed [8]byte
	_, _ = rand.Read(seed[:]) // crypto/rand.Read never fails
	m := &Manager{bus: b, log: cfg.Logger, panics: cfg.Panics, caches: map[string]invalidator{}, observers: map[int]func(Invalidation){},
		tokenBase: binary.LittleEndian.Uint64(seed[:])}
	m.unsubscribe = b.Subscribe(Channel, m.receive)
	return m
}

// register adds a cache under its name.
func (m *Manager) register(name string, c invalidator) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	if _, dup := m.caches[name]; dup {
		return fmt.Errorf("%w: %q", ErrDuplicate, name)
	}
	m.caches[name] = c
	return nil
}

func (m *Manager) lookup(name string) invalidator {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.caches[name]
}

func (m *Manager) all() []invalidator {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]invalidator, 0, len(m.caches))
	for _, c := range m.caches {
		out = append(out, c)
	}
	return out
}

// receive runs on the bus's delivery goroutine. Applying an invalidation is a few map
// operations under a shard lock, so it is done right here: when the bus has delivered a
// message, it is in effect.
func (m *Manager) receive(msg bus.Message) {
	if msg.Lost {
		m.flushAll("the bus reported that signals may have been lost")
		m.notify(Invalidation{All: true, Lost: true})
		return
	}
	inv, err := decode(msg.Payload)
	if err != nil {
		// An invalidation that cannot be read may have named anything: treat it as lost.
		m.flushAll(fmt.Sprintf("an unreadable invalidation from %s (%v)", msg.From, err))
		m.notify(Invalidation{All: true, Lost: true, From: msg.From})
		return
	}
	c := m.lookup(inv.name)
	if c == nil {
		return // a cache this instance does not have (yet, or in this version)
	}
	c.apply(inv)
	m.notify(Invalidation{Cache: inv.name, Keys: inv.keys, All: inv.all, From: msg.From})
}

func (m *Manager) flushAll(why string) {
	caches := m.all()
	for _, c := range caches {
		c.flush()
	}
	if len(caches) > 0 {
		m.log.Warn("cache: flushed every cache", "reason", why, "caches", len(caches))
	}
}

// Observe calls fn after each invalidation this instance applies, on the bus's delivery
// goroutine: keep it quick. A panic in fn is logged and counted (ManagerConfig.Panics). It is meant for metrics and measurements (`twice bench
// invalidation` is built on it). cancel stops the calls.
func (m *Manager) Observe(fn func(Invalidation)) (cancel func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := m.nextObs
	m.nextObs++
	m.observers[id] = fn
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.observers, id)
	}
}

func (m *Manager) notify(inv Invalidation) {
	m.mu.Lock()
	fns := make([]func(Invalidation), 0, len(m.observers))
	for _, fn := range m.observers {
		fns = append(fns, fn)
	}
	m.mu.Unlock()
	for _, fn := range fns {
		safe.Do(m.log, m.panics, "cache: Observe callback", func() { fn(inv) })
	}
}

// Stats returns the counters of every cache, by name.
func (m *Manager) Stats() map[string]Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Stats, len(m.caches))
	for name, c := range m.caches {
		if s, ok := c.(interface{ Stats() Stats }); ok {
			out[name] = s.Stats()
		}
	}
	return out
}

func (m *Manager) token() uint64 { return m.tokenBase + m.tokenSeq.Add(1) }

// startLoad counts a load in flight; false once the manager is closed.
func (m *Manager) startLoad() bool {
	m.loadMu.RLock()
	defer m.loadMu.RUnlock()
	if m.closed.Load() {
		return false
	}
	m.loads.Add(1)
	return true
}

// Close stops receiving invalidations. From then on every cache of the manager is
// bypassed: a Get calls the loader, because a cache that no longer hears invalidations
// could serve stale values. Close waits, within ctx, for loads in flight.
func (m *Manager) Close(ctx context.Context) error {
	m.loadMu.Lock()
	already := m.closed.Swap(true)
	m.loadMu.Unlock()
	if already {
		return nil
	}
	m.unsubscribe()
	for _, c := range m.all() {
		c.flush()
	}
	done := make(chan struct{})
	go func() {
		m.loads.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cache: loads still running at close: %w", ctx.Err())
	}
}

// ErrClosed is returned when the manager is closed.
var ErrClosed = errors.New("cache: closed")

// ErrDuplicate is returned by [New] for a name already in use on the manager.
var ErrDuplicate = errors.New("cache: a cache of this name exists")
