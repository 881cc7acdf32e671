package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/twicetest"
)

// client is a browser of the shop's pages: one cookie jar for both instances (they share
// the host, so the session cookie goes to both), redirects not followed.
type client struct {
	t   *testing.T
	c   *http.Client
	jar http.CookieJar
	srv [2]*httptest.Server
}

// answer is a page as the client got it.
type answer struct {
	status int
	header http.Header
	body   string
}

func (c *client) do(i int, method, path string, form url.Values, accept ...string) answer {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.srv[i].URL+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, a := range accept {
		req.Header.Set("Accept", a)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, string(b)}
}

func (c *client) get(i int, path string) answer {
	c.t.Helper()
	return c.do(i, http.MethodGet, path, nil)
}
func (c *client) post(i int, path string, form url.Values) answer {
	c.t.Helper()
	return c.do(i, http.MethodPost, path, form)
}

func (a answer) want(t *testing.T, status int, contains ...string) answer {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.body)
	}
	for _, s := range contains {
		if !strings.Contains(a.body, s) {
			t.Fatalf("the page lacks %q:\n%s", s, a.body)
		}
	}
	return a
}

var (
	keyField     = regexp.MustCompile(`name="product" value="1">\s*<input type="hidden" name="idempotency_key" value="([0-9a-f]+)">`)
	versionInput = regexp.MustCompile(`action="/admin/products/1" class="inline">\s*<input type="hidden" name="version" value="(\d+)">`)
)

// openShops opens two instances of the shop on one database, and a client of both. They
// share a cluster secret, and each advertises the address it listens on, to which the
// other forwards the requests for the carts it owns.
func openShops(t *testing.T, db testdb.DB) ([]*twice.Node, []*Shop, *client) {
	ctx := context.Background()
	jar, _ := cookiejar.New(nil)
	c := &client{t: t, jar: jar, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	var nodes []*twice.Node
	var shops []*Shop
	for i := range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg := twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "shop", ClusterSecret: []byte(testSecret),
			AdvertiseAddr: ln.Addr().String(), HeartbeatInterval: twicetest.HeartbeatInterval,
			DeadAfter: twicetest.DeadAfter, LeaseTTL: twicetest.LeaseTTL,
			Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))}
		Configure(&cfg)
		n, err := twice.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close(context.Background()) })
		s, err := New(ctx, n, Options{Slot: string(rune('1' + i))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		c.srv[i] = httptest.NewUnstartedServer(s)
		c.srv[i].Listener.Close()
		c.srv[i].Listener = ln
		c.srv[i].Start()
		t.Cleanup(c.srv[i].CloseClientConnections) // the hub's connections, before Close waits for them
		t.Cleanup(c.srv[i].Close)
		nodes, shops = append(nodes, n), append(shops, s)
	}
	return nodes, shops, c
}

// testSecret is the tests' cluster secret; a service's comes from its secret store.
const testSecret = "the shop tests' cluster secret, 32 bytes or more"

