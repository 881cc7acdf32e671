package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// Dialect names the SQL a store speaks.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// ErrNoRows is returned by [Row.Scan] when a query returned no row, on either driver.
var ErrNoRows = sql.ErrNoRows

// Querier runs SQL. The store, its transactions and a caller's own transaction (through
// [Wrap]) all satisfy it, so a building block's query runs the same way in each. Placeholders
// are $1, $2, … in both dialects.
type Querier interface {
	// Exec runs a statement and returns the number of rows it affected.
	Exec(ctx context.Context, sql string, args ...any) (int64, error)
	Query(ctx context.Context, sql string, args ...any) (Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) Row
	// Dialect is the SQL dialect the querier speaks.
	Dialect() Dialect
}

// Rows is the result of [Querier.Query]. Close must be called unless Next returned false.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// Row is the result of [Querier.QueryRow]; Scan returns [ErrNoRows] when there was none.
type Row interface {
	Scan(dest ...any) error
}

// Tx is a transaction opened by [Store.Begin].
type Tx interface {
	Querier
	Commit(ctx context.Context) error
	Rollback(ctx context.Context) error
}

// Clock stubs database time in tests. In production it is nil and every lease, heartbeat and
// schedule is computed from the database's own clock, so no instance's clock matters.
type Clock interface {
	Now() time.Time
}

// Options tune [Open]. A nil *Options is valid.
type Options struct {
	// Schema is the PostgreSQL schema twice's tables live in; it is created on first use.
	// Defaults to the DSN's search_path, usually "public". Ignored for SQLite.
	Schema string
	// Clock replaces database time, for tests only. Defaults to nil: the database's clock.
	Clock Clock
	// Logger receives connection-level messages. Defaults to slog.Default().
	Logger *slog.Logger
	// ConnectTimeout bounds the first connection. Defaults to 10 seconds.
	ConnectTimeout time.Duration
	// Observer sees every statement run through the store, its transactions and the
	// callers' transactions it joins ([Store.Wrap]). Defaults to nil: none.
	Observer Observer
}

// Observer sees the statements a store runs: for tests that check what a building block
// costs the database, and for metrics. Statement is called before each statement runs,
// from any goroutine; it must be quick.
type Observer interface {
	Statement(query string)
}

// Store is the one place that speaks to the database. It is safe for concurrent use.
type Store struct {
	dsn    DSN
	schema string
	clock  Clock
	obs    Observer
	log    *slog.Logger

	pool    *pgxpool.Pool // PostgreSQL
	control *pgxpool.Pool // PostgreSQL: a few connections kept for the cluster's own statements

	// SQLite keeps one writer connection per process: writes queue in Go instead of sleeping
	// in SQLite's busy handler, and every transaction begins IMMEDIATE, so two processes
	// can never deadlock upgrading a read to a write. Reads use their own pool and never
	// wait for a writer (WAL).
	writer  *sql.DB
	reader  *sql.DB
	ctlConn *sql.DB // SQLite: a second writer connection for the cluster's own statements
	// SQLite: each pool's prepared statements (see stmtCache).
	writerStmts, readerStmts, ctlStmts *stmtCache

	sqlOnce   sync.Once
	closeOnce sync.Once
	sqlDB     *sql.DB // database/sql view of the PostgreSQL pool, made on first use
}

// Open connects to the database named by dsn and checks it answers. Errors name the DSN with
// its password masked.
func Open(ctx context.Context, dsn string, opts *Options) (*Store, error) {
	d, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &Options{}
	}
	s := &Store{dsn: d, clock: opts.Clock, log: opts.Logger, obs: opts.Observer}
	if s.log == nil {
		s.log = slog.Default()
	}
	timeout := opts.ConnectTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch d.Dialect {
	case SQLite:
		err = s.openSQLite(ctx)
	case Postgres:
		err = s.openPostgres(ctx, opts.Schema)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// DSN returns the parsed DSN the store was opened with.
func (s *Store) DSN() DSN { return s.dsn }

// String returns the DSN with its password masked.
func (s *Store) String() string { return s.dsn.String() }

// Dialect is the SQL dialect of the database.
func (s *Store) Dialect() Dialect { return s.dsn.Dialect }

// Schema is the PostgreSQL schema the store works in; empty for SQLite.
func (s *Store) Schema() string { return s.schema }

// Pool is the pgx pool, or nil on SQLite. Use it to run the business transactions that
// twice's Tx operations join.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// DB is a database/sql handle on the same database. On SQLite it is the writer, whose
// transactions begin IMMEDIATE; on PostgreSQL it shares the pgx pool.
func (s *Store) DB() *sql.DB {
	if s.dsn.Dialect == SQLite {
		return s.writer
	}
	s.sqlOnce.Do(func() { s.sqlDB = stdlib.OpenDBFromPool(s.pool) })
	return s.sqlDB
}

// Exec runs a statement on the writer.
func (s *Store) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	return s.q().Exec(ctx, query, args...)
}

