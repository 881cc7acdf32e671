package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/testdb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// rows is the source of truth the loaders read.
type rows struct {
	mu sync.Mutex // protects v
	v  map[string]string
}

func (r *rows) get(k string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.v[k]
}

func (r *rows) set(k, v string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.v[k] = v
}

type fixture struct {
	net   *memNet
	rows  *rows
	clock *testdb.Clock
	loads atomic.Int64
}

func newFixture() *fixture {
	return &fixture{net: &memNet{}, rows: &rows{v: map[string]string{}}, clock: testdb.NewClock()}
}

// instance makes a manager on its own bus and a cache "users" on it, reading f.rows.
func (f *fixture) instance(t *testing.T, id string, cfg Config[string, string]) (*Manager, *Cache[string, string]) {
	t.Helper()
	m := startedManager(t, f.net.open(id), ManagerConfig{})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	if cfg.Load == nil {
		cfg.Load = func(ctx context.Context, k string) (string, error) {
			f.loads.Add(1)
			return f.rows.get(k), nil
		}
	}
	c, err := New(m, "users", cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.now = f.clock.Now
	return m, c
}

func get(t *testing.T, c *Cache[string, string], k string) string {
	t.Helper()
	v, err := c.Get(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestGetLoadsOnceAndCounts(t *testing.T) {
	t.Parallel()
	f := newFixture()
	release := make(chan struct{})
	_, c := f.instance(t, "a", Config[string, string]{Load: func(ctx context.Context, k string) (string, error) {
		f.loads.Add(1)
		<-release
		return "v-" + k, nil
	}})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if v := get(t, c, "42"); v != "v-42" {
				t.Errorf("got %q", v)
			}
		})
	}
	// Let the callers pile up on the one load, then let it finish.
	for c.Stats().Misses < 50 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if n := f.loads.Load(); n != 1 {
		t.Fatalf("%d loads for 50 concurrent Gets, want 1", n)
	}
	get(t, c, "42")
	st := c.Stats()
	if st.Hits != 1 || st.Misses != 50 || st.Loads != 1 || st.Entries != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLoadErrorsAndPanicsAreNotCached(t *testing.T) {
	t.Parallel()
	f := newFixture()
	var calls atomic.Int64
	boom := errors.New("db down")
	_, c := f.instance(t, "a", Config[string, string]{Load: func(ctx context.Context, k string) (string, error) {
		switch calls.Add(1) {
		case 1:
			return "", boom
		case 2:
			panic("loader bug")
		}
		return "ok", nil
	}})
	if _, err := c.Get(context.Background(), "k"); !errors.Is(err, boom) {
		t.Fatalf("first Get: %v", err)
	}
	if _, err := c.Get(context.Background(), "k"); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("second Get: %v", err)
	}
	if v := get(t, c, "k"); v != "ok" {
		t.Fatalf("third Get: %q", v)
	}
	if st := c.Stats(); st.LoadErrors != 2 || st.Loads != 3 || st.Entries != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A caller that stops waiting does not fail the load the others wait for.
func TestCallerCancelDoesNotFailOthers(t *testing.T) {
	t.Parallel()
	f := newFixture()
	release := make(chan struct{})
	_, c := f.instance(t, "a", Config[string, string]{Load: func(ctx context.Context, k string) (string, error) {
		<-release
		return "v", ctx.Err()
	}})
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, "k")
		first <- err
	}()
	for c.Stats().Misses < 1 {
		time.Sleep(time.Millisecond)
	}
	second := make(chan string, 1)
	go func() { second <- get(t, c, "k") }()
	for c.Stats().Misses < 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}
	close(release)
	if v := <-second; v != "v" {
		t.Fatalf("other caller got %q", v)
	}
}

func TestEvictionKeepsTheBoundAndHotKeys(t *testing.T) {
	t.Parallel()
	f := newFixture()
	_, c := f.instance(t, "a", Config[string, string]{MaxEntries: 100})
	for i := range 1000 {
		get(t, c, "hot")
		get(t, c, fmt.Sprint(i))
		if n := c.Len(); n > 100 {
			t.Fatalf("%d entries, bound 100", n)
		}
	}
	loads := f.loads.Load()
	get(t, c, "hot")
	if f.loads.Load() != loads {
		t.Fatal("the key read between every insert was evicted")
	}
	if st := c.Stats(); st.Evictions != 1001-100 || st.Entries != 100 {
		t.Fatalf("stats %+v", st)
	}
}

