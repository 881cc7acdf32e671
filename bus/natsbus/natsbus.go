// Package natsbus is a [bus.Bus] backend on NATS, for deployments whose signal traffic
// outgrows the database's notification path (PostgreSQL's NOTIFY queue, SQLite's polled
// table).
//
// Each bus channel is a NATS subject of its own, twice.bus.<service>.<channel> with both
// names base64url-encoded, so an instance receives only the channels it subscribes to and
// services sharing a NATS server never see each other's signals. Publish returns once the
// server has the message (a flush, shared by every publish in flight). The connection
// reconnects by itself, forever; after a reconnect, and when NATS drops messages for a slow
// subscriber, subscribers get a [bus.Message] with Lost set.
//
// PublishTx must send only if the caller's transaction commits, and NATS knows nothing of
// the database. Those messages therefore travel through the store: they are published with
// the store-native bus inside the transaction (a NOTIFY that PostgreSQL delivers at commit,
// or a row in SQLite's signal table that becomes visible at commit), and every instance
// hands them to its subscribers when its store listener reads them. A rolled-back
// transaction sends nothing, and a committed one reaches every instance even if the sender
// dies right after its commit: the signal is part of the commit, no process has to pass it
// on. When a store listener may have missed signals, its subscribers are told, as after any
// lost signal. The store-native bus runs under a service name of its own, so it never
// carries plain signals.
package natsbus

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/redact"
	"github.com/twicehq/twice/store"
)

// DefaultReconnectWait is how long the client waits between reconnection attempts.
const DefaultReconnectWait = 250 * time.Millisecond

// DefaultFlushTimeout bounds how long Publish waits for the server to have the message.
const DefaultFlushTimeout = 5 * time.Second

// HeaderFrom carries the sending instance's id.
const HeaderFrom = "Twice-From"

// Config configures a NATS bus.
type Config struct {
	// URL is the NATS server, e.g. "nats://127.0.0.1:4222"; a comma-separated list names a
	// cluster. Required.
	URL string
	// Service scopes every channel. Required.
	Service string
	// Instance is this instance's id, sent as [bus.Message.From]. Required.
	Instance string
	// Store carries PublishTx messages until their transaction commits. Without it
	// PublishTx returns an error. Defaults to nil.
	Store *store.Store
	// ReconnectWait is the pause between reconnection attempts. Defaults to
	// [DefaultReconnectWait].
	ReconnectWait time.Duration
	// FlushTimeout bounds Publish's wait for the server. Defaults to [DefaultFlushTimeout].
	FlushTimeout time.Duration
	// Options are extra nats.go options (credentials, TLS), applied after twice's own.
	// Defaults to none.
	Options []nats.Option
	// Signer signs every message sent, PublishTx's included, and drops every message
	// received that it does not verify. Defaults to nil: messages are neither signed nor
	// checked.
	Signer *bus.Signer
	// Logger defaults to slog.Default(). It should carry the instance id.
	Logger *slog.Logger
	// Panics, if set, counts the panics recovered from subscribers; each is also logged
	// with its stack. Defaults to nil: logged only.
	Panics *atomic.Int64
}

// Bus is a [bus.Bus] on NATS.
type Bus struct {
	cfg    Config
	nc     *nats.Conn
	prefix string // twice.bus.<service>.
	subs   bus.Subscribers

	mu      sync.Mutex                    // protects natsSub, txSub, closed
	natsSub map[string]*nats.Subscription // by channel
	txSub   map[string]func()             // the store-native subscriptions, by channel
	closed  bool

	tx    bus.Bus // the store-native bus carrying PublishTx messages; nil without a store
	flush flusher
}

var _ bus.Bus = (*Bus)(nil)

