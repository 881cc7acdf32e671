package main

import (
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/report"
	"github.com/twicehq/twice/internal/report/reporttest"
)

// recorded is a run as --json records it: each system's work run metered (twice's done in
// half a second, River's in two), and its latency run.
func recorded() result {
	work := func(perSec float64, s float64) report.Rate {
		return report.RateOver([]report.Count{{}, {At: s, N: int64(perSec * s)}}, s)
	}
	lat := func(ms float64) report.Latency {
		return report.LatencyOver([]report.Sample{{At: 0, MS: ms}, {At: 0.5, MS: 2 * ms}, {At: 1, MS: ms}}, 1)
	}
	return result{p: params{dsn: "postgres://user:secret@db/test", work: 1000, insert: 1000, latency: 3, rate: 3, sqliteWork: 500}, sqlitePerSec: 700,
		rows: []row{
			{System: "twice", Config: "defaults", WorkPerSec: 2000, InsertPer: 3000, LatencyP50: 1, LatencyP99: 2, WorkS: 0.5, Work: work(2000, 0.5), LatencyS: 1, Latency: lat(1)},
			{System: "twice", Config: "tuned", WorkPerSec: 1800, InsertPer: 2900, LatencyP50: 1, LatencyP99: 2, WorkS: 0.55, Work: work(1800, 0.55), LatencyS: 1, Latency: lat(1)},
			{System: "river", Config: "defaults", WorkPerSec: 500, InsertPer: 1500, LatencyP50: 50, LatencyP99: 100, WorkS: 2, Work: work(500, 2), LatencyS: 1, Latency: lat(50)},
			{System: "river", Config: "tuned", WorkPerSec: 1000, InsertPer: 1600, LatencyP50: 2, LatencyP99: 4, WorkS: 1, Work: work(1000, 1), LatencyS: 1, Latency: lat(2)},
		}}
}

// The page sets twice and River side by side: a row each with bars in a table, a line each
// on the work chart and on both latency charts, in one colour per system and configuration.
func TestPage(t *testing.T) {
	res := recorded()
	out, doc := reporttest.Render(t, res.page().Write)
	reporttest.SelfContained(t, out)
	if strings.Contains(out, "secret") {
		t.Error("the page shows the database's password")
	}
	for _, c := range res.comparisons() {
		if !strings.Contains(out, c) {
			t.Errorf("the page lacks %q", c)
		}
	}
	table := reporttest.ByID(doc, "systems")
	if table == nil {
		t.Fatal("no table of the systems")
	}
	if rows := reporttest.Find(table, reporttest.Tag("tr", "")); len(rows) != 5 {
		t.Errorf("%d rows, want a head and 4", len(rows))
	}
	// Work, insert, p50, p99: a bar in each of the four systems' cells.
	if bars := reporttest.Find(table, reporttest.Tag("td", "bar")); len(bars) != 16 {
		t.Errorf("%d cells with a bar, want 16", len(bars))
	}
	for _, id := range []string{"work-chart", "latency-p50-chart", "latency-p99-chart"} {
		chart := reporttest.ByID(doc, id)
		if chart == nil {
			t.Fatalf("no chart %s", id)
		}
		// twice defaults, twice tuned, River defaults, River tuned: colours 0, 3, 1, 5.
		for _, c := range []string{"c0", "c3", "c1", "c5"} {
			if lines := reporttest.Find(chart, reporttest.Tag("polyline", c)); len(lines) == 0 {
				t.Errorf("%s: no line in colour %s", id, c)
			}
		}
	}
	// River defaults' work run lasted 2 s: the work chart spans it.
	ticks := reporttest.Text(reporttest.ByID(doc, "work-chart"))
	if !strings.Contains(ticks, "2 s") {
		t.Errorf("the work chart's axis does not reach 2 s: %q", ticks)
	}
}

// The recorder joins each job's handler start with its producer's call by sent time, and
// split takes the tail of each side on its own, leaving out jobs whose call was not
// recorded.
func TestSplit(t *testing.T) {
	var rec latencyRecorder
	base := time.Now().Add(-time.Second).UnixNano()
	for i := range 100 {
		sent := base + int64(i)
		rec.add(sent)
		if i == 50 {
			continue // its call never returned, as when the producer failed
		}
		rec.sent(sent)
	}
	jobs := rec.timed()
	if len(jobs) != 100 {
		t.Fatalf("timed() = %d jobs, want 100", len(jobs))
	}
	for _, j := range jobs {
		if (j.returned == 0) != (j.sent.UnixNano() == base+50) {
			t.Fatalf("job sent at +%d ns: returned %v", j.sent.UnixNano()-base, j.returned)
		}
	}
	// Made up: the enqueue is slow for the first job, what follows for the second.
	at := time.Unix(0, base)
	made := []timed{{sent: at, d: 12 * time.Millisecond, returned: 10 * time.Millisecond}, {sent: at, d: 9 * time.Millisecond, returned: time.Millisecond}}
	for range 98 {
		made = append(made, timed{sent: at, d: 2 * time.Millisecond, returned: time.Millisecond})
	}
	made = append(made, timed{sent: at, d: 50 * time.Millisecond}) // not recorded: left out
	if enqueue, after := split(made); enqueue != 10 || after != 8 {
		t.Fatalf("split = %v ms enqueue, %v ms after; want 10 and 8", enqueue, after)
	}
	if enqueue, after := split(made[100:]); enqueue != 0 || after != 0 {
		t.Fatalf("split of a run with no calls recorded = %v, %v; want 0, 0", enqueue, after)
	}
}
