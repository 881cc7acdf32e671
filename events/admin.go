package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// ErrNoGroup is returned for a Shared or ExactlyOnce group that was never subscribed.
var ErrNoGroup = errors.New("events: no such consumer group")

// end is the position after every event committed so far. On PostgreSQL, events just
// after it may have committed already (after a transaction that is still running); snap is
// the snapshot that tells them apart: a reader that must start exactly at the end skips the
// events visible in it.
func (l *Log) end(ctx context.Context) (p position, snap string, err error) {
	if err := l.s.Reader().QueryRow(ctx, l.q.end).Scan(&p.xid, &p.id, &snap); err != nil {
		return p, "", fmt.Errorf("events: find the end of the log: %w", err)
	}
	return p, snap, nil
}

// groupDef is a group as recorded by its first Subscribe.
type groupDef struct {
	topics     []string
	partitions int
	mode       string
}

func (l *Log) group(ctx context.Context, name string) (groupDef, error) {
	var g groupDef
	var topics string
	err := l.s.Reader().QueryRow(ctx, l.q.group, l.d.Service, name).Scan(&topics, &g.partitions, &g.mode)
	if errors.Is(err, store.ErrNoRows) {
		return g, fmt.Errorf("%w: %q", ErrNoGroup, name)
	}
	if err != nil {
		return g, fmt.Errorf("events: group %q: %w", name, err)
	}
	if err := json.Unmarshal([]byte(topics), &g.topics); err != nil || len(g.topics) == 0 {
		return g, fmt.Errorf("events: group %q has unreadable topics %q", name, topics)
	}
	return g, nil
}

// ReplayOpts say where a replay starts. A nil *ReplayOpts replays from the beginning of the
// log (as far as retention kept it).
type ReplayOpts struct {
	// FromID starts at the event with this id: it and every event after it in log order
	// are handled again.
	FromID int64
	// FromTime starts at the first event (in log order) whose transaction began at or
	// after this time.
	FromTime time.Time
}

// Replay moves every checkpoint of the Shared or ExactlyOnce group back (or forward) so
// the group handles the log again from opts. Running instances are told on the bus once
// the transaction commits (ReplayChannel) and reload their checkpoints; without the signal
// they notice at their next read or idle poll. An ExactlyOnce projection that rebuilds its
// read model should clear it in the same transaction it calls ReplayTx in.
func (l *Log) Replay(ctx context.Context, group string, opts *ReplayOpts) error {
	return l.s.InTx(ctx, func(tx store.Tx) error { return l.replay(ctx, tx, tx, group, opts) })
}

// ReplayTx is [Log.Replay] inside the caller's transaction tx.
func (l *Log) ReplayTx(ctx context.Context, tx any, group string, opts *ReplayOpts) error {
	q, err := l.s.Wrap(tx)
	if err != nil {
		return err
	}
	return l.replay(ctx, q, tx, group, opts)
}

// replay moves the group's checkpoints in q, which is tx as the store runs it.
func (l *Log) replay(ctx context.Context, q store.Querier, tx any, group string, opts *ReplayOpts) error {
	g, err := l.group(ctx, group)
	if err != nil {
		return err
	}
	if g.mode == Broadcast.String() {
		return fmt.Errorf("events: group %q is a broadcast group, which keeps no checkpoint to replay", group)
	}
	var from position
	switch {
	case opts == nil || opts.FromID == 0 && opts.FromTime.IsZero():
	case opts.FromID != 0 && !opts.FromTime.IsZero():
		return errors.New("events: Replay from an id or from a time, not both")
	case opts.FromID != 0:
		err := q.QueryRow(ctx, l.q.positionOf, l.d.Service, opts.FromID).Scan(&from.xid, &from.id)
		if errors.Is(err, store.ErrNoRows) {
			return fmt.Errorf("events: Replay from event %d: no such event (pruned, or of another service)", opts.FromID)
		}
		if err != nil {
			return err
		}
		from.id-- // just before it
	default:
		query := withTopics(l.s, l.q.positionAt, "topic", len(g.topics))
		err := q.QueryRow(ctx, query, l.d.Service, topicArg(l.s, g.topics), l.s.TimeArg(opts.FromTime)).Scan(&from.xid, &from.id)
		if errors.Is(err, store.ErrNoRows) {
			if from, _, err = l.end(ctx); err != nil {
				return err
			}
			break
		}
		if err != nil {
			return err
		}
		from.id--
	}
	if _, err := q.Exec(ctx, l.q.replay, l.s.NowArg(), l.d.Service, group, from.xid, from.id); err != nil {
		return fmt.Errorf("events: replay %q: %w", group, err)
	}
	if b := l.d.Bus; b != nil {
		if err := b.PublishTx(ctx, tx, ReplayChannel, []byte(group)); err != nil {
			return fmt.Errorf("events: replay %q: %w", group, err)
		}
	}
	return nil
}

