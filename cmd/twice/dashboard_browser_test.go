package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/dashseed"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/twicetest"
)

// The pages of `twice dashboard` in headless Chromium: each shows what the store holds, a
// new job appears on the jobs page without a reload (server-sent events), pausing a queue,
// retrying a discarded job and discarding it again by clicking change them, and a
// screenshot of each page is kept in .ci/out/dashboard-PAGE.png.
func TestDashboardInBrowser(t *testing.T) {
	needChromium(t)
	svc := dashseed.Open(t, twicetest.SQLite, 1)
	node := svc.Nodes[0]
	// A failing check, run as a probe would, and requests: the instance reports them with
	// its heartbeat, and the dashboard's process shows them.
	if err := node.Health().Register("payments", 0, func(context.Context) error { return errors.New("payments: connection refused") }); err != nil {
		t.Fatal(err)
	}
	node.Health().Report(context.Background())
	node.CountRequest(200)
	node.CountRequest(503)
	base, log := startDashboard(t, node, "--interval", "200ms")
	ctx, watch := browser(t)

	// open loads a page, waits for its live part, and returns what js evaluates to.
	open := func(path, js string) string {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(base+path), chromedp.WaitVisible("#live")); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return got
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		saveShot(t, "dashboard-"+name+".png", png)
	}
	// eventually evaluates js until it returns want, without reloading the page.
	eventually := func(what, js, want string) {
		t.Helper()
		var got string
		testnode.Eventually(t, 30*time.Second, what, func() bool {
			var err error
			if got, err = chromedp.Run(ctx, chromedp.Evaluate[string](js)); err != nil {
				t.Fatal(err)
			}
			return got == want
		})
	}

	// click clicks the element sel finds in one evaluation in the page, waiting for it to be
	// there. The live region is replaced whenever a snapshot arrives; chromedp.Click finds
	// the node and then clicks it, and lost it when a snapshot came in between (CI: "Could
	// not find node with given id").
	click := func(sel string) {
		t.Helper()
		eventually("a click on "+sel, fmt.Sprintf(`(b => b ? (b.click(), "clicked") : "missing")(document.querySelector(%q))`, sel), "clicked")
	}
	text := func(sel string) string {
		return fmt.Sprintf(`(document.querySelector(%q) || {textContent: "missing"}).textContent.trim()`, sel)
	}
	if got := open("", `Array.from(document.querySelectorAll("tr.member"), r => r.dataset.id).join(",")`); got != node.ID() {
		t.Errorf("the cluster page lists instances %q, want %s", got, node.ID())
	}
	eventually("the leader on the cluster page", text("#leader"), node.ID())
	eventually("the instance's availability on the cluster page", text("tr.member td.avail"), "50.00% of 2 (1 failed)")
	eventually("the instance's failing check on the cluster page", text("tr.member td.health span.state"), "failing: payments")
	ms, err := twice.Members(context.Background(), node.Store(), node.Service())
	if err != nil || len(ms) != 1 || ms[0].Report == nil || ms[0].Report.Requests.String() != "50.00% of 2 (1 failed)" {
		t.Errorf("the store holds %+v, %v", ms, err)
	}
	shot("cluster")

	if got := open("jobs", text(`tr.queue[data-queue="mail"] td.available`)); got != fmt.Sprint(dashseed.MailJobs) {
		t.Errorf("the jobs page shows %s mail jobs available, want %d", got, dashseed.MailJobs)
	}
	// A job enqueued now appears without a reload, from the shared snapshot.
	if _, err := node.Jobs().Enqueue(context.Background(), dashseed.Mail{To: "late@example.com"}, nil); err != nil {
		t.Fatal(err)
	}
	eventually("the new job counted live", text(`tr.queue[data-queue="mail"] td.available`), fmt.Sprint(dashseed.MailJobs+1))
	shot("jobs")

	// Pause the default queue, so that the retried job waits there to be seen.
	click(`tr.queue[data-queue="default"] button`)
	if err := chromedp.Do(ctx, chromedp.WaitVisible("#done")); err != nil {
		t.Fatal(err)
	}
	eventually("the default queue paused", text(`tr.queue[data-queue="default"] td .state`), "paused")

	row := fmt.Sprintf("#job-%d", svc.Discarded)
	if got := open("jobs?kind=fail", `document.querySelector("`+row+`").dataset.state`); got != "discarded" {
		t.Fatalf("the failed job is %s on the page, want discarded", got)
	}
	click(row + " button.retry")
	if err := chromedp.Do(ctx, chromedp.WaitVisible("#done")); err != nil {
		t.Fatal(err)
	}
	if got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("`+row+`").dataset.state`)); err != nil || got != "available" {
		t.Errorf("after the retry the page shows the job %s (%v), want available", got, err)
	}
	shot("jobs-retried")
	if j, err := node.Jobs().Get(context.Background(), svc.Discarded); err != nil || j.State != jobs.Available {
		t.Errorf("the retried job: %+v, %v", j, err)
	}
	// Discard it again: it waits in the paused queue, neither running nor finished.
	// The page it came from shows #done already: wait for the job's new state instead.
	click(row + " button.discard")
	eventually("the discarded job on the page", `(document.querySelector("`+row+`") || {dataset: {}}).dataset.state || ""`, "discarded")
	if j, err := node.Jobs().Get(context.Background(), svc.Discarded); err != nil || j.State != jobs.Discarded ||
		!strings.HasPrefix(j.LastError, "discarded by hand: from the dashboard by ") {
		t.Errorf("the discarded job: %+v, %v", j, err)
	}
	if !strings.Contains(log.String(), "action=job-retry") || !strings.Contains(log.String(), "action=queue-pause") ||
		!strings.Contains(log.String(), "action=job-discard") {
		t.Errorf("the actions are not logged:\n%s", log)
	}

	if got := open("workflows", `document.querySelector('tr.workflow[data-id="`+dashseed.Workflow+`"]').dataset.state`); got != "completed" {
		t.Errorf("the workflows page shows %s %q, want completed", dashseed.Workflow, got)
	}
	shot("workflows")
	if got := open("workflows?id="+dashseed.Workflow, text("#steps td:nth-child(2)")); got != "reserve" {
		t.Errorf("the workflow's page shows the step %q, want reserve", got)
	}
	if got := open("events", text("#groups th")); got != "Consumer group" {
		t.Errorf("the events page: %q", got)
	}
	topic := func(name string) string { return text(`tr.topic[data-topic="` + name + `"] td.events`) }
	if got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](topic(dashseed.Topic)+` + "/" + `+topic(dashseed.OtherTopic))); got != fmt.Sprintf("%d/1", dashseed.PlacedEvents) {
		t.Errorf("the events page counts %s events in %s/%s, want %d/1", got, dashseed.Topic, dashseed.OtherTopic, dashseed.PlacedEvents)
	}
	owners := `Array.from(document.querySelectorAll('table.partitions[data-group="` + dashseed.Group + `"] td.owner'), td => td.textContent).join(",")`
	if got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](owners)); got != strings.TrimSuffix(strings.Repeat(node.ID()+",", dashseed.Partitions), ",") {
		t.Errorf("the events page shows the owners of %s's partitions as %q, want %s on each of %d", dashseed.Group, got, node.ID(), dashseed.Partitions)
	}
	// Replay one dead letter by clicking (and confirming): only it leaves the list.
	svc.Cure(svc.Dead[0])
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(window.confirm = () => true, "")`)); err != nil {
		t.Fatal(err)
	}
	click(fmt.Sprintf(`tr.dead-letter[data-event="%d"] button.replay-one`, svc.Dead[0]))
	if err := chromedp.Do(ctx, chromedp.WaitVisible("#done")); err != nil {
		t.Fatal(err)
	}
	eventually("the replayed dead letter gone from the page", `Array.from(document.querySelectorAll("tr.dead-letter"), r => r.dataset.event).join(",")`, fmt.Sprint(svc.Dead[1]))
	if svc.Handled(svc.Dead[0]) != 1 || svc.Handled(svc.Dead[1]) != 0 {
		t.Errorf("after replaying dead letter %d: handled %d and %d times", svc.Dead[0], svc.Handled(svc.Dead[0]), svc.Handled(svc.Dead[1]))
	}
	shot("events")
	if got := open("cron", text("#schedules th")); got != "Name" {
		t.Errorf("the cron page: %q", got)
	}
	shot("cron")
	if got := open("config", text(`tr.setting[data-key="`+dashseed.Setting+`"] code`)); got != "true" {
		t.Errorf("the config page shows %s = %q, want true", dashseed.Setting, got)
	}
	shot("config")
	if got := open("locks", text("#locks tr.lock td:nth-child(2)")); got != node.ID() {
		t.Errorf("the locks page shows the leader %q, want %s", got, node.ID())
	}
	shot("locks")
	if got := open("presence", text("#online")+` + "/" + `+text("#sessions")); got != "1/1" {
		t.Errorf("the sessions page shows %s users online / live sessions, want 1/1", got)
	}
	shot("presence")
	watch.check(t, base)
}
