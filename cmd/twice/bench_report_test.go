package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/twicehq/twice/internal/report"
	"github.com/twicehq/twice/internal/report/reporttest"
)

// recordedFailover is a failover run as `twice bench failover --json` records it: three
// instances for 10 s, the leader killed at 3 s (20 ms until the next election) and at 7 s
// (40 ms).
func recordedFailover() failoverResult {
	return failoverResult{Store: "sqlite", Instances: 3, Kills: 2, Signal: "SIGKILL", LeaseTTLMS: 6000, PollMS: 100, LivenessLock: true,
		FailoversMS: []float64{20, 40}, P50MS: 20, P99MS: 40, MaxMS: 40, DurationS: 10,
		Failovers: []failover{{AtS: 3, Slot: 0, Leader: "a", NextSlot: 1, Next: "b", MS: 20}, {AtS: 7, Slot: 1, Leader: "b", NextSlot: 2, Next: "c", MS: 40}},
		Terms: []leaderTerm{{Slot: 0, Instance: "a", Token: 1, FromS: 0.5, ToS: 3}, {Slot: 1, Instance: "b", Token: 2, FromS: 3.02, ToS: 7},
			{Slot: 2, Instance: "c", Token: 3, FromS: 7.04, ToS: 10}}}
}

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

// xAt is where a chart of span seconds draws second s.
func xAt(s, span float64) float64 { return report.PlotLeft + report.PlotWidth*s/span }

// The failover page: a lane per instance with its terms, a band and a dot per failover at
// the time of its signal, and a row per failover.
func TestFailoverPage(t *testing.T) {
	t.Parallel()
	res := recordedFailover()
	out, doc := reporttest.Render(t, res.page().Write)
	reporttest.SelfContained(t, out)
	if !strings.Contains(out, res.summary()) {
		t.Error("the page lacks the summary the command prints")
	}
	tl := reporttest.ByID(doc, "timeline")
	if tl == nil {
		t.Fatal("no timeline")
	}
	lanes := reporttest.Find(tl, reporttest.Tag("rect", "lane"))
	terms := reporttest.Find(tl, reporttest.Tag("rect", "term"))
	gaps := reporttest.Find(tl, reporttest.Tag("rect", "gap"))
	dots := reporttest.Find(tl, reporttest.Tag("circle", "dot"))
	if len(lanes) != 3 || len(terms) != 3 || len(gaps) != 2 || len(dots) != 2 {
		t.Fatalf("%d lanes, %d terms, %d gaps, %d dots; want 3, 3, 2, 2", len(lanes), len(terms), len(gaps), len(dots))
	}
	for i, f := range res.Failovers {
		if x := reporttest.Num(t, gaps[i], "x"); !reporttest.Near(x, xAt(f.AtS, 10)) {
			t.Errorf("failover %d's band at x %v, want %v", i+1, x, xAt(f.AtS, 10))
		}
		if x := reporttest.Num(t, dots[i], "cx"); !reporttest.Near(x, xAt(f.AtS, 10)) {
			t.Errorf("failover %d's dot at x %v, want %v", i+1, x, xAt(f.AtS, 10))
		}
		// The band runs over the plot and every lane.
		if bottom := reporttest.Num(t, gaps[i], "y") + reporttest.Num(t, gaps[i], "height"); !reporttest.Near(bottom, reporttest.Num(t, lanes[2], "y")+reporttest.Num(t, lanes[2], "height")) {
			t.Errorf("failover %d's band ends at y %v, above the last lane's bottom", i+1, bottom)
		}
	}
	// The 40 ms failover is drawn higher (a smaller y) than the 20 ms one.
	if reporttest.Num(t, dots[1], "cy") >= reporttest.Num(t, dots[0], "cy") {
		t.Error("the longer failover's dot is not above the shorter's")
	}
	// Each term is in its own instance's lane.
	for i, term := range terms {
		if y, lane := reporttest.Num(t, term, "y"), reporttest.Num(t, lanes[i], "y"); y < lane || y > lane+reporttest.Num(t, lanes[i], "height") {
			t.Errorf("term %d at y %v, outside lane %d", i, y, i)
		}
	}
	rows := reporttest.Find(reporttest.ByID(doc, "failovers"), reporttest.Tag("tr", ""))
	if len(rows) != 3 || !strings.Contains(reporttest.Text(rows[2]), "40.0 ms") {
		t.Errorf("the failovers' table has %d rows (want a head and 2), the second %q", len(rows), reporttest.Text(rows[len(rows)-1]))
	}
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

// Every benchmark's page renders from a recorded result, self-contained, with its charts.
func TestBenchPages(t *testing.T) {
	t.Parallel()
	over := idleOver{BucketS: 1, Instances: []int{0, 2, 2}, StatementsMean: []float64{0, 1, 1.5}, StatementsMax: []float64{0, 2, 2},
		CPUMean: []float64{0, 1, 1}, CPUMax: []float64{0, 2, 2}}
	for _, c := range []struct {
		name   string
		res    benchResult
		charts []string
	}{
		{"idle", idleResult{Store: "sqlite", Bus: "store", Instances: 2, DurationS: 2, StatementsPerSec: 1, CPUMSPerSec: 1,
			PerInstance: []idleCount{{"a", 1, 1}, {"b", 1.5, 2}}, WindowS: [2]float64{1, 3}, Over: over}, []string{"statements", "cpu"}},
		{"scale", scaleResult{Store: "sqlite", Bus: "store", Instances: 2, DurationS: 3, Over: over,
			Phases:   []report.Phase{{At: 0, Name: "start"}, {At: 2, Name: "jobs"}},
			Failover: scaleFailover{Kills: 1, Failovers: []failover{{AtS: 1.5, MS: 30}}},
			Jobs:     scaleJobs{Jobs: 10, Completed: 10, DurationS: 1, Rate: report.RateOver([]report.Count{{}, {At: 1, N: 10}}, 1)}},
			[]string{"statements", "cpu", "failovers-chart", "jobs-chart"}},
		{"invalidation", propagationResult{Store: "postgres", Bus: "nats", Signed: true, Kind: kindInvalidation, Instances: 3, Count: 3,
			EveryMS: []float64{1, 2, 3}, ChangesAtS: []float64{0, 0.1, 0.2},
			EachLatency: report.LatencyOver([]report.Sample{{At: 0, MS: 1}, {At: 0.1, MS: 2}}, 0.2),
			Burst:       10, BurstPerSec: 100, BurstDone: []report.Count{{}, {At: 0.1, N: 10}}}, []string{"changes-chart", "burst-chart"}},
		{"config", propagationResult{Store: "sqlite", Bus: "store", Kind: kindConfig, Instances: 2, Count: 1, EveryMS: []float64{1}, ChangesAtS: []float64{0}},
			[]string{"changes-chart"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, doc := reporttest.Render(t, c.res.page().Write)
			reporttest.SelfContained(t, out)
			for _, id := range c.charts {
				if n := reporttest.ByID(doc, id); n == nil || n.Data != "svg" || len(reporttest.Find(n, func(n *html.Node) bool {
					return n.Data == "polyline" || n.Data == "circle"
				})) == 0 {
					t.Errorf("no chart %s with data", id)
				}
			}
			if reporttest.ByID(doc, "figures") == nil {
				t.Error("no figures table")
			}
		})
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
