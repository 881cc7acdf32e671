package realtime

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/presence"
	"github.com/twicehq/twice/store"
)

func isNoRows(err error) bool { return errors.Is(err, store.ErrNoRows) }

// errUnavailable marks a subscription that failed because the database did not answer
// (or the connection's presence entry is gone), not because of the client's request: its
// connection is closed with status 1013 (try again later), so that no client believes it
// follows a room it does not.
var errUnavailable = errors.New("realtime: the database is unavailable")

// client is one WebSocket connection held by this instance.
type client struct {
	h    *Hub
	ws   *websocket.Conn
	user string
	pc   *presence.Conn
	out  chan []byte
	// cancel ends the connection's context: its reader and writer stop.
	cancel context.CancelFunc

	// subs are its subscriptions by wire name; guarded by h.mu.
	subs map[string]*sub
	// behind is set when a subscription stopped for want of room in out: the writer then
	// asks for more once out is half empty (see Hub.resume).
	behind atomic.Bool

	shutOnce sync.Once
}

// sub is one subscription of a connection: the stream and the position it has reached.
// Guarded by h.mu.
type sub struct {
	name  string // on the wire: a room, or UserRoom
	key   string // the stream
	epoch string
	last  int64
	// behind: the connection's buffer filled before it got every message; the fetcher
	// skips it until the writer has drained half the buffer.
	behind bool
}

// Handler serves the hub's WebSocket endpoint: it authenticates the upgrade request with
// Config.Authenticate (401 if it fails, or if there is none), checks its Origin (403 from
// a page of another host not in Config.OriginPatterns), and speaks the protocol in the
// package doc until the client goes or the hub closes.
func (h *Hub) Handler() http.Handler { return http.HandlerFunc(h.serve) }

//go:embed js/twice-realtime.js
var script []byte

// Script serves the JavaScript client (js/twice-realtime.js), one file with no build
// step; mount it where pages load it from, such as /twice-realtime.js.
func (h *Hub) Script() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write(script)
	})
}

func (h *Hub) serve(w http.ResponseWriter, r *http.Request) {
	if h.closed() {
		http.Error(w, "realtime: this instance is closing; connect again", http.StatusServiceUnavailable)
		return
	}
	if h.cfg.Authenticate == nil {
		http.Error(w, "realtime: not authenticated (the hub has no Config.Authenticate)", http.StatusUnauthorized)
		return
	}
	user, err := h.cfg.Authenticate(r)
	if err == nil {
		err = presence.CheckUser(user)
	}
	if err != nil {
		http.Error(w, "realtime: not authenticated", http.StatusUnauthorized)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: h.cfg.OriginPatterns})
	if err != nil {
		return // Accept has answered (403 for a foreign origin)
	}
	ws.SetReadLimit(MaxFrame)
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	pc, err := h.presence().Connect(ctx, user)
	if err != nil {
		h.log.Warn("realtime: cannot record the connection's presence; refusing it", "err", err)
		_ = ws.Close(websocket.StatusTryAgainLater, "presence unavailable")
		return
	}
	c := &client{h: h, ws: ws, user: user, pc: pc, out: make(chan []byte, h.cfg.SendBuffer), cancel: cancel,
		subs: map[string]*sub{}}
	h.mu.Lock()
	if h.closed() {
		h.mu.Unlock()
		_ = pc.Close(ctx)
		_ = ws.Close(websocket.StatusGoingAway, "instance closing")
		return
	}
	h.clients[c] = struct{}{}
	h.conns.Add(1)
	h.mu.Unlock()
	defer h.conns.Done()
	defer c.leave()
	c.send(outFrame{Type: "welcome", User: user, Conn: pc.ID()})
	done := make(chan struct{})
	go func() { defer close(done); c.write(ctx) }()
	c.read(ctx)
	cancel()
	<-done
}

// leave forgets the connection, once it has ended.
func (c *client) leave() {
	h := c.h
	h.mu.Lock()
	delete(h.clients, c)
	for _, sb := range c.subs {
		h.unfollow(c, sb)
	}
	h.mu.Unlock()
	c.shut(false)
	if h.crashed.Load() {
		return // as after a crash: the others delete the entry once they count this instance dead
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.WriteTimeout)
	defer cancel()
	if err := c.pc.Close(ctx); err != nil && !errors.Is(err, presence.ErrClosed) {
		h.log.Debug("realtime: closing a connection's presence failed; it goes with this instance", "err", err)
	}
}

