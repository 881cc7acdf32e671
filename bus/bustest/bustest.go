// Package bustest is the conformance suite every [bus.Bus] backend passes.
package bustest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice/bus"
)

// Backend tells the suite how to make instances of one backend.
type Backend struct {
	// Service is the service every bus of the backend serves. Required.
	Service string
	// Open returns the bus of a new instance, signing and checking messages with signer
	// (nil for none). Every bus opened in one test shares the backend and the service, as
	// the instances of one service do.
	Open func(t *testing.T, instance string, signer *bus.Signer) bus.Bus
	// Begin, if set, opens a transaction that PublishTx joins.
	Begin func(t *testing.T) Tx
	// Disconnect, if set, cuts the connection of the instance's bus so the suite can check
	// that subscribers are told about possibly lost signals.
	Disconnect func(t *testing.T, instance string)
	// Inject, if set, names each way an outsider can put a raw message on the backend's
	// transport (see [InjectStore] and [InjectNATS]).
	Inject map[string]Injector
}

// Tx is a transaction for PublishTx.
type Tx interface {
	Handle() any
	Commit() error
	Rollback() error
}

// limit bounds every wait: far above any delivery time, it only catches messages that
// never arrive.
const limit = 15 * time.Second

// inbox collects what a subscriber receives.
type inbox struct {
	mu   sync.Mutex // protects msgs
	msgs []bus.Message
	ch   chan struct{}
}

func newInbox() *inbox { return &inbox{ch: make(chan struct{}, 1)} }

func (in *inbox) handle(m bus.Message) {
	in.mu.Lock()
	in.msgs = append(in.msgs, m)
	in.mu.Unlock()
	select {
	case in.ch <- struct{}{}:
	default:
	}
}

func (in *inbox) snapshot() []bus.Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]bus.Message(nil), in.msgs...)
}

// waitFor waits until cond holds for the messages received so far.
func (in *inbox) waitFor(t *testing.T, what string, cond func([]bus.Message) bool) []bus.Message {
	t.Helper()
	deadline := time.After(limit)
	for {
		if ms := in.snapshot(); cond(ms) {
			return ms
		}
		select {
		case <-in.ch:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s: not within %v; got %d messages", what, limit, len(in.snapshot()))
		}
	}
}

func payloads(ms []bus.Message) map[string]int {
	out := map[string]int{}
	for _, m := range ms {
		if !m.Lost {
			out[string(m.Payload)]++
		}
	}
	return out
}

// Exercise runs the suite, once with unsigned messages and once with every instance
// signing with a cluster secret, then checks that a signing bus drops what outsiders
// inject. newBackend is called once per test, so tests never see each other's messages.
func Exercise(t *testing.T, newBackend func(t *testing.T) Backend) {
	exercise(t, newBackend, nil)
	t.Run("Signed", func(t *testing.T) {
		t.Parallel()
		exercise(t, newBackend, Secret())
	})
	signing(t, newBackend)
}

