// Package presence knows which user is connected where, across the instances of a
// service: each connection is an entry owned by the instance holding it, in rooms it joins
// and leaves. Every instance keeps a view of the whole service's presence in memory, so
// [Presence.Where] and [Presence.Online] cost a map lookup, and tells its watchers when a
// user joins a room (their first connection in it appears, on any instance) or leaves it
// (their last one goes: closed, or lost with its instance).
//
// An entry lives as long as its instance does. Entries are read only while their instance
// is alive in the cluster (cluster.Alive), so a crashed instance's connections vanish as
// soon as the cluster counts it dead (at once when its liveness lock is freed, after
// DeadAfter when it went silent); they are then deleted, and every instance told. A graceful
// Close deletes the instance's entries, and an instance restarted under the same id deletes
// its previous process's when its presence starts: no zombies after a deploy or a crash.
//
// Changes commit in the database and are announced on the bus; the bus is only a hint to
// read again. Every change moves a revision per service, which each instance compares with
// its view's on every signal and every poll, so a lost signal delays a change (by the poll)
// but never hides it.
package presence

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/notify"
	"github.com/twicehq/twice/store"
)

// Defaults.
const (
	// DefaultPoll is [Config.Poll]'s default.
	DefaultPoll = time.Second
)

// Limits.
const (
	// MaxUser is the longest user id, in bytes.
	MaxUser = 256
	// MaxRoom is the longest room name, in bytes.
	MaxRoom = 256
)

// Channel is the bus channel changes are announced on. A message on it only makes the
// instances compare their view with the database.
const Channel = "twice.presence"

// Errors.
var (
	// ErrBadUser is returned for a user id that is empty, over [MaxUser] bytes, or not
	// valid UTF-8.
	ErrBadUser = errors.New("presence: bad user")
	// ErrBadRoom is returned for a room name that is empty, over [MaxRoom] bytes, or not
	// valid UTF-8.
	ErrBadRoom = errors.New("presence: bad room")
	// ErrGone is returned by a [Conn]'s Join once its entry is gone: closed, or deleted
	// while its instance was counted dead (a stall longer than DeadAfter). The client
	// should connect again.
	ErrGone = errors.New("presence: connection gone")
	// ErrClosed is returned once the presence is closed.
	ErrClosed = errors.New("presence: closed")
)

// CheckUser reports whether user is acceptable as a user id, with an error that says why
// not.
func CheckUser(user string) error {
	if user == "" || len(user) > MaxUser || !utf8.ValidString(user) || strings.IndexByte(user, 0) >= 0 {
		return fmt.Errorf("%w: %q must be 1 to %d bytes of UTF-8 without NUL", ErrBadUser, truncate(user, 80), MaxUser)
	}
	return nil
}

