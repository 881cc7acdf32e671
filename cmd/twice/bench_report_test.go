package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/twicehq/twice/internal/report"
	"github.com/twicehq/twice/internal/report/reporttest"
)

// recordedEvents is an events run: a throughput run of 2 s in which publishing stops at
// 1.5 s and consuming catches up, then a latency run of 1 s with its second half empty.
func recordedEvents() eventsResult {
	pub := []report.Count{{At: 0, N: 0}, {At: 1.5, N: 3000}, {At: 2, N: 3000}}
	con := []report.Count{{At: 0, N: 0}, {At: 2, N: 3000}}
	var lat []report.Sample
	for i := range 50 {
		lat = append(lat, report.Sample{At: float64(i) / 100, MS: 1 + float64(i%10)})
	}
	return eventsResult{Store: "postgres", Bus: "store", Publishers: 4, Partitions: 8, Events: 3000, PublishPerSec: 2000, ConsumePerSec: 1500,
		ThroughputSeconds: 2, LatencyEvents: 50, Rate: 100, P50MS: 5, P99MS: 10, MaxMS: 10,
		Published: report.RateOver(pub, 2), Consumed: report.RateOver(con, 2), Latency: report.LatencyOver(lat, 1), LatencySeconds: 1}
}

// The events page draws publishing and consuming side by side, each a line over the
// throughput run, and the latency's percentiles with a gap where no event was published.
func TestEventsPage(t *testing.T) {
	t.Parallel()
	res := recordedEvents()
	out, doc := reporttest.Render(t, res.page().Write)
	reporttest.SelfContained(t, out)
	tp := reporttest.ByID(doc, "throughput-chart")
	if tp == nil {
		t.Fatal("no throughput chart")
	}
	pub := reporttest.Find(tp, reporttest.Tag("polyline", "c0"))
	con := reporttest.Find(tp, reporttest.Tag("polyline", "c1"))
	if len(pub) != 1 || len(con) != 1 {
		t.Fatalf("%d published and %d consumed lines, want one each", len(pub), len(con))
	}
	// 2 s in buckets of 0.1 s: 21 points each. Publishing runs at 2000/s and stops at 1.5 s;
	// consuming runs at 1500/s throughout: in the last bucket only it is the higher.
	pp, cp := strings.Fields(reporttest.Attr(pub[0], "points")), strings.Fields(reporttest.Attr(con[0], "points"))
	if len(pp) != 21 || len(cp) != 21 {
		t.Fatalf("%d and %d points, want 21 each", len(pp), len(cp))
	}
	y := func(pt string) float64 {
		_, v, _ := strings.Cut(pt, ",")
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("point %q: %v", pt, err)
		}
		return f
	}
	if y(pp[0]) >= y(cp[0]) || y(pp[19]) <= y(cp[19]) {
		t.Errorf("published at y %v then %v, consumed at y %v then %v: publishing should be drawn above first and below once it stopped",
			y(pp[0]), y(pp[19]), y(cp[0]), y(cp[19]))
	}
	if legend := reporttest.Find(doc, reporttest.Tag("i", "swatch")); len(legend) != 3 {
		t.Errorf("%d names in the legends, want published, consumed and the latency's", len(legend))
	}
	lat := reporttest.ByID(doc, "latency-chart")
	if lat == nil {
		t.Fatal("no latency chart")
	}
	// p50, p95, p99: the events were published in the first half second only.
	if lines := reporttest.Find(lat, reporttest.Tag("polyline", "")); len(lines) != 3 {
		t.Errorf("%d latency lines, want 3", len(lines))
	}
	if fig := reporttest.ByID(doc, "figures"); fig == nil || !strings.Contains(reporttest.Text(fig), "2,000 /s") {
		t.Error("no figures table with the publish rate")
	}
}

// A --report that cannot be written is a usage error before the benchmark runs, naming the
// path; a run writes its page and leaves nothing beside it.
func TestBenchReportPath(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{filepath.Join(dir, "missing", "r.html"), dir} {
		code, stdout, stderr := cli(t, nil, "bench", "events", "--report", path)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "bench events: --report "+path) {
			t.Errorf("--report %s: exit %d, %q, %q; want 2 before the run, naming the path", path, code, stdout, stderr)
		}
	}
	page := filepath.Join(dir, "events.html")
	code, stdout, stderr := cli(t, nil, "bench", "events", "--dsn", "sqlite:"+filepath.Join(dir, "b.db"),
		"--events", "200", "--latency-events", "50", "--rate", "500", "--report", page)
	if code != 0 || !strings.Contains(stdout, "report: "+page) {
		t.Fatalf("exit %d: %s%s", code, stdout, stderr)
	}
	if b, err := os.ReadFile(page); err != nil || !strings.Contains(string(b), "twice bench events: sqlite") {
		t.Errorf("the page: %v, %.200q", err, b)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("%s left beside the page", e.Name())
		}
	}
}
