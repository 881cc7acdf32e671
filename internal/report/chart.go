package report

import (
	"math"
	"slices"
	"strconv"
	"strings"
)

// Geometry of the charts, in SVG user units (an SVG scales to the page's width).
const (
	Width     = 1100.0
	PlotLeft  = 150.0 // room for the lanes' and the axes' labels
	PlotWidth = Width - PlotLeft - 20
	PlotEnd   = PlotLeft + PlotWidth

	// DefaultHeight is a plot's height unless its chart says otherwise.
	DefaultHeight = 200.0
	// LaneHeight is a lane's height, unless so many lanes make it smaller.
	LaneHeight = 26.0
	laneGap    = 6.0
	// lanesMax is the height many lanes shrink to fit, down to laneMin each: up to about
	// fifteen keep their full height.
	lanesMax     = 500.0
	laneMin      = 8.0
	thinHeight   = 6.0  // a thin bar, at the bottom of its lane (a leader's term)
	roomTop      = 10.0 // above a plot
	roomPhases   = 34.0 // above a plot when phases or marks are named or drawn there
	roomBetween  = 30.0 // between the plot and the lanes
	roomTicks    = 30.0 // below the lowest axis, for the time's labels
	phaseRowStep = 11.0
)

// Chart is one SVG over the time of a run, its x axis in seconds since the run's start: a
// plot of series on top (a linear or a logarithmic y axis), and below it, if it has any,
// one lane per instance with bars in them. Spans, phases and marks run over both. A chart
// is drawn when its [Page] is written, or into another template with [Chart.View].
type Chart struct {
	ID    string // the SVG's id, for links and tests
	Title string // a heading above the chart; "" for none
	Class string // classes of the SVG besides "chart" ("latency")
	Label string // what it shows, for those who cannot see it; defaults to Title
	// Span is the length of the x axis in seconds: it runs from 0 to Span. 0 takes the
	// largest x of the series, bars, spans and marks.
	Span float64

	// YUnit names the plot's unit, written above its axis; "ms" on a logarithmic axis
	// labels each power of ten instead ("10 ms", "1 s").
	YUnit string
	Log   bool
	// Height is the plot's. Defaults to [DefaultHeight].
	Height float64
	Series []Series
	// Shades are stretches of time shaded over the plot alone (an injected fault).
	Shades []Span

	// Lanes name the lanes below the plot, top to bottom ("instance 0").
	Lanes []string
	Bars  []Bar

	// Spans are stretches of time shaded over the plot and the lanes (a failover's gap).
	Spans  []Span
	Phases []Phase
	Marks  []Mark
	// Keys explain the classes of the bars and spans in the legend.
	Keys []Key
}

// Series is one line of a chart, or its dots. A NaN y is no point: it breaks the line.
type Series struct {
	Name  string // in the legend, once per name; "" leaves it out
	Color int    // one of 8 colours; a system keeps its colour across a page
	// Style is "" for a line, "p50", "p95", "p99" or "failed" for a line so drawn (thin,
	// dashed, thick, dotted), or "dots" for a dot per point and no line.
	Style  string
	X, Y   []float64
	Titles []string // a dot's hover text, by point
}

// Span is a stretch of time: From to To seconds. A span shorter than two units is drawn
// two units wide, so an instant still shows.
type Span struct {
	From, To  float64
	ID, Class string
	Title     string // hover text
}

// Bar is a stretch of time in one lane: a fault that hit its instance, or (Thin) a term.
type Bar struct {
	Lane      int
	From, To  float64
	ID, Class string
	Title     string
	Thin      bool
}

// Phase is the start of a stage of a run: a dashed line with its name at the top.
type Phase struct {
	At   float64 `json:"at_s"`
	Name string  `json:"name"`
}

// Mark is a moment: a line over the plot and the lanes with a head at the top.
type Mark struct {
	At        float64
	ID, Class string
	Title     string
}

// Key is a box of a class in the legend, for what bars and spans mean.
type Key struct{ Class, Name string }

