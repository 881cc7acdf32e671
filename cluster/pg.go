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
// wait for the successor's lock runs on a second connection, which holds no lock until it
// takes the successor's. A changed successor interrupts the wait with a cancel request.
//
// The wait is a loop on the server (watchSQL) that tries the lock every [pgWatchPoll] and
// commits every [pgWatchCommit], not a blocked lock request: a statement holds a snapshot for as
// long as it runs, and with it the horizon below which the whole database's dead rows
// cannot be removed, so a lock request blocked for seconds would keep every table's dead
// rows (the jobs', the checkpoints', the service's own) that long. The loop holds one
// for pgWatchCommit at most. It also makes no lock wait for the deadlock
// detector to look at (a ring of blocked requests would be a cycle if a session held and
// waited). Each statement lasts at most [pgWatchRound] and returns normally; the session's
// locks then say whether it took the lock (holdsSQL), even if a cancel cut it short.
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

// pgWatchPoll is how often the watch's loop tries the successor's lock: a crash is noticed
// this much later at most.
const pgWatchPoll = 100 * time.Millisecond

// pgWatchCommit is how often the watch's loop commits, which lets go of the snapshot it
// holds: the horizon for removing dead rows is held back this much at most, as a short
// transaction would. Each commit ends a read-only transaction (no write, no flush): a
// waiting instance costs its server two a second.
const pgWatchCommit = 500 * time.Millisecond

// pgWatchRound is how long one watch statement lasts at most. It bounds how long the
// backend of a killed watcher loops on a server that cannot check for a dead client
// (before PostgreSQL 14).
const pgWatchRound = 30 * time.Second

// watchSQL is the watch's loop for the lock of key: it ends when it has taken the lock or
// after a round. A DO block takes no parameters, so the key is written in (an integer).
func watchSQL(key int64) string {
	return fmt.Sprintf(`DO $twice$
BEGIN
	FOR i IN 1..%d LOOP
		EXIT WHEN pg_try_advisory_lock(%d);
		PERFORM pg_sleep(%g);
		IF i %% %d = 0 THEN
			COMMIT;
		END IF;
	END LOOP;
END
$twice$`, int(pgWatchRound/pgWatchPoll), key, pgWatchPoll.Seconds(), int(pgWatchCommit/pgWatchPoll))
}

// holdsSQL says whether this session holds the advisory lock of the key $1 (PostgreSQL
// lists a bigint key as its high and low halves).
const holdsSQL = `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
	AND objsubid = 1 AND granted AND ((classid::bigint << 32) | objid::bigint) = $1)`

// pgClientCheck is how often the server checks, during a wait, that this process lives, so
// that a killed watcher's backend does not wait on.
const pgClientCheck = 50 * time.Millisecond

func (p *pgLiveness) connect(ctx context.Context, name string, cancelRequests bool) (*pgx.Conn, error) {
	cfg := p.s.Pool().Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = name
	if cancelRequests {
		// A wait cut short answers the cancel request within milliseconds; the deadline is
		// a fallback past the round, so a slow answer never closes the connection.
		cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
			return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: pgWatchRound + loop.StatementTimeout}
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
		// A statement_timeout of the role's would cut the rounds short, as errors in the
		// server's log.
		if _, err := conn.Exec(ctx, "SELECT set_config('statement_timeout', '0', false)"); err != nil {
			conn.Close(ctx)
			return false, err
		}
		if _, err := conn.Exec(ctx, "SELECT set_config('client_connection_check_interval', $1, false)",
			fmt.Sprint(pgClientCheck.Milliseconds())); err != nil && !p.warnedCheck {
			p.warnedCheck = true
			p.log.Warn("cluster: this PostgreSQL cannot check for a dead client during a query (it needs version 14); the backend of a killed instance's liveness watch loops until its round ends", "err", err)
		}
		p.waiter = conn
	}
	// Our own session ending ends the wait too: the caller must hear of it at once.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(p.lost, cancel)()
	// Exec without arguments uses the simple protocol, in which a DO block may commit.
	_, err := p.waiter.Exec(wctx, watchSQL(key))
	// A cancel may end the loop just after it took the lock, which the rollback of its
	// transaction does not give back: the session's locks say.
	var taken bool
	if !p.waiter.IsClosed() {
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loop.StatementTimeout)
		herr := p.waiter.QueryRow(hctx, holdsSQL, key).Scan(&taken)
		cancel()
		if err == nil {
			err = herr
		}
	}
	if lostErr := p.lostErr(); lostErr != nil {
		if taken {
			p.forget(context.WithoutCancel(ctx), key) // taken as we lost ours: not a death we can vouch for
		}
		return false, lostErr
	}
	if taken {
		return true, nil
	}
	return false, err // nil after a round without the lock: wait again
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
