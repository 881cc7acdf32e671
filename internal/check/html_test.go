package check

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/twicehq/twice/internal/report"
	"github.com/twicehq/twice/internal/report/reporttest"
)

// sampleReport is a hand-made report of a 40-second run on three instances: a kill on
// instance 1 at 5 s, a pause of instance 0 at 10 s, a PostgreSQL restart at 20 s (every
// instance) and a stall of instance 2 at 30 s; two violations of one invariant, at 11 s and
// 30 s.
func sampleReport() *Report {
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	n := 41
	ok, failed, p := make([]int, n), make([]int, n), make([]float64, n)
	for i := range n {
		ok[i], p[i] = 20+i%5, 2+float64(i%7)
	}
	failed[10], failed[11] = 3, 4
	ok[12], p[12] = 0, 0 // a bucket without operations
	return &Report{Store: "postgres", Instances: 3, DurationS: 40, Seed: 7, Faults: map[string]int{"kill": 1, "stop": 1, "pg-restart": 1},
		Violations: 2,
		Invariants: []Invariant{
			{Name: "leader: fenced writes commit in token order", Operations: 800, Violations: 2,
				Details: []string{"first <script>alert(1)</script>", "second"},
				Found:   []Found{{At: at(11), Detail: "first <script>alert(1)</script>"}, {At: at(30), Detail: "second"}}},
			{Name: "locks: fenced writes commit in token order", Operations: 300},
		},
		Timeline: &Timeline{Start: t0, End: at(40), Slots: 3, BucketS: 1,
			Series: []Series{
				{Block: BlockFencedWrites, OK: ok, Failed: failed, Percentiles: report.Percentiles{P50: p, P95: p, P99: p}},
				{Block: BlockLocks, OK: ok, Failed: make([]int, n)},
			},
			Faults: []Fault{
				{Kind: FaultKill, Slots: []int{1}, Instance: "b", Start: at(5), End: at(6), Injected: true},
				{Kind: FaultStop, Slots: []int{0}, Instance: "a", Start: at(10), End: at(12.5), Injected: true},
				{Kind: FaultRestart, Slots: []int{0, 1, 2}, Start: at(20), End: at(21), Injected: true},
				{Kind: "stall", Slots: []int{2}, Instance: "c", Start: at(30), End: at(31)},
			},
			Terms:  []Term{{Slot: 0, Instance: "a", Token: 1, Start: at(1), End: at(11)}, {Slot: 1, Instance: "b", Token: 2, Start: at(11), End: at(40)}},
			Phases: []Phase{{Name: "start instances", Start: t0, End: at(2)}, {Name: "faults", Start: at(2), End: at(32)}, {Name: "verify", Start: at(32), End: at(40)}},
		},
	}
}

// xAt is where the timeline draws second s of sampleReport's 40.
func xAt(s float64) float64 { return report.PlotLeft + report.PlotWidth*s/40 }

