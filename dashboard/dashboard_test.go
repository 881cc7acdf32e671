package dashboard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/dashseed"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/twicetest"
	"github.com/twicehq/twice/workflow"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	testnode.Eventually(t, 30*time.Second, what, ok)
}

// serve mounts d under /admin/ as an application would.
func serve(t *testing.T, d *Dashboard) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/admin/", http.StripPrefix("/admin", d))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(d.Close) // first: ends the live streams the server's Close would wait for
	return srv.URL + "/admin/"
}

// get fetches a page, failing the test unless the status is want.
func get(t *testing.T, c *http.Client, u string, want int, header ...string) string {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(t, c, req, want)
}

func do(t *testing.T, c *http.Client, req *http.Request, want int) string {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d\n%s", req.Method, req.URL, resp.StatusCode, want, b)
	}
	return string(b)
}

func post(t *testing.T, c *http.Client, u string, form url.Values, want int, header ...string) string {
	t.Helper()
	req, err := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(t, c, req, want)
}

func mustContain(t *testing.T, page, what string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(page, w) {
			t.Errorf("the %s page does not show %q", what, w)
		}
	}
}

// Every page shows what the store holds, and the actions change it.
func TestPages(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		f := dashseed.Open(t, s, 2)
		n := f.Nodes[0]
		d, err := Handler(n, Config{})
		if err != nil {
			t.Fatal(err)
		}
		base := serve(t, d)
		c := &http.Client{}

		page := get(t, c, base, 200)
		mustContain(t, page, "cluster", f.Nodes[0].ID(), f.Nodes[1].ID(), "2 instances", `id="health"`)
		waitFor(t, "a leader", func() bool { return n.IsLeader() || f.Nodes[1].IsLeader() })
		leader := n.ID()
		if f.Nodes[1].IsLeader() {
			leader = f.Nodes[1].ID()
		}
		d.hub.mu.Lock()
		d.hub.snap = nil // read again: the leader may have been elected since
		d.hub.mu.Unlock()
		mustContain(t, get(t, c, base, 200), "cluster", `<b id="leader">`+leader+`</b>`)

		page = get(t, c, base+"jobs", 200)
		mustContain(t, page, "jobs", `data-queue="mail"`, `<td class="n available">3</td>`, `<td class="n discarded"><a href="jobs?queue=default&amp;state=discarded">1</a>`,
			fmt.Sprintf(`id="job-%d" data-state="discarded"`, f.Discarded), "the mail server said no")
		page = get(t, c, base+"jobs?kind=mail", 200)
		if strings.Count(page, `class="job"`) != 3 || strings.Contains(page, `data-state="discarded"`) {
			t.Errorf("the kind filter shows other jobs:\n%s", page)
		}
		page = get(t, c, base+"jobs?"+url.Values{"args": {`{"To": "user1@example.com"}`}}.Encode(), 200)
		if strings.Count(page, `class="job"`) != 1 || !strings.Contains(page, "user1@example.com") {
			t.Errorf("the arguments filter shows %d jobs:\n%s", strings.Count(page, `class="job"`), page)
		}
		page = get(t, c, base+"jobs?state=nonsense", 200)
		mustContain(t, page, "jobs", `unknown state`)

		page = get(t, c, base+"workflows", 200)
		mustContain(t, page, "workflows", `data-id="order-42" data-state="completed"`)
		page = get(t, c, base+"workflows?id=order-42", 200)
		mustContain(t, page, "workflow", "reserve", "held 42")

		mustContain(t, get(t, c, base+"config", 200), "config", `data-key="checkout.enabled"`, "<code>true</code>")
		mustContain(t, get(t, c, base+"locks", 200), "locks", `id="locks"`)
		mustContain(t, get(t, c, base+"cron", 200), "cron", `id="schedules"`, `data-name="digest"`, `class="tick state-available"`)
		page = get(t, c, base+"events", 200)
		mustContain(t, page, "events", `id="groups"`, `data-group="billing"`,
			`<tr class="topic" data-topic="order.placed"><td>order.placed</td><td class="n events">5</td>`,
			`<tr class="topic" data-topic="order.shipped"><td>order.shipped</td><td class="n events">1</td>`,
			fmt.Sprintf(`<tr class="dead-letter" data-event="%d">`, f.Dead[0]), `value="events-replay-dead"`, dashseed.PoisonText)
		// Every partition of the group, with its owner: the first instance, the only one
		// subscribed.
		owners := fmt.Sprintf(`<td class="owner">%s</td>`, n.ID())
		if k := strings.Count(page, owners); k != dashseed.Partitions {
			t.Errorf("the events page names the owner of %d partitions, want %d:\n%s", k, dashseed.Partitions, page)
		}
		mustContain(t, get(t, c, base+"presence", 200), "presence", `<td class="n" id="sessions">1</td>`,
			`<td class="n" id="signed-in">1</td>`, `<td class="n" id="online">1</td>`, `data-room="lobby"`)

		// Retry the discarded job: it is available again.
		noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		post(t, noRedirect, base+"action", url.Values{"op": {"job-retry"}, "id": {fmt.Sprint(f.Discarded)}, "back": {"jobs?state=discarded"}}, http.StatusSeeOther)
		row, err := n.Jobs().Get(context.Background(), f.Discarded)
		if err != nil {
			t.Fatal(err)
		}
		if row.State == jobs.Discarded && row.Attempt <= 1 {
			t.Errorf("the retried job is %s after %d attempts", row.State, row.Attempt)
		}
		// Cancel, then retry, every job a filter matches.
		mustContain(t, get(t, c, base+"jobs?kind=mail", 200), "jobs", `id="retry-matching"`)
		if strings.Contains(get(t, c, base+"jobs", 200), `id="retry-matching"`) {
			t.Error("the jobs page offers to act on every job without a filter")
		}
		post(t, c, base+"action", url.Values{"op": {"jobs-cancel-matching"}}, http.StatusBadRequest)
		page = post(t, c, base+"action", url.Values{"op": {"jobs-cancel-matching"}, "kind": {"mail"}, "back": {"jobs?kind=mail"}}, 200)
		mustContain(t, page, "jobs", "3 of the 3 jobs matching kind=mail cancelled", `data-state="cancelled"`)
		page = post(t, c, base+"action", url.Values{"op": {"jobs-retry-matching"}, "kind": {"mail"}, "state": {"cancelled"}, "back": {"jobs?kind=mail"}}, 200)
		mustContain(t, page, "jobs", "3 of the 3 jobs matching kind=mail&amp;state=cancelled retried")
		if strings.Count(page, `data-state="available"`) != 3 {
			t.Errorf("after the retry of every cancelled mail job:\n%s", page)
		}
		// Discard one mail job, with a reason, then every one a filter matches: the one
		// discarded already is skipped.
		mail, err := n.Jobs().List(context.Background(), jobs.ListParams{Kind: "mail"})
		if err != nil {
			t.Fatal(err)
		}
		post(t, noRedirect, base+"action", url.Values{"op": {"job-discard"}, "id": {fmt.Sprint(mail[0].ID)}, "reason": {"bounced"},
			"back": {"jobs?kind=mail"}}, http.StatusSeeOther)
		if row, _ := n.Jobs().Get(context.Background(), mail[0].ID); row.State != jobs.Discarded ||
			!strings.HasPrefix(row.LastError, "discarded by hand: from the dashboard by ") || !strings.HasSuffix(row.LastError, ": bounced") {
			t.Errorf("the job discarded from the dashboard is %s, error %q", row.State, row.LastError)
		}
		post(t, c, base+"action", url.Values{"op": {"job-discard"}, "id": {fmt.Sprint(mail[0].ID)}}, http.StatusConflict)
		mustContain(t, get(t, c, base+"jobs?kind=mail", 200), "jobs", `id="discard-matching"`)
		page = post(t, c, base+"action", url.Values{"op": {"jobs-discard-matching"}, "kind": {"mail"}, "back": {"jobs?kind=mail"}}, 200)
		mustContain(t, page, "jobs", "2 of the 3 jobs matching kind=mail discarded")
		if strings.Count(page, `data-state="discarded"`) != 3 || strings.Contains(page, `value="job-discard"`) {
			t.Errorf("after the discard of every mail job:\n%s", page)
		}
		post(t, c, base+"action", url.Values{"op": {"jobs-discard-matching"}}, http.StatusBadRequest)
		page = post(t, c, base+"action", url.Values{"op": {"jobs-retry-matching"}, "kind": {"mail"}, "state": {"discarded"}, "back": {"jobs?kind=mail"}}, 200)
		mustContain(t, page, "jobs", "3 of the 3 jobs matching kind=mail&amp;state=discarded retried")
		// Pause a queue.
		post(t, noRedirect, base+"action", url.Values{"op": {"queue-pause"}, "queue": {"mail"}}, http.StatusSeeOther)
		stats, err := n.Jobs().Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range stats {
			if q.Queue == "mail" && !q.Paused {
				t.Error("the mail queue is not paused")
			}
		}
		// A setting is changed only once confirmed, at the version shown.
		page = post(t, c, base+"action", url.Values{"op": {"config-set"}, "key": {"checkout.enabled"}, "value": {"false"}}, 200)
		mustContain(t, page, "confirmation", `id="confirm"`, `<code>true</code> (version 1)`, `name="version" value="1"`)
		if v := n.Settings().Bool("checkout.enabled", true); !v {
			t.Fatal("the setting changed before its confirmation")
		}
		set := url.Values{"op": {"config-set"}, "confirm": {"yes"}, "key": {"checkout.enabled"}, "value": {"false"}, "type": {"bool"}, "version": {"1"}}
		post(t, noRedirect, base+"action", set, http.StatusSeeOther)
		if err := n.Settings().Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n.Settings().Bool("checkout.enabled", true) {
			t.Error("the confirmed setting did not change")
		}
		post(t, c, base+"action", set, http.StatusConflict) // confirmed at a version that has gone
		post(t, c, base+"action", url.Values{"op": {"job-retry"}, "id": {"x"}}, http.StatusBadRequest)
		post(t, c, base+"action", url.Values{"op": {"job-retry"}, "id": {"999999"}}, http.StatusNotFound)
		post(t, c, base+"action", url.Values{"op": {"nothing"}}, http.StatusBadRequest)
		// Another site's form is refused.
		post(t, c, base+"action", url.Values{"op": {"queue-resume"}, "queue": {"mail"}}, http.StatusForbidden,
			"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
	})
}