// Lag is how far a Shared or ExactlyOnce group is behind the log.
type Lag struct {
	Group string `json:"group"`
	// Pending is the number of events committed but not yet checkpointed by the group.
	Pending int64 `json:"pending"`
	// Oldest is when the oldest pending event's transaction began; zero when none is.
	Oldest time.Time `json:"oldest,omitzero"`
	// DeadLetters is the number of events the group gave up on.
	DeadLetters int64          `json:"dead_letters"`
	Partitions  []PartitionLag `json:"partitions"`
}

// PartitionLag is the lag of one partition.
type PartitionLag struct {
	Partition int       `json:"partition"`
	Pending   int64     `json:"pending"`
	Oldest    time.Time `json:"oldest,omitzero"`
	// Owner is the instance handling the partition now; empty when nobody is, and when the
	// Log has no lease manager (a tool's or a dashboard's Log: twice.Status reads the
	// owners from the leases, in PartitionSetStatus.Owners).
	Owner string `json:"owner"`
	// CheckpointAt is when the partition's checkpoint last moved, in database time.
	CheckpointAt time.Time `json:"checkpoint_at"`
}

// Lag reports how far a Shared or ExactlyOnce group is behind, per partition (a Broadcast
// group keeps no checkpoint: [ErrNoGroup]). It counts rows, so on a very large backlog it
// takes as long as reading them.
func (l *Log) Lag(ctx context.Context, group string) (Lag, error) {
	g, err := l.group(ctx, group)
	if err != nil {
		return Lag{}, err
	}
	out := Lag{Group: group}
	query := withTopics(l.s, l.q.lag, "e.topic", len(g.topics))
	rows, err := l.s.Reader().Query(ctx, query, l.d.Service, topicArg(l.s, g.topics), g.partitions, group)
	if err != nil {
		return out, fmt.Errorf("events: lag of %q: %w", group, err)
	}
	defer rows.Close()
	for rows.Next() {
		var p PartitionLag
		var upd, oldest store.Time
		if err := rows.Scan(&p.Partition, &upd, &p.Pending, &oldest); err != nil {
			return out, err
		}
		p.CheckpointAt, p.Oldest = upd.Time, oldest.Time
		out.Pending += p.Pending
		if !p.Oldest.IsZero() && (out.Oldest.IsZero() || p.Oldest.Before(out.Oldest)) {
			out.Oldest = p.Oldest
		}
		out.Partitions = append(out.Partitions, p)
	}
	if err := rows.Err(); err != nil {
		return out, err
	}
	if err := l.s.Reader().QueryRow(ctx, l.q.countDead, l.d.Service, group).Scan(&out.DeadLetters); err != nil {
		return out, err
	}
	if l.d.Leases != nil {
		held, err := l.d.Leases.List(ctx, LeasePrefix+group+"/p/")
		if err != nil {
			return out, err
		}
		owners := map[string]string{}
		for _, h := range held {
			owners[h.Name] = h.Holder
		}
		for i := range out.Partitions {
			out.Partitions[i].Owner = owners[fmt.Sprintf("events/%s/p/%d", group, out.Partitions[i].Partition)]
		}
	}
	return out, nil
}

// DeadLetter is an event a group gave up on.
type DeadLetter struct {
	EventID  int64     `json:"event_id"`
	Attempts int       `json:"attempts"`
	Error    string    `json:"error"`
	At       time.Time `json:"at"`
	// Replaying says its replay was asked ([Log.ReplayDeadLetter]) and the group has not
	// handled it yet.
	Replaying bool `json:"replaying,omitempty"`
}

