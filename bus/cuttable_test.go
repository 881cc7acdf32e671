package bus_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/twicehq/twice/bus"
)

// loopback is a bus that delivers what it publishes to its own subscribers, at once, and
// vouches for its delivery.
type loopback struct{ subs bus.Subscribers }

func (l *loopback) Publish(_ context.Context, channel string, payload []byte) error {
	l.subs.Deliver(bus.Message{Channel: channel, Payload: payload})
	return nil
}

func (l *loopback) PublishTx(ctx context.Context, _ any, channel string, payload []byte) error {
	return l.Publish(ctx, channel, payload)
}

func (l *loopback) Subscribe(channel string, h bus.Handler) func() { return l.subs.Add(channel, h) }
func (l *loopback) Close(context.Context) error                    { return nil }
func (l *loopback) Delivering() bool                               { return true }

// A cut bus delivers nothing and does not vouch; its subscribers hear Lost when the cut
// starts and when it ends; publishing goes on; a cancelled subscription hears nothing.
func TestCuttable(t *testing.T) {
	ctx := context.Background()
	c := bus.NewCuttable(&loopback{}, nil, nil)
	var mu sync.Mutex
	var got []string
	record := func(m bus.Message) {
		mu.Lock()
		defer mu.Unlock()
		if m.Lost {
			got = append(got, m.Channel+":lost")
		} else {
			got = append(got, m.Channel+":"+string(m.Payload))
		}
	}
	c.Subscribe("a", record)
	stop := c.Subscribe("b", record)
	stop()
	publish := func(p string) {
		t.Helper()
		if err := c.Publish(ctx, "a", []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	publish("1")
	if !bus.Delivering(c) {
		t.Fatal("an uncut bus does not vouch")
	}
	restore := c.Cut()
	c.Cut()() // a second cut, and its restore, change nothing
	publish("2")
	if bus.Delivering(c) {
		t.Fatal("a cut bus vouches")
	}
	restore()
	restore()
	publish("3")
	if n := c.LostSignals(); n != 0 {
		t.Fatalf("LostSignals = %d: the cut's own Lost messages are counted", n)
	}
	c.Bus.(*loopback).subs.Lost() // the bus itself says signals may have been missed
	if n := c.LostSignals(); n != 1 {
		t.Fatalf("LostSignals = %d after the bus's Lost on one channel, want 1", n)
	}
	want := []string{"a:1", "a:lost", "a:lost", "a:3", "a:lost"}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %q; want %q", got, want)
	}
}
