// Package cache is a typed in-process cache that stays coherent across the instances of a
// service: an invalidation sent by any instance, after its transaction commits, reaches
// every instance over the bus.
//
// Each [Cache] is bounded (SIEVE eviction), has a TTL as a backstop, and loads a missing key
// once however many callers ask for it at the same time. Loads carry a ticket that an
// invalidation revokes, so a slow load that read the old row before the writer committed
// can never put the old value back after the invalidation arrived (the "pending puts"
// problem of Hibernate's second-level cache over Infinispan). When the bus reports that
// signals may have been lost, every cache flushes itself.
package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"reflect"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/internal/safe"
)

// Limits.
const (
	// MaxName is the longest cache name, in bytes.
	MaxName = 64
	// MaxKey is the longest key, in bytes of its encoded form. Invalidations carry keys on
	// the bus, whose messages are small.
	MaxKey = 1000
)

// Defaults.
const (
	DefaultMaxEntries  = 10_000
	DefaultTTL         = 5 * time.Minute
	DefaultLoadTimeout = 30 * time.Second
	DefaultTxHold      = 10 * time.Second
)

// Errors.
var (
	// ErrKeyTooLong is returned for a key whose encoded form is longer than [MaxKey].
	ErrKeyTooLong = errors.New("cache: key too long")
	// ErrBadName is returned by [New] for a name that is not 1 to MaxName letters, digits,
	// '.', '_', ':' or '-'.
	ErrBadName = errors.New("cache: bad name")
)

// Loader reads the value of key from the source of truth. It must read committed data as
// of now (not from a transaction or a replica that began earlier), since the cache relies
// on a load that starts after an invalidation seeing the write that caused it.
type Loader[K comparable, V any] func(ctx context.Context, key K) (V, error)

// Config configures a [Cache].
type Config[K comparable, V any] struct {
	// Load reads a missing key. Required.
	Load Loader[K, V]
	// MaxEntries bounds the number of entries; beyond it SIEVE evicts. Defaults to
	// [DefaultMaxEntries] (10 000).
	MaxEntries int
	// TTL is how long an entry is served at most, counted from the start of the load that
	// read it. Invalidations keep entries fresh; the TTL only bounds the damage of a write
	// that forgot to invalidate. Defaults to [DefaultTTL] (5 minutes).
	TTL time.Duration
	// LoadTimeout bounds one load. A load runs on its own and outlives a caller who stops
	// waiting, so the callers that still wait get its result. Defaults to
	// [DefaultLoadTimeout] (30 seconds).
	LoadTimeout time.Duration
	// TxHold bounds how long keys invalidated by [Cache.InvalidateTx] are not cached on the
	// invalidating instance while it waits to see the transaction commit (that is how a
	// request on the same instance reads its own write at once, even before the bus
	// delivers the invalidation). It only matters for transactions that roll back or stay
	// open long. Defaults to [DefaultTxHold] (10 seconds).
	TxHold time.Duration
	// Key encodes a key for the bus; equal keys must encode equally on every instance and
	// different keys differently. Defaults to the key itself for strings, decimal for
	// integers, and Go syntax (%#v) for booleans, floats and structs or arrays of those.
	// Required for other key types (pointers, interfaces, channels), which have no meaning
	// on another instance.
	Key func(K) string
}

// Stats are a cache's counters since it was made.
type Stats struct {
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
	// Loads counts calls of the loader, LoadErrors those that failed.
	Loads      uint64 `json:"loads"`
	LoadErrors uint64 `json:"load_errors"`
	// Discarded counts loads that were returned to their callers but not cached because an
	// invalidation overtook them.
	Discarded uint64 `json:"discarded"`
	// Invalidations counts keys invalidated on this instance, by this instance or another.
	Invalidations uint64 `json:"invalidations"`
	// Flushes counts whole-cache flushes: InvalidateAll, and lost bus signals.
	Flushes uint64 `json:"flushes"`
	// Evictions counts entries removed to make room, Expired those among them whose TTL
	// had passed.
	Evictions uint64 `json:"evictions"`
	Expired   uint64 `json:"expired"`
	// Entries is how many entries the cache holds now.
	Entries int `json:"entries"`
}

