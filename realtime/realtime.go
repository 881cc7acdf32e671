// Package realtime is a WebSocket hub whose messages reach a user or a room on every
// instance of a service, and that a client reconnecting to any instance resumes without a
// silent gap: it gets exactly the messages it missed, or is told that recovery is
// impossible.
//
// # History and delivery
//
// Every message belongs to a stream: a room, or one user's own stream ([Hub.SendToUser]).
// A stream's history lives in the database, in the service's tables: publishing takes the
// stream's next offset and stores the message in the publisher's transaction
// ([Hub.PublishTx] joins the caller's, so a message is sent only if the business write
// commits: the outbox). A stream has an epoch, a random id chosen when its row is made; a
// stream reset ([Hub.Reset]) or forgotten after its history was pruned gets a new epoch.
// The history keeps Config.HistorySize messages per stream for Config.HistoryAge; the
// leader prunes the rest. This is Centrifugo's model of a stream position, an (offset,
// epoch) pair, with the database as the store.
//
// Delivery: after a commit, the bus carries the message to every instance. With a cluster
// secret (twice.Config.ClusterSecret) the bus signs what it sends and drops what does not
// verify, and it carries the message itself (if it fits in bus.MaxPayload): an instance
// gives it at once to each of its connections whose position is the offset before it, and
// reads nothing. Without a secret whoever can reach the bus could send one, so it carries
// only the stream's name, a hint. Whenever a connection is not at the offset before (a hint,
// a message that overtook another, a new epoch, a full buffer), its instance reads the
// stream's messages after the lowest position its connections hold on that stream, in one
// statement, and gives each connection the ones after its own position, in offset order.
// So a connection sees a stream's offsets without a hole, and the history, not the bus,
// decides what the messages are whenever they are in doubt. A lost message delays delivery
// until the next poll (Config.Poll, or block.Deps.Backstop while the bus vouches for its
// delivery) but loses nothing; a failed read is tried again after a short backoff; and a
// Lost message from the bus makes every stream with a connection be read again. A gap can
// come only from pruning; it is then announced ("lost") before the message that follows it.
//
// Each connection has a bounded send buffer (Config.SendBuffer frames). One that falls
// behind (a long recovery, a burst) is fed from the history as its buffer drains, never by
// holding up the others; one that takes no frame for Config.WriteTimeout, or whose buffer
// has no room for an answer to it, is closed as a slow client. It reconnects and resumes.
//
// Each connection is a presence connection (package presence): connected on open, in the
// rooms it subscribes to, closed with it, so Where and Online see the hub's users.
//
// # Wire protocol
//
// Text frames, each one JSON object with a "type". A client sends:
//
//	{"type":"subscribe","room":"lobby"}                          from now on
//	{"type":"subscribe","room":"lobby","offset":41,"epoch":"e1"} resume after offset 41 of epoch e1
//	{"type":"unsubscribe","room":"lobby"}
//	{"type":"publish","room":"lobby","data":{...},"id":"c7"}     if Config.CanPublish allows it
//
// The room "@user" is the connected user's own stream (what [Hub.SendToUser] sends to);
// any other name is a room (1 to 256 bytes of UTF-8, no NUL, not starting with "@").
// "data" is any JSON value of at most [MaxMessage] bytes; "id" is the client's, echoed in
// the answer. The hub sends:
//
//	{"type":"welcome","user":"alice","conn":"…"}
//	{"type":"subscribed","room":"lobby","epoch":"e1","offset":41,"recovered":true}
//	{"type":"message","room":"lobby","epoch":"e1","offset":42,"data":{...}}
//	{"type":"lost","room":"lobby","epoch":"e2","offset":7,"reason":"epoch"}
//	{"type":"unsubscribed","room":"lobby"}
//	{"type":"published","room":"lobby","offset":43,"id":"c7"}
//	{"type":"error","room":"lobby","id":"c7","error":"…"}
//
// "subscribed" gives the position the stream continues from: messages follow with the
// offsets after it. With a position asked for, "recovered" says whether it was honoured:
// false means the history no longer reaches back to it, or its epoch is not the stream's
// (the stream was reset), and the client must reload what it shows from the application.
// "lost" says the same later in a subscription (history pruned while the connection fell
// behind, or the stream reset): the stream continues after the position it gives. A
// client keeps, per room, the epoch and offset of the last message (or of the last
// "subscribed" or "lost") and sends them when it subscribes again, to any instance.
//
// The JavaScript client in js/twice-realtime.js ([Hub.Script] serves it) does that, with
// reconnection and backoff.
package realtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/presence"
	"github.com/twicehq/twice/store"
)

