package jobs

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twicehq/twice/store"
)

// Get returns the job with id.
func (c *Client) Get(ctx context.Context, id int64) (*Row, error) {
	rows, err := c.queryRows(ctx, c.s.Reader(), c.q.get, c.d.Service, id)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	return rows[0], nil
}

// ListParams filter [Client.List]. Zero fields do not filter.
type ListParams struct {
	States []State
	Queue  string
	Kind   string
	Tag    string
	// Args, a JSON object of strings, numbers, booleans and nulls, lists the jobs whose
	// arguments have each of its keys, at the top level, with the same value and type:
	// {"user": "ann", "rush": true}. Not indexed: combine it with Kind or Queue on a large
	// table.
	Args json.RawMessage
	// BeforeID lists jobs with smaller ids only, to page backwards from the newest.
	BeforeID int64
	// Limit is the most jobs returned. Defaults to 100; at most 10000.
	Limit int
}

// List returns jobs, newest first.
func (c *Client) List(ctx context.Context, p ListParams) ([]*Row, error) {
	return c.list(ctx, c.s.Reader(), p)
}

// ListTx is [Client.List] inside the caller's transaction tx (a *sql.Tx, pgx.Tx or
// store.Tx): it also lists the jobs tx enqueued and has not committed, as a test that
// checks what a transaction enqueued needs.
func (c *Client) ListTx(ctx context.Context, tx any, p ListParams) ([]*Row, error) {
	q, err := c.s.Wrap(tx)
	if err != nil {
		return nil, err
	}
	return c.list(ctx, q, p)
}

func (c *Client) list(ctx context.Context, q store.Querier, p ListParams) ([]*Row, error) {
	where := []string{"service = $1"}
	args := []any{c.d.Service}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "$?", fmt.Sprintf("$%d", len(args))))
	}
	if len(p.States) > 0 {
		bits := 0
		for _, s := range p.States {
			b, ok := stateBits[s]
			if !ok {
				return nil, fmt.Errorf("%w: state %q", ErrInvalid, s)
			}
			bits |= b
		}
		add("(state & $?) <> 0", bits)
	}
	if p.Queue != "" {
		add("queue = $?", p.Queue)
	}
	if p.Kind != "" {
		add("kind = $?", p.Kind)
	}
	if p.Tag != "" {
		add(c.q.tagFilter, p.Tag)
	}
	if len(p.Args) > 0 {
		filter, err := argsFilter(p.Args)
		if err != nil {
			return nil, err
		}
		add(c.q.argsFilter, filter)
	}
	if p.BeforeID > 0 {
		add("id < $?", p.BeforeID)
	}
	limit := p.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 10000)
	args = append(args, limit)
	query := fmt.Sprintf("SELECT %s FROM twice_jobs WHERE %s ORDER BY id DESC LIMIT $%d", rowCols, strings.Join(where, " AND "), len(args))
	return c.queryRows(ctx, q, c.s.SQL(query), args...)
}

// argsFilter checks ListParams.Args and returns it compact. Values are scalars: objects
// and arrays would compare as text on SQLite, where key order and spacing count.
func argsFilter(raw json.RawMessage) (string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return "", fmt.Errorf("%w: the arguments filter %q is not a JSON object", ErrInvalid, raw)
	}
	for k, v := range obj {
		if t := bytes.TrimSpace(v); len(t) > 0 && (t[0] == '{' || t[0] == '[') {
			return "", fmt.Errorf("%w: the arguments filter's %q is an object or an array; give strings, numbers, booleans or null", ErrInvalid, k)
		}
	}
	compact, err := json.Marshal(obj)
	if err != nil {
		return "", fmt.Errorf("%w: the arguments filter: %v", ErrInvalid, err)
	}
	return string(compact), nil
}

// Cancel cancels a job: one that has not run yet is cancelled at once; a running one has
// its context cancelled with [ErrCancelled] on whichever instance runs it, and is recorded
// as cancelled when its worker returns (or when it is rescued). Cancelling a finished job
// returns [ErrFinished].
func (c *Client) Cancel(ctx context.Context, id int64) error {
	st, queues, err := c.cancel(ctx, c.s, id)
	if err != nil {
		return err
	}
	if st == bitRunning {
		c.publish(ctx, CancelChannel, formatID(id))
	}
	c.wakeQueues(ctx, queues)
	return nil
}