// Two instances of the shop on one database, a person going back and forth between them:
// the session, the cached catalogue, the idempotent order, its confirmation job, its
// fulfilment workflow, its sale counted from its event, the versioned edit, the banner,
// the restock, the cron report and the metrics all hold across them.
func TestShopAcrossInstances(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		nodes, _, c := openShops(t, db)

		// Signed out: every page sends to the login; health needs no session.
		if a := c.get(0, "/catalogue"); a.status != http.StatusSeeOther || a.header.Get("Location") != "/login" {
			t.Fatalf("a signed-out catalogue: %d %v", a.status, a.header)
		}
		c.get(1, "/readyz").want(t, http.StatusOK)
		c.post(0, "/login", url.Values{"name": {""}}).want(t, http.StatusBadRequest, "Give a name")
		c.post(0, "/login", url.Values{"name": {"ann"}}).want(t, http.StatusSeeOther)

		// The session reaches the other instance; the footer says which one served.
		cat := c.get(1, "/catalogue").want(t, http.StatusOK, `id="user">ann<`, "Espresso beans", "€24.00", `instance 2</strong>`)
		m := keyField.FindStringSubmatch(cat.body)
		if m == nil {
			t.Fatalf("no order form with a key:\n%s", cat.body)
		}
		order := url.Values{"product": {"1"}, "quantity": {"2"}, "idempotency_key": {m[1]}}

		// The order, sent to one instance and again to the other: placed once.
		first := c.post(0, "/orders", order).want(t, http.StatusSeeOther)
		loc := first.header.Get("Location")
		if !regexp.MustCompile(`^/orders/\d+$`).MatchString(loc) {
			t.Fatalf("the order sent us to %q", loc)
		}
		again := c.post(1, "/orders", order).want(t, http.StatusSeeOther)
		if got := again.header.Get("Location"); !strings.HasPrefix(got, loc+"?") || again.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("the same key again: %q %v, want a replay of %s", got, again.header, loc)
		}
		order.Set("quantity", "5")
		c.post(1, "/orders", order).want(t, http.StatusUnprocessableEntity, "already used")
		c.get(0, "/orders").want(t, http.StatusOK, `href="`+loc+`"`)
		if n := strings.Count(c.get(0, "/orders").body, "<tr><td><a href="); n != 1 {
			t.Fatalf("%d orders listed, want 1", n)
		}

		// Its confirmation job, enqueued with it, runs on either instance.
		if _, err := twicetest.Work(ctx, nodes[0]); err != nil {
			t.Fatal(err)
		}
		page := c.get(1, loc).want(t, http.StatusOK, `id="confirmation"`, "Confirmed at",
			`<span id="fulfilment" class="ok">completed</span>`, "reserve stock: completed (2)", "charge: completed", "ship: completed (&#34;TW")
		if page.header.Get("ETag") != `"1"` {
			t.Fatalf("the order's ETag is %q, want \"1\"", page.header.Get("ETag"))
		}

		// Its event is counted once, by one instance of the consumer group, and the
		// reservation shows in every instance's catalogue.
		testnode.Eventually(t, 20*time.Second, "the sale in the other instance's catalogue", func() bool {
			b := c.get(0, "/catalogue").body
			return strings.Contains(b, `id="sold-1">2 sold<`) && strings.Contains(b, "18 in stock") && strings.Contains(b, `id="best-seller"`)
		})

		// An order whose card is declined: its workflow gives the reserved stock back.
		cat = c.get(0, "/catalogue").want(t, http.StatusOK)
		m = keyField.FindStringSubmatch(cat.body)
		declined := c.post(0, "/orders", url.Values{"product": {"1"}, "quantity": {"5"}, "note": {"please decline"}, "idempotency_key": {m[1]}}).
			want(t, http.StatusSeeOther).header.Get("Location")
		testnode.Eventually(t, 20*time.Second, "the declined order compensated", func() bool {
			b := c.get(1, declined).body
			return strings.Contains(b, `class="error">compensated</span>`) && strings.Contains(b, "card declined") &&
				strings.Contains(b, "reserve stock: completed (5), undone: done")
		})
		testnode.Eventually(t, 20*time.Second, "the stock given back", func() bool {
			b := c.get(1, "/catalogue").body
			return strings.Contains(b, `id="sold-1">7 sold<`) && strings.Contains(b, "18 in stock")
		})

		// Edited at its version on one instance; the same edit, now stale, refused on the other.
		edit := url.Values{"version": {"1"}, "quantity": {"3"}, "note": {"blue"}}
		c.post(0, loc, edit).want(t, http.StatusSeeOther)
		c.post(1, loc, edit).want(t, http.StatusPreconditionFailed, "changed since you opened it")
		c.post(1, loc, url.Values{"quantity": {"3"}}).want(t, http.StatusPreconditionRequired)
		c.get(1, loc).want(t, http.StatusOK, `id="quantity">3<`, "blue", `id="version">2`)
		c.get(1, "/orders/999999").want(t, http.StatusNotFound)

		// A price edited on instance 1 reaches instance 2's cached catalogue.
		admin := c.get(0, "/admin").want(t, http.StatusOK)
		v := versionInput.FindStringSubmatch(admin.body)
		if v == nil {
			t.Fatalf("no price form:\n%s", admin.body)
		}
		c.post(0, "/admin/products/1", url.Values{"version": {v[1]}, "price": {"19.5"}}).want(t, http.StatusSeeOther)
		c.post(0, "/admin/products/1", url.Values{"version": {v[1]}, "price": {"18"}}).want(t, http.StatusPreconditionFailed)
		testnode.Eventually(t, 20*time.Second, "the new price on the other instance", func() bool {
			return strings.Contains(c.get(1, "/catalogue").body, "€19.50")
		})

		// The banner, a setting saved on one instance, shows on the other's pages.
		c.post(0, "/admin/banner", url.Values{"banner": {"Free <b>shipping</b>"}}).want(t, http.StatusSeeOther)
		testnode.Eventually(t, 20*time.Second, "the banner on the other instance", func() bool {
			return strings.Contains(c.get(1, "/orders").body, `id="banner">Free &lt;b&gt;shipping&lt;/b&gt;<`)
		})
		c.post(1, "/admin/banner", url.Values{"banner": {""}}).want(t, http.StatusSeeOther)
		testnode.Eventually(t, 20*time.Second, "the banner gone from the other instance", func() bool {
			return !strings.Contains(c.get(0, "/orders").body, `id="banner"`)
		})

		// The restock tops product 1 up again, under the lock.
		restock := c.post(1, "/admin/restock", url.Values{}).want(t, http.StatusSeeOther).header.Get("Location")
		if !strings.Contains(restock, "Restocked+2+units") {
			t.Fatalf("the restock sent us to %q", restock)
		}
		testnode.Eventually(t, 20*time.Second, "the restocked catalogue", func() bool {
			return strings.Count(c.get(0, "/catalogue").body, "20 in stock") == 4
		})

		// The cron report, triggered now instead of at the minute.
		if _, err := nodes[1].Cron().Trigger(ctx, reportSchedule); err != nil {
			t.Fatal(err)
		}
		if _, err := twicetest.Work(ctx, nodes[1]); err != nil {
			t.Fatal(err)
		}
		c.get(0, "/reports").want(t, http.StatusOK, `id="reports"`)

		// The node's metrics, with the shop's requests counted by route.
		c.get(0, "/metrics").want(t, http.StatusOK, "twice_", `route="GET /catalogue"`)

		c.post(1, "/logout", url.Values{}).want(t, http.StatusSeeOther)
		if a := c.get(0, "/catalogue"); a.status != http.StatusSeeOther {
			t.Fatalf("logged out, the catalogue answered %d", a.status)
		}
	})
}