// ChartView is a chart's geometry, what the "chart" template draws.
type ChartView struct {
	ID, Class, Title, Label string
	// Height is the SVG's; Top and Base bound the plot (equal without one); Bottom is the
	// x axis's, under the lanes or the plot.
	Height, Top, Base, Bottom float64
	YUnit                     string // "" when the ticks carry the unit
	YTicks, XTicks            []Tick
	Lanes                     []Lane
	LaneHeight                float64
	Shades, Spans, Bars       []Band
	Lines                     []Line
	Dots                      []Dot
	Phases                    []PhaseMark
	Marks                     []MarkView
	Legend                    []LegendItem
	Keys                      []Key
}

// Tick is a label on an axis; on the y axis, X to X2 is its grid line.
type Tick struct {
	X, X2, Y float64
	Label    string
}

// Line is one polyline; a series with gaps is several.
type Line struct {
	Class  string
	Points string
}

// Dot is one point of a dotted series.
type Dot struct {
	Class string
	X, Y  float64
	Title string
}

// LegendItem is a series's swatch in the legend.
type LegendItem struct{ Class, Name string }

// Lane is one lane's place and label.
type Lane struct {
	Y     float64
	Label string
}

// Band is a rectangle: a shade, a span or a bar.
type Band struct {
	ID, Class  string
	X, Y, W, H float64
	Title      string
}

// PhaseMark is a phase's line and the place of its name.
type PhaseMark struct {
	X, TextX, TextY float64
	Anchor          string // "end" near the right edge, where the name would not fit
	Name            string
}

// MarkView is a mark's place.
type MarkView struct {
	ID, Class, Title string
	X                float64
}

// View computes the chart's geometry.
func (c *Chart) View() *ChartView {
	v := &ChartView{ID: c.ID, Class: strings.TrimSpace("chart " + c.Class), Title: c.Title, Label: c.Label, YUnit: c.YUnit, Keys: c.Keys}
	if v.Label == "" {
		v.Label = c.Title
	}
	span := c.Span
	if span <= 0 {
		span = c.extent()
	}
	x := TimeX(span)
	v.Top = roomTop
	if len(c.Phases) > 0 || len(c.Marks) > 0 {
		v.Top = roomPhases
	}
	v.Base = v.Top
	if len(c.Series) > 0 {
		h := c.Height
		if h <= 0 {
			h = DefaultHeight
		}
		v.Base = v.Top + h
		c.plot(v, x)
	}
	v.Bottom = v.Base
	if len(c.Lanes) > 0 {
		c.lanes(v, x)
	}
	v.Height = v.Bottom + roomTicks
	v.XTicks = TimeTicks(span, v.Bottom)
	for _, s := range c.Shades {
		v.Shades = append(v.Shades, band(s, x, v.Top, v.Base-v.Top))
	}
	for _, s := range c.Spans {
		v.Spans = append(v.Spans, band(s, x, v.Top, v.Bottom-v.Top))
	}
	v.Phases = PhaseMarks(c.Phases, x)
	for _, m := range c.Marks {
		v.Marks = append(v.Marks, MarkView{ID: m.ID, Class: m.Class, Title: m.Title, X: x(m.At)})
	}
	return v
}

// extent is the largest x the chart holds, at least a tenth of a second.
func (c *Chart) extent() float64 {
	top := 0.1
	for _, s := range c.Series {
		for _, x := range s.X {
			top = math.Max(top, x)
		}
	}
	for _, b := range c.Bars {
		top = math.Max(top, b.To)
	}
	for _, s := range slices.Concat(c.Shades, c.Spans) {
		top = math.Max(top, s.To)
	}
	for _, m := range c.Marks {
		top = math.Max(top, m.At)
	}
	return top
}

