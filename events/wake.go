package events

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/loop"
)

// waker calls the readers registered for a topic when events of it may have committed.
type waker struct {
	mu   sync.Mutex // protects fns, next
	fns  map[string]map[int]func()
	next int
}

func (w *waker) init() { w.fns = map[string]map[int]func(){} }

func (w *waker) register(topics []string, fn func()) (cancel func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := w.next
	w.next++
	for _, t := range topics {
		if w.fns[t] == nil {
			w.fns[t] = map[int]func(){}
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

func (w *waker) topic(t string) {
	w.mu.Lock()
	fns := make([]func(), 0, len(w.fns[t]))
	for _, fn := range w.fns[t] {
		fns = append(fns, fn)
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

func (w *waker) all() {
	w.mu.Lock()
	var fns []func()
	for _, m := range w.fns {
		for _, fn := range m {
			fns = append(fns, fn)
		}
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn()
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
	added time.Time
}

func newWatcher(l *Log) *watcher {
	w := &watcher{l: l, pending: map[int64]watched{}}
	w.looks = loop.StartAfter(loop.Forever, w.step)
	return w
}

func (w *watcher) add(ids []int64, msgs []Message) {
	now := time.Now()
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	for i, id := range ids {
		w.pending[id] = watched{topic: msgs[i].Topic, added: now}
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
	seen := map[string]bool{}
	var topics []string
	w.mu.Lock()
	for _, id := range visible {
		if p, ok := w.pending[id]; ok {
			delete(w.pending, id)
			if !seen[p.topic] {
				seen[p.topic] = true
				topics = append(topics, p.topic)
			}
		}
	}
	w.mu.Unlock()
	if len(topics) > 0 {
		w.l.announce(topics)
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

// announcer sends the topics of committed events on the bus from a goroutine of its own,
// merging the topics of every publish since its last send.
type announcer struct {
	b   bus.Bus
	log *slog.Logger

	mu      sync.Mutex // protects pending, order
	pending map[string]bool
	order   []string

	l *loop.Loop
}

func newAnnouncer(b bus.Bus, log *slog.Logger) *announcer {
	a := &announcer{b: b, log: log, pending: map[string]bool{}}
	a.l = loop.StartAfter(loop.Forever, func(context.Context) time.Duration {
		a.send()
		return loop.Forever
	})
	return a
}

func (a *announcer) add(topics []string) {
	a.mu.Lock()
	for _, t := range topics {
		if !a.pending[t] {
			a.pending[t] = true
			a.order = append(a.order, t)
		}
	}
	a.mu.Unlock()
	a.l.Kick()
}

// send publishes the pending topics, as many per signal as fit a bus payload. A signal
// that is not sent is covered by the readers' polling.
func (a *announcer) send() {
	a.mu.Lock()
	topics := a.order
	a.pending, a.order = map[string]bool{}, nil
	a.mu.Unlock()
	for len(topics) > 0 {
		var sb strings.Builder
		n := 0
		for n < len(topics) && (n == 0 || sb.Len()+len(topics[n])+1 <= bus.MaxPayload) {
			if n > 0 {
				sb.WriteByte('\n')
			}
			sb.WriteString(topics[n])
			n++
		}
		topics = topics[n:]
		ctx, cancel := context.WithTimeout(context.Background(), announceTimeout)
		if err := a.b.Publish(ctx, WakeChannel, []byte(sb.String())); err != nil {
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
