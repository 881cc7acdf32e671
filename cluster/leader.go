package cluster

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
	"github.com/twicehq/twice/lease"
)

// LeaderLease is the name of the lease the leader of a service holds.
const LeaderLease = "leader"

// DefaultLeaderPoll is how long a follower waits before it tries for the leader lease
// again after another instance took it first. Between elections a follower looks at the
// lease when it is due to run out, or at once when a release is announced.
const DefaultLeaderPoll = 100 * time.Millisecond

// ErrNotLeader is the cause of the context [Leader.Context] returns to a follower.
var ErrNotLeader = errors.New("cluster: not the leader")

// LeaderConfig tunes a [Leader].
type LeaderConfig struct {
	// TTL of the leader lease. Defaults to the manager's TTL.
	TTL time.Duration
	// Poll is how long a follower waits after another instance won the lease first, before
	// it looks again. Defaults to [DefaultLeaderPoll].
	Poll time.Duration
	// Backstop, if set, is how long a follower may sleep while the leader renews on time
	// and nothing is signalled; zero sleeps until the lease's deadline, as with no Backstop.
	// Set it only where everything that frees the lease is signalled by a Poke: a release,
	// a lost signal, and a death found by the heartbeat (OnDeath), which must come no later
	// than the lease runs out (DeadAfter no longer than the TTL). The node sets it to its
	// Backstop while its bus vouches for its delivery.
	Backstop func() time.Duration
	// Logger defaults to slog.Default(). It should carry the instance id; the node's does.
	Logger *slog.Logger
	// Panics, if set, counts the panics recovered from OnElected callbacks; each is also
	// logged with its stack, and the leader steps down (see [Leader.OnElected]). Defaults to
	// nil: logged only.
	Panics *atomic.Int64
}

// maxPanicSitOut caps how long a leader whose OnElected callbacks keep panicking stays out
// of the elections after it stepped down.
const maxPanicSitOut = time.Minute

// Leader campaigns for the leadership of one service and tells the rest of the process
// whether it leads. Exactly one instance leads at a time; a leader that loses its lease
// (paused, cut off from the database) stops believing it leads before anyone else can take
// over, and any write it still attempts is fenced by [lease.Lease.Check] on [Leader.Lease].
type Leader struct {
	m   *lease.Manager
	cfg LeaderConfig
	log *slog.Logger

	mu        sync.Mutex // protects cur, watchers, onElected, sitOut, died, strikes, struck
	cur       *lease.Lease
	watchers  map[chan bool]struct{}
	onElected []func(context.Context)
	sitOut    time.Time
	died      time.Time // when the cluster last found an instance dead (Died)
	strikes   int       // consecutive terms given up because a callback panicked
	struck    bool      // the current term is being given up because a callback panicked

	terms atomic.Uint64 // terms this instance won (Terms)

	wg sync.WaitGroup // OnElected callbacks in flight
	// campaigner campaigns, and waits out each term it wins. Stop cancels its statements'
	// context, so a statement stuck on a busy database cannot hold Stop past its own.
	campaigner *loop.Loop
}

// NewLeader starts campaigning on m. Call [Leader.Stop] to stop and hand leadership over.
func NewLeader(m *lease.Manager, cfg LeaderConfig) *Leader {
	if cfg.TTL == 0 {
		cfg.TTL = m.TTL()
	}
	if cfg.Poll == 0 {
		cfg.Poll = DefaultLeaderPoll
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &Leader{m: m, cfg: cfg, log: cfg.Logger, watchers: map[chan bool]struct{}{}}
	l.campaigner = loop.Start(l.campaign)
	return l
}

// IsLeader reports whether this instance leads now. It is false from the moment the lease's
// local deadline passes, even in a process that has just woken from a long pause.
func (l *Leader) IsLeader() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur != nil && l.cur.Valid()
}

// Lease is the leader lease while this instance leads, for fencing writes with
// [lease.Lease.Check]; nil otherwise.
func (l *Leader) Lease() *lease.Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil || !l.cur.Valid() {
		return nil
	}
	return l.cur
}

var notLeaderCtx = func() context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(ErrNotLeader)
	return ctx
}()

// Context is cancelled when this instance stops leading; for a follower it is already
// cancelled, with cause [ErrNotLeader].
func (l *Leader) Context() context.Context {
	if ls := l.Lease(); ls != nil {
		return ls.Context()
	}
	return notLeaderCtx
}

