// Package natsrelay forwards a topic of a twice event log to a NATS JetStream stream, for
// other services to consume.
//
// The relay is a Shared consumer group with one partition, so one instance of the service
// forwards at a time, in log order, and another takes over if it dies. It is at-least-once:
// a batch is checkpointed only after JetStream acknowledged every message in it, and after
// a crash the events since the checkpoint are sent again. Each message carries the
// Nats-Msg-Id header "<service>:<event id>", so JetStream drops the repeats that arrive
// within the stream's duplicate window (Duplicates in the stream config, 2 minutes by
// default): keep that window longer than a relay takes to recover.
//
// A batch is published asynchronously and the relay waits for every acknowledgement. If a
// publish fails the whole batch is sent again; the messages acknowledged the first time are
// dropped as duplicates, but the retried ones may land after later messages of the batch.
// Consumers that need strict order per key should order by Twice-Event-Id within a key.
//
// Every message carries the event's metadata in headers (see [Decode]): Twice-Event-Id,
// Twice-Topic, Twice-Key, Twice-Time (RFC 3339), Twice-Stream and Twice-Version for stream
// events, and the event's own headers as one JSON object in Twice-Headers (NATS headers
// cannot carry every name or value an event header may hold).
package natsrelay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twicehq/twice/events"
)

// Header names set on every relayed message.
const (
	HeaderEventID = "Twice-Event-Id"
	HeaderService = "Twice-Service"
	HeaderTopic   = "Twice-Topic"
	HeaderKey     = "Twice-Key"
	HeaderTime    = "Twice-Time"
	HeaderStream  = "Twice-Stream"
	HeaderVersion = "Twice-Version"
	HeaderHeaders = "Twice-Headers"
)

// DefaultBatchSize is how many events one relay batch forwards.
const DefaultBatchSize = 256

// DefaultAckTimeout bounds the wait for JetStream's acknowledgements of a batch.
const DefaultAckTimeout = 10 * time.Second

// Config configures a relay.
type Config struct {
	// Topic is the event topic to forward. Required.
	Topic string
	// Conn is the NATS connection to publish on. Required.
	Conn *nats.Conn
	// Subject is where messages are published; a JetStream stream must capture it.
	// Required.
	Subject string
	// Stream, if set, is created (capturing Subject, with a 2-minute duplicate window)
	// when it does not exist. An existing stream is left as it is. Defaults to empty: the
	// stream is managed elsewhere.
	Stream string
	// Group is the consumer group the relay runs as. Defaults to "relay:" + Topic.
	Group string
	// BatchSize is how many events are forwarded per acknowledged batch. Defaults to
	// [DefaultBatchSize].
	BatchSize int
	// AckTimeout bounds the wait for a batch's acknowledgements. Defaults to
	// [DefaultAckTimeout].
	AckTimeout time.Duration
	// StartAtEnd skips the events already in the log when the relay's group is new.
	// Defaults to false: everything still in the log is forwarded.
	StartAtEnd bool
}

// Relay forwards events until closed.
type Relay struct {
	cfg     Config
	service string
	js      jetstream.JetStream
	c       *events.Consumer
}

// Start starts this instance's part of the relay; run it on every instance, and the
// group makes one of them forward.
func Start(ctx context.Context, log *events.Log, cfg Config) (*Relay, error) {
	if cfg.Topic == "" || cfg.Conn == nil || cfg.Subject == "" {
		return nil, errors.New("natsrelay: Config.Topic, Config.Conn and Config.Subject are required")
	}
	if cfg.Group == "" {
		cfg.Group = "relay:" + cfg.Topic
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("natsrelay: %w", err)
	}
	if cfg.Stream != "" {
		if err := ensureStream(ctx, js, cfg.Stream, cfg.Subject); err != nil {
			return nil, err
		}
	}
	r := &Relay{cfg: cfg, service: log.Service(), js: js}
	r.c, err = log.Subscribe(ctx, events.GroupConfig{
		Name: cfg.Group, Topics: []string{cfg.Topic}, Partitions: 1, BatchSize: cfg.BatchSize,
		MaxAttempts: -1, RetryBackoff: 50 * time.Millisecond, StartAtEnd: cfg.StartAtEnd,
		HandleBatch: r.forward,
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, name, subject string) error {
	_, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Duplicates: 2 * time.Minute})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = nil // another instance made it first
		}
	}
	if err != nil {
		return fmt.Errorf("natsrelay: stream %s: %w", name, err)
	}
	return nil
}

// MsgID is the Nats-Msg-Id of an event of service: JetStream de-duplicates on it.
func MsgID(service string, eventID int64) string {
	return service + ":" + strconv.FormatInt(eventID, 10)
}

// Message is the NATS message an event is relayed as.
func Message(service, subject string, e events.Event) *nats.Msg {
	h := nats.Header{}
	h.Set(jetstream.MsgIDHeader, MsgID(service, e.ID))
	h.Set(HeaderEventID, strconv.FormatInt(e.ID, 10))
	h.Set(HeaderService, service)
	h.Set(HeaderTopic, e.Topic)
	if e.Key != "" {
		h.Set(HeaderKey, e.Key)
	}
	h.Set(HeaderTime, e.At.UTC().Format(time.RFC3339Nano))
	if e.Stream != "" {
		h.Set(HeaderStream, e.Stream)
		h.Set(HeaderVersion, strconv.FormatInt(e.Version, 10))
	}
	if len(e.Headers) > 0 {
		b, _ := json.Marshal(e.Headers) // strings always encode; JSON escapes CR and LF
		h.Set(HeaderHeaders, string(b))
	}
	return &nats.Msg{Subject: subject, Data: e.Payload, Header: h}
}

// forward publishes a batch and waits until JetStream has stored (or de-duplicated) every
// message.
func (r *Relay) forward(ctx context.Context, evs []events.Event) error {
	futures := make([]jetstream.PubAckFuture, 0, len(evs))
	for _, e := range evs {
		f, err := r.js.PublishMsgAsync(Message(r.service, r.cfg.Subject, e))
		if err != nil {
			return fmt.Errorf("natsrelay: publish event %d: %w", e.ID, err)
		}
		futures = append(futures, f)
	}
	timeout := time.NewTimer(r.cfg.AckTimeout)
	defer timeout.Stop()
	var errs []error
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs = append(errs, fmt.Errorf("event %d: %w", evs[i].ID, err))
		case <-timeout.C:
			return fmt.Errorf("natsrelay: no acknowledgement for event %d within %v", evs[i].ID, r.cfg.AckTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("natsrelay: %w", errors.Join(errs...))
	}
	return nil
}

// Close stops this instance's part of the relay, after the batch in hand.
func (r *Relay) Close(ctx context.Context) error { return r.c.Close(ctx) }

// Lag is how far the relay is behind the log.
func (r *Relay) Lag(ctx context.Context, log *events.Log) (events.Lag, error) {
	return log.Lag(ctx, r.cfg.Group)
}