// SIEVE's structure stays consistent under a random mix of operations.
func TestShardInvariants(t *testing.T) {
	t.Parallel()
	s := newShard[int](16)
	now := time.Unix(0, 0)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		k := fmt.Sprint(r.IntN(40))
		switch r.IntN(4) {
		case 0, 1:
			s.install(k, i, now.Add(time.Duration(r.IntN(100))*time.Second), now)
		case 2:
			s.lookupLocked(k, now)
		case 3:
			s.invalidate(k)
		}
		if r.IntN(50) == 0 {
			now = now.Add(10 * time.Second)
		}
		n := 0
		var prev *entry[int]
		for e := s.oldest; e != nil; e = e.newer {
			if e.older != prev || s.entries[e.key] != e {
				t.Fatalf("step %d: list and map disagree at %q", i, e.key)
			}
			prev, n = e, n+1
		}
		if prev != s.newest || n != len(s.entries) || n > s.cap {
			t.Fatalf("step %d: %d linked, %d mapped, cap %d", i, n, len(s.entries), s.cap)
		}
		if s.hand != nil && s.entries[s.hand.key] != s.hand {
			t.Fatalf("step %d: the hand points at a removed entry", i)
		}
	}
}

func TestTTLIsABackstop(t *testing.T) {
	t.Parallel()
	f := newFixture()
	_, c := f.instance(t, "a", Config[string, string]{TTL: time.Minute})
	f.rows.set("k", "old")
	get(t, c, "k")
	f.rows.set("k", "new") // a write that forgot to invalidate
	f.clock.Advance(59 * time.Second)
	if v := get(t, c, "k"); v != "old" {
		t.Fatalf("before the TTL: %q", v)
	}
	f.clock.Advance(time.Second)
	if v := get(t, c, "k"); v != "new" {
		t.Fatalf("after the TTL: %q", v)
	}
}

func TestInvalidateReachesEveryInstance(t *testing.T) {
	t.Parallel()
	f := newFixture()
	_, a := f.instance(t, "a", Config[string, string]{})
	_, b := f.instance(t, "b", Config[string, string]{})
	f.rows.set("k", "v1")
	get(t, a, "k")
	get(t, b, "k")
	f.rows.set("k", "v2")
	if err := a.Invalidate(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if v := get(t, a, "k"); v != "v2" {
		t.Fatalf("the invalidating instance reads %q before delivery", v)
	}
	if v := get(t, b, "k"); v != "v1" {
		t.Fatalf("b reads %q before delivery: the test's bus delivers too early", v)
	}
	f.net.deliver()
	if v := get(t, b, "k"); v != "v2" {
		t.Fatalf("b reads %q after delivery", v)
	}
	if st := b.Stats(); st.Invalidations != 1 {
		t.Fatalf("b stats %+v", st)
	}
}

// The pending-puts problem: a load that read the old row before the writer committed
// finishes after the invalidation arrived. Its caller gets the old value (the read was
// concurrent with the write), but the cache must not keep it, and a Get that starts after
// the invalidation must not join it.
func TestSlowLoadOvertakenByInvalidation(t *testing.T) {
	t.Parallel()
	f := newFixture()
	read := make(chan struct{})
	release := make(chan struct{})
	letGo := sync.OnceFunc(func() { close(release) })
	defer letGo() // on failure too, so the cleanup's Close does not wait forever
	var slow atomic.Bool
	slow.Store(true)
	_, a := f.instance(t, "a", Config[string, string]{})
	_, b := f.instance(t, "b", Config[string, string]{Load: func(ctx context.Context, k string) (string, error) {
		v := f.rows.get(k)
		if slow.Swap(false) {
			close(read)
			<-release
		}
		return v, nil
	}})
	f.rows.set("k", "old")
	slowGet := make(chan string, 1)
	go func() { slowGet <- get(t, b, "k") }()
	<-read // b's load has read "old"

	tx := &memTx{b: f.net.buses[0]}
	f.rows.set("k", "new")
	if err := a.InvalidateTx(context.Background(), tx, "k"); err != nil {
		t.Fatal(err)
	}
	tx.commit()
	f.net.deliver() // b has applied the invalidation

	// A Get after delivery loads afresh instead of joining the slow load. (Joining it
	// would wait for the release below: the deadline turns that into a failure.)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if v, err := b.Get(ctx, "k"); err != nil || v != "new" {
		t.Fatalf("Get after delivery: %q, %v", v, err)
	}
	letGo()
	if v := <-slowGet; v != "old" {
		t.Fatalf("the slow Get got %q", v)
	}
	if v := get(t, b, "k"); v != "new" {
		t.Fatalf("after the slow load finished, b serves %q", v)
	}
	if st := b.Stats(); st.Discarded != 1 {
		t.Fatalf("b stats %+v, want one discarded load", st)
	}
}