// CheckRoom reports whether room is acceptable as a room name, with an error that says why
// not.
func CheckRoom(room string) error {
	if room == "" || len(room) > MaxRoom || !utf8.ValidString(room) || strings.IndexByte(room, 0) >= 0 {
		return fmt.Errorf("%w: %q must be 1 to %d bytes of UTF-8 without NUL", ErrBadRoom, truncate(room, 80), MaxRoom)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Config configures [New]. What presence works on comes in its [block.Deps]: the store
// and service, the instance that owns the connections made through it, its membership
// (required to connect: entries count only while their instance is a live member; the
// deaths it finds) and the bus (without one, changes reach other instances at their next
// poll).
type Config struct {
	// Poll is how often each instance compares its view with the database, in case a bus
	// signal was lost, while the bus cannot vouch for its delivery (block.Deps.Backstop
	// applies while it can), and how often the leader deletes the entries of dead
	// instances. Defaults to [DefaultPoll] (1 second).
	Poll time.Duration
}

// Entry is one connection as the view holds it.
type Entry struct {
	// Conn is the connection's id.
	Conn string `json:"conn"`
	// User is who is connected.
	User string `json:"user"`
	// Instance is the id of the instance holding the connection.
	Instance string `json:"instance"`
	// Addr is that instance's advertised address (twice.Config.AdvertiseAddr), "" if it
	// advertises none.
	Addr string `json:"addr,omitempty"`
	// Rooms are the rooms the connection is in, sorted.
	Rooms []string `json:"rooms,omitempty"`
	// Since is when it connected, in database time.
	Since time.Time `json:"since"`
}

// view is the service's presence as one read of the database found it.
type view struct {
	rev    int64
	conns  map[string]*Entry         // by connection id
	byUser map[string][]*Entry       // sorted by Since, then Conn
	rooms  map[string]map[string]int // room ("" for the service) → user → connections
}

func emptyView() *view {
	return &view{conns: map[string]*Entry{}, byUser: map[string][]*Entry{}, rooms: map[string]map[string]int{}}
}

// Presence is one instance's presence: the connections it holds, and its view of every
// instance's. It is safe for concurrent use.
type Presence struct {
	d           block.Deps
	st          *store.Store
	cfg         Config
	q           queries
	log         *slog.Logger
	incarnation string // this process's, so that a restart under the same id finds its old entries

	mu       sync.RWMutex // protects v, loaded, watchers, nextW, conns
	v        *view
	loaded   bool
	watchers map[int]*watcher
	nextW    int
	conns    map[string]*Conn // the open connections this instance holds

	refreshMu sync.Mutex // one refresh at a time, so views are applied in order

	notes *notify.Queue // calls the watchers, in the order the view changed

	unsubscribe func()
	poller      *loop.Loop   // set by Start
	failing     loop.Failing // the poller's turns; only the poller touches it
	stopped     atomic.Bool
	used        atomic.Bool    // a connection was made: Close has entries to delete
	restoring   atomic.Bool    // a restore runs
	bg          sync.WaitGroup // the restores, which Close and Abandon wait for
	entering    sync.RWMutex   // held shared by each write that adds entries, exclusively by Close to refuse them
	startOnce   sync.Once
	closeOnce   sync.Once
}

// New returns the presence of d's service on d's instance. It starts nothing and runs no
// statement: [Presence.Start] clears what a previous process of this instance left, loads
// the view and keeps it current.
func New(d block.Deps, cfg Config) (*Presence, error) {
	d = d.WithDefaults()
	if err := d.Validate("presence", true); err != nil {
		return nil, err
	}
	if cfg.Poll < 0 {
		return nil, errors.New("presence: Config.Poll cannot be negative")
	}
	if cfg.Poll == 0 {
		cfg.Poll = DefaultPoll
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &Presence{d: d, st: d.Store, cfg: cfg, q: queriesFor(d.Store), log: d.Logger,
		incarnation: hex.EncodeToString(b), v: emptyView(), watchers: map[int]*watcher{},
		conns: map[string]*Conn{}, notes: notify.New(d.Logger, d.Panics, "presence: Watch callback")}, nil
}

// Start deletes the entries a previous process of this instance (the same instance id)
// left, loads the view and keeps it current: on every bus signal, every death the
// cluster finds, and every Config.Poll (every Deps.Backstop while the bus vouches for its
// delivery). If the database is away, Start logs it and the poll keeps trying; reads
// then try to load the view themselves. The node calls Start when the application first
// uses its presence; Close it when the instance stops.
func (p *Presence) Start(ctx context.Context) error {
	// Close runs startOnce first, so a Start after Close does nothing.
	p.startOnce.Do(func() {
		p.poller = loop.StartAfter(p.d.Poll(p.cfg.Poll), func(ctx context.Context) time.Duration {
			p.poll(ctx)
			return p.d.Poll(p.cfg.Poll)
		})
		if b := p.d.Bus; b != nil {
			// Subscribe before the first load, so no change falls between the two. A Lost
			// message kicks too: the next wait is the shorter poll.
			p.unsubscribe = b.Subscribe(Channel, func(bus.Message) { p.poller.Kick() })
		}
		if m := p.d.Members; m != nil {
			// The watcher of a crashed instance deletes its entries at once; every instance
			// looks again when a death is found (the look deletes what a dead instance
			// still owns, if no one did yet).
			m.OnDead(func(ctx context.Context, id string) { p.purgeDead(ctx) })
			m.OnDeath(func() {
				if !p.closed() {
					p.poller.Kick()
				}
			})
			// An instance that the others counted dead during a stall may have lost its
			// entries: the look puts back those of the connections it still holds.
			m.OnStall(func(from, to time.Time) {
				if !p.closed() {
					p.poller.Kick()
				}
			})
		}
		if err := p.write(ctx, func(tx store.Tx) (int64, error) {
			return tx.Exec(ctx, p.q.clearOld, p.d.Service, p.d.Instance, p.incarnation)
		}); err != nil {
			p.log.Warn("presence: cannot clear what this instance's previous process left; its entries stay until it does", "err", err)
		}
		if err := p.refresh(ctx); err != nil {
			p.log.Warn("presence: cannot load the view yet; reads try again", "err", err)
		}
	})
	if p.closed() {
		return ErrClosed
	}
	return nil
}

// poll refreshes the view, on every signal and every Config.Poll. A refresh under way
// when Close stops the poller runs to its end.
func (p *Presence) poll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loop.StatementTimeout)
	err := p.refresh(ctx)
	cancel()
	p.failing.Report(p.log, err, "presence: cannot read changes; serving the last known view", "presence: reading changes again")
}

// refresh reads the view again if the revision moved since the last read, or a dead
// instance still owns entries (which it deletes first).
func (p *Presence) refresh(ctx context.Context) error {
	p.refreshMu.Lock()
	defer p.refreshMu.Unlock()
	var rev int64
	var dead, alive bool
	if err := p.st.Reader().QueryRow(ctx, p.q.check, p.st.NowArg(), p.d.Service, p.d.Instance).Scan(&rev, &dead, &alive); err != nil {
		return fmt.Errorf("presence: check: %w", err)
	}
	if dead {
		p.purgeDead(ctx)
	}
	p.mu.RLock()
	cur := p.v
	same := p.loaded && cur.rev == rev && !dead
	p.mu.RUnlock()
	if same {
		p.restoreMissing(cur, alive)
		return nil
	}
	// The view is read after the revision: it holds at least every change up to rev, so a
	// change it misses moves the revision past rev and the next look reads again.
	nv, err := p.load(ctx, rev)
	if err != nil {
		return err
	}
	p.apply(nv)
	p.restoreMissing(nv, alive)
	return nil
}

// restoreMissing puts back, on a goroutine of its own, the entries of the connections
// this instance holds that the view nv lacks: deleted while the cluster counted this
// instance dead (a stall longer than DeadAfter, a liveness lock lost), once the database
// counts it alive again (alive, read with nv's revision). A connection made or closed while
// nv was read may look missing too; putting it back then writes nothing.
func (p *Presence) restoreMissing(nv *view, alive bool) {
	if p.closed() || !alive {
		return // counted dead now: what it put back would be deleted again
	}
	p.mu.RLock()
	var missing []*Conn
	for id, c := range p.conns {
		if nv.conns[id] == nil {
			missing = append(missing, c)
		}
	}
	p.mu.RUnlock()
	if len(missing) == 0 || !p.restoring.CompareAndSwap(false, true) {
		return
	}
	// Under entering, so that Close's halt, which waits for bg, never misses one.
	p.entering.RLock()
	defer p.entering.RUnlock()
	if p.closed() {
		p.restoring.Store(false)
		return
	}
	p.bg.Go(func() {
		defer p.restoring.Store(false)
		p.restore(missing)
	})
}

// load reads every live entry of the service.
func (p *Presence) load(ctx context.Context, rev int64) (*view, error) {
	rows, err := p.st.Reader().Query(ctx, p.q.load, p.st.NowArg(), p.d.Service)
	if err != nil {
		return nil, fmt.Errorf("presence: load: %w", err)
	}
	defer rows.Close()
	nv := emptyView()
	nv.rev = rev
	type row struct {
		conn, room string
		e          Entry
	}
	var rooms []row
	for rows.Next() {
		var r row
		var at store.Time
		if err := rows.Scan(&r.conn, &r.room, &r.e.User, &r.e.Instance, &r.e.Addr, &at); err != nil {
			return nil, fmt.Errorf("presence: load: %w", err)
		}
		if r.room == "" {
			e := r.e
			e.Conn, e.Since = r.conn, at.Time
			nv.conns[r.conn] = &e
		} else {
			rooms = append(rooms, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("presence: load: %w", err)
	}
	for _, r := range rooms {
		if e := nv.conns[r.conn]; e != nil { // sorted by room within a connection
			e.Rooms = append(e.Rooms, r.room)
		}
	}
	for _, e := range nv.conns {
		nv.byUser[e.User] = append(nv.byUser[e.User], e)
		for _, room := range append([]string{""}, e.Rooms...) {
			users := nv.rooms[room]
			if users == nil {
				users = map[string]int{}
				nv.rooms[room] = users
			}
			users[e.User]++
		}
	}
	for _, es := range nv.byUser {
		slices.SortFunc(es, func(a, b *Entry) int {
			if c := a.Since.Compare(b.Since); c != 0 {
				return c
			}
			return strings.Compare(a.Conn, b.Conn)
		})
	}
	return nv, nil
}

// apply installs nv and tells the watchers who joined and left which rooms since the view
// it replaces.
func (p *Presence) apply(nv *view) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.v
	p.v, p.loaded = nv, true
	if len(p.watchers) == 0 {
		return
	}
	for _, ev := range diff(old, nv) {
		for _, w := range p.watchers {
			if w.all || w.room == ev.Room {
				p.notes.Add(w.call(ev))
			}
		}
	}
}

// ensureLoaded loads the view if no read has succeeded yet (the database was away at
// Start, or Start was not called).
func (p *Presence) ensureLoaded(ctx context.Context) error {
	p.mu.RLock()
	loaded := p.loaded
	p.mu.RUnlock()
	if loaded {
		return nil
	}
	if p.closed() {
		return ErrClosed
	}
	return p.refresh(ctx)
}

// Where returns the connections of user on every live instance, oldest first, from this
// instance's view: which instances hold them, at which address, in which rooms. It is
// empty when the user is not connected.
func (p *Presence) Where(ctx context.Context, user string) ([]Entry, error) {
	if err := p.ensureLoaded(ctx); err != nil {
		return nil, err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	es := p.v.byUser[user]
	out := make([]Entry, len(es))
	for i, e := range es {
		out[i] = *e
		out[i].Rooms = slices.Clone(e.Rooms)
	}
	return out, nil
}

// Online returns the distinct users with at least one connection in room, sorted, from
// this instance's view: a user with three connections on two instances is one user.
// Room "" is the whole service: every connected user.
func (p *Presence) Online(ctx context.Context, room string) ([]string, error) {
	if err := p.ensureLoaded(ctx); err != nil {
		return nil, err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	users := p.v.rooms[room]
	out := make([]string, 0, len(users))
	for u := range users {
		out = append(out, u)
	}
	slices.Sort(out)
	return out, nil
}

// Counts are how many users and connections are online in a service, from one instance's
// view.
type Counts struct {
	// Users counts the distinct users with at least one connection.
	Users int `json:"users"`
	// Connections counts the connections, on every live instance.
	Connections int `json:"connections"`
	// Rooms counts the distinct users in each room that has any.
	Rooms map[string]int `json:"rooms"`
}

// Count counts the users and connections online, from this instance's view, as [Online]
// reads it: no statement once the view is loaded (call [Presence.Refresh] first on a
// presence that was not started, such as a dashboard's).
func (p *Presence) Count(ctx context.Context) (Counts, error) {
	if err := p.ensureLoaded(ctx); err != nil {
		return Counts{}, err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	c := Counts{Users: len(p.v.rooms[""]), Connections: len(p.v.conns), Rooms: map[string]int{}}
	for room, users := range p.v.rooms {
		if room != "" && len(users) > 0 {
			c.Rooms[room] = len(users)
		}
	}
	return c, nil
}

// IsOnline reports whether user has a connection in room ("" for anywhere in the service).
func (p *Presence) IsOnline(ctx context.Context, room, user string) (bool, error) {
	if err := p.ensureLoaded(ctx); err != nil {
		return false, err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.v.rooms[room][user] > 0, nil
}

// Refresh compares the view with the database now and reads it again if it changed, for
// a caller that cannot wait for the bus or the next poll (a test, or a read right after
// another instance's change).
func (p *Presence) Refresh(ctx context.Context) error {
	if p.closed() {
		return ErrClosed
	}
	return p.refresh(ctx)
}

// write runs fn in a transaction and, if it changed any row, moves the revision in the
// same transaction and announces the change once it commits. The announcement goes after
// the commit, not with it (PublishTx would NOTIFY inside every connect on PostgreSQL,
// which serialises commits): a signal lost with a process that dies right after its
// commit is made up for by the death, which every instance hears of and which moves the
// revision again.
func (p *Presence) write(ctx context.Context, fn func(tx store.Tx) (int64, error)) error {
	changed := false
	err := p.st.InTx(ctx, func(tx store.Tx) error {
		n, err := fn(tx)
		if err != nil || n == 0 {
			return err
		}
		changed = true
		_, err = tx.Exec(ctx, p.q.bump, p.d.Service)
		return err
	})
	if err != nil || !changed {
		return err
	}
	p.announce(ctx)
	return nil
}

// announce tells every instance, this one included, to look at the revision.
func (p *Presence) announce(ctx context.Context) {
	if p.poller != nil && !p.closed() {
		p.poller.Kick()
	}
	if b := p.d.Bus; b != nil {
		if err := b.Publish(context.WithoutCancel(ctx), Channel, nil); err != nil {
			p.log.Debug("presence: announcing a change failed; the others find it at their next poll", "err", err)
		}
	}
}

// purgeDead deletes the entries of the instances the cluster counts dead.
func (p *Presence) purgeDead(ctx context.Context) {
	if p.closed() {
		return
	}
	if err := p.write(ctx, func(tx store.Tx) (int64, error) {
		return tx.Exec(ctx, p.q.purgeDead, p.st.NowArg(), p.d.Service)
	}); err != nil && ctx.Err() == nil {
		p.log.Warn("presence: deleting dead instances' entries failed; they are not read, and the next look tries again", "err", err)
	}
}

// Lead runs on the leader: it deletes the entries of every instance that is not alive,
// those whose member row is gone included, every Config.Poll (every Deps.Backstop while
// the bus vouches). Deaths are handled as they are found; this is the backstop.
func (p *Presence) Lead(ctx context.Context) {
	loop.Every(ctx, p.d.Poll(p.cfg.Poll), func(ctx context.Context) {
		if err := p.write(ctx, func(tx store.Tx) (int64, error) {
			return tx.Exec(ctx, p.q.purgeAll, p.st.NowArg(), p.d.Service)
		}); err != nil && ctx.Err() == nil {
			p.log.Warn("presence: deleting dead instances' entries failed", "err", err)
		}
	})
}

// Close deletes every entry of this instance, so that its users leave at once on every
// instance (a deploy leaves no zombies), stops keeping the view current and stops calling
// watchers. Reads keep returning the last view. It waits for the watcher being called, if
// any, until ctx ends.
func (p *Presence) Close(ctx context.Context) error {
	var err error
	p.closeOnce.Do(func() {
		ran := true
		p.startOnce.Do(func() { ran = false })
		// No entry is added from here on (every write that adds one checks under entering),
		// so the delete below leaves none behind.
		p.halt()
		// An unused presence (never started, no connection) has nothing to delete and runs
		// no statement.
		var werr error
		if ran || p.used.Load() {
			werr = p.write(ctx, func(tx store.Tx) (int64, error) {
				return tx.Exec(ctx, p.q.clearMine, p.d.Service, p.d.Instance)
			})
		}
		if werr != nil {
			werr = fmt.Errorf("presence: delete this instance's entries (they vanish when it is counted dead): %w", werr)
		}
		p.stop(ran)
		err = errors.Join(werr, p.notes.Close(ctx))
	})
	return err
}

// Abandon stops as a crash would, for tests that crash an instance (see block.Block): the
// entries stay, for the others to delete once they count this instance dead.
func (p *Presence) Abandon(ctx context.Context) {
	p.closeOnce.Do(func() {
		ran := true
		p.startOnce.Do(func() { ran = false })
		p.halt()
		p.stop(ran)
		_ = p.notes.Close(ctx)
	})
}

// halt refuses every write that adds entries from now on, and waits for those under way.
func (p *Presence) halt() {
	p.entering.Lock()
	p.stopped.Store(true)
	p.entering.Unlock()
	p.bg.Wait()
}

// stop ends the background work.
func (p *Presence) stop(ran bool) {
	if p.unsubscribe != nil {
		p.unsubscribe()
	}
	if ran {
		p.poller.Stop()
	}
}

// add runs write fn, which adds entries, unless the presence is closing.
func (p *Presence) add(ctx context.Context, fn func(tx store.Tx) (int64, error)) error {
	p.entering.RLock()
	defer p.entering.RUnlock()
	if p.closed() {
		return ErrClosed
	}
	return p.write(ctx, fn)
}

func (p *Presence) closed() bool { return p.stopped.Load() }
