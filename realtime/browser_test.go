package realtime_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/realtime"
	"github.com/twicehq/twice/store"
)

// chromiumPath is where Debian's chromium package (and CI, which installs it) puts the
// browser js/twice-realtime.js is tested in; the test skips where it is missing, and fails
// on CI.
const chromiumPath = "/usr/bin/chromium"

const page = `<!doctype html>
<html><head><script src="/twice-realtime.js"></script></head><body>
<script>
window.got = []; window.lost = []; window.statuses = []; window.subscribed = [];
const rt = new TwiceRealtime("/realtime?user=alice", {
  minDelay: 100,
  onMessage(room, data, pos) { window.got.push(room + ":" + data.text + "@" + pos.offset); },
  onLost(room, reason) { window.lost.push(room + ":" + reason); },
  onStatus(s) { window.statuses.push(s); },
});
const frame = rt._frame.bind(rt);
rt._frame = (f) => { if (f.type === "subscribed") window.subscribed.push(f); frame(f); };
rt.subscribe("lobby");
rt.subscribe("@user");
</script></body></html>`

// state is what the page has seen.
type state struct {
	Got        []string         `json:"got"`
	Lost       []string         `json:"lost"`
	Statuses   []string         `json:"statuses"`
	Subscribed []map[string]any `json:"subscribed"`
}

// The JavaScript client in Chromium connects, subscribes, receives a room's message and
// one sent to its user; the server then drops its connection; the client reconnects with
// backoff and resumes from its position: it gets what was published meanwhile, once, and
// is told of no loss.
func TestClientInChromium(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s: %v; .ci/run installs the chromium package", chromiumPath, err)
		}
		t.Skipf("no %s (apt-get install chromium): the client is not run in a browser", chromiumPath)
	}
	db := testdb.New(t, store.SQLite)
	node := testnode.Open(t, db, "chat", twice.Config{Realtime: realtime.Config{
		Authenticate: func(r *http.Request) (string, error) {
			if u := r.URL.Query().Get("user"); u != "" {
				return u, nil
			}
			return "", errors.New("no user")
		}}})
	hub := node.Realtime()
	mux := http.NewServeMux()
	mux.Handle("/realtime", hub.Handler())
	mux.Handle("/twice-realtime.js", hub.Script())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	})
	srv := httptest.NewUnstartedServer(mux)
	var mu sync.Mutex // protects upgraded
	var upgraded []net.Conn
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateHijacked { // a WebSocket
			mu.Lock()
			upgraded = append(upgraded, c)
			mu.Unlock()
		}
	}
	srv.Start()
	defer srv.Close()

	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	read := func() state {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[state](`({got: window.got, lost: window.lost, statuses: window.statuses, subscribed: window.subscribed})`))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	testnode.Eventually(t, 30*time.Second, "subscribed twice", func() bool { return len(read().Subscribed) == 2 })
	publish := func(text string) {
		if _, err := hub.Publish(context.Background(), "lobby", map[string]string{"text": text}); err != nil {
			t.Fatal(err)
		}
	}
	publish("one")
	if _, err := hub.SendToUser(context.Background(), "alice", map[string]string{"text": "hi alice"}); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 30*time.Second, "both messages", func() bool { return len(read().Got) == 2 })

	// The server drops the page's connection.
	mu.Lock()
	for _, c := range upgraded {
		_ = c.Close()
	}
	mu.Unlock()
	publish("two")
	publish("three")
	want := []string{"lobby:one@1", "@user:hi alice@1", "lobby:two@2", "lobby:three@3"}
	testnode.Eventually(t, 30*time.Second, "the messages published while it was away", func() bool {
		got := read().Got
		return len(got) >= len(want)
	})
	publish("four")
	want = append(want, "lobby:four@4")
	testnode.Eventually(t, 30*time.Second, "a message after the reconnection", func() bool { return len(read().Got) >= len(want) })
	s := read()
	slices.Sort(s.Got)
	slices.Sort(want)
	if !slices.Equal(s.Got, want) || len(s.Lost) != 0 {
		t.Fatalf("got %v, lost %v; want %v and no loss", s.Got, s.Lost, want)
	}
	resumed := 0
	for _, f := range s.Subscribed {
		if f["recovered"] == true {
			resumed++
		}
	}
	if resumed != 2 || slices.Index(s.Statuses, "closed") < 0 || s.Statuses[len(s.Statuses)-1] != "open" {
		t.Fatalf("did not reconnect and resume both rooms: statuses %v, subscriptions %v", s.Statuses, s.Subscribed)
	}
}

// browser starts headless Chromium with the flags the project's other browser tests use.
func browser(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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
	)
	t.Cleanup(cancel)
	ctx, cancel = chromedp.NewContext(ctx)
	t.Cleanup(cancel)
	return ctx
}
