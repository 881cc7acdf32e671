package realtime

import (
	"encoding/json"
	"log/slog"
	"testing"
)

// BenchmarkOffer is one instance giving a room's message to its 50 connections, as it does
// for each message that arrives on a signed bus: what a message costs the instance's CPU
// before the writes to the sockets.
func BenchmarkOffer(b *testing.B) {
	h := &Hub{streams: map[string]*stream{}, dirty: map[string]bool{}, log: slog.Default()}
	s := &stream{subs: map[*client]*sub{}}
	h.streams["r:lobby"] = s
	for range 50 {
		c := &client{h: h, out: make(chan []byte, DefaultSendBuffer), subs: map[string]*sub{}}
		sb := &sub{name: "lobby", key: "r:lobby", epoch: "e1"}
		c.subs["lobby"], s.subs[c] = sb, sb
	}
	data := json.RawMessage(`{"user":"alice","text":"Hello, is my order on its way? It was placed this morning.","at":"2026-11-30T18:00:00Z"}`)
	b.ReportAllocs()
	for i := range b.N {
		h.offer("r:lobby", "e1", int64(i+1), data)
		for c := range s.subs {
			if len(c.out) != 1 {
				b.Fatalf("a connection holds %d frames", len(c.out))
			}
			<-c.out
		}
	}
}
