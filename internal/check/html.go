package check

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The report is one HTML page with its style and charts inline (SVG drawn here), so it can
// be mailed, attached to a CI run or opened from disk with no network. Its template is
// report.html; the geometry below is computed in Go so the template only places elements.

//go:embed report.html
var reportHTML string

// reportTemplate prints coordinates with f: to a tenth of a unit, which no screen shows finer,
// and the page weighs half as much.
var reportTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"f": func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
}).Parse(reportHTML))

// Geometry of the charts, in SVG user units (the SVGs scale to the page's width).
const (
	chartWidth  = 1100.0
	marginLeft  = 150.0 // room for the lanes' and the axes' labels
	marginRight = 20.0
	plotWidth   = chartWidth - marginLeft - marginRight
	opsTop      = 34.0 // room for the stages' names
	opsHeight   = 200.0
	laneGap     = 6.0
	laneHeight  = 26.0
	termHeight  = 6.0
	latHeight   = 150.0
)

// WriteHTML writes the report as one self-contained HTML page: a timeline of the run, the
// latency of the operations over time, and the invariants with each violation linked to its
// place on the timeline. A report without a timeline (from a stand-in, or an older run's
// JSON) gets the table alone.
func (r *Report) WriteHTML(w io.Writer) error {
	return reportTemplate.Execute(w, newReportView(r))
}

// reportView is what the template shows.
type reportView struct {
	// The charts' geometry, shared by all of them.
	Width, PlotLeft, PlotEnd, PlotWidth, LaneHeight float64

	R        *Report
	Title    string
	Verdict  string
	Faults   string // the counts by kind, "kill 4, stop 3"
	Timeline *timelineView
	Latency  []latencyView
	Table    []invariantView
	FaultLog []faultRow
}

type timelineView struct {
	Height  float64
	Bottom  float64 // of the lanes: where the axis is
	XTicks  []tick
	YTicks  []tick
	Phases  []phaseMark
	Lines   []line
	Legend  []legendItem
	Kinds   []string // of the faults drawn, for their legend
	Lanes   []lane
	Bands   []band // faults, over the ops chart and in the lanes they hit
	Terms   []band
	Marks   []violationMark
	OpsTop  float64
	OpsBase float64
}

// tick is a label on an axis; on the y axis, X to X2 is its grid line.
type tick struct {
	X, X2, Y float64
	Label    string
}

type phaseMark struct {
	X, TextX, TextY float64
	Anchor          string // of the name: "end" near the right edge, where it would not fit
	Name            string
}

// line is one polyline; a series with gaps is several.
type line struct {
	Class  string
	Points string
}

type legendItem struct {
	Class, Name string
}

type lane struct {
	Y     float64
	Label string
}

// band is a rectangle over a stretch of time: a fault or a term.
type band struct {
	ID         string
	Class      string
	X, Y, W, H float64
	Title      string
}

type violationMark struct {
	ID    string
	X     float64
	Title string
}

type latencyView struct {
	Block  string
	Height float64
	Lines  []line
	YTicks []tick
	XTicks []tick
	Bands  []band
	Bottom float64
}

type invariantView struct {
	Name       string
	Operations int
	Violations int
	Found      []foundRow
	Unplaced   int // violations not drawn (past maxFound)
}

type foundRow struct {
	ID, At, Detail string
}

type faultRow struct {
	ID, Kind, Where, From, Lasted string
	Injected                      bool
}

