// Package bus carries small signals between the instances of a service: wake-ups,
// invalidations, presence deltas, forwarded messages. It is layer 2 of twice, under the
// cluster core and the building blocks.
//
// A signal is a hint, never the data: delivery is best-effort and at most once, so every
// user of the bus keeps a fallback (a poll, a cache flush) and a lost signal delays work but
// never loses it. When signals may have been missed (a reconnect, a poller that fell
// behind) every subscriber receives a [Message] with Lost set and must resynchronise.
//
// The rule every subscriber keeps: a message is only a hint to re-read the database; it
// never changes state by itself. Anyone who can reach the transport can send one: every
// database role may NOTIFY on any channel, a NATS client may publish on the subjects it is
// allowed, anyone who can write the SQLite file may insert a signal row. So a handler may
// wake a loop, start a look at the database, or drop something cached (which costs a
// reload, never a wrong value); it must not record a change, cancel work or trust what a
// payload claims, and what an unreadable or repeated message makes it do must be cheap and
// bounded. Package bustest injects raw messages into any backend, to test a subscriber
// against this rule.
//
// A [Signer] (from the cluster secret) makes every backend sign what it sends and drop,
// and count, what does not verify: unsigned, signed with another secret, altered, or
// replayed after its time window. The rule still holds with one: a secret can leak, and a
// replay within the window is delivered again. One subscriber goes further on a signed bus,
// and only for what no stored state depends on: the realtime hub's messages travel on it,
// to be shown to clients, each at its offset in a history the database keeps (see package
// realtime); a forged one could show a client something, never change a row.
//
// The default backend lives in the store ([NewStore]): LISTEN/NOTIFY on PostgreSQL, with
// NOTIFY batched to at most one per service every few milliseconds and never one per row;
// on SQLite a notification table whose instances, all on the host of the file, wake each
// other through Unix datagram sockets in a directory beside it once their signals commit,
// and look at the table once a second in case a signal went unannounced. Larger deployments
// can use another backend implementing [Bus]; the conformance suite in bustest runs against
// each.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/twicehq/twice/internal/safe"
)

// MaxPayload is the largest payload of one message, in bytes. Signals are small: send an id,
// not a document.
const MaxPayload = 4000

// MaxChannel is the longest channel name, in bytes.
const MaxChannel = 128

// ErrClosed is returned once the bus is closed.
var ErrClosed = errors.New("bus: closed")

// Message is one signal as delivered to a subscriber.
type Message struct {
	Channel string
	Payload []byte
	// From is the instance id of the sender.
	From string
	// Lost is set, with no payload, when signals on this channel may have been missed; the
	// subscriber must resynchronise from the database.
	Lost bool
}

// Handler receives messages. It runs on the bus's delivery goroutine and must return
// quickly: hand slow work to a goroutine of your own.
type Handler func(Message)

// Bus delivers each published message to every subscriber of its channel on every instance
// of the service, the publisher's own included.
type Bus interface {
	// Publish sends payload on channel. It returns once the message has left this process.
	Publish(ctx context.Context, channel string, payload []byte) error
	// PublishTx sends payload on channel if and when tx (the caller's *sql.Tx, pgx.Tx or
	// store.Tx) commits; nothing is sent on rollback.
	PublishTx(ctx context.Context, tx any, channel string, payload []byte) error
	// Subscribe calls h for every message on channel until cancel is called.
	Subscribe(channel string, h Handler) (cancel func())
	// Close stops delivery and releases the bus's connections.
	Close(ctx context.Context) error
}

// Vouching is implemented by a bus that knows whether it is delivering. While Delivering
// reports true, every signal sent is either delivered or followed by a [Message] with Lost
// set; when the bus stops delivering (a connection dropped), it tells its subscribers with
// Lost at once, before Delivering turns false, and again once it delivers again. Building
// blocks then look at the database only as a slow backstop while the bus vouches, and at
// their own poll interval while it does not (see [Delivering]).
type Vouching interface {
	Delivering() bool
}

// Delivering reports whether b vouches for its delivery now: false for a nil bus and for
// a bus that does not implement [Vouching].
func Delivering(b Bus) bool {
	v, ok := b.(Vouching)
	return ok && v.Delivering()
}

// Validate checks a channel and payload against the limits.
func Validate(channel string, payload []byte) error {
	if channel == "" {
		return errors.New("bus: empty channel")
	}
	if len(channel) > MaxChannel {
		return fmt.Errorf("bus: channel of %d bytes is longer than the limit of %d", len(channel), MaxChannel)
	}
	if len(payload) > MaxPayload {
		return fmt.Errorf("bus: payload of %d bytes on %q is larger than the limit of %d: send an id, not the data", len(payload), channel, MaxPayload)
	}
	return nil
}

// Subscribers is the registry every backend uses to fan messages out to handlers. A handler
// that panics is logged and counted, and delivery goes on.
type Subscribers struct {
	// Logger receives handlers' panics. Set it before the first delivery. Defaults to
	// slog.Default().
	Logger *slog.Logger
	// Panics, if set, counts handlers' panics. Set it before the first delivery.
	// Defaults to nil: logged only.
	Panics *atomic.Int64

	mu   sync.Mutex // protects subs, next
	subs map[string]map[int]Handler
	next int
}

// Add registers h on channel and returns the function that removes it.
func (s *Subscribers) Add(channel string, h Handler) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs == nil {
		s.subs = map[string]map[int]Handler{}
	}
	if s.subs[channel] == nil {
		s.subs[channel] = map[int]Handler{}
	}
	id := s.next
	s.next++
	s.subs[channel][id] = h
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs[channel], id)
		if len(s.subs[channel]) == 0 {
			delete(s.subs, channel)
		}
	}
}

// Has reports whether channel has at least one handler.
func (s *Subscribers) Has(channel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs[channel]) > 0
}

func (s *Subscribers) handlers(channel string) []Handler {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := make([]Handler, 0, len(s.subs[channel]))
	for _, h := range s.subs[channel] {
		hs = append(hs, h)
	}
	return hs
}

// Deliver calls every handler of m.Channel.
func (s *Subscribers) Deliver(m Message) {
	for _, h := range s.handlers(m.Channel) {
		safe.Do(s.Logger, s.Panics, "bus: subscriber", func() { h(m) })
	}
}

// Lost tells every subscriber of every channel that signals may have been missed.
func (s *Subscribers) Lost() {
	s.mu.Lock()
	channels := make([]string, 0, len(s.subs))
	for c := range s.subs {
		channels = append(channels, c)
	}
	s.mu.Unlock()
	for _, c := range channels {
		s.Deliver(Message{Channel: c, Lost: true})
	}
}
