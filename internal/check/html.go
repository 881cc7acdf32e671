package check

import (
	_ "embed"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twicehq/twice/internal/report"
)

// The report is one HTML page with its style and charts inline (SVG computed in Go by
// internal/report, which draws the benchmarks' pages too), so it can be mailed, attached to
// a CI run or opened from disk with no network. Its template is report.html.

//go:embed report.html
var reportHTML string

var reportTemplate = report.Template("check", reportHTML)

// Heights of the plots, in SVG user units.
const (
	opsHeight = 200.0
	latHeight = 150.0
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
	R        *Report
	Title    string
	Verdict  string
	Faults   string // the counts by kind, "kill 4, stop 3"
	Timeline *report.ChartView
	Latency  []*report.ChartView
	Table    []invariantView
	FaultLog []faultRow
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
	v := &reportView{R: r, Title: fmt.Sprintf("twice check: %s, %d instances", r.Store, r.Instances)}
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
	// Each placed violation is a row of the table and a mark on the timeline, the row
	// linking to the mark by its id.
	var marks []report.Mark
	for _, inv := range r.Invariants {
		iv := invariantView{Name: inv.Name, Operations: inv.Operations, Violations: inv.Violations}
		for _, f := range inv.Found {
			row := foundRow{Detail: f.Detail}
			if tl != nil {
				row.ID = "v-" + strconv.Itoa(len(marks)+1)
				row.At = seconds(f.At.Sub(tl.Start))
				marks = append(marks, report.Mark{ID: row.ID, Class: "violation", At: tl.at(f.At), Title: inv.Name + " at " + row.At + ": " + f.Detail})
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
	v.Timeline = timelineChart(tl, marks).View()
	for i, f := range tl.Faults {
		row := faultRow{ID: "f-" + strconv.Itoa(i+1), Kind: f.Kind, Injected: f.Injected, From: seconds(f.Start.Sub(tl.Start)), Lasted: seconds(f.End.Sub(f.Start))}
		row.Where = slotNames(f, tl.Slots)
		v.FaultLog = append(v.FaultLog, row)
	}
	for i, s := range tl.Series {
		if s.P99 != nil {
			v.Latency = append(v.Latency, latencyChart(tl, s, i).View())
		}
	}
	return v
}

// at is a time of the run in seconds since its start, where the charts place it.
func (tl *Timeline) at(t time.Time) float64 { return t.Sub(tl.Start).Seconds() }

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
// faults, the terms, the stages and the violations' marks.
func timelineChart(tl *Timeline, marks []report.Mark) *report.Chart {
	c := &report.Chart{ID: "timeline", Label: "timeline of the run", Span: tl.at(tl.End), YUnit: "ops/s", Height: opsHeight, Marks: marks}
	for i := range tl.Slots {
		c.Lanes = append(c.Lanes, "instance "+strconv.Itoa(i))
	}
	for i, s := range tl.Series {
		// A line of the operations that succeeded, and one of those that failed if any did.
		ok := report.Series{Name: s.Block, Color: i}
		failed := report.Series{Color: i, Style: "failed"}
		for b := range s.OK {
			x := (float64(b) + 0.5) * tl.BucketS
			ok.X, ok.Y = append(ok.X, x), append(ok.Y, float64(s.OK[b])/tl.BucketS)
			failed.X, failed.Y = append(failed.X, x), append(failed.Y, float64(s.Failed[b])/tl.BucketS)
		}
		c.Series = append(c.Series, ok)
		if slices.ContainsFunc(s.Failed, func(n int) bool { return n > 0 }) {
			c.Series = append(c.Series, failed)
		}
	}
	for _, p := range tl.Phases {
		c.Phases = append(c.Phases, report.Phase{At: tl.at(p.Start), Name: p.Name})
	}
	faultBands(c, tl)
	for _, t := range tl.Terms {
		c.Bars = append(c.Bars, report.Bar{Lane: t.Slot, From: tl.at(t.Start), To: tl.at(t.End), Class: "term", Thin: true,
			Title: fmt.Sprintf("%s led with token %d from %s for %s", t.Instance, t.Token, seconds(t.Start.Sub(tl.Start)), seconds(t.End.Sub(t.Start)))})
	}
	c.Keys = append(c.Keys, report.Key{Class: "term", Name: "leader"})
	return c
}

// faultBands draws each fault as a band in the lane of each instance it hit, and each
// injected one also as a shade over the operations, with a key per kind.
func faultBands(c *report.Chart, tl *Timeline) {
	var keys []report.Key
	for i, f := range tl.Faults {
		title := fmt.Sprintf("%s on %s, from %s for %s", f.Kind, slotNames(f, tl.Slots), seconds(f.Start.Sub(tl.Start)), seconds(f.End.Sub(f.Start)))
		class := "fault k-" + f.Kind
		key := report.Key{Class: "k-" + f.Kind, Name: f.Kind}
		if f.Kind == "stall" {
			key.Name = "heartbeat stall (not injected)"
		}
		if !slices.Contains(keys, key) {
			keys = append(keys, key)
		}
		from, to := tl.at(f.Start), tl.at(f.End)
		if f.Injected {
			c.Shades = append(c.Shades, report.Span{Class: class + " shade", From: from, To: to, Title: title})
		}
		for j, s := range f.Slots {
			b := report.Bar{Lane: s, Class: class, From: from, To: to, Title: title}
			if j == 0 {
				b.ID = "f-" + strconv.Itoa(i+1) // the fault table links to the band in its first lane
			}
			c.Bars = append(c.Bars, b)
		}
	}
	c.Keys = append(c.Keys, keys...)
}

// latencyChart draws the percentiles of one block's latency on a logarithmic scale, over
// the injected faults' shade; a bucket without operations leaves a gap.
func latencyChart(tl *Timeline, s Series, i int) *report.Chart {
	lat := report.Latency{BucketS: tl.BucketS, Percentiles: s.Percentiles}
	for b := range s.OK {
		lat.Count = append(lat.Count, s.OK[b]+s.Failed[b])
	}
	c := &report.Chart{Title: s.Block, Class: "latency", Label: "latency of " + s.Block, Span: tl.at(tl.End),
		YUnit: "ms", Log: true, Height: latHeight, Series: lat.Series("", i)}
	for _, f := range tl.Faults {
		if f.Injected {
			c.Shades = append(c.Shades, report.Span{Class: "fault shade k-" + f.Kind, From: tl.at(f.Start), To: tl.at(f.End),
				Title: f.Kind + " on " + slotNames(f, tl.Slots)})
		}
	}
	return c
}
