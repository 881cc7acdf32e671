package events

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/twicehq/twice/internal/otelx"
	"github.com/twicehq/twice/internal/safe"
	"github.com/twicehq/twice/store"
	"sync"
)

// heldBackPoll is how soon a reader first looks again when committed events wait behind a
// transaction that is still running (PostgreSQL): that transaction's end sends no signal.
// The wait doubles while they stay held back, up to the poll interval. Most holds are a
// short transaction's, a heartbeat or another reader's checkpoint, which end within a
// millisecond.
const heldBackPoll = time.Millisecond

// checkpointLinger is how long a caught-up reader keeps the checkpoint of the events it
// handled for its next read to write (see readBatcher) when no wake-up brings one
// sooner: under a steady flow of events the next wake-up writes it with the read it
// brings, and a crash hands at most this much more work to the next owner to do again.
const checkpointLinger = 20 * time.Millisecond

// errMoved means the checkpoint changed under a worker: a Replay, or another owner after
// this one lost its lease. The worker reloads it.
var errMoved = errors.New("events: checkpoint moved")

// worker reads and handles one partition (or, for Broadcast, the whole group on this
// instance).
type worker struct {
	c        *Consumer
	part     int // -1 for Broadcast
	ctx      context.Context
	cancel   context.CancelFunc // cancels ctx: the handlers stop at once; nil for Broadcast
	quit     chan struct{}      // closed by stop: stop after the event in hand
	quitOnce sync.Once
	done     chan struct{}

	pos position
	ver int64
	// owed is a checkpoint the worker reached and has not written (PostgreSQL): the next
	// read writes it in the same statement, or a stop alone. pos is already there.
	owed *position
	// caughtUp says the last read returned every event of the partition its snapshot
	// showed: fewer than it asked for, and within its byte budget.
	caughtUp bool
	// limit is how many events the next read asks for: BatchSize, or fewer when the
	// events last read were so large that BatchSize of them would pass the byte budget.
	limit int
	// redo says the checkpoint's last load found dead letters of the partition waiting for
	// their replay (ReplayDeadLetter): they are handled before the next read.
	redo bool
	// skipVisible is the snapshot of a Broadcast start (PostgreSQL): events visible in it
	// were committed before the group started, and are not this instance's to handle.
	skipVisible string
}

func (c *Consumer) newWorker(ctx context.Context, part int) *worker {
	return &worker{c: c, part: part, ctx: ctx, quit: make(chan struct{}), done: make(chan struct{}), limit: c.cfg.BatchSize}
}

// stop tells the worker to stop after the event in hand; it may be called more than once.
func (w *worker) stop() { w.quitOnce.Do(func() { close(w.quit) }) }

func (w *worker) durable() bool { return w.part >= 0 }

func (w *worker) finished() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// stopping reports whether the worker should stop before its next event.
func (w *worker) stopping() bool {
	select {
	case <-w.quit:
		return true
	case <-w.ctx.Done():
		return true
	default:
		return false
	}
}

// sleep waits d, or until the worker must stop; it reports whether it slept the whole time.
func (w *worker) sleep(d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.quit:
		return false
	case <-w.ctx.Done():
		return false
	case <-wake:
		return false
	case <-t.C:
		return true
	}
}