func newReportView(r *Report) *reportView {
	v := &reportView{Width: chartWidth, PlotLeft: marginLeft, PlotEnd: marginLeft + plotWidth, PlotWidth: plotWidth, LaneHeight: laneHeight,
		R: r, Title: fmt.Sprintf("twice check: %s, %d instances", r.Store, r.Instances)}
	if r.Violations == 0 {
		v.Verdict = "OK, no violation"
	} else {
		v.Verdict = fmt.Sprintf("%d violations", r.Violations)
	}
	var kinds []string
	for k, n := range r.Faults {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	slices.Sort(kinds)
	v.Faults = strings.Join(kinds, ", ")
	tl := r.Timeline
	if tl != nil && !tl.End.After(tl.Start) {
		tl = nil // nothing to draw on
	}
	var x func(time.Time) float64
	if tl != nil {
		x = scaleX(tl)
	}
	// Each placed violation is a row of the table and a mark on the timeline, the row
	// linking to the mark by its id.
	var marks []violationMark
	for _, inv := range r.Invariants {
		iv := invariantView{Name: inv.Name, Operations: inv.Operations, Violations: inv.Violations}
		for _, f := range inv.Found {
			row := foundRow{Detail: f.Detail}
			if tl != nil {
				row.ID = "v-" + strconv.Itoa(len(marks)+1)
				row.At = seconds(f.At.Sub(tl.Start))
				marks = append(marks, violationMark{ID: row.ID, X: x(f.At), Title: inv.Name + " at " + row.At + ": " + f.Detail})
			}
			iv.Found = append(iv.Found, row)
		}
		if len(inv.Found) == 0 {
			// A report from before violations had times: list the details, unplaced.
			for _, d := range inv.Details {
				iv.Found = append(iv.Found, foundRow{Detail: d})
			}
		}
		iv.Unplaced = inv.Violations - len(iv.Found)
		v.Table = append(v.Table, iv)
	}
	if tl == nil {
		return v
	}
	v.Timeline = timelineChart(tl, x)
	v.Timeline.Marks = marks
	for i, f := range tl.Faults {
		row := faultRow{ID: "f-" + strconv.Itoa(i+1), Kind: f.Kind, Injected: f.Injected, From: seconds(f.Start.Sub(tl.Start)), Lasted: seconds(f.End.Sub(f.Start))}
		row.Where = slotNames(f, tl.Slots)
		v.FaultLog = append(v.FaultLog, row)
	}
	for i, s := range tl.Series {
		if s.P99 != nil {
			v.Latency = append(v.Latency, latencyChart(tl, s, i, x))
		}
	}
	return v
}

// scaleX maps a time of the run to its x coordinate.
func scaleX(tl *Timeline) func(time.Time) float64 {
	span := tl.End.Sub(tl.Start).Seconds()
	return func(t time.Time) float64 {
		f := t.Sub(tl.Start).Seconds() / span
		return marginLeft + plotWidth*math.Min(1, math.Max(0, f))
	}
}

// seconds formats a time of the run as seconds since its start, "12.3 s".
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
}

// slotNames says where f struck, for a band's title and the fault table: its instances, or
// every one of a run's slots.
func slotNames(f Fault, slots int) string {
	if len(f.Slots) == slots && slots > 1 {
		return "every instance"
	}
	var names []string
	for _, s := range f.Slots {
		names = append(names, "instance "+strconv.Itoa(s))
	}
	out := strings.Join(names, ", ")
	if f.Instance != "" {
		out += " (" + f.Instance + ")"
	}
	return out
}

// timelineChart draws the operations per second over the lanes of the instances, with the
// faults, the terms and the stages; the caller adds the violations' marks.
func timelineChart(tl *Timeline, x func(time.Time) float64) *timelineView {
	v := &timelineView{OpsTop: opsTop, OpsBase: opsTop + opsHeight}
	lanesTop := v.OpsBase + 30
	laneY := func(slot int) float64 { return lanesTop + float64(slot)*(laneHeight+laneGap) }
	v.Bottom = laneY(tl.Slots) - laneGap
	v.Height = v.Bottom + 30
	for i := range tl.Slots {
		v.Lanes = append(v.Lanes, lane{Y: laneY(i), Label: "instance " + strconv.Itoa(i)})
	}
	opsLines(v, tl, x)
	for i, p := range tl.Phases {
		// Names alternate between two rows: a short stage's would run into the next one's.
		m := phaseMark{X: x(p.Start), TextX: x(p.Start) + 3, TextY: 12 + 11*float64(i%2), Anchor: "start", Name: p.Name}
		if m.X > marginLeft+plotWidth-80 {
			m.TextX, m.Anchor = m.X-3, "end"
		}
		v.Phases = append(v.Phases, m)
	}
	v.XTicks = timeTicks(tl, x, v.Bottom)
	faultBands(v, tl, x, laneY)
	for _, t := range tl.Terms {
		v.Terms = append(v.Terms, band{Class: "term", X: x(t.Start), Y: laneY(t.Slot) + laneHeight - termHeight, W: math.Max(1, x(t.End)-x(t.Start)), H: termHeight,
			Title: fmt.Sprintf("%s led with token %d from %s for %s", t.Instance, t.Token, seconds(t.Start.Sub(tl.Start)), seconds(t.End.Sub(t.Start)))})
	}
	return v
}

