package main

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
)

// watermillEvents is watermill v1.5.1 with watermill-sql/v4 v4.1.2 on PostgreSQL: the
// default PostgreSQL schema adapter (a table per topic, read in (transaction id, offset)
// order below the oldest running transaction) and offsets adapter (one row per consumer
// group, locked FOR UPDATE by the reading transaction), each event published through a
// *sql.Tx of the bench's (database/sql on pgx's stdlib driver) that then commits, the way
// watermill-sql does an outbox. The subscriber, on a second *sql.DB, is the consumer group's
// only member; its handler acknowledges each message as it gets it.
type watermillEvents struct {
	config, desc string
	poll         time.Duration // SubscriberConfig.PollInterval; 0 is watermill's 1 s
	batch        int           // DefaultPostgreSQLSchema.SubscribeBatchSize; 0 is watermill's 100
}

func watermillDefaults() eventSystem {
	return watermillEvents{config: "defaults", desc: "watermill-sql defaults: poll 1 s, batch 100, ack deadline 30 s"}
}

func watermillTuned() eventSystem {
	return watermillEvents{config: "tuned", desc: "poll 10 ms, batch 1000; other settings watermill-sql's defaults",
		poll: 10 * time.Millisecond, batch: 1000}
}

func (w watermillEvents) name() (string, string, string) { return "watermill", w.config, w.desc }

// watermillRun is one run's two instances: pub is the publishing application's handle,
// sub the subscriber on a second handle.
type watermillRun struct {
	pub, subDB *sql.DB
	sub        *wsql.Subscriber
}

func (w watermillEvents) open(dsn string) (*watermillRun, error) {
	r := &watermillRun{}
	var err error
	if r.pub, err = openSQL(dsn, 8); err == nil {
		r.subDB, err = openSQL(dsn, 8)
	}
	if err == nil {
		r.sub, err = wsql.NewSubscriber(wsql.BeginnerFromStdSQL(r.subDB), wsql.SubscriberConfig{
			ConsumerGroup:    "bench",
			PollInterval:     w.poll,
			SchemaAdapter:    wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: w.batch},
			OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
			InitializeSchema: true,
		}, watermill.NopLogger{})
	}
	if err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *watermillRun) close() {
	if r.sub != nil {
		_ = r.sub.Close()
	}
	for _, db := range []*sql.DB{r.pub, r.subDB} {
		if db != nil {
			_ = db.Close()
		}
	}
}

// subscribe creates topic's tables and the group's offset row, and hands every message
// to handle, acknowledging it afterwards.
func (r *watermillRun) subscribe(ctx context.Context, topic string, handle func(*message.Message) error) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	msgs, err := r.sub.Subscribe(ctx, topic)
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for msg := range msgs {
			if err := handle(msg); err != nil {
				progress("watermill handler: %v", err)
				msg.Nack()
				continue
			}
			msg.Ack()
		}
	}()
	return func() { cancel(); <-done }, nil
}

// publish publishes one message in a transaction of its own, through a publisher made on
// that transaction, as watermill-sql's documentation does it.
func (r *watermillRun) publish(ctx context.Context, topic string, payload []byte) error {
	tx, err := r.pub.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // after the commit it does nothing
	p, err := wsql.NewPublisher(wsql.TxFromStdSQL(tx), wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{}}, nil)
	if err != nil {
		return err
	}
	msg := message.NewMessage(watermill.NewUUID(), payload)
	msg.SetContext(ctx)
	if err := p.Publish(topic, msg); err != nil {
		return err
	}
	return tx.Commit()
}

func (w watermillEvents) throughput(ctx context.Context, dsn string, n, publishers int) (time.Duration, time.Duration, error) {
	r, err := w.open(dsn)
	if err != nil {
		return 0, 0, err
	}
	defer r.close()
	got := newConsumption(n)
	stop, err := r.subscribe(ctx, "bench_throughput", func(*message.Message) error { got.add(); return nil })
	if err != nil {
		return 0, 0, err
	}
	defer stop()
	// The payload column is JSON (the schema adapter's default): an empty object.
	payload := []byte("{}")
	return publishAndConsume(ctx, n, publishers, got, func(int) error { return r.publish(ctx, "bench_throughput", payload) })
}

func (w watermillEvents) latency(ctx context.Context, dsn string, n, rate int) ([]timed, error) {
	r, err := w.open(dsn)
	if err != nil {
		return nil, err
	}
	defer r.close()
	var rec latencyRecorder
	got := newConsumption(n)
	stop, err := r.subscribe(ctx, "bench_latency", func(msg *message.Message) error {
		sent, err := strconv.ParseInt(string(msg.Payload), 10, 64)
		if err != nil {
			return fmt.Errorf("bad payload %q", msg.Payload)
		}
		rec.add(sent)
		got.add()
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	err = paceEvents(ctx, n, rate, func(int) error {
		sent := time.Now().UnixNano()
		// A JSON number, for the JSON payload column.
		if err := r.publish(ctx, "bench_latency", strconv.AppendInt(nil, sent, 10)); err != nil {
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
