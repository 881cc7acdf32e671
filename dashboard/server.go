package dashboard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/settings"
	"github.com/twicehq/twice/workflow"
)

// pages are the dashboard's pages, in the order of its menu; "" is the cluster page.
var pages = []struct{ path, name, title string }{
	{"", "cluster", "Cluster"},
	{"jobs", "jobs", "Jobs"},
	{"workflows", "workflows", "Workflows"},
	{"events", "events", "Events"},
	{"cron", "cron", "Cron"},
	{"config", "config", "Config"},
	{"locks", "locks", "Locks"},
	{"presence", "presence", "Sessions"},
}

// view is what a page's template is given.
type view struct {
	Page   string // its name
	Title  string
	Menu   []menuItem
	Snap   *snapshot
	CanAct bool
	Who    string
	Done   string // what the last action did
	Err    string // why a request-time read failed

	// The jobs page's list, read on request with its filter.
	Jobs   []*jobs.Row
	Filter jobFilter
	// The workflows page's one workflow, with its steps (?id=).
	Flow *workflow.Status
	// The workflows page's list filtered by state and name (?state=, ?name=), read on
	// request; FlowFilter is nil without a filter, when the page shows the live list.
	Flows      []workflow.Summary
	FlowFilter *flowFilter
	// The config page's history of one key (?key=), and a change to confirm.
	Key     string
	History []settings.Setting
	Confirm *confirmSet
}

type menuItem struct{ Href, Name, Title string }

// flowFilter is the workflows page's filter, from its query.
type flowFilter struct{ State, Name string }

// readFlows reads the workflows of state and name (either may be empty), newest first.
func (db *Dashboard) readFlows(ctx context.Context, state, name string, v *view) error {
	v.FlowFilter = &flowFilter{State: state, Name: name}
	p := workflow.ListParams{Name: name, Limit: 100}
	if state != "" {
		st, err := workflow.ParseState(state)
		if err != nil {
			return err
		}
		p.States = []workflow.State{st}
	}
	var err error
	v.Flows, err = db.flows.List(ctx, p)
	return err
}

// jobFilter is the jobs page's filter, from its query.
type jobFilter struct {
	Queue, Kind, State, Tag string
	Args                    string // a JSON object of top-level argument values (see jobs.ListParams)
	Before                  int64
}

// Any reports whether the filter filters.
func (f jobFilter) Any() bool {
	return f.Queue != "" || f.Kind != "" || f.State != "" || f.Tag != "" || f.Args != ""
}

// Query is the filter as a URL query, without the page's start.
func (f jobFilter) Query() string {
	q := url.Values{}
	for k, v := range map[string]string{"queue": f.Queue, "kind": f.Kind, "state": f.State, "tag": f.Tag, "args": f.Args} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q.Encode()
}

// confirmSet is a setting's change shown for confirmation before it is made.
type confirmSet struct {
	Key, Type, Old, New string
	Version             int64 // the version the change applies to: 0 for a new key
}

func (db *Dashboard) routes() http.Handler {
	mux := http.NewServeMux()
	for _, p := range pages {
		pattern := "GET /" + p.path
		if p.path == "" {
			pattern = "GET /{$}"
		}
		mux.Handle(pattern, db.servePage(p.name, p.title))
	}
	mux.HandleFunc("GET /live", db.serveLive)
	// Actions are POSTs from the dashboard's own origin: CrossOriginProtection refuses a
	// form another site's page submits, a browser's credentials (basic auth) riding along.
	mux.Handle("POST /action", http.NewCrossOriginProtection().Handler(http.HandlerFunc(db.serveAction)))
	return db.guard(mux)
}

// newView is the view of a page from the shared snapshot. A read it starts is not cut short
// when this viewer goes away: other viewers may be waiting for the same snapshot.
func (db *Dashboard) newView(r *http.Request, name, title string) *view {
	caller := whoOf(r.Context())
	v := &view{Page: name, Title: title, CanAct: caller.role == operator, Who: caller.name,
		Snap: db.hub.current(context.WithoutCancel(r.Context())), Done: r.URL.Query().Get("done")}
	for _, p := range pages {
		href := p.path
		if href == "" {
			href = "./"
		}
		v.Menu = append(v.Menu, menuItem{Href: href, Name: p.name, Title: p.title})
	}
	return v
}

