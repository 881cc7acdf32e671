package events

import (
	"context"
	"runtime"
	"sync"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// A wake-up usually finds events in several partitions of a group at once, whose readers
// on this instance then read at the same moment. On PostgreSQL, where each read is a
// statement and a commit of its own, the readBatcher merges the reads that come together
// into one statement (queries.readBatch), with the checkpoints they carry: a read waits
// for the statement under way, if any, and goes with the next, which takes every read that
// waited. The readers keep their own positions, limits, byte budgets and checkpoints, and
// each gets its own events and answers, so nothing else about them changes.

// readReq is one partition's read: from pos, at most limit events and budget bytes,
// asking about held-back events if ask, writing the checkpoint owed first (if not nil) if
// the partition's version is still ver.
type readReq struct {
	part          int
	pos           position
	limit, budget int
	ask           bool
	owed          *position
	ver           int64
	done          chan readRes
}

// readRes is what a read returns: its events, whether they stopped at the byte budget,
// and its answers.
type readRes struct {
	evs []Event
	cut bool
	ans answer
	err error
}

// readBatcher merges the reads of one consumer's partitions (see above).
type readBatcher struct {
	c       *Consumer
	mu      sync.Mutex // protects pending, running
	pending []*readReq
	running bool
}

// do reads r with the next statement and returns its result. It waits for the statement
// whatever happens to the reader, so a checkpoint it carried is never left unknown. A read
// that finds no statement under way sends one itself, with the reads that joined it (it
// yields once to let those woken with it join), and leaves any that came meanwhile to a
// goroutine; a lone read thus costs no hand-over.
func (b *readBatcher) do(r *readReq) readRes {
	r.done = make(chan readRes, 1)
	b.mu.Lock()
	b.pending = append(b.pending, r)
	if b.running {
		b.mu.Unlock()
		return <-r.done
	}
	b.running = true
	b.mu.Unlock()
	runtime.Gosched()
	b.send(b.take())
	b.mu.Lock()
	if len(b.pending) > 0 {
		go b.run()
	} else {
		b.running = false
	}
	b.mu.Unlock()
	return <-r.done
}

// take returns the reads waiting and empties the queue.
func (b *readBatcher) take() []*readReq {
	b.mu.Lock()
	defer b.mu.Unlock()
	batch := b.pending
	b.pending = nil
	return batch
}

// run sends statements while reads wait, then ends.
func (b *readBatcher) run() {
	for {
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.send(b.take())
	}
}

// send runs one statement for batch and hands each read its result.
func (b *readBatcher) send(batch []*readReq) {
	res, err := b.read(batch)
	for _, r := range batch {
		if err != nil {
			r.done <- readRes{err: err}
		} else {
			r.done <- res[r.part]
		}
	}
}

// read runs one statement for batch and returns each partition's result. A lone read that
// owes no checkpoint runs the plain read, the cheaper statement: at a low rate of events,
// the read that brings one.
func (b *readBatcher) read(batch []*readReq) (map[int]readRes, error) {
	c, l := b.c, b.c.l
	// The statement writes checkpoints: it runs to its end even if its readers stop.
	ctx, cancel := context.WithTimeout(context.Background(), loop.StatementTimeout)
	defer cancel()
	if r := batch[0]; len(batch) == 1 && r.owed == nil {
		res := c.readAlone(ctx, r.pos, c.cfg.Partitions, r.part, r.limit, r.budget, noSnapshot, r.ask)
		return map[int]readRes{r.part: res}, res.err
	}
	n := len(batch)
	parts, lims := make([]int32, n), make([]int32, n)
	xids, ids, oxids, oids, vers := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	asks, owes := make([]bool, n), make([]bool, n)
	budget := map[int]int{}
	for i, r := range batch {
		parts[i], lims[i], xids[i], ids[i], asks[i], vers[i] = int32(r.part), int32(r.limit), r.pos.xid, r.pos.id, r.ask, r.ver
		if r.owed != nil {
			owes[i], oxids[i], oids[i] = true, r.owed.xid, r.owed.id
		}
		budget[r.part] = r.budget
	}
	rows, err := l.s.Reader().Query(ctx, c.readBatch, l.d.Service, c.topicArg, parts, xids, ids, lims, asks, owes, oxids, oids,
		vers, c.cfg.Name, l.s.NowArg(), c.cfg.Partitions)
	if err != nil {
		return nil, err
	}
	return l.scanBatch(rows, budget)
}

// scanBatch reads the rows of a readBatch statement: each partition's events, up to its
// byte budget as scanBudget does, and its answer.
func (l *Log) scanBatch(rows store.Rows, budget map[int]int) (map[int]readRes, error) {
	defer rows.Close()
	out := map[int]readRes{}
	used := map[int]int{}
	for rows.Next() {
		var part int
		var e Event
		var a answer
		var headers []byte
		var at store.Time
		if err := rows.Scan(append([]any{&part}, eventDest(&e, &headers, &at, &a)...)...); err != nil {
			return nil, err
		}
		res := out[part]
		switch {
		case e.ID == 0:
			res.ans = a
		case res.cut:
		default:
			size := len(e.Payload) + len(headers)
			if used[part] > 0 && used[part]+size > budget[part] {
				res.cut = true // the rest waits for the partition's next read
				break
			}
			used[part] += size
			res.evs = append(res.evs, l.finish(e, headers, at))
		}
		out[part] = res
	}
	return out, rows.Err()
}
