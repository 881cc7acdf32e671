package events

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/twicehq/twice/store"
)

// Expected versions for [Log.AppendTx] besides an exact version.
const (
	// AnyVersion appends whatever the stream's version is.
	AnyVersion int64 = -1
	// NoStream appends only if the stream has no events yet.
	NoStream int64 = 0
)

// MaxLoad is the most events one [Log.Load] returns.
const MaxLoad = 10000

// ErrConflict is matched (with errors.Is) by every [*ConflictError].
var ErrConflict = errors.New("events: stream version conflict")

// ConflictError is returned by [Log.AppendTx] when the stream is not at the expected
// version: another writer appended first. Reload the stream, decide again, and retry.
type ConflictError struct {
	Stream   string
	Expected int64
	// Actual is the stream's version as this transaction sees it, or -1 when another
	// transaction appended concurrently and has not been seen.
	Actual int64
}

func (e *ConflictError) Error() string {
	if e.Actual < 0 {
		return fmt.Sprintf("events: stream %q: expected version %d, but another transaction appended concurrently", e.Stream, e.Expected)
	}
	return fmt.Sprintf("events: stream %q: expected version %d, found %d", e.Stream, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Category is the topic a stream's events are published on: the part of the stream name
// before its first '-' ("order-42" → "order"), or the whole name. A projection subscribes
// to it.
func Category(stream string) string {
	c, _, _ := strings.Cut(stream, "-")
	return c
}

func validStream(stream string) error {
	if stream == "" || len(stream) > MaxKey || !utf8.ValidString(stream) || strings.ContainsAny(stream, "\n\x00") {
		return fmt.Errorf("%w: stream %q must be 1 to %d bytes of UTF-8 without newlines or NUL", ErrInvalid, stream, MaxKey)
	}
	return nil
}

// Append is [Log.AppendTx] in a transaction of its own.
func (l *Log) Append(ctx context.Context, stream string, expected int64, msgs ...Message) (int64, error) {
	var v int64
	err := l.s.InTx(ctx, func(tx store.Tx) error {
		var err error
		v, err = l.AppendTx(ctx, tx, stream, expected, msgs...)
		return err
	})
	return v, err
}

// AppendTx appends msgs to an event-sourced stream inside the caller's transaction tx and
// returns the stream's new version. expected is the version the caller's decision was
// based on: the number of events it loaded, [NoStream] for a new stream, or [AnyVersion].
// If the stream has moved on, AppendTx returns a [*ConflictError] and leaves tx as it was.
//
// Each message's Topic defaults to the stream's [Category]; its Key is the stream, so a
// Shared or ExactlyOnce group handles one stream's events in order. The events are in the
// log like any other (projections read them as a consumer group), but retention never
// prunes them.
func (l *Log) AppendTx(ctx context.Context, tx any, stream string, expected int64, msgs ...Message) (int64, error) {
	if err := validStream(stream); err != nil {
		return 0, err
	}
	if expected < AnyVersion {
		return 0, fmt.Errorf("%w: expected version %d", ErrInvalid, expected)
	}
	if len(msgs) == 0 {
		return 0, fmt.Errorf("%w: nothing to append to %q", ErrInvalid, stream)
	}
	q, err := l.s.Wrap(tx)
	if err != nil {
		return 0, err
	}
	ms := make([]Message, len(msgs))
	for i, m := range msgs {
		if m.Key != "" && m.Key != stream {
			return 0, fmt.Errorf("%w: a stream's events are keyed by the stream; got key %q for %q", ErrInvalid, m.Key, stream)
		}
		if m.Topic == "" {
			m.Topic = Category(stream)
		}
		m.Key = stream
		ms[i] = m
	}
	var current int64
	if err := q.QueryRow(ctx, l.q.version, l.d.Service, stream).Scan(&current); err != nil {
		return 0, fmt.Errorf("events: version of %q: %w", stream, err)
	}
	if expected != AnyVersion && current != expected {
		return 0, &ConflictError{Stream: stream, Expected: expected, Actual: current}
	}
	// The unique index on (stream, version) decides between concurrent appenders:
	// PostgreSQL makes the second wait for the first to commit, then skips its rows.
	ids, hashes, err := l.insert(ctx, q, stream, current+1, ms)
	if err != nil {
		return 0, err
	}
	if len(ids) < len(ms) {
		if err := l.undo(ctx, q, ids); err != nil {
			return 0, err
		}
		return 0, &ConflictError{Stream: stream, Expected: expected, Actual: -1}
	}
	if w := l.watcher(); w != nil {
		w.add(ids, ms, hashes)
	}
	return current + int64(len(ms)), nil
}

// undo deletes rows a conflicting append managed to insert, so the caller's transaction
// holds none of a half-done append.
func (l *Log) undo(ctx context.Context, q store.Querier, ids []int64) error {
	for _, id := range ids {
		if _, err := q.Exec(ctx, l.q.undo, id); err != nil {
			return fmt.Errorf("events: undo a conflicting append: %w", err)
		}
	}
	return nil
}

// LoadOpts narrow [Log.Load]. A nil *LoadOpts loads from the first event.
type LoadOpts struct {
	// After skips the events up to and including this version (a snapshot's version).
	After int64
	// Limit is the most events returned, at most [MaxLoad]. Defaults to MaxLoad.
	Limit int
}

// Load returns a stream's events in version order. The stream's version is the last
// event's Version (0 when there is none).
func (l *Log) Load(ctx context.Context, stream string, opts *LoadOpts) ([]Event, error) {
	return l.load(ctx, l.s.Reader(), stream, opts)
}

// LoadTx is [Log.Load] inside the caller's transaction tx, so a decision and the append it
// leads to see one state.
func (l *Log) LoadTx(ctx context.Context, tx any, stream string, opts *LoadOpts) ([]Event, error) {
	q, err := l.s.Wrap(tx)
	if err != nil {
		return nil, err
	}
	return l.load(ctx, q, stream, opts)
}

func (l *Log) load(ctx context.Context, q store.Querier, stream string, opts *LoadOpts) ([]Event, error) {
	if err := validStream(stream); err != nil {
		return nil, err
	}
	o := LoadOpts{Limit: MaxLoad}
	if opts != nil {
		o = *opts
		if o.Limit == 0 {
			o.Limit = MaxLoad
		}
	}
	if o.Limit < 0 || o.Limit > MaxLoad || o.After < 0 {
		return nil, fmt.Errorf("%w: Load limit %d (1 to %d) or After %d", ErrInvalid, o.Limit, MaxLoad, o.After)
	}
	rows, err := q.Query(ctx, l.q.load, l.d.Service, stream, o.After, o.Limit)
	if err != nil {
		return nil, fmt.Errorf("events: load %q: %w", stream, err)
	}
	return l.scanEvents(rows)
}

// Recent returns the newest events of topic (of every topic if it is empty), newest first,
// at most limit (1 to [MaxLoad]). It is a read for tests and operators, not for consumers
// (see [Log.Subscribe]): it sorts the topic's events by id.
func (l *Log) Recent(ctx context.Context, topic string, limit int) ([]Event, error) {
	return l.recent(ctx, l.s.Reader(), topic, limit)
}

// RecentTx is [Log.Recent] inside the caller's transaction tx: it also returns the events
// tx published and has not committed, as a test that checks what a transaction published
// needs.
func (l *Log) RecentTx(ctx context.Context, tx any, topic string, limit int) ([]Event, error) {
	q, err := l.s.Wrap(tx)
	if err != nil {
		return nil, err
	}
	return l.recent(ctx, q, topic, limit)
}

func (l *Log) recent(ctx context.Context, q store.Querier, topic string, limit int) ([]Event, error) {
	if limit < 1 || limit > MaxLoad {
		return nil, fmt.Errorf("%w: Recent limit %d (1 to %d)", ErrInvalid, limit, MaxLoad)
	}
	var rows store.Rows
	var err error
	if topic == "" {
		rows, err = q.Query(ctx, l.q.recentAll, l.d.Service, limit)
	} else {
		rows, err = q.Query(ctx, l.q.recent, l.d.Service, topic, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("events: recent %q: %w", topic, err)
	}
	return l.scanEvents(rows)
}

// ErrNotFound is returned by [Log.Get] for an event that does not exist (or was pruned).
var ErrNotFound = errors.New("events: no such event")

// Get reads one event by id.
func (l *Log) Get(ctx context.Context, id int64) (Event, error) {
	rows, err := l.s.Reader().Query(ctx, l.q.get, l.d.Service, id)
	if err != nil {
		return Event{}, fmt.Errorf("events: get %d: %w", id, err)
	}
	evs, err := l.scanEvents(rows)
	if err != nil {
		return Event{}, err
	}
	if len(evs) == 0 {
		return Event{}, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	return evs[0], nil
}