// CancelTx is [Client.Cancel] inside the caller's transaction: nothing changes unless tx
// commits.
func (c *Client) CancelTx(ctx context.Context, tx any, id int64) error {
	q, err := c.s.Wrap(tx)
	if err != nil {
		return err
	}
	st, queues, err := c.cancel(ctx, q, id)
	if err != nil {
		return err
	}
	c.notifyInTx(ctx, tx, queues)
	if st == bitRunning && c.d.Bus != nil {
		if err := c.d.Bus.PublishTx(ctx, tx, CancelChannel, []byte(formatID(id))); err != nil {
			c.log.Debug("jobs: cancel signal not queued; the owner's poll finds it", "job", id, "err", err)
		}
	}
	return nil
}

// cancel runs the cancel statement and, for a job cancelled at once, releases its batch;
// it returns the job's state bit as the statement found it, and the queue of a batch
// callback it made available, to wake.
func (c *Client) cancel(ctx context.Context, q store.Querier, id int64) (int, map[string]bool, error) {
	var st int
	var owner string
	var batch *int64
	err := q.QueryRow(ctx, c.q.cancel, c.s.NowArg(), c.d.Service, id).Scan(&st, &owner, &batch)
	if errors.Is(err, sql.ErrNoRows) {
		row, gerr := c.getOn(ctx, q, id)
		if gerr != nil {
			return 0, nil, gerr
		}
		return 0, nil, fmt.Errorf("%w: job %d is %s", ErrFinished, id, row.State)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("jobs: cancel %d: %w", id, err)
	}
	if st != bitCancelled || batch == nil {
		return st, nil, nil
	}
	queues, err := c.releaseBatch(ctx, q, *batch)
	if err != nil {
		return 0, nil, err
	}
	return st, queues, nil
}

// releaseBatch makes the callback of batch available if none of its members is left to
// run, as the completion of a member does; it returns the callback's queue if it did.
func (c *Client) releaseBatch(ctx context.Context, q store.Querier, batch int64) (map[string]bool, error) {
	rows, err := q.Query(ctx, c.q.releaseBatches, c.s.NowArg(), c.d.Service, c.s.List([]int64{batch}))
	if err != nil {
		return nil, fmt.Errorf("jobs: release batch %d: %w", batch, err)
	}
	queues := map[string]bool{}
	return queues, collectQueues(rows, queues)
}

// Discard ends a job that neither runs nor has finished (one available, scheduled or
// waiting for a retry included, or a batch callback waiting for its batch) as [Discarded]
// at once, whatever attempts it has left. Its last error says it was discarded by hand,
// with reason if one is given, the whole cut to [MaxErrorLen] bytes. A discarded batch
// member counts as finished for its batch, whose callback runs once the others are.
// [Client.Retry] runs a discarded job again.
//
// A running job returns [ErrRunning]: [Client.Cancel] stops it. A finished one returns
// [ErrFinished], an unknown id [ErrNotFound].
func (c *Client) Discard(ctx context.Context, id int64, reason string) error {
	queues, err := c.discard(ctx, c.s, id, reason)
	if err != nil {
		return err
	}
	c.wakeQueues(ctx, queues)
	return nil
}

// DiscardTx is [Client.Discard] inside the caller's transaction: nothing changes unless tx
// commits.
func (c *Client) DiscardTx(ctx context.Context, tx any, id int64, reason string) error {
	q, err := c.s.Wrap(tx)
	if err != nil {
		return err
	}
	queues, err := c.discard(ctx, q, id, reason)
	if err != nil {
		return err
	}
	c.notifyInTx(ctx, tx, queues)
	return nil
}

// discard runs the discard statement and releases the job's batch; it returns the queue of
// a batch callback it made available, to wake.
func (c *Client) discard(ctx context.Context, q store.Querier, id int64, reason string) (map[string]bool, error) {
	msg := "discarded by hand"
	if reason != "" {
		msg += ": " + reason
	}
	var batch *int64
	err := q.QueryRow(ctx, c.q.discard, c.s.NowArg(), c.d.Service, id, capError(msg)).Scan(&batch)
	if errors.Is(err, sql.ErrNoRows) {
		row, gerr := c.getOn(ctx, q, id)
		if gerr != nil {
			return nil, gerr
		}
		if row.State == Running {
			return nil, fmt.Errorf("%w: job %d runs on %s: cancel it to stop it, or wait for it to finish", ErrRunning, id, row.Owner)
		}
		return nil, fmt.Errorf("%w: job %d is %s", ErrFinished, id, row.State)
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: discard %d: %w", id, err)
	}
	if batch == nil {
		return nil, nil
	}
	return c.releaseBatch(ctx, q, *batch)
}

func (c *Client) getOn(ctx context.Context, q store.Querier, id int64) (*Row, error) {
	rows, err := c.queryRows(ctx, q, c.q.get, c.d.Service, id)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	return rows[0], nil
}

