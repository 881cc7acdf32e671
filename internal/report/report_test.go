package report

import (
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/twicehq/twice/internal/report/reporttest"
)

// samplePage is a page of a 10-second run on two instances: a rate that climbs, latency
// with an empty bucket, a failover from instance 0 to 1 at 4 s, and a table of two systems.
func samplePage() *Page {
	rate := Series{Name: "published", Color: 0}
	for i := range 10 {
		rate.X, rate.Y = append(rate.X, float64(i)+0.5), append(rate.Y, float64(100*i))
	}
	lat := LatencyIn([]Sample{{At: 0.5, MS: 2}, {At: 0.6, MS: 40}, {At: 2.5, MS: 0.3}}, 1, 10)
	systems := Table{ID: "systems", Head: []string{"system", "jobs/s"}, Rows: [][]Cell{
		{Text("twice <b>"), Num(75679, 0)}, {Text("River"), Num(37290, 0)}}}
	systems.Bars(1, []float64{75679, 37290}, []int{0, 1})
	return &Page{Title: "bench <test>", Summary: "a summary", Facts: []Fact{{"store", "sqlite"}},
		Sections: []Section{
			{ID: "timeline", Heading: "Timeline", Note: "how to read it", Charts: []Chart{
				{ID: "rate", Span: 10, YUnit: "events/s", Series: []Series{rate},
					Lanes: []string{"instance 0", "instance 1"},
					Bars:  []Bar{{Lane: 0, From: 0, To: 4, Class: "term", Thin: true}, {Lane: 1, From: 4.02, To: 10, Class: "term", Thin: true}},
					Spans: []Span{{From: 4, To: 4.02, Class: "gap", Title: "failover 1: 20 ms"}},
					Marks: []Mark{{At: 4, ID: "k-1", Title: "SIGKILL"}}, Phases: []Phase{{At: 0, Name: "start"}},
					Keys: []Key{{"term", "leader"}, {"gap", "no leader"}}},
				{ID: "latency", Title: "Latency", Class: "latency", Span: 10, YUnit: "ms", Log: true, Height: 150, Series: lat.Series("events", 1)},
			}},
			{Heading: "Systems", Tables: []Table{systems}},
		}}
}

// xAt is where a chart of 10 s draws second s.
func xAt(s float64) float64 { return PlotLeft + PlotWidth*s/10 }