func TestReportHTML(t *testing.T) {
	t.Parallel()
	out, doc := reporttest.Render(t, sampleReport().WriteHTML)

	t.Run("SelfContained", func(t *testing.T) {
		reporttest.SelfContained(t, out)
		if !strings.Contains(out, "first &lt;script&gt;") {
			t.Error("a violation's detail is not in the page, escaped")
		}
	})

	timeline := reporttest.ByID(doc, "timeline")
	if timeline == nil || timeline.Data != "svg" {
		t.Fatal("no <svg id=timeline>")
	}
	lanes := reporttest.Find(timeline, func(n *html.Node) bool { return n.Data == "rect" && reporttest.HasClass(n, "lane") })
	if len(lanes) != 3 {
		t.Fatalf("%d lanes, want one per instance (3)", len(lanes))
	}

	t.Run("FaultBands", func(t *testing.T) {
		// A band in the lane of each instance a fault hit: the restart hits all three.
		bands := reporttest.Find(timeline, func(n *html.Node) bool {
			return n.Data == "rect" && reporttest.HasClass(n, "fault") && !reporttest.HasClass(n, "shade")
		})
		type want struct {
			kind        string
			lane        int
			from, until float64
		}
		wants := []want{{"kill", 1, 5, 6}, {"stop", 0, 10, 12.5}, {"pg-restart", 0, 20, 21}, {"pg-restart", 1, 20, 21}, {"pg-restart", 2, 20, 21}, {"stall", 2, 30, 31}}
		if len(bands) != len(wants) {
			t.Fatalf("%d fault bands in the lanes, want %d", len(bands), len(wants))
		}
		for i, w := range wants {
			b := bands[i]
			if !reporttest.HasClass(b, "k-"+w.kind) {
				t.Errorf("band %d: class %q, want k-%s", i, reporttest.Attr(b, "class"), w.kind)
			}
			if y, laneY := reporttest.Num(t, b, "y"), reporttest.Num(t, lanes[w.lane], "y"); y != laneY {
				t.Errorf("band %d (%s): y %v, want lane %d's %v", i, w.kind, y, w.lane, laneY)
			}
			if x, width := reporttest.Num(t, b, "x"), reporttest.Num(t, b, "width"); !reporttest.Near(x, xAt(w.from)) || !reporttest.Near(width, xAt(w.until)-xAt(w.from)) {
				t.Errorf("band %d (%s): x %v width %v, want %v and %v", i, w.kind, x, width, xAt(w.from), xAt(w.until)-xAt(w.from))
			}
		}
		// The injected faults also shade the operations chart; a stall does not.
		shades := reporttest.Find(timeline, func(n *html.Node) bool { return n.Data == "rect" && reporttest.HasClass(n, "shade") })
		if len(shades) != 3 {
			t.Errorf("%d shades over the operations chart, want one per injected fault (3)", len(shades))
		}
	})

	t.Run("ViolationLinks", func(t *testing.T) {
		table := reporttest.ByID(doc, "invariants")
		if table == nil {
			t.Fatal("no invariants table")
		}
		links := reporttest.Find(table, func(n *html.Node) bool { return n.Data == "a" })
		if len(links) != 2 {
			t.Fatalf("%d links in the invariants table, want one per violation (2)", len(links))
		}
		for i, s := range []float64{11, 30} {
			href := reporttest.Attr(links[i], "href")
			target := reporttest.ByID(doc, strings.TrimPrefix(href, "#"))
			if !strings.HasPrefix(href, "#") || target == nil {
				t.Fatalf("link %q has no target in the page", href)
			}
			if !reporttest.HasClass(target, "violation") || !reporttest.IsUnder(target, timeline) {
				t.Errorf("link %q points at a <%s class=%q> that is not a mark on the timeline", href, target.Data, reporttest.Attr(target, "class"))
			}
			line := reporttest.Find(target, func(n *html.Node) bool { return n.Data == "line" })
			if len(line) != 1 || !reporttest.Near(reporttest.Num(t, line[0], "x1"), xAt(s)) {
				t.Errorf("the mark of link %q is not at %v s (x %v)", href, s, xAt(s))
			}
		}
		// Every link of the page leads somewhere in it.
		for _, a := range reporttest.Find(doc, func(n *html.Node) bool { return n.Data == "a" }) {
			if reporttest.ByID(doc, strings.TrimPrefix(reporttest.Attr(a, "href"), "#")) == nil {
				t.Errorf("link %q leads nowhere", reporttest.Attr(a, "href"))
			}
		}
	})

	t.Run("Series", func(t *testing.T) {
		lines := reporttest.Find(timeline, func(n *html.Node) bool { return n.Data == "polyline" })
		// Fenced writes, their failures, and locks (which had none).
		if len(lines) != 3 {
			t.Fatalf("%d lines on the timeline, want 3", len(lines))
		}
		pts := strings.Fields(reporttest.Attr(lines[0], "points"))
		if len(pts) != 41 {
			t.Errorf("%d points for 41 buckets", len(pts))
		}
		// The busiest bucket (24 + 4 failed per second) sets a scale of 50; bucket 0 has 20.
		y0, _ := strconv.ParseFloat(strings.Split(pts[0], ",")[1], 64)
		v := newReportView(sampleReport()).Timeline
		if want := v.Base - (v.Base-v.Top)*20/50; !reporttest.Near(y0, want) {
			t.Errorf("20 ops/s drawn at y %v, want %v", y0, want)
		}
	})

	t.Run("Latency", func(t *testing.T) {
		charts := reporttest.Find(doc, func(n *html.Node) bool { return n.Data == "svg" && reporttest.HasClass(n, "latency") })
		if len(charts) != 1 {
			t.Fatalf("%d latency charts, want 1 (locks are not timed)", len(charts))
		}
		lines := reporttest.Find(charts[0], func(n *html.Node) bool { return n.Data == "polyline" })
		// p50, p95 and p99, each broken at the empty bucket 12.
		if len(lines) != 6 {
			t.Errorf("%d latency lines, want 3 percentiles in 2 pieces each", len(lines))
		}
	})

	t.Run("WithoutTimeline", func(t *testing.T) {
		r := sampleReport()
		r.Timeline = nil
		for i := range r.Invariants {
			r.Invariants[i].Found = nil // as in a report from before violations had times
		}
		out, doc := reporttest.Render(t, r.WriteHTML)
		if reporttest.ByID(doc, "timeline") != nil || reporttest.ByID(doc, "invariants") == nil {
			t.Error("a report without a timeline should be the invariants table alone")
		}
		if !strings.Contains(out, "second") || strings.Contains(out, `href="#v-`) {
			t.Error("the violations should be listed, unlinked")
		}
	})
}

// The page's numbers are plain: no NaN or infinity from an empty chart.
func TestReportHTMLEmptySeries(t *testing.T) {
	t.Parallel()
	r := sampleReport()
	s := &r.Timeline.Series[0]
	for i := range s.OK {
		s.OK[i], s.Failed[i], s.P50[i], s.P95[i], s.P99[i] = 0, 0, 0, 0, 0
	}
	out, _ := reporttest.Render(t, r.WriteHTML)
	reporttest.SelfContained(t, out)
}
