// Package events is a durable event log in the service's own database, with consumer groups
// and event-sourced streams.
//
// Publish an event inside the business transaction that causes it ([Log.PublishTx]): it
// exists if and only if the transaction commits (the outbox pattern, with the log itself as
// the outbox). Consumers read the log in commit order and never skip an event that commits
// late: on PostgreSQL a reader only passes rows whose transaction id is below the oldest
// transaction still running, so no row can still appear behind it (the bug of readers that
// trust a BIGSERIAL, watermill#311 and Marten#1629); on SQLite there is one writer, so id
// order is commit order. Readers are woken over the bus and poll as a backstop.
//
// Consumer groups ([Log.Subscribe]) come in three modes:
//
//   - [Shared]: each event is handled by one instance of the group, in order per key,
//     at least once, with retries and a dead-letter state. Keys are spread over a fixed
//     number of partitions; each partition is owned by one instance at a time under a lease,
//     and instances share the partitions evenly.
//   - [ExactlyOnce]: as Shared, but the handler gets a transaction and the group's
//     checkpoint commits in it, so effects in the same database happen exactly once even
//     when instances crash.
//   - [Broadcast]: every instance handles every event published while it runs.
//
// Groups can be replayed from an event id or a time ([Log.Replay]); [Log.Lag] says how far
// each is behind; events older than the retention are pruned by the leader ([Log.Lead]),
// except those of event-sourced streams, which are the source of truth.
//
// Event-sourced streams ([Log.AppendTx], [Log.Load]) append to the same log with optimistic
// concurrency: a stream's events carry versions 1, 2, 3…, and an append that expected
// another version fails with a [*ConflictError]. A projection (a CQRS read model) is an
// ExactlyOnce group on the stream's category.
package events

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/otelx"
	"github.com/twicehq/twice/partition"
	"github.com/twicehq/twice/store"
)

// Limits on what is published. Payloads and headers are stored in the row; send large
// documents by reference.
const (
	// MaxTopic is the longest topic, in bytes.
	MaxTopic = 255
	// MaxKey is the longest key (and stream name), in bytes.
	MaxKey = 255
	// DefaultMaxPayload is the default [Config.MaxPayload]: 1 MiB.
	DefaultMaxPayload = 1 << 20
	// MaxHeaders is the most headers an event may carry.
	MaxHeaders = 64
	// MaxHeaderBytes is the largest total size of an event's header names and values.
	MaxHeaderBytes = 16 << 10
	// MaxBatch is the most events one Publish or Append call takes.
	MaxBatch = 5000
)

// Defaults of [Config].
const (
	DefaultPoll      = time.Second
	DefaultRetention = 7 * 24 * time.Hour
)

var (
	// ErrClosed is returned once the log is closed.
	ErrClosed = errors.New("events: closed")
	// ErrInvalid is wrapped by every error about a bad topic, key, payload or header.
	ErrInvalid = errors.New("events: invalid event")
)

// WakeChannel is the bus channel on which publishers announce the topics of new events.
const WakeChannel = "twice.events"

// LeasePrefix starts the names of the consumer groups' leases: LeasePrefix<group>/p/<n> for
// partitions, LeasePrefix<group>/m/<instance> for members (see [partition.ParseLease]).
const LeasePrefix = "events/"

// GroupChannel is the bus channel on which an instance names a consumer group it joined or
// took partitions of (its partition set announces it: see package partition), so
// that the group's members rebalance at once; a hint, like every signal.
const GroupChannel = "twice.events.group"

// ReplayChannel is the bus channel on which [Log.Replay] names a group whose checkpoints it
// moved, so that its readers reload them; a hint, like every signal.
const ReplayChannel = "twice.events.replay"

// Config configures a [Log]. What it works on comes in its [block.Deps]: the store and
// service; the bus, which wakes readers on every instance when events commit (without
// one, readers only poll); and the leases, which assign the partitions of Shared and
// ExactlyOnce groups (required for those groups).
type Config struct {
	// Poll is how often an idle reader looks for events it was not woken for (a lost
	// signal) while the bus cannot vouch for its delivery (block.Deps.Backstop applies
	// while it can), and the longest wait for events held back behind an open
	// transaction. Defaults to [DefaultPoll].
	Poll time.Duration
	// MaxPayload is the largest payload, in bytes. Defaults to [DefaultMaxPayload].
	MaxPayload int
	// Retention is how long events are kept, counted from their transaction's start;
	// events of event-sourced streams are kept forever. Negative keeps everything.
	// Defaults to [DefaultRetention].
	Retention time.Duration
}

