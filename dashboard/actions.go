package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/settings"
)

// errBadInput is an action's form that does not make sense.
var errBadInput = errors.New("dashboard: bad input")

// serveAction runs one action (a POST from the dashboard's own pages), logs it with who
// asked, and sends the browser back to the page it came from.
func (db *Dashboard) serveAction(w http.ResponseWriter, r *http.Request) {
	caller := whoOf(r.Context())
	if caller.role != operator {
		http.Error(w, "dashboard: read-only access: actions are refused", http.StatusForbidden)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "dashboard: "+err.Error(), http.StatusBadRequest)
		return
	}
	f := r.PostForm
	op, back := f.Get("op"), safeBack(f.Get("back"))
	ctx, cancel := db.context(r)
	defer cancel()
	if op == "config-set" && f.Get("confirm") != "yes" {
		db.confirmSet(w, r, f)
		return
	}
	done, err := db.act(ctx, caller, op, f)
	log := db.cfg.Logger.With("who", caller.name, "action", op, "remote", r.RemoteAddr)
	if err != nil {
		log.Warn("dashboard: action failed", "form", redact(f), "err", err)
		v := db.newView(r, "error", "Action failed")
		v.Err = err.Error()
		v.Done = back // the page to go back to
		db.render(w, errStatus(err), "failed", v)
		return
	}
	log.Info("dashboard: action", "form", redact(f), "done", done)
	// Location as is, relative: the browser resolves it against the URL it asked for, which
	// holds the prefix the dashboard is mounted under (http.Redirect would resolve it
	// against the path left after StripPrefix).
	w.Header().Set("Location", withDone(back, done))
	w.WriteHeader(http.StatusSeeOther)
}

// redact is the form as logged: what was asked, without the page to go back to.
func redact(f url.Values) string {
	c := url.Values{}
	for k, v := range f {
		if k != "back" && k != "op" {
			c[k] = v
		}
	}
	return c.Encode()
}

// act runs op and says what it did.
func (db *Dashboard) act(ctx context.Context, caller who, op string, f url.Values) (string, error) {
	switch op {
	case "job-retry", "job-cancel", "job-discard":
		id, err := strconv.ParseInt(f.Get("id"), 10, 64)
		if err != nil || id < 1 {
			return "", fmt.Errorf("%w: %q is not a job id", errBadInput, f.Get("id"))
		}
		switch op {
		case "job-retry":
			return fmt.Sprintf("job %d retried", id), db.jobs.Retry(ctx, id)
		case "job-discard":
			return fmt.Sprintf("job %d discarded", id), db.jobs.Discard(ctx, id, discardReason(caller, f))
		}
		return fmt.Sprintf("job %d cancelled", id), db.jobs.Cancel(ctx, id)
	case "jobs-retry-matching", "jobs-cancel-matching", "jobs-discard-matching":
		return db.actMatching(ctx, caller, op, f)
	case "queue-pause", "queue-resume":
		q := f.Get("queue")
		if q == "" {
			return "", fmt.Errorf("%w: no queue", errBadInput)
		}
		if op == "queue-pause" {
			return "queue " + q + " paused", db.jobs.PauseQueue(ctx, q)
		}
		return "queue " + q + " resumed", db.jobs.ResumeQueue(ctx, q)
	case "workflow-cancel":
		id := f.Get("id")
		if id == "" {
			return "", fmt.Errorf("%w: no workflow id", errBadInput)
		}
		return "workflow " + id + ": cancellation requested", db.flows.Cancel(ctx, id)
	case "workflow-retry":
		id := f.Get("id")
		if id == "" {
			return "", fmt.Errorf("%w: no workflow id", errBadInput)
		}
		return "workflow " + id + ": retried", db.flows.Retry(ctx, id)
	case "events-replay":
		group := f.Get("group")
		from, err := strconv.ParseInt(f.Get("from"), 10, 64)
		if group == "" || err != nil || from < 1 {
			return "", fmt.Errorf("%w: replay needs a group and an event id", errBadInput)
		}
		return fmt.Sprintf("group %s replays from event %d", group, from),
			db.events.Replay(ctx, group, &events.ReplayOpts{FromID: from})
	case "events-replay-dead":
		group := f.Get("group")
		id, err := strconv.ParseInt(f.Get("id"), 10, 64)
		if group == "" || err != nil || id < 1 {
			return "", fmt.Errorf("%w: a dead letter's replay needs a group and an event id", errBadInput)
		}
		return fmt.Sprintf("group %s handles event %d again", group, id), db.events.ReplayDeadLetter(ctx, group, id)
	case "config-set":
		c, err := db.parseSet(f)
		if err != nil {
			return "", err
		}
		value, err := settings.Parse(settings.Type(c.Type), c.New)
		if err != nil {
			return "", fmt.Errorf("%w: %v", errBadInput, err)
		}
		s, err := db.sets.Set(ctx, c.Key, value, &settings.SetOpts{Actor: caller.name, IfVersion: &c.Version})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s set to %s (version %d)", s.Key, s.Text, s.Version), nil
	}
	return "", fmt.Errorf("%w: unknown action %q", errBadInput, op)
}

// maxMatching is the most jobs one retry, cancel or discard of a filter's jobs acts on.
const maxMatching = 1000

