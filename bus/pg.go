package bus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/twicehq/twice/store"
)

// maxNotify is the largest NOTIFY payload sent; PostgreSQL's limit is 8000 bytes.
const maxNotify = 7800

// pgChannel is the PostgreSQL channel of a service: one per service, with the bus's own
// channels multiplexed inside the payload, so an instance LISTENs once. NOTIFY channels
// belong to the whole database, so the schema is part of the name: deployments of the same
// service in two schemas of one database never hear each other.
//
// Distinct (schema, service) pairs get distinct channels. The readable form
// "twice.<schema>.<service>" is used only when the schema has no dot (services may have
// some), so the first dot after the prefix always ends the schema; any other pair gets
// "twice-h.<service prefix>.<hash of both>", whose prefix no readable name has. Both fit
// PostgreSQL's 63 bytes.
func pgChannel(schema, service string) string {
	c := "twice." + schema + "." + service
	if len(c) <= 63 && !strings.Contains(schema, ".") {
		return c
	}
	// Schema names cannot contain NUL, so the hashed input is unambiguous too.
	h := sha256.Sum256([]byte(schema + "\x00" + service))
	return "twice-h." + service[:min(len(service), 32)] + "." + hex.EncodeToString(h[:8])
}

// PGChannel is the PostgreSQL channel the store-native bus of service uses in schema: what
// an operator watches, and where tests forge messages (any role may NOTIFY on it).
func PGChannel(schema, service string) string { return pgChannel(schema, service) }

// ApplicationName is the PostgreSQL application_name of an instance's listener connection.
func ApplicationName(service, instance string) string {
	n := "twice-bus " + service + " " + instance
	if len(n) > 63 {
		n = n[:63]
	}
	return n
}

type pgBus struct {
	s       *store.Store
	cfg     Config
	channel string
	subs    Subscribers
	batch   *batcher

	listening atomic.Bool // the LISTEN connection is up

	stop   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

func newPG(ctx context.Context, s *store.Store, cfg Config) (*pgBus, error) {
	b := &pgBus{s: s, cfg: cfg, channel: pgChannel(s.Schema(), cfg.Service), stop: make(chan struct{})}
	b.subs.Logger, b.subs.Panics = cfg.Logger, cfg.Panics
	conn, err := b.listen(ctx)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.batch = newBatcher(cfg.Flush, b.notify)
	b.listening.Store(true)
	b.wg.Add(1)
	go b.receive(lctx, conn)
	return b, nil
}

// listen opens a connection of its own (a pooled one would be handed to others) and
// LISTENs on the service's channel.
func (b *pgBus) listen(ctx context.Context) (*pgx.Conn, error) {
	cfg := b.s.Pool().Config().ConnConfig.Copy()
	// Named, so operators (and tests) can find it in pg_stat_activity.
	cfg.RuntimeParams["application_name"] = ApplicationName(b.cfg.Service, b.cfg.Instance)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: listen on %s: %w", b.s, err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{b.channel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("bus: listen on %s: %w", b.s, err)
	}
	return conn, nil
}

// receive delivers notifications until the bus closes, reconnecting after any failure and
// then telling every subscriber that signals may have been lost meanwhile.
func (b *pgBus) receive(ctx context.Context, conn *pgx.Conn) {
	defer b.wg.Done()
	backoff := 50 * time.Millisecond
	for {
		for conn != nil {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				if ctx.Err() != nil {
					return
				}
				b.cfg.Logger.Warn("bus: listener connection lost; reconnecting", "err", err)
				// Tell the subscribers now, not only after the reconnection: those that
				// look at the database only as a backstop while the bus delivers go back
				// to their own polls until it does again.
				b.listening.Store(false)
				b.subs.Lost()
				break
			}
			backoff = 50 * time.Millisecond
			b.dispatch(n.Payload)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		var err error
		if conn, err = b.listen(ctx); err != nil {
			conn = nil
			continue
		}
		b.cfg.Logger.Info("bus: listener reconnected")
		b.listening.Store(true)
		b.subs.Lost()
	}
}

func (b *pgBus) dispatch(payload string) {
	var msgs []wire
	if err := json.Unmarshal([]byte(payload), &msgs); err != nil {
		b.cfg.Logger.Warn("bus: dropping a malformed notification", "err", err)
		return
	}
	for _, m := range msgs {
		if p, ok := b.cfg.Signer.Open(m.C, m.F, m.P); ok {
			b.subs.Deliver(Message{Channel: m.C, Payload: p, From: m.F})
		}
	}
}

// notify sends a batch as few NOTIFYs as fit PostgreSQL's payload limit, in one statement.
func (b *pgBus) notify(ctx context.Context, msgs []wire) error {
	chunks, err := chunk(msgs)
	if err != nil {
		return err
	}
	for _, c := range chunks {
		if _, err := b.s.Exec(ctx, "SELECT pg_notify($1, $2)", b.channel, c); err != nil {
			return fmt.Errorf("bus: notify: %w", err)
		}
	}
	return nil
}

// chunk encodes msgs as JSON arrays of at most maxNotify bytes each.
func chunk(msgs []wire) ([]string, error) {
	var out []string
	var cur []json.RawMessage
	size := 2
	for _, m := range msgs {
		enc, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		if len(cur) > 0 && size+len(enc)+1 > maxNotify {
			out = append(out, joinJSON(cur))
			cur, size = nil, 2
		}
		cur = append(cur, enc)
		size += len(enc) + 1
	}
	if len(cur) > 0 {
		out = append(out, joinJSON(cur))
	}
	return out, nil
}

func joinJSON(parts []json.RawMessage) string {
	enc, _ := json.Marshal(parts) // RawMessages of valid JSON cannot fail
	return string(enc)
}

func (b *pgBus) Publish(ctx context.Context, channel string, payload []byte) error {
	if err := Validate(channel, payload); err != nil {
		return err
	}
	return b.batch.publish(ctx, wire{C: channel, P: b.cfg.Signer.Sign(channel, b.cfg.Instance, payload), F: b.cfg.Instance})
}

// PublishTx NOTIFYs inside tx, which PostgreSQL delivers at commit. Every such commit takes
// PostgreSQL's notification lock, so use it for signals that must not precede the data, and
// Publish (batched) after commit where that is known.
func (b *pgBus) PublishTx(ctx context.Context, tx any, channel string, payload []byte) error {
	if err := Validate(channel, payload); err != nil {
		return err
	}
	q, err := b.s.Wrap(tx)
	if err != nil {
		return err
	}
	chunks, err := chunk([]wire{{C: channel, P: b.cfg.Signer.Sign(channel, b.cfg.Instance, payload), F: b.cfg.Instance}})
	if err != nil {
		return err
	}
	if _, err := q.Exec(ctx, "SELECT pg_notify($1, $2)", b.channel, chunks[0]); err != nil {
		return fmt.Errorf("bus: notify in transaction: %w", err)
	}
	return nil
}

// Delivering implements [Vouching]: NOTIFY reaches every listener while its LISTEN
// connection is up, and a dropped connection is reported as Lost.
func (b *pgBus) Delivering() bool { return b.listening.Load() }

func (b *pgBus) Subscribe(channel string, h Handler) func() { return b.subs.Add(channel, h) }

func (b *pgBus) Close(context.Context) error {
	b.once.Do(func() {
		b.batch.close()
		b.cancel()
		b.wg.Wait()
	})
	return nil
}
