package jobs

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/twicehq/twice/store"
)

// Params is one job to enqueue: its arguments and options (nil for the defaults).
type Params struct {
	Args Args
	Opts *Opts
}

// Result is the outcome of enqueueing one job.
type Result struct {
	// ID is the job's id; for a duplicate, the id of the existing job.
	ID int64 `json:"id"`
	// Duplicate is set when a unique job already existed and nothing was inserted.
	Duplicate bool `json:"duplicate,omitempty"`
}

// BatchResult is the outcome of [Client.EnqueueBatch].
type BatchResult struct {
	// ID is the batch's id: the callback job's id, and every member's BatchID.
	ID int64 `json:"id"`
	// Jobs are the members' results, in the order given.
	Jobs []Result `json:"jobs"`
}

// prepared is one validated job, ready to insert.
type prepared struct {
	queue, kind, args string
	state             int
	priority          int
	runAt             *time.Time
	delayMS           int64
	maxAttempts       int
	key               *string
	uniqueKey         *string
	uniqueStates      int
	uniqueWindow      time.Duration
	batchID           *int64
	timeoutMS         int64
	tags, meta        *string
}

// Enqueue inserts a job and wakes an instance to run it.
func (c *Client) Enqueue(ctx context.Context, args Args, opts *Opts) (Result, error) {
	rs, err := c.enqueueAuto(ctx, []Params{{Args: args, Opts: opts}}, nil)
	if err != nil {
		return Result{}, err
	}
	return rs[0], nil
}

// EnqueueTx inserts a job inside the caller's transaction tx (a *sql.Tx, pgx.Tx or
// store.Tx): the job exists if and only if tx commits.
func (c *Client) EnqueueTx(ctx context.Context, tx any, args Args, opts *Opts) (Result, error) {
	rs, err := c.enqueueTx(ctx, tx, []Params{{Args: args, Opts: opts}}, nil)
	if err != nil {
		return Result{}, err
	}
	return rs[0], nil
}

// EnqueueMany inserts many jobs in one transaction, with one statement on PostgreSQL
// (unique jobs are inserted one by one).
func (c *Client) EnqueueMany(ctx context.Context, jobs []Params) ([]Result, error) {
	return c.enqueueAuto(ctx, jobs, nil)
}

// EnqueueManyTx is [Client.EnqueueMany] inside the caller's transaction.
func (c *Client) EnqueueManyTx(ctx context.Context, tx any, jobs []Params) ([]Result, error) {
	return c.enqueueTx(ctx, tx, jobs, nil)
}

// EnqueueBatch inserts jobs as a batch with a callback job that runs once, after every
// member has finished (completed, cancelled or discarded): the fan-out/aggregate pattern.
// The callback's worker can read the members with [Client.Batch].
func (c *Client) EnqueueBatch(ctx context.Context, jobs []Params, callback Params) (BatchResult, error) {
	var res BatchResult
	queues := queuesOf(append(jobs, callback))
	err := c.s.InTx(ctx, func(tx store.Tx) error {
		var err error
		res, err = c.enqueueBatch(ctx, tx, jobs, callback)
		if err == nil && c.s.Dialect() == store.SQLite {
			c.publishTx(ctx, tx, queues)
		}
		return err
	})
	if err != nil {
		return BatchResult{}, err
	}
	if c.s.Dialect() == store.SQLite {
		for q := range queues {
			c.wakeLocal(q, false)
		}
	} else {
		c.notifyCommitted(queues)
	}
	return res, nil
}

// EnqueueBatchTx is [Client.EnqueueBatch] inside the caller's transaction.
func (c *Client) EnqueueBatchTx(ctx context.Context, tx any, jobs []Params, callback Params) (BatchResult, error) {
	q, err := c.s.Wrap(tx)
	if err != nil {
		return BatchResult{}, err
	}
	res, err := c.enqueueBatch(ctx, q, jobs, callback)
	if err != nil {
		return BatchResult{}, err
	}
	c.notifyInTx(ctx, tx, queuesOf(append(jobs, callback)))
	return res, nil
}

func (c *Client) enqueueBatch(ctx context.Context, q store.Querier, jobs []Params, callback Params) (BatchResult, error) {
	cb, err := c.prepare(callback)
	if err != nil {
		return BatchResult{}, fmt.Errorf("jobs: batch callback: %w", err)
	}
	if len(jobs) > 0 {
		cb.state = bitWaiting
	}
	cbRes, err := c.insertOne(ctx, q, cb)
	if err != nil {
		return BatchResult{}, err
	}
	ps, err := c.prepareAll(jobs)
	if err != nil {
		return BatchResult{}, err
	}
	for i := range ps {
		ps[i].batchID = &cbRes.ID
	}
	rs, err := c.insert(ctx, q, ps, nil)
	if err != nil {
		return BatchResult{}, err
	}
	return BatchResult{ID: cbRes.ID, Jobs: rs}, nil
}

