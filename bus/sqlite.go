package bus

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// pollBatch is how many signal rows one poll reads at most.
const pollBatch = 500

// How long the poller watches for a PublishTx of this process to commit, and how often: the
// transaction is the caller's, so the bus cannot know when it ends. The poller looks every
// tenth of the youngest one's age, every millisecond at first and every 100 ms at most (as
// events' watcher does), and announces it once it reads the row. One that commits later
// (or rolls back) is left to the others' fallback poll.
const (
	txWatch        = 10 * time.Second
	txWatchFastest = time.Millisecond
	txWatchSlowest = 100 * time.Millisecond
	// txWatchMax bounds the watch list, so a flood of rolled-back transactions cannot
	// grow it without end; a PublishTx beyond it is left to the others' fallback poll.
	txWatchMax = 10000
)

// sqliteBus carries signals as rows. A dedicated read connection asks SQLite's
// data_version (it changes when another connection has committed), so a look costs a
// pragma, not a query. Instances wake each other through a [waker] after their signals
// commit, and otherwise look only every Poll; this process's own publishes wake the
// poller directly.
//
// PublishTx cannot announce its signal: it is in the caller's transaction, which may
// commit at any time or never, and a transaction twice did not open offers no commit hook
// (modernc.org/sqlite's is per connection and runs before the commit is visible). So the
// publisher's poller watches for the row instead, looking every millisecond (a pragma, on
// this process alone) while the transaction is young, and announces it to the others as
// soon as it reads it: they learn of it about a millisecond after the commit, sooner than
// when every instance polled every 5 ms, and only the publisher pays for the looks.
type sqliteBus struct {
	s     *store.Store
	q     sqliteStatements
	cfg   Config
	subs  Subscribers
	batch *batcher
	conn  *sql.Conn
	// versionStmt and readStmt are prepared once on conn: a poll compiles nothing.
	versionStmt, readStmt *sql.Stmt
	// waker wakes the others after a commit; nil where it could not be set up (not a
	// Unix system, a directory that cannot be written), and the poller then looks every
	// FastPoll, as every instance then must.
	waker waker

	// poller reads the signals when woken, when this process publishes and every Poll.
	// Its Stop cancels the statement under way, so one waiting for the writer (held by a
	// transaction that never ends) cannot keep Close waiting forever.
	poller    *loop.Loop
	published atomic.Bool // this process published since the poller last looked

	mu      sync.Mutex          // protects pending
	pending map[int64]time.Time // the ids of PublishTx rows not yet read, and when they were inserted

	once sync.Once
}

// waker wakes the pollers of the other instances of the database on this host.
type waker interface {
	// start calls kick whenever another instance announces.
	start(kick func())
	// announce tells every other instance that signals have committed.
	announce()
	close()
}

// sqliteStatements are the signal table's statements.
type sqliteStatements struct {
	last, read, insert, prune string
}

func newSQLite(ctx context.Context, s *store.Store, cfg Config) (*sqliteBus, error) {
	conn, err := s.ReadDB().Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("bus: %s: %w", s, err)
	}
	q := sqliteStatements{
		last:   s.SQL("SELECT coalesce(max(id), 0) FROM twice_bus WHERE service = $1"),
		read:   s.SQL("SELECT id, channel, payload, sender FROM twice_bus WHERE service = $1 AND id > $2 ORDER BY id LIMIT $3"),
		insert: s.SQL("INSERT INTO twice_bus (service, channel, payload, sender) VALUES ($1, $2, $3, $4) RETURNING id"),
		// Signals are kept by the database's clock, never a test clock's.
		prune: s.SQL("DELETE FROM twice_bus WHERE at < {clock} - {ms $1}"),
	}
	b := &sqliteBus{s: s, q: q, cfg: cfg, conn: conn, pending: map[int64]time.Time{}}
	b.subs.Logger, b.subs.Panics = cfg.Logger, cfg.Panics
	var last int64
	if err := conn.QueryRowContext(ctx, q.last, cfg.Service).Scan(&last); err != nil {
		conn.Close()
		return nil, fmt.Errorf("bus: %s: %w", s, err)
	}
	if b.versionStmt, err = conn.PrepareContext(ctx, "PRAGMA data_version"); err == nil {
		b.readStmt, err = conn.PrepareContext(ctx, q.read)
	}
	if err != nil {
		b.closeConn()
		return nil, fmt.Errorf("bus: %s: %w", s, err)
	}
	w, err := newWaker(s.DSN().Path, cfg.Service, cfg.Logger)
	if err != nil {
		cfg.Logger.Warn("bus: the instances on this host cannot wake each other; every one polls the signal table often instead",
			"poll", cfg.FastPoll, "err", err)
	}
	b.waker = w
	b.poller = loop.Start(b.poll(last))
	if w != nil {
		w.start(b.poller.Kick)
	}
	b.batch = newBatcher(cfg.Flush, b.insert)
	return b, nil
}

