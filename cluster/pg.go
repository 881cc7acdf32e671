package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// pgLiveness holds the lock as a session advisory lock on a connection of its own, and
// waits for the successor's on the same connection: a session may hold one lock and wait
// for another. A changed successor interrupts the wait with a cancel request, which leaves
// the session (and its lock) as it was.
//
// A waiting statement holds a snapshot, and with it the server's horizon for removing dead
// rows, so each wait lasts at most [pgLivenessSlice] (the session's lock_timeout) and is
// then asked again: a statement every slice per instance, and dead rows kept at most that
// much longer. PostgreSQL logs each ended slice as an error ("canceling statement due to
// lock timeout").
type pgLiveness struct {
	s           *store.Store
	log         *slog.Logger
	name        string // application_name, so operators can find the connection
	conn        *pgx.Conn
	warnedCheck bool
}

// pgLivenessSlice is how long one wait for a successor's lock lasts at most.
const pgLivenessSlice = 30 * time.Second

// pgClientCheck is how often the server checks, during a wait, that this process lives.
const pgClientCheck = 50 * time.Millisecond

func (p *pgLiveness) connect(ctx context.Context) error {
	if p.conn != nil {
		p.conn.Close(ctx)
		p.conn = nil
	}
	cfg := p.s.Pool().Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = p.name
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: loop.ReleaseTimeout}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	p.conn = conn
	return nil
}

func (p *pgLiveness) hold(ctx context.Context, key int64) error {
	// A new session: the old one's lock, if it is still there, goes with it.
	if err := p.connect(ctx); err != nil {
		return fmt.Errorf("liveness connection: %w", err)
	}
	// While it waits for a lock, a backend does not read from its client, so it would not
	// see this process die and would keep this instance's own lock until the wait ended;
	// client_connection_check_interval (PostgreSQL 14 and later) makes it look.
	if _, err := p.conn.Exec(ctx, "SELECT set_config('client_connection_check_interval', $1, false)",
		fmt.Sprint(pgClientCheck.Milliseconds())); err != nil && !p.warnedCheck {
		p.warnedCheck = true
		p.log.Warn("cluster: this PostgreSQL cannot check for a dead client during a query (it needs version 14); a crash of an instance that is watching another is noticed only when its wait ends, within "+pgLivenessSlice.String(), "err", err)
	}
	var ok bool
	err := p.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1), set_config('lock_timeout', $2, false)",
		key, fmt.Sprint(pgLivenessSlice.Milliseconds())).Scan(&ok, nil)
	if err != nil {
		return fmt.Errorf("liveness lock: %w", err)
	}
	if !ok {
		return errors.New("liveness lock: the new key is taken")
	}
	return nil
}

// lost turns err into errLivenessLost if the session ended.
func (p *pgLiveness) lost(err error) error {
	if p.conn == nil || p.conn.IsClosed() {
		return fmt.Errorf("%w: %w", errLivenessLost, err)
	}
	return err
}

func (p *pgLiveness) watch(ctx context.Context, key int64) (bool, error) {
	if p.conn == nil {
		return false, errLivenessLost
	}
	_, err := p.conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key)
	if err == nil {
		return true, nil
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "55P03" {
		return false, nil // the slice ended: wait again
	}
	return false, p.lost(err)
}

// idle waits for ctx. An instance alone has nobody to take over from it, so it does not
// watch its own session then: the next watch finds the session gone.
func (p *pgLiveness) idle(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (p *pgLiveness) forget(ctx context.Context, key int64) {
	if p.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, loop.ReleaseTimeout)
	defer cancel()
	_, _ = p.conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", key)
}

func (p *pgLiveness) close() {
	if p.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), loop.ReleaseTimeout)
		defer cancel()
		p.conn.Close(ctx)
		p.conn = nil
	}
}
