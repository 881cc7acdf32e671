package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testnode"
)

// `twice demo --for 20s` builds the shop, runs it three times behind the proxy, and exits 0
// only after its own check of the pages through the proxy passed: log in, catalogue, an
// order placed once under a resent Idempotency-Key, its confirmation, an If-Match edit, its
// fulfilment workflow, its sale counted once, a chat message delivered live over the hub,
// a banner on two instances, a restock, the metrics, and a cart owned by one instance, to
// which the others forward its requests, checked out into orders.
func TestDemoShop(t *testing.T) {
	t.Parallel()
	args := []string{"demo", "--for", "20s", "--port", "0"}
	if os.Getenv(twice.EnvDSN) != "" { // the demo would use it; the test wants its own file
		args = append(args, "--dsn", "sqlite:"+filepath.Join(t.TempDir(), "shop.db"))
	}
	code, out, stderr := cli(t, nil, args...)
	if code != 0 {
		t.Fatalf("twice demo: exit %d\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{"the shop runs three times behind http://127.0.0.1:", "placed order", "the same order, placed once",
		"Confirmed at", "is refused (412)", "fulfilment workflow completed", "counts its sale once", "reached, live, a page connected to instance",
		"a banner saved as a setting shows on the pages of instances", "restocked under", "/metrics serves",
		"forwarded it to the cart's owner", "the cart holds 2 + 1 units", "checked out: the cart became 2 orders, once",
		"every check passed; pages served by instances"} {
		if !strings.Contains(out, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out)
		}
	}
}

// Under chaos (an instance killed or paused every second), the shop's pages still pass the
// demo's check: each step is tried again on another instance, the order under its key is
// placed once, its confirmation job and fulfilment workflow are rescued from a killed
// instance, its sale is counted once, the chat delivers over a connection to whichever
// instance is up, and the cart keeps what was added as its partition moves from a killed
// owner to another instance.
func TestDemoShopUnderChaos(t *testing.T) {
	t.Parallel()
	code, out, stderr := cli(t, nil, "demo", "--for", "8s", "--chaos", "1s", "--port", "0",
		"--dsn", "sqlite:"+filepath.Join(t.TempDir(), "shop.db"))
	if code != 0 {
		t.Fatalf("twice demo --chaos: exit %d\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{"chaos: SIG", "the same order, placed once", "Confirmed at", "fulfilment workflow completed",
		"counts its sale once", "reached, live", "shows on the pages of instances", "the cart holds 2 + 1 units",
		"checked out: the cart became 2 orders, once", "every check passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out)
		}
	}
}

// The shop's check fails when a page does: a proxy with no shop behind it is no shop.
func TestDemoShopCheckFails(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := checkShop(ctx, "http://127.0.0.1:1", &out); err == nil || !strings.Contains(err.Error(), "log in") {
		t.Fatalf("a check against nothing: %v\n%s", err, out.String())
	}
}