// token encodes a name as one NATS subject token: base64url has no '.', '*', '>' or space.
func token(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// Subject is the NATS subject a channel of service travels on.
func Subject(service, channel string) string {
	return "twice.bus." + token(service) + "." + token(channel)
}

// TxService is the service under which the store-native bus carries the PublishTx
// messages of service.
func TxService(service string) string { return service + "#natsbus-tx" }

// New connects to NATS and returns the bus. The first connection must succeed; later
// outages are reconnected forever.
func New(ctx context.Context, cfg Config) (*Bus, error) {
	if cfg.URL == "" || cfg.Service == "" || cfg.Instance == "" {
		return nil, errors.New("natsbus: Config.URL, Config.Service and Config.Instance are required")
	}
	if err := CheckURL(cfg.URL); err != nil {
		return nil, err
	}
	if cfg.ReconnectWait == 0 {
		cfg.ReconnectWait = DefaultReconnectWait
	}
	if cfg.FlushTimeout == 0 {
		cfg.FlushTimeout = DefaultFlushTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b := &Bus{cfg: cfg, prefix: "twice.bus." + token(cfg.Service) + ".",
		natsSub: map[string]*nats.Subscription{}, txSub: map[string]func(){}}
	b.subs.Logger, b.subs.Panics = cfg.Logger, cfg.Panics
	opts := append([]nats.Option{
		nats.Name("twice " + cfg.Service + " " + cfg.Instance),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.ReconnectWait),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				cfg.Logger.Warn("natsbus: disconnected; reconnecting", "err", redact.Error(err, cfg.URL))
			}
			// Tell the subscribers now, not only after the reconnection: those that look at
			// the database only as a backstop while the bus delivers go back to their own
			// polls until it does again.
			b.subs.Lost()
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			cfg.Logger.Info("natsbus: reconnected")
			b.subs.Lost()
		}),
		nats.ErrorHandler(b.asyncError),
	}, cfg.Options...)
	if d, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(d)))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsbus: connect %s: %w", redact.String(cfg.URL), redact.Error(err, cfg.URL))
	}
	b.nc = nc
	b.flush = flusher{nc: nc, timeout: cfg.FlushTimeout}
	if cfg.Store != nil {
		b.tx, err = bus.NewStore(ctx, cfg.Store, bus.Config{Service: TxService(cfg.Service), Instance: cfg.Instance,
			Signer: cfg.Signer, Logger: cfg.Logger, Panics: cfg.Panics})
		if err != nil {
			nc.Close()
			return nil, err
		}
	}
	return b, nil
}

// Delivering implements [bus.Vouching]: while connected, a message is delivered or its
// subscriber is told it was dropped (a slow consumer); a disconnection is reported as Lost.
// With a store for PublishTx, that bus must deliver too.
func (b *Bus) Delivering() bool {
	return b.nc != nil && b.nc.IsConnected() && (b.tx == nil || bus.Delivering(b.tx))
}

// Conn is the bus's NATS connection, for other users of the same server (the events relay).
func (b *Bus) Conn() *nats.Conn { return b.nc }

// asyncError handles errors NATS reports outside any call: a slow subscriber whose
// messages were dropped is told it lost signals.
func (b *Bus) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if sub != nil && errors.Is(err, nats.ErrSlowConsumer) {
		if ch, ok := b.channelOf(sub.Subject); ok {
			b.subs.Deliver(bus.Message{Channel: ch, Lost: true})
			return
		}
	}
	b.cfg.Logger.Warn("natsbus: asynchronous error", "err", redact.Error(err, b.cfg.URL))
}

func (b *Bus) channelOf(subject string) (string, bool) {
	if len(subject) <= len(b.prefix) || subject[:len(b.prefix)] != b.prefix {
		return "", false
	}
	ch, err := base64.RawURLEncoding.DecodeString(subject[len(b.prefix):])
	return string(ch), err == nil
}

// Publish sends payload on channel and returns once the server has it.
func (b *Bus) Publish(ctx context.Context, channel string, payload []byte) error {
	if err := bus.Validate(channel, payload); err != nil {
		return err
	}
	if err := b.send(channel, payload); err != nil {
		return err
	}
	return b.flush.wait(ctx)
}

func (b *Bus) send(channel string, payload []byte) error {
	m := &nats.Msg{Subject: b.prefix + token(channel), Data: b.cfg.Signer.Sign(channel, b.cfg.Instance, payload),
		Header: nats.Header{HeaderFrom: {b.cfg.Instance}}}
	if err := b.nc.PublishMsg(m); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) {
			return bus.ErrClosed
		}
		return fmt.Errorf("natsbus: publish: %w", err)
	}
	return nil
}

