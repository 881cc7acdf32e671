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
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/safe"
)

// DefaultMalformedFlushInterval is the default of [ManagerConfig.MalformedFlushInterval].
const DefaultMalformedFlushInterval = time.Second

// ManagerConfig configures a [Manager].
type ManagerConfig struct {
	// MalformedFlushInterval is the shortest time between two flushes of every cache caused
	// by invalidations that cannot be read. Such a message may have named anything, so it is
	// never ignored, but anyone who can reach the bus can send one (see package bus), and
	// flushing every cache on every instance on demand is a stampede: the first flushes at
	// once, and those that follow within the interval share one flush at its end. A Lost
	// message from the bus always flushes at once. Defaults to
	// [DefaultMalformedFlushInterval].
	MalformedFlushInterval time.Duration
}

// BusStats counts what a [Manager] received on the bus.
type BusStats struct {
	// Applied counts the invalidations applied to a cache of this instance.
	Applied uint64 `json:"applied"`
	// Malformed counts the invalidations that could not be read: from an instance of an
	// incompatible version, or not from an instance at all.
	Malformed uint64 `json:"malformed"`
	// MalformedFlushes counts the flushes of every cache that malformed invalidations caused:
	// at most one per MalformedFlushInterval.
	MalformedFlushes uint64 `json:"malformed_flushes"`
	// LostFlushes counts the flushes of every cache because the bus reported that signals
	// may have been lost.
	LostFlushes uint64 `json:"lost_flushes"`
}

// Manager is one instance's caches: it receives every invalidation on the bus and hands it
// to the cache it names. A node has one ([twice.Node.Caches]); make caches on it with
// [New].
type Manager struct {
	bus    bus.Bus
	log    *slog.Logger
	panics *atomic.Int64 // counts loaders' and observers' panics; may be nil

	mu        sync.Mutex // protects caches, observers, nextObs, unsubscribe
	caches    map[string]invalidator
	observers map[int]func(Invalidation)
	nextObs   int

	unsubscribe func()
	// loadMu orders starting a load against Close: a load is counted in loads only while
	// the manager is open, so Close's Wait never races an Add.
	loadMu sync.RWMutex
	closed atomic.Bool
	loads  sync.WaitGroup // loads in flight, waited for by Close

	flushEvery time.Duration
	flushMu    sync.Mutex  // protects lastFlush, flushLater
	lastFlush  time.Time   // of the last flush caused by a malformed invalidation
	flushLater *time.Timer // the flush that covers the malformed invalidations since then

	applied, malformed, malformedFlushes, lostFlushes atomic.Uint64
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

// NewManager returns the caches of one instance, invalidated over d's bus once
// [Manager.Start] has run. Close it when the instance stops.
func NewManager(d block.Deps, cfg ManagerConfig) (*Manager, error) {
	d = d.WithDefaults()
	if d.Bus == nil {
		return nil, errors.New("cache: Deps.Bus is required: invalidations travel on it")
	}
	if cfg.MalformedFlushInterval <= 0 {
		cfg.MalformedFlushInterval = DefaultMalformedFlushInterval
	}
	return &Manager{bus: d.Bus, log: d.Logger, panics: d.Panics, caches: map[string]invalidator{}, observers: map[int]func(Invalidation){},
		flushEvery: cfg.MalformedFlushInterval}, nil
}

// Start receives invalidations from the bus until Close. The node calls it when the
// application first uses its caches; caches made before it do not hear other instances.
func (m *Manager) Start(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	if m.unsubscribe == nil {
		m.unsubscribe = m.bus.Subscribe(Channel, m.receive)
	}
	return nil
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
		m.lostFlushes.Add(1) // counted once done, so a reader of the count sees the flush
		m.notify(Invalidation{All: true, Lost: true})
		return
	}
	inv, err := decode(msg.Payload)
	if err != nil {
		// An invalidation that cannot be read may have named anything: treat it as lost,
		// within the limit on such flushes.
		m.malformed.Add(1)
		m.flushMalformed(msg.From, err)
		return
	}
	c := m.lookup(inv.name)
	if c == nil {
		return // a cache this instance does not have (yet, or in this version)
	}
	m.applied.Add(1)
	c.apply(inv)
	m.notify(Invalidation{Cache: inv.name, Keys: inv.keys, All: inv.all, From: msg.From})
}

// flushMalformed flushes every cache for an unreadable invalidation, at once if the last
// such flush is at least MalformedFlushInterval old, else once at the end of the interval
// for every unreadable message until then.
func (m *Manager) flushMalformed(from string, err error) {
	m.flushMu.Lock()
	if m.flushLater != nil {
		m.flushMu.Unlock()
		m.log.Debug("cache: an unreadable invalidation is covered by the next flush", "from", from, "err", err)
		return
	}
	if wait := time.Until(m.lastFlush.Add(m.flushEvery)); wait > 0 {
		m.flushLater = time.AfterFunc(wait, func() {
			m.flushMu.Lock()
			m.flushLater, m.lastFlush = nil, time.Now()
			m.flushMu.Unlock()
			m.malformedFlush("unreadable invalidations, merged into one flush", "")
		})
		m.flushMu.Unlock()
		return
	}
	m.lastFlush = time.Now()
	m.flushMu.Unlock()
	m.malformedFlush(fmt.Sprintf("an unreadable invalidation from %s (%v)", from, err), from)
}

func (m *Manager) malformedFlush(why, from string) {
	if m.closed.Load() {
		return // Close flushed, and a closed manager caches nothing
	}
	m.flushAll(why)
	m.malformedFlushes.Add(1) // counted once done, so a reader of the count sees the flush
	m.notify(Invalidation{All: true, Lost: true, From: from})
}

// BusStats returns the counters of what this manager received on the bus.
func (m *Manager) BusStats() BusStats {
	return BusStats{Applied: m.applied.Load(), Malformed: m.malformed.Load(),
		MalformedFlushes: m.malformedFlushes.Load(), LostFlushes: m.lostFlushes.Load()}
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

// token names an InvalidateTx call, so this instance recognises its own message when the
// transaction has committed and ends the hold on its keys. Every token is random, not the
// next of a counter: any database role can LISTEN and see tokens go by, and one that could
// predict the next could end a hold before its transaction commits (by sending the
// message first), letting this instance cache the old value for a moment.
func (m *Manager) token() uint64 {
	var b [8]byte
	for {
		// crypto/rand.Read never fails; 0 means "no token".
		_, _ = rand.Read(b[:])
		if t := binary.LittleEndian.Uint64(b[:]); t != 0 {
			return t
		}
	}
}

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
	m.mu.Lock()
	unsubscribe := m.unsubscribe
	m.mu.Unlock()
	if unsubscribe != nil {
		unsubscribe()
	}
	m.flushMu.Lock()
	if m.flushLater != nil {
		m.flushLater.Stop()
		m.flushLater = nil
	}
	m.flushMu.Unlock()
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

// Abandon is Close, for tests that crash an instance (see block.Block): Close writes
// nothing, and what it drops (the cached entries) a crash loses too.
func (m *Manager) Abandon(ctx context.Context) { _ = m.Close(ctx) }

// ErrClosed is returned when the manager is closed.
var ErrClosed = errors.New("cache: closed")

// ErrDuplicate is returned by [New] for a name already in use on the manager.
var ErrDuplicate = errors.New("cache: a cache of this name exists")