// Log is a service's event log. It is safe for concurrent use.
type Log struct {
	d   block.Deps
	s   *store.Store
	q   queries
	cfg Config
	log *slog.Logger

	watch *watcher // made at the first PublishTx or AppendTx
	wake  waker
	ann   *announcer         // made at the first announcement; nil without a bus
	parts *partition.Manager // the Shared and ExactlyOnce groups' partitions; nil without Deps.Leases

	mu        sync.Mutex // protects consumers, started, closed, watch, ann, unsub
	consumers map[*Consumer]struct{}
	started   bool
	closed    bool
	unsub     func()
}

// New returns the log of d's service in d's store, which must carry [Component]'s
// schema. It starts nothing and runs no statement: [Log.Start] starts the wake-ups.
func New(d block.Deps, cfg Config) (*Log, error) {
	d = d.WithDefaults()
	if err := d.Validate("events", true); err != nil {
		return nil, err
	}
	if cfg.Poll == 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Poll < time.Millisecond {
		return nil, fmt.Errorf("events: Poll %v is below 1ms", cfg.Poll)
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	l := &Log{d: d, s: d.Store, q: queriesFor(d.Store), cfg: cfg, log: d.Logger, consumers: map[*Consumer]struct{}{}}
	if d.Leases != nil {
		// The groups keep the lease names and join announcements they had before partition
		// sets existed, so that instances of an older release share them in a rolling deploy.
		parts, err := partition.NewNamed(d, LeasePrefix, GroupChannel)
		if err != nil {
			return nil, err
		}
		l.parts = parts
	}
	l.wake.init()
	return l, nil
}

// Start lets this instance's readers be woken by the announcements of other instances on
// the bus (without it they find those events only by polling) and starts the partition
// sets of its groups. Publishing needs no Start: Publish announces its events, and the
// events of PublishTx and AppendTx are watched until they commit and then announced,
// whether the log was started or not, so an instance that only publishes still wakes the
// readers elsewhere, whose bus, delivering, lets them poll only at the Backstop. The node
// calls Start when the application first uses its events.
func (l *Log) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.started {
		return nil
	}
	l.started = true
	if l.parts != nil {
		if err := l.parts.Start(ctx); err != nil {
			return err
		}
	}
	if b := l.d.Bus; b != nil {
		unwake := b.Subscribe(WakeChannel, func(m bus.Message) {
			if m.Lost {
				l.wake.all()
				return
			}
			for t, hs := range parseHint(m.Payload) {
				l.wake.topic(t, hs)
			}
		})
		unreplay := b.Subscribe(ReplayChannel, func(m bus.Message) { l.replayed(string(m.Payload), m.Lost) })
		l.unsub = func() { unwake(); unreplay() }
	}
	return nil
}

// replayed tells the consumers of group that its checkpoints may have moved (all of them
// when the signal may have been lost): they reload them before they read again.
func (l *Log) replayed(group string, all bool) {
	for _, c := range l.consumersOf(group, all) {
		c.replays.Add(1)
		c.kickAll()
	}
}

// consumersOf returns this instance's consumers of group, or all of them.
func (l *Log) consumersOf(group string, all bool) []*Consumer {
	l.mu.Lock()
	defer l.mu.Unlock()
	var cs []*Consumer
	for c := range l.consumers {
		if all || c.cfg.Name == group {
			cs = append(cs, c)
		}
	}
	return cs
}

// watcher and announcer are made at their first use, started or not (see Start): a log
// that was never started still announces what it publishes. The announcer is nil without
// a bus; a log closed before the first use makes neither.
func (l *Log) watcher() *watcher {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.watch == nil && !l.closed {
		l.watch = newWatcher(l)
	}
	return l.watch
}

func (l *Log) announcer() *announcer {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ann == nil && l.d.Bus != nil && !l.closed {
		l.ann = newAnnouncer(l.d.Bus, l.log)
	}
	return l.ann
}

// Store is the database the log lives in.
func (l *Log) Store() *store.Store { return l.s }