// Defaults.
const (
	// DefaultPoll is [Config.Poll]'s default.
	DefaultPoll = time.Second
	// DefaultHistorySize is [Config.HistorySize]'s default.
	DefaultHistorySize = 1000
	// DefaultHistoryAge is [Config.HistoryAge]'s default.
	DefaultHistoryAge = 10 * time.Minute
	// DefaultSendBuffer is [Config.SendBuffer]'s default.
	DefaultSendBuffer = 256
	// DefaultWriteTimeout is [Config.WriteTimeout]'s default.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultPruneInterval is how often the leader prunes the history.
	DefaultPruneInterval = 10 * time.Second
)

// Limits.
const (
	// MaxMessage is the largest message's data, in bytes of JSON.
	MaxMessage = 64 << 10
	// MaxFrame is the largest frame a client may send, in bytes.
	MaxFrame = MaxMessage + 1024
	// MaxSubscriptions is the most rooms one connection may be subscribed to.
	MaxSubscriptions = 256
	// MinSendBuffer is the smallest Config.SendBuffer.
	MinSendBuffer = 4
	// fetchBatch is how many messages one read of a stream returns.
	fetchBatch = 500
)

// UserRoom is the name, on the wire, of the connected user's own stream.
const UserRoom = "@user"

// Channel is the bus channel hints are sent on: the payload names the stream to read.
const Channel = "twice.realtime"

// Errors.
var (
	// ErrBadRoom is returned for a room name that is empty, over presence.MaxRoom bytes,
	// not UTF-8, holds a NUL or starts with "@".
	ErrBadRoom = errors.New("realtime: bad room")
	// ErrTooLarge is returned for a message over [MaxMessage] bytes.
	ErrTooLarge = errors.New("realtime: message too large")
	// ErrClosed is returned once the hub is closed.
	ErrClosed = errors.New("realtime: closed")
)

