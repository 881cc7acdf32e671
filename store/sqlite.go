package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/twicehq/twice/internal/loop"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// sqliteReaders is the size of the read pool; reads in WAL mode never block each other.
var sqliteReaders = max(4, runtime.GOMAXPROCS(0))

// checkDir makes sure the directory of the SQLite file exists: SQLite creates the file but
// not its directory, and its own error for that ("unable to open database file") does not
// say which directory is missing. A relative path is shown resolved, since instances
// started from different directories would each get a file of their own.
func checkDir(d DSN) error {
	dir := filepath.Dir(d.Path)
	shown := dir
	if abs, err := filepath.Abs(dir); err == nil && abs != dir {
		shown = fmt.Sprintf("%s (%s, from the working directory)", dir, abs)
	}
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("store: %s: the directory %s does not exist; create it first: %w", d, shown, fs.ErrNotExist)
	case err != nil:
		return fmt.Errorf("store: %s: the directory %s: %w", d, shown, err)
	case !st.IsDir():
		return fmt.Errorf("store: %s: %s is not a directory", d, shown)
	}
	return nil
}

func (s *Store) openSQLite(ctx context.Context) error {
	d := s.dsn
	if err := checkDir(d); err != nil {
		return err
	}
	pragmas := url.Values{}
	for _, p := range []string{
		fmt.Sprintf("busy_timeout(%d)", d.BusyTimeout.Milliseconds()),
		"journal_mode(WAL)",
		"synchronous(" + d.Synchronous + ")",
		"foreign_keys(1)",
	} {
		pragmas.Add("_pragma", p)
	}
	base := "file:" + d.Path + "?" + pragmas.Encode()

	var err error
	s.writer, err = sql.Open("sqlite", base+"&_txlock=immediate")
	if err != nil {
		return fmt.Errorf("store: %s: %w", d, err)
	}
	s.writer.SetMaxOpenConns(1)
	s.writer.SetMaxIdleConns(1)
	s.writer.SetConnMaxIdleTime(0)
	s.writer.SetConnMaxLifetime(0)

	s.ctlConn, err = sql.Open("sqlite", base+"&_txlock=immediate")
	if err != nil {
		s.writer.Close()
		return fmt.Errorf("store: %s: %w", d, err)
	}
	s.ctlConn.SetMaxOpenConns(1)
	s.ctlConn.SetMaxIdleConns(1)

	s.reader, err = sql.Open("sqlite", base+"&_pragma=query_only(1)")
	if err != nil {
		s.writer.Close()
		s.ctlConn.Close()
		return fmt.Errorf("store: %s: %w", d, err)
	}
	s.reader.SetMaxOpenConns(sqliteReaders)
	s.reader.SetMaxIdleConns(sqliteReaders)

	s.writerStmts, s.readerStmts, s.ctlStmts = newStmtCache(s.writer), newStmtCache(s.reader), newStmtCache(s.ctlConn)

	// The first statement on the writer creates the file and switches it to WAL, which
	// readers need before they open.
	if err := firstStatement(ctx, s.writer, d.BusyTimeout); err != nil {
		s.Close()
		return fmt.Errorf("store: cannot open %s: %w", d, err)
	}
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return err
	}
	return nil
}

// firstStatement runs the writer's first statement, which opens its connection and applies
// the pragmas. Switching a new file to WAL takes the file's exclusive lock, and an instance
// that meets another doing so is told SQLITE_BUSY at once: SQLite does not call the busy
// handler there. So instances started together on a new file try again, within the busy
// timeout they would have waited for any other lock.
func firstStatement(ctx context.Context, db *sql.DB, busyTimeout time.Duration) error {
	deadline := time.Now().Add(busyTimeout)
	backoff := loop.Backoff{Min: time.Millisecond, Max: 50 * time.Millisecond}
	for {
		_, err := db.ExecContext(ctx, "PRAGMA user_version")
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		if !loop.Sleep(ctx, backoff.Next()) {
			return err
		}
	}
}

// isBusy reports whether err is SQLite's SQLITE_BUSY, or one of its extended codes.
func isBusy(err error) bool {
	var e interface{ Code() int }
	return errors.As(err, &e) && e.Code()&0xff == 5 // SQLITE_BUSY
}

// sqlQuerier adapts database/sql (SQLite, or a caller's *sql.Tx on either database).
type sqlQuerier struct {
	db interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	}
	dialect Dialect
	stmts   *stmtCache // nil: every statement is compiled per call
	tx      *sql.Tx    // set when db is a transaction on stmts' pool
	obs     Observer   // nil: none
}

// stmt returns the prepared form of query if it is ready, bound to the transaction if q is
// one, or nil.
func (q sqlQuerier) stmt(ctx context.Context, query string) *sql.Stmt {
	st := q.stmts.get(query)
	if st == nil || q.tx == nil {
		return st
	}
	return q.tx.StmtContext(ctx, st)
}

func (q sqlQuerier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	if q.obs != nil {
		q.obs.Statement(query)
	}
	var res sql.Result
	var err error
	if st := q.stmt(ctx, query); st != nil {
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = q.db.ExecContext(ctx, query, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqlQuerier) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	if q.obs != nil {
		q.obs.Statement(query)
	}
	var rows *sql.Rows
	var err error
	if st := q.stmt(ctx, query); st != nil {
		rows, err = st.QueryContext(ctx, args...)
	} else {
		rows, err = q.db.QueryContext(ctx, query, args...)
	}
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

func (q sqlQuerier) QueryRow(ctx context.Context, query string, args ...any) Row {
	if q.obs != nil {
		q.obs.Statement(query)
	}
	if st := q.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return q.db.QueryRowContext(ctx, query, args...)
}

func (q sqlQuerier) Dialect() Dialect { return q.dialect }

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { r.Rows.Close() }

type sqlTx struct {
	sqlQuerier
	tx *sql.Tx
}

func (t *sqlTx) Commit(context.Context) error   { return t.tx.Commit() }
func (t *sqlTx) Rollback(context.Context) error { return t.tx.Rollback() }