func queuesOf(jobs []Params) map[string]bool {
	qs := map[string]bool{}
	for _, j := range jobs {
		qs[queueOf(j)] = true
	}
	return qs
}

func queueOf(p Params) string {
	if p.Opts != nil && p.Opts.Queue != "" {
		return p.Opts.Queue
	}
	if wo, ok := p.Args.(ArgsWithOpts); ok && wo.Opts().Queue != "" {
		return wo.Opts().Queue
	}
	return DefaultQueue
}

// enqueueAuto inserts with the client's own connection: on PostgreSQL without a
// transaction (each statement commits alone, and a unique conflict waits for the other
// insert to settle), on SQLite in one write transaction with the wake-up row.
func (c *Client) enqueueAuto(ctx context.Context, jobs []Params, _ any) ([]Result, error) {
	ps, err := c.prepareAll(jobs)
	if err != nil {
		return nil, err
	}
	queues := queuesOf(jobs)
	if c.s.Dialect() == store.Postgres {
		q := store.Querier(c.s)
		var rs []Result
		if len(ps) > 1 && hasUnique(ps) {
			err = c.inTx(ctx, func(q store.Querier) error {
				rs, err = c.insert(ctx, q, ps, nil)
				return err
			})
		} else {
			rs, err = c.insert(ctx, q, ps, c.s.Pool())
		}
		if err != nil {
			return nil, err
		}
		c.notifyCommitted(queues)
		return rs, nil
	}
	var rs []Result
	err = c.s.InTx(ctx, func(tx store.Tx) error {
		rs, err = c.insert(ctx, tx, ps, nil)
		if err != nil {
			return err
		}
		c.publishTx(ctx, tx, queues)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for q := range queues {
		c.wakeLocal(q, false)
	}
	return rs, nil
}

func hasUnique(ps []prepared) bool {
	return slices.ContainsFunc(ps, func(p prepared) bool { return p.uniqueKey != nil })
}

// publishTx queues wake-ups that are sent if and only if tx commits.
func (c *Client) publishTx(ctx context.Context, tx any, queues map[string]bool) {
	if c.d.Bus == nil {
		return
	}
	for q := range queues {
		if err := c.d.Bus.PublishTx(ctx, tx, WakeChannel, []byte(q)); err != nil {
			c.log.Debug("jobs: wake-up not queued; a poll finds the job", "err", err)
		}
	}
}

func (c *Client) inTx(ctx context.Context, fn func(q store.Querier) error) error {
	return c.s.InTx(ctx, func(tx store.Tx) error { return fn(tx) })
}

func (c *Client) enqueueTx(ctx context.Context, tx any, jobs []Params, _ any) ([]Result, error) {
	q, err := c.s.Wrap(tx)
	if err != nil {
		return nil, err
	}
	ps, err := c.prepareAll(jobs)
	if err != nil {
		return nil, err
	}
	cp, _ := tx.(copier) // a pgx.Tx can COPY
	rs, err := c.insert(ctx, q, ps, cp)
	if err != nil {
		return nil, err
	}
	c.notifyInTx(ctx, tx, queuesOf(jobs))
	return rs, nil
}

// notifyCommitted wakes the queues of jobs that are committed: this process's producers
// at once, the others' through the bus.
func (c *Client) notifyCommitted(queues map[string]bool) {
	for q := range queues {
		c.wakeLocal(q, false)
	}
	if note := c.notifier(true); note != nil {
		note.send(queues)
	}
}

// notifyInTx wakes the queues of jobs inserted in a caller's transaction that has not
// committed yet. On SQLite the signal is a row in that transaction, sent if and only if it
// commits. On PostgreSQL a NOTIFY inside the transaction would serialise every such commit
// on the notification lock, so instead a hint goes out now and the receivers, if they find
// nothing yet, look again a few times over the next ~200 ms; the poll remains the backstop.
func (c *Client) notifyInTx(ctx context.Context, tx any, queues map[string]bool) {
	for q := range queues {
		c.wakeLocal(q, true)
	}
	if c.d.Bus == nil {
		return
	}
	if c.s.Dialect() == store.SQLite {
		c.publishTx(ctx, tx, queues)
		return
	}
	if note := c.notifier(true); note != nil {
		note.send(queues)
	}
}

func (c *Client) prepareAll(jobs []Params) ([]prepared, error) {
	ps := make([]prepared, len(jobs))
	for i, j := range jobs {
		p, err := c.prepare(j)
		if err != nil {
			if len(jobs) > 1 {
				return nil, fmt.Errorf("job %d: %w", i, err)
			}
			return nil, err
		}
		ps[i] = p
	}
	return ps, nil
}

// prepare validates a job and fills its defaults: the call's options, then the kind's,
// then the client's.
func (c *Client) prepare(j Params) (prepared, error) {
	if j.Args == nil {
		return prepared{}, fmt.Errorf("%w: nil Args", ErrInvalid)
	}
	kind := j.Args.Kind()
	if err := checkName("kind", kind, MaxKindLen); err != nil {
		return prepared{}, err
	}
	var o Opts
	if wo, ok := j.Args.(ArgsWithOpts); ok {
		o = wo.Opts()
	}
	if j.Opts != nil {
		o = merge(o, *j.Opts)
	}
	args, err := json.Marshal(j.Args)
	if err != nil {
		return prepared{}, fmt.Errorf("%w: encode args of kind %q: %v", ErrInvalid, kind, err)
	}
	if len(args) > MaxArgsBytes {
		return prepared{}, fmt.Errorf("%w: args of kind %q are %d bytes, more than %d", ErrInvalid, kind, len(args), MaxArgsBytes)
	}
	p := prepared{queue: o.Queue, kind: kind, args: string(args), state: bitAvailable, priority: o.Priority,
		maxAttempts: o.MaxAttempts, delayMS: o.Delay.Milliseconds(), timeoutMS: o.Timeout.Milliseconds()}
	if p.queue == "" {
		p.queue = DefaultQueue
	}
	if err := checkName("queue", p.queue, MaxQueueLen); err != nil {
		return prepared{}, err
	}
	if p.priority < 0 || p.priority > MaxPriority {
		return prepared{}, fmt.Errorf("%w: priority %d is outside 0 to %d", ErrInvalid, p.priority, MaxPriority)
	}
	if p.maxAttempts == 0 {
		p.maxAttempts = c.cfg.MaxAttempts
	}
	if p.maxAttempts < 0 || o.Delay < 0 || o.Timeout < 0 {
		return prepared{}, fmt.Errorf("%w: MaxAttempts, Delay and Timeout must not be negative", ErrInvalid)
	}
	if !o.RunAt.IsZero() {
		t := o.RunAt
		p.runAt = &t
	}
	if o.Key != "" {
		if err := checkName("key", o.Key, MaxKeyLen); err != nil {
			return prepared{}, err
		}
		k := o.Key
		p.key = &k
	}
	if u := o.Unique; u != nil {
		key := u.Key
		if key == "" {
			key = string(args)
		}
		uk := kind + "|" + key
		p.uniqueKey = &uk
		p.uniqueWindow = u.Window
		states := u.States
		if len(states) == 0 {
			states = []State{Available, Running, Completed, Waiting}
		}
		for _, s := range states {
			b, ok := stateBits[s]
			if !ok {
				return prepared{}, fmt.Errorf("%w: unique state %q", ErrInvalid, s)
			}
			p.uniqueStates |= b
		}
		if u.Window < 0 {
			return prepared{}, fmt.Errorf("%w: negative unique window", ErrInvalid)
		}
	}
	if len(o.Tags) > 0 {
		if len(o.Tags) > MaxTags {
			return prepared{}, fmt.Errorf("%w: %d tags, more than %d", ErrInvalid, len(o.Tags), MaxTags)
		}
		for _, t := range o.Tags {
			if err := checkName("tag", t, MaxQueueLen); err != nil {
				return prepared{}, err
			}
		}
		b, _ := json.Marshal(o.Tags)
		s := string(b)
		p.tags = &s
	}
	if len(o.Meta) > 0 {
		b, err := json.Marshal(o.Meta)
		if err != nil {
			return prepared{}, fmt.Errorf("%w: meta: %v", ErrInvalid, err)
		}
		s := string(b)
		p.meta = &s
	}
	return p, nil
}

// merge returns base with every non-zero field of over.
func merge(base, over Opts) Opts {
	if over.Queue != "" {
		base.Queue = over.Queue
	}
	if over.Priority != 0 {
		base.Priority = over.Priority
	}
	if !over.RunAt.IsZero() {
		base.RunAt = over.RunAt
	}
	if over.Delay != 0 {
		base.Delay = over.Delay
	}
	if over.MaxAttempts != 0 {
		base.MaxAttempts = over.MaxAttempts
	}
	if over.Timeout != 0 {
		base.Timeout = over.Timeout
	}
	if over.Key != "" {
		base.Key = over.Key
	}
	if over.Unique != nil {
		base.Unique = over.Unique
	}
	if len(over.Tags) > 0 {
		base.Tags = over.Tags
	}
	if len(over.Meta) > 0 {
		base.Meta = over.Meta
	}
	return base
}

// checkName rejects empty, overlong or non-printable names.
func checkName(what, s string, limit int) error {
	if s == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalid, what)
	}
	if len(s) > limit {
		return fmt.Errorf("%w: %s of %d bytes is longer than %d", ErrInvalid, what, len(s), limit)
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%w: %s %q has control characters or invalid UTF-8", ErrInvalid, what, s)
	}
	return nil
}