// Service is the service whose log this is.
func (l *Log) Service() string { return l.d.Service }

// Message is an event to publish.
type Message struct {
	// Topic names what happened ("order.placed"); consumer groups subscribe to topics.
	// Required, at most [MaxTopic] bytes of UTF-8.
	Topic string
	// Key orders events: a group handles the events of one key in the order they were
	// published. Empty means no order is needed. At most [MaxKey] bytes.
	Key string
	// Payload is the event's body, at most [Config.MaxPayload] bytes.
	Payload []byte
	// Headers are optional metadata (a type name, a trace id): at most [MaxHeaders]
	// entries of [MaxHeaderBytes] in all.
	Headers map[string]string
}

// Event is an event as consumers and [Log.Load] see it.
type Event struct {
	// ID is unique in the database. It increases with insertion, not necessarily with
	// commit: use it to name an event (Replay from it, de-duplicate), not to order events.
	ID      int64
	Topic   string
	Key     string
	Payload []byte
	Headers map[string]string
	// Stream and Version are set on the events of an event-sourced stream.
	Stream  string
	Version int64
	// At is the start of the publishing transaction, in database time.
	At time.Time

	pos  position
	size int // payload and header bytes, as a read's byte budget counts them
}

// position is a place in the log's read order: (transaction id, id) on PostgreSQL, (0, id)
// on SQLite. Every event after it in that order is unread.
type position struct{ xid, id int64 }

func (l *Log) validate(m Message) error {
	switch {
	case m.Topic == "":
		return fmt.Errorf("%w: empty topic", ErrInvalid)
	case len(m.Topic) > MaxTopic:
		return fmt.Errorf("%w: topic of %d bytes is longer than the limit of %d", ErrInvalid, len(m.Topic), MaxTopic)
	case !utf8.ValidString(m.Topic) || strings.ContainsAny(m.Topic, "\n\x00"):
		return fmt.Errorf("%w: topic %q must be UTF-8 without newlines or NUL", ErrInvalid, m.Topic)
	case len(m.Key) > MaxKey:
		return fmt.Errorf("%w: key of %d bytes is longer than the limit of %d", ErrInvalid, len(m.Key), MaxKey)
	case !utf8.ValidString(m.Key) || strings.ContainsRune(m.Key, 0):
		return fmt.Errorf("%w: key %q must be UTF-8 without NUL", ErrInvalid, m.Key)
	case len(m.Payload) > l.cfg.MaxPayload:
		return fmt.Errorf("%w: payload of %d bytes on %q is larger than the limit of %d: store the document and publish its id",
			ErrInvalid, len(m.Payload), m.Topic, l.cfg.MaxPayload)
	}
	return validHeaders(m.Headers)
}

