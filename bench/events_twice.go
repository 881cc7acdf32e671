package main

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
)

// twiceEvents is twice's event log at its defaults, the shape of `twice bench events`: two
// nodes of one service in this process, a Shared group of 8 partitions on the second. With
// tx, each event is published with PublishTx in a *sql.Tx of the bench's own (database/sql
// on pgx's stdlib driver, as the watermill runs publish), which then commits.
type twiceEvents struct{ tx bool }

func (t twiceEvents) name() (string, string, string) {
	if t.tx {
		return "twice", "PublishTx", "PublishTx in a *sql.Tx (database/sql, pgx stdlib) that then commits; twice.Config{} otherwise, 8 partitions"
	}
	return "twice", "Publish", "Publish, a transaction of its own per event; twice.Config{}, Shared group of 8 partitions (defaults)"
}

// twiceRun is one run's nodes: pub publishes, sub consumes; app is the application's own
// handle the PublishTx runs publish through.
type twiceRun struct {
	t        twiceEvents
	pub, sub *twice.Node
	app      *sql.DB
}

func (t twiceEvents) open(ctx context.Context, dsn string) (*twiceRun, error) {
	r := &twiceRun{t: t}
	cfg := twice.Config{DSN: dsn, Schema: "public", Name: "bench", Logger: slog.New(slog.DiscardHandler)}
	var err error
	if r.pub, err = twice.Open(ctx, cfg); err == nil {
		r.sub, err = twice.Open(ctx, cfg)
	}
	if err == nil && t.tx {
		r.app, err = openSQL(dsn, 8)
	}
	if err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *twiceRun) close() {
	ctx := context.Background()
	if r.sub != nil {
		_ = r.sub.Close(ctx)
	}
	if r.pub != nil {
		_ = r.pub.Close(ctx)
	}
	if r.app != nil {
		_ = r.app.Close()
	}
}

func (r *twiceRun) publish(ctx context.Context, m events.Message) error {
	if !r.t.tx {
		_, err := r.pub.Events().Publish(ctx, m)
		return err
	}
	tx, err := r.app.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // after the commit it does nothing
	if _, err := r.pub.Events().PublishTx(ctx, tx, m); err != nil {
		return err
	}
	return tx.Commit()
}

func (t twiceEvents) throughput(ctx context.Context, dsn string, n, publishers int) (time.Duration, time.Duration, error) {
	r, err := t.open(ctx, dsn)
	if err != nil {
		return 0, 0, err
	}
	defer r.close()
	got := newConsumption(n)
	c, err := r.sub.Events().Subscribe(ctx, events.GroupConfig{Name: "throughput", Topics: []string{"bench.throughput"},
		Handle: func(context.Context, events.Event) error { got.add(); return nil }})
	if err != nil {
		return 0, 0, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	return publishAndConsume(ctx, n, publishers, got, func(i int) error {
		return r.publish(ctx, events.Message{Topic: "bench.throughput", Key: strconv.Itoa(i % 1000)})
	})
}

func (t twiceEvents) latency(ctx context.Context, dsn string, n, rate int) ([]timed, error) {
	r, err := t.open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer r.close()
	var rec latencyRecorder
	got := newConsumption(n)
	c, err := r.sub.Events().Subscribe(ctx, events.GroupConfig{Name: "latency", Topics: []string{"bench.latency"}, StartAtEnd: true,
		Handle: func(_ context.Context, e events.Event) error {
			if len(e.Payload) != 8 {
				return errors.New("bad payload")
			}
			rec.add(int64(binary.BigEndian.Uint64(e.Payload)))
			got.add()
			return nil
		}})
	if err != nil {
		return nil, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	// Let the group settle on its partitions before timing.
	for len(c.Partitions()) < events.DefaultPartitions {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	err = paceEvents(ctx, n, rate, func(i int) error {
		sent := time.Now().UnixNano()
		payload := binary.BigEndian.AppendUint64(nil, uint64(sent))
		if err := r.publish(ctx, events.Message{Topic: "bench.latency", Key: strconv.Itoa(i % 100), Payload: payload}); err != nil {
			return err
		}
		rec.sent(sent)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := got.wait(ctx); err != nil {
		return nil, err
	}
	return rec.timed(), nil
}