// Config configures [New].
type Config struct {
	// Authenticate says who opens a connection, from its upgrade request (a session
	// cookie, a token); an error refuses it with 401. Required to serve [Hub.Handler]:
	// without it every connection is refused.
	Authenticate func(r *http.Request) (user string, err error)
	// Authorize says whether user may subscribe to room; an error refuses the
	// subscription, with the error's text. A user may always subscribe to their own
	// stream ("@user"). Defaults to nil: every room.
	Authorize func(ctx context.Context, user, room string) error
	// CanPublish says whether user may publish to room from the connection; an error
	// refuses it. Defaults to nil: clients may not publish, only the server does.
	CanPublish func(ctx context.Context, user, room string) error
	// OriginPatterns are the hosts, besides the request's own, that pages may connect
	// from (coder/websocket's AcceptOptions.OriginPatterns, such as "app.example.com"
	// or "*.example.com"). Defaults to none: same origin only.
	OriginPatterns []string
	// HistorySize is how many messages each stream keeps for recovery. Defaults to
	// [DefaultHistorySize] (1000).
	HistorySize int
	// HistoryAge is how long a message is kept for recovery. Defaults to
	// [DefaultHistoryAge] (10 minutes).
	HistoryAge time.Duration
	// SendBuffer is how many frames may wait for a connection: its memory bound. A
	// connection that falls behind gets the rest from the history as it drains. At least
	// [MinSendBuffer]. Defaults to [DefaultSendBuffer] (256).
	SendBuffer int
	// WriteTimeout bounds writing one frame to a connection: one that takes none for
	// that long is closed as a slow client. Defaults to [DefaultWriteTimeout] (10 seconds).
	WriteTimeout time.Duration
	// Poll is how often each instance reads the streams its connections follow in case a
	// hint was lost, while the bus cannot vouch for its delivery (block.Deps.Backstop
	// applies while it can). Defaults to [DefaultPoll] (1 second).
	Poll time.Duration
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.HistorySize == 0 {
		c.HistorySize = DefaultHistorySize
	}
	if c.HistoryAge == 0 {
		c.HistoryAge = DefaultHistoryAge
	}
	if c.SendBuffer == 0 {
		c.SendBuffer = DefaultSendBuffer
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Poll == 0 {
		c.Poll = DefaultPoll
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.HistorySize < 0:
		return errors.New("realtime: Config.HistorySize cannot be negative")
	case c.HistoryAge < 0:
		return errors.New("realtime: Config.HistoryAge cannot be negative")
	case c.SendBuffer < 0 || c.SendBuffer > 0 && c.SendBuffer < MinSendBuffer:
		return fmt.Errorf("realtime: Config.SendBuffer must be at least %d frames", MinSendBuffer)
	case c.WriteTimeout < 0:
		return errors.New("realtime: Config.WriteTimeout cannot be negative")
	case c.Poll < 0:
		return errors.New("realtime: Config.Poll cannot be negative")
	}
	return nil
}

// Stats are what an instance's hub has done since it started: counters, and its
// connections now. Reading them runs no statement.
type Stats struct {
	// Connections is how many connections this instance holds now.
	Connections int `json:"connections"`
	// Streams is how many streams (rooms, users' own) they follow.
	Streams int `json:"streams"`
	// Direct counts the messages given to a connection as they arrived on the bus (or were
	// published here), with no read: the signed bus's path.
	Direct int64 `json:"direct"`
	// FromHistory counts those given from a read of the history: hints, recoveries, gaps.
	FromHistory int64 `json:"from_history"`
	// Reads counts the reads of the history, and FailedReads those that failed (each is
	// tried again).
	Reads       int64 `json:"reads"`
	FailedReads int64 `json:"failed_reads"`
	// SlowClosed counts the connections closed because their client took no frame in time
	// or let its buffer fill.
	SlowClosed int64 `json:"slow_closed"`
}

// Stats returns the hub's counters on this instance.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	conns, streams := len(h.clients), len(h.streams)
	h.mu.Unlock()
	return Stats{Connections: conns, Streams: streams, Direct: h.fromBus.Load(), FromHistory: h.fromHistory.Load(),
		Reads: h.reads.Load(), FailedReads: h.failedReads.Load(), SlowClosed: h.slow.Load()}
}

// Position is a place in a stream: the offset of a message and the stream's epoch.
type Position struct {
	Offset int64  `json:"offset"`
	Epoch  string `json:"epoch"`
}

// Hub is one instance's end of the service's real-time hub. It is safe for concurrent
// use.
type Hub struct {
	d        block.Deps
	st       *store.Store
	cfg      Config
	q        queries
	log      *slog.Logger
	presence func() *presence.Presence

	mu      sync.Mutex // protects streams, clients, dirty
	streams map[string]*stream
	clients map[*client]struct{}
	dirty   map[string]bool

	fetcher, poller *loop.Loop // set by Start
	// The fetcher's: its retries after a failed read, and their logging.
	retry       loop.Backoff
	failing     loop.Failing
	failedReads atomic.Int64
	reads       atomic.Int64 // of the history, by the fetcher
	// Messages given to connections, straight from the bus or this instance's publish, or
	// from a read of the history; connections closed as slow.
	fromBus, fromHistory, slow atomic.Int64

	unsubscribe func()
	conns       sync.WaitGroup // the connections served
	stopped     atomic.Bool
	crashed     atomic.Bool // abandoned: the connections' presence entries stay, as after a crash
	startOnce   sync.Once
	closeOnce   sync.Once
}

// stream is a stream some connections of this instance follow.
type stream struct {
	subs map[*client]*sub
}