// Replaying one dead letter from its row hands that event to the group again and leaves
// the group's other dead letters dead, both events being handled now.
func TestReplayOneDeadLetter(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		f := dashseed.Open(t, s, 1)
		n := f.Nodes[0]
		logs := &testnode.Buffer{}
		d, err := Handler(n, Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		base := serve(t, d)
		c := &http.Client{}
		for _, id := range f.Dead {
			f.Cure(id)
		}
		replay, stays := f.Dead[0], f.Dead[1]
		page := post(t, c, base+"action", url.Values{"op": {"events-replay-dead"}, "group": {dashseed.Group}, "id": {fmt.Sprint(replay)}, "back": {"events"}}, 200)
		mustContain(t, page, "events", fmt.Sprintf("group %s handles event %d again", dashseed.Group, replay))
		testnode.EventuallyNil(t, 30*time.Second, func() error {
			dead, err := n.Events().DeadLetters(ctx, dashseed.Group, 0, 0)
			if err != nil || len(dead) != 1 || dead[0].EventID != stays || dead[0].Replaying || f.Handled(replay) != 1 {
				return fmt.Errorf("dead letters %+v (%v), event %d handled %d times", dead, err, replay, f.Handled(replay))
			}
			return nil
		})
		if k := f.Handled(stays); k != 0 {
			t.Errorf("the dead letter not replayed was handled %d times", k)
		}
		d.hub.mu.Lock()
		d.hub.snap = nil
		d.hub.mu.Unlock()
		page = get(t, c, base+"events", 200)
		mustContain(t, page, "events", fmt.Sprintf(`<tr class="dead-letter" data-event="%d">`, stays))
		if strings.Contains(page, fmt.Sprintf(`data-event="%d"`, replay)) {
			t.Errorf("the replayed dead letter is still listed:\n%s", page)
		}
		if !strings.Contains(logs.String(), "action=events-replay-dead") {
			t.Errorf("the action is not logged:\n%s", logs)
		}
		// Gone, unknown, malformed, and from another site: refused.
		post(t, c, base+"action", url.Values{"op": {"events-replay-dead"}, "group": {dashseed.Group}, "id": {fmt.Sprint(replay)}}, http.StatusNotFound)
		post(t, c, base+"action", url.Values{"op": {"events-replay-dead"}, "group": {dashseed.Group}, "id": {"x"}}, http.StatusBadRequest)
		post(t, c, base+"action", url.Values{"op": {"events-replay-dead"}, "id": {fmt.Sprint(stays)}}, http.StatusBadRequest)
		post(t, c, base+"action", url.Values{"op": {"events-replay-dead"}, "group": {dashseed.Group}, "id": {fmt.Sprint(stays)}}, http.StatusForbidden,
			"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
		if dead, err := n.Events().DeadLetters(ctx, dashseed.Group, 0, 0); err != nil || len(dead) != 1 || dead[0].Replaying {
			t.Errorf("after the refused actions: %+v, %v", dead, err)
		}
	})
}