// insert writes a batch of signals in one statement.
func (b *sqliteBus) insert(ctx context.Context, msgs []wire) error {
	var sb strings.Builder
	sb.WriteString("INSERT INTO twice_bus (service, channel, payload, sender) VALUES ")
	args := make([]any, 0, 1+3*len(msgs))
	args = append(args, b.cfg.Service)
	for i, m := range msgs {
		if i > 0 {
			sb.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&sb, "($1, $%d, $%d, $%d)", n+1, n+2, n+3)
		args = append(args, m.C, payloadArg(m.P), m.F)
	}
	if _, err := b.s.Exec(ctx, b.s.SQL(sb.String()), args...); err != nil {
		return fmt.Errorf("bus: publish: %w", err)
	}
	b.wake()
	if b.waker != nil {
		b.waker.announce()
	}
	return nil
}

// payloadArg keeps an empty payload a zero-length blob rather than NULL.
func payloadArg(p []byte) []byte {
	if p == nil {
		return []byte{}
	}
	return p
}

// wake makes the poller read at once, after this process published.
func (b *sqliteBus) wake() {
	b.published.Store(true)
	b.poller.Kick()
}

// poll returns the poller's round, reading the signals after last.
func (b *sqliteBus) poll(last int64) loop.Step {
	var version int64 = -1
	lastOK := time.Now()
	lastRead := time.Time{}
	lastPrune := time.Now()
	return func(ctx context.Context) time.Duration {
		published := b.published.Swap(false)
		var v int64
		if err := b.versionStmt.QueryRowContext(ctx).Scan(&v); err != nil {
			return b.wait()
		}
		// Read when another process committed, when this one published, and every sixth
		// of the retention regardless (as often as it prunes), in case a commit slipped
		// between two pragma reads.
		if v == version && !published && time.Since(lastRead) < b.cfg.Retention/6 {
			return b.wait()
		}
		version = v
		if gap := time.Since(lastOK); gap > b.cfg.Retention/2 {
			b.cfg.Logger.Warn("bus: poller fell behind; signals may have been lost", "behind", gap)
			b.subs.Lost()
		}
		for {
			n, err := b.read(ctx, &last)
			if err != nil {
				if ctx.Err() == nil { // a read that Close cancelled is no failure
					b.cfg.Logger.Warn("bus: poll failed", "err", err)
				}
				break
			}
			lastOK, lastRead = time.Now(), time.Now()
			if n < pollBatch {
				break
			}
		}
		if time.Since(lastPrune) > b.cfg.Retention/6 {
			lastPrune = time.Now()
			b.prune(ctx)
		}
		return b.wait()
	}
}

