package events

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/loop"
)

// hint names the topics of events that may have committed and, per topic, the hashes of
// their keys (see hashKey), which place them in partitions: only the readers of those
// partitions need to look. A topic with no hashes (nil) wakes every reader of it, as a
// signal from an instance that sends none, or one that had too many to list, does. It is
// a hint: a reader that wakes reads the database, and one that does not wake finds the
// events at its poll.
type hint map[string][]int64

// maxHintHashes is the most hashes a hint lists for one topic; past it, every reader wakes.
const maxHintHashes = 32

// hintOf is the hint of msgs, whose hashes are hashes.
func hintOf(msgs []Message, hashes []int64) hint {
	h := hint{}
	for i, m := range msgs {
		h.add(m.Topic, []int64{hashes[i]})
	}
	return h
}

// add merges the hashes hs (nil for all) of topic into h.
func (h hint) add(topic string, hs []int64) {
	old, ok := h[topic]
	switch {
	case ok && old == nil, hs == nil:
		h[topic] = nil
		return
	}
	merged := old
	for _, x := range hs {
		if !slices.Contains(merged, x) {
			merged = append(merged, x)
		}
	}
	if len(merged) > maxHintHashes {
		merged = nil
	}
	h[topic] = merged
}

// The bus payload of a hint is one line per topic: the topic, then, if it lists hashes, a
// NUL (which no topic contains) and the hashes in decimal, separated by commas.

// appendLine appends topic's line to b.
func appendLine(b []byte, topic string, hs []int64) []byte {
	b = append(b, topic...)
	for i, x := range hs {
		if i == 0 {
			b = append(b, 0)
		} else {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, x, 10)
	}
	return b
}

// parseHint reads a hint from a bus payload. It comes from outside: a line whose hashes do
// not parse wakes every reader of its topic, and an empty line names no topic.
func parseHint(p []byte) hint {
	h := hint{}
	for line := range strings.SplitSeq(string(p), "\n") {
		topic, list, listed := strings.Cut(line, "\x00")
		if topic == "" {
			continue
		}
		if !listed {
			h.add(topic, nil)
			continue
		}
		var hs []int64
		for f := range strings.SplitSeq(list, ",") {
			x, err := strconv.ParseInt(f, 10, 64)
			if err != nil || x < 0 {
				hs = nil
				break
			}
			hs = append(hs, x)
		}
		h.add(topic, hs)
	}
	return h
}

// waker calls the readers registered for a topic when events of it may have committed,
// with the hashes of the events (nil when any partition may have them).
type waker struct {
	mu   sync.Mutex // protects fns, next
	fns  map[string]map[int]func([]int64)
	next int
}

func (w *waker) init() { w.fns = map[string]map[int]func([]int64){} }

func (w *waker) register(topics []string, fn func(hashes []int64)) (cancel func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := w.next
	w.next++
	for _, t := range topics {
		if w.fns[t] == nil {
			w.fns[t] = map[int]func([]int64){}
		}
		w.fns[t][id] = fn
	}
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, t := range topics {
			delete(w.fns[t], id)
			if len(w.fns[t]) == 0 {
				delete(w.fns, t)
			}
		}
	}
}

// topic wakes the readers of t whose partitions hold one of hashes (all of them if nil).
func (w *waker) topic(t string, hashes []int64) {
	w.mu.Lock()
	fns := make([]func([]int64), 0, len(w.fns[t]))
	for _, fn := range w.fns[t] {
		fns = append(fns, fn)
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn(hashes)
	}
}

func (w *waker) all() {
	w.mu.Lock()
	var fns []func([]int64)
	for _, m := range w.fns {
		for _, fn := range m {
			fns = append(fns, fn)
		}
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn(nil)
	}
}

// signal is a broadcast wake-up: chan returns a channel closed at the next kick, taken
// before a reader looks, so a kick between the look and the wait is never missed.
type signal struct {
	mu sync.Mutex // protects ch
	ch chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) kick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
	}
	s.ch = make(chan struct{})
}

// watchExpiry is how long the watcher waits for a PublishTx transaction to commit before it
// leaves the events to the readers' polling: the transaction rolled back, or runs long.
const watchExpiry = 30 * time.Second

// watcher announces the events of PublishTx once their transaction has committed. A
// transaction twice did not open gives no commit hook, and a NOTIFY inside it would
// serialise every commit on PostgreSQL's notification lock; instead the watcher asks
// whether the new rows are visible yet, one query for all pending ids, every millisecond
// while transactions are young and less often as they age.
type watcher struct {
	l *Log

	mu      sync.Mutex // protects pending, closed
	pending map[int64]watched
	closed  bool

	looks *loop.Loop
	due   time.Time // when the wait the last round asked for ends; only the loop touches it
}

type watched struct {
	topic string
	hash  int64
	added time.Time
}