func (w *worker) run() {
	defer w.c.wg.Done()
	defer close(w.done)
	c := w.c
	log := c.l.log.With("group", c.cfg.Name, "partition", w.part)
	backoff := 50 * time.Millisecond
	var held time.Duration // the current wait while events are held back
	if w.durable() {
		for !w.stopping() {
			if err := w.load(); err == nil {
				break
			} else {
				log.Warn("events: cannot read checkpoint", "err", err)
			}
			w.sleep(backoff, nil)
			backoff = min(2*backoff, 5*time.Second)
		}
	}
	// looked says whether the next read follows a reason to think events may be held back:
	// a wake-up (events committed), events just handled (more may follow behind a long
	// transaction), the first read, or a wait for held-back events. A read on the idle
	// timer alone does not ask: events held back then were committed without a signal
	// (rare: a PublishTx left to polling) and are found by the next poll.
	looked := true
	replays := c.replays.Load()
	for !w.stopping() {
		wake := c.wakeOf(w.part).wait()
		if r := c.replays.Load(); r != replays && w.durable() {
			// A replay moved the checkpoint; read from where it now is.
			if err := w.load(); err != nil {
				log.Debug("events: cannot reload checkpoint", "err", err)
			} else {
				replays = r
			}
		}
		if w.redo && w.owed == nil {
			w.redoDead(log)
		}
		asked := looked || held > 0
		evs, holding, heldBack, err := w.read(asked)
		if errors.Is(err, errMoved) {
			log.Info("events: checkpoint moved (replay or new owner); reloading")
			if err := w.load(); err != nil {
				w.sleep(backoff, nil)
			}
			looked = true
			continue
		}
		if err != nil {
			if !w.stopping() {
				log.Warn("events: read failed", "err", err)
			}
			w.sleep(backoff, nil)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if len(evs) > 0 {
			err := w.process(evs)
			c.mem.release(holding)
			if err != nil && !w.stopping() {
				if errors.Is(err, errMoved) {
					log.Info("events: checkpoint moved (replay or new owner); reloading")
				} else {
					log.Warn("events: checkpoint failed", "err", err)
				}
				if err := w.load(); err != nil {
					w.sleep(backoff, nil)
				}
			}
			looked = true
			if err != nil || !w.caughtUp || heldBack || !asked {
				continue
			}
			// Caught up with what the read's snapshot showed: events committed since
			// then announce themselves (the wake-up signal was taken before the read),
			// so wait for one instead of reading at once. The read it brings writes the
			// checkpoint owed; without one, a read does after checkpointLinger. (A read
			// that did not ask whether events were held back reads again at once, asking.)
		}
		wait := c.l.d.Poll(c.l.cfg.Poll)
		if w.owed != nil {
			wait = min(wait, checkpointLinger)
		}
		if heldBack {
			// Look again soon, then less often: a long transaction elsewhere on the server
			// may hold the events back for a while.
			// Nothing signals the end of another transaction, so this backs off only to
			// the poll interval, never to the backstop.
			held = min(max(2*held, heldBackPoll), c.l.cfg.Poll)
			wait = held
		} else {
			held = 0
		}
		timedOut := w.sleep(wait, wake)
		looked = !timedOut
		if timedOut && w.durable() && !heldBack && w.owed == nil {
			// An idle poll also notices a Replay.
			if err := w.load(); err != nil {
				log.Debug("events: cannot reload checkpoint", "err", err)
			}
		}
	}
	w.flush(log)
}

func (w *worker) load() error {
	l, c := w.c.l, w.c
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	w.owed = nil
	return l.s.Reader().QueryRow(ctx, l.q.offset, l.d.Service, c.cfg.Name, w.part).Scan(&w.pos.xid, &w.pos.id, &w.ver, &w.redo)
}

// read takes a read's share of the group's byte budget (waiting while the group's other
// reads hold it), fetches, and gives back what the events do not hold; the caller
// releases held once it has handled them. It returns no events and an error when the
// worker stops while waiting.
func (w *worker) read(askHeld bool) (evs []Event, held int, heldBack bool, err error) {
	c := w.c
	grant := c.cfg.MaxBatchBytes
	if !c.mem.acquire(grant, w.quit, w.ctx.Done()) {
		return nil, 0, false, errStopping
	}
	evs, heldBack, err = w.fetch(grant, askHeld)
	for _, e := range evs {
		held += e.size
	}
	c.mem.release(grant - held)
	if len(evs) > 0 {
		w.limit = readLimit(c.cfg.BatchSize, grant, held/len(evs))
	}
	return evs, held, heldBack, err
}

// readLimit is how many events to ask for when they weigh avg bytes each: as many as fit
// the budget and one more (the one the reader stops at), at most batch. A read that asked
// for more than fit would send events the reader only discards.
func readLimit(batch, budget, avg int) int {
	if avg <= 0 || budget/avg >= batch {
		return batch
	}
	return budget/avg + 1
}

// errStopping ends a read that waited for the byte budget until the worker stopped.
var errStopping = errors.New("events: stopping")

// fetch reads the next batch after w.pos: at most w.limit events and budget bytes, but at
// least one event. With askHeld, heldBack says that committed events wait behind a
// transaction still running (PostgreSQL), so the caller should look again soon; the same
// statement reads the events and answers it.
func (w *worker) fetch(budget int, askHeld bool) ([]Event, bool, error) {
	c := w.c
	owed := w.owed
	var res readRes
	if c.batch != nil && w.durable() {
		res = c.batch.do(&readReq{part: w.part, pos: w.pos, limit: w.limit, budget: budget, ask: askHeld, owed: owed, ver: w.ver})
	} else {
		ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
		defer cancel()
		parts, part := c.cfg.Partitions, w.part
		if !w.durable() {
			parts, part = 0, 0
		}
		snap := w.skipVisible
		if snap == "" {
			snap = noSnapshot
		}
		res = c.readAlone(ctx, w.pos, parts, part, w.limit, budget, snap, askHeld)
	}
	if res.err != nil {
		return nil, false, res.err
	}
	evs, cut, ans := res.evs, res.cut, res.ans
	if owed != nil {
		w.owed = nil
		if !ans.committed {
			return nil, false, errMoved
		}
		w.ver++
	}
	w.caughtUp = !cut && len(evs) < w.limit
	if !w.caughtUp {
		return evs, false, nil // more follow at once
	}
	return evs, ans.held, nil
}

// readAlone reads the events after pos of partition part of parts (every event when parts
// is 0) with the plain read statement (see queries.read).
func (c *Consumer) readAlone(ctx context.Context, pos position, parts, part, limit, budget int, snap string, ask bool) readRes {
	l := c.l
	rows, err := l.s.Reader().Query(ctx, c.read, l.d.Service, c.topicArg, pos.xid, pos.id, parts, part, limit, snap, ask)
	if err != nil {
		return readRes{err: err}
	}
	var res readRes
	res.evs, res.cut, res.err = l.scanBudget(rows, budget, &res.ans)
	return res
}

// answer is what a read's row of id 0 says: whether events are held back, and whether the
// checkpoint it carried was written.
type answer struct{ held, committed bool }

// scanEvents reads every event of rows.
func (l *Log) scanEvents(rows store.Rows) ([]Event, error) {
	evs, _, err := l.scanBudget(rows, 0, nil)
	return evs, err
}

// scanBudget reads events until the rows end or, with a budget, until the next event
// would take the payload and header bytes past it (always at least one event); cut says
// it stopped there. Closing the rows discards the rest as it arrives, so memory holds the
// budget and one event. With ans, the rows are a read's: each ends with its held and
// committed columns, and a row of id 0 is not an event but the answer, which goes to *ans.
func (l *Log) scanBudget(rows store.Rows, budget int, ans *answer) (out []Event, cut bool, err error) {
	defer rows.Close()
	used := 0
	for rows.Next() {
		var e Event
		var headers []byte
		var at store.Time
		var a answer
		dest := eventDest(&e, &headers, &at, &a)
		if ans == nil {
			dest = dest[:len(dest)-2]
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, false, err
		}
		if e.ID == 0 {
			*ans = a
			continue
		}
		size := len(e.Payload) + len(headers)
		if budget > 0 && used > 0 && used+size > budget {
			return out, true, nil // the rest waits for the next read
		}
		used += size
		out = append(out, l.finish(e, headers, at))
	}
	return out, false, rows.Err()
}

// eventDest is where a row of [columns] and a read's held and committed columns scan to.
func eventDest(e *Event, headers *[]byte, at *store.Time, a *answer) []any {
	return []any{&e.ID, &e.Topic, &e.Key, &e.Payload, headers, &e.Stream, &e.Version, &e.pos.xid, at, &a.held, &a.committed}
}

// finish completes an event scanned with eventDest.
func (l *Log) finish(e Event, headers []byte, at store.Time) Event {
	e.size = len(e.Payload) + len(headers)
	e.pos.id, e.At = e.ID, at.Time
	h, err := decodeHeaders(headers)
	if err != nil {
		l.log.Warn("events: event has unreadable headers; delivering it without them", "id", e.ID, "err", err)
	}
	e.Headers = h
	return e
}

// process handles a batch in order and checkpoints. It returns errMoved if the checkpoint
// moved meanwhile.
func (w *worker) process(evs []Event) error {
	c := w.c
	switch {
	case c.cfg.Mode == ExactlyOnce:
		return w.processTx(evs)
	case c.cfg.HandleBatch != nil:
		done, err := w.attempt(evs[0].ID, func() error { return w.handleBatch(evs) }, func(n int, err error) error {
			for _, e := range evs {
				w.deadLetter(e, n, err)
			}
			return nil
		})
		if !done || err != nil {
			return err
		}
		return w.commit(evs[len(evs)-1].pos)
	}
	last := w.pos
	for _, e := range evs {
		if w.stopping() {
			// Lost the partition (or asked to stop): the next owner resumes after last.
			break
		}
		done, _ := w.attempt(e.ID, func() error { return w.handle(e) }, func(n int, err error) error {
			w.deadLetter(e, n, err)
			return nil
		})
		if !done {
			break
		}
		last = e.pos
	}
	if last == w.pos {
		return nil
	}
	return w.commit(last)
}

// attempt runs fn until it succeeds; after MaxAttempts failures it calls giveUp. It returns
// false if the worker had to stop first, and giveUp's error.
func (w *worker) attempt(event int64, fn func() error, giveUp func(n int, err error) error) (bool, error) {
	c := w.c
	backoff := c.cfg.RetryBackoff
	for n := 1; ; n++ {
		err := w.protect(fn)
		if err == nil {
			return true, nil
		}
		if w.stopping() {
			return false, nil
		}
		if c.cfg.MaxAttempts > 0 && n >= c.cfg.MaxAttempts {
			c.l.log.Error("events: giving up on an event; it goes to the dead letters", "group", c.cfg.Name, "event", event, "attempts", n, "err", err)
			return true, giveUp(n, err)
		}
		c.l.log.Warn("events: handler failed; retrying", "group", c.cfg.Name, "event", event, "attempt", n, "err", err)
		if !w.sleep(backoff, nil) {
			return false, nil
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
}

// protect runs a handler, turning its panic into an error (logged and counted), so one bad
// event cannot stop the process. Inside a transaction it runs before the rollback, so the
// transaction always ends.
func (w *worker) protect(fn func() error) error {
	l := w.c.l
	return safe.Call(l.log, l.d.Panics, "events: handler of group "+w.c.cfg.Name, fn)
}

// deadLetter records that the group gave up on e (Shared; Broadcast only logs).
func (w *worker) deadLetter(e Event, attempts int, cause error) {
	c, l := w.c, w.c.l
	if !w.durable() || c.abandoned.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 10*time.Second)
	defer cancel()
	if _, err := l.s.Exec(ctx, l.q.dead, l.s.NowArg(), l.d.Service, c.cfg.Name, e.ID, attempts, store.ErrorText(cause)); err != nil {
		l.log.Warn("events: cannot record a dead letter", "event", e.ID, "err", err)
	}
}

// commit moves the checkpoint to pos, if nobody else moved it since it was read.
func (w *worker) commit(pos position) error {
	if !w.durable() {
		w.pos = pos
		return nil
	}
	l, c := w.c.l, w.c
	if c.abandoned.Load() {
		return errStopping // as a crash would, the progress is left for the next owner to redo
	}
	if c.batch != nil && !w.stopping() {
		// The next read writes it (see readBatcher).
		w.owed, w.pos = &pos, pos
		return nil
	}
	// A stop must not lose the progress made: commit even if the lease's context ended.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 10*time.Second)
	defer cancel()
	n, err := l.s.Exec(ctx, l.q.commitOffset, l.s.NowArg(), l.d.Service, c.cfg.Name, w.part, pos.xid, pos.id, w.ver)
	if err != nil {
		return err
	}
	if n == 0 {
		return errMoved
	}
	w.pos, w.ver, w.owed = pos, w.ver+1, nil
	return nil
}

// flush writes the checkpoint the worker owes, when it stops.
func (w *worker) flush(log *slog.Logger) {
	if w.owed == nil {
		return
	}
	if err := w.commit(*w.owed); err != nil && !errors.Is(err, errStopping) {
		log.Warn("events: checkpoint failed at stop; the next owner handles those events again", "err", err)
	}
}

// inTx runs fn and moves the checkpoint to pos in one transaction; on success the worker
// is at pos.
func (w *worker) inTx(pos position, fn func(ctx context.Context, tx store.Tx) error) error {
	l, c := w.c.l, w.c
	err := l.s.InTx(w.ctx, func(tx store.Tx) error {
		if err := fn(w.ctx, tx); err != nil {
			return err
		}
		n, err := tx.Exec(w.ctx, l.q.commitOffset, l.s.NowArg(), l.d.Service, c.cfg.Name, w.part, pos.xid, pos.id, w.ver)
		if err != nil {
			return err
		}
		if n == 0 {
			return errMoved
		}
		return nil
	})
	if err == nil {
		w.pos, w.ver = pos, w.ver+1
	}
	return err
}

// handle, handleBatch and handleTx call the group's handler, in a "process <topic>" span
// linked to the spans that published the events when tracing is on (see package otelx).
func (w *worker) handle(e Event) error {
	t := w.c.l.d.Tracer
	if t == nil {
		return w.c.cfg.Handle(w.ctx, e)
	}
	ctx, span := t.Process(w.ctx, e.Topic, e.ID, []map[string]string{e.Headers}, otelx.Group(w.c.cfg.Name))
	err := w.c.cfg.Handle(ctx, e)
	span.End(err)
	return err
}

func (w *worker) handleBatch(evs []Event) error {
	t := w.c.l.d.Tracer
	if t == nil {
		return w.c.cfg.HandleBatch(w.ctx, evs)
	}
	metas := make([]map[string]string, len(evs))
	msgs := make([]Message, len(evs))
	for i, e := range evs {
		metas[i], msgs[i] = e.Headers, Message{Topic: e.Topic}
	}
	ctx, span := t.Process(w.ctx, topicOf(msgs), 0, metas, otelx.Group(w.c.cfg.Name))
	err := w.c.cfg.HandleBatch(ctx, evs)
	span.End(err)
	return err
}

func (w *worker) handleTx(ctx context.Context, tx store.Tx, e Event) error {
	t := w.c.l.d.Tracer
	if t == nil {
		return w.c.cfg.HandleTx(ctx, tx, e)
	}
	ctx, span := t.Process(ctx, e.Topic, e.ID, []map[string]string{e.Headers}, otelx.Group(w.c.cfg.Name))
	err := w.c.cfg.HandleTx(ctx, tx, e)
	span.End(err)
	return err
}

// processTx handles a batch in one transaction with the checkpoint. If a handler fails, the
// batch is rolled back and its events are handled one transaction each, so the failing one
// is retried and, in the end, dead-lettered alone, with the checkpoint moving past it in
// the same transaction.
func (w *worker) processTx(evs []Event) error {
	c, l := w.c, w.c.l
	err := w.inTx(evs[len(evs)-1].pos, func(ctx context.Context, tx store.Tx) error {
		for _, e := range evs {
			if err := w.protect(func() error { return w.handleTx(ctx, tx, e) }); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || errors.Is(err, errMoved) || w.stopping() {
		return err
	}
	for _, e := range evs {
		var moved error
		done, err := w.attempt(e.ID, func() error {
			err := w.inTx(e.pos, func(ctx context.Context, tx store.Tx) error {
				return w.protect(func() error { return w.handleTx(ctx, tx, e) })
			})
			if errors.Is(err, errMoved) {
				moved = err
				return nil
			}
			return err
		}, func(n int, cause error) error {
			return w.inTx(e.pos, func(ctx context.Context, tx store.Tx) error {
				_, err := tx.Exec(ctx, l.q.dead, l.s.NowArg(), l.d.Service, c.cfg.Name, e.ID, n, store.ErrorText(cause))
				return err
			})
		})
		switch {
		case moved != nil:
			return moved
		case err != nil:
			return err
		case !done:
			return nil
		}
	}
	return nil
}