// wait is how long the poller sleeps unless it is woken: Poll, FastPoll while nobody wakes
// it, and a tenth of its age while a PublishTx of this process is watched.
func (b *sqliteBus) wait() time.Duration {
	if b.waker == nil {
		return b.cfg.FastPoll
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	youngest := time.Duration(math.MaxInt64)
	for id, at := range b.pending {
		age := time.Since(at)
		if age > txWatch {
			delete(b.pending, id)
			continue
		}
		youngest = min(youngest, age)
	}
	if len(b.pending) == 0 {
		return b.cfg.Poll
	}
	return min(max(youngest/10, txWatchFastest), txWatchSlowest, b.cfg.Poll)
}

// watch has the poller look for the PublishTx row id until it reads it.
func (b *sqliteBus) watch(id int64) {
	b.mu.Lock()
	if len(b.pending) < txWatchMax {
		b.pending[id] = time.Now()
	}
	b.mu.Unlock()
	b.poller.Kick() // to look at the pace of a young transaction from now on
}

// committed reports whether ids hold a watched PublishTx row, and stops watching those.
func (b *sqliteBus) committed(ids []int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	found := false
	for _, id := range ids {
		if _, ok := b.pending[id]; ok {
			delete(b.pending, id)
			found = true
		}
	}
	return found
}

func (b *sqliteBus) read(ctx context.Context, last *int64) (int, error) {
	rows, err := b.readStmt.QueryContext(ctx, b.cfg.Service, *last, pollBatch)
	if err != nil {
		return 0, err
	}
	var msgs []Message
	var ids []int64 // rows read, delivered or not
	for rows.Next() {
		var m Message
		if err := rows.Scan(last, &m.Channel, &m.Payload, &m.From); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, *last)
		var ok bool
		if m.Payload, ok = b.cfg.Signer.Open(m.Channel, m.From, m.Payload); ok {
			msgs = append(msgs, m)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	// Wake the others before this process's handlers run, which may take a while.
	if b.waker != nil && b.committed(ids) {
		b.waker.announce()
	}
	// Deliver after the rows are closed, so a handler that reads the database does not
	// wait on this connection.
	for _, m := range msgs {
		b.subs.Deliver(m)
	}
	return len(ids), nil
}

func (b *sqliteBus) prune(ctx context.Context) {
	if _, err := b.s.Exec(ctx, b.q.prune, b.cfg.Retention.Milliseconds()); err != nil {
		b.cfg.Logger.Warn("bus: pruning old signals failed", "err", err)
	}
}

func (b *sqliteBus) Publish(ctx context.Context, channel string, payload []byte) error {
	if err := Validate(channel, payload); err != nil {
		return err
	}
	return b.batch.publish(ctx, wire{C: channel, P: b.cfg.Signer.Sign(channel, b.cfg.Instance, payload), F: b.cfg.Instance})
}

// PublishTx inserts the signal in tx; pollers see it once tx commits. This process's own
// poller watches for the row (see [sqliteBus]) and, once it reads it, wakes the others.
func (b *sqliteBus) PublishTx(ctx context.Context, tx any, channel string, payload []byte) error {
	if err := Validate(channel, payload); err != nil {
		return err
	}
	q, err := b.s.Wrap(tx)
	if err != nil {
		return err
	}
	var id int64
	if err := q.QueryRow(ctx, b.q.insert, b.cfg.Service, channel, payloadArg(b.cfg.Signer.Sign(channel, b.cfg.Instance, payload)), b.cfg.Instance).Scan(&id); err != nil {
		return fmt.Errorf("bus: publish in transaction: %w", err)
	}
	if b.waker != nil {
		b.watch(id)
	}
	return nil
}

// Delivering implements [Vouching]: signals are rows, read in order by every poller, and a
// poller that fell behind their retention reports Lost.
func (b *sqliteBus) Delivering() bool { return true }

func (b *sqliteBus) Subscribe(channel string, h Handler) func() { return b.subs.Add(channel, h) }

func (b *sqliteBus) Close(context.Context) error {
	b.once.Do(func() {
		b.batch.close()
		b.poller.Stop()
		if b.waker != nil {
			b.waker.close()
		}
		b.closeConn()
	})
	return nil
}

// closeConn closes the statements prepared on the read connection, then hands it back.
func (b *sqliteBus) closeConn() {
	for _, st := range []*sql.Stmt{b.versionStmt, b.readStmt} {
		if st != nil {
			st.Close()
		}
	}
	b.conn.Close()
}