func newWatcher(l *Log) *watcher {
	w := &watcher{l: l, pending: map[int64]watched{}}
	w.looks = loop.StartAfter(loop.Forever, w.step)
	return w
}

func (w *watcher) add(ids []int64, msgs []Message, hashes []int64) {
	now := time.Now()
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	for i, id := range ids {
		w.pending[id] = watched{topic: msgs[i].Topic, hash: hashes[i], added: now}
	}
	w.mu.Unlock()
	w.looks.Kick()
}

// step looks when the interval it asked for has passed. A kick (new ids) only sets the next
// interval: their commit cannot be sooner.
func (w *watcher) step(context.Context) time.Duration {
	if !w.due.IsZero() && !time.Now().Before(w.due) {
		w.look()
	}
	wait := w.interval()
	if wait == 0 {
		w.due = time.Time{}
		return loop.Forever
	}
	w.due = time.Now().Add(wait)
	return wait
}

// interval is how long until the next look: 0 when nothing is pending; 1 ms while the
// youngest transaction is under 100 ms old, then a tenth of its age, at most 100 ms.
func (w *watcher) interval() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.pending) == 0 {
		return 0
	}
	youngest := time.Duration(1<<62 - 1)
	for _, p := range w.pending {
		youngest = min(youngest, time.Since(p.added))
	}
	return min(max(youngest/10, time.Millisecond), 100*time.Millisecond)
}

func (w *watcher) look() {
	w.mu.Lock()
	ids := make([]int64, 0, len(w.pending))
	for id, p := range w.pending {
		if time.Since(p.added) > watchExpiry {
			delete(w.pending, id)
			continue
		}
		ids = append(ids, id)
		if len(ids) == 1000 {
			break
		}
	}
	w.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), loop.StatementTimeout)
	defer cancel()
	visible, err := w.visible(ctx, ids)
	if err != nil {
		w.l.log.Debug("events: cannot tell whether published events committed; readers will poll", "err", err)
		return
	}
	h := hint{}
	w.mu.Lock()
	for _, id := range visible {
		if p, ok := w.pending[id]; ok {
			delete(w.pending, id)
			h.add(p.topic, []int64{p.hash})
		}
	}
	w.mu.Unlock()
	if len(h) > 0 {
		w.l.announce(h)
	}
}

func (w *watcher) visible(ctx context.Context, ids []int64) ([]int64, error) {
	rows, err := w.l.s.Reader().Query(ctx, w.l.q.visible, w.l.s.List(ids))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

func (w *watcher) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	w.looks.Stop()
}

// announceTimeout bounds sending one wake-up signal. It is a hint, which
// [loop.SignalTimeout] bounds elsewhere, but it has always had 5 s here; aligning the two
// would change when a slow bus gives up on it.
const announceTimeout = 5 * time.Second

// announcer sends the hints of committed events on the bus from a goroutine of its own,
// merging the hints of every publish since its last send.
type announcer struct {
	b   bus.Bus
	log *slog.Logger

	mu      sync.Mutex // protects pending, order
	pending hint
	order   []string

	l *loop.Loop
}

func newAnnouncer(b bus.Bus, log *slog.Logger) *announcer {
	a := &announcer{b: b, log: log, pending: hint{}}
	a.l = loop.StartAfter(loop.Forever, func(context.Context) time.Duration {
		a.send()
		return loop.Forever
	})
	return a
}

func (a *announcer) add(h hint) {
	a.mu.Lock()
	for t, hs := range h {
		if _, ok := a.pending[t]; !ok {
			a.order = append(a.order, t)
		}
		a.pending.add(t, hs)
	}
	a.mu.Unlock()
	a.l.Kick()
}

// send publishes the pending hint, as many topics per signal as fit a bus payload. A
// signal that is not sent is covered by the readers' polling.
func (a *announcer) send() {
	a.mu.Lock()
	h, topics := a.pending, a.order
	a.pending, a.order = hint{}, nil
	a.mu.Unlock()
	for len(topics) > 0 {
		var b []byte
		n := 0
		for n < len(topics) {
			line := appendLine(nil, topics[n], h[topics[n]])
			if len(line) > bus.MaxPayload {
				line = appendLine(nil, topics[n], nil) // every partition: a topic always fits
			}
			if n > 0 && len(b)+1+len(line) > bus.MaxPayload {
				break
			}
			if n > 0 {
				b = append(b, '\n')
			}
			b = append(b, line...)
			n++
		}
		topics = topics[n:]
		ctx, cancel := context.WithTimeout(context.Background(), announceTimeout)
		if err := a.b.Publish(ctx, WakeChannel, b); err != nil {
			a.log.Debug("events: wake-up signal not sent; readers find the events at their next poll", "err", err)
		}
		cancel()
	}
}

// close stops the loop and sends what is still pending.
func (a *announcer) close() {
	a.l.Stop()
	a.send()
}