// Cache is a typed cache of one name, kept coherent across the instances of the service.
// It is safe for concurrent use.
type Cache[K comparable, V any] struct {
	m      *Manager
	name   string
	cfg    Config[K, V]
	key    func(K) string
	seed   maphash.Seed
	shards []*shard[V]
	now    func() time.Time // time.Now; a test may replace it

	// hits and misses are counted per shard: a hit is the hot path, and one counter shared
	// by every core would be the most contended word in the process.
	loads, loadErrors, discarded               atomic.Uint64
	invalidations, flushes, evictions, expired atomic.Uint64
}

var validNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)

func validName(name string) bool { return len(name) <= MaxName && validNameRe.MatchString(name) }

// New makes the cache called name on m. Every instance that makes a cache of the same name
// shares its invalidations; one name per cache on an instance.
func New[K comparable, V any](m *Manager, name string, cfg Config[K, V]) (*Cache[K, V], error) {
	if !validName(name) {
		return nil, fmt.Errorf("%w: %q must be 1 to %d letters, digits, '.', '_', ':' or '-'", ErrBadName, name, MaxName)
	}
	if cfg.Load == nil {
		return nil, fmt.Errorf("cache %s: Config.Load is required", name)
	}
	if cfg.MaxEntries < 0 || cfg.TTL < 0 || cfg.LoadTimeout < 0 || cfg.TxHold < 0 {
		return nil, fmt.Errorf("cache %s: MaxEntries, TTL, LoadTimeout and TxHold cannot be negative", name)
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.LoadTimeout == 0 {
		cfg.LoadTimeout = DefaultLoadTimeout
	}
	if cfg.TxHold == 0 {
		cfg.TxHold = DefaultTxHold
	}
	key := cfg.Key
	if key == nil {
		var err error
		if key, err = defaultKey[K](); err != nil {
			return nil, fmt.Errorf("cache %s: %w", name, err)
		}
	}
	// Small caches keep one shard, so the bound is exact; big ones spread over up to 16
	// locks, each holding its share of the bound.
	n := min(16, max(1, cfg.MaxEntries/256))
	c := &Cache[K, V]{m: m, name: name, cfg: cfg, key: key, seed: maphash.MakeSeed(), now: time.Now}
	for range n {
		c.shards = append(c.shards, newShard[V]((cfg.MaxEntries+n-1)/n))
	}
	if err := m.register(name, c); err != nil {
		return nil, err
	}
	return c, nil
}

// defaultKey returns the key encoding for K, or an error if K has no meaning across
// instances.
func defaultKey[K comparable]() (func(K) string, error) {
	var zero K
	switch any(zero).(type) {
	case string:
		return func(k K) string { return any(k).(string) }, nil
	case int:
		return func(k K) string { return strconv.Itoa(any(k).(int)) }, nil
	case int64:
		return func(k K) string { return strconv.FormatInt(any(k).(int64), 10) }, nil
	}
	t := reflect.TypeFor[K]()
	switch t.Kind() {
	case reflect.String:
		return func(k K) string { return reflect.ValueOf(k).String() }, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return func(k K) string { return strconv.FormatInt(reflect.ValueOf(k).Int(), 10) }, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return func(k K) string { return strconv.FormatUint(reflect.ValueOf(k).Uint(), 10) }, nil
	}
	if !plain(t) {
		return nil, fmt.Errorf("keys of type %v have no meaning on another instance: set Config.Key", t)
	}
	return func(k K) string { return fmt.Sprintf("%#v", k) }, nil
}

// plain reports whether %#v of a t is the same on every instance: no pointers, interfaces
// or channels anywhere inside.
func plain(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128, reflect.String:
		return true
	case reflect.Array:
		return plain(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !plain(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}

// Name is the cache's name.
func (c *Cache[K, V]) Name() string { return c.name }

func (c *Cache[K, V]) shardOf(k string) *shard[V] {
	if len(c.shards) == 1 {
		return c.shards[0]
	}
	return c.shards[maphash.String(c.seed, k)%uint64(len(c.shards))]
}

func (c *Cache[K, V]) encode(key K) (string, error) {
	k := c.key(key)
	if len(k) > MaxKey {
		return "", fmt.Errorf("%w: %d bytes, the limit is %d", ErrKeyTooLong, len(k), MaxKey)
	}
	return k, nil
}

// Get returns the value of key, loading it if it is not cached. Concurrent Gets of a
// missing key share one load. A Get that starts after this instance applied an
// invalidation of key never returns a value read before it.
func (c *Cache[K, V]) Get(ctx context.Context, key K) (V, error) {
	var zero V
	k, err := c.encode(key)
	if err != nil {
		return zero, err
	}
	sh := c.shardOf(k)
	now := c.now()
	if v, ok := sh.lookup(k, now); ok {
		sh.hits.Add(1)
		return v, nil
	}

	sh.mu.Lock()
	if v, ok := sh.lookupLocked(k, now); ok {
		sh.mu.Unlock()
		sh.hits.Add(1)
		return v, nil
	}
	sh.misses.Add(1)
	if sh.held(k, now) {
		// Held by this instance's open transaction: nothing read now may be cached, and
		// joining another caller's load could return a value read before the caller's
		// own commit.
		sh.mu.Unlock()
		return c.load(ctx, key)
	}
	cl := sh.calls[k]
	if cl == nil {
		if !c.m.startLoad() {
			// Closed: no invalidations arrive any more, so nothing may be cached.
			sh.mu.Unlock()
			return c.load(ctx, key)
		}
		cl = &call[V]{done: make(chan struct{}), start: now}
		sh.calls[k] = cl
		// The load runs on its own, so a caller that gives up does not fail the others
		// waiting for it; it keeps the first caller's values (trace ids), not its deadline.
		go c.run(context.WithoutCancel(ctx), sh, k, key, cl)
	}
	sh.mu.Unlock()

	select {
	case <-cl.done:
		return cl.val, cl.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// run performs cl's load and installs its value unless an invalidation overtook it.
func (c *Cache[K, V]) run(ctx context.Context, sh *shard[V], k string, key K, cl *call[V]) {
	defer c.m.loads.Done()
	v, err := c.load(ctx, key)
	now := c.now()
	sh.mu.Lock()
	if sh.calls[k] == cl {
		delete(sh.calls, k)
	}
	switch {
	case err != nil:
	case cl.stale:
		c.discarded.Add(1)
	default:
		evicted, expired := sh.install(k, v, cl.start.Add(c.cfg.TTL), now)
		c.evictions.Add(uint64(evicted))
		c.expired.Add(uint64(expired))
	}
	sh.mu.Unlock()
	cl.val, cl.err = v, err
	close(cl.done)
}

// load calls the loader under LoadTimeout, turning a panic into an error: the load may run
// on a goroutine of its own, where a panic would end the process.
func (c *Cache[K, V]) load(ctx context.Context, key K) (v V, err error) {
	c.loads.Add(1)
	ctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
	defer cancel()
	err = safe.Call(c.m.log, c.m.panics, "cache "+c.name+": loader", func() error {
		v, err = c.cfg.Load(ctx, key)
		return err
	})
	if err != nil {
		c.loadErrors.Add(1)
	}
	return v, err
}

// Invalidate drops keys on every instance. Call it after the write that changed them has
// committed; inside a transaction use [Cache.InvalidateTx]. This instance drops them at
// once; the others when the bus delivers (milliseconds).
func (c *Cache[K, V]) Invalidate(ctx context.Context, keys ...K) error {
	ks, err := c.encodeAll(keys)
	if err != nil || len(ks) == 0 {
		return err
	}
	c.apply(message{name: c.name, keys: ks})
	for _, msg := range split(c.name, 0, ks) {
		if err := c.m.bus.Publish(ctx, Channel, msg.encode()); err != nil {
			return fmt.Errorf("cache %s: invalidate: %w", c.name, err)
		}
	}
	return nil
}

// InvalidateTx drops keys on every instance once tx (a *sql.Tx, pgx.Tx or store.Tx)
// commits, and never if it rolls back. Call it in the transaction that changes the data.
//
// On this instance the keys are dropped at once and not cached again until the
// invalidation comes back over the bus (or TxHold passes), so a request served here after
// the commit reads the new value even before the other instances hear of it.
func (c *Cache[K, V]) InvalidateTx(ctx context.Context, tx any, keys ...K) error {
	ks, err := c.encodeAll(keys)
	if err != nil || len(ks) == 0 {
		return err
	}
	token := c.m.token()
	until := c.now().Add(c.cfg.TxHold)
	for _, k := range ks {
		sh := c.shardOf(k)
		sh.mu.Lock()
		sh.invalidate(k)
		sh.hold(k, token, until)
		sh.mu.Unlock()
	}
	for _, msg := range split(c.name, token, ks) {
		if err := c.m.bus.PublishTx(ctx, tx, Channel, msg.encode()); err != nil {
			return fmt.Errorf("cache %s: invalidate in transaction: %w", c.name, err)
		}
	}
	return nil
}

// InvalidateAll empties the cache on every instance. Call it after the write has committed.
func (c *Cache[K, V]) InvalidateAll(ctx context.Context) error {
	c.flush()
	if err := c.m.bus.Publish(ctx, Channel, message{name: c.name, all: true}.encode()); err != nil {
		return fmt.Errorf("cache %s: invalidate all: %w", c.name, err)
	}
	return nil
}

// InvalidateAllTx empties the cache on every instance once tx commits. This instance caches
// nothing until it sees the commit (or TxHold passes).
func (c *Cache[K, V]) InvalidateAllTx(ctx context.Context, tx any) error {
	token := c.m.token()
	until := c.now().Add(c.cfg.TxHold)
	for _, sh := range c.shards {
		sh.mu.Lock()
		sh.flush()
		sh.holdAll(token, until)
		sh.mu.Unlock()
	}
	c.flushes.Add(1)
	if err := c.m.bus.PublishTx(ctx, tx, Channel, message{name: c.name, all: true, token: token}.encode()); err != nil {
		return fmt.Errorf("cache %s: invalidate all in transaction: %w", c.name, err)
	}
	return nil
}

func (c *Cache[K, V]) encodeAll(keys []K) ([]string, error) {
	out := make([]string, 0, len(keys))
	for _, key := range keys {
		k, err := c.encode(key)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// apply carries out an invalidation received from the bus (or made here).
func (c *Cache[K, V]) apply(m message) {
	if m.all {
		for _, sh := range c.shards {
			sh.mu.Lock()
			sh.flush()
			if m.token != 0 {
				sh.releaseAll(m.token)
			}
			sh.mu.Unlock()
		}
		c.flushes.Add(1)
		return
	}
	for _, k := range m.keys {
		sh := c.shardOf(k)
		sh.mu.Lock()
		sh.invalidate(k)
		if m.token != 0 {
			sh.release(k, m.token)
		}
		sh.mu.Unlock()
	}
	c.invalidations.Add(uint64(len(m.keys)))
}

// flush empties the cache on this instance only.
func (c *Cache[K, V]) flush() {
	for _, sh := range c.shards {
		sh.mu.Lock()
		sh.flush()
		sh.mu.Unlock()
	}
	c.flushes.Add(1)
}

// Len is how many entries the cache holds on this instance.
func (c *Cache[K, V]) Len() int {
	n := 0
	for _, sh := range c.shards {
		n += sh.len()
	}
	return n
}

// Stats returns the cache's counters on this instance.
func (c *Cache[K, V]) Stats() Stats {
	var hits, misses uint64
	for _, sh := range c.shards {
		hits += sh.hits.Load()
		misses += sh.misses.Load()
	}
	return Stats{
		Hits: hits, Misses: misses, Loads: c.loads.Load(), LoadErrors: c.loadErrors.Load(),
		Discarded: c.discarded.Load(), Invalidations: c.invalidations.Load(), Flushes: c.flushes.Load(),
		Evictions: c.evictions.Load(), Expired: c.expired.Load(), Entries: c.Len(),
	}
}