func TestPage(t *testing.T) {
	t.Parallel()
	out, doc := reporttest.Render(t, samplePage().Write)

	t.Run("SelfContained", func(t *testing.T) {
		reporttest.SelfContained(t, out)
		if !strings.Contains(out, "twice &lt;b&gt;") || !strings.Contains(out, "bench &lt;test&gt;") {
			t.Error("text is not escaped")
		}
	})

	rate := reporttest.ByID(doc, "rate")
	if rate == nil || rate.Data != "svg" {
		t.Fatal("no <svg id=rate>")
	}
	t.Run("Series", func(t *testing.T) {
		lines := reporttest.Find(rate, reporttest.Tag("polyline", "c0"))
		if len(lines) != 1 {
			t.Fatalf("%d lines, want 1", len(lines))
		}
		pts := strings.Fields(reporttest.Attr(lines[0], "points"))
		if len(pts) != 10 {
			t.Fatalf("%d points, want 10", len(pts))
		}
		// 900 per second at the top sets a scale of 1000 over the plot's 200 units, whose
		// top is below the phases' names.
		x, y, _ := strings.Cut(pts[9], ",")
		if xv, _ := strconv.ParseFloat(x, 64); !reporttest.Near(xv, xAt(9.5)) {
			t.Errorf("the last point at x %v, want %v", xv, xAt(9.5))
		}
		if yv, _ := strconv.ParseFloat(y, 64); !reporttest.Near(yv, roomPhases+DefaultHeight-DefaultHeight*0.9) {
			t.Errorf("900/s drawn at y %v", yv)
		}
		if legend := reporttest.Find(doc, reporttest.Tag("i", "swatch")); len(legend) != 2 {
			t.Errorf("%d swatches, want one per name (published, events)", len(legend))
		}
	})
	t.Run("LanesBarsSpans", func(t *testing.T) {
		lanes := reporttest.Find(rate, reporttest.Tag("rect", "lane"))
		terms := reporttest.Find(rate, reporttest.Tag("rect", "term"))
		if len(lanes) != 2 || len(terms) != 2 {
			t.Fatalf("%d lanes and %d terms, want 2 and 2", len(lanes), len(terms))
		}
		if y, h := reporttest.Num(t, terms[1], "y"), reporttest.Num(t, terms[1], "height"); !reporttest.Near(y+h, reporttest.Num(t, lanes[1], "y")+LaneHeight) || h != thinHeight {
			t.Errorf("the second term at y %v, %v high: not thin at the bottom of lane 1", y, h)
		}
		if x := reporttest.Num(t, terms[1], "x"); !reporttest.Near(x, xAt(4.02)) {
			t.Errorf("the second term starts at x %v, want %v", x, xAt(4.02))
		}
		gaps := reporttest.Find(rate, reporttest.Tag("rect", "gap"))
		if len(gaps) != 1 || reporttest.Num(t, gaps[0], "width") != 2 || !reporttest.Near(reporttest.Num(t, gaps[0], "x"), xAt(4)) {
			t.Fatalf("the failover's gap: %d bands, want one at %v, 2 wide", len(gaps), xAt(4))
		}
		// The gap runs over the plot and the lanes.
		if top, bottom := reporttest.Num(t, gaps[0], "y"), reporttest.Num(t, gaps[0], "y")+reporttest.Num(t, gaps[0], "height"); top != roomPhases || !reporttest.Near(bottom, reporttest.Num(t, lanes[1], "y")+LaneHeight) {
			t.Errorf("the gap runs from y %v to %v", top, bottom)
		}
		if m := reporttest.ByID(doc, "k-1"); m == nil || !reporttest.HasClass(m, "mark") {
			t.Error("no mark k-1")
		}
		if keys := reporttest.Find(doc, reporttest.Tag("i", "box")); len(keys) != 2 {
			t.Errorf("%d keys in the legend, want 2", len(keys))
		}
	})
	t.Run("Latency", func(t *testing.T) {
		lat := reporttest.ByID(doc, "latency")
		if lat == nil || !reporttest.HasClass(lat, "latency") || !reporttest.HasClass(lat, "chart") {
			t.Fatal("no latency chart with its classes")
		}
		// p50, p95 and p99, broken by the empty bucket 1 and ended by the empty 3 to 9.
		if lines := reporttest.Find(lat, reporttest.Tag("polyline", "")); len(lines) != 6 {
			t.Errorf("%d lines, want 3 percentiles in 2 pieces", len(lines))
		}
		var labels []string
		for _, n := range reporttest.Find(lat, reporttest.Tag("text", "")) {
			labels = append(labels, n.FirstChild.Data)
		}
		// From 0.3 ms to 40 ms: the powers of ten from 0.1 to 100.
		for _, want := range []string{"0.1 ms", "1 ms", "10 ms", "100 ms"} {
			if !slices.Contains(labels, want) {
				t.Errorf("no tick %q among %q", want, labels)
			}
		}
	})
	t.Run("TableBars", func(t *testing.T) {
		table := reporttest.ByID(doc, "systems")
		bars := reporttest.Find(table, reporttest.Tag("td", "bar"))
		if len(bars) != 2 {
			t.Fatalf("%d cells with a bar, want 2", len(bars))
		}
		widths := []string{}
		for _, b := range bars {
			widths = append(widths, reporttest.Attr(reporttest.Find(b, reporttest.Tag("i", ""))[0], "style"))
		}
		if !strings.Contains(widths[0], "100.0%") || !strings.Contains(widths[1], "49.3%") || !reporttest.HasClass(bars[1], "c1") {
			t.Errorf("bars %q, classes %q: want 100%% and 49.3%% (37290 of 75679), the second in colour 1", widths, reporttest.Attr(bars[1], "class"))
		}
		if !strings.Contains(out, "75,679") {
			t.Error("no 75,679 in the table")
		}
	})
}

