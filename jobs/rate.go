package jobs

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/twicehq/twice/store"
)

// Rate limits. A queue's rate limit lets at most Limit of its jobs start in any Period,
// across the cluster: every instance that fetches the queue counts the same starts. It is
// a sliding window, not a bucket refilled at each tick: the starts themselves are kept
// (twice_queue_starts) for one Period, and a fetch takes only as many jobs as the window
// has room for. The fetchers of a limited queue take turns (an advisory lock on
// PostgreSQL, the one writer on SQLite); under the turn a fetch reads the time once,
// counts the starts of the last Period before it, claims at most what is left, and records
// what it claimed at that time, so the count a later turn reads includes them. Starts are
// therefore never more than Limit in any window of Period, whatever the instances' number.
//
// With ByField, the starts are counted apart per value of that field of the job's args:
// "10 per second per customer" is RateLimit{Limit: 10, Period: time.Second, ByField:
// "customer_id"}. A customer at its limit waits; the others' jobs go on.
//
// A queue without a rate limit pays nothing for the feature: its fetch is the unlimited
// statement, whose gate already reads the queue's row, and that gate stops it the moment
// any instance stores a limit, so an instance never exceeds a limit it has not read yet.

// RateLimit caps how many jobs of a queue start per Period, cluster-wide (see
// [QueueConfig].RateLimit and [Client.SetRateLimit]). The zero value is no limit.
type RateLimit struct {
	// Limit is the most starts in any window of Period. 0 for no limit.
	Limit int `json:"limit"`
	// Period is the window, from 1 millisecond to 24 hours.
	Period time.Duration `json:"period"`
	// ByField, if set, counts starts apart per value of this top-level field of the job's
	// args as JSON (its JSON name: letters, digits and underscores): a limit per customer,
	// per tenant, per outside account. Jobs whose args lack the field share one count.
	ByField string `json:"by_field,omitempty"`
}

// MaxRatePeriod is the longest [RateLimit].Period: the starts of one Period are kept.
const MaxRatePeriod = 24 * time.Hour

var fieldName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// check returns an error wrapping [ErrInvalid] if r is not a valid limit of queue.
func (r RateLimit) check(queue string) error {
	switch {
	case r.Limit < 0:
		return fmt.Errorf("%w: rate limit %d of queue %q is negative", ErrInvalid, r.Limit, queue)
	case r.Limit == 0 && (r.Period != 0 || r.ByField != ""):
		return fmt.Errorf("%w: rate limit of queue %q has a Period or ByField but no Limit", ErrInvalid, queue)
	case r.Limit == 0:
		return nil
	case r.Period < time.Millisecond || r.Period > MaxRatePeriod:
		return fmt.Errorf("%w: rate limit of queue %q: Period %v is not between 1ms and %v", ErrInvalid, queue, r.Period, MaxRatePeriod)
	case r.Period%time.Millisecond != 0:
		return fmt.Errorf("%w: rate limit of queue %q: Period %v is not a whole number of milliseconds", ErrInvalid, queue, r.Period)
	case r.ByField != "" && !fieldName.MatchString(r.ByField):
		return fmt.Errorf("%w: rate limit of queue %q: ByField %q is not a JSON field name of letters, digits and underscores",
			ErrInvalid, queue, r.ByField)
	}
	return nil
}

// String renders r as "10/1s" or "10/1s by customer_id"; "-" for no limit.
func (r RateLimit) String() string {
	if r.Limit <= 0 {
		return "-"
	}
	s := fmt.Sprintf("%d/%v", r.Limit, r.Period)
	if r.ByField != "" {
		s += " by " + r.ByField
	}
	return s
}

// SetRateLimit limits how many jobs of queue start per period across the cluster, for
// every instance, whatever its configuration; the zero RateLimit removes the limit.
// [QueueConfig].RateLimit is written the same way when an instance starts working the
// queue, so the latest instance to start with one sets it. Instances that fetched the
// queue without a limit stop fetching it at once and learn the limit when their queue
// next rests (within its Poll while jobs wait), so the limit is never exceeded.
func (c *Client) SetRateLimit(ctx context.Context, queue string, r RateLimit) error {
	if err := checkName("queue", queue, MaxQueueLen); err != nil {
		return err
	}
	if err := r.check(queue); err != nil {
		return err
	}
	err := c.s.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.Exec(ctx, c.q.setRate, c.s.NowArg(), c.d.Service, queue, r.Limit, r.Period.Milliseconds(), r.ByField); err != nil {
			return err
		}
		if r.Limit > 0 {
			return nil
		}
		_, err := tx.Exec(ctx, c.q.forgetStarts, c.d.Service, queue)
		return err
	})
	if err != nil {
		return fmt.Errorf("jobs: set the rate limit of queue %s: %w", queue, err)
	}
	c.wakeQueues(ctx, map[string]bool{queue: true})
	return nil
}

// limits are a queue's cluster-wide limits as a fetch reads them under the queue's turn.
type limits struct {
	global, running int
	rate            RateLimit
}

// readLimits reads the queue's limits and, if it has a global limit, its running jobs,
// under the queue's turn; an instance configured with a limit keeps its own while none is
// stored.
func (p *producer) readLimits(ctx context.Context, q store.Querier) (limits, error) {
	var l limits
	var periodMS int64
	if err := q.QueryRow(ctx, p.c.q.limits, p.c.d.Service, p.queue, p.cfg.GlobalLimit).Scan(&l.global, &l.rate.Limit, &periodMS,
		&l.rate.ByField, &l.running); err != nil {
		return l, err
	}
	l.rate.Period = time.Duration(periodMS) * time.Millisecond
	p.stored.Store(l.global > 0 || l.rate.Limit > 0)
	if l.global <= 0 {
		l.global = p.cfg.GlobalLimit
	}
	if l.rate.Limit <= 0 {
		l.rate = p.cfg.RateLimit
	}
	return l, nil
}