// unfollow removes sb from its stream. h.mu is held.
func (h *Hub) unfollow(c *client, sb *sub) {
	if s := h.streams[sb.key]; s != nil {
		delete(s.subs, c)
		if len(s.subs) == 0 {
			delete(h.streams, sb.key)
			delete(h.dirty, sb.key)
		}
	}
}

// shut ends the connection: with status 1001 (going away) so the client reconnects
// elsewhere, or, as a crash, without a closing handshake.
func (c *client) shut(crash bool) {
	if crash {
		c.shutOnce.Do(func() {
			_ = c.ws.CloseNow()
			c.cancel()
		})
		return
	}
	c.end(websocket.StatusGoingAway, "instance closing")
}

// end closes the connection with status and reason, once, without waiting for the
// client's answer, and stops its reader and writer. It reports whether this call did.
func (c *client) end(status websocket.StatusCode, reason string) (ended bool) {
	c.shutOnce.Do(func() {
		go func() { _ = c.ws.Close(status, reason) }()
		c.cancel()
		ended = true
	})
	return ended
}

// resume makes the fetcher read again the streams c fell behind on, now that its buffer
// has room.
func (h *Hub) resume(c *client) {
	h.mu.Lock()
	c.behind.Store(false)
	for _, sb := range c.subs {
		if sb.behind {
			sb.behind = false
			h.dirty[sb.key] = true
		}
	}
	h.mu.Unlock()
	if h.fetcher != nil {
		h.fetcher.Kick()
	}
}

// room is how many messages c's buffer can take now, keeping a reserve for the frames
// that answer the client (subscribed, published, errors).
func (c *client) room() int { return cap(c.out) - len(c.out) - (cap(c.out)/8 + 1) }

// send queues frame f, or closes the connection if its buffer is full: a slow client is
// dropped rather than slowing the others. It never blocks.
func (c *client) send(f outFrame) {
	b, err := json.Marshal(f)
	if err != nil {
		c.h.log.Error("realtime: cannot encode a frame", "err", err)
		return
	}
	c.queue(b)
}

// queue is send for an encoded frame b, which the writer only reads (so connections may
// share it).
func (c *client) queue(b []byte) {
	if b == nil {
		return
	}
	select {
	case c.out <- b:
	default:
		if c.end(websocket.StatusPolicyViolation, "slow client") {
			c.h.slow.Add(1)
		}
	}
}

// lost tells the connection that sb's stream has a gap it cannot recover, and where the
// stream continues. h.mu is held.
func (c *client) lost(sb *sub, reason string) {
	c.send(outFrame{Type: "lost", Room: sb.name, Epoch: sb.epoch, Offset: ptr(sb.last), Reason: reason})
}

// write sends the queued frames until the connection ends.
func (c *client) write(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case b := <-c.out:
			wctx, cancel := context.WithTimeout(ctx, c.h.cfg.WriteTimeout)
			err := c.ws.Write(wctx, websocket.MessageText, b)
			timedOut := errors.Is(wctx.Err(), context.DeadlineExceeded)
			cancel()
			if err != nil {
				// A client that took no frame for WriteTimeout is slow: it goes.
				if timedOut && c.end(websocket.StatusPolicyViolation, "slow client") {
					c.h.slow.Add(1)
				}
				c.cancel()
				return
			}
			if c.behind.Load() && len(c.out) <= cap(c.out)/2 {
				c.h.resume(c)
			}
		}
	}
}

// read handles the client's frames, in order, until the connection ends.
func (c *client) read(ctx context.Context) {
	for {
		typ, b, err := c.ws.Read(ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			c.send(outFrame{Type: "error", Error: "realtime: frames are JSON text"})
			continue
		}
		f, err := parseFrame(b)
		if err != nil {
			c.send(outFrame{Type: "error", Error: err.Error()})
			continue
		}
		switch f.Type {
		case "subscribe":
			err = c.subscribe(ctx, f)
		case "unsubscribe":
			err = c.unsubscribe(ctx, f.Room)
		case "publish":
			err = c.publish(ctx, f)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, errUnavailable) {
				// Answered with an error, the client would go on believing it follows the
				// room, and receive nothing: the connection ends instead, and the client
				// connects again (to any instance) and subscribes anew from its position.
				c.h.log.Debug("realtime: a subscription failed; closing its connection so its client comes back", "err", err)
				c.end(websocket.StatusTryAgainLater, "cannot subscribe now; connect again")
				return
			}
			c.send(outFrame{Type: "error", Room: f.Room, ID: f.ID, Error: err.Error()})
		}
	}
}