// Query runs a query on the writer, so it may modify rows (UPDATE … RETURNING).
func (s *Store) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	return s.q().Query(ctx, query, args...)
}

// QueryRow runs a query on the writer, so it may modify rows (UPDATE … RETURNING).
func (s *Store) QueryRow(ctx context.Context, query string, args ...any) Row {
	return s.q().QueryRow(ctx, query, args...)
}

// ReadDB is SQLite's read pool (nil on PostgreSQL), for code that needs a connection of its
// own, such as the bus's PRAGMA data_version poller.
func (s *Store) ReadDB() *sql.DB { return s.reader }

// Control returns a querier reserved for the cluster's own liveness statements: heartbeats,
// lease acquisitions, renewals and releases. On PostgreSQL it is a pool of its own, so
// application traffic that queues for every connection of the main pool cannot delay a
// heartbeat until a live instance looks dead (and its running jobs are taken over). On
// SQLite it is a second writer connection: it meets the application's writes only at
// SQLite's own lock (each holds it for a commit), not at the back of this process's queue
// for the writer connection. Its PostgreSQL connections are pinged before use only after
// a minute idle (pgx's default is a second, a ping per heartbeat): a caller retries a
// statement that fails because the server ended the session.
func (s *Store) Control() Querier {
	if s.dsn.Dialect == SQLite {
		return sqlQuerier{db: s.ctlConn, dialect: SQLite, stmts: s.ctlStmts, obs: s.obs}
	}
	return pgxQuerier{q: s.control, obs: s.obs, generic: true}
}

// Reader returns a querier for read-only statements. On SQLite it does not queue behind this
// process's writes; on PostgreSQL it is the pool.
func (s *Store) Reader() Querier {
	if s.dsn.Dialect == SQLite {
		return sqlQuerier{db: s.reader, dialect: SQLite, stmts: s.readerStmts, obs: s.obs}
	}
	return pgxQuerier{q: s.pool, obs: s.obs, generic: true}
}

func (s *Store) q() Querier {
	if s.dsn.Dialect == SQLite {
		return sqlQuerier{db: s.writer, dialect: SQLite, stmts: s.writerStmts, obs: s.obs}
	}
	return pgxQuerier{q: s.pool, obs: s.obs, generic: true}
}

