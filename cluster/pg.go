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

// pgLiveness holds the lock as a session advisory lock on a connection of its own, which
// otherwise sits idle waiting for the server: an idle backend sees its client die at once
// (and so frees the lock), and the client sees the server end the session at once. The
// wait for the successor's lock runs on a second connection, which holds no lock: were
// the wait on the holding session, the ring of waits would be a cycle of lock waits, which
// PostgreSQL's deadlock detector finds and breaks every second (it locks the whole lock
// table while it looks). A changed successor interrupts the wait with a cancel request.
//
// A waiting statement holds a snapshot, and with it the server's horizon for removing dead
// rows, so each wait lasts at most [pgLivenessSlice] (the session's lock_timeout) and is
// then asked again: a statement every slice per instance, and dead rows kept at most that
// much longer. PostgreSQL logs each ended slice as an error ("canceling statement due to
// lock timeout").
type pgLiveness struct {
	s           *store.Store
	log         *slog.Logger
	name        string // application_name of the holding connection, so operators can find it
	watchName   string // of the waiting one
	holder      *pgx.Conn
	lost        context.Context // ends, with the cause, when the holding session ends
	stopMonitor context.CancelFunc
	monitorDone chan struct{}
	waiter      *pgx.Conn
	warnedCheck bool
}

// pgLivenessSlice is how long one wait for a successor's lock lasts at most.
const pgLivenessSlice = 30 * time.Second

// pgClientCheck is how often the server checks, during a wait, that this process lives, so
// that a killed watcher's backend does not wait on.
const pgClientCheck = 50 * time.Millisecond

func (p *pgLiveness) connect(ctx context.Context, name string, cancelRequests bool) (*pgx.Conn, error) {
	cfg := p.s.Pool().Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = name
	if cancelRequests {
		// A wait cut short answers the cancel request within milliseconds; the deadline is
		// a fallback past the slice, so a slow answer never closes the connection.
		cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
			return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: pgLivenessSlice + loop.StatementTimeout}
		}
	}
	return pgx.ConnectConfig(ctx, cfg)
}

func (p *pgLiveness) hold(ctx context.Context, key int64) error {
	// A new session: the old one's lock, if it is still there, goes with it.
	p.dropHolder()
	conn, err := p.connect(ctx, p.name, false)
	if err != nil {
		return fmt.Errorf("liveness connection: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok); err != nil {
		conn.Close(ctx)
		return fmt.Errorf("liveness lock: %w", err)
	}
	if !ok {
		conn.Close(ctx)
		return errors.New("liveness lock: the new key is taken")
	}
	lost, cause := context.WithCancelCause(context.Background())
	monitor, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.holder, p.lost, p.stopMonitor, p.monitorDone = conn, lost, stop, done
	go func() {
		defer close(done)
		// Nothing is listened to: the wait ends only when the session does, or at stop.
		err := conn.PgConn().WaitForNotification(monitor)
		if monitor.Err() == nil {
			cause(fmt.Errorf("%w: %w", errLivenessLost, err))
		}
	}()
	return nil
}

// lostErr is the cause of the holding session's end, or nil while it lasts.
func (p *pgLiveness) lostErr() error {
	if p.lost == nil {
		return errLivenessLost
	}
	if p.lost.Err() != nil {
		return context.Cause(p.lost)
	}
	return nil
}

func (p *pgLiveness) watch(ctx context.Context, key int64) (bool, error) {
	if err := p.lostErr(); err != nil {
		return false, err
	}
	if p.waiter == nil || p.waiter.IsClosed() {
		conn, err := p.connect(ctx, p.watchName, true)
		if err != nil {
			return false, fmt.Errorf("liveness watch connection: %w", err)
		}
		if _, err := conn.Exec(ctx, "SELECT set_config('lock_timeout', $1, false)", fmt.Sprint(pgLivenessSlice.Milliseconds())); err != nil {
			conn.Close(ctx)
			return false, err
		}
		if _, err := conn.Exec(ctx, "SELECT set_config('client_connection_check_interval', $1, false)",
			fmt.Sprint(pgClientCheck.Milliseconds())); err != nil && !p.warnedCheck {
			p.warnedCheck = true
			p.log.Warn("cluster: this PostgreSQL cannot check for a dead client during a query (it needs version 14); the backend of a killed instance's liveness watch waits until its slice ends", "err", err)
		}
		p.waiter = conn
	}
	// Our own session ending ends the wait too: the caller must hear of it at once.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(p.lost, cancel)()
	_, err := p.waiter.Exec(wctx, "SELECT pg_advisory_lock($1)", key)
	if lostErr := p.lostErr(); lostErr != nil {
		if err == nil {
			p.forget(context.WithoutCancel(ctx), key) // taken as we lost ours: not a death we can vouch for
		}
		return false, lostErr
	}
	if err == nil {
		return true, nil
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "55P03" {
		return false, nil // the slice ended: wait again
	}
	return false, err
}

// idle waits for ctx, or until this instance's own session ends.
func (p *pgLiveness) idle(ctx context.Context) error {
	if p.lost == nil {
		return errLivenessLost
	}
	select {
	case <-ctx.Done():
		return nil
	case <-p.lost.Done():
		return context.Cause(p.lost)
	}
}

func (p *pgLiveness) forget(ctx context.Context, key int64) {
	if p.waiter == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, loop.ReleaseTimeout)
	defer cancel()
	_, _ = p.waiter.Exec(ctx, "SELECT pg_advisory_unlock($1)", key)
}

func (p *pgLiveness) dropHolder() {
	if p.holder == nil {
		return
	}
	p.stopMonitor()
	<-p.monitorDone // the connection is the monitor's until it has returned
	ctx, cancel := context.WithTimeout(context.Background(), loop.ReleaseTimeout)
	defer cancel()
	p.holder.Close(ctx)
	p.holder = nil
}

func (p *pgLiveness) close() {
	p.dropHolder()
	if p.waiter != nil {
		ctx, cancel := context.WithTimeout(context.Background(), loop.ReleaseTimeout)
		defer cancel()
		p.waiter.Close(ctx)
		p.waiter = nil
	}
}
