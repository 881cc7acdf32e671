// Package partition spreads named sets of partitions over the live instances of a service,
// so that each key has one owner at a time: balanced, sticky, and fenced.
//
// A [Set] has a fixed number of partitions. Each instance that joins it holds about its
// share, at most ⌈P/n⌉ with n instances, each partition through a lease whose token
// strictly increases (its epoch): a write on behalf of a partition checks the token in the
// writer's transaction ([Assignment.Check]), so an owner that paused and lost its lease
// can never overwrite its successor's work. A join moves only the partitions the
// newcomer takes, a graceful leave hands its partitions over at once, and a crash frees
// them within the cluster's failure-detection bound.
//
// [Set.Owner] says, from memory, which instance owns a key and where to reach it, so a
// request can be forwarded there (package forward).
package partition

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/safe"
	"github.com/twicehq/twice/lease"
)

const (
	// DefaultPartitions is the default number of partitions of a set.
	DefaultPartitions = 16
	// MaxPartitions is the most partitions a set may have.
	MaxPartitions = 4096
	// DefaultRebalance is the default [Config].Rebalance.
	DefaultRebalance = time.Second
	// Channel is the bus channel on which an instance names a set it joined or took
	// partitions of, so that the others look at the assignment at once. A message on it
	// is a hint to read the lease table; it assigns nothing.
	Channel = "twice.partitions"
	// Prefix starts the names of the leases of the sets a [Manager] from [New] holds.
	Prefix = "part/"
)

var (
	// ErrNoOwner is returned by [Set.Owner] when no live instance owns the key's partition
	// now: it is being handed over, or its owner just died. Try again shortly.
	ErrNoOwner = errors.New("partition: no live owner")
	// ErrFenced is returned by [Assignment.Check] when the partition has passed to another
	// instance (or was given back) since the assignment: the write must not happen.
	ErrFenced = lease.ErrFenced
	// ErrClosed is returned once the set or its manager is closed.
	ErrClosed = errors.New("partition: closed")
	// ErrRevoked is the cause of an assignment's context cancelled when the partition
	// was handed over (a rebalance, or Close).
	ErrRevoked = errors.New("partition: revoked")
)

// Config describes a partition set, and what this instance does with its partitions.
type Config struct {
	// Name identifies the set within the service: letters, digits, '_', '-', '.' and ':',
	// at most 100 bytes. Required.
	Name string
	// Partitions is how many partitions the set has, from 1 to [MaxPartitions]. It is
	// fixed when the set is first joined: an instance that asks for another number is
	// refused, since it would split keys differently. Defaults to [DefaultPartitions].
	Partitions int
	// MaxMoves caps how many partitions this instance takes, and how many it gives back,
	// in one round of rebalancing, so that a rolling deploy moves work a few partitions
	// at a time. Zero: no cap, the default.
	MaxMoves int
	// Rebalance is how often this instance looks at the assignment when nothing tells it
	// to (joins, hand-overs and deaths are announced, and it looks at once): at this
	// interval while the bus does not vouch for its delivery, at the node's Backstop while
	// it does. Defaults to [DefaultRebalance].
	Rebalance time.Duration
	// OnAssigned runs when this instance takes a partition, before anything else happens to
	// the assignment: on the set's own goroutine, so it must return promptly. Work for the
	// partition runs under a.Go, which a revocation cancels and waits for before anyone
	// else can take the partition; ctx (a.Context()) ends when the partition is revoked
	// (a hand-over, Close, or its lease lost). A panic is recovered, logged and counted.
	// Optional.
	OnAssigned func(ctx context.Context, a *Assignment)
	// OnRevoked runs before the partition leaves this instance, and before anyone else can
	// take it: for a hand-over the assignment is still valid, and the application can
	// finish and commit what it does for the partition; once OnRevoked returns, the
	// assignment's context is cancelled, the work started with [Assignment.Go] awaited,
	// and the partition given back. When the lease was lost instead (a pause longer than
	// its TTL), ctx has already ended and another instance may own the partition: writes
	// fenced by [Assignment.Check] are refused. ctx also ends when a Close runs out of
	// time. A panic is recovered, logged and counted. Optional.
	OnRevoked func(ctx context.Context, a *Assignment)
}