// plot draws the series between v.Top and v.Base, with their y axis and legend.
func (c *Chart) plot(v *ChartView, x func(float64) float64) {
	var y func(float64) float64
	if c.Log {
		lo, hi := math.Inf(1), 0.0
		for _, s := range c.Series {
			for _, val := range s.Y {
				if val > 0 && !math.IsInf(val, 0) {
					lo, hi = math.Min(lo, val), math.Max(hi, val)
				}
			}
		}
		y, v.YTicks = LogY(v.Top, v.Base, lo, hi, c.YUnit == "ms")
		if c.YUnit == "ms" {
			v.YUnit = ""
		}
	} else {
		peak := 0.0
		for _, s := range c.Series {
			for _, val := range s.Y {
				if !math.IsNaN(val) && !math.IsInf(val, 0) {
					peak = math.Max(peak, val)
				}
			}
		}
		y, v.YTicks = LinearY(v.Top, v.Base, peak)
	}
	for _, s := range c.Series {
		class := strings.TrimSpace("c" + strconv.Itoa(s.Color%8) + " " + s.Style)
		if s.Name != "" && !slices.ContainsFunc(v.Legend, func(l LegendItem) bool { return l.Name == s.Name }) {
			v.Legend = append(v.Legend, LegendItem{Class: class, Name: s.Name})
		}
		point := func(i int) (float64, float64, bool) {
			return x(s.X[i]), y(s.Y[i]), !math.IsNaN(s.Y[i]) && !math.IsInf(s.Y[i], 0)
		}
		n := min(len(s.X), len(s.Y))
		if s.Style != "dots" {
			v.Lines = append(v.Lines, Polylines(class, n, point)...)
			continue
		}
		for i := range n {
			if px, py, ok := point(i); ok {
				d := Dot{Class: "dot " + class, X: px, Y: py}
				if i < len(s.Titles) {
					d.Title = s.Titles[i]
				}
				v.Dots = append(v.Dots, d)
			}
		}
	}
}

// lanes draws the lanes and their bars below the plot, ending v.Bottom under them.
func (c *Chart) lanes(v *ChartView, x func(float64) float64) {
	top := v.Top
	if len(c.Series) > 0 {
		top = v.Base + roomBetween
	}
	n := float64(len(c.Lanes))
	v.LaneHeight = math.Max(laneMin, math.Min(LaneHeight, (lanesMax-laneGap*n)/n))
	laneY := func(i int) float64 { return top + float64(i)*(v.LaneHeight+laneGap) }
	for i, name := range c.Lanes {
		v.Lanes = append(v.Lanes, Lane{Y: laneY(i), Label: name})
	}
	v.Bottom = laneY(len(c.Lanes)) - laneGap
	for _, b := range c.Bars {
		if b.Lane < 0 || b.Lane >= len(c.Lanes) {
			continue
		}
		y, h := laneY(b.Lane), v.LaneHeight
		if b.Thin {
			y, h = y+h-thinHeight, thinHeight
		}
		v.Bars = append(v.Bars, Band{ID: b.ID, Class: b.Class, X: x(b.From), Y: y, W: math.Max(1, x(b.To)-x(b.From)), H: h, Title: b.Title})
	}
}

// band is s drawn from y, h high: at least two units wide, so a fault of an instant shows.
func band(s Span, x func(float64) float64, y, h float64) Band {
	return Band{ID: s.ID, Class: s.Class, X: x(s.From), Y: y, W: math.Max(2, x(s.To)-x(s.From)), H: h, Title: s.Title}
}

// TimeX maps seconds since a run's start to x, for a run of span seconds.
func TimeX(span float64) func(float64) float64 {
	if span <= 0 {
		span = 1
	}
	return func(s float64) float64 {
		return PlotLeft + PlotWidth*math.Min(1, math.Max(0, s/span))
	}
}

// TimeTicks marks about ten round numbers of seconds since the start of a run of span
// seconds, on an axis at y.
func TimeTicks(span, y float64) []Tick {
	x := TimeX(span)
	step := NiceCeil(span / 10)
	var out []Tick
	for i := 0.0; i*step <= span*(1+1e-9); i++ {
		out = append(out, Tick{X: x(i * step), Y: y, Label: number(i*step, step) + " s"})
	}
	return out
}