// subscribe follows a stream from the client's position if it can be recovered, else
// from the stream's last message.
func (c *client) subscribe(ctx context.Context, f inFrame) error {
	h := c.h
	key := userKey(c.user)
	if f.Room != UserRoom {
		key = roomKey(f.Room)
		if h.cfg.Authorize != nil {
			if err := h.cfg.Authorize(ctx, c.user, f.Room); err != nil {
				return fmt.Errorf("realtime: subscribe to %q refused: %w", f.Room, err)
			}
		}
	}
	h.mu.Lock()
	_, already := c.subs[f.Room]
	n := len(c.subs)
	h.mu.Unlock()
	if already {
		return fmt.Errorf("realtime: already subscribed to %q", f.Room)
	}
	if n >= MaxSubscriptions {
		return fmt.Errorf("realtime: at most %d subscriptions per connection", MaxSubscriptions)
	}
	// The statements are bounded: a database that does not answer ends the connection
	// (errUnavailable), rather than leave its reader waiting.
	sctx, cancel := context.WithTimeout(ctx, loop.StatementTimeout)
	defer cancel()
	var epoch string
	var top, first int64
	if err := h.st.Reader().QueryRow(sctx, h.q.head, h.d.Service, key).Scan(&epoch, &top, &first); err != nil && !isNoRows(err) {
		return fmt.Errorf("%w: subscribe to %q: %w", errUnavailable, f.Room, err)
	}
	sb := &sub{name: f.Room, key: key, epoch: epoch, last: top}
	var recovered *bool
	if f.Offset != nil {
		ok := recoverable(*f.Offset, f.Epoch, epoch, top, first)
		recovered = &ok
		if ok {
			sb.last = *f.Offset
		}
	}
	if f.Room != UserRoom {
		if err := c.pc.Join(sctx, f.Room); err != nil {
			return fmt.Errorf("%w: subscribe to %q: %w", errUnavailable, f.Room, err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	c.subs[f.Room] = sb
	s := h.streams[key]
	if s == nil {
		s = &stream{subs: map[*client]*sub{}}
		h.streams[key] = s
	}
	s.subs[c] = sb
	// Queued before any message of the stream: the fetcher delivers under h.mu too.
	c.send(outFrame{Type: "subscribed", Room: f.Room, Epoch: sb.epoch, Offset: ptr(sb.last), Recovered: recovered})
	h.dirty[key] = true
	if h.fetcher != nil {
		h.fetcher.Kick()
	}
	return nil
}

// recoverable reports whether a client at offset off of epoch want can be given every
// message after it, from a stream now at epoch cur whose history holds first..top (first
// 0: none).
func recoverable(off int64, want, cur string, top, first int64) bool {
	switch {
	case off > top:
		return false // a position the stream never had
	case want == "" && off == 0:
		// Subscribed before the stream's first message: recoverable while the history
		// starts at its beginning.
		return top == 0 || first == 1
	case want != cur:
		return false // reset since
	case off == top:
		return true
	default:
		return first != 0 && first <= off+1
	}
}

// unsubscribe stops following room.
func (c *client) unsubscribe(ctx context.Context, room string) error {
	h := c.h
	h.mu.Lock()
	sb := c.subs[room]
	if sb != nil {
		delete(c.subs, room)
		h.unfollow(c, sb)
		c.send(outFrame{Type: "unsubscribed", Room: room})
	}
	h.mu.Unlock()
	if sb == nil {
		return fmt.Errorf("realtime: not subscribed to %q", room)
	}
	if room != UserRoom {
		if err := c.pc.Leave(ctx, room); err != nil && !errors.Is(err, presence.ErrGone) {
			return err
		}
	}
	return nil
}

// publish publishes the client's message, if Config.CanPublish allows it.
func (c *client) publish(ctx context.Context, f inFrame) error {
	h := c.h
	if h.cfg.CanPublish == nil {
		return errors.New("realtime: clients may not publish (the hub has no Config.CanPublish)")
	}
	if err := h.cfg.CanPublish(ctx, c.user, f.Room); err != nil {
		return fmt.Errorf("realtime: publish to %q refused: %w", f.Room, err)
	}
	pos, err := h.Publish(ctx, f.Room, f.Data)
	if err != nil {
		return err
	}
	c.send(outFrame{Type: "published", Room: f.Room, Epoch: pos.Epoch, Offset: ptr(pos.Offset), ID: f.ID})
	return nil
}