// New returns the hub of d's service on d's instance; presence gives the presence its
// connections are recorded in. It starts nothing and runs no statement.
func New(d block.Deps, presence func() *presence.Presence, cfg Config) (*Hub, error) {
	d = d.WithDefaults()
	if err := d.Validate("realtime", true); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if presence == nil {
		return nil, errors.New("realtime: a presence is required")
	}
	return &Hub{d: d, st: d.Store, cfg: cfg.WithDefaults(), q: queriesFor(d.Store), log: d.Logger, presence: presence,
		streams: map[string]*stream{}, clients: map[*client]struct{}{}, dirty: map[string]bool{}, retry: loop.Retry}, nil
}

// Start begins delivering: on every hint from the bus, every Lost message, and every
// Config.Poll.
func (h *Hub) Start(ctx context.Context) error {
	h.startOnce.Do(func() {
		h.fetcher = loop.Start(h.fetch)
		h.poller = loop.StartAfter(h.d.Poll(h.cfg.Poll), func(ctx context.Context) time.Duration {
			h.markAll()
			return h.d.Poll(h.cfg.Poll)
		})
		if b := h.d.Bus; b != nil {
			h.unsubscribe = b.Subscribe(Channel, h.hint)
		}
	})
	if h.closed() {
		return ErrClosed
	}
	return nil
}

// hint handles a bus message: a stream's name, or a message (a [note]); the stream is read
// again if a connection here follows it, unless the note is signed and its message is
// the next each connection expects. Lost reads every followed stream again. A forged hint
// costs one read; an unsigned note is only a hint.
func (h *Hub) hint(m bus.Message) {
	if m.Lost {
		h.markAll()
		h.poller.Kick() // the next wait is the shorter poll
		return
	}
	if len(m.Payload) == 0 || m.Payload[0] != '{' {
		h.mark(string(m.Payload))
		return
	}
	var n note
	if json.Unmarshal(m.Payload, &n) != nil || n.Off < 1 || len(n.Data) == 0 {
		return // not one of ours
	}
	if !h.d.Signed {
		h.mark(n.Key) // anyone could have sent it: the history says what the message is
		return
	}
	h.offer(n.Key, n.Epoch, n.Off, n.Data)
}

// note is what the bus carries for a message when it signs its messages (block.Deps.Signed)
// and the message fits in [bus.MaxPayload]: the message itself, which the instances whose
// connections are at the offset before it deliver without reading the history. Otherwise
// it carries the stream's name.
type note struct {
	Key   string          `json:"k"`
	Epoch string          `json:"e"`
	Off   int64           `json:"o"`
	Data  json.RawMessage `json:"d"`
}

// payload is what the bus carries for the message data stored at pos in stream key.
func (h *Hub) payload(key string, pos Position, data string) []byte {
	if h.d.Signed && len(data) < bus.MaxPayload {
		b, err := json.Marshal(note{Key: key, Epoch: pos.Epoch, Off: pos.Offset, Data: json.RawMessage(data)})
		if err == nil && len(b) <= bus.MaxPayload {
			return b
		}
	}
	return []byte(key)
}

// mark makes the fetcher read stream key, if a connection here follows it.
func (h *Hub) mark(key string) {
	h.mu.Lock()
	_, ok := h.streams[key]
	if ok {
		h.dirty[key] = true
	}
	h.mu.Unlock()
	if ok && h.fetcher != nil {
		h.fetcher.Kick()
	}
}

// markAll makes the fetcher read every stream a connection here follows.
func (h *Hub) markAll() {
	h.mu.Lock()
	for k := range h.streams {
		h.dirty[k] = true
	}
	n := len(h.dirty)
	h.mu.Unlock()
	if n > 0 && h.fetcher != nil {
		h.fetcher.Kick()
	}
}

// roomKey is a room's stream; userKey a user's.
func roomKey(room string) string { return "r:" + room }
func userKey(user string) string { return "u:" + user }