// Retry makes a finished (completed, cancelled or discarded) or scheduled job available
// now, granting it one more attempt if it had none left. A running job returns
// [ErrRunning].
func (c *Client) Retry(ctx context.Context, id int64) error {
	queue, err := c.retry(ctx, c.s, id)
	if err != nil {
		return err
	}
	c.wakeQueues(ctx, map[string]bool{queue: true})
	return nil
}

// RetryTx is [Client.Retry] inside the caller's transaction.
func (c *Client) RetryTx(ctx context.Context, tx any, id int64) error {
	q, err := c.s.Wrap(tx)
	if err != nil {
		return err
	}
	queue, err := c.retry(ctx, q, id)
	if err != nil {
		return err
	}
	c.notifyInTx(ctx, tx, map[string]bool{queue: true})
	return nil
}

func (c *Client) retry(ctx context.Context, q store.Querier, id int64) (string, error) {
	var queue string
	err := q.QueryRow(ctx, c.q.retry, c.s.NowArg(), c.d.Service, id).Scan(&queue)
	if errors.Is(err, sql.ErrNoRows) {
		row, gerr := c.getOn(ctx, q, id)
		if gerr != nil {
			return "", gerr
		}
		if row.State == Waiting {
			return "", fmt.Errorf("jobs: job %d is a batch callback waiting for its batch", id)
		}
		return "", fmt.Errorf("%w: job %d", ErrRunning, id)
	}
	if err != nil {
		return "", fmt.Errorf("jobs: retry %d: %w", id, err)
	}
	return queue, nil
}

// QueueStats counts one queue's jobs by state.
type QueueStats struct {
	Queue  string `json:"queue"`
	Paused bool   `json:"paused"`
	// GlobalLimit caps the queue's running jobs across the cluster; 0 for no cap (see
	// [Client.SetGlobalLimit]).
	GlobalLimit int `json:"global_limit,omitempty"`
	// RateLimit caps the queue's starts per period across the cluster; the zero value for
	// none (see [Client.SetRateLimit]).
	RateLimit RateLimit `json:"rate_limit,omitzero"`
	// Workers counts the live instances that work the queue. A queue with jobs and no
	// worker is a queue nobody runs: see [Config].Queues.
	Workers   int `json:"workers"`
	Available int `json:"available"`
	// Lag is how long the oldest available job whose time has come has waited for a
	// worker (since its scheduled time, in database time): 0 when none waits. The figure to
	// alert on: a queue whose workers keep up has a lag of milliseconds.
	Lag time.Duration `json:"lag,omitempty"`
	// Scheduled counts available jobs whose time has not come (retries included).
	Scheduled int `json:"scheduled"`
	Running   int `json:"running"`
	Completed int `json:"completed"`
	Cancelled int `json:"cancelled"`
	Discarded int `json:"discarded"`
	Waiting   int `json:"waiting"`
}

// Stats counts the jobs of every queue of the service, and says which are paused and how
// many live instances work each. It scans the job table: an operator's command, not a hot
// path.
func (c *Client) Stats(ctx context.Context) ([]QueueStats, error) {
	byQueue := map[string]*QueueStats{}
	get := func(q string) *QueueStats {
		if byQueue[q] == nil {
			byQueue[q] = &QueueStats{Queue: q}
		}
		return byQueue[q]
	}
	rows, err := c.s.Reader().Query(ctx, c.q.stats, c.s.NowArg(), c.d.Service)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var queue string
		var state, n int
		var later bool
		var oldest store.Micros
		if err := rows.Scan(&queue, &state, &later, &n, &oldest); err != nil {
			return nil, err
		}
		s := get(queue)
		switch state {
		case bitAvailable:
			if later {
				s.Scheduled += n
			} else {
				s.Available += n
				s.Lag = max(oldest.Duration, 0)
			}
		case bitRunning:
			s.Running += n
		case bitCompleted:
			s.Completed += n
		case bitCancelled:
			s.Cancelled += n
		case bitDiscarded:
			s.Discarded += n
		case bitWaiting:
			s.Waiting += n
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	qrows, err := c.s.Reader().Query(ctx, c.s.SQL(`SELECT name, paused, global_limit, rate_limit, rate_period_ms, rate_field
FROM twice_queues WHERE service = $1`), c.d.Service)
	if err != nil {
		return nil, err
	}
	defer qrows.Close()
	for qrows.Next() {
		var name string
		var paused bool
		var limit int
		var rate RateLimit
		var periodMS int64
		if err := qrows.Scan(&name, &paused, &limit, &rate.Limit, &periodMS, &rate.ByField); err != nil {
			return nil, err
		}
		rate.Period = time.Duration(periodMS) * time.Millisecond
		s := get(name)
		s.Paused, s.GlobalLimit, s.RateLimit = paused, limit, rate
	}
	if err := qrows.Err(); err != nil {
		return nil, err
	}
	workers, err := c.liveWorkers(ctx)
	if err != nil {
		return nil, err
	}
	for q, n := range workers {
		get(q).Workers = n
	}
	out := make([]QueueStats, 0, len(byQueue))
	for _, s := range byQueue {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Queue < out[j].Queue })
	return out, nil
}