// LinearY maps 0 to peak (rounded up) onto base to top, and gives the axis's ticks.
func LinearY(top, base, peak float64) (func(float64) float64, []Tick) {
	limit := NiceCeil(peak)
	y := func(v float64) float64 { return base - (base-top)*v/limit }
	step := NiceCeil(limit / 5)
	var ticks []Tick
	for i := 0.0; i*step <= limit*(1+1e-9); i++ {
		ticks = append(ticks, Tick{X: PlotLeft, X2: PlotEnd, Y: y(i * step), Label: number(i*step, step)})
	}
	return y, ticks
}

// LogY maps lo to hi onto base to top on a logarithmic scale, whole powers of ten at both
// ends, and gives a tick per power; ms labels them as durations ("10 ms", "1 s"). A value
// below the axis is drawn on it.
func LogY(top, base, lo, hi float64, ms bool) (func(float64) float64, []Tick) {
	if hi <= 0 || math.IsInf(lo, 0) {
		lo, hi = 1, 10
	}
	decLo, decHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if decHi <= decLo {
		decHi = decLo + 1
	}
	y := func(v float64) float64 {
		v = math.Max(v, math.Pow(10, decLo))
		return base - (base-top)*(math.Log10(v)-decLo)/(decHi-decLo)
	}
	var ticks []Tick
	for d := decLo; d <= decHi; d++ {
		label := strconv.FormatFloat(math.Pow(10, d), 'f', -1, 64)
		if ms {
			label = MSLabel(math.Pow(10, d))
		}
		ticks = append(ticks, Tick{X: PlotLeft, X2: PlotEnd, Y: y(math.Pow(10, d)), Label: label})
	}
	return y, ticks
}

// MSLabel names a power of ten of milliseconds: "10 ms", "1 s".
func MSLabel(ms float64) string {
	if ms >= 1000 {
		return strconv.FormatFloat(ms/1000, 'f', -1, 64) + " s"
	}
	return strconv.FormatFloat(ms, 'f', -1, 64) + " ms"
}

// number formats v, a multiple of step, to step's decimals at most: "0", "0.5", "1".
func number(v, step float64) string {
	p := math.Pow(10, math.Max(0, math.Ceil(-math.Log10(step))))
	return strconv.FormatFloat(math.Round(v*p)/p, 'f', -1, 64)
}

// PhaseMarks places each phase's line and name; the names alternate between two rows, as a
// short stage's would run into the next one's.
func PhaseMarks(phases []Phase, x func(float64) float64) []PhaseMark {
	var out []PhaseMark
	for i, p := range phases {
		m := PhaseMark{X: x(p.At), TextX: x(p.At) + 3, TextY: 12 + phaseRowStep*float64(i%2), Anchor: "start", Name: p.Name}
		if m.X > PlotEnd-80 {
			m.TextX, m.Anchor = m.X-3, "end"
		}
		out = append(out, m)
	}
	return out
}

// Polylines joins the points of a series into lines, broken where point reports !ok.
func Polylines(class string, n int, point func(int) (x, y float64, ok bool)) []Line {
	var out []Line
	var pts []string
	xy := func(x, y float64) string {
		return strconv.FormatFloat(x, 'f', 1, 64) + "," + strconv.FormatFloat(y, 'f', 1, 64)
	}
	var lastX, lastY float64
	flush := func() {
		if len(pts) == 1 {
			// A point between two gaps is a line of no length, which no browser draws: a
			// short dash shows it.
			pts = []string{xy(lastX-2, lastY), xy(lastX+2, lastY)}
		}
		if len(pts) > 0 {
			out = append(out, Line{Class: class, Points: strings.Join(pts, " ")})
			pts = nil
		}
	}
	for i := range n {
		x, y, ok := point(i)
		if !ok {
			flush()
			continue
		}
		pts = append(pts, xy(x, y))
		lastX, lastY = x, y
	}
	flush()
	return out
}

// NiceCeil rounds v up to 1, 2 or 5 times a power of ten; 1 for nothing.
func NiceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