// CheckRoom reports whether room is acceptable as a room name, with an error that says why
// not.
func CheckRoom(room string) error {
	if err := presence.CheckRoom(room); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRoom, err)
	}
	if strings.HasPrefix(room, "@") {
		return fmt.Errorf("%w: %q: names starting with @ are the hub's", ErrBadRoom, room)
	}
	return nil
}

// encode checks and marshals a message.
func encode(msg any) (string, error) {
	b, err := json.Marshal(msg)
	if err != nil {
		return "", fmt.Errorf("realtime: message: %w", err)
	}
	if len(b) > MaxMessage {
		return "", fmt.Errorf("%w: %d bytes of JSON, the limit is %d", ErrTooLarge, len(b), MaxMessage)
	}
	return string(b), nil
}

// Publish sends msg, marshalled as JSON (a json.RawMessage is sent as it is), to every
// connection subscribed to room on every instance, and keeps it in the room's history. It
// returns the message's position.
func (h *Hub) Publish(ctx context.Context, room string, msg any) (Position, error) {
	if err := CheckRoom(room); err != nil {
		return Position{}, err
	}
	return h.send(ctx, roomKey(room), msg)
}

// SendToUser sends msg to every connection of user on every instance (every tab), and keeps
// it in the user's history, which their connections resume from as from a room's (the
// room "@user" on the wire).
func (h *Hub) SendToUser(ctx context.Context, user string, msg any) (Position, error) {
	if err := presence.CheckUser(user); err != nil {
		return Position{}, err
	}
	return h.send(ctx, userKey(user), msg)
}

// PublishTx is [Hub.Publish] in the caller's transaction tx (*sql.Tx, pgx.Tx or store.Tx):
// the message is stored, and sent, only if tx commits. The room's row stays locked until
// then, so keep the transaction short.
func (h *Hub) PublishTx(ctx context.Context, tx any, room string, msg any) (Position, error) {
	if err := CheckRoom(room); err != nil {
		return Position{}, err
	}
	return h.sendTx(ctx, tx, roomKey(room), msg)
}

// SendToUserTx is [Hub.SendToUser] in the caller's transaction tx.
func (h *Hub) SendToUserTx(ctx context.Context, tx any, user string, msg any) (Position, error) {
	if err := presence.CheckUser(user); err != nil {
		return Position{}, err
	}
	return h.sendTx(ctx, tx, userKey(user), msg)
}

func (h *Hub) send(ctx context.Context, key string, msg any) (Position, error) {
	data, err := encode(msg)
	if err != nil {
		return Position{}, err
	}
	var pos Position
	err = h.st.InTx(ctx, func(tx store.Tx) error {
		pos, err = h.store(ctx, tx, key, data)
		return err
	})
	if err != nil {
		return Position{}, err
	}
	// After the commit: a NOTIFY in the transaction would serialise commits on PostgreSQL.
	// A hint lost with this process is made up for by the others' poll.
	h.announce(ctx, key, pos, data)
	return pos, nil
}

func (h *Hub) sendTx(ctx context.Context, tx any, key string, msg any) (Position, error) {
	data, err := encode(msg)
	if err != nil {
		return Position{}, err
	}
	q, err := h.st.Wrap(tx)
	if err != nil {
		return Position{}, err
	}
	pos, err := h.store(ctx, q, key, data)
	if err != nil {
		return Position{}, err
	}
	if b := h.d.Bus; b != nil {
		if err := b.PublishTx(ctx, tx, Channel, h.payload(key, pos, data)); err != nil {
			return Position{}, fmt.Errorf("realtime: hint: %w", err)
		}
	}
	return pos, nil
}

// store takes the stream's next offset and stores the message at it, in q's transaction.
func (h *Hub) store(ctx context.Context, q store.Querier, key, data string) (Position, error) {
	if h.closed() {
		return Position{}, ErrClosed
	}
	var pos Position
	if err := q.QueryRow(ctx, h.q.next, h.st.NowArg(), h.d.Service, key, newEpoch()).Scan(&pos.Offset, &pos.Epoch); err != nil {
		return Position{}, fmt.Errorf("realtime: next offset: %w", err)
	}
	if _, err := q.Exec(ctx, h.q.insert, h.st.NowArg(), h.d.Service, key, pos.Offset, data); err != nil {
		return Position{}, fmt.Errorf("realtime: store: %w", err)
	}
	return pos, nil
}