var chatPosition = regexp.MustCompile(`data-room="support" data-offset="(\d+)" data-epoch="([^"]*)"`)

// dial connects to instance i's realtime hub with the client's session cookie, as the chat
// page's script does, and follows the support room after the position the page gave.
func (c *client) dial(ctx context.Context, i int, page string) *websocket.Conn {
	c.t.Helper()
	pos := chatPosition.FindStringSubmatch(page)
	if pos == nil {
		c.t.Fatalf("the chat page gives no position:\n%s", page)
	}
	u, _ := url.Parse(c.srv[i].URL)
	h := http.Header{}
	for _, k := range c.jar.Cookies(u) {
		h.Add("Cookie", k.String())
	}
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(c.srv[i].URL, "http")+"/realtime", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { ws.CloseNow() })
	sub := `{"type":"subscribe","room":"support","offset":` + pos[1] + `,"epoch":"` + pos[2] + `"}`
	if err := ws.Write(ctx, websocket.MessageText, []byte(sub)); err != nil {
		c.t.Fatal(err)
	}
	return ws
}

// frame is a frame the hub sends, with a chat message as its data.
type frame struct {
	Type      string  `json:"type"`
	Room      string  `json:"room"`
	Recovered *bool   `json:"recovered"`
	Data      Message `json:"data"`
}

// next reads ws's next frame.
func next(ctx context.Context, t *testing.T, ws *websocket.Conn) frame {
	t.Helper()
	_, b, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return f
}