// exercise runs the suite with every instance signing with secret, or none if it is nil.
func exercise(t *testing.T, newBackend func(t *testing.T) Backend, secret []byte) {
	ctx := context.Background()
	open := func(t *testing.T, b Backend, instance string) bus.Bus {
		return b.Open(t, instance, NewSigner(t, b.Service, secret, nil))
	}

	t.Run("FanOut", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		buses := []bus.Bus{open(t, b, "i0"), open(t, b, "i1"), open(t, b, "i2")}
		inboxes := make([]*inbox, len(buses))
		for i, bb := range buses {
			inboxes[i] = newInbox()
			cancel := bb.Subscribe("orders", inboxes[i].handle)
			t.Cleanup(cancel)
		}
		if err := buses[0].Publish(ctx, "orders", []byte("order-42")); err != nil {
			t.Fatal(err)
		}
		for i, in := range inboxes {
			ms := in.waitFor(t, fmt.Sprintf("instance %d receives", i), func(ms []bus.Message) bool { return len(ms) >= 1 })
			if m := ms[0]; m.Channel != "orders" || string(m.Payload) != "order-42" || m.From != "i0" || m.Lost {
				t.Fatalf("instance %d got %+v", i, m)
			}
		}
	})

	t.Run("ChannelsAreSeparate", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		a, c := open(t, b, "i0"), open(t, b, "i1")
		onA, onB := newInbox(), newInbox()
		t.Cleanup(c.Subscribe("a", onA.handle))
		t.Cleanup(c.Subscribe("b", onB.handle))
		if err := a.Publish(ctx, "b", []byte("for-b")); err != nil {
			t.Fatal(err)
		}
		onB.waitFor(t, "b receives", func(ms []bus.Message) bool { return len(ms) == 1 })
		if err := a.Publish(ctx, "a", []byte("for-a")); err != nil {
			t.Fatal(err)
		}
		ms := onA.waitFor(t, "a receives", func(ms []bus.Message) bool { return len(ms) == 1 })
		if string(ms[0].Payload) != "for-a" || len(onB.snapshot()) != 1 {
			t.Fatalf("a got %+v, b got %d", ms, len(onB.snapshot()))
		}
	})

	t.Run("BurstArrivesWhole", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		pubs := []bus.Bus{open(t, b, "p0"), open(t, b, "p1")}
		sub := open(t, b, "s")
		in := newInbox()
		t.Cleanup(sub.Subscribe("burst", in.handle))
		const per = 1000
		var wg sync.WaitGroup
		for p, pb := range pubs {
			wg.Go(func() {
				for i := range per {
					if err := pb.Publish(ctx, "burst", fmt.Appendf(nil, "%d-%d", p, i)); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		got := in.waitFor(t, "every message of the burst", func(ms []bus.Message) bool { return len(payloads(ms)) >= 2*per })
		for k, n := range payloads(got) {
			if n != 1 {
				t.Fatalf("payload %s delivered %d times", k, n)
			}
		}
	})

	t.Run("DuplicatesMayMerge", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		a := open(t, b, "i0")
		in := newInbox()
		t.Cleanup(a.Subscribe("wake", in.handle))
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				if err := a.Publish(ctx, "wake", []byte("queue:default")); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		ms := in.waitFor(t, "at least one wake-up", func(ms []bus.Message) bool { return len(ms) >= 1 })
		if len(ms) > 50 {
			t.Fatalf("%d deliveries of 50 publishes", len(ms))
		}
	})

	t.Run("Unsubscribe", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		a := open(t, b, "i0")
		in, probe := newInbox(), newInbox()
		cancel := a.Subscribe("x", in.handle)
		t.Cleanup(a.Subscribe("x", probe.handle))
		cancel()
		if err := a.Publish(ctx, "x", []byte("after")); err != nil {
			t.Fatal(err)
		}
		probe.waitFor(t, "the other subscriber receives", func(ms []bus.Message) bool { return len(ms) == 1 })
		if n := len(in.snapshot()); n != 0 {
			t.Fatalf("cancelled subscriber got %d messages", n)
		}
	})

	t.Run("Limits", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		a := open(t, b, "i0")
		if err := a.Publish(ctx, "", []byte("x")); err == nil {
			t.Error("empty channel accepted")
		}
		if err := a.Publish(ctx, strings.Repeat("c", bus.MaxChannel+1), nil); err == nil {
			t.Error("long channel accepted")
		}
		if err := a.Publish(ctx, "c", make([]byte, bus.MaxPayload+1)); err == nil || !strings.Contains(err.Error(), "limit") {
			t.Errorf("oversized payload: %v", err)
		}
		// The largest allowed payload, of any bytes, arrives intact.
		big := make([]byte, bus.MaxPayload)
		for i := range big {
			big[i] = byte(i)
		}
		in := newInbox()
		t.Cleanup(a.Subscribe("big", in.handle))
		if err := a.Publish(ctx, "big", big); err != nil {
			t.Fatal(err)
		}
		ms := in.waitFor(t, "the largest payload", func(ms []bus.Message) bool { return len(ms) == 1 })
		if string(ms[0].Payload) != string(big) {
			t.Fatal("payload changed in transit")
		}
		if err := a.Publish(ctx, "empty", nil); err != nil {
			t.Fatalf("empty payload: %v", err)
		}
	})

	t.Run("PublishTx", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		if b.Begin == nil {
			t.Skip("backend has no transactions")
		}
		a, c := open(t, b, "i0"), open(t, b, "i1")
		in := newInbox()
		t.Cleanup(c.Subscribe("tx", in.handle))
		rolled := b.Begin(t)
		if err := a.PublishTx(ctx, rolled.Handle(), "tx", []byte("rolled-back")); err != nil {
			t.Fatal(err)
		}
		if err := rolled.Rollback(); err != nil {
			t.Fatal(err)
		}
		committed := b.Begin(t)
		if err := a.PublishTx(ctx, committed.Handle(), "tx", []byte("committed")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		if n := len(in.snapshot()); n != 0 {
			t.Fatalf("%d messages delivered before commit", n)
		}
		if err := committed.Commit(); err != nil {
			t.Fatal(err)
		}
		in.waitFor(t, "the committed message", func(ms []bus.Message) bool { return len(ms) >= 1 })
		// A publish after the commit arrives too; the rolled-back one never does.
		if err := a.Publish(ctx, "tx", []byte("marker")); err != nil {
			t.Fatal(err)
		}
		ms := in.waitFor(t, "the marker", func(ms []bus.Message) bool { return payloads(ms)["marker"] == 1 })
		if p := payloads(ms); p["rolled-back"] != 0 || p["committed"] != 1 {
			t.Fatalf("got %v", p)
		}
	})

	t.Run("LostAfterDisconnect", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		if b.Disconnect == nil {
			t.Skip("backend cannot be disconnected from a test")
		}
		a, c := open(t, b, "i0"), open(t, b, "i1")
		_, vouches := c.(bus.Vouching)
		if vouches && !bus.Delivering(c) {
			t.Fatal("a connected bus does not vouch for its delivery")
		}
		in := newInbox()
		var firstLostDelivering atomic.Int32 // 0 none yet, 1 delivering, 2 not
		t.Cleanup(c.Subscribe("inv", func(m bus.Message) {
			if m.Lost {
				v := int32(2)
				if bus.Delivering(c) {
					v = 1
				}
				firstLostDelivering.CompareAndSwap(0, v)
			}
			in.handle(m)
		}))
		b.Disconnect(t, "i1")
		in.waitFor(t, "a Lost message", func(ms []bus.Message) bool {
			for _, m := range ms {
				if m.Lost && m.Channel == "inv" {
					return true
				}
			}
			return false
		})
		// A vouching bus says it lost its connection when it happens, not only once it is
		// back: blocks that trust it poll slowly, and must poll at their own pace meanwhile.
		if vouches && firstLostDelivering.Load() != 2 {
			t.Fatal("the first Lost message came while the bus still vouched for its delivery: it was sent only after the reconnection")
		}
		// After reconnecting, delivery resumes.
		in.waitFor(t, "delivery after reconnect", func(ms []bus.Message) bool {
			_ = a.Publish(ctx, "inv", []byte("after"))
			return payloads(ms)["after"] > 0
		})
		if vouches && !bus.Delivering(c) {
			t.Fatal("the bus delivers again but does not vouch for it")
		}
	})

	// What the bus package's rule is about: a message put on the transport by someone who
	// is not an instance reaches the subscribers like any other.
	t.Run("InjectedMessagesArrive", func(t *testing.T) {
		t.Parallel()
		if secret != nil {
			t.Skip("a signing bus drops them: see SignedDropsOutsiders")
		}
		b := newBackend(t)
		if len(b.Inject) == 0 {
			t.Skip("backend has no injector")
		}
		a := open(t, b, "i0")
		in := newInbox()
		t.Cleanup(a.Subscribe("raw", in.handle))
		for name, inject := range b.Inject {
			inject(t, "raw", []byte(name), "outsider")
		}
		ms := in.waitFor(t, "every injected message", func(ms []bus.Message) bool { return len(payloads(ms)) == len(b.Inject) })
		for _, m := range ms {
			if b.Inject[string(m.Payload)] == nil || m.From != "outsider" {
				t.Fatalf("got %+v", m)
			}
		}
	})

	t.Run("Close", func(t *testing.T) {
		t.Parallel()
		b := newBackend(t)
		a := open(t, b, "i0")
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(ctx); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := a.Publish(ctx, "x", nil); err == nil {
			t.Fatal("Publish after Close succeeded")
		}
	})
}