func (db *Dashboard) servePage(name, title string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := db.newView(r, name, title)
		ctx, cancel := db.context(r)
		defer cancel()
		q := r.URL.Query()
		var err error
		switch name {
		case "jobs":
			err = db.readJobs(ctx, q, v)
		case "workflows":
			if id := q.Get("id"); id != "" {
				v.Flow, err = db.flows.Get(ctx, id)
			} else if st, name := q.Get("state"), q.Get("name"); st != "" || name != "" {
				err = db.readFlows(ctx, st, name, v)
			}
		case "config":
			if v.Key = q.Get("key"); v.Key != "" {
				v.History, err = db.sets.History(ctx, v.Key, 50)
			}
		}
		if err != nil {
			v.Err = err.Error()
		}
		db.render(w, http.StatusOK, "page", v)
	})
}

func (db *Dashboard) render(w http.ResponseWriter, status int, name string, v any) {
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, name, v); err != nil {
		http.Error(w, "dashboard: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// serveLive streams a page's live part as server-sent events: one "snapshot" event of
// HTML each time the shared refresher reads the database. Viewers add no reads.
func (db *Dashboard) serveLive(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("page")
	if !slices.ContainsFunc(pages, func(p struct{ path, name, title string }) bool { return p.name == name }) {
		http.Error(w, fmt.Sprintf("dashboard: no page %q", name), http.StatusNotFound)
		return
	}
	canAct := whoOf(r.Context()).role == operator
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	snaps, leave := db.hub.join()
	defer leave()
	for {
		select {
		case s, ok := <-snaps:
			if !ok {
				return // the dashboard closed
			}
			html, err := db.renderLive(s, name, canAct)
			if err != nil {
				db.cfg.Logger.Error("dashboard: rendering a live update", "page", name, "err", err)
				return
			}
			fmt.Fprintf(w, "event: snapshot\nid: %d\n", s.Seq)
			for line := range strings.SplitSeq(html, "\n") {
				fmt.Fprintf(w, "data: %s\n", line)
			}
			fmt.Fprint(w, "\n")
			if err := rc.Flush(); err != nil {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

// liveCache keeps the live parts rendered from the latest snapshot, so twenty viewers of a
// page cost one rendering.
type liveCache struct {
	mu   sync.Mutex // protects seq and html
	seq  int64
	html map[string]string // by page and role
}

func (db *Dashboard) renderLive(s *snapshot, page string, canAct bool) (string, error) {
	c := &db.live
	key := page + "/" + strconv.FormatBool(canAct)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seq != s.Seq {
		c.seq, c.html = s.Seq, map[string]string{}
	}
	if h, ok := c.html[key]; ok {
		return h, nil
	}
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, "live-"+page, &view{Page: page, Snap: s, CanAct: canAct}); err != nil {
		return "", err
	}
	c.html[key] = b.String()
	return c.html[key], nil
}

// safeBack returns where an action sends the browser back to: one of the dashboard's
// pages, relative, with its query; never another site.
func safeBack(back string) string {
	path, query, _ := strings.Cut(back, "?")
	if !slices.ContainsFunc(pages, func(p struct{ path, name, title string }) bool { return p.path == path }) {
		return "./"
	}
	if path == "" {
		path = "./"
	}
	if query == "" {
		return path
	}
	vals, err := url.ParseQuery(query)
	if err != nil {
		return path
	}
	vals.Del("done")
	if len(vals) == 0 {
		return path
	}
	return path + "?" + vals.Encode()
}

// withDone adds what an action did to the page it sends the browser back to.
func withDone(back, done string) string {
	sep := "?"
	if strings.Contains(back, "?") {
		sep = "&"
	}
	return back + sep + "done=" + url.QueryEscape(done)
}

// errStatus is the HTTP status of an action's error.
func errStatus(err error) int {
	switch {
	case errors.Is(err, errBadInput):
		return http.StatusBadRequest
	case errors.Is(err, jobs.ErrNotFound), errors.Is(err, workflow.ErrNotFound), errors.Is(err, settings.ErrNotFound),
		errors.Is(err, events.ErrNoDeadLetter), errors.Is(err, events.ErrNoGroup):
		return http.StatusNotFound
	}
	return http.StatusConflict
}
