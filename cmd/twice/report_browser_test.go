package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
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
// timeline, with fault bands, and its invariants table, asks for nothing over the network,
// and a screenshot of it is kept in .ci/out/check-report.png for a person to look at.
func TestCheckReportInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		// CI installs Chromium: there a missing browser is a broken setup, never a skip.
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s: %v; .ci/run installs the chromium package", chromiumPath, err)
		}
		t.Skipf("no %s (apt-get install chromium): the report is not opened in a browser", chromiumPath)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("the repository's root is not %s: %v", root, err)
	}

	page := filepath.Join(t.TempDir(), "check-report.html")
	code, stdout, stderr := cli(t, nil, "check", "--store", "sqlite", "--duration", "3s", "--fault-every", "1s", "--report", page)
	// A violation is the checker's news, which TestRun reports; the page is written either way.
	if code != 0 && code != exitViolations {
		t.Fatalf("twice check: exit %d\n%s%s", code, stdout, stderr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
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
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx)
	defer cancel()

	// Every request the page makes; the page's own file is the only one allowed.
	var mu sync.Mutex
	var requests []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			requests = append(requests, e.Request.URL)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	start := time.Now()
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+page), chromedp.WaitVisible("#invariants")); err != nil {
		t.Fatal(err)
	}
	// Sizes from the layout, not only elements in the DOM: the charts were drawn.
	drawn, err := chromedp.Run(ctx, chromedp.Evaluate[drawnReport](`(() => {
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
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: a PNG
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("opened, checked and captured in %v: %+v", time.Since(start).Round(time.Millisecond), drawn)
	if drawn.TimelineWidth < 500 || drawn.Lines == 0 {
		t.Errorf("the timeline is not drawn: %+v", drawn)
	}
	if drawn.Bands == 0 || drawn.BandWidth <= 0 {
		t.Errorf("no fault band on the timeline: %+v", drawn)
	}
	if drawn.Invariants < 10 || drawn.Verdict == "" {
		t.Errorf("the invariants table or the verdict is missing: %+v", drawn)
	}
	mu.Lock()
	if len(requests) == 0 {
		t.Error("no request seen, not even the page's: the watch on the network is blind")
	}
	for _, u := range requests {
		if !strings.HasPrefix(u, "file://") {
			t.Errorf("the page asked the network for %s", u)
		}
	}
	mu.Unlock()

	out := filepath.Join(root, ".ci", "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	png := filepath.Join(out, "check-report.png")
	if err := os.WriteFile(png, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", png, len(shot))
}
