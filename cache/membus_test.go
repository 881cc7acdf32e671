package cache

import (
	"context"
	"sync"

	"github.com/twicehq/twice/bus"
)

// memNet is an in-memory bus shared by the instances of a unit test. Messages wait in a
// queue until the test delivers them, so a test decides exactly when an invalidation
// arrives. The conformance suite covers the real backends.
type memNet struct {
	mu    sync.Mutex // protects queue, buses
	queue []bus.Message
	buses []*memBus
	auto  bool // deliver at once on publish
}

type memBus struct {
	net  *memNet
	id   string
	subs bus.Subscribers
}

// memTx is a transaction for PublishTx: its messages are queued on commit.
type memTx struct {
	b    *memBus
	msgs []bus.Message
}

func (n *memNet) open(id string) *memBus {
	b := &memBus{net: n, id: id}
	n.mu.Lock()
	n.buses = append(n.buses, b)
	n.mu.Unlock()
	return b
}

func (n *memNet) enqueue(msgs ...bus.Message) {
	n.mu.Lock()
	n.queue = append(n.queue, msgs...)
	auto := n.auto
	n.mu.Unlock()
	if auto {
		n.deliver()
	}
}

// deliver hands every queued message to every bus and returns how many it delivered.
func (n *memNet) deliver() int {
	n.mu.Lock()
	q, buses := n.queue, append([]*memBus(nil), n.buses...)
	n.queue = nil
	n.mu.Unlock()
	for _, m := range q {
		for _, b := range buses {
			b.subs.Deliver(m)
		}
	}
	return len(q)
}

func (b *memBus) Publish(_ context.Context, channel string, payload []byte) error {
	if err := bus.Validate(channel, payload); err != nil {
		return err
	}
	b.net.enqueue(bus.Message{Channel: channel, Payload: payload, From: b.id})
	return nil
}

func (b *memBus) PublishTx(_ context.Context, tx any, channel string, payload []byte) error {
	if err := bus.Validate(channel, payload); err != nil {
		return err
	}
	t := tx.(*memTx)
	t.msgs = append(t.msgs, bus.Message{Channel: channel, Payload: payload, From: b.id})
	return nil
}

func (b *memBus) Subscribe(channel string, h bus.Handler) func() { return b.subs.Add(channel, h) }

func (b *memBus) Close(context.Context) error { return nil }

// lost tells b's subscribers that signals may have been missed.
func (b *memBus) lost() { b.subs.Lost() }

func (t *memTx) commit() { t.b.net.enqueue(t.msgs...) }
