package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// drawnReport is what the browser measured of the page.
type drawnReport struct {
	TimelineWidth float64 `json:"timelineWidth"`
	Bands         int     `json:"bands"`
	BandWidth     float64 `json:"bandWidth"`
	Lines         int     `json:"lines"`
	Invariants    int     `json:"invariants"`
	Verdict       string  `json:"verdict"`
}

// chromiumPath is where Debian's chromium package (and CI, which installs it) puts the
// browser the report is opened in.
const chromiumPath = "/usr/bin/chromium"

// The report of a short `twice check` opened in headless Chromium: the page draws its
// timeline, with fault bands, and its invariants table, and a screenshot of it is kept in
// .ci/out/check-report.png for a person to look at.
func TestCheckReportInBrowser(t *testing.T) {
	needChromium(t)
	page := filepath.Join(t.TempDir(), "check-report.html")
	code, stdout, stderr := cli(t, nil, "check", "--store", "sqlite", "--duration", "3s", "--fault-every", "1s", "--report", page)
	// A violation is the checker's news, which TestRun reports; the page is written either way.
	if code != 0 && code != exitViolations {
		t.Fatalf("twice check: exit %d\n%s%s", code, stdout, stderr)
	}
	// Sizes from the layout, not only elements in the DOM: the charts were drawn.
	drawn := inBrowser[drawnReport](t, page, "#invariants", `(() => {
		const tl = document.querySelector("svg#timeline");
		const bands = document.querySelectorAll("svg#timeline rect.fault:not(.shade)");
		return {
			timelineWidth: tl ? tl.getBoundingClientRect().width : 0,
			bands: bands.length,
			bandWidth: bands.length ? bands[0].getBoundingClientRect().width : 0,
			lines: document.querySelectorAll("svg#timeline polyline").length,
			invariants: document.querySelectorAll("table#invariants tr.invariant").length,
			verdict: document.querySelector("#verdict").textContent,
		};
	})()`, "check-report.png")
	if drawn.TimelineWidth < 500 || drawn.Lines == 0 {
		t.Errorf("the timeline is not drawn: %+v", drawn)
	}
	if drawn.Bands == 0 || drawn.BandWidth <= 0 {
		t.Errorf("no fault band on the timeline: %+v", drawn)
	}
	if drawn.Invariants < 10 || drawn.Verdict == "" {
		t.Errorf("the invariants table or the verdict is missing: %+v", drawn)
	}
}

// drawnBench is what the browser measured of a benchmark's page.
type drawnBench struct {
	ChartWidth float64 `json:"chartWidth"`
	Points     []int   `json:"points"` // of each line of the throughput chart
	Latency    int     `json:"latency"`
	Figures    int     `json:"figures"`
}

// The page of a short `twice bench events` on SQLite, opened in headless Chromium: its
// throughput chart draws publishing and consuming side by side, its latency chart draws
// lines, its figures are there, and a screenshot is kept in .ci/out/bench-report.png.
func TestBenchReportInBrowser(t *testing.T) {
	needChromium(t)
	dir := t.TempDir()
	page := filepath.Join(dir, "bench-report.html")
	code, stdout, stderr := cli(t, nil, "bench", "events", "--dsn", "sqlite:"+filepath.Join(dir, "bench.db"),
		"--events", "3000", "--latency-events", "200", "--rate", "400", "--report", page)
	if code != 0 {
		t.Fatalf("twice bench events: exit %d\n%s%s", code, stdout, stderr)
	}
	drawn := inBrowser[drawnBench](t, page, "#figures", `(() => {
		const chart = document.querySelector("svg#throughput-chart");
		return {
			chartWidth: chart ? chart.getBoundingClientRect().width : 0,
			points: Array.from(document.querySelectorAll("svg#throughput-chart polyline"), l => l.points.numberOfItems),
			latency: document.querySelectorAll("svg#latency-chart polyline").length,
			figures: document.querySelectorAll("table#figures tr").length,
		};
	})()`, "bench-report.png")
	if drawn.ChartWidth < 500 || len(drawn.Points) != 2 || slices.Min(drawn.Points) < 2 {
		t.Errorf("the throughput chart does not draw two lines, published and consumed: %+v", drawn)
	}
	if drawn.Latency == 0 || drawn.Figures < 5 {
		t.Errorf("the latency chart or the figures are missing: %+v", drawn)
	}
}

// needChromium skips a test without the browser, but where CI installs it, fails.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		// CI installs Chromium: there a missing browser is a broken setup, never a skip.
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s: %v; .ci/run installs the chromium package", chromiumPath, err)
		}
		t.Skipf("no %s (apt-get install chromium): the report is not opened in a browser", chromiumPath)
	}
}

// inBrowser opens the page at path in headless Chromium, waits until the element ready is
// visible, and returns what js, evaluated in the page, returns. It fails the test when the
// page asks the network for anything or reports an error (a script's exception, an error
// on the console or in the browser's log), and saves a screenshot of the whole page as
// .ci/out/shot for a person to look at.
func inBrowser[T any](t *testing.T, path, ready, js, shot string) T {
	t.Helper()
	ctx, watch := browser(t)
	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+path), chromedp.WaitVisible(ready)); err != nil {
		t.Fatal(err)
	}
	drawn, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: a PNG
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("opened, checked and captured in %v: %+v", time.Since(start).Round(time.Millisecond), drawn)
	watch.check(t)

	saveShot(t, shot, png)
	return drawn
}

// browser starts headless Chromium for the test, with a minute to do its work, and
// watches what the pages it opens ask of the network and report as errors.
func browser(t *testing.T) (context.Context, *pageWatch) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	ctx, cancel = chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
	)
	t.Cleanup(cancel)
	ctx, cancel = chromedp.NewContext(ctx)
	t.Cleanup(cancel)
	w := &pageWatch{}
	if err := chromedp.Listen(ctx, w.see); err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	return ctx, w
}

// pageWatch records every request a page makes and every error it reports.
type pageWatch struct {
	mu             sync.Mutex // protects requests and errs
	requests, errs []string
}

func (w *pageWatch) see(ev any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		w.requests = append(w.requests, e.Request.URL)
	case *cdpruntime.EventExceptionThrown:
		msg := e.ExceptionDetails.Text
		if x := e.ExceptionDetails.Exception; x != nil {
			msg += " " + x.Description
		}
		w.errs = append(w.errs, "exception: "+msg)
	case *cdpruntime.EventConsoleAPICalled:
		if e.Type == cdpruntime.ConsoleAPICalledTypeError {
			w.errs = append(w.errs, "console.error")
		}
	case *cdplog.EventEntryAdded:
		if e.Entry.Level == cdplog.EntryLevelError {
			w.errs = append(w.errs, "log: "+e.Entry.Text)
		}
	}
}

// check fails the test for every request but for the page's own file (or, when allowed
// names some, for URLs starting with one of them), and every error.
func (w *pageWatch) check(t *testing.T, allowed ...string) {
	t.Helper()
	if len(allowed) == 0 {
		allowed = []string{"file://"}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.requests) == 0 {
		t.Error("no request seen, not even the page's: the watch on the network is blind")
	}
	for _, u := range w.requests {
		if !slices.ContainsFunc(allowed, func(p string) bool { return strings.HasPrefix(u, p) }) {
			t.Errorf("the page asked the network for %s", u)
		}
	}
	for _, e := range w.errs {
		t.Errorf("the page reported an error: %s", e)
	}
}