var validName = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,100}$`)

// withDefaults fills in the defaults and checks c; a set of another block (NewNamed) is
// named by that block's rules, and needs only a name without '/'.
func (c *Config) withDefaults(ownNames bool) error {
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Rebalance == 0 {
		c.Rebalance = DefaultRebalance
	}
	var errs []error
	if ownNames && !validName.MatchString(c.Name) || c.Name == "" || strings.Contains(c.Name, "/") {
		errs = append(errs, fmt.Errorf("Config.Name %q must be 1 to 100 letters, digits, '_', '-', '.' or ':'", c.Name))
	}
	if c.Partitions < 1 || c.Partitions > MaxPartitions {
		errs = append(errs, fmt.Errorf("Config.Partitions %d must be from 1 to %d", c.Partitions, MaxPartitions))
	}
	if c.MaxMoves < 0 {
		errs = append(errs, fmt.Errorf("Config.MaxMoves %d must not be negative", c.MaxMoves))
	}
	if c.Rebalance < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("Config.Rebalance %v must be at least 10ms", c.Rebalance))
	}
	if len(errs) > 0 {
		return fmt.Errorf("partition: invalid Config: %w", errors.Join(errs...))
	}
	return nil
}

// Manager holds this instance's partition sets. The node makes one (Node.Partitions);
// Close hands every set's partitions over.
type Manager struct {
	d       block.Deps
	q       queries
	log     *slog.Logger
	prefix  string // of every lease name
	channel string // announcements
	define  bool   // record each set's number of partitions in twice_partition_sets
	addr    string // this instance's advertised address

	mu      sync.Mutex // protects sets, started, closed, unsub
	sets    map[string]*Set
	started bool
	closed  bool
	unsub   func()
}

// New returns the manager of an instance's partition sets. Its leases are named
// "part/<set>/p/<n>" (partitions) and "part/<set>/m/<instance>" (members).
func New(d block.Deps) (*Manager, error) {
	m, err := NewNamed(d, Prefix, Channel)
	if m != nil {
		m.define = true
	}
	return m, err
}

// NewNamed is New for another building block's sets (events' consumer groups), which keep
// their own lease names, prefix+"<set>/p/<n>", and announce on their own bus channel, so
// that instances of an older release share the sets. The block checks the sets'
// definitions itself.
func NewNamed(d block.Deps, prefix, channel string) (*Manager, error) {
	if err := d.Validate("partition", true); err != nil {
		return nil, err
	}
	if d.Leases == nil {
		return nil, errors.New("partition: Deps.Leases is required")
	}
	d = d.WithDefaults()
	m := &Manager{d: d, q: queriesFor(d.Store), log: d.Logger, prefix: prefix, channel: channel, sets: map[string]*Set{}}
	if d.Members != nil {
		m.addr = d.Members.Config().Addr
	}
	return m, nil
}

// Start listens for announcements and deaths, so that every set looks at its assignment
// at once when an instance joins, takes, gives back or dies. Without it, sets look every
// Rebalance. The node calls it when the application first uses its partitions.
func (m *Manager) Start(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.started {
		return nil
	}
	m.started = true
	if mb := m.d.Members; mb != nil {
		// A dead instance's leases are freed when this instance finds it dead by its
		// liveness lock (the node releases them), or run out by themselves.
		mb.OnDeath(func() { m.kick("", true, true) })
	}
	if b := m.d.Bus; b != nil {
		m.unsub = b.Subscribe(m.channel, func(msg bus.Message) { m.kick(string(msg.Payload), msg.Lost, false) })
	}
	return nil
}

// kick makes set name (every set when all) look at its assignment now; died says an
// instance was found dead.
func (m *Manager) kick(name string, all, died bool) {
	m.mu.Lock()
	var sets []*Set
	if all {
		for _, s := range m.sets {
			sets = append(sets, s)
		}
	} else if s := m.sets[name]; s != nil {
		sets = append(sets, s)
	}
	m.mu.Unlock()
	for _, s := range sets {
		if died {
			s.died.Store(time.Now().UnixNano())
		}
		s.kick()
	}
}

// Join makes this instance a member of the set cfg describes, and starts taking its share
// of the partitions in the background: [Config].OnAssigned runs for each. It fails if the
// set exists with another number of partitions, or this instance has already joined it.
// A membership still held by this instance's previous process (same instance id) is
// taken over once it runs out.
func (m *Manager) Join(ctx context.Context, cfg Config) (*Set, error) {
	if err := cfg.withDefaults(m.define); err != nil {
		return nil, err
	}
	if m.define {
		if err := m.defineSet(ctx, cfg); err != nil {
			return nil, err
		}
	}
	s := &Set{m: m, cfg: cfg, name: m.prefix + cfg.Name, held: map[int]*Assignment{},
		first: start(m.d.Instance, cfg.Partitions), owners: map[int]lease.Info{}, addrs: map[string]string{}}
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return nil, ErrClosed
	case m.sets[cfg.Name] != nil:
		m.mu.Unlock()
		return nil, fmt.Errorf("partition: this instance has already joined set %q", cfg.Name)
	}
	m.sets[cfg.Name] = s
	m.mu.Unlock()
	if err := s.join(ctx); err != nil && !errors.Is(err, lease.ErrHeld) {
		m.forget(s)
		return nil, fmt.Errorf("partition: join set %q: %w", cfg.Name, err)
	}
	s.balance()
	return s, nil
}

// defineSet records the set's number of partitions on first use, and refuses another.
func (m *Manager) defineSet(ctx context.Context, cfg Config) error {
	st := m.d.Store
	if _, err := st.Exec(ctx, m.q.define, st.NowArg(), m.d.Service, cfg.Name, cfg.Partitions); err != nil {
		return fmt.Errorf("partition: define set %q: %w", cfg.Name, err)
	}
	var have int
	if err := st.QueryRow(ctx, m.q.defined, m.d.Service, cfg.Name).Scan(&have); err != nil {
		return fmt.Errorf("partition: set %q: %w", cfg.Name, err)
	}
	if have != cfg.Partitions {
		return fmt.Errorf("partition: set %q has %d partitions; this instance asks for %d: "+
			"a set's number of partitions cannot change (use a new set name)", cfg.Name, have, cfg.Partitions)
	}
	return nil
}

func (m *Manager) forget(s *Set) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sets[s.cfg.Name] == s {
		delete(m.sets, s.cfg.Name)
	}
}

// Sets lists the sets this instance has joined.
func (m *Manager) Sets() []*Set {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Set, 0, len(m.sets))
	for _, s := range m.sets {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *Set) int { return strings.Compare(a.cfg.Name, b.cfg.Name) })
	return out
}

// Close hands every set's partitions over (see [Set.Close]).
func (m *Manager) Close(ctx context.Context) error {
	var errs []error
	for _, s := range m.end() {
		errs = append(errs, s.Close(ctx))
	}
	return errors.Join(errs...)
}

// Abandon stops every set as a crash would (see [Set.Abandon]).
func (m *Manager) Abandon(ctx context.Context) {
	for _, s := range m.end() {
		s.Abandon(ctx)
	}
}

func (m *Manager) end() []*Set {
	m.mu.Lock()
	m.closed = true
	unsub := m.unsub
	m.unsub = nil
	m.mu.Unlock()
	if unsub != nil {
		unsub()
	}
	return m.Sets()
}

// announce tells the set's members on every instance to look at the assignment now.
func (m *Manager) announce(ctx context.Context, name string) {
	b := m.d.Bus
	if b == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loop.SignalTimeout)
	defer cancel()
	if err := b.Publish(ctx, m.channel, []byte(name)); err != nil {
		m.log.Debug("partition: announcing failed; the members look at their next poll", "set", name, "err", err)
	}
}

// Set is this instance's membership of a partition set.
type Set struct {
	m     *Manager
	cfg   Config
	name  string // the leases' names start with it
	first int    // the partition this instance starts from (see start)
	died  atomic.Int64

	mu       sync.Mutex // protects held, member, owners, addrs, balancer, closing
	held     map[int]*Assignment
	member   *lease.Lease
	owners   map[int]lease.Info // partition → its lease, as the last round read it
	addrs    map[string]string  // instance → advertised address
	balancer *loop.Loop
	closing  bool

	wg        sync.WaitGroup // the lease watch
	closeOnce sync.Once
	closeErr  error
}

// Name is the set's name.
func (s *Set) Name() string { return s.cfg.Name }

// Partitions is the set's number of partitions.
func (s *Set) Partitions() int { return s.cfg.Partitions }

// Of returns the partition key belongs to: the same on every instance, and the same as
// the partition an event with that key is read in by a consumer group with as many
// partitions.
func (s *Set) Of(key string) int { return Of(key, s.cfg.Partitions) }

// Of returns the partition of key among n.
func Of(key string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(int64(h.Sum32()) % int64(n))
}

// Owner describes who owns a partition.
type Owner struct {
	Partition int    `json:"partition"`
	Instance  string `json:"instance"`
	// Addr is where the owner can be reached: its advertised address
	// (twice.Config.AdvertiseAddr); empty when it advertises none.
	Addr string `json:"addr,omitempty"`
	// Token is the owner's epoch for the partition: it strictly increases with each
	// assignment.
	Token int64 `json:"token"`
	// Self says that this instance owns it.
	Self bool `json:"self"`
}

// Owner returns the owner of key's partition, from memory: the assignment this instance
// last read, refreshed whenever a member announces a change. It returns [ErrNoOwner]
// while the partition has none (a hand-over, a death).
func (s *Set) Owner(key string) (Owner, error) { return s.OwnerOf(s.Of(key)) }

// OwnerOf returns the owner of partition p (see [Set.Owner]).
func (s *Set) OwnerOf(p int) (Owner, error) {
	if p < 0 || p >= s.cfg.Partitions {
		return Owner{}, fmt.Errorf("partition: %d is outside set %q's 0..%d", p, s.cfg.Name, s.cfg.Partitions-1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.held[p]; a != nil && a.l.Valid() {
		return Owner{Partition: p, Instance: s.m.d.Instance, Addr: s.m.addr, Token: a.l.Token(), Self: true}, nil
	}
	i, ok := s.owners[p]
	if !ok || i.Holder == s.m.d.Instance { // this instance's lease ended since the last round
		return Owner{}, ErrNoOwner
	}
	return Owner{Partition: p, Instance: i.Holder, Addr: s.addrs[i.Holder], Token: i.Token}, nil
}

// Owners lists the owner of every owned partition, as this instance last read them.
func (s *Set) Owners() []Owner {
	var out []Owner
	for p := range s.cfg.Partitions {
		if o, err := s.OwnerOf(p); err == nil {
			out = append(out, o)
		}
	}
	return out
}

// Mine lists the partitions this instance holds now, in order.
func (s *Set) Mine() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.held))
	for p, a := range s.held {
		if a.l.Valid() {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// Assignment returns this instance's assignment of partition p, or nil when it does not
// hold p.
func (s *Set) Assignment(p int) *Assignment {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.held[p]; a != nil && a.l.Valid() {
		return a
	}
	return nil
}

func (s *Set) memberName() string { return s.name + "/m/" + s.m.d.Instance }

// ParseLease reads the name of a lease of a set named under prefix ([Prefix], or another
// block's, given to [NewNamed]): the set's name, and kind "p" for a partition
// (prefix<set>/p/<n>) or "m" for a membership (prefix<set>/m/<instance>).
func ParseLease(prefix, name string) (set, kind string, ok bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return "", "", false
	}
	set, rest, ok = strings.Cut(rest, "/")
	if !ok || set == "" {
		return "", "", false
	}
	kind, rest, ok = strings.Cut(rest, "/")
	if !ok || rest == "" || (kind != "p" && kind != "m") {
		return "", "", false
	}
	if _, err := strconv.Atoi(rest); kind == "p" && err != nil {
		return "", "", false
	}
	return set, kind, true
}

func (s *Set) partName(p int) string { return s.name + "/p/" + strconv.Itoa(p) }

// join takes this instance's membership lease, and announces it.
func (s *Set) join(ctx context.Context) error {
	l, err := s.m.d.Leases.TryAcquire(ctx, s.memberName(), nil)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.member = l
	s.mu.Unlock()
	s.m.announce(ctx, s.cfg.Name)
	return nil
}

// balance starts the loop that keeps this instance's share: at once; when a lease is
// released or lost here or announced released anywhere; when a member announces a join or
// a take; when the cluster finds an instance dead; and every Rebalance (the Backstop while
// the bus vouches for its delivery), which finds what a lost signal hid.
func (s *Set) balance() {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	leases := s.m.d.Leases
	b := loop.StartAfter(loop.Forever, func(ctx context.Context) time.Duration {
		expiry, err := s.round(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.m.log.Warn("partition: rebalancing failed", "set", s.cfg.Name, "err", err)
			}
			return s.cfg.Rebalance
		}
		wait := s.m.d.Poll(s.cfg.Rebalance)
		if died := s.died.Load(); died != 0 && time.Since(time.Unix(0, died)) < leases.TTL() && expiry > 0 {
			// An instance died lately, and may have been found dead before its leases
			// ran out (DeadAfter shorter than the lease TTL): look again when the next
			// lease held by another runs out, until a TTL has passed.
			wait = min(wait, expiry+time.Millisecond)
		}
		return wait
	})
	s.balancer = b
	s.mu.Unlock()
	// Each change is watched from before the round it starts: the next channel is taken
	// before the kick, so a change during that round closes it and starts another.
	changed := leases.Changed()
	b.Kick()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			select {
			case <-b.Stopping():
				return
			case <-changed:
				changed = leases.Changed()
				b.Kick()
			}
		}
	}()
}

// kick makes the balancer look now.
func (s *Set) kick() {
	s.mu.Lock()
	b := s.balancer
	s.mu.Unlock()
	if b != nil {
		b.Kick()
	}
}

// round takes or gives back partitions to keep this instance's share. It returns how long
// until the first of the set's leases held by another instance runs out.
func (s *Set) round(ctx context.Context) (time.Duration, error) {
	d := s.m.d
	s.mu.Lock()
	var lost []*Assignment
	for _, a := range s.held {
		if !a.l.Valid() {
			lost = append(lost, a)
		}
	}
	member := s.member
	s.mu.Unlock()
	for _, a := range lost {
		s.revoke(a.ctx, a, false)
	}
	if member == nil || !member.Valid() {
		if err := s.join(ctx); errors.Is(err, lease.ErrHeld) {
			// This instance's previous process still holds it: wait until it runs out.
			s.m.log.Debug("partition: membership still held by this instance's previous process", "set", s.cfg.Name)
		} else if err != nil {
			return 0, fmt.Errorf("rejoin: %w", err)
		}
	}
	members, err := d.Leases.List(ctx, s.name+"/m/")
	if err != nil {
		return 0, err
	}
	held, err := d.Leases.List(ctx, s.name+"/p/")
	if err != nil {
		return 0, err
	}
	var expiry time.Duration
	for _, i := range slices.Concat(members, held) {
		if i.Holder != d.Instance && (expiry == 0 || i.Remaining < expiry) {
			expiry = i.Remaining
		}
	}
	v := view{partitions: s.cfg.Partitions, me: d.Instance, holders: map[int]string{}, first: s.first, maxMoves: s.cfg.MaxMoves}
	for _, i := range members {
		if id := i.Name[len(s.name+"/m/"):]; i.Holder == id {
			v.members = append(v.members, id)
		}
	}
	owners := map[int]lease.Info{}
	for _, i := range held {
		if p, err := strconv.Atoi(i.Name[len(s.name+"/p/"):]); err == nil && p >= 0 && p < s.cfg.Partitions {
			v.holders[p] = i.Holder
			owners[p] = i
		}
	}
	s.mu.Lock()
	// The table may not show yet what this instance took or gave back meanwhile; its own
	// assignments are what it knows best.
	for p := range v.holders {
		if v.holders[p] == d.Instance && s.held[p] == nil {
			delete(v.holders, p)
		}
	}
	for p, a := range s.held {
		v.holders[p] = d.Instance
		owners[p] = lease.Info{Name: a.l.Name(), Holder: d.Instance, Token: a.l.Token()}
	}
	s.owners = owners
	s.mu.Unlock()
	s.learnAddrs(ctx, v.holders)

	release, take := plan(v)
	for _, p := range release {
		s.mu.Lock()
		a := s.held[p]
		s.mu.Unlock()
		if a != nil {
			s.m.log.Debug("partition: handing a partition over", "set", s.cfg.Name, "partition", p)
			s.revoke(a.ctx, a, true)
		}
	}
	took := false
	for _, p := range take {
		l, err := d.Leases.TryAcquire(ctx, s.partName(p), nil)
		if errors.Is(err, lease.ErrHeld) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if !s.assign(p, l) {
			break
		}
		took = true
	}
	if took {
		s.m.announce(ctx, s.cfg.Name)
	}
	return expiry, nil
}

// learnAddrs reads the members' advertised addresses when a holder's is not known yet.
func (s *Set) learnAddrs(ctx context.Context, holders map[int]string) {
	s.mu.Lock()
	missing := false
	for _, h := range holders {
		if _, ok := s.addrs[h]; !ok && h != s.m.d.Instance {
			missing = true
			break
		}
	}
	s.mu.Unlock()
	if !missing {
		return
	}
	ms, err := cluster.List(ctx, s.m.d.Store, s.m.d.Service)
	if err != nil {
		s.m.log.Debug("partition: cannot read the members' addresses", "set", s.cfg.Name, "err", err)
		return
	}
	addrs := make(map[string]string, len(ms))
	for _, mb := range ms {
		addrs[mb.ID] = mb.Addr
	}
	for _, h := range holders {
		if _, ok := addrs[h]; !ok {
			addrs[h] = "" // not a member (a test's lease manager): do not look again each round
		}
	}
	s.mu.Lock()
	s.addrs = addrs
	s.mu.Unlock()
}

// assign starts an assignment of partition p under l, and runs OnAssigned. It reports
// false, and gives l back, when the set is closing.
func (s *Set) assign(p int, l *lease.Lease) bool {
	ctx, cancel := context.WithCancelCause(l.Context())
	a := &Assignment{set: s, p: p, l: l, cancel: cancel}
	a.ctx = context.WithValue(ctx, ctxKey{}, a)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		cancel(ErrClosed)
		rctx, rcancel := context.WithTimeout(context.Background(), loop.ReleaseTimeout)
		defer rcancel()
		_ = l.Release(rctx)
		return false
	}
	s.held[p] = a
	s.owners[p] = lease.Info{Name: l.Name(), Holder: s.m.d.Instance, Token: l.Token()}
	s.mu.Unlock()
	s.m.log.Debug("partition: took a partition", "set", s.cfg.Name, "partition", p, "token", l.Token())
	// A lost lease ends the assignment: the balancer notices at once.
	context.AfterFunc(l.Context(), s.kick)
	if fn := s.cfg.OnAssigned; fn != nil {
		safe.Do(s.m.log, s.m.d.Panics, "partition: OnAssigned of set "+s.cfg.Name, func() { fn(a.ctx, a) })
	}
	return true
}

// revoke ends assignment a: OnRevoked with ctx, then its context is cancelled, the work it
// started awaited and, when release is set, the partition given back for another to take
// at once.
func (s *Set) revoke(ctx context.Context, a *Assignment, release bool) {
	s.mu.Lock()
	if s.held[a.p] == a {
		delete(s.held, a.p)
		delete(s.owners, a.p)
	}
	s.mu.Unlock()
	if fn := s.cfg.OnRevoked; fn != nil {
		safe.Do(s.m.log, s.m.d.Panics, "partition: OnRevoked of set "+s.cfg.Name, func() { fn(ctx, a) })
	}
	a.end(ErrRevoked)
	if !release {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loop.ReleaseTimeout)
	defer cancel()
	if err := a.l.Release(rctx); err != nil {
		s.m.log.Debug("partition: giving a partition back failed; its lease runs out by itself", "set", s.cfg.Name, "partition", a.p, "err", err)
	}
}

// halt stops the balancer, so that no partition is taken from here on, and returns the
// assignments held.
func (s *Set) halt() []*Assignment {
	s.mu.Lock()
	b := s.balancer
	s.balancer, s.closing = nil, true
	s.mu.Unlock()
	if b != nil {
		b.Stop()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Assignment, 0, len(s.held))
	for _, a := range s.held {
		out = append(out, a)
	}
	return out
}

// Close leaves the set: each partition is revoked (OnRevoked runs with a context that
// ends with ctx or the partition's lease) and given back at once, so the other members
// take it without waiting for a lease to run out; then the membership goes.
func (s *Set) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		var wg sync.WaitGroup
		for _, a := range s.halt() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rctx, cancel := context.WithCancel(a.ctx)
				stop := context.AfterFunc(ctx, cancel)
				defer func() { stop(); cancel() }()
				s.revoke(rctx, a, true)
			}()
		}
		wg.Wait()
		s.mu.Lock()
		member := s.member
		s.mu.Unlock()
		if member != nil {
			if err := member.Release(context.WithoutCancel(ctx)); err != nil {
				s.m.log.Debug("partition: leaving the set; the membership runs out by itself", "set", s.cfg.Name, "err", err)
			}
		}
		s.wg.Wait()
		if ctx.Err() != nil {
			s.closeErr = fmt.Errorf("partition: set %q closed before its partitions were revoked: %w", s.cfg.Name, ctx.Err())
		}
		s.m.forget(s)
	})
	return s.closeErr
}

// Abandon stops as a crash would: every assignment's context is cancelled, OnRevoked does
// not run, and nothing is given back, so the others take the partitions once the leases
// end (a crashed node abandons its leases first). It waits, until ctx ends, for the work
// started with [Assignment.Go] to return.
func (s *Set) Abandon(ctx context.Context) {
	s.closeOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			for _, a := range s.halt() {
				a.end(ErrClosed)
			}
			s.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
		}
		s.closeErr = ErrClosed
		s.m.forget(s)
	})
}

// Assignment is this instance's ownership of one partition, from its take to its
// revocation.
type Assignment struct {
	set    *Set
	p      int
	l      *lease.Lease
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu     sync.Mutex // protects ending, and the adding to work
	ending bool
	work   sync.WaitGroup // what Go started
}

// Go runs fn(a.Context()) on a goroutine of its own, as work for the partition: the
// revocation cancels the context and waits for fn to return before the partition can
// pass to another instance (unless the lease was lost: then it may have passed already,
// and only writes fenced with [Assignment.Check] are safe). A panic is recovered, logged
// and counted. Once the revocation has begun, Go runs nothing and reports false.
func (a *Assignment) Go(fn func(ctx context.Context)) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ending {
		return false
	}
	a.work.Add(1)
	s := a.set
	go func() {
		defer a.work.Done()
		safe.Do(s.m.log, s.m.d.Panics, "partition: work of set "+s.cfg.Name, func() { fn(a.ctx) })
	}()
	return true
}

// end cancels the assignment's context with cause and waits for its work.
func (a *Assignment) end(cause error) {
	a.mu.Lock()
	a.ending = true
	a.mu.Unlock()
	a.cancel(cause)
	a.work.Wait()
}

type ctxKey struct{}

// FromContext returns the assignment whose context ctx is (or derives from), or nil: the
// context OnAssigned and OnRevoked are given carries it.
func FromContext(ctx context.Context) *Assignment {
	a, _ := ctx.Value(ctxKey{}).(*Assignment)
	return a
}

// Partition is the partition assigned.
func (a *Assignment) Partition() int { return a.p }

// Set is the set the partition belongs to.
func (a *Assignment) Set() *Set { return a.set }

// Token is the assignment's epoch: it strictly increases each time the partition is
// assigned, on any instance.
func (a *Assignment) Token() int64 { return a.l.Token() }

// Context ends when the partition is revoked, or its lease lost.
func (a *Assignment) Context() context.Context { return a.ctx }

// Valid reports whether this instance still holds the partition, by its local deadline.
func (a *Assignment) Valid() bool { return a.l.Valid() && a.ctx.Err() == nil }

// Check fences a write on behalf of the partition: run it inside the transaction tx that
// makes the write (a *sql.Tx, a pgx.Tx, or a twice store transaction). It returns
// [ErrFenced] if the partition has been assigned again since (this instance paused past
// its lease, or gave it back), and holds the assignment until tx ends, so no other
// instance can take the partition before the write commits.
func (a *Assignment) Check(ctx context.Context, tx any) error { return a.l.Check(ctx, tx) }

// Check fences a write on behalf of partition p made by this instance (see
// [Assignment.Check]); [ErrFenced] when this instance does not hold p.
func (s *Set) Check(ctx context.Context, tx any, p int) error {
	a := s.Assignment(p)
	if a == nil {
		return ErrFenced
	}
	return a.Check(ctx, tx)
}