// On the instance that invalidates in a transaction, nothing is cached for the key until
// its own invalidation returns, so a read right after the commit sees the new value.
func TestInvalidateTxReadsOwnWrite(t *testing.T) {
	t.Parallel()
	f := newFixture()
	_, a := f.instance(t, "a", Config[string, string]{TxHold: time.Minute})
	f.rows.set("k", "v1")
	get(t, a, "k")
	tx := &memTx{b: f.net.buses[0]}
	if err := a.InvalidateTx(context.Background(), tx, "k"); err != nil {
		t.Fatal(err)
	}
	// Before the commit the row is still old; the read must not be cached.
	if v := get(t, a, "k"); v != "v1" {
		t.Fatalf("before commit: %q", v)
	}
	f.rows.set("k", "v2")
	tx.commit() // committed, but the invalidation has not come back yet
	if v := get(t, a, "k"); v != "v2" {
		t.Fatalf("after commit, before delivery: %q", v)
	}
	f.net.deliver()
	loads := f.loads.Load()
	get(t, a, "k")
	get(t, a, "k")
	if n := f.loads.Load() - loads; n != 1 {
		t.Fatalf("%d loads after delivery, want 1: caching did not resume", n)
	}

	// A rolled-back transaction's hold ends after TxHold.
	if err := a.InvalidateTx(context.Background(), &memTx{b: f.net.buses[0]}, "k"); err != nil {
		t.Fatal(err)
	}
	loads = f.loads.Load()
	get(t, a, "k")
	get(t, a, "k")
	if n := f.loads.Load() - loads; n != 2 {
		t.Fatalf("%d loads while held, want 2", n)
	}
	f.clock.Advance(time.Minute)
	loads = f.loads.Load()
	get(t, a, "k")
	get(t, a, "k")
	if n := f.loads.Load() - loads; n != 1 {
		t.Fatalf("%d loads after the hold expired, want 1", n)
	}
}

