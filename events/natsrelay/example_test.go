package natsrelay_test

import (
	"context"
	"log"

	"github.com/nats-io/nats.go"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events/natsrelay"
)

// Forward the "order.placed" topic to the JetStream stream ORDERS on every instance; one
// of them forwards at a time. Another service reads the stream and decodes each message.
func Example() {
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "postgres://app@db/shop", Name: "shop"})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	relay, err := natsrelay.Start(ctx, node.Events(), natsrelay.Config{
		Topic: "order.placed", Conn: nc, Subject: "shop.orders.placed", Stream: "ORDERS",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer relay.Close(ctx)

	// In the consuming service, for each message m of the stream:
	//	e, err := natsrelay.Decode(m)   // e.Service, e.ID, e.Topic, e.Key, e.Payload, …
	//	… handle it idempotently by (e.Service, e.ID) …
}
