// Package report draws the self-contained HTML pages of twice's tools (`twice check
// --report`, `twice bench … --report`, and the job queue benchmark of bench/): one file
// with its style and its charts inline, SVG computed in Go, no script, nothing fetched, so
// a page can be mailed, attached to a CI run or opened from disk. It also measures what the
// charts show over time ([Meter], [LatencyOver], [RateOver]).
//
// It is internal: for twice's own tools only. The bench/ module can import it because its
// module path, github.com/twicehq/twice/bench, lies under this module's, which is all Go's
// rule for internal packages asks.
package report

import (
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Page is one page: a title, a summary, facts about the run, and sections of charts and
// tables.
type Page struct {
	Title string
	// Summary is the result in a paragraph: what the command printed.
	Summary  string
	Facts    []Fact
	Sections []Section
}

// Fact is one line of the list under the title: "store", "sqlite".
type Fact struct{ Name, Value string }

// Section is a heading, a note saying how to read what follows, and its charts, then its
// tables.
type Section struct {
	ID, Heading, Note string
	Charts            []Chart
	Tables            []Table
}

// Table is a table of text and numbers.
type Table struct {
	ID   string
	Head []string
	Rows [][]Cell
}

// Cell is one cell of a [Table].
type Cell struct {
	Text string
	Num  bool // a number: aligned to the right
	// Bar, between 0 and 1, draws a bar of that share of the cell's width behind its text,
	// in colour Color: the figures of a column side by side.
	Bar   float64
	Color int
}

// Text is a cell of text.
func Text(s string) Cell { return Cell{Text: s} }

// Num is a cell of v with prec decimals, thousands grouped: "75,679".
func Num(v float64, prec int) Cell { return Cell{Text: Format(v, prec), Num: true} }

// Format writes v with prec decimals and its thousands grouped: "75,679.5".
func Format(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	s := strconv.FormatFloat(math.Abs(v), 'f', prec, 64)
	whole, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	if v < 0 && strings.Trim(s, "0.") != "" {
		b.WriteByte('-')
	}
	for i, r := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if frac != "" {
		b.WriteString("." + frac)
	}
	return b.String()
}

// Bars gives each cell of column col with a number a bar: its share of the column's
// largest, in the colour colors gives its row.
func (t *Table) Bars(col int, values []float64, colors []int) {
	top := 0.0
	for _, v := range values {
		top = math.Max(top, v)
	}
	for i, row := range t.Rows {
		if col < len(row) && i < len(values) && top > 0 && values[i] > 0 {
			row[col].Bar, row[col].Color = values[i]/top, colors[i%len(colors)]
		}
	}
}

//go:embed base.html
var baseHTML string

//go:embed page.html
var pageHTML string

// base holds the style and the drawing every page shares; [Template] adds a page to a copy.
var base = template.Must(template.New("base").Funcs(template.FuncMap{
	// Coordinates to a tenth of a unit, which no screen shows finer, and the page weighs
	// half as much.
	"f":         func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
	"width":     func() float64 { return Width },
	"plotLeft":  func() float64 { return PlotLeft },
	"plotWidth": func() float64 { return PlotWidth },
	"plotEnd":   func() float64 { return PlotEnd },
	"laneText":  func(h float64) float64 { return h/2 + 4 },
	"pct":       func(v float64) string { return strconv.FormatFloat(100*math.Min(1, v), 'f', 1, 64) },
	"cellClass": func(c Cell) string {
		var cl []string
		if c.Num {
			cl = append(cl, "num")
		}
		if c.Bar > 0 {
			cl = append(cl, "bar", "c"+strconv.Itoa(c.Color%8))
		}
		return strings.Join(cl, " ")
	},
}).Parse(baseHTML))

// Template parses text as the template name of a page, with the shared templates at hand:
// "head" (the page up to its title, given), "style" (inside a <style> element), "chart" (a
// [ChartView]), "table" (a [Table]), and the parts of a chart, "yticks", "xticks", "bands"
// and "lines".
func Template(name, text string) *template.Template {
	t := template.Must(base.Clone())
	return template.Must(t.New(name).Parse(text))
}

var pageTemplate = Template("page", pageHTML)

// pageView is a page with its charts' geometry computed.
type pageView struct {
	*Page
	Sections []sectionView
}

type sectionView struct {
	ID, Heading, Note string
	Charts            []*ChartView
	Tables            []Table
}

// Write writes the page.
func (p *Page) Write(w io.Writer) error {
	v := pageView{Page: p}
	for _, s := range p.Sections {
		sv := sectionView{ID: s.ID, Heading: s.Heading, Note: s.Note, Tables: s.Tables}
		for i := range s.Charts {
			sv.Charts = append(sv.Charts, s.Charts[i].View())
		}
		v.Sections = append(v.Sections, sv)
	}
	return pageTemplate.Execute(w, v)
}

// PathError is [Create]'s error for a path no page can be written at: a directory, a name
// in a directory that does not exist, or one this process may not write in. A command
// reports it as a usage error; its text starts with the path.
type PathError struct {
	Path    string
	Problem string
}

func (e *PathError) Error() string { return e.Path + e.Problem }

// File is where a page is written: a temporary file beside the destination, made by
// [Create] before the run (proving the directory exists and is writable) and renamed onto
// it by [File.Write], so a run that fails leaves no half a page.
type File struct {
	path string
	tmp  *os.File
}

// Create makes the temporary file of a page to be written at path.
func Create(path string) (*File, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, &PathError{path, " is a directory; name the HTML file to write"}
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, &PathError{path, ": no directory " + dir + " to write it in"}
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if errors.Is(err, fs.ErrPermission) {
		return nil, &PathError{path, ": no permission to write in " + dir}
	}
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	return &File{path: path, tmp: tmp}, nil
}

// Path is where the page goes.
func (f *File) Path() string { return f.path }

// Write writes the page with write and puts it in place, readable by all.
func (f *File) Write(write func(io.Writer) error) error {
	if f.tmp == nil {
		return fmt.Errorf("report %s: already written or discarded", f.path)
	}
	fail := func(err error) error { return fmt.Errorf("report %s: %w", f.path, err) }
	if err := write(f.tmp); err != nil {
		return fail(err)
	}
	if err := f.tmp.Close(); err != nil {
		return fail(err)
	}
	// CreateTemp makes the file readable by its owner alone; a report is for sharing.
	if err := os.Chmod(f.tmp.Name(), 0o644); err != nil {
		return fail(err)
	}
	if err := os.Rename(f.tmp.Name(), f.path); err != nil {
		return fail(err)
	}
	f.tmp = nil
	return nil
}

// Discard removes the temporary file unless Write put it in place.
func (f *File) Discard() {
	if f.tmp != nil {
		f.tmp.Close()
		os.Remove(f.tmp.Name())
		f.tmp = nil
	}
}