// PublishTx sends payload on channel if and when tx commits, through the store (see the
// package documentation).
func (b *Bus) PublishTx(ctx context.Context, tx any, channel string, payload []byte) error {
	if err := bus.Validate(channel, payload); err != nil {
		return err
	}
	if b.tx == nil {
		return errors.New("natsbus: PublishTx needs Config.Store")
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return bus.ErrClosed
	}
	return b.tx.PublishTx(ctx, tx, channel, payload)
}

// Subscribe calls h for every message on channel until cancel is called. It returns once
// the server knows of the subscription, so a message published afterwards by any instance
// reaches h.
func (b *Bus) Subscribe(channel string, h bus.Handler) func() {
	remove := b.subs.Add(channel, h)
	b.mu.Lock()
	if _, ok := b.natsSub[channel]; !ok && !b.closed {
		sub, err := b.nc.Subscribe(b.prefix+token(channel), func(m *nats.Msg) {
			from := m.Header.Get(HeaderFrom)
			if p, ok := b.cfg.Signer.Open(channel, from, m.Data); ok {
				b.subs.Deliver(bus.Message{Channel: channel, Payload: p, From: from})
			}
		})
		if err != nil {
			b.cfg.Logger.Warn("natsbus: subscribe failed", "channel", channel, "err", err)
		} else {
			// Signals are small; a subscriber that falls this far behind is told it lost some.
			_ = sub.SetPendingLimits(64*1024, 64<<20)
			b.natsSub[channel] = sub
		}
	}
	if _, ok := b.txSub[channel]; !ok && !b.closed && b.tx != nil {
		// Transactional messages, and word that some may have been missed, come from the
		// store (see the package documentation), whose bus checks their signatures.
		b.txSub[channel] = b.tx.Subscribe(channel, b.subs.Deliver)
	}
	b.mu.Unlock()
	if err := b.nc.FlushTimeout(b.cfg.FlushTimeout); err != nil {
		b.cfg.Logger.Debug("natsbus: subscription not yet confirmed by the server", "channel", channel, "err", err)
	}
	return func() {
		remove()
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.subs.Has(channel) {
			return
		}
		if sub, ok := b.natsSub[channel]; ok {
			_ = sub.Unsubscribe()
			delete(b.natsSub, channel)
		}
		if cancel, ok := b.txSub[channel]; ok {
			cancel()
			delete(b.txSub, channel)
		}
	}
}

// Close stops delivery and closes the connection, after sending what was published.
func (b *Bus) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	var errs []error
	if b.tx != nil {
		errs = append(errs, b.tx.Close(ctx))
	}
	if err := b.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		errs = append(errs, err)
	}
	// Drain returns at once; wait until it has finished and the connection is closed.
	for !b.nc.IsClosed() {
		select {
		case <-ctx.Done():
			b.nc.Close()
			return errors.Join(append(errs, ctx.Err())...)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return errors.Join(errs...)
}

// flusher shares one round trip to the server among every publish waiting for one, so a
// burst of Publish calls costs one flush, not one each.
type flusher struct {
	nc      *nats.Conn
	timeout time.Duration

	mu      sync.Mutex // protects running, waiters
	running bool
	waiters []chan error
}

// wait returns once everything published before the call has reached the server.
func (f *flusher) wait(ctx context.Context) error {
	res := make(chan error, 1)
	f.mu.Lock()
	f.waiters = append(f.waiters, res)
	if !f.running {
		f.running = true
		go f.loop()
	}
	f.mu.Unlock()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *flusher) loop() {
	for {
		f.mu.Lock()
		ws := f.waiters
		f.waiters = nil
		if len(ws) == 0 {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		// Every waiter taken here published before this flush started.
		err := f.nc.FlushTimeout(f.timeout)
		switch {
		case errors.Is(err, nats.ErrConnectionClosed):
			err = bus.ErrClosed
		case err != nil:
			err = fmt.Errorf("natsbus: flush: %w", err)
		}
		for _, w := range ws {
			w <- err
		}
	}
}
