package dashboard

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/workflow"
)

// The pages are server-rendered from these templates, built into the binary: no build
// step, no file to deploy beside it.
//
//go:embed templates/*.html
var files embed.FS

var tmpl = template.Must(template.New("").Funcs(template.FuncMap{
	"stamp":    stamp,
	"ago":      func(t time.Time) string { return since(time.Since(t)) },
	"dur":      since,
	"short":    short,
	"json":     func(b json.RawMessage) string { return short(string(b), 120) },
	"held":     held,
	"list":     func(s ...string) []string { return s },
	"join":     strings.Join,
	"failures": failures,
	"query":    query,
	"flowRows": func(flows []workflow.Summary, canAct bool, back string) flowRows {
		return flowRows{Flows: flows, CanAct: canAct, Back: back}
	},
	"flowAction": func(id string, st workflow.State, back string) flowAction {
		return flowAction{ID: id, State: st, Back: back}
	},
}).ParseFS(files, "templates/*.html"))

// flowRows is a table of workflows, with their actions for a role that may act; Back is
// the page an action returns to.
type flowRows struct {
	Flows  []workflow.Summary
	CanAct bool
	Back   string
}

// flowAction is the actions of one workflow: cancel while it runs, retry once it failed.
type flowAction struct {
	ID    string
	State workflow.State
	Back  string
}

// query is page with the query of kv (key, value, key, value…), empty values left out.
func query(page string, kv ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			q.Set(kv[i], kv[i+1])
		}
	}
	if len(q) == 0 {
		return page
	}
	return page + "?" + q.Encode()
}

// stamp is a time as the tables show it, in UTC.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

// since shortens d for a table.
func since(d time.Duration) string {
	switch {
	case d < 0:
		return "in " + since(-d)
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

func short(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

// held is how many partitions instance holds across the partition sets and event groups.
func held(st twice.ServiceStatus, instance string) string {
	n, sets := 0, 0
	for _, p := range st.Partitions {
		if h := p.Held[instance]; h > 0 {
			n += h
			sets++
		}
	}
	if n == 0 {
		return "—"
	}
	return fmt.Sprintf("%d in %d sets", n, sets)
}

// failures lists the failing checks of a report with their errors.
func failures(r *cluster.Report) string {
	var fs []string
	for _, c := range r.Checks {
		if !c.OK {
			fs = append(fs, c.Name+": "+c.Error)
		}
	}
	return strings.Join(fs, "; ")
}
