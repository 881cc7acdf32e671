package bus

import (
	"context"
	"sync"
	"time"
)

// wire is a message as it travels through the store. P is base64 in JSON.
type wire struct {
	C string `json:"c"`
	P []byte `json:"p,omitempty"`
	F string `json:"f"`
}

// batcher gathers the messages published within one window and hands them to send
// together, so a burst of publishes costs one NOTIFY (or one insert) instead of one each,
// and identical messages in a window are sent once. Publish waits for its batch to be sent.
type batcher struct {
	window time.Duration
	send   func(ctx context.Context, msgs []wire) error

	mu      sync.Mutex // protects pending, waiters, closed
	pending []wire
	waiters []chan error
	closed  bool

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newBatcher(window time.Duration, send func(context.Context, []wire) error) *batcher {
	b := &batcher{window: window, send: send, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
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
	select {
	case b.kick <- struct{}{}:
	default:
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		// The message may still go out with its batch; the caller just stops waiting.
		return ctx.Err()
	}
}

func (b *batcher) loop() {
	defer close(b.done)
	var last time.Time
	for {
		select {
		case <-b.stop:
			b.flush()
			return
		case <-b.kick:
		}
		// At most one send per window keeps NOTIFY from serialising commits: a message
		// after a quiet spell goes at once, and under load each send carries everything
		// that arrived during the window before it.
		if wait := time.Until(last.Add(b.window)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-b.stop:
			case <-t.C:
			}
			t.Stop()
		}
		last = time.Now()
		b.flush()
	}
}

func (b *batcher) flush() {
	b.mu.Lock()
	msgs, waiters := b.pending, b.waiters
	b.pending, b.waiters = nil, nil
	b.mu.Unlock()
	if len(msgs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := b.send(ctx, dedupe(msgs))
	cancel()
	for _, w := range waiters {
		w <- err
	}
}

func (b *batcher) close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.done
		return
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	<-b.done
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
