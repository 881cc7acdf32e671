package bus

import (
	"context"
	"sync"
	"time"

	"github.com/twicehq/twice/internal/loop"
)

// wire is a message as it travels through the store. P is base64 in JSON.
type wire struct {
	C string `json:"c"`
	P []byte `json:"p,omitempty"`
	F string `json:"f"`
}

// batcher gathers the messages published while it waits for its next send (see pacer) and
// hands them to send together, so a burst of publishes costs one NOTIFY (or one insert)
// instead of one each, and identical messages of a batch are sent once. Publish waits for
// its batch to be sent, which a failed send tries again for a while (see sendAttempts).
type batcher struct {
	pace    pacer
	send    func(ctx context.Context, msgs []wire) error
	backoff loop.Backoff // between attempts to send a batch

	mu      sync.Mutex // protects pending, waiters, closed
	pending []wire
	waiters []chan error
	closed  bool

	l         *loop.Loop
	closeOnce sync.Once
}

func newBatcher(window time.Duration, send func(context.Context, []wire) error) *batcher {
	b := &batcher{pace: pacer{window: window, burst: sendBurst}, send: send, backoff: sendBackoff}
	b.l = loop.StartAfter(loop.Forever, b.step)
	return b
}

func (b *batcher) publish(ctx context.Context, m wire) error {
	res := make(chan error, 1)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.pending = append(b.pending, m)
	b.waiters = append(b.waiters, res)
	b.mu.Unlock()
	b.l.Kick()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		// The message may still go out with its batch; the caller just stops waiting.
		return ctx.Err()
	}
}

// step sends what is pending, when the pacer lets it; each publish kicks it. Close cuts
// the wait short.
func (b *batcher) step(ctx context.Context) time.Duration {
	loop.Sleep(ctx, b.pace.wait(time.Now()))
	start := time.Now()
	if b.flush(ctx, true) {
		// Only a send spends the pacer's allowance: a kick whose message went with the
		// send before finds nothing, and must not delay the next.
		b.pace.sent(start)
	}
	return loop.Forever
}

// sendBurst is how many sends may go at once after a quiet spell (see pacer).
const sendBurst = 2

// pacer spaces a batcher's sends to at most one per window on average, letting up to burst
// go at once after a quiet spell (the generic cell rate algorithm). Each send has a price
// beyond its statement: on PostgreSQL a NOTIFY takes the database's notification lock at
// commit, which serialises the commits that notify, and every listening connection of the
// database, one per instance, then reads it in a transaction of its own. Under load each
// send carries everything published since the one before, so the pacing bounds that price
// by time instead of by the number of messages; at a light rate no message waits, even
// one that follows another closely.
type pacer struct {
	window time.Duration
	burst  int
	due    time.Time // when the next send would go if none went early; zero at first
}

// wait is how long a send ready at now waits.
func (p *pacer) wait(now time.Time) time.Duration {
	early := time.Duration(p.burst-1) * p.window
	return max(0, p.due.Add(-early).Sub(now))
}

// sent records a send at now.
func (p *pacer) sent(now time.Time) {
	if now.After(p.due) {
		p.due = now
	}
	p.due = p.due.Add(p.window)
}

// A batch whose send fails is sent again, with backoff, for a while before it is dropped:
// a signal is a hint, but a receiver that trusts the bus (see [Vouching]) finds what a lost
// one announced only at its Backstop, so a transient failure (a broken pooled connection, a
// busy SQLite file, a statement that timed out under load) must not lose it.
const (
	sendAttempts = 5
	sendRetryFor = 2 * time.Second // no new attempt starts later than this after the first
)

var sendBackoff = loop.Backoff{Min: 50 * time.Millisecond, Max: 800 * time.Millisecond}

// flush sends what is pending, and reports whether there was anything; with retry it tries
// again after a failure, until ctx ends (close sends once). Every publisher of the batch
// gets the final outcome.
func (b *batcher) flush(ctx context.Context, retry bool) bool {
	b.mu.Lock()
	msgs, waiters := b.pending, b.waiters
	b.pending, b.waiters = nil, nil
	b.mu.Unlock()
	if len(msgs) == 0 {
		return false
	}
	msgs = dedupe(msgs)
	backoff := b.backoff
	start := time.Now()
	var err error
	for attempt := 1; ; attempt++ {
		sctx, cancel := context.WithTimeout(context.Background(), loop.StatementTimeout)
		err = b.send(sctx, msgs)
		cancel()
		if err == nil || !retry || attempt == sendAttempts || time.Since(start) > sendRetryFor ||
			!loop.Sleep(ctx, backoff.Next()) {
			break
		}
	}
	for _, w := range waiters {
		w <- err
	}
	return true
}

// close refuses new messages, stops the loop and sends what is still pending. A second
// close waits for the first.
func (b *batcher) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.closeOnce.Do(func() {
		b.l.Stop()
		b.flush(context.Background(), false)
	})
}

// dedupe drops repeats of a message within one batch, keeping the first's position.
func dedupe(msgs []wire) []wire {
	if len(msgs) < 2 {
		return msgs
	}
	seen := make(map[string]struct{}, len(msgs))
	out := msgs[:0:0]
	for _, m := range msgs {
		key := m.C + "\x00" + m.F + "\x00" + string(m.P)
		if _, dup := seen[key]; dup {
			continue
		}
		seen[key] = struct{}{}
		out = append(out, m)
	}
	return out
}