// opsLines draws a line per block of its operations per second (and one of its failures,
// if it had any); the busiest bucket sets the scale.
func opsLines(v *timelineView, tl *Timeline, x func(time.Time) float64) {
	peak := 1.0
	for _, s := range tl.Series {
		for i := range s.OK {
			peak = math.Max(peak, float64(s.OK[i]+s.Failed[i])/tl.BucketS)
		}
	}
	top := niceCeil(peak)
	y := func(rate float64) float64 { return v.OpsBase - opsHeight*rate/top }
	for _, t := range linearTicks(top) {
		v.YTicks = append(v.YTicks, tick{X: marginLeft, X2: marginLeft + plotWidth, Y: y(t), Label: strconv.FormatFloat(t, 'f', -1, 64)})
	}
	for i, s := range tl.Series {
		class := "c" + strconv.Itoa(i%len(blockOrder))
		v.Legend = append(v.Legend, legendItem{Class: class, Name: s.Block})
		v.Lines = append(v.Lines, polylines(class, len(s.OK), func(b int) (float64, float64, bool) {
			return bucketX(tl, b, x), y(float64(s.OK[b]) / tl.BucketS), true
		})...)
		if slices.ContainsFunc(s.Failed, func(n int) bool { return n > 0 }) {
			v.Lines = append(v.Lines, polylines(class+" failed", len(s.Failed), func(b int) (float64, float64, bool) {
				return bucketX(tl, b, x), y(float64(s.Failed[b]) / tl.BucketS), true
			})...)
		}
	}
}

// faultBands draws each fault as a band in the lane of each instance it hit, and each
// injected one also as a shade over the operations chart.
func faultBands(v *timelineView, tl *Timeline, x func(time.Time) float64, laneY func(int) float64) {
	for i, f := range tl.Faults {
		id := "f-" + strconv.Itoa(i+1)
		x0, x1 := x(f.Start), x(f.End)
		w := math.Max(2, x1-x0) // a fault of an instant still shows
		title := fmt.Sprintf("%s on %s, from %s for %s", f.Kind, slotNames(f, tl.Slots), seconds(f.Start.Sub(tl.Start)), seconds(f.End.Sub(f.Start)))
		class := "fault k-" + f.Kind
		if !slices.Contains(v.Kinds, f.Kind) {
			v.Kinds = append(v.Kinds, f.Kind)
		}
		if f.Injected {
			v.Bands = append(v.Bands, band{Class: class + " shade", X: x0, Y: v.OpsTop, W: w, H: opsHeight, Title: title})
		}
		for j, s := range f.Slots {
			b := band{Class: class, X: x0, Y: laneY(s), W: w, H: laneHeight, Title: title}
			if j == 0 {
				b.ID = id // the fault table links to the band in its first lane
			}
			v.Bands = append(v.Bands, b)
		}
	}
}

// bucketX is the x of the middle of bucket b.
func bucketX(tl *Timeline, b int, x func(time.Time) float64) float64 {
	return x(tl.Start.Add(time.Duration((float64(b) + 0.5) * tl.BucketS * float64(time.Second))))
}