// insert inserts prepared jobs on q. Unique jobs go one by one (each may be a duplicate);
// the rest in bulk, with COPY when cp can.
func (c *Client) insert(ctx context.Context, q store.Querier, ps []prepared, cp copier) ([]Result, error) {
	rs := make([]Result, len(ps))
	var bulk []int
	for i, p := range ps {
		if p.uniqueKey == nil {
			bulk = append(bulk, i)
			continue
		}
		r, err := c.insertOne(ctx, q, p)
		if err != nil {
			return nil, err
		}
		rs[i] = r
	}
	if len(bulk) == 1 {
		r, err := c.insertOne(ctx, q, ps[bulk[0]])
		if err != nil {
			return nil, err
		}
		rs[bulk[0]] = r
	} else if len(bulk) > 1 {
		sub := make([]prepared, len(bulk))
		for i, k := range bulk {
			sub[i] = ps[k]
		}
		ids, err := c.insertBulk(ctx, q, sub, cp)
		if err != nil {
			return nil, err
		}
		for i, k := range bulk {
			rs[k] = Result{ID: ids[i]}
		}
	}
	return rs, nil
}

func (c *Client) insertOne(ctx context.Context, q store.Querier, p prepared) (Result, error) {
	d := q.Dialect()
	if p.uniqueKey != nil && p.uniqueWindow > 0 {
		now, err := c.dbNow(ctx, q)
		if err != nil {
			return Result{}, err
		}
		bucket := now.UnixMilli() / p.uniqueWindow.Milliseconds()
		uk := *p.uniqueKey + "|" + strconv.FormatInt(bucket, 10)
		p.uniqueKey = &uk
	}
	var runAt any
	if p.runAt != nil {
		runAt = d.TimeArg(*p.runAt)
	}
	var id int64
	err := q.QueryRow(ctx, c.q.insert, c.s.NowArg(), c.d.Service, p.queue, p.kind, p.args, p.state, p.priority,
		runAt, p.delayMS, p.maxAttempts, p.key, p.uniqueKey, p.uniqueStates, p.batchID, p.timeoutMS, p.tags, p.meta).Scan(&id)
	if err == nil {
		return Result{ID: id}, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return Result{}, fmt.Errorf("jobs: enqueue %s: %w", p.kind, err)
	}
	if p.uniqueKey == nil {
		return Result{}, fmt.Errorf("jobs: enqueue %s: no row inserted", p.kind)
	}
	if err := q.QueryRow(ctx, c.q.existing, c.d.Service, *p.uniqueKey).Scan(&id); err != nil {
		return Result{}, fmt.Errorf("jobs: enqueue %s: find the existing unique job: %w", p.kind, err)
	}
	return Result{ID: id, Duplicate: true}, nil
}