func TestInvalidateAll(t *testing.T) {
	t.Parallel()
	f := newFixture()
	_, a := f.instance(t, "a", Config[string, string]{TxHold: time.Minute})
	_, b := f.instance(t, "b", Config[string, string]{})
	for _, c := range []*Cache[string, string]{a, b} {
		get(t, c, "x")
		get(t, c, "y")
	}
	tx := &memTx{b: f.net.buses[0]}
	if err := a.InvalidateAllTx(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	get(t, a, "x")
	if a.Len() != 0 || b.Len() != 2 {
		t.Fatalf("before commit: a %d entries (held: want 0), b %d (want 2)", a.Len(), b.Len())
	}
	tx.commit()
	f.net.deliver()
	if b.Len() != 0 {
		t.Fatalf("b has %d entries after InvalidateAllTx", b.Len())
	}
	get(t, a, "x")
	if a.Len() != 1 {
		t.Fatal("a does not cache again after its InvalidateAllTx came back")
	}
	if err := b.InvalidateAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.net.deliver()
	if a.Len() != 0 {
		t.Fatal("InvalidateAll did not reach a")
	}
}

func TestLostSignalsFlushEverything(t *testing.T) {
	t.Parallel()
	f := newFixture()
	m, a := f.instance(t, "a", Config[string, string]{})
	other, err := New(m, "orders", Config[int, string]{Load: func(ctx context.Context, k int) (string, error) { return "o", nil }})
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	release := make(chan struct{})
	slow, err := New(m, "slow", Config[string, string]{Load: func(ctx context.Context, k string) (string, error) {
		close(read)
		<-release
		return "v", nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	get(t, a, "k")
	if _, err := other.Get(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		get(t, slow, "k")
	}()
	<-read
	var seen []Invalidation
	cancel := m.Observe(func(inv Invalidation) { seen = append(seen, inv) })
	defer cancel()
	f.net.buses[0].lost()
	close(release)
	<-done
	if a.Len() != 0 || other.Len() != 0 || slow.Len() != 0 {
		t.Fatalf("after Lost: %d, %d and %d entries", a.Len(), other.Len(), slow.Len())
	}
	if len(seen) != 1 || !seen[0].Lost {
		t.Fatalf("observed %+v", seen)
	}
	// A message nobody can read is treated as lost too.
	get(t, a, "k")
	f.net.enqueue(bus.Message{Channel: Channel, Payload: []byte("garbage"), From: "b"})
	f.net.deliver()
	if a.Len() != 0 {
		t.Fatal("an unreadable invalidation did not flush")
	}
}

// Unreadable invalidations flush every cache at most once per MalformedFlushInterval: a
// flood of them (anyone who can reach the bus can send one) is counted, not obeyed each
// time. A Lost message still flushes at once.
func TestMalformedFlushesAreRateLimited(t *testing.T) {
	t.Parallel()
	f := newFixture()
	m := startedManager(t, f.net.open("a"), ManagerConfig{MalformedFlushInterval: time.Hour})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	c, err := New(m, "users", Config[string, string]{Load: func(ctx context.Context, k string) (string, error) { return "v", nil }})
	if err != nil {
		t.Fatal(err)
	}
	garbage := bus.Message{Channel: Channel, Payload: []byte("garbage"), From: "intruder"}
	get(t, c, "k")
	f.net.enqueue(garbage)
	f.net.deliver()
	if c.Len() != 0 {
		t.Fatal("the first unreadable invalidation did not flush")
	}
	get(t, c, "k")
	for range 100 {
		f.net.enqueue(garbage)
	}
	f.net.deliver()
	if c.Len() != 1 {
		t.Fatal("unreadable invalidations within the interval flushed the cache again")
	}
	if st := m.BusStats(); st.Malformed != 101 || st.MalformedFlushes != 1 || st.LostFlushes != 0 {
		t.Fatalf("stats %+v", st)
	}
	f.net.buses[0].lost()
	if c.Len() != 0 || m.BusStats().LostFlushes != 1 {
		t.Fatalf("Lost did not flush: %d entries, stats %+v", c.Len(), m.BusStats())
	}
}

// The unreadable invalidations held back by the limit are not ignored: one flush at the
// end of the interval covers them all.
func TestMalformedFlushIsDeferredNotDropped(t *testing.T) {
	t.Parallel()
	f := newFixture()
	m := startedManager(t, f.net.open("a"), ManagerConfig{MalformedFlushInterval: 20 * time.Millisecond})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	c, err := New(m, "users", Config[string, string]{Load: func(ctx context.Context, k string) (string, error) { return "v", nil }})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		get(t, c, "k")
		f.net.enqueue(bus.Message{Channel: Channel, Payload: []byte{9}, From: "intruder"})
		f.net.deliver()
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.BusStats().MalformedFlushes < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no deferred flush: stats %+v", m.BusStats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if c.Len() != 0 {
		t.Fatal("the deferred flush left an entry")
	}
}

// InvalidateTx tokens cannot be predicted from the ones seen on the bus: the next is not
// the last plus one.
func TestTokensAreNotSequential(t *testing.T) {
	t.Parallel()
	m := startedManager(t, newFixture().net.open("a"), ManagerConfig{})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	prev := m.token()
	for range 100 {
		next := m.token()
		if next == 0 || next-prev < 1<<32 || prev-next < 1<<32 {
			t.Fatalf("token %d after %d", next, prev)
		}
		prev = next
	}
}

type tenantKey struct {
	Tenant string
	ID     int64
}

type userID int32

func TestKeys(t *testing.T) {
	t.Parallel()
	m := startedManager(t, (&memNet{}).open("a"), ManagerConfig{})
	defer m.Close(context.Background())
	load := func(ctx context.Context, k tenantKey) (int, error) { return 0, nil }
	s, err := New(m, "structs", Config[tenantKey, int]{Load: load})
	if err != nil {
		t.Fatal(err)
	}
	if k := s.key(tenantKey{"acme", 7}); k != `cache.tenantKey{Tenant:"acme", ID:7}` {
		t.Errorf("struct key %q", k)
	}
	n, err := New(m, "named", Config[userID, int]{Load: func(ctx context.Context, k userID) (int, error) { return 0, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if k := n.key(-12); k != "-12" {
		t.Errorf("named int key %q", k)
	}
	if _, err := New(m, "ptr", Config[*int, int]{Load: func(ctx context.Context, k *int) (int, error) { return 0, nil }}); err == nil {
		t.Error("pointer keys accepted without Config.Key")
	}
	if _, err := New(m, "structs", Config[tenantKey, int]{Load: load}); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate name: %v", err)
	}
	for _, bad := range []string{"", "-x", "a b", strings.Repeat("n", MaxName+1)} {
		if _, err := New(m, bad, Config[tenantKey, int]{Load: load}); !errors.Is(err, ErrBadName) {
			t.Errorf("name %q: %v", bad, err)
		}
	}
	str, err := New(m, "strings", Config[string, int]{Load: func(ctx context.Context, k string) (int, error) { return len(k), nil }})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("k", MaxKey+1)
	if _, err := str.Get(context.Background(), long); !errors.Is(err, ErrKeyTooLong) {
		t.Errorf("Get of a long key: %v", err)
	}
	if err := str.Invalidate(context.Background(), "ok", long); !errors.Is(err, ErrKeyTooLong) {
		t.Errorf("Invalidate of a long key: %v", err)
	}
}

func TestCloseBypassesTheCache(t *testing.T) {
	t.Parallel()
	f := newFixture()
	m, c := f.instance(t, "a", Config[string, string]{})
	get(t, c, "k")
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.rows.set("k", "after")
	if v := get(t, c, "k"); v != "after" || c.Len() != 0 {
		t.Fatalf("after Close: %q with %d entries", v, c.Len())
	}
	if _, err := New(m, "late", Config[string, string]{Load: c.cfg.Load}); !errors.Is(err, ErrClosed) {
		t.Fatalf("New after Close: %v", err)
	}
}

func TestSplitFitsThePayloadLimit(t *testing.T) {
	t.Parallel()
	var keys []string
	for i := range 50 {
		keys = append(keys, strings.Repeat(fmt.Sprint(i%10), 1+i*19))
	}
	msgs := split("users", 99, keys)
	if len(msgs) < 2 {
		t.Fatalf("%d messages for %d bytes of keys", len(msgs), 50*500)
	}
	var got []string
	for _, m := range msgs {
		enc := m.encode()
		if len(enc) > bus.MaxPayload {
			t.Fatalf("message of %d bytes", len(enc))
		}
		d, err := decode(enc)
		if err != nil || d.token != 99 || d.name != "users" {
			t.Fatalf("decode: %+v %v", d, err)
		}
		got = append(got, d.keys...)
	}
	if strings.Join(got, ",") != strings.Join(keys, ",") {
		t.Fatal("keys changed in the split")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(message{name: "users", keys: []string{"1", "2"}}.encode())
	f.Add(message{name: "users", all: true, token: 1 << 60}.encode())
	f.Add(message{name: "a", keys: []string{"", "\xff\x00"}}.encode())
	f.Add([]byte{1, 0, 0, 1, 'x', 200, 1})
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0x80, 0x00, 1, 'x', 0}) // a padded varint
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err != nil {
			return
		}
		if enc := m.encode(); string(enc) != string(b) {
			t.Fatalf("decode(%x) = %+v re-encodes as %x", b, m, enc)
		}
	})
}

// The hand keeps its place between evictions, as SIEVE requires: after it passed the
// visited "a" to evict "b", the next eviction starts at "c", not at the oldest entry again.
func TestSieveHandKeepsItsPlace(t *testing.T) {
	t.Parallel()
	s := newShard[int](3)
	now, far := time.Unix(0, 0), time.Unix(1e6, 0)
	for _, k := range []string{"a", "b", "c"} {
		s.install(k, 0, far, now)
	}
	s.lookupLocked("a", now)
	s.install("d", 0, far, now) // the hand clears a's flag and evicts b
	s.install("e", 0, far, now) // it goes on from c: c is evicted, a stays
	_, a := s.entries["a"]
	_, c := s.entries["c"]
	if !a || c {
		t.Fatalf("after two evictions: a present %v, c present %v; want a kept and c evicted", a, c)
	}
}

// On a skewed (Zipf) trace SIEVE keeps more of the hot keys than LRU does; a regression in
// the eviction shows up here as a lower hit ratio.
func TestSieveBeatsLRUOnZipf(t *testing.T) {
	t.Parallel()
	keys := zipfKeys(200_000, 20_000, 7)
	s, l := newShard[struct{}](200), newLRU(200)
	now, far := time.Unix(0, 0), time.Unix(1<<40, 0)
	var sieveHits, lruHits int
	for _, k := range keys {
		if _, ok := s.lookupLocked(k, now); ok {
			sieveHits++
		} else {
			s.install(k, struct{}{}, far, now)
		}
		if l.get(k) {
			lruHits++
		}
	}
	t.Logf("hit ratio: SIEVE %.1f%%, LRU %.1f%%", 100*float64(sieveHits)/float64(len(keys)), 100*float64(lruHits)/float64(len(keys)))
	if sieveHits <= lruHits {
		t.Fatalf("SIEVE hit %d times, LRU %d", sieveHits, lruHits)
	}
}

// startedManager is a manager on b, receiving invalidations, as the node starts it.
func startedManager(tb testing.TB, b bus.Bus, cfg ManagerConfig) *Manager {
	tb.Helper()
	m, err := NewManager(block.Deps{Bus: b}, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return m
}
