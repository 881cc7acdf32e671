package jobs

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/twicehq/twice/store"
)

// pgEngine runs the job queue on PostgreSQL: many instances fetch from a queue at once
// with row locks (FOR UPDATE SKIP LOCKED), a batch travels as arrays in one statement, bulk
// inserts use COPY, and wake-ups go out once a write has committed, since a NOTIFY inside
// a transaction would serialise every such commit on the notification lock.
type pgEngine struct{ c *Client }

// write runs a single statement (or a COPY) without a transaction, so a unique conflict
// waits for the other insert to settle; several that belong together run in one.
func (e pgEngine) write(ctx context.Context, queues map[string]bool, atomic bool, insert func(store.Querier, copier) error) error {
	c := e.c
	var err error
	if atomic {
		err = c.s.InTx(ctx, func(tx store.Tx) error { return insert(tx, nil) })
	} else {
		err = insert(c.s, c.s.Pool())
	}
	if err != nil {
		return err
	}
	c.notifyCommitted(queues)
	return nil
}

// signalInTx sends a hint now rather than a NOTIFY inside tx (see above): its receivers,
// if they find nothing yet, look again a few times over the next ~200 ms, and the poll
// remains the backstop.
func (e pgEngine) signalInTx(_ context.Context, _ any, queues map[string]bool) {
	if note := e.c.notifier(true); note != nil {
		note.send(queues)
	}
}

func (e pgEngine) insertBulk(ctx context.Context, q store.Querier, ps []prepared, cp copier) ([]int64, error) {
	if cp != nil && len(ps) >= copyFrom {
		return e.insertCopy(ctx, q, cp, ps)
	}
	return e.insertArrays(ctx, q, ps)
}