func (c *Client) dbNow(ctx context.Context, q store.Querier) (time.Time, error) {
	var t store.Time
	if err := q.QueryRow(ctx, c.q.now, c.s.NowArg()).Scan(&t); err != nil {
		return time.Time{}, err
	}
	return t.Time, nil
}

func (c *Client) insertBulk(ctx context.Context, q store.Querier, ps []prepared, copier copier) ([]int64, error) {
	switch {
	case q.Dialect() == store.SQLite:
		return c.insertBulkSQLite(ctx, q, ps)
	case copier != nil && len(ps) >= copyFrom:
		return c.insertBulkCopy(ctx, q, copier, ps)
	default:
		return c.insertBulkPG(ctx, q, ps)
	}
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

// insertBulkCopy inserts with COPY, PostgreSQL's fastest way in. COPY returns nothing, so
// the ids are drawn from the table's sequence first, with the database's time, in one
// round trip.
func (c *Client) insertBulkCopy(ctx context.Context, q store.Querier, cp copier, ps []prepared) ([]int64, error) {
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

func (c *Client) insertBulkPG(ctx context.Context, q store.Querier, ps []prepared) ([]int64, error) {
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

func scanIDs(rows store.Rows, n int) ([]int64, error) {
	defer rows.Close()
	ids := make([]int64, 0, n)
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(ids) != n {
		return nil, fmt.Errorf("jobs: inserted %d of %d jobs", len(ids), n)
	}
	return ids, nil
}

// insertBulkSQLite inserts row by row: inside one transaction SQLite does that faster
// than it parses one statement with thousands of rows.
func (c *Client) insertBulkSQLite(ctx context.Context, q store.Querier, ps []prepared) ([]int64, error) {
	ids := make([]int64, len(ps))
	for i, p := range ps {
		r, err := c.insertOne(ctx, q, p)
		if err != nil {
			return nil, err
		}
		ids[i] = r.ID
	}
	return ids, nil
}