// An empty chart and an empty series draw plain numbers, no NaN or infinity.
func TestEmptyChart(t *testing.T) {
	t.Parallel()
	p := &Page{Title: "empty", Sections: []Section{{Heading: "x", Charts: []Chart{
		{ID: "a"}, {ID: "b", Log: true, YUnit: "ms", Series: LatencyIn(nil, 1, 3).Series("none", 0)},
		{ID: "c", Series: []Series{RateOver(nil, 0).Series("none", 0)}},
	}}}}
	out, _ := reporttest.Render(t, p.Write)
	reporttest.SelfContained(t, out)
}

func TestRateOver(t *testing.T) {
	t.Parallel()
	// 100 a second for 2 s, then nothing for 1 s, read every half second.
	counts := []Count{{0, 0}, {0.5, 50}, {1, 100}, {1.5, 150}, {2, 200}, {2.5, 200}, {3, 200}}
	r := RateOver(counts, 3)
	if r.BucketS != 0.1 || len(r.PerSec) != 31 {
		t.Fatalf("buckets of %v s, %d of them", r.BucketS, len(r.PerSec))
	}
	for i, want := range map[int]float64{0: 100, 7: 100, 19: 100, 20: 0, 29: 0, 30: 0} {
		if math.Abs(r.PerSec[i]-want) > 1e-6 {
			t.Errorf("bucket %d: %v/s, want %v", i, r.PerSec[i], want)
		}
	}
	if s := r.Series("x", 0); len(s.X) != 31 || !reporttest.Near(s.X[0], 0.05) {
		t.Errorf("series at %v", s.X[:2])
	}
}

func TestLatencyIn(t *testing.T) {
	t.Parallel()
	var samples []Sample
	for i := range 100 {
		samples = append(samples, Sample{At: float64(i) / 100, MS: float64(100 - i)})
	}
	samples = append(samples, Sample{At: 1.5, MS: 7}, Sample{At: -1, MS: 1}, Sample{At: 5, MS: 1})
	l := LatencyIn(samples, 1, 3)
	if !slices.Equal(l.Count, []int{100, 1, 0}) || l.P50[0] != 51 || l.P99[0] != 100 || l.P95[1] != 7 || l.P50[2] != 0 {
		t.Errorf("count %v p50 %v p95 %v p99 %v", l.Count, l.P50, l.P95, l.P99)
	}
	if w := BucketWidth(3600); 3600/w > MaxBuckets || w < 1 {
		t.Errorf("an hour in buckets of %v s", w)
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 75679.46: "75,679", -1234567: "-1,234,567", math.NaN(): "–"} {
		if got := Format(v, 0); got != want {
			t.Errorf("Format(%v) = %q, want %q", v, got, want)
		}
	}
	if got := Format(1234.5, 2); got != "1,234.50" {
		t.Errorf("Format(1234.5, 2) = %q", got)
	}
}

// A path no page can be written at is refused before anything runs, naming the path; a page
// is put in place whole, and a discarded one leaves nothing.
func TestFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, path := range []string{filepath.Join(dir, "missing", "r.html"), dir} {
		_, err := Create(path)
		var pe *PathError
		if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), path) {
			t.Errorf("Create(%s): %v; want a PathError naming the path", path, err)
		}
	}
	path := filepath.Join(dir, "r.html")
	f, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Write(samplePage().Write); err != nil {
		t.Fatal(err)
	}
	f.Discard() // after Write: nothing to remove
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("the page: %v, %v", fi, err)
	}
	g, err := Create(filepath.Join(dir, "failed.html"))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Write(func(w io.Writer) error { return errors.New("planted") }); err == nil || !strings.Contains(err.Error(), "planted") {
		t.Errorf("a failed write: %v", err)
	}
	g.Discard()
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want the page alone", len(entries))
	}
}
