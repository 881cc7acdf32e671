package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"
)

// TestEventsSmoke runs every system of the events suite once with tiny counts and checks
// each reports figures; it asserts nothing about how fast they are.
func TestEventsSmoke(t *testing.T) {
	dsn := testDSN(t)
	p := eventsParams{dsn: dsn, events: 40, publishers: 4, latency: 10, warmup: 5, rate: 100, rounds: 1, systems: eventSystemKeys()}
	var out bytes.Buffer
	if err := runEvents(context.Background(), p, true, &out); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Systems []eventsRow `json:"systems"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%v in %s", err, out.String())
	}
	if len(res.Systems) != len(eventSystemKeys()) {
		t.Fatalf("%d systems reported, want %d:\n%s", len(res.Systems), len(eventSystemKeys()), out.String())
	}
	for _, r := range res.Systems {
		name := r.System + " " + r.Config
		// The backends' CPU is not checked: it needs the server's processes in this /proc.
		if r.PublishPerSec <= 0 || r.CommitsPerEvent <= 0 || r.CPUSeconds <= 0 {
			t.Errorf("%s: publish %v/s, %v commits/event, %v CPU s; want all positive", name, r.PublishPerSec, r.CommitsPerEvent, r.CPUSeconds)
		}
		if r.System == "bare" {
			continue
		}
		if r.ConsumePerSec <= 0 || r.LatencyP50 <= 0 || r.LatencyP99 <= 0 || r.LatencyCommitsPerEvent <= 0 {
			t.Errorf("%s: consume %v/s, p50 %v ms, p99 %v ms, %v commits/event at rate; want all positive",
				name, r.ConsumePerSec, r.LatencyP50, r.LatencyP99, r.LatencyCommitsPerEvent)
		}
		if r.PublishP99 <= 0 || r.PublishP99 > r.LatencyP99 {
			t.Errorf("%s: publish p99 %v ms, latency p99 %v ms; want the publish call's positive and within the latency", name, r.PublishP99, r.LatencyP99)
		}
	}
}

// The consume ratio's spread is taken within each round, twice's against watermill's of
// the same round, not between the medians.
func TestRoundSpread(t *testing.T) {
	tw := func(v float64) eventsRow { return eventsRow{System: "twice", Config: "Publish", ConsumePerSec: v} }
	wm := func(v float64) eventsRow { return eventsRow{System: "watermill", Config: "tuned", ConsumePerSec: v} }
	consume := func(r eventsRatios) float64 { return r.TwiceVsWatermillTunedConsume }
	rounds := [][]eventsRow{{tw(1200), tw(1500), tw(1300)}, {wm(1000), wm(1000), wm(1300)}}
	if got := roundSpread(rounds, consume); got != " (rounds 1.00x to 1.50x)" {
		t.Fatalf("spread %q", got)
	}
	if got := roundSpread([][]eventsRow{{tw(1200)}, {wm(1000)}}, consume); got != "" {
		t.Fatalf("one round: spread %q, want none", got)
	}
}

// afterWarmup keeps the events sent after the first warmup, whatever order they arrived in.
func TestAfterWarmupDropsTheFirstSent(t *testing.T) {
	t0 := time.Unix(100, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	// Handled out of the order they were sent; the first two sent are the warm-up.
	lat := []timed{{sent: at(2), d: 20}, {sent: at(0), d: 80}, {sent: at(3), d: 30}, {sent: at(1), d: 70}}
	got := afterWarmup(lat, 2)
	if len(got) != 2 || !got[0].sent.Equal(at(2)) || !got[1].sent.Equal(at(3)) {
		t.Fatalf("afterWarmup = %v, want the events sent at 2 s and 3 s", got)
	}
	if lat[0].d != 20 {
		t.Fatal("afterWarmup reordered its argument")
	}
	if got := afterWarmup(lat, 10); len(got) != 0 {
		t.Fatalf("a warm-up longer than the run left %v", got)
	}
}