// The demo shop in headless Chromium, as a person uses it: log in, order from the
// catalogue, and see the confirmation job's effect on the order's page, served by one of
// the three instances behind the proxy; then talk in the support chat with a second
// person, in another browser context, whose page is connected to another instance.
// Screenshots of the confirmed order, both chats, the catalogue (with its best seller) and
// the cart (naming its owner) are kept in .ci/out/shop-*.png.
func TestShopInBrowser(t *testing.T) {
	needChromium(t)
	t.Parallel()
	var logs testnode.Buffer
	ctx := context.Background()
	shop, err := startShop(ctx, shopOptions{dsn: "sqlite:" + filepath.Join(t.TempDir(), "shop.db"), out: &logs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		shop.stop()
		if t.Failed() {
			t.Logf("the shop's output:\n%s", logs.String())
		}
	})
	bctx, watch := browser(t)
	err = chromedp.Do(bctx,
		chromedp.Navigate(shop.url+"/"),
		chromedp.WaitVisible("#name"),
		chromedp.SendKeys("#name", "browser"),
		chromedp.Click("#login"),
		chromedp.WaitVisible("#product-2 button.order"),
		chromedp.Click("#product-2 button.order"),
		chromedp.WaitVisible("#version"),
	)
	if err != nil {
		t.Fatalf("log in and order: %v\n%s", err, logs.String())
	}
	confirmed := false
	for deadline := time.Now().Add(30 * time.Second); !confirmed && time.Now().Before(deadline); {
		if confirmed, err = chromedp.Run(bctx, chromedp.Evaluate[bool](`document.querySelector("#confirmation") !== null`)); err != nil {
			t.Fatal(err)
		}
		if !confirmed {
			time.Sleep(200 * time.Millisecond)
			if err := chromedp.Do(bctx, chromedp.Reload(), chromedp.WaitVisible("#version")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !confirmed {
		t.Fatal("the order's page never showed its confirmation")
	}
	text, err := chromedp.Run(bctx, chromedp.Text("#confirmation"))
	if err != nil {
		t.Fatal(err)
	}
	footer, err := chromedp.Run(bctx, chromedp.Text("#served-by"))
	if err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "Confirmed at") || !strings.HasPrefix(footer, "instance ") {
		t.Errorf("confirmation %q, footer %q", text, footer)
	}
	t.Logf("%s; page served by %s", text, footer)
	saveShot(t, "shop-order.png", png)

	// The support chat, between two people in two browser contexts (two cookie jars), the
	// page of one connected to instance 1 and the other's to instance 2: what one sends
	// reaches the other live, through the realtime hub, and each sees the other online.
	var direct [2]string
	for i, in := range shop.r.Instances()[:2] {
		direct[i] = fmt.Sprintf("http://127.0.0.1:%d", in.Port)
	}
	other, cancel := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	defer cancel()
	if err := chromedp.Listen(other, watch.see); err != nil {
		t.Fatal(err)
	}
	err = chromedp.Do(other,
		chromedp.Navigate(direct[1]+"/login"),
		chromedp.WaitVisible("#name"),
		chromedp.SendKeys("#name", "support"),
		chromedp.Click("#login"),
		chromedp.WaitVisible("#product-1"),
		chromedp.Navigate(direct[1]+"/chat"),
		chromedp.WaitVisible("#body"),
	)
	if err != nil {
		t.Fatalf("the second person's chat: %v\n%s", err, logs.String())
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(direct[0]+"/chat"), chromedp.WaitVisible("#body")); err != nil {
		t.Fatalf("the chat: %v", err)
	}
	for _, c := range []context.Context{bctx, other} {
		inBrowserEventually(t, c, `document.querySelector("#live").dataset.status === "open"`)
	}
	say := func(c context.Context, text string) {
		t.Helper()
		if err := chromedp.Do(c, chromedp.SendKeys("#body", text), chromedp.Click("#send")); err != nil {
			t.Fatalf("sending %q: %v", text, err)
		}
	}
	shows := func(text string) string {
		return `[...document.querySelectorAll("#messages p.msg")].some(p => p.textContent.includes(` + strconv.Quote(text) + `))`
	}
	say(bctx, "where is my kettle?")
	inBrowserEventually(t, other, shows("browser where is my kettle?"))
	say(other, "on its way: TW123")
	inBrowserEventually(t, bctx, shows("support on its way: TW123"))
	inBrowserEventually(t, bctx, `document.querySelector("#online").textContent === "browser, support"`)
	inBrowserEventually(t, other, `document.querySelector("#online").textContent === "browser, support"`)
	for _, p := range []struct {
		ctx  context.Context
		shot string
	}{{bctx, "shop-chat.png"}, {other, "shop-chat-2.png"}} {
		png, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		saveShot(t, p.shot, png)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(shop.url+"/catalogue"), chromedp.WaitVisible("#best-seller")); err != nil {
		t.Fatalf("the catalogue: %v", err)
	}
	png, err = chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveShot(t, "shop-catalogue.png", png)

	// The cart, which one instance owns and the others forward to.
	if err := chromedp.Do(bctx, chromedp.Click("#product-1 button.add"), chromedp.WaitVisible("#cart-owner")); err != nil {
		t.Fatalf("adding to the cart: %v\n%s", err, logs.String())
	}
	owner, err := chromedp.Run(bctx, chromedp.Text("#cart-owner"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(owner, "instance ") {
		t.Errorf("the cart's owner: %q", owner)
	}
	png, err = chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveShot(t, "shop-cart.png", png)
	watch.check(t, shop.url+"/", direct[0]+"/", direct[1]+"/", "data:")
}

// inBrowserEventually waits until js is true in the page, through navigations (an
// evaluation in a page being replaced fails, and is tried again).
func inBrowserEventually(t *testing.T, ctx context.Context, js string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js)); err == nil && ok {
			return
		}
	}
	t.Fatalf("not within 30s in the page: %s", js)
}

// saveShot writes a screenshot to .ci/out/name, in the repository's root, for a person to
// look at.
func saveShot(t *testing.T, name string, png []byte) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("the repository's root is not %s: %v", root, err)
	}
	dir := filepath.Join(root, ".ci", "out")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", file, len(png))
}