// OnElected registers fn to run, in its own goroutine, each time this instance becomes
// leader, with a context cancelled when it stops leading. If it leads already, fn starts at
// once. [Leader.Stop] waits for running callbacks to return. The term's lease, to fence
// writes with, is lease.FromContext(ctx).
//
// If fn panics, the panic is recovered, logged and counted, and this instance steps down:
// a leader that no longer does part of its duties is worse than another leader. It stays
// out of the elections for a while, twice as long after each term in a row that ended
// this way (from two polls up to a minute), then campaigns again: another instance (one
// without the bug, during a rolling deploy) takes over meanwhile, and a bug every instance
// shares moves the leadership around slowly instead of leaving the service without one.
func (l *Leader) OnElected(fn func(ctx context.Context)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onElected = append(l.onElected, fn)
	if l.cur != nil && l.cur.Valid() {
		l.startLocked(fn, l.cur)
	}
}

func (l *Leader) startLocked(fn func(context.Context), ls *lease.Lease) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if safe.Do(l.log, l.cfg.Panics, "cluster: OnElected callback", func() { fn(ls.Context()) }) {
			l.stepDown(ls)
		}
	}()
}

// stepDown gives up the term of ls, if it is still running, after one of its callbacks
// panicked, and sits out of the next elections (see [Leader.OnElected]).
func (l *Leader) stepDown(ls *lease.Lease) {
	l.mu.Lock()
	if l.cur != ls || l.struck {
		l.mu.Unlock()
		return
	}
	l.struck = true
	l.strikes++
	sitOut := 2 * l.cfg.Poll
	for i := 1; i < l.strikes && sitOut < maxPanicSitOut; i++ {
		sitOut *= 2
	}
	sitOut = min(sitOut, maxPanicSitOut)
	l.sitOut = time.Now().Add(sitOut)
	l.mu.Unlock()
	l.log.Error("cluster: an OnElected callback panicked; stepping down", "token", ls.Token(), "sit_out", sitOut)
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.TTL)
	defer cancel()
	if err := ls.Release(ctx); err != nil {
		l.log.Warn("cluster: releasing the leader lease failed; it expires by itself", "err", err)
	}
}

// Watch returns a channel that receives whether this instance leads: the current state at
// once, then every change. A slow reader misses intermediate changes but always receives
// the latest state; code that must see every term (and stop the old term's work before the
// next starts) uses [Leader.OnElected]. The channel closes when ctx ends or the leader stops.
func (l *Leader) Watch(ctx context.Context) <-chan bool {
	ch := make(chan bool, 1)
	l.mu.Lock()
	ch <- l.cur != nil && l.cur.Valid()
	l.watchers[ch] = struct{}{}
	l.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-l.campaigner.Done():
		}
		l.mu.Lock()
		if _, ok := l.watchers[ch]; ok {
			delete(l.watchers, ch)
			close(ch)
		}
		l.mu.Unlock()
	}()
	return ch
}

func (l *Leader) notifyLocked(leading bool) {
	for ch := range l.watchers {
		select {
		case <-ch: // drop the stale state; the reader only needs the latest
		default:
		}
		ch <- leading
	}
}

// Terms is how many terms this instance has won since it started: each is a change of
// leader (summed over the instances of a service, the leader changes). Package metrics
// exports it.
func (l *Leader) Terms() uint64 { return l.terms.Load() }

// Current returns the leader lease as the database sees it; its Holder is the leading
// instance's id, empty when nobody leads.
func (l *Leader) Current(ctx context.Context) (lease.Info, error) {
	i, err := l.m.Info(ctx, LeaderLease)
	if errors.Is(err, lease.ErrNotFound) {
		return lease.Info{Name: LeaderLease}, nil
	}
	if err == nil && !i.Held() {
		i.Holder = ""
	}
	return i, err
}

// Resign gives leadership up, if this instance has it, and stays out of the next election
// for two poll intervals so another instance can take over.
func (l *Leader) Resign(ctx context.Context) error {
	l.mu.Lock()
	cur := l.cur
	l.sitOut = time.Now().Add(2 * l.cfg.Poll)
	l.mu.Unlock()
	if cur == nil {
		return nil
	}
	return cur.Release(ctx)
}

// Poke makes a follower look at the lease now instead of at its next poll; the bus calls it
// when the leader lease is released elsewhere.
func (l *Leader) Poke() { l.campaigner.Kick() }

// Died tells the leader that the cluster found an instance dead: a follower looks at once,
// and for a TTL afterwards sleeps no longer than the lease's deadline, not its Backstop: the
// dead one may be the leader, found dead before its lease ran out.
func (l *Leader) Died() {
	l.mu.Lock()
	l.died = time.Now()
	l.mu.Unlock()
	l.Poke()
}