// The support chat across two instances: a message posted on one reaches, through the
// realtime hub, a page connected to the other, which resumes from the position it was
// rendered with (so a message posted before it connected is not missed); its user shows
// online on both; a page without script posts the form and reads the room when it loads.
func TestShopChatAcrossInstances(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _, c := openShops(t, db)
		if a := c.get(0, "/realtime"); a.status != http.StatusUnauthorized {
			t.Fatalf("the hub without a session answered %d", a.status)
		}
		c.post(0, "/login", url.Values{"name": {"ann"}}).want(t, http.StatusSeeOther)

		c.post(0, "/chat", url.Values{"body": {"  "}}).want(t, http.StatusBadRequest, "empty")
		c.post(0, "/chat", url.Values{"body": {"where is my <kettle>?"}}).want(t, http.StatusSeeOther)
		page := c.get(1, "/chat").want(t, http.StatusOK, "where is my &lt;kettle&gt;?", "via instance 1", `data-offset="1"`).body

		// Posted after the page was rendered and before its connection subscribes.
		c.post(0, "/chat", url.Values{"body": {"anyone?"}}).want(t, http.StatusSeeOther)
		ws := c.dial(ctx, 1, page)
		if f := next(ctx, t, ws); f.Type != "welcome" {
			t.Fatalf("first frame %+v", f)
		}
		if f := next(ctx, t, ws); f.Type != "subscribed" || f.Recovered == nil || !*f.Recovered {
			t.Fatalf("subscribing from the page's position: %+v", f)
		}
		if f := next(ctx, t, ws); f.Type != "message" || f.Data.Body != "anyone?" || f.Data.User != "ann" {
			t.Fatalf("the message posted before the connection: %+v", f)
		}

		// Posted on instance 1 by the page's script: delivered live to the page on instance 2.
		a := c.do(0, http.MethodPost, "/chat", url.Values{"body": {"in the post"}}, "application/json").want(t, http.StatusOK)
		var posted Message
		if err := json.Unmarshal([]byte(a.body), &posted); err != nil || posted.Body != "in the post" || posted.PostedBy == "" {
			t.Fatalf("the script's post answered %s (%v)", a.body, err)
		}
		if f := next(ctx, t, ws); f.Type != "message" || f.Data.ID != posted.ID || !strings.HasPrefix(f.Data.PostedBy, "1 ") {
			t.Fatalf("the live message: %+v, want %+v", f, posted)
		}
		c.do(0, http.MethodPost, "/chat", url.Values{"body": {""}}, "application/json").want(t, http.StatusBadRequest, `"error":"the message is empty"`)

		// The page's connection makes its user online in the room, seen from both instances.
		for i := range 2 {
			testnode.Eventually(t, 20*time.Second, "ann online", func() bool {
				return strings.Contains(c.get(i, "/chat/online").body, `{"online":["ann"]}`)
			})
		}
		ws.Close(websocket.StatusNormalClosure, "")
		testnode.Eventually(t, 20*time.Second, "ann gone", func() bool {
			return strings.Contains(c.get(0, "/chat/online").body, `{"online":[]}`)
		})
		c.get(0, "/chat").want(t, http.StatusOK, "anyone?", "in the post", `data-offset="3"`)
	})
}

// FuzzIfMatch: whatever a client sends as If-Match or as the form's version, the handler
// gets a positive version or an error, never a panic.
func FuzzIfMatch(f *testing.F) {
	for _, s := range []string{`"1"`, `W/"2"`, `*`, `"a", "3"`, `"`, ``, `"-4"`} {
		f.Add(s, "")
		f.Add("", s)
	}
	f.Fuzz(func(t *testing.T, header, form string) {
		r := httptest.NewRequest(http.MethodPost, "/orders/1", strings.NewReader(url.Values{"version": {form}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if header != "" {
			r.Header.Set("If-Match", header)
		}
		v, err := ifMatch(r)
		if err == nil && v < 1 {
			t.Fatalf("If-Match %q, version %q: version %d without an error", header, form, v)
		}
	})
}
