package bus

import (
	"log/slog"
	"sync/atomic"
)

// Cuttable is a bus whose receiving side a test can cut, as when an instance's PostgreSQL
// LISTEN connection or NATS subscription drops: while cut it delivers nothing and does not
// vouch for delivery ([Vouching]), so the building blocks fall back to their own polls, and
// its subscribers are told Lost when the cut starts and again when it ends, as the real
// backends tell them. What it publishes still goes out. Uncut, it passes everything through
// at the cost of an atomic load per message delivered. The node wraps its bus in one, for
// twicetest.
type Cuttable struct {
	Bus
	cut  atomic.Bool
	lost atomic.Uint64 // Lost messages the bus delivered to a subscriber (LostSignals)
	subs Subscribers   // every handler, to tell it Lost
}

// NewCuttable wraps b. logger and panics are as in [Subscribers].
func NewCuttable(b Bus, logger *slog.Logger, panics *atomic.Int64) *Cuttable {
	c := &Cuttable{Bus: b}
	c.subs.Logger, c.subs.Panics = logger, panics
	return c
}

// Subscribe calls h for every message on channel while the bus is not cut.
func (c *Cuttable) Subscribe(channel string, h Handler) func() {
	stopInner := c.Bus.Subscribe(channel, func(m Message) {
		if !c.cut.Load() {
			if m.Lost {
				c.lost.Add(1)
			}
			h(m)
		}
	})
	stopLost := c.subs.Add(channel, h)
	return func() {
		stopInner()
		stopLost()
	}
}

// LostSignals counts the messages with Lost set that the wrapped bus delivered to a
// subscriber: each says that signals on its channel may have been missed, and makes its
// subscriber look at the database. Those Cut sends are not counted.
func (c *Cuttable) LostSignals() uint64 { return c.lost.Load() }

// Delivering reports whether the bus vouches for its delivery: never while it is cut.
func (c *Cuttable) Delivering() bool { return !c.cut.Load() && Delivering(c.Bus) }

// Cut stops delivery until restore is called, telling every subscriber Lost now and when
// it is restored. Cuts do not nest: a second Cut while cut does nothing, and its restore
// does nothing either.
func (c *Cuttable) Cut() (restore func()) {
	if !c.cut.CompareAndSwap(false, true) {
		return func() {}
	}
	c.subs.Lost()
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			c.cut.Store(false)
			c.subs.Lost()
		}
	}
}
