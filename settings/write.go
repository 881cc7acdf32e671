package settings

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/twicehq/twice/store"
)

// SetOpts are the optional arguments of a change. A nil *SetOpts is valid.
type SetOpts struct {
	// Actor is who asked for the change (a user, an admin tool), recorded in the history
	// with the instance. Defaults to empty.
	Actor string
	// IfVersion, if not nil, makes the change conditional: it happens only if the key is
	// at this version now (0: the key has never been set), and fails with [ErrConflict]
	// otherwise. Use it for read-modify-write.
	IfVersion *int64
}

// Set sets key to value on every instance: value's Go type gives the setting's type (see
// [Type]; other types are stored as JSON). It returns the new version. This instance reads
// it at once; the others within milliseconds (the bus), or at their next poll.
func (s *Settings) Set(ctx context.Context, key string, value any, opts *SetOpts) (Setting, error) {
	return s.change(ctx, key, value, false, opts)
}

// SetTx is [Settings.Set] inside the caller's transaction tx (a *sql.Tx, pgx.Tx or
// store.Tx): the change commits or rolls back with it, and every instance (this one
// included) applies it once it commits. Until then, other changes of the service's
// settings wait for tx.
func (s *Settings) SetTx(ctx context.Context, tx any, key string, value any, opts *SetOpts) (Setting, error) {
	return s.changeTx(ctx, tx, key, value, false, opts)
}

// Delete removes key on every instance. It returns [ErrNotFound] if the key is not set.
func (s *Settings) Delete(ctx context.Context, key string, opts *SetOpts) (Setting, error) {
	return s.change(ctx, key, nil, true, opts)
}

// DeleteTx is [Settings.Delete] inside the caller's transaction tx.
func (s *Settings) DeleteTx(ctx context.Context, tx any, key string, opts *SetOpts) (Setting, error) {
	return s.changeTx(ctx, tx, key, nil, true, opts)
}

func (s *Settings) change(ctx context.Context, key string, value any, del bool, opts *SetOpts) (Setting, error) {
	var out Setting
	err := s.st.InTx(ctx, func(tx store.Tx) error {
		var err error
		out, err = s.write(ctx, tx, key, value, del, opts)
		return err
	})
	if err != nil {
		return Setting{}, err
	}
	// Committed: read your own write here at once, without waiting for the bus.
	s.apply(out, false)
	return out, nil
}

func (s *Settings) changeTx(ctx context.Context, tx any, key string, value any, del bool, opts *SetOpts) (Setting, error) {
	q, err := s.st.Wrap(tx)
	if err != nil {
		return Setting{}, err
	}
	return s.write(ctx, q, key, value, del, opts)
}

// write makes one change in q's transaction: the next revision of the service (whose row
// lock orders concurrent changes), the version check, the new row, its history, and the
// signal that goes out on commit.
func (s *Settings) write(ctx context.Context, q store.Querier, key string, value any, del bool, opts *SetOpts) (Setting, error) {
	if s.closed() {
		return Setting{}, ErrClosed
	}
	if opts == nil {
		opts = &SetOpts{}
	}
	if err := CheckKey(key); err != nil {
		return Setting{}, err
	}
	if len(opts.Actor) > MaxActor {
		return Setting{}, fmt.Errorf("%w: actor of %d bytes, the limit is %d", ErrTooLarge, len(opts.Actor), MaxActor)
	}
	v := Setting{Key: key, Instance: s.d.Instance, Actor: opts.Actor, Deleted: del}
	if !del {
		var err error
		if v.Type, v.Text, err = encode(value); err != nil {
			return Setting{}, fmt.Errorf("settings: %q: %w", key, err)
		}
		if v.Value, err = decode(v.Type, v.Text); err != nil {
			return Setting{}, fmt.Errorf("settings: %q: %w", key, err)
		}
	}

	if err := q.QueryRow(ctx, s.q.nextRev, s.d.Service).Scan(&v.Rev); err != nil {
		return Setting{}, fmt.Errorf("settings: %q: %w", key, err)
	}
	var curType Type
	var curVersion int64
	var curDeleted bool
	err := q.QueryRow(ctx, s.q.current, s.d.Service, key).Scan(&curType, &curVersion, &curDeleted)
	switch {
	case errors.Is(err, store.ErrNoRows):
	case err != nil:
		return Setting{}, fmt.Errorf("settings: %q: %w", key, err)
	}
	if opts.IfVersion != nil && *opts.IfVersion != curVersion {
		return Setting{}, fmt.Errorf("%w: %q is at version %d, not %d", ErrConflict, key, curVersion, *opts.IfVersion)
	}
	live := curVersion > 0 && !curDeleted
	switch {
	case del && !live:
		return Setting{}, fmt.Errorf("%w: %q", ErrNotFound, key)
	case del:
		v.Type = curType
	case live && curType != v.Type:
		return Setting{}, fmt.Errorf("%w: %q is a %s; a %s cannot replace it (delete it first to change its type)",
			ErrType, key, curType, v.Type)
	}
	v.Version = curVersion + 1

	var at store.Time
	if err := q.QueryRow(ctx, s.q.upsert, s.st.NowArg(), s.d.Service, key, v.Type, v.Text, v.Version, v.Rev,
		v.Deleted, s.d.Instance, v.Actor).Scan(&at); err != nil {
		return Setting{}, fmt.Errorf("settings: %q: %w", key, err)
	}
	v.UpdatedAt = at.Time
	if _, err := q.Exec(ctx, s.q.record, s.d.Service, key, v.Version, v.Rev, v.Type, v.Text, v.Deleted,
		s.st.TimeArg(v.UpdatedAt), s.d.Instance, v.Actor); err != nil {
		return Setting{}, fmt.Errorf("settings: %q: history: %w", key, err)
	}
	if old := v.Version - int64(s.cfg.KeepHistory); old > 0 {
		if _, err := q.Exec(ctx, s.q.prune, s.d.Service, key, old); err != nil {
			return Setting{}, fmt.Errorf("settings: %q: history: %w", key, err)
		}
	}
	if b := s.d.Bus; b != nil {
		if err := b.PublishTx(ctx, q, Channel, []byte(strconv.FormatInt(v.Rev, 10))); err != nil {
			return Setting{}, fmt.Errorf("settings: %q: %w", key, err)
		}
	}
	return v, nil
}

// History returns the most recent changes, newest first: of key, or of every key if key is
// empty. It reads the database. limit defaults to 100 when 0.
func (s *Settings) History(ctx context.Context, key string, limit int) ([]Setting, error) {
	if key != "" {
		if err := CheckKey(key); err != nil {
			return nil, err
		}
	}
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.st.Reader().Query(ctx, s.q.history, s.d.Service, key, limit)
	if err != nil {
		return nil, fmt.Errorf("settings: history: %w", err)
	}
	defer rows.Close()
	var out []Setting
	for rows.Next() {
		v, err := s.scan(rows)
		if err != nil {
			return nil, fmt.Errorf("settings: history: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
