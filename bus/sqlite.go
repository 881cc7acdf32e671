package bus

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// pollBatch is how many signal rows one poll reads at most.
const pollBatch = 500

// sqliteBus carries signals as rows. A dedicated read connection asks SQLite's
// data_version (it changes when another connection has committed), so an idle poll costs a
// pragma, not a query; this process's own publishes wake the poller directly.
type sqliteBus struct {
	s     *store.Store
	q     sqliteStatements
	cfg   Config
	subs  Subscribers
	batch *batcher
	conn  *sql.Conn

	// poller reads the signals every Poll and when this process publishes. Its Stop
	// cancels the statement under way, so one waiting for the writer (held by a
	// transaction that never ends) cannot keep Close waiting forever.
	poller    *loop.Loop
	published atomic.Bool // this process published since the poller last looked
	once      sync.Once
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
		insert: s.SQL("INSERT INTO twice_bus (service, channel, payload, sender) VALUES ($1, $2, $3, $4)"),
		// Signals are kept by the database's clock, never a test clock's.
		prune: s.SQL("DELETE FROM twice_bus WHERE at < {clock} - {ms $1}"),
	}
	b := &sqliteBus{s: s, q: q, cfg: cfg, conn: conn}
	b.subs.Logger, b.subs.Panics = cfg.Logger, cfg.Panics
	var last int64
	if err := conn.QueryRowContext(ctx, q.last, cfg.Service).Scan(&last); err != nil {
		conn.Close()
		return nil, fmt.Errorf("bus: %s: %w", s, err)
	}
	b.poller = loop.StartEvery(cfg.Poll, b.poll(last))
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
func (b *sqliteBus) poll(last int64) func(ctx context.Context) {
	var version int64 = -1
	lastOK := time.Now()
	lastRead := time.Time{}
	lastPrune := time.Now()
	return func(ctx context.Context) {
		published := b.published.Swap(false)
		var v int64
		if err := b.conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
			return
		}
		// Read when another process committed, when this one published, and once a
		// second regardless, in case a commit slipped between two pragma reads.
		if v == version && !published && time.Since(lastRead) < time.Second {
			return
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
	}
}

func (b *sqliteBus) read(ctx context.Context, last *int64) (int, error) {
	rows, err := b.conn.QueryContext(ctx, b.q.read, b.cfg.Service, *last, pollBatch)
	if err != nil {
		return 0, err
	}
	var msgs []Message
	n := 0 // rows read, delivered or not
	for rows.Next() {
		var m Message
		if err := rows.Scan(last, &m.Channel, &m.Payload, &m.From); err != nil {
			rows.Close()
			return 0, err
		}
		n++
		var ok bool
		if m.Payload, ok = b.cfg.Signer.Open(m.Channel, m.From, m.Payload); ok {
			msgs = append(msgs, m)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	// Deliver after the rows are closed, so a handler that reads the database does not
	// wait on this connection.
	for _, m := range msgs {
		b.subs.Deliver(m)
	}
	return n, nil
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
// poller finds it on its next pragma read, within one poll interval.
func (b *sqliteBus) PublishTx(ctx context.Context, tx any, channel string, payload []byte) error {
	if err := Validate(channel, payload); err != nil {
		return err
	}
	q, err := b.s.Wrap(tx)
	if err != nil {
		return err
	}
	if _, err := q.Exec(ctx, b.q.insert, b.cfg.Service, channel, payloadArg(b.cfg.Signer.Sign(channel, b.cfg.Instance, payload)), b.cfg.Instance); err != nil {
		return fmt.Errorf("bus: publish in transaction: %w", err)
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
		b.conn.Close()
	})
	return nil
}