// copier is what can COPY on PostgreSQL: the pool, or a caller's pgx.Tx.
type copier interface {
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

// copyFrom is the batch size from which a bulk insert uses COPY rather than one INSERT.
const copyFrom = 100

// copyColumns are the columns a bulk COPY fills.
var copyColumns = []string{"id", "service", "queue", "kind", "args", "state", "priority", "run_at", "max_attempts",
	"key", "batch_id", "timeout_ms", "tags", "meta", "created_at"}

// insertCopy inserts with COPY, PostgreSQL's fastest way in. COPY returns nothing, so
// the ids are drawn from the table's sequence first, with the database's time, in one
// round trip.
func (e pgEngine) insertCopy(ctx context.Context, q store.Querier, cp copier, ps []prepared) ([]int64, error) {
	c := e.c
	var ids []int64
	var now time.Time
	if err := q.QueryRow(ctx, c.q.pg.reserveIDs, c.s.NowArg(), len(ps)).Scan(&now, &ids); err != nil {
		return nil, fmt.Errorf("jobs: enqueue %d jobs: reserve ids: %w", len(ps), err)
	}
	if len(ids) != len(ps) {
		return nil, fmt.Errorf("jobs: enqueue %d jobs: reserved %d ids", len(ps), len(ids))
	}
	rows := make([][]any, len(ps))
	for i, p := range ps {
		runAt := now
		if p.runAt != nil {
			runAt = *p.runAt
		}
		runAt = runAt.Add(time.Duration(p.delayMS) * time.Millisecond)
		rows[i] = []any{ids[i], c.d.Service, p.queue, p.kind, p.args, int16(p.state), int16(p.priority), runAt,
			int32(p.maxAttempts), p.key, p.batchID, p.timeoutMS, p.tags, p.meta, now}
	}
	if _, err := cp.CopyFrom(ctx, c.s.Table("twice_jobs"), copyColumns, pgx.CopyFromRows(rows)); err != nil {
		return nil, fmt.Errorf("jobs: enqueue %d jobs: %w", len(ps), err)
	}
	return ids, nil
}

// insertArrays inserts with one statement, one array per column.
func (e pgEngine) insertArrays(ctx context.Context, q store.Querier, ps []prepared) ([]int64, error) {
	c := e.c
	n := len(ps)
	queue, kind, args := make([]string, n), make([]string, n), make([]string, n)
	state, prio := make([]int16, n), make([]int16, n)
	runAt := make([]*time.Time, n)
	delay, timeout, batch := make([]int64, n), make([]int64, n), make([]*int64, n)
	maxAtt := make([]int32, n)
	key, tags, meta := make([]*string, n), make([]*string, n), make([]*string, n)
	for i, p := range ps {
		queue[i], kind[i], args[i] = p.queue, p.kind, p.args
		state[i], prio[i] = int16(p.state), int16(p.priority)
		runAt[i], delay[i], timeout[i], batch[i] = p.runAt, p.delayMS, p.timeoutMS, p.batchID
		maxAtt[i] = int32(p.maxAttempts)
		key[i], tags[i], meta[i] = p.key, p.tags, p.meta
	}
	rows, err := q.Query(ctx, c.q.pg.insertMany, c.s.NowArg(), c.d.Service, queue, kind, args, state, prio, runAt,
		delay, maxAtt, key, batch, timeout, tags, meta)
	if err != nil {
		return nil, fmt.Errorf("jobs: enqueue %d jobs: %w", n, err)
	}
	return scanIDs(rows, n)
}

// fetch claims jobs with one statement. A cluster-wide limit needs the queue's fetchers to
// take turns: an advisory lock per queue, held for the fetch's transaction only.
func (e pgEngine) fetch(ctx context.Context, p *producer, n int) ([]*Row, error) {
	c := e.c
	if !p.limited() {
		return c.queryFetched(ctx, c.s, c.q.pg.fetch, c.s.NowArg(), c.d.Service, p.queue, n, c.d.Instance)
	}
	var rows []*Row
	err := c.s.InTx(ctx, func(tx store.Tx) error {
		var now time.Time
		if err := tx.QueryRow(ctx, c.q.pg.turn, c.s.NowArg(), c.d.Service, p.queue).Scan(&now); err != nil {
			return err
		}
		var err error
		rows, err = p.underTurn(ctx, tx, now, n, func(n int, only []int64) ([]*Row, error) {
			if only != nil {
				return c.queryFetched(ctx, tx, c.q.pg.fetchOnly, now, c.d.Service, p.queue, n, c.d.Instance, only)
			}
			return c.queryFetched(ctx, tx, c.q.pg.fetchLimited, now, c.d.Service, p.queue, n, c.d.Instance)
		})
		return err
	})
	return rows, err
}

// finish records successes with the complete statement and every other outcome with the
// general finish statement; both release keys themselves.
func (e pgEngine) finish(ctx context.Context, batch []result) ([]finished, error) {
	c := e.c
	sortByID(batch, func(r result) int64 { return r.id })
	var okIDs []int64
	var okAttempts []int32
	var other []result
	keyed := false
	for _, r := range batch {
		if r.state == bitCompleted && r.err == nil {
			okIDs, okAttempts = append(okIDs, r.id), append(okAttempts, int32(r.attempt))
			keyed = keyed || r.keyed
		} else {
			other = append(other, r)
		}
	}
	var done []finished
	switch {
	case len(okIDs) > 0 && keyed:
		d, err := scanFinished(c.s.Query(ctx, c.q.pg.complete, c.s.NowArg(), c.d.Service, c.d.Instance, okIDs, okAttempts))
		if err != nil {
			return nil, err
		}
		done = d
	case len(okIDs) > 0:
		// No key to release: the statement returns ids only, and the rest of what the
		// caller needs is known from the batch.
		rows, err := c.s.Query(ctx, c.q.pg.completePlain, c.s.NowArg(), c.d.Service, c.d.Instance, okIDs, okAttempts)
		if err != nil {
			return nil, err
		}
		ids, err := scanIDList(rows)
		if err != nil {
			return nil, err
		}
		done = completedFrom(batch, ids)
	}
	if len(other) == 0 {
		return done, nil
	}
	n := len(other)
	ids, attempts, states := make([]int64, n), make([]int32, n), make([]int16, n)
	delays, errs, undo := make([]int64, n), make([]*string, n), make([]int32, n)
	for i, r := range other {
		ids[i], attempts[i], states[i] = r.id, int32(r.attempt), int16(r.state)
		delays[i], errs[i], undo[i] = r.delayMS, r.err, int32(r.undo)
	}
	d, err := scanFinished(c.s.Query(ctx, c.q.pg.finish, c.s.NowArg(), c.d.Service, c.d.Instance,
		ids, attempts, states, delays, errs, undo))
	if err != nil {
		return nil, err
	}
	return append(done, d...), nil
}

func (e pgEngine) handBack(ctx context.Context, stuck []*Row) error {
	c := e.c
	stuck = slices.Clone(stuck)
	sortByID(stuck, func(r *Row) int64 { return r.ID })
	ids, attempts := make([]int64, len(stuck)), make([]int32, len(stuck))
	for i, r := range stuck {
		ids[i], attempts[i] = r.ID, int32(r.Attempt)
	}
	_, err := c.s.Exec(ctx, c.q.pg.handBack, c.s.NowArg(), c.d.Service, c.d.Instance, ids, attempts)
	return err
}

func (e pgEngine) rescue(ctx context.Context) ([]finished, error) {
	c := e.c
	var done []finished
	err := c.s.InTx(ctx, func(tx store.Tx) error {
		var err error
		done, err = c.readRescued(tx.Query(ctx, c.q.pg.rescue, c.s.NowArg(), c.d.Service))
		return err
	})
	return done, err
}

// scanRow scans timestamps as pgx's own time values: the database/sql scanner path costs a
// sixth of a busy worker's CPU.
func (pgEngine) scanRow(rows store.Row) (*Row, error) {
	var r Row
	var s rowScan
	var attempted, finishedAt *time.Time
	if err := rows.Scan(s.dest(&r, &r.ScheduledAt, &r.CreatedAt, &attempted, &finishedAt)...); err != nil {
		return nil, err
	}
	if attempted != nil {
		r.AttemptedAt = *attempted
	}
	if finishedAt != nil {
		r.FinishedAt = *finishedAt
	}
	s.fill(&r)
	return &r, nil
}

// scanFetched scans timestamps like scanRow; a fetched job has been created and attempted.
func (pgEngine) scanFetched(rows store.Row, r *Row, s *fetchScan) error {
	if err := rows.Scan(s.dest(r, &r.ScheduledAt, &r.CreatedAt, &r.AttemptedAt)...); err != nil {
		return err
	}
	s.fill(r)
	return nil
}

// sortByID sorts a batch by job id, in place, before its ids and values go to a statement
// as arrays: each row finds its values at its id's place, which width_bucket finds by binary
// search only in a sorted array (see pgQueries.complete).
func sortByID[T any](batch []T, id func(T) int64) {
	slices.SortFunc(batch, func(a, b T) int { return cmp.Compare(id(a), id(b)) })
}
