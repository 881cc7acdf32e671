package events

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/twicehq/twice/bus"
)

func TestHintRoundTrip(t *testing.T) {
	h := hint{}
	h.add("orders", []int64{7, 3})
	h.add("orders", []int64{3, 12})
	h.add("users", nil)
	h.add("users", []int64{1}) // all stays all
	h.add("tab\tin topic", []int64{0})
	var b []byte
	for _, t := range []string{"orders", "users", "tab\tin topic"} {
		if len(b) > 0 {
			b = append(b, '\n')
		}
		b = appendLine(b, t, h[t])
	}
	got := parseHint(b)
	if len(got) != 3 || !slices.Equal(got["orders"], []int64{7, 3, 12}) || got["users"] != nil ||
		!slices.Equal(got["tab\tin topic"], []int64{0}) {
		t.Fatalf("parsed %v from %q, want %v", got, b, h)
	}
	if _, ok := got["users"]; !ok {
		t.Fatal("a topic for every partition went missing")
	}
}

func TestHintTooManyHashesWakesAll(t *testing.T) {
	h := hint{}
	for i := range maxHintHashes + 1 {
		h.add("orders", []int64{int64(i)})
	}
	if hs, ok := h["orders"]; !ok || hs != nil {
		t.Fatalf("%d hashes kept as %v; want every partition (nil)", maxHintHashes+1, hs)
	}
}

// An older instance's signal, one topic per line, wakes every reader of each topic.
func TestHintOfAnOlderInstance(t *testing.T) {
	got := parseHint([]byte("orders\nusers"))
	if len(got) != 2 || got["orders"] != nil || got["users"] != nil {
		t.Fatalf("parsed %v", got)
	}
}

// The readers of the partitions a hint names wake, and no others.
func TestWokenWakesOnlyTheHintedPartitions(t *testing.T) {
	c := &Consumer{parts: make([]signal, 8)}
	waits := make([]<-chan struct{}, 8)
	for i := range waits {
		waits[i] = c.wakeOf(i).wait()
	}
	c.woken([]int64{9, 17, 4}) // partitions 1, 1 and 4
	for i, w := range waits {
		select {
		case <-w:
			if i != 1 && i != 4 {
				t.Errorf("partition %d woke", i)
			}
		default:
			if i == 1 || i == 4 {
				t.Errorf("partition %d did not wake", i)
			}
		}
	}
	for i := range waits {
		waits[i] = c.wakeOf(i).wait()
	}
	c.woken(nil)
	for i, w := range waits {
		select {
		case <-w:
		default:
			t.Errorf("partition %d did not wake for a hint of every partition", i)
		}
	}
}

// The announcer's signals fit a bus payload whatever it merged.
func TestAnnouncedHintsFitThePayload(t *testing.T) {
	var sent [][]byte
	a := &announcer{pending: hint{}}
	for i := range 300 {
		t := strings.Repeat("t", 200) + string(rune('a'+i%26)) + strings.Repeat("x", i%7)
		a.order = append(a.order, t)
		a.pending.add(t, []int64{int64(i), int64(i * 1000003)})
	}
	a.b = publishFunc(func(p []byte) { sent = append(sent, bytes.Clone(p)) })
	a.send()
	topics := 0
	for _, p := range sent {
		if len(p) > bus.MaxPayload {
			t.Errorf("a signal of %d bytes; the bus takes %d", len(p), bus.MaxPayload)
		}
		topics += len(parseHint(p))
	}
	if topics == 0 || len(sent) < 2 {
		t.Fatalf("%d signals naming %d topics", len(sent), topics)
	}
}

func FuzzParseHint(f *testing.F) {
	f.Add([]byte("orders"))
	f.Add([]byte("orders\x003,7\nusers"))
	f.Add([]byte("a\x00-1\n\x00\nb\x00x,2"))
	f.Fuzz(func(t *testing.T, p []byte) {
		for topic, hs := range parseHint(p) {
			if topic == "" || strings.ContainsAny(topic, "\n\x00") {
				t.Fatalf("topic %q from %q", topic, p)
			}
			if len(hs) > maxHintHashes || slices.ContainsFunc(hs, func(x int64) bool { return x < 0 }) {
				t.Fatalf("hashes %v from %q", hs, p)
			}
		}
	})
}

// publishFunc is a bus that hands each payload to a function.
type publishFunc func(p []byte)

func (f publishFunc) Publish(_ context.Context, _ string, p []byte) error { f(p); return nil }
func (publishFunc) PublishTx(context.Context, any, string, []byte) error  { return nil }
func (publishFunc) Subscribe(string, bus.Handler) func()                  { return func() {} }
func (publishFunc) Close(context.Context) error                           { return nil }