// PauseQueue stops every instance from starting jobs of queue; running jobs finish.
func (c *Client) PauseQueue(ctx context.Context, queue string) error {
	return c.setPaused(ctx, queue, true)
}

// ResumeQueue lets every instance start jobs of queue again.
func (c *Client) ResumeQueue(ctx context.Context, queue string) error {
	if err := c.setPaused(ctx, queue, false); err != nil {
		return err
	}
	c.wakeQueues(ctx, map[string]bool{queue: true})
	return nil
}

func (c *Client) setPaused(ctx context.Context, queue string, paused bool) error {
	if err := checkName("queue", queue, MaxQueueLen); err != nil {
		return err
	}
	if _, err := c.s.Exec(ctx, c.q.pause, c.s.NowArg(), c.d.Service, queue, paused); err != nil {
		return fmt.Errorf("jobs: pause %s: %w", queue, err)
	}
	return nil
}

// SetGlobalLimit caps the running jobs of queue across the cluster at limit, for every
// instance, whatever its configuration; 0 removes the cap. [QueueConfig].GlobalLimit is
// written the same way when an instance starts working the queue, so the latest instance
// to start with one sets it, and an instance configured with one caps the queue by its own
// while none is stored. Instances learn of a change at their next fetch under the limit, or
// when their queue next rests (within its Poll while jobs wait); until then, one that has
// not read a new limit fetches nothing from the queue, so the cap is never exceeded.
func (c *Client) SetGlobalLimit(ctx context.Context, queue string, limit int) error {
	if err := checkName("queue", queue, MaxQueueLen); err != nil {
		return err
	}
	if limit < 0 {
		return fmt.Errorf("%w: global limit %d of queue %q is negative", ErrInvalid, limit, queue)
	}
	if _, err := c.s.Exec(ctx, c.q.setLimit, c.s.NowArg(), c.d.Service, queue, limit); err != nil {
		return fmt.Errorf("jobs: set the global limit of queue %s: %w", queue, err)
	}
	c.wakeQueues(ctx, map[string]bool{queue: true})
	return nil
}

// BatchStatus counts a batch's members by state.
type BatchStatus struct {
	ID       int64         `json:"id"`
	Total    int           `json:"total"`
	ByState  map[State]int `json:"by_state"`
	Finished bool          `json:"finished"`
}

// Batch returns the status of the batch with id (its callback job's id).
func (c *Client) Batch(ctx context.Context, id int64) (BatchStatus, error) {
	rows, err := c.s.Reader().Query(ctx, c.s.SQL(`SELECT state, count(*) FROM twice_jobs WHERE service = $1 AND batch_id = $2 GROUP BY state`),
		c.d.Service, id)
	if err != nil {
		return BatchStatus{}, err
	}
	defer rows.Close()
	st := BatchStatus{ID: id, ByState: map[State]int{}, Finished: true}
	for rows.Next() {
		var state, n int
		if err := rows.Scan(&state, &n); err != nil {
			return BatchStatus{}, err
		}
		s := stateOf(state)
		st.ByState[s] += n
		st.Total += n
		if !s.Finished() {
			st.Finished = false
		}
	}
	return st, rows.Err()
}

// RunHere runs the worker registered for args' kind in this process, now, without a row:
// no retry, no record. The worker's Row carries meta. Cron's every-instance mode uses it.
func (c *Client) RunHere(ctx context.Context, args Args, meta map[string]string) error {
	c.mu.Lock()
	wk := c.workers[args.Kind()]
	c.mu.Unlock()
	if wk == nil {
		return fmt.Errorf("%w: %q", ErrNoWorker, args.Kind())
	}
	data, err := json.Marshal(args)
	if err != nil {
		return err
	}
	return c.safeRun(ctx, wk.run, &Row{Kind: args.Kind(), Args: data, State: Running, Attempt: 1, MaxAttempts: 1, Meta: meta})
}