// DeadLetters lists the events group gave up on, by event id, after the id afterID, at most
// limit (1 to 1000; 0 means 100). Read the events themselves with [Log.Get].
func (l *Log) DeadLetters(ctx context.Context, group string, afterID int64, limit int) ([]DeadLetter, error) {
	if limit == 0 {
		limit = 100
	}
	if limit < 0 || limit > 1000 {
		return nil, fmt.Errorf("events: DeadLetters limit %d must be 1 to 1000", limit)
	}
	rows, err := l.s.Reader().Query(ctx, l.q.listDead, l.d.Service, group, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("events: dead letters of %q: %w", group, err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var d DeadLetter
		var at store.Time
		if err := rows.Scan(&d.EventID, &d.Attempts, &d.Error, &at, &d.Replaying); err != nil {
			return nil, err
		}
		d.At = at.Time
		out = append(out, d)
	}
	return out, rows.Err()
}

// ErrNoDeadLetter is returned by [Log.ReplayDeadLetter] for an event the group has not
// given up on.
var ErrNoDeadLetter = errors.New("events: no such dead letter")

// ReplayDeadLetter hands one event the Shared or ExactlyOnce group gave up on (see
// [Log.DeadLetters]) to the group again, and nothing else: its other dead letters stay
// dead and its checkpoints stay where they are. The reader of the event's partition
// handles it (with the group's retries) before that partition's next events, and then
// removes it from the dead letters (for ExactlyOnce, in the handler's transaction); if it
// fails for good again it stays a dead letter, with its attempts added and its new error.
// Running instances are told on the bus once the transaction commits ([ReplayChannel]);
// without the signal the partition's reader notices at its next idle poll, and a group
// with no reader running handles it when one starts. An event retention has pruned cannot
// be replayed.
func (l *Log) ReplayDeadLetter(ctx context.Context, group string, eventID int64) error {
	return l.s.InTx(ctx, func(tx store.Tx) error { return l.replayDead(ctx, tx, tx, group, eventID) })
}

// ReplayDeadLetterTx is [Log.ReplayDeadLetter] inside the caller's transaction tx.
func (l *Log) ReplayDeadLetterTx(ctx context.Context, tx any, group string, eventID int64) error {
	q, err := l.s.Wrap(tx)
	if err != nil {
		return err
	}
	return l.replayDead(ctx, q, tx, group, eventID)
}

// replayDead marks the dead letter in q, which is tx as the store runs it.
func (l *Log) replayDead(ctx context.Context, q store.Querier, tx any, group string, eventID int64) error {
	var part *int64
	err := q.QueryRow(ctx, l.q.markDead, l.d.Service, group, eventID).Scan(&part)
	if errors.Is(err, store.ErrNoRows) {
		return fmt.Errorf("%w: event %d of group %q", ErrNoDeadLetter, eventID, group)
	}
	if err != nil {
		return fmt.Errorf("events: replay dead letter %d of %q: %w", eventID, group, err)
	}
	if part == nil {
		return fmt.Errorf("events: replay dead letter %d of %q: the event has left the log (pruned)", eventID, group)
	}
	if b := l.d.Bus; b != nil {
		if err := b.PublishTx(ctx, tx, ReplayChannel, []byte(group)); err != nil {
			return fmt.Errorf("events: replay dead letter %d of %q: %w", eventID, group, err)
		}
	}
	return nil
}

// TopicCountLimit is how far [Log.Topics] counts a topic's events.
const TopicCountLimit = 1000

// TopicStats is one topic of the log.
type TopicStats struct {
	Topic string `json:"topic"`
	// Events is how many of the topic's events the log holds (retention prunes the older
	// ones), counted up to [TopicCountLimit]; More says it holds more.
	Events int64 `json:"events"`
	More   bool  `json:"more,omitempty"`
	// LatestID is the topic's latest event in log order, LatestAt when its transaction
	// began.
	LatestID int64     `json:"latest_id"`
	LatestAt time.Time `json:"latest_at"`
}

// Topics lists the topics that have events in the log, by name, with their latest event
// and how many events they hold. It is one statement of index probes, for a dashboard to
// read every few seconds: it steps through the log's index from one topic to the next,
// so its cost follows the number of topics and not of events, and it counts a topic's
// events only up to [TopicCountLimit] (an index range of at most that many entries),
// since an exact count of a large log is a scan of it.
func (l *Log) Topics(ctx context.Context) ([]TopicStats, error) {
	rows, err := l.s.Reader().Query(ctx, l.q.topics, l.d.Service, TopicCountLimit+1)
	if err != nil {
		return nil, fmt.Errorf("events: topics: %w", err)
	}
	defer rows.Close()
	var out []TopicStats
	for rows.Next() {
		var t TopicStats
		var at store.Time
		if err := rows.Scan(&t.Topic, &t.Events, &t.LatestID, &at); err != nil {
			return nil, err
		}
		if t.Events > TopicCountLimit {
			t.Events, t.More = TopicCountLimit, true
		}
		t.LatestAt = at.Time
		out = append(out, t)
	}
	return out, rows.Err()
}

// pruneBatch is how many events one prune statement deletes, so that pruning never holds
// a long transaction (or SQLite's write lock) open.
const pruneBatch = 5000

// Prune deletes the events older than the retention, except those of event-sourced
// streams, and returns how many it deleted. The leader runs it (see [Log.Lead]).
func (l *Log) Prune(ctx context.Context) (int64, error) {
	if l.cfg.Retention < 0 {
		return 0, nil
	}
	var total int64
	for {
		n, err := l.s.Exec(ctx, l.q.prune, l.s.NowArg(), l.d.Service, l.cfg.Retention.Milliseconds(), pruneBatch)
		total += n
		if err != nil {
			return total, fmt.Errorf("events: prune: %w", err)
		}
		if n < pruneBatch {
			return total, nil
		}
	}
}

// MaintainInterval is how often [Log.Lead] prunes.
const MaintainInterval = time.Minute

// Lead prunes old events at once and then every [MaintainInterval], while this instance
// leads, until ctx ends.
func (l *Log) Lead(ctx context.Context) {
	prune := func(ctx context.Context) {
		if n, err := l.Prune(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("events: pruning failed", "err", err)
		} else if n > 0 {
			l.log.Info("events: pruned events past their retention", "count", n)
		}
	}
	prune(ctx)
	loop.Every(ctx, MaintainInterval, prune)
}