// Stop stops campaigning, gives leadership up if held (so another instance takes over
// within one poll), and waits for OnElected callbacks to return, or for ctx to end: a
// callback that ignores its context cannot hold Stop forever.
func (l *Leader) Stop(ctx context.Context) error {
	var err error
	if cur := l.stopCampaigning(); cur != nil {
		err = cur.Release(ctx)
	}
	waited := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-ctx.Done():
		err = errors.Join(err, fmt.Errorf("cluster: OnElected callbacks still running at stop: %w", context.Cause(ctx)))
	}
	return err
}

// Abandon stops campaigning as a crashed process would, for tests that crash an instance:
// leadership is not handed over, and the lease of a term under way is neither renewed nor
// released here. It stays held in the database until its deadline, or until the others
// find this instance dead and free it. IsLeader is false at once; the term's OnElected
// callbacks run on until the lease ends here ([lease.Manager.Abandon] ends it at once).
// Stop afterwards releases nothing, and waits for them.
func (l *Leader) Abandon() { l.stopCampaigning() }

// stopCampaigning stops the campaign and forgets the term under way, returning its lease
// (nil if there was none).
func (l *Leader) stopCampaigning() *lease.Lease {
	l.campaigner.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.cur
	l.cur = nil
	return cur
}

// campaign is one round of the campaign: it waits while another instance leads (or this
// one sits out), tries for the lease, and if it wins, leads until the term ends. A kick
// (Poke) cuts a wait short. ctx ends at Stop.
func (l *Leader) campaign(ctx context.Context) time.Duration {
	if wait := l.follow(ctx); wait > 0 {
		return wait
	}
	ls, err := l.m.TryAcquire(ctx, LeaderLease, &lease.AcquireOpts{TTL: l.cfg.TTL})
	if err != nil {
		if !errors.Is(err, lease.ErrHeld) && !errors.Is(err, lease.ErrClosed) && ctx.Err() == nil {
			l.log.Warn("cluster: leader election attempt failed", "err", err)
		}
		return l.cfg.Poll
	}
	l.lead(ctx, ls)
	return 0
}

// follow returns how long to wait before trying for the lease, or 0 to try now. A follower
// waits for the lease's deadline: a leader that renews moves it, so a follower looks about
// once per renewal cycle, not every poll. With a Backstop, a follower that finds the lease
// renewed on time (more than half its TTL left) sleeps that long instead: a leader that goes
// silent is found dead by the heartbeat before its lease runs out, and that wakes it (Died),
// to sleep until the deadline for a TTL. A lease freed sooner is announced (a graceful
// release, a crashed leader whose liveness lock was freed, or a live leader that lost its
// lease, which frees its row: see [lease.Manager]), and the announcement, a death, or the
// bus saying signals were lost, cuts the wait short (Poke). Reading first keeps followers
// from taking SQLite's write lock at each look.
func (l *Leader) follow(ctx context.Context) time.Duration {
	l.mu.Lock()
	sitOut, sinceDeath := time.Until(l.sitOut), time.Since(l.died)
	l.mu.Unlock()
	if sitOut > 0 {
		return sitOut
	}
	info, err := l.m.Info(ctx, LeaderLease)
	if err != nil || !info.Held() {
		return 0
	}
	wait := info.Remaining + time.Millisecond
	// A lease still listed under this instance's own name was lost here (its deadline
	// passed): it is being freed, but if that fails, only its deadline frees it.
	mine := info.Holder == l.m.Holder()
	if l.cfg.Backstop != nil && !mine && info.Remaining > l.cfg.TTL/2 && sinceDeath > l.cfg.TTL {
		wait = max(wait, l.cfg.Backstop())
	}
	return wait
}

// lead runs while ls is held: it announces the election and waits for the lease to end,
// or for ctx (the campaign's) to end at Stop.
func (l *Leader) lead(ctx context.Context, ls *lease.Lease) {
	l.terms.Add(1)
	l.mu.Lock()
	l.cur, l.struck = ls, false
	for _, fn := range l.onElected {
		l.startLocked(fn, ls)
	}
	l.notifyLocked(true)
	l.mu.Unlock()
	l.log.Info("cluster: elected leader", "token", ls.Token())

	select {
	case <-ls.Context().Done():
	case <-ctx.Done():
		// Stop releases the lease after the loop has ended.
		return
	}
	l.mu.Lock()
	if l.cur == ls {
		l.cur = nil
	}
	if !l.struck {
		l.strikes = 0
	}
	l.notifyLocked(false)
	l.mu.Unlock()
	l.log.Info("cluster: no longer leader", "token", ls.Token(), "cause", context.Cause(ls.Context()))
}
