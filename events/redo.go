package events

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/twicehq/twice/store"
)

// A dead letter replayed alone ([Log.ReplayDeadLetter]) is handled by the reader of its
// partition, outside the log's order: the checkpoint stays where it is, and the dead
// letter's row says the replay is asked (replay_part) until the reader is done with it.

// redoDead handles again, in log order, the dead letters of the partition whose replay
// was asked ([Log.ReplayDeadLetter]), up to a batch of them (the next load finds any
// left; a replay asked of an event pruned since is withdrawn). Each is retried as any
// event is; one handled leaves the dead letters (in the handler's transaction for
// ExactlyOnce, which also fences it by the checkpoint's version), one that fails for good
// stays there with its new error. The checkpoint does not move: the events after it are
// read as before.
func (w *worker) redoDead(log *slog.Logger) {
	c, l := w.c, w.c.l
	w.redo = false
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	rows, err := l.s.Reader().Query(ctx, l.q.listRedo, l.d.Service, c.cfg.Name, w.part, c.cfg.BatchSize)
	if err != nil {
		log.Warn("events: cannot read the dead letters to replay", "err", err)
		return
	}
	evs, err := l.scanEvents(rows)
	if err != nil {
		log.Warn("events: cannot read the dead letters to replay", "err", err)
		return
	}
	if len(evs) < c.cfg.BatchSize {
		// Every event still in the log was listed: any other replay asked of the partition
		// is of an event pruned since, which would make every load look again.
		if _, err := l.s.Exec(ctx, l.q.unmarkGone, l.d.Service, c.cfg.Name, w.part); err != nil {
			log.Warn("events: cannot withdraw the replays of pruned dead letters", "err", err)
		}
	}
	for _, e := range evs {
		if w.stopping() || c.abandoned.Load() {
			return
		}
		handled, err := w.redoOne(e)
		switch {
		case err != nil:
			if !w.stopping() {
				log.Warn("events: replay of a dead letter failed", "event", e.ID, "err", err)
			}
			return
		case handled:
			log.Info("events: dead letter replayed: handled", "event", e.ID)
		default:
			log.Warn("events: dead letter replayed: it failed again and stays a dead letter", "event", e.ID)
		}
	}
}

// redoOne handles the dead letter e again, and removes it from the dead letters once
// handled, or records its new failure; handled says which.
func (w *worker) redoOne(e Event) (handled bool, err error) {
	c, l := w.c, w.c.l
	gaveUp := func(n int, cause error) func(ctx context.Context, q store.Querier) error {
		return func(ctx context.Context, q store.Querier) error {
			_, err := q.Exec(ctx, l.q.redead, l.s.NowArg(), l.d.Service, c.cfg.Name, e.ID, n, store.ErrorText(cause))
			return err
		}
	}
	failed := false
	if c.cfg.Mode == ExactlyOnce {
		var moved error
		done, err := w.attempt(e.ID, func() error {
			err := w.inTx(w.pos, func(ctx context.Context, tx store.Tx) error {
				if err := w.protect(func() error { return w.handleTx(ctx, tx, e) }); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, l.q.redone, l.d.Service, c.cfg.Name, e.ID)
				return err
			})
			if errors.Is(err, errMoved) {
				moved = err // not the handler's failure: stop, and reload
				return nil
			}
			return err
		}, func(n int, cause error) error {
			failed = true
			return w.inTx(w.pos, func(ctx context.Context, tx store.Tx) error { return gaveUp(n, cause)(ctx, tx) })
		})
		switch {
		case moved != nil:
			return false, moved
		case !done:
			return false, errStopping
		}
		return !failed && err == nil, err
	}
	done, err := w.attempt(e.ID, func() error {
		if c.cfg.HandleBatch != nil {
			return w.handleBatch([]Event{e})
		}
		return w.handle(e)
	}, func(n int, cause error) error {
		failed = true
		ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 10*time.Second)
		defer cancel()
		return gaveUp(n, cause)(ctx, l.s)
	})
	if !done {
		return false, errStopping
	}
	if err != nil || failed {
		return false, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 10*time.Second)
	defer cancel()
	_, err = l.s.Exec(ctx, l.q.redone, l.d.Service, c.cfg.Name, e.ID)
	return err == nil, err
}