// With a token, nothing is served without it; the read-only token sees pages without
// actions and cannot act.
func TestAccess(t *testing.T) {
	nodes := twicetest.Open(t, 1, nil)
	d, err := Handler(nodes[0], Config{Token: "s3cret", ReadOnlyToken: "look"})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, d)
	c := &http.Client{}
	get(t, c, base, http.StatusUnauthorized)
	get(t, c, base+"jobs", http.StatusUnauthorized, "Authorization", "Bearer wrong")
	get(t, c, base+"live?page=jobs", http.StatusUnauthorized)
	post(t, c, base+"action", url.Values{"op": {"queue-pause"}, "queue": {"q"}}, http.StatusUnauthorized)

	u, _ := url.Parse(base)
	u.User = url.UserPassword("alice", "s3cret")
	page := get(t, c, u.String()+"config", 200)
	mustContain(t, page, "config", `id="set"`, "alice")
	get(t, c, base+"config", 200, "Authorization", "Bearer s3cret")

	page = get(t, c, base+"config", 200, "Authorization", "Bearer look")
	mustContain(t, page, "config", "read-only")
	if strings.Contains(page, `id="set"`) {
		t.Error("the read-only role is shown the form that sets a setting")
	}
	post(t, c, base+"action", url.Values{"op": {"queue-pause"}, "queue": {"q"}}, http.StatusForbidden, "Authorization", "Bearer look")
	// Nor discard a job, one or by filter, nor see the buttons.
	r, err := nodes[0].Jobs().Enqueue(context.Background(), dashseed.Mail{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	page = get(t, c, base+"jobs?kind=mail", 200, "Authorization", "Bearer look")
	if !strings.Contains(page, fmt.Sprintf(`id="job-%d"`, r.ID)) || strings.Contains(page, `value="job-discard"`) ||
		strings.Contains(page, `id="discard-matching"`) {
		t.Errorf("the read-only role's jobs page:\n%s", page)
	}
	mustContain(t, get(t, c, base+"jobs?kind=mail", 200, "Authorization", "Bearer s3cret"), "jobs", `value="job-discard"`, `id="discard-matching"`)
	post(t, c, base+"action", url.Values{"op": {"job-discard"}, "id": {fmt.Sprint(r.ID)}}, http.StatusForbidden, "Authorization", "Bearer look")
	post(t, c, base+"action", url.Values{"op": {"jobs-discard-matching"}, "kind": {"mail"}}, http.StatusForbidden, "Authorization", "Bearer look")

	ro, err := Handler(nodes[0], Config{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	post(t, c, serve(t, ro)+"action", url.Values{"op": {"queue-pause"}, "queue": {"q"}}, http.StatusForbidden)
	post(t, c, serve(t, ro)+"action", url.Values{"op": {"job-discard"}, "id": {fmt.Sprint(r.ID)}}, http.StatusForbidden)
	if row, err := nodes[0].Jobs().Get(context.Background(), r.ID); err != nil || row.State != jobs.Available {
		t.Errorf("after the read-only discards the job is %v, %v", row, err)
	}

	if _, err := Handler(nodes[0], Config{Token: "a", ReadOnlyToken: "a"}); err == nil {
		t.Error("the same token for both roles is accepted")
	}
	if _, err := Handler(nodes[0], Config{Token: "a", NoAuth: true}); err == nil {
		t.Error("NoAuth with a token is accepted")
	}

	// Without a token, only this machine is served, unless NoAuth says the application
	// authenticates the route itself.
	for _, cfg := range []Config{{}, {NoAuth: true}} {
		d, err := Handler(nodes[0], cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		want := map[string]int{"127.0.0.1:1234": 200, "[::1]:1234": 200, "192.0.2.1:1234": http.StatusForbidden}
		if cfg.NoAuth {
			want["192.0.2.1:1234"] = 200
		}
		for addr, code := range want {
			r := httptest.NewRequest("GET", "/jobs", nil)
			r.RemoteAddr = addr
			w := httptest.NewRecorder()
			d.ServeHTTP(w, r)
			if w.Code != code {
				t.Errorf("%+v: a request from %s: %d, want %d", cfg, addr, w.Code, code)
			}
		}
	}
}

// counter counts the statements a store runs.
type counter struct{ n atomic.Int64 }

func (c *counter) Statement(string) { c.n.Add(1) }

// The database's cost does not grow with the viewers: the statements per refresh are the
// same with 1 and 20 live viewers, the viewers see no snapshot the one refresher did not
// read, and nothing is read once they have gone.
func TestViewersShareOneRefresher(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		f := dashseed.Open(t, s, 1)
		cfg := f.Nodes[0].Config()
		obs := &counter{}
		st, err := store.Open(context.Background(), cfg.DSN, &store.Options{Schema: cfg.Schema, Observer: obs})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		d, err := New(Target{Store: st, Service: "shop"}, Config{Interval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		base := serve(t, d)
		// The first read loads what later reads only check (the presence's view): out of
		// the count.
		d.hub.current(context.Background())
		perRefresh, perInterval := map[int]float64{}, map[int]float64{}
		for _, viewers := range []int{1, 20} {
			waitFor(t, "the refresher to stop", d.hub.idle)
			n0, r0 := obs.n.Load(), d.refreshes()
			window, spanned := watch(t, base, obs, viewers, 10)
			waitFor(t, "the refresher to stop after the viewers left", d.hub.idle)
			n, r := obs.n.Load()-n0, d.refreshes()-r0
			if spanned < 10 {
				t.Fatalf("%d viewers: 10 snapshots spanned %d refreshes", viewers, spanned)
			}
			perRefresh[viewers] = float64(n) / float64(r)
			perInterval[viewers] = float64(window) / float64(spanned)
			t.Logf("%d viewers: %d statements in %d refreshes; %d in the %d intervals every viewer watched",
				viewers, n, r, window, spanned)
		}
		// A refresh's statements depend a little on the seeded state, which the fixture's
		// nodes still move (a group's dead letters, its partitions' leases, the presence's
		// revision): one statement more or less. A read per viewer would be twenty times as many.
		if perRefresh[1] == 0 || perRefresh[20] > 1.1*perRefresh[1] {
			t.Errorf("statements per refresh: %v with 1 viewer, %v with 20", perRefresh[1], perRefresh[20])
		}
		// The windows may each count part of one more refresh: a tenth of a refresh per interval.
		if perInterval[20] > 1.5*perInterval[1] {
			t.Errorf("statements per interval: %.1f with 1 viewer, %.1f with 20", perInterval[1], perInterval[20])
		}
		n0 := obs.n.Load()
		time.Sleep(200 * time.Millisecond) // four intervals with no viewer
		if n := obs.n.Load() - n0; n != 0 {
			t.Errorf("%d statements with nobody watching", n)
		}
	})
}

// watch connects viewers to the live stream of the jobs page and, once every one has had
// a snapshot, counts the statements while the first sees the next window snapshots (a
// statement of the refresh after them may be counted too). It returns the count, and the
// refreshes the window spanned by the snapshots' sequence numbers.
func watch(t *testing.T, base string, obs *counter, viewers, window int) (statements, refreshes int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg, ready sync.WaitGroup
	ready.Add(viewers)
	errs := make(chan error, viewers)
	for i := range viewers {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", base+"live?page=jobs", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				ready.Done()
				errs <- err
				return
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(nil, 1<<20)
			got, seq := 0, int64(0)
			var n0, seq0 int64
			for sc.Scan() {
				if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
					seq, _ = strconv.ParseInt(id, 10, 64)
				}
				if !strings.HasPrefix(sc.Text(), "data: ") || !strings.Contains(sc.Text(), `data-queue="mail"`) {
					continue
				}
				switch got++; {
				case got == 1:
					ready.Done()
					if i > 0 {
						<-ctx.Done() // until the first viewer has counted
						return
					}
					ready.Wait()
				case got == 2:
					n0, seq0 = obs.n.Load(), seq
				case got == 2+window:
					statements, refreshes = obs.n.Load()-n0, seq-seq0
					cancel()
					return
				}
			}
			if ctx.Err() == nil {
				errs <- fmt.Errorf("viewer %d: the stream ended after %d snapshots: %v", i, got, sc.Err())
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return statements, refreshes
}

// A failed workflow is found by the workflows filter and retried from its page once its
// cause is fixed; a workflow that has not failed offers no retry.
func TestWorkflowFilterAndRetry(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		f := dashseed.Open(t, s, 1)
		n := f.Nodes[0]
		var fixed atomic.Bool
		wf, err := workflow.Register(n.Workflows(), workflow.Def[string]{Name: "refund", Run: func(wc *workflow.Context, in string) error {
			_, err := workflow.Do(wc, workflow.Step[string]{Name: "hold", Do: func(context.Context, string) (string, error) { return "held", nil },
				Compensate: func(context.Context, string, string) error {
					if !fixed.Load() {
						return errors.New("the bank is down")
					}
					return nil
				}, CompensateRetry: workflow.Retry{Attempts: 1}})
			if err != nil {
				return err
			}
			return workflow.Permanent(errors.New("refused"))
		}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wf.Start(ctx, "refund-1", "x"); err != nil {
			t.Fatal(err)
		}
		testnode.EventuallyNil(t, 30*time.Second, func() error {
			st, err := n.Workflows().Get(ctx, "refund-1")
			if err != nil || st.State != workflow.Failed {
				return fmt.Errorf("refund-1: %+v, %v", st, err)
			}
			return nil
		})
		d, err := Handler(n, Config{})
		if err != nil {
			t.Fatal(err)
		}
		base := serve(t, d)
		c := &http.Client{}
		page := get(t, c, base+"workflows?state=failed", 200)
		mustContain(t, page, "failed workflows", `data-id="refund-1" data-state="failed"`, `class="retry-flow"`)
		if strings.Contains(page, `data-id="order-42"`) {
			t.Errorf("the failed filter shows a completed workflow:\n%s", page)
		}
		mustContain(t, get(t, c, base+"workflows?name=order", 200), "workflows named order", `data-id="order-42"`)
		// The workflow's own page offers a retry once it failed, and not before.
		retryOf := func(id string) string {
			return fmt.Sprintf(`<input type="hidden" name="id" value="%s"><input type="hidden" name="back" value="workflows?id=%s"><button name="op" value="workflow-retry"`, id, id)
		}
		mustContain(t, get(t, c, base+"workflows?id=refund-1", 200), "a failed workflow's page", retryOf("refund-1"))
		if page := get(t, c, base+"workflows?id=order-42", 200); strings.Contains(page, retryOf("order-42")) || !strings.Contains(page, `id="flow"`) {
			t.Errorf("a completed workflow's page:\n%s", page)
		}
		get(t, c, base+"workflows?state=nonsense", 200)
		fixed.Store(true)
		noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		post(t, noRedirect, base+"action", url.Values{"op": {"workflow-retry"}, "id": {"refund-1"}, "back": {"workflows?id=refund-1"}}, http.StatusSeeOther)
		testnode.EventuallyNil(t, 30*time.Second, func() error {
			st, err := n.Workflows().Get(ctx, "refund-1")
			if err != nil || st.State != workflow.Compensated {
				return fmt.Errorf("after the retry, refund-1: %+v, %v", st, err)
			}
			return nil
		})
		post(t, c, base+"action", url.Values{"op": {"workflow-retry"}, "id": {"refund-1"}}, http.StatusConflict)
	})
}

// The cluster page shows every instance's health and availability as the store holds
// them, not only the local instance's: another instance's failing check and requests, and
// the service's availability summed over the instances.
func TestClusterPageShowsEveryInstance(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		ctx := context.Background()
		f := dashseed.Open(t, s, 2)
		local, other := f.Nodes[0], f.Nodes[1]
		if err := other.Health().Register("payments", 0, func(context.Context) error {
			return errors.New("payments: connection refused")
		}); err != nil {
			t.Fatal(err)
		}
		other.Health().Report(ctx) // as a probe would
		for _, code := range []int{200, 200, 404, 503} {
			other.CountRequest(code)
		}
		var members []twice.Member
		reported := func(total int64) {
			t.Helper()
			waitFor(t, "the other instance's report in the store", func() bool {
				var err error
				members, err = twice.Members(ctx, local.Store(), "shop")
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range members {
					if m.ID == other.ID() {
						return m.Report != nil && m.Report.Requests.Total == total && len(m.Report.Checks) > 0
					}
				}
				return false
			})
		}
		reported(4)
		d, err := Handler(local, Config{})
		if err != nil {
			t.Fatal(err)
		}
		base := serve(t, d)
		page := get(t, &http.Client{}, base, 200)
		var sum cluster.Requests
		for _, m := range members {
			row := memberRow(t, page, m.ID)
			if m.Report != nil {
				sum = sum.Add(m.Report.Requests)
			}
			if m.ID != other.ID() {
				continue
			}
			// What the store holds, as the page must show it.
			if r := m.Report.Requests; r != (cluster.Requests{Total: 4, Failed: 1}) {
				t.Fatalf("the store holds requests %+v for the other instance", r)
			}
			mustContain(t, row, "the other instance's row", `<td class="n avail">75.00% of 4 (1 failed)</td>`,
				`failing: payments</span>`, `title="payments: payments: connection refused"`,
				`<td class="n recent">—</td>`) // no earlier snapshot
		}
		// The sum over the instances as the store holds them (neither counts requests
		// after the look above).
		mustContain(t, page, "cluster", `<b id="availability">`+sum.String()+`</b>`, `id="avail-note"`)

		// Two more requests, one failed: the next snapshot shows them as recent, beside
		// the six since the start.
		other.CountRequest(200)
		other.CountRequest(500)
		reported(6)
		d.hub.mu.Lock()
		d.hub.snap = nil // read again now
		d.hub.mu.Unlock()
		page = get(t, &http.Client{}, base, 200)
		mustContain(t, memberRow(t, page, other.ID()), "the other instance's row", `<td class="n avail">66.67% of 6 (2 failed)</td>`,
			`<td class="n recent">50.00% of 2 (1 failed)</td>`)
		mustContain(t, page, "cluster", `<b id="recent">50.00% of 2 (1 failed)</b>`)
	})
}

// memberRow returns the row of instance id in the cluster page.
func memberRow(t *testing.T, page, id string) string {
	t.Helper()
	_, row, ok := strings.Cut(page, `<tr class="member" data-id="`+id+`">`)
	if !ok {
		t.Fatalf("the cluster page has no row for %s:\n%s", id, page)
	}
	row, _, _ = strings.Cut(row, "</tr>")
	return row
}

// The recent requests are those since the oldest snapshot within the window; an instance
// the earlier snapshot did not list, or listed with more requests, started since.
func TestRequestHistory(t *testing.T) {
	member := func(id string, total, failed int64) twice.Member {
		var m twice.Member
		m.ID, m.Report = id, &cluster.Report{Requests: cluster.Requests{Total: total, Failed: failed}}
		return m
	}
	var h requestHistory
	t0 := time.Now()
	if r := h.add(t0, []twice.Member{member("a", 10, 1), member("b", 50, 0)}); r.For != 0 || r.ByID != nil {
		t.Fatalf("recent without an earlier snapshot: %+v", r)
	}
	r := h.add(t0.Add(time.Minute), []twice.Member{member("a", 14, 2), member("b", 3, 1), member("c", 5, 0)})
	want := map[string]cluster.Requests{"a": {Total: 4, Failed: 1}, "b": {Total: 3, Failed: 1}, "c": {Total: 5}}
	if r.For != time.Minute || fmt.Sprint(r.ByID) != fmt.Sprint(want) || r.Total != (cluster.Requests{Total: 12, Failed: 2}) {
		t.Errorf("a minute later: %+v, want %v", r, want)
	}
	// The first snapshot leaves the window: the second is the base.
	r = h.add(t0.Add(recentWindow+30*time.Second), []twice.Member{member("a", 20, 2)})
	if r.For != recentWindow-30*time.Second || r.ByID["a"] != (cluster.Requests{Total: 6}) {
		t.Errorf("past the window: %+v", r)
	}
}

// Each job of the list offers what can be done to it: discard only while it neither runs
// nor has finished, cancel until it has finished, retry unless it runs or waits.
func TestJobButtons(t *testing.T) {
	want := map[jobs.State]string{jobs.Available: "retry cancel discard", jobs.Waiting: "cancel discard", jobs.Running: "cancel",
		jobs.Completed: "retry", jobs.Cancelled: "retry", jobs.Discarded: "retry"}
	v := &view{CanAct: true, Filter: jobFilter{Kind: "mail"}}
	for st := range want {
		v.Jobs = append(v.Jobs, &jobs.Row{ID: int64(len(v.Jobs) + 1), State: st})
	}
	var b strings.Builder
	if err := tmpl.ExecuteTemplate(&b, "jobs-list", v); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	mustContain(t, page, "jobs", `id="retry-matching"`, `id="cancel-matching"`, `id="discard-matching"`, `name="reason"`)
	for _, row := range v.Jobs {
		_, html, _ := strings.Cut(page, fmt.Sprintf(`id="job-%d"`, row.ID))
		html, _, _ = strings.Cut(html, "</tr>")
		var got []string
		for _, b := range []string{"retry", "cancel", "discard"} {
			if strings.Contains(html, `value="job-`+b+`"`) {
				got = append(got, b)
			}
		}
		if strings.Join(got, " ") != want[row.State] {
			t.Errorf("a %s job offers %q, want %q", row.State, got, want[row.State])
		}
	}
}
