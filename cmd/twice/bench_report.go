package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/twicehq/twice/internal/report"
)

// `twice bench … --report FILE.html` writes a page of the run, as `twice check --report`
// does, drawn by internal/report: what the benchmark measures over time where it has a
// time series, its figures in a table, and peers side by side where it has them.

// benchResult is what every benchmark prints, and draws with --report.
type benchResult interface {
	// summary is the result in a few lines, as the command prints it.
	summary() string
	page() *report.Page
}

// benchReport is a benchmark's --report flag and its page.
type benchReport struct {
	cmd  string // "bench idle", for messages
	path string
	file *report.File
}

// addReport registers --report on fs.
func addReport(fs *flag.FlagSet) *benchReport {
	r := &benchReport{cmd: fs.Name()}
	fs.StringVar(&r.path, "report", "", "write an HTML page of the run (charts over time, the figures) to this file")
	return r
}

// create makes the page's file, if --report asked for one: after the flags are checked and
// before the run, so a path that cannot be written fails first, as a usage error.
func (r *benchReport) create() error {
	if r.path == "" {
		return nil
	}
	var err error
	r.file, err = createReport(r.cmd, r.path)
	return err
}

// discard removes the page's file unless finish wrote it.
func (r *benchReport) discard() {
	if r.file != nil {
		r.file.Discard()
	}
}

// finish prints res, as JSON or its summary, then writes its page if --report asked for
// one and says where on progress.
func (r *benchReport) finish(stdout, progress io.Writer, asJSON bool, res benchResult) error {
	if asJSON {
		if err := printJSON(stdout, res); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout, res.summary())
	}
	if r.file == nil {
		return nil
	}
	if err := r.file.Write(res.page().Write); err != nil {
		return fmt.Errorf("%s: %w", r.cmd, err)
	}
	fmt.Fprintf(progress, "report: %s\n", r.file.Path())
	return nil
}

// meterBeat is how often a benchmark reads its running totals for the rates its page
// draws: finer than any bucket (a tenth of a second at the least).
const meterBeat = 50 * time.Millisecond

// figure is one row of a page's table of figures: what, and its value with its unit.
type figure struct{ name, value string }

// figures is the table of a run's figures.
func figures(rows ...figure) report.Table {
	t := report.Table{ID: "figures", Head: []string{"figure", "value"}}
	for _, r := range rows {
		t.Rows = append(t.Rows, []report.Cell{report.Text(r.name), {Text: r.value, Num: true}})
	}
	return t
}

// msText is a latency in milliseconds with prec decimals: "1.40 ms".
func msText(v float64, prec int) string { return report.Format(v, prec) + " ms" }

// instanceLanes names the lanes of n instance slots.
func instanceLanes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "instance " + strconv.Itoa(i)
	}
	return out
}

// gapsOf turns zeros of counts into gaps (NaN) in ys, where nothing was measured.
func gapsOf(ys []float64, counts []int) []float64 {
	out := make([]float64, len(ys))
	for i, v := range ys {
		if i < len(counts) && counts[i] == 0 {
			v = math.NaN()
		}
		out[i] = v
	}
	return out
}

// bucketXs are the middles of n buckets of width seconds.
func bucketXs(n int, width float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = (float64(i) + 0.5) * width
	}
	return out
}