// hashKey spreads keys over partitions; the events of one key always land in one. Events
// without a key are spread at random.
func hashKey(key string) int64 {
	if key == "" {
		return int64(rand.Uint32() >> 1)
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int64(h.Sum32() >> 1)
}

// Publish appends msgs to the log in a transaction of its own and returns their ids. For
// events caused by a business write, use [Log.PublishTx] in that write's transaction.
func (l *Log) Publish(ctx context.Context, msgs ...Message) ([]int64, error) {
	// One statement is its own transaction: all of msgs or none. Without BEGIN and COMMIT
	// around it, it is one round trip to PostgreSQL instead of three.
	ids, hashes, err := l.insert(ctx, l.s, "", 0, msgs)
	if err != nil {
		return nil, err
	}
	l.announce(hintOf(msgs, hashes))
	return ids, nil
}

// PublishTx appends msgs to the log inside the caller's transaction tx (a *sql.Tx, pgx.Tx or
// store.Tx) and returns their ids: the events exist if and only if tx commits. Readers on
// every instance are woken once it has.
func (l *Log) PublishTx(ctx context.Context, tx any, msgs ...Message) ([]int64, error) {
	q, err := l.s.Wrap(tx)
	if err != nil {
		return nil, err
	}
	ids, hashes, err := l.insert(ctx, q, "", 0, msgs)
	if err != nil {
		return nil, err
	}
	if w := l.watcher(); w != nil {
		w.add(ids, msgs, hashes)
	}
	return ids, nil
}

// insert writes msgs in one statement. For a stream, version is the version of the first.
// It also returns each event's hash, which places it in a partition (see hint).
func (l *Log) insert(ctx context.Context, q store.Querier, stream string, version int64, msgs []Message) (ids, hashes []int64, err error) {
	if len(msgs) == 0 {
		return nil, nil, nil
	}
	if len(msgs) > MaxBatch {
		return nil, nil, fmt.Errorf("%w: %d events in one call; the limit is %d", ErrInvalid, len(msgs), MaxBatch)
	}
	if l.isClosed() {
		return nil, nil, ErrClosed
	}
	if t := l.d.Tracer; t != nil {
		var span otelx.Span
		ctx, span = t.Send(ctx, topicOf(msgs), len(msgs))
		defer func() { span.End(err) }()
	}
	var sb strings.Builder
	sb.WriteString(l.q.insertHead)
	args := make([]any, 0, 1+8*len(msgs))
	args = append(args, l.s.NowArg())
	hashes = make([]int64, len(msgs))
	for i, m := range msgs {
		if err := l.validate(m); err != nil {
			return nil, nil, err
		}
		if i > 0 {
			sb.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&sb, l.q.insertRow, n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8)
		var st, ver any
		if stream != "" {
			st, ver = stream, version+int64(i)
		}
		payload := m.Payload
		if payload == nil {
			payload = []byte{}
		}
		hashes[i] = hashKey(m.Key)
		// With tracing on, the headers stored carry the send span's context besides the
		// caller's (which are not changed).
		args = append(args, l.d.Service, m.Topic, m.Key, hashes[i], payload, encodeHeaders(l.d.Tracer.Inject(ctx, m.Headers)), st, ver)
	}
	if stream != "" {
		sb.WriteString(" ON CONFLICT (service, stream, version) WHERE stream IS NOT NULL DO NOTHING")
	}
	sb.WriteString(l.q.insertTail)
	rows, err := q.Query(ctx, sb.String(), args...)
	if err != nil {
		return nil, nil, fmt.Errorf("events: publish: %w", err)
	}
	defer rows.Close()
	ids = make([]int64, 0, len(msgs))
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, nil, fmt.Errorf("events: publish: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("events: publish: %w", err)
	}
	return ids, hashes, nil
}

// topicOf is the topic of msgs, or "" when they have several.
func topicOf(msgs []Message) string {
	for _, m := range msgs[1:] {
		if m.Topic != msgs[0].Topic {
			return ""
		}
	}
	return msgs[0].Topic
}

// announce wakes the readers of h's partitions on every instance: this one at once, the
// others through the bus. It does not wait for the signal to be sent, so a publisher never
// waits on the bus; the signals of concurrent publishers merge.
func (l *Log) announce(h hint) {
	for t, hs := range h {
		l.wake.topic(t, hs)
	}
	if ann := l.announcer(); ann != nil {
		ann.add(h)
	}
}

func (l *Log) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops every consumer of this log in this process (committing their progress and
// handing their partitions to other instances) and the wake-up machinery.
func (l *Log) Close(ctx context.Context) error {
	var errs []error
	l.shut(func(c *Consumer) { errs = append(errs, c.Close(ctx)) })
	return errors.Join(errs...)
}

// Abandon stops every consumer of this log in this process as a crash of the process
// would, for tests that crash an instance (see block.Block): handlers are cancelled at
// once, and nothing more is committed, dead-lettered or released. Each partition's lease
// is left to end (the node abandons its leases, or the others find the instance dead),
// and whoever takes the partition then handles the events since its last checkpoint
// again. Abandon waits, until ctx ends, for the handlers to return.
func (l *Log) Abandon(ctx context.Context) {
	l.shut(func(c *Consumer) { c.abandon(ctx) })
}

// shut closes the log once: it ends each consumer with end, then the wake-ups.
func (l *Log) shut(end func(*Consumer)) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	cs := make([]*Consumer, 0, len(l.consumers))
	for c := range l.consumers {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	for _, c := range cs {
		end(c)
	}
	if l.unsub != nil {
		l.unsub()
	}
	if l.parts != nil {
		l.parts.Abandon(context.Background()) // every set is closed already: this only stops listening
	}
	if l.watch != nil {
		l.watch.close()
	}
	if l.ann != nil {
		l.ann.close()
	}
}