// polylines joins the points of a series into lines, broken where point reports !ok.
func polylines(class string, n int, point func(int) (x, y float64, ok bool)) []line {
	var out []line
	var pts []string
	flush := func() {
		if len(pts) > 0 {
			out = append(out, line{Class: class, Points: strings.Join(pts, " ")})
			pts = nil
		}
	}
	for i := range n {
		x, y, ok := point(i)
		if !ok {
			flush()
			continue
		}
		pts = append(pts, strconv.FormatFloat(x, 'f', 1, 64)+","+strconv.FormatFloat(y, 'f', 1, 64))
	}
	flush()
	return out
}

// latencyChart draws the percentiles of one block's latency on a logarithmic scale, over
// the injected faults' shade; a bucket without operations leaves a gap.
func latencyChart(tl *Timeline, s Series, i int, x func(time.Time) float64) latencyView {
	top := 10.0
	v := latencyView{Block: s.Block, Bottom: top + latHeight, Height: top + latHeight + 30}
	lo, hi := math.Inf(1), 0.0
	for b := range s.P99 {
		if s.OK[b]+s.Failed[b] == 0 {
			continue
		}
		if s.P50[b] > 0 {
			lo = math.Min(lo, s.P50[b])
		}
		hi = math.Max(hi, s.P99[b])
	}
	if hi == 0 {
		lo, hi = 1, 10
	}
	decLo, decHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if decHi <= decLo {
		decHi = decLo + 1
	}
	y := func(ms float64) float64 {
		ms = math.Max(ms, math.Pow(10, decLo))
		return v.Bottom - latHeight*(math.Log10(ms)-decLo)/(decHi-decLo)
	}
	for d := decLo; d <= decHi; d++ {
		v.YTicks = append(v.YTicks, tick{X: marginLeft, X2: marginLeft + plotWidth, Y: y(math.Pow(10, d)), Label: msLabel(math.Pow(10, d))})
	}
	class := "c" + strconv.Itoa(i%len(blockOrder))
	for _, p := range []struct {
		name string
		vals []float64
	}{{"p50", s.P50}, {"p95", s.P95}, {"p99", s.P99}} {
		v.Lines = append(v.Lines, polylines(class+" "+p.name, len(p.vals), func(b int) (float64, float64, bool) {
			return bucketX(tl, b, x), y(p.vals[b]), s.OK[b]+s.Failed[b] > 0
		})...)
	}
	for _, f := range tl.Faults {
		if f.Injected {
			v.Bands = append(v.Bands, band{Class: "fault shade k-" + f.Kind, X: x(f.Start), Y: top, W: math.Max(2, x(f.End)-x(f.Start)), H: latHeight,
				Title: f.Kind + " on " + slotNames(f, tl.Slots)})
		}
	}
	v.XTicks = timeTicks(tl, x, v.Bottom)
	return v
}

// msLabel names a latency axis's power of ten: "10 ms", "1 s".
func msLabel(ms float64) string {
	if ms >= 1000 {
		return strconv.FormatFloat(ms/1000, 'f', -1, 64) + " s"
	}
	return strconv.FormatFloat(ms, 'f', -1, 64) + " ms"
}

// timeTicks marks whole seconds since the start, about ten of them, on an axis at y.
func timeTicks(tl *Timeline, x func(time.Time) float64, y float64) []tick {
	span := tl.End.Sub(tl.Start).Seconds()
	step := niceCeil(span / 10)
	var out []tick
	for s := 0.0; s <= span; s += step {
		out = append(out, tick{X: x(tl.Start.Add(time.Duration(s * float64(time.Second)))), Y: y, Label: strconv.FormatFloat(s, 'f', -1, 64) + " s"})
	}
	return out
}

// linearTicks divides [0, top] into four or five steps.
func linearTicks(top float64) []float64 {
	step := niceCeil(top / 5)
	var out []float64
	for t := 0.0; t <= top+step/1000; t += step {
		out = append(out, t)
	}
	return out
}
