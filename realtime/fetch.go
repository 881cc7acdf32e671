package realtime

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"time"

	"github.com/twicehq/twice/internal/loop"
)

// message is one message read from a stream's history.
type message struct {
	off  int64
	data string
}

// fetch is the fetcher's round: it reads every stream marked since the last, and waits
// for the next mark. A stream whose read failed stays marked and is read again after a
// backoff, not at the next poll (a backstop of 30 seconds while the bus vouches for its
// delivery): a blip of the database delays its connections' messages by as much as the
// blip, no more.
func (h *Hub) fetch(ctx context.Context) time.Duration {
	h.mu.Lock()
	keys := slices.Collect(maps.Keys(h.dirty))
	clear(h.dirty)
	h.mu.Unlock()
	var failed error
	for _, k := range keys {
		if ctx.Err() != nil {
			return loop.Forever
		}
		if err := h.fetchStream(ctx, k); err != nil {
			failed = err
			h.failedReads.Add(1)
			h.mu.Lock()
			if h.streams[k] != nil {
				h.dirty[k] = true // read again after the backoff: no kick
			}
			h.mu.Unlock()
		}
	}
	h.failing.Report(h.log, failed, "realtime: reading the history failed; retrying", "realtime: reading the history works again")
	if failed != nil {
		return h.retry.Next()
	}
	h.retry.Reset()
	return loop.Forever
}

// offer gives the message data, at offset off of stream key in epoch, to each connection
// here whose position on the stream is the offset before it, as the history would; for
// any other (a gap, an epoch it does not know, a full buffer) it marks the stream for the
// fetcher, which reads the history. The message must come from this instance or from a
// signed bus.
func (h *Hub) offer(key, epoch string, off int64, data json.RawMessage) {
	h.mu.Lock()
	s := h.streams[key]
	if s == nil {
		h.mu.Unlock()
		return
	}
	read := false
	frames := messageFrames{}
	for c, sb := range s.subs {
		switch {
		case sb.behind:
			// resumed by its writer, from the history
		case sb.epoch == epoch && off <= sb.last:
			// has it
		case sb.epoch == epoch && off == sb.last+1 && c.room() > 0:
			sb.last = off
			c.queue(frames.get(h, sb.name, epoch, off, data))
			h.fromBus.Add(1)
		default:
			read = true
		}
	}
	if read {
		h.dirty[key] = true
	}
	h.mu.Unlock()
	if read && h.fetcher != nil {
		h.fetcher.Kick()
	}
}

// fetchStream reads stream key after the lowest position a connection here holds on it,
// and gives each connection what follows its own position.
func (h *Hub) fetchStream(ctx context.Context, key string) error {
	h.mu.Lock()
	s := h.streams[key]
	if s == nil {
		h.mu.Unlock()
		return nil
	}
	// From the lowest position of the subscriptions not behind, as many messages as the
	// roomiest of their buffers takes.
	from, limit := int64(-1), 1
	for c, sb := range s.subs {
		if sb.behind {
			continue
		}
		if from < 0 || sb.last < from {
			from = sb.last
		}
		limit = max(limit, min(c.room(), fetchBatch))
	}
	h.mu.Unlock()
	if from < 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, loop.StatementTimeout)
	defer cancel()
	h.reads.Add(1)
	rows, err := h.st.Reader().Query(ctx, h.q.fetch, h.d.Service, key, from, limit)
	if err != nil {
		return err
	}
	defer rows.Close()
	var epoch string
	var top int64
	var msgs []message
	found := false
	for rows.Next() {
		var off *int64
		var data *string
		if err := rows.Scan(&epoch, &top, &off, &data); err != nil {
			return err
		}
		found = true
		if off != nil && data != nil {
			msgs = append(msgs, message{*off, *data})
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if !found {
		return nil // no row: the stream was never published to, or was reset since
	}
	h.deliver(key, from, epoch, top, msgs, len(msgs) == limit)
	if len(msgs) == limit {
		h.mark(key) // more to read
	}
	return nil
}

// deliver gives each connection following stream key the messages msgs (read after
// offset from, in a stream at epoch whose last offset is top; full if the read stopped at
// its limit) that follow its position.
func (h *Hub) deliver(key string, from int64, epoch string, top int64, msgs []message, full bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.streams[key]
	if s == nil {
		return
	}
	frames := messageFrames{}
	for c, sb := range s.subs {
		if sb.behind {
			continue // resumed by its writer, once its buffer has room
		}
		if sb.epoch != epoch {
			if sb.epoch != "" || sb.last != 0 {
				// The stream was reset: what the connection holds is gone.
				sb.epoch, sb.last = epoch, top
				c.lost(sb, "epoch")
				continue
			}
			sb.epoch = epoch // subscribed before the stream's first message
		}
		if sb.last < from {
			continue // subscribed after this read began: the next read is its
		}
		// The first message after the connection's position: the first read, or what
		// follows the last one read (top+1 if none).
		next := top + 1
		for _, m := range msgs {
			if m.off > sb.last {
				next = m.off
				break
			}
		}
		if next == top+1 && full {
			continue // the batch ends before this connection's position: the next read
		}
		if next > sb.last+1 && top > sb.last {
			// Pruned before this connection read it.
			sb.last = next - 1
			c.lost(sb, "pruned")
		}
		for _, m := range msgs {
			if m.off != sb.last+1 {
				continue
			}
			if c.room() <= 0 && c.fallBehind(sb) {
				break
			}
			sb.last = m.off
			c.queue(frames.get(h, sb.name, epoch, m.off, json.RawMessage(m.data)))
			h.fromHistory.Add(1)
		}
	}
}

// fallBehind marks sb behind, as c's buffer has no room for its next message, and
// reports whether it still has none: the writer, which has at least half the buffer to
// write, then resumes it. If the writer made room meanwhile, sb is not behind. h.mu is
// held.
func (c *client) fallBehind(sb *sub) bool {
	c.behind.Store(true) // before the second look, so the writer cannot miss it
	if c.room() > 0 {
		return false
	}
	sb.behind = true
	return true
}

// messageFrames are the message frames of one delivery, each encoded once for every
// connection that gets it: a room's message goes to all its connections as the same bytes.
type messageFrames map[frameKey][]byte

type frameKey struct {
	name string // on the wire
	off  int64
}

// get returns the frame of the message data at offset off of epoch, for subscriptions named
// name; nil, logged, if it cannot be encoded.
func (f messageFrames) get(h *Hub, name, epoch string, off int64, data json.RawMessage) []byte {
	k := frameKey{name, off}
	if b, ok := f[k]; ok {
		return b
	}
	b, err := json.Marshal(outFrame{Type: "message", Room: name, Epoch: epoch, Offset: ptr(off), Data: data})
	if err != nil {
		h.log.Error("realtime: cannot encode a message", "err", err)
	}
	f[k] = b
	return b
}