// actMatching retries, cancels or discards (as op says) the jobs the filter in f matches,
// newest first, at most maxMatching: one statement per job, the jobs package having no
// statement for many. The jobs that cannot be are skipped: running ones for a retry or a
// discard, waiting ones for a retry, finished ones for a cancel or a discard, and those
// that started or finished between the list and the discard.
func (db *Dashboard) actMatching(ctx context.Context, caller who, op string, f url.Values) (string, error) {
	v := &view{}
	p, err := jobParams(f, v)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errBadInput, err)
	}
	if !v.Filter.Any() {
		return "", fmt.Errorf("%w: acting on every job needs a filter", errBadInput)
	}
	p.Limit = maxMatching
	rows, err := db.jobs.List(ctx, p)
	if err != nil {
		return "", err
	}
	reason := discardReason(caller, f)
	done := 0
	for _, r := range rows {
		switch {
		case op == "jobs-retry-matching" && r.State != jobs.Running && r.State != jobs.Waiting:
			err = db.jobs.Retry(ctx, r.ID)
		case op == "jobs-cancel-matching" && !r.State.Finished():
			err = db.jobs.Cancel(ctx, r.ID)
		case op == "jobs-discard-matching" && !r.State.Finished() && r.State != jobs.Running:
			err = db.jobs.Discard(ctx, r.ID, reason)
			if errors.Is(err, jobs.ErrRunning) || errors.Is(err, jobs.ErrFinished) {
				continue
			}
		default:
			continue
		}
		if err != nil {
			return fmt.Sprintf("%d jobs done", done), fmt.Errorf("after %d of %d jobs: %w", done, len(rows), err)
		}
		done++
	}
	verb := map[string]string{"jobs-retry-matching": "retried", "jobs-cancel-matching": "cancelled", "jobs-discard-matching": "discarded"}[op]
	msg := fmt.Sprintf("%d of the %d jobs matching %s %s", done, len(rows), v.Filter.Query(), verb)
	if len(rows) == maxMatching {
		msg += fmt.Sprintf(" (at most %d at a time: there may be more)", maxMatching)
	}
	return msg, nil
}

// discardReason is the reason a discard from the dashboard records on its jobs: who asked,
// and why if the form says.
func discardReason(caller who, f url.Values) string {
	reason := "from the dashboard by " + caller.name
	if why := strings.TrimSpace(f.Get("reason")); why != "" {
		reason += ": " + why
	}
	return reason
}

// parseSet reads a setting's change from its form: the key, the new value's text, its
// type (the key's own for a key that exists) and, once confirmed, the version it applies to.
func (db *Dashboard) parseSet(f url.Values) (*confirmSet, error) {
	c := &confirmSet{Key: f.Get("key"), New: f.Get("value"), Type: f.Get("type")}
	if err := settings.CheckKey(c.Key); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadInput, err)
	}
	if f.Has("version") {
		v, err := strconv.ParseInt(f.Get("version"), 10, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%w: version %q", errBadInput, f.Get("version"))
		}
		c.Version = v
	}
	if c.Type == "" {
		return nil, fmt.Errorf("%w: a new key needs a type", errBadInput)
	}
	if _, err := settings.ParseType(c.Type); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadInput, err)
	}
	return c, nil
}

// confirmSet shows a setting's change, its old value beside the new one, with a button
// that makes it at the version shown: a change someone else made meanwhile fails it.
func (db *Dashboard) confirmSet(w http.ResponseWriter, r *http.Request, f url.Values) {
	ctx, cancel := db.context(r)
	defer cancel()
	if _, err := db.settingsList(ctx); err != nil {
		v := db.newView(r, "error", "Action failed")
		v.Err, v.Done = err.Error(), "config"
		db.render(w, http.StatusServiceUnavailable, "failed", v)
		return
	}
	db.setsMu.Lock()
	cur, exists := db.sets.Get(f.Get("key"))
	db.setsMu.Unlock()
	if exists {
		f.Set("type", string(cur.Type))
	}
	c, err := db.parseSet(f)
	if err == nil {
		c.Version = 0
		if exists {
			c.Old, c.Version = cur.Text, cur.Version
		}
		_, err = settings.Parse(settings.Type(c.Type), c.New)
	}
	if err != nil {
		v := db.newView(r, "error", "Action failed")
		v.Err, v.Done = err.Error(), "config"
		db.render(w, errStatus(fmt.Errorf("%w: %v", errBadInput, err)), "failed", v)
		return
	}
	v := db.newView(r, "config", "Config")
	v.Confirm = c
	db.render(w, http.StatusOK, "confirm", v)
}

// readJobs reads the jobs page's list, filtered by its query: one statement per page load,
// at the viewer's request, never on a timer.
func (db *Dashboard) readJobs(ctx context.Context, q url.Values, v *view) error {
	p, err := jobParams(q, v)
	if err != nil {
		return err
	}
	if b := q.Get("before"); b != "" {
		id, err := strconv.ParseInt(b, 10, 64)
		if err != nil {
			return fmt.Errorf("dashboard: before=%q is not a job id", b)
		}
		p.BeforeID, v.Filter.Before = id, id
	}
	v.Jobs, err = db.jobs.List(ctx, p)
	return err
}

// jobParams reads the jobs page's filter from q into v, and returns it as the jobs
// package's, 100 jobs a page.
func jobParams(q url.Values, v *view) (jobs.ListParams, error) {
	v.Filter = jobFilter{Queue: q.Get("queue"), Kind: q.Get("kind"), State: q.Get("state"), Tag: q.Get("tag"), Args: q.Get("args")}
	p := jobs.ListParams{Queue: v.Filter.Queue, Kind: v.Filter.Kind, Tag: v.Filter.Tag, Limit: 100}
	if v.Filter.Args != "" {
		p.Args = json.RawMessage(v.Filter.Args)
	}
	if v.Filter.State != "" {
		st, err := jobs.ParseState(v.Filter.State)
		if err != nil {
			return p, err
		}
		p.States = []jobs.State{st}
	}
	return p, nil
}