// announce gives every instance, this one at once, the message data stored at pos in
// stream key, or tells it to read the stream.
func (h *Hub) announce(ctx context.Context, key string, pos Position, data string) {
	h.offer(key, pos.Epoch, pos.Offset, json.RawMessage(data))
	if b := h.d.Bus; b != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loop.SignalTimeout)
		defer cancel()
		if err := b.Publish(ctx, Channel, h.payload(key, pos, data)); err != nil {
			h.log.Debug("realtime: hint failed; the others find the message at their next poll", "err", err)
		}
	}
}

func newEpoch() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Reset forgets room's history: the next message starts a new epoch, and every connection
// subscribed to it, on every instance, is told its recovery is impossible. For when the
// application's state the room reflects was rebuilt.
func (h *Hub) Reset(ctx context.Context, room string) error {
	if err := CheckRoom(room); err != nil {
		return err
	}
	key := roomKey(room)
	err := h.st.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.Exec(ctx, h.q.resetMessages, h.d.Service, key); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, h.q.resetRoom, h.d.Service, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("realtime: reset %q: %w", room, err)
	}
	return nil
}

// Prune deletes the history beyond Config.HistorySize messages per stream and older than
// Config.HistoryAge, and forgets the streams left empty and quiet for HistoryAge. The
// leader runs it every [DefaultPruneInterval]; it returns how many messages it deleted.
func (h *Hub) Prune(ctx context.Context) (int64, error) {
	n, err := h.st.Exec(ctx, h.q.pruneCount, h.d.Service, h.cfg.HistorySize)
	if err != nil {
		return 0, fmt.Errorf("realtime: prune: %w", err)
	}
	age := h.cfg.HistoryAge.Milliseconds()
	k, err := h.st.Exec(ctx, h.q.pruneAge, h.st.NowArg(), h.d.Service, age)
	if err != nil {
		return n, fmt.Errorf("realtime: prune: %w", err)
	}
	if _, err := h.st.Exec(ctx, h.q.pruneRooms, h.st.NowArg(), h.d.Service, age); err != nil {
		return n + k, fmt.Errorf("realtime: prune: %w", err)
	}
	return n + k, nil
}

// Lead runs on the leader: it prunes the history every [DefaultPruneInterval].
func (h *Hub) Lead(ctx context.Context) {
	loop.Every(ctx, DefaultPruneInterval, func(ctx context.Context) {
		if _, err := h.Prune(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("realtime: pruning the history failed; the next round tries again", "err", err)
		}
	})
}

// Close stops delivering and closes every connection with status 1001 (going away), so
// that the clients reconnect to another instance and resume there. It waits, within ctx,
// for the connections to end.
func (h *Hub) Close(ctx context.Context) error {
	return h.end(ctx, false)
}

// Abandon stops as a crash would, for tests that crash an instance (see block.Block): the
// connections are dropped without a closing handshake.
func (h *Hub) Abandon(ctx context.Context) {
	_ = h.end(ctx, true)
}

func (h *Hub) end(ctx context.Context, crash bool) error {
	var err error
	h.closeOnce.Do(func() {
		ran := true
		h.startOnce.Do(func() { ran = false })
		h.crashed.Store(crash)
		h.stopped.Store(true)
		if h.unsubscribe != nil {
			h.unsubscribe()
		}
		if ran {
			h.poller.Stop()
			h.fetcher.Stop()
		}
		h.mu.Lock()
		cs := make([]*client, 0, len(h.clients))
		for c := range h.clients {
			cs = append(cs, c)
		}
		h.mu.Unlock()
		for _, c := range cs {
			c.shut(crash)
		}
		done := make(chan struct{})
		go func() { h.conns.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("realtime: connections still open: %w", ctx.Err())
		}
	})
	return err
}

func (h *Hub) closed() bool { return h.stopped.Load() }
