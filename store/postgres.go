package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/twicehq/twice/internal/redact"
)

func (s *Store) openPostgres(ctx context.Context, schema string) error {
	d := s.dsn
	cfg, err := pgxpool.ParseConfig(d.Raw)
	if err != nil {
		return fmt.Errorf("%w %q: %s", ErrBadDSN, d, parseProblem(err, d.Raw))
	}
	if schema != "" {
		// Quoted, as the migrator's CREATE SCHEMA quotes it: an unquoted "Shop" would
		// name the schema shop.
		cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("store: cannot connect to %s: %w", d, redact.Error(err, d.Raw))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "3F000" {
			return fmt.Errorf("store: %s: schema %q does not exist", d, schema)
		}
		return fmt.Errorf("store: cannot connect to %s: %w", d, redact.Error(err, d.Raw))
	}
	s.pool = pool
	// The control pool: two connections, opened when first used, for heartbeats and leases.
	// pgx pings a connection idle for over a second before lending it; the heartbeat's
	// connection idles between beats, so that doubled an idle instance's transactions.
	// Here only a connection idle for over controlPingAfter is pinged: the heartbeat sends
	// a failed beat again at once on another connection, and the lease statements are
	// retried by their own loops.
	ccfg := cfg.Copy()
	ccfg.MaxConns, ccfg.MinConns = 2, 0
	ccfg.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool { return p.IdleDuration > controlPingAfter }
	if ccfg.ConnConfig.RuntimeParams["application_name"] == "" {
		ccfg.ConnConfig.RuntimeParams["application_name"] = "twice-control"
	}
	if s.control, err = pgxpool.NewWithConfig(ctx, ccfg); err != nil {
		pool.Close()
		return fmt.Errorf("store: cannot connect to %s: %w", d, redact.Error(err, d.Raw))
	}
	if schema == "" {
		if err := pool.QueryRow(ctx, "SELECT coalesce(current_schema(), '')").Scan(&schema); err != nil {
			pool.Close()
			s.control.Close()
			return fmt.Errorf("store: %s: %w", d, err)
		}
		if schema == "" {
			pool.Close()
			s.control.Close()
			return fmt.Errorf("store: %s: the search_path names no existing schema; create it or set Schema", d)
		}
	}
	s.schema = schema
	return nil
}

// controlPingAfter is how long a control connection idles before it is pinged when lent.
const controlPingAfter = time.Minute

// parseProblem says why pgx refused a DSN that [ParseDSN] accepted (a bad sslmode, port or
// pool setting) without pgx's own error text, which may quote the input: pgx's description
// of the problem, never what it wraps.
func parseProblem(err error, dsn string) string {
	msg := "PostgreSQL settings pgx cannot use"
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		cp := *pe
		cp.ConnString = ""
		msg = strings.TrimPrefix(cp.Error(), "cannot parse ``: ")
		if inner := pe.Unwrap(); inner != nil {
			msg = strings.TrimSuffix(msg, " ("+inner.Error()+")")
		}
	} else if m, _, ok := strings.Cut(err.Error(), ":"); ok {
		msg = m // pgxpool: "cannot parse pool_max_conns: <the value>"
	}
	return redact.Text(msg, dsn)
}

// pgxQuerier adapts pgx (the pool, a connection or a transaction).
type pgxQuerier struct {
	q interface {
		Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
		Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
		QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
		batcher
	}
	obs Observer // nil: none
	// generic says q is twice's own pool, where a statement that takes a batch runs with
	// its generic plan (see plans.go).
	generic bool
}

func (q pgxQuerier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	if q.obs != nil {
		q.obs.Statement(query)
	}
	if q.generic && takesBatch(query) {
		br, err := sendGeneric(ctx, q.q, query, args)
		if err != nil {
			return 0, err
		}
		tag, err := br.Exec()
		if err = errors.Join(err, br.Close()); err != nil {
			return 0, err
		}
		return tag.RowsAffected(), nil
	}
	tag, err := q.q.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (q pgxQuerier) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	if q.obs != nil {
		q.obs.Statement(query)
	}
	if q.generic && takesBatch(query) {
		br, err := sendGeneric(ctx, q.q, query, args)
		if err != nil {
			return nil, err
		}
		rows, err := br.Query()
		if err != nil {
			return nil, errors.Join(err, br.Close())
		}
		return &genericRows{Rows: rows, br: br}, nil
	}
	rows, err := q.q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (q pgxQuerier) QueryRow(ctx context.Context, query string, args ...any) Row {
	if q.obs != nil {
		q.obs.Statement(query)
	}
	if q.generic && takesBatch(query) {
		br, err := sendGeneric(ctx, q.q, query, args)
		return genericRow{br: br, err: err}
	}
	return q.q.QueryRow(ctx, query, args...)
}

func (q pgxQuerier) Dialect() Dialect { return Postgres }

type pgxTx struct {
	pgxQuerier
	tx pgx.Tx
}

// commitGrace is how long a COMMIT already sent is waited for after its ctx ends.
const commitGrace = 10 * time.Second

// Commit sees a COMMIT it has sent through to the server's answer, even when ctx ends
// meanwhile. Cut off, it would leave the outcome unknown: pgx cancels the statement and
// closes the connection, and the caller gets ctx's error whether or not the server
// committed, then counts, wakes or retries as if nothing had. A ctx already ended stops
// the COMMIT from being sent (the caller rolls back), and a server silent for commitGrace
// after ctx ends gets the cut-off all the same.
func (t *pgxTx) Commit(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel() // after stop: ends the grace's wait below once the answer is in
	stop := context.AfterFunc(ctx, func() {
		grace := time.NewTimer(commitGrace)
		defer grace.Stop()
		select {
		case <-cctx.Done():
		case <-grace.C:
			cancel()
		}
	})
	defer stop()
	return t.tx.Commit(cctx)
}

func (t *pgxTx) Rollback(ctx context.Context) error { return t.tx.Rollback(ctx) }