// room is how many jobs may start under the global limit, at most n.
func (l limits) room(n int) int {
	if l.global <= 0 {
		return n
	}
	return max(0, min(n, l.global-l.running))
}

// ratePlan is what the rate limit lets a fetch take.
type ratePlan struct {
	room int     // the most jobs to take
	only []int64 // with ByField: the candidates that may start, in order; nil for any
	keys map[int64]string
	used map[string]window
}

// window is one rate key's starts within the last Period.
type window struct {
	n      int
	oldest time.Time
}

// rateScan is how many candidates a fetch under a limit per field reads beyond its room,
// to find jobs of other keys past those of keys at their limit.
const rateScan = 1000

// planRate counts the starts within the window before now and plans a fetch of at most
// room jobs that keeps to r. It prunes the starts the window has left behind.
func (p *producer) planRate(ctx context.Context, q store.Querier, now any, r RateLimit, room int) (ratePlan, error) {
	c := p.c
	plan := ratePlan{room: room, used: map[string]window{}}
	period := r.Period.Milliseconds()
	if _, err := q.Exec(ctx, c.q.pruneStarts, now, c.d.Service, p.queue, period); err != nil {
		return plan, err
	}
	rows, err := q.Query(ctx, c.q.startsIn, now, c.d.Service, p.queue, period)
	if err != nil {
		return plan, err
	}
	var full []string
	for rows.Next() {
		var key string
		var w window
		var oldest store.Time
		if err := rows.Scan(&key, &w.n, &oldest); err != nil {
			rows.Close()
			return plan, err
		}
		w.oldest = oldest.Time
		plan.used[key] = w
		if w.n >= r.Limit {
			full = append(full, key)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return plan, err
	}
	if r.ByField == "" {
		plan.room = max(0, min(room, r.Limit-plan.used[""].n))
		return plan, nil
	}
	if full == nil {
		full = []string{}
	}
	cand, err := q.Query(ctx, c.q.rateCandidates, now, c.d.Service, p.queue, r.ByField, c.s.List(full), room+rateScan)
	if err != nil {
		return plan, err
	}
	defer cand.Close()
	plan.only, plan.keys = []int64{}, map[int64]string{}
	taken := map[string]int{}
	for cand.Next() && len(plan.only) < room {
		var id int64
		var key string
		if err := cand.Scan(&id, &key); err != nil {
			return plan, err
		}
		if plan.used[key].n+taken[key] < r.Limit {
			taken[key]++
			plan.only = append(plan.only, id)
			plan.keys[id] = key
		}
	}
	plan.room = len(plan.only)
	return plan, cand.Err()
}

// record writes the starts of the fetched rows at now, and returns how long until the
// window next has room for a key it filled (0 if it filled none): when the producer looks
// again, since no write announces it.
func (p *producer) record(ctx context.Context, q store.Querier, now time.Time, r RateLimit, plan ratePlan, rows []*Row) (time.Duration, error) {
	c := p.c
	keys := make([]string, len(rows))
	for i, row := range rows {
		keys[i] = plan.keys[row.ID]
	}
	if len(rows) > 0 {
		if _, err := q.Exec(ctx, c.q.recordStarts, c.s.TimeArg(now), c.d.Service, p.queue, c.s.List(keys)); err != nil {
			return 0, err
		}
	}
	for _, k := range keys {
		w := plan.used[k]
		if w.n == 0 {
			w.oldest = now
		}
		w.n++
		plan.used[k] = w
	}
	return plan.nextSlot(now, r), nil
}

// nextSlot is how long after now the earliest full window of the plan has room again; 0 if
// none is full.
func (plan ratePlan) nextSlot(now time.Time, r RateLimit) time.Duration {
	var next time.Time
	for _, w := range plan.used {
		if at := w.oldest.Add(r.Period); w.n >= r.Limit && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	if next.IsZero() {
		return 0
	}
	return max(next.Sub(now), time.Millisecond)
}

// underTurn fetches up to n jobs of a limited queue with claim, which the caller runs in
// the transaction q that holds the queue's turn, at the time now read under it. claim
// takes at most n candidates, only those listed in only unless only is nil.
func (p *producer) underTurn(ctx context.Context, q store.Querier, now time.Time, n int,
	claim func(n int, only []int64) ([]*Row, error)) ([]*Row, error) {
	l, err := p.readLimits(ctx, q)
	if err != nil {
		return nil, err
	}
	room := l.room(n)
	if room == 0 {
		return nil, nil
	}
	if l.rate.Limit <= 0 {
		return claim(room, nil)
	}
	plan, err := p.planRate(ctx, q, p.c.s.TimeArg(now), l.rate, room)
	if err != nil {
		return nil, err
	}
	var rows []*Row
	if plan.room > 0 {
		if rows, err = claim(plan.room, plan.only); err != nil {
			return nil, err
		}
	}
	wait, err := p.record(ctx, q, now, l.rate, plan, rows)
	if err != nil {
		return nil, err
	}
	p.slot(wait)
	return rows, nil
}