// Begin opens a transaction. On SQLite it holds the database's write lock until it ends.
func (s *Store) Begin(ctx context.Context) (Tx, error) {
	if s.dsn.Dialect == SQLite {
		tx, err := s.writer.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		return &sqlTx{sqlQuerier: sqlQuerier{db: tx, dialect: SQLite, stmts: s.writerStmts, tx: tx, obs: s.obs}, tx: tx}, nil
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &pgxTx{pgxQuerier: pgxQuerier{q: tx, obs: s.obs}, tx: tx}, nil
}

// BeginControl opens a transaction on the control connections (see [Store.Control]), for
// the cluster's own statements that commit together: a heartbeat and the renewal of the
// instance's leases. On SQLite it takes the write lock at once.
func (s *Store) BeginControl(ctx context.Context) (Tx, error) {
	if s.dsn.Dialect == SQLite {
		tx, err := s.ctlConn.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		return &sqlTx{sqlQuerier: sqlQuerier{db: tx, dialect: SQLite, stmts: s.ctlStmts, tx: tx, obs: s.obs}, tx: tx}, nil
	}
	tx, err := s.control.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &pgxTx{pgxQuerier: pgxQuerier{q: tx, obs: s.obs}, tx: tx}, nil
}

// InTx runs fn in a transaction, committing if fn returns nil and rolling back otherwise. If
// fn panics, the transaction is rolled back and the panic goes on to the caller: a
// transaction left open would hold a PostgreSQL connection (and Close) forever, and on
// SQLite the write lock of every process on the file.
func (s *Store) InTx(ctx context.Context, fn func(tx Tx) error) (err error) {
	tx, err := s.Begin(ctx)
	if err != nil {
		return err
	}
	returned := false
	defer func() {
		if err != nil || !returned {
			// The rollback's own error is less useful than fn's and is dropped on purpose.
			// Without cancel, so an ended ctx cannot stop the rollback from being sent.
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	err = fn(tx)
	returned = true
	if err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Ping checks the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.Reader().QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("store: %s: %w", s, err)
	}
	return nil
}

// Now returns database time (or the stub clock's).
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	if s.clock != nil {
		return s.clock.Now(), nil
	}
	var t Time
	var err error
	if s.dsn.Dialect == SQLite {
		err = s.reader.QueryRowContext(ctx, "SELECT "+SQLiteNow).Scan(&t)
	} else {
		err = s.pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&t)
	}
	return t.Time, err
}

// NowArg is the value to bind to a query's "now" parameter: nil, so the query uses database
// time, unless a test clock is installed. Statements spell that parameter {now} (see
// [Store.SQL]).
func (s *Store) NowArg() any {
	if s.clock == nil {
		return nil
	}
	return s.TimeArg(s.clock.Now())
}

// TimeArg converts t to the value a timestamp column takes in this dialect: time.Time on
// PostgreSQL, integer microseconds since the epoch on SQLite.
func (s *Store) TimeArg(t time.Time) any { return s.dsn.Dialect.TimeArg(t) }

// TimeArg converts t to the value a timestamp column takes in this dialect.
func (d Dialect) TimeArg(t time.Time) any {
	if d == SQLite {
		return t.UnixMicro()
	}
	return t
}

// SQLiteNow is SQLite's clock in microseconds since the epoch, the unit of every SQLite
// timestamp column. SQLite keeps milliseconds; that is finer than any lease or heartbeat
// needs.
const SQLiteNow = "CAST(unixepoch('subsec')*1000000 AS INTEGER)"

// Shutdown is [Store.Close] bounded by ctx: Close waits for every connection in use to come
// back, forever if a transaction is never ended. When ctx ends first, Shutdown returns an
// error and the store finishes closing in the background as those connections return.
func (s *Store) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("store: %s: connections still in use at close (a transaction that never ended?): %w", s, context.Cause(ctx))
	}
}

// Close closes every connection. It waits for connections in use to come back; see
// [Store.Shutdown] for a bounded wait. It is idempotent: a later call waits for the first
// to finish.
func (s *Store) Close() { s.closeOnce.Do(s.close) }

func (s *Store) close() {
	if s.pool != nil {
		if s.sqlDB != nil {
			s.sqlDB.Close()
		}
		s.pool.Close()
	}
	if s.control != nil {
		s.control.Close()
	}
	for _, c := range []*stmtCache{s.writerStmts, s.readerStmts, s.ctlStmts} {
		c.close()
	}
	if s.writer != nil {
		s.writer.Close()
	}
	if s.reader != nil {
		s.reader.Close()
	}
	if s.ctlConn != nil {
		s.ctlConn.Close()
	}
	for _, c := range []*stmtCache{s.writerStmts, s.readerStmts, s.ctlStmts} {
		c.wait()
	}
}

// IsUniqueViolation reports whether err is a unique-constraint violation on either driver.
func IsUniqueViolation(err error) bool {
	var code interface{ SQLState() string }
	if errors.As(err, &code) {
		return code.SQLState() == "23505"
	}
	var sqlite interface{ Code() int }
	if errors.As(err, &sqlite) {
		// SQLITE_CONSTRAINT_UNIQUE and SQLITE_CONSTRAINT_PRIMARYKEY.
		return sqlite.Code() == 2067 || sqlite.Code() == 1555
	}
	return false
}
