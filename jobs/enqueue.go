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

	"github.com/twicehq/twice/internal/otelx"
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
	rs, err := c.enqueueAuto(ctx, []Params{{Args: args, Opts: opts}})
	if err != nil {
		return Result{}, err
	}
	return rs[0], nil
}

// EnqueueTx inserts a job inside the caller's transaction tx (a *sql.Tx, pgx.Tx or
// store.Tx): the job exists if and only if tx commits.
func (c *Client) EnqueueTx(ctx context.Context, tx any, args Args, opts *Opts) (Result, error) {
	rs, err := c.enqueueTx(ctx, tx, []Params{{Args: args, Opts: opts}})
	if err != nil {
		return Result{}, err
	}
	return rs[0], nil
}

// EnqueueMany inserts many jobs in one transaction, with one statement on PostgreSQL
// (unique jobs are inserted one by one).
func (c *Client) EnqueueMany(ctx context.Context, jobs []Params) ([]Result, error) {
	return c.enqueueAuto(ctx, jobs)
}

// EnqueueManyTx is [Client.EnqueueMany] inside the caller's transaction.
func (c *Client) EnqueueManyTx(ctx context.Context, tx any, jobs []Params) ([]Result, error) {
	return c.enqueueTx(ctx, tx, jobs)
}

// EnqueueBatch inserts jobs as a batch with a callback job that runs once, after every
// member has finished (completed, cancelled or discarded): the fan-out/aggregate pattern.
// The callback's worker can read the members with [Client.Batch].
func (c *Client) EnqueueBatch(ctx context.Context, jobs []Params, callback Params) (BatchResult, error) {
	var res BatchResult
	err := c.e.write(ctx, queuesOf(jobs, callback), true, func(q store.Querier, _ copier) error {
		var err error
		res, err = c.enqueueBatch(ctx, q, jobs, callback)
		return err
	})
	if err != nil {
		return BatchResult{}, err
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
	c.notifyInTx(ctx, tx, queuesOf(jobs, callback))
	return res, nil
}

func (c *Client) enqueueBatch(ctx context.Context, q store.Querier, jobs []Params, callback Params) (res BatchResult, err error) {
	ctx, span := c.traceSend(ctx, jobs, callback)
	defer func() { span.End(err) }()
	cb, err := c.prepare(ctx, callback)
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
	ps, err := c.prepareAll(ctx, jobs)
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

// traceSend starts the span of enqueuing jobs (see package otelx): "send <queue>", or
// "send" for jobs of several queues. Without a tracer it does nothing.
func (c *Client) traceSend(ctx context.Context, jobs []Params, more ...Params) (context.Context, otelx.Span) {
	if c.d.Tracer == nil {
		return ctx, otelx.Span{}
	}
	var dest string
	if qs := queuesOf(jobs, more...); len(qs) == 1 {
		for q := range qs {
			dest = q
		}
	}
	return c.d.Tracer.Send(ctx, dest, len(jobs)+len(more))
}

// queuesOf is the set of queues of jobs and of more: taking more apart, never appending it
// to jobs, keeps the caller's slice untouched.
func queuesOf(jobs []Params, more ...Params) map[string]bool {
	qs := map[string]bool{}
	for _, j := range jobs {
		qs[queueOf(j)] = true
	}
	for _, j := range more {
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

// enqueueAuto inserts with the client's own connection, and wakes the jobs' queues once
// they are committed. Several unique jobs go in one transaction: each is a statement of
// its own.
func (c *Client) enqueueAuto(ctx context.Context, jobs []Params) (rs []Result, err error) {
	ctx, span := c.traceSend(ctx, jobs)
	defer func() { span.End(err) }()
	ps, err := c.prepareAll(ctx, jobs)
	if err != nil {
		return nil, err
	}
	err = c.e.write(ctx, queuesOf(jobs), len(ps) > 1 && hasUnique(ps), func(q store.Querier, cp copier) error {
		rs, err = c.insert(ctx, q, ps, cp)
		return err
	})
	if err != nil {
		return nil, err
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

func (c *Client) enqueueTx(ctx context.Context, tx any, jobs []Params) (rs []Result, err error) {
	ctx, span := c.traceSend(ctx, jobs)
	defer func() { span.End(err) }()
	q, err := c.s.Wrap(tx)
	if err != nil {
		return nil, err
	}
	ps, err := c.prepareAll(ctx, jobs)
	if err != nil {
		return nil, err
	}
	cp, _ := tx.(copier) // a pgx.Tx can COPY
	rs, err = c.insert(ctx, q, ps, cp)
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
// committed yet: this process's producers at once (an empty look is repeated shortly
// after), the others' as the engine can before the commit (see engine.signalInTx).
func (c *Client) notifyInTx(ctx context.Context, tx any, queues map[string]bool) {
	if len(queues) == 0 {
		return
	}
	for q := range queues {
		c.wakeLocal(q, true)
	}
	if c.d.Bus == nil {
		return
	}
	c.e.signalInTx(ctx, tx, queues)
}

func (c *Client) prepareAll(ctx context.Context, jobs []Params) ([]prepared, error) {
	ps := make([]prepared, len(jobs))
	for i, j := range jobs {
		p, err := c.prepare(ctx, j)
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
// then the client's. With tracing on, its Meta carries the trace context of ctx's span
// (the send span).
func (c *Client) prepare(ctx context.Context, j Params) (prepared, error) {
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
	o.Meta = c.d.Tracer.Inject(ctx, o.Meta)
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
		ids, err := c.e.insertBulk(ctx, q, sub, cp)
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
		runAt = c.s.TimeArg(*p.runAt)
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
