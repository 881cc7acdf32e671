package realtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/bus/bustest"
	"github.com/twicehq/twice/internal/rtclient"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/realtime"
	"github.com/twicehq/twice/twicetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// liveness is how long a test waits for what must happen: generous, since machines are
// noisy; a correct implementation takes milliseconds.
const liveness = 20 * time.Second

// byQuery authenticates the user named in the request's "user" parameter: for tests.
func byQuery(r *http.Request) (string, error) {
	if u := r.URL.Query().Get("user"); u != "" {
		return u, nil
	}
	return "", errors.New("no user")
}

// instance is a node serving its hub.
type instance struct {
	node *twice.Node
	url  string // ws://…/?user=
}

func (in instance) hub() *realtime.Hub { return in.node.Realtime() }

// open opens an instance of service on db serving its hub; cfg's zero Authenticate and
// CanPublish are byQuery and "anyone".
func open(t *testing.T, db testdb.DB, service string, cfg realtime.Config) instance {
	t.Helper()
	return openNode(t, db, service, twice.Config{Realtime: cfg})
}

// openNode is open with the node's whole configuration.
func openNode(t *testing.T, db testdb.DB, service string, ncfg twice.Config) instance {
	t.Helper()
	cfg := &ncfg.Realtime
	if cfg.Authenticate == nil {
		cfg.Authenticate = byQuery
	}
	if cfg.CanPublish == nil {
		cfg.CanPublish = func(context.Context, string, string) error { return nil }
	}
	n := testnode.Open(t, db, service, ncfg)
	srv := httptest.NewServer(n.Realtime().Handler())
	// Closed after the node (cleanups run last first): the hub ends its connections.
	t.Cleanup(srv.Close)
	t.Cleanup(func() { _ = n.Close(context.Background()) })
	return instance{node: n, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/?user="}
}

// connect connects a client of user to in, subscribed to rooms, and waits for each
// subscription.
func connect(t *testing.T, in instance, user string, rooms ...string) *rtclient.Client {
	t.Helper()
	c := rtclient.New()
	if err := c.Connect(context.Background(), in.url+user, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Drop)
	for _, r := range rooms {
		subscribe(t, c, r)
	}
	return c
}

func subscribe(t *testing.T, c *rtclient.Client, room string) {
	t.Helper()
	n := count(c, "subscribed", room)
	if err := c.Subscribe(context.Background(), room); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, liveness, "subscribed to "+room, func() bool { return count(c, "subscribed", room) > n })
}

func count(c *rtclient.Client, typ, room string) int {
	n := 0
	for _, f := range c.Frames() {
		if f.Type == typ && f.Room == room {
			n++
		}
	}
	return n
}

// receives waits until c has received want in room, in this order, and nothing else; each
// message is compared decoded, as fmt prints it ("text", map[k:v]).
func receives(t *testing.T, c *rtclient.Client, room string, want ...string) {
	t.Helper()
	w := strings.Join(want, "|")
	what := fmt.Sprintf("messages %.200s in %s", w, room)
	testnode.Eventually(t, liveness, what, func() bool {
		var got []string
		for _, m := range c.Messages(room) {
			var v any
			if err := json.Unmarshal([]byte(m), &v); err != nil {
				t.Errorf("message %s: %v", m, err)
			}
			got = append(got, fmt.Sprint(v))
		}
		return strings.Join(got, "|") == w
	})
	if a := c.Audit(room); a.Gaps != 0 || a.Duplicates != 0 {
		t.Fatalf("%s: %+v", room, a)
	}
}

func publish(t *testing.T, h *realtime.Hub, room string, msgs ...string) {
	t.Helper()
	for _, m := range msgs {
		if _, err := h.Publish(context.Background(), room, m); err != nil {
			t.Fatal(err)
		}
	}
}

// A message published on one instance, by the server or by a client, reaches the clients
// subscribed on the others; a client that is not subscribed gets nothing.
func TestAcrossInstances(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		a, b := open(t, db, "chat", realtime.Config{}), open(t, db, "chat", realtime.Config{})
		onA := connect(t, a, "alice", "lobby")
		onB := connect(t, b, "bob", "lobby")
		other := connect(t, b, "carol", "kitchen")
		publish(t, a.hub(), "lobby", "from a")
		if err := onB.Publish(context.Background(), "lobby", "from bob", "1"); err != nil {
			t.Fatal(err)
		}
		receives(t, onB, "lobby", "from a", "from bob")
		receives(t, onA, "lobby", "from a", "from bob")
		testnode.Eventually(t, liveness, "the acknowledgement of bob's message", func() bool {
			return onB.Has(func(f rtclient.Frame) bool { return f.Type == "published" && f.ID == "1" && *f.Offset == 2 })
		})
		if m := other.Messages("lobby"); len(m) != 0 {
			t.Fatalf("a client not in the room got %v", m)
		}
	})
}

// SendToUser reaches every connection (tab) of the user on every instance, and no one
// else's.
func TestSendToUserEveryTab(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		a, b := open(t, db, "chat", realtime.Config{}), open(t, db, "chat", realtime.Config{})
		tab1 := connect(t, a, "alice", realtime.UserRoom)
		tab2 := connect(t, b, "alice", realtime.UserRoom)
		tab3 := connect(t, b, "alice", realtime.UserRoom)
		bob := connect(t, a, "bob", realtime.UserRoom)
		if _, err := b.hub().SendToUser(context.Background(), "alice", map[string]string{"n": "1"}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*rtclient.Client{tab1, tab2, tab3} {
			receives(t, c, realtime.UserRoom, "map[n:1]")
		}
		if _, err := a.hub().SendToUser(context.Background(), "bob", "for bob"); err != nil {
			t.Fatal(err)
		}
		receives(t, bob, realtime.UserRoom, "for bob")
	})
}

// PublishTx sends a message only if the caller's transaction commits.
func TestPublishTxOnlyOnCommit(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, b := open(t, db, "shop", realtime.Config{}), open(t, db, "shop", realtime.Config{})
		c := connect(t, b, "alice", "orders")
		for _, commit := range []bool{false, true} {
			tx, err := a.node.Store().Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.hub().PublishTx(ctx, tx, "orders", fmt.Sprintf("commit %v", commit)); err != nil {
				t.Fatal(err)
			}
			end := tx.Rollback
			if commit {
				end = tx.Commit
			}
			if err := end(ctx); err != nil {
				t.Fatal(err)
			}
		}
		receives(t, c, "orders", "commit true")
		if got := *c.Frames()[len(c.Frames())-1].Offset; got != 1 {
			t.Fatalf("the committed message is at offset %d, want 1: a rollback gives its offset back", got)
		}
	})
}

// A client cut off from one instance, which reconnects to another with its position,
// gets exactly the messages it missed, then the new ones.
func TestRecoveryOnAnotherInstance(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, b := open(t, db, "chat", realtime.Config{}), open(t, db, "chat", realtime.Config{})
		c := connect(t, a, "alice", "lobby", realtime.UserRoom)
		publish(t, a.hub(), "lobby", "1")
		receives(t, c, "lobby", "1")
		c.Drop()
		publish(t, b.hub(), "lobby", "2", "3", "4")
		if _, err := a.hub().SendToUser(ctx, "alice", "missed"); err != nil {
			t.Fatal(err)
		}
		if err := c.Connect(ctx, b.url+"alice", nil); err != nil {
			t.Fatal(err)
		}
		receives(t, c, "lobby", "1", "2", "3", "4")
		receives(t, c, realtime.UserRoom, "missed")
		publish(t, a.hub(), "lobby", "5")
		receives(t, c, "lobby", "1", "2", "3", "4", "5")
		if !c.Has(func(f rtclient.Frame) bool { return f.Type == "subscribed" && f.Recovered != nil && *f.Recovered }) {
			t.Fatalf("no recovered subscription: %+v", c.Frames())
		}
	})
}

// A client whose position the history no longer reaches (pruned), or whose epoch is not
// the stream's any more (reset), is told its recovery is impossible, and continues from
// the stream's last message; a connected client is told when the stream it follows is
// reset.
func TestRecoveryImpossible(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a := open(t, db, "chat", realtime.Config{HistorySize: 2})
		b := open(t, db, "chat", realtime.Config{HistorySize: 2})
		unrecovered := func(c *rtclient.Client) int {
			n := 0
			for _, f := range c.Frames() {
				if f.Type == "subscribed" && f.Recovered != nil && !*f.Recovered {
					n++
				}
			}
			return n
		}

		c := connect(t, a, "alice", "lobby")
		publish(t, a.hub(), "lobby", "1")
		receives(t, c, "lobby", "1")
		c.Drop()
		publish(t, a.hub(), "lobby", "2", "3", "4", "5")
		if _, err := a.hub().Prune(ctx); err != nil { // keeps 4 and 5
			t.Fatal(err)
		}
		if err := c.Connect(ctx, b.url+"alice", nil); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, liveness, "recovery impossible after pruning", func() bool { return unrecovered(c) == 1 })
		if p := c.Position("lobby"); p.Offset != 5 {
			t.Fatalf("continues from %+v, want offset 5", p)
		}
		publish(t, a.hub(), "lobby", "6")
		receives(t, c, "lobby", "1", "6")

		c.Drop()
		if err := b.hub().Reset(ctx, "lobby"); err != nil {
			t.Fatal(err)
		}
		publish(t, b.hub(), "lobby", "new 1")
		if err := c.Connect(ctx, a.url+"alice", nil); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, liveness, "recovery impossible after a reset", func() bool { return unrecovered(c) == 2 })
		publish(t, b.hub(), "lobby", "new 2")
		receives(t, c, "lobby", "1", "6", "new 2")

		// Connected while the stream is reset: a "lost" frame, then the new epoch.
		if err := a.hub().Reset(ctx, "lobby"); err != nil {
			t.Fatal(err)
		}
		publish(t, b.hub(), "lobby", "newer 1")
		testnode.Eventually(t, liveness, "lost after a reset", func() bool {
			return c.Has(func(f rtclient.Frame) bool { return f.Type == "lost" && f.Reason == "epoch" })
		})
		publish(t, b.hub(), "lobby", "newer 2")
		receives(t, c, "lobby", "1", "6", "new 2", "newer 2")
		if a := c.Audit("lobby"); a.Lost != 3 {
			t.Fatalf("%+v, want 3 losses announced", a)
		}
	})
}

// A client that stops reading is disconnected once it has taken no frame for
// WriteTimeout, while another client of the same instance, with the same small buffer,
// gets every one of 200 large messages, fed from the history as its buffer drains.
func TestSlowClientDisconnected(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a := open(t, db, "chat", realtime.Config{SendBuffer: 4, WriteTimeout: 500 * time.Millisecond})
		good := connect(t, a, "alice", "lobby")
		slow, _, err := websocket.Dial(ctx, a.url+"bob", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer slow.CloseNow()
		if err := slow.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","room":"lobby"}`)); err != nil {
			t.Fatal(err)
		}
		testnode.EventuallyNil(t, liveness, func() error {
			us, err := a.node.Presence().Online(ctx, "lobby")
			if err == nil && len(us) != 2 {
				err = fmt.Errorf("online %v", us)
			}
			return err
		})
		// Enough to fill the slow client's socket, then its buffer.
		big := strings.Repeat("x", 60<<10)
		var want []string
		for i := range 200 {
			publish(t, a.hub(), "lobby", fmt.Sprintf("%d %s", i, big))
			want = append(want, fmt.Sprintf("%d %s", i, big))
		}
		receives(t, good, "lobby", want...)
		// Dropped while it was not reading.
		testnode.EventuallyNil(t, liveness, func() error {
			us, err := a.node.Presence().Online(ctx, "lobby")
			if err == nil && len(us) != 1 {
				err = fmt.Errorf("online %v", us)
			}
			return err
		})
		if st := a.hub().Stats(); st.SlowClosed != 1 || st.Connections != 1 {
			t.Errorf("stats after the slow client went: %+v", st)
		}
		// It reads what its socket holds, then finds the connection closed.
		slow.SetReadLimit(1 << 20)
		for {
			_, _, err := slow.Read(ctx)
			if err != nil {
				t.Logf("slow client: %v", err)
				break
			}
		}
	})
}

// The authentication hook refuses a connection (401), the authorisation hook a room, and
// the hub refuses a page from another origin (403) and a client's publish without
// CanPublish.
func TestRefusals(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a := open(t, db, "chat", realtime.Config{
			Authorize: func(_ context.Context, user, room string) error {
				if room == "secret" && user != "admin" {
					return errors.New("admins only")
				}
				return nil
			},
			CanPublish: func(_ context.Context, user, room string) error {
				return errors.New("read only")
			},
		})
		_, resp, err := websocket.Dial(ctx, a.url, nil) // no user
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unauthenticated: %v %v", resp, err)
		}
		h := http.Header{"Origin": {"https://evil.example"}}
		_, resp, err = websocket.Dial(ctx, a.url+"alice", &websocket.DialOptions{HTTPHeader: h})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("foreign origin: %v %v", resp, err)
		}

		c := connect(t, a, "alice")
		if err := c.Subscribe(ctx, "secret"); err != nil {
			t.Fatal(err)
		}
		if err := c.Publish(ctx, "lobby", "hi", "p1"); err != nil {
			t.Fatal(err)
		}
		if err := c.SendRaw(ctx, []byte(`{"type":"subscribe","room":"@other"}`)); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, liveness, "three refusals", func() bool {
			n := 0
			for _, f := range c.Frames() {
				if f.Type == "error" && (strings.Contains(f.Error, "admins only") || strings.Contains(f.Error, "read only") ||
					strings.Contains(f.Error, "@")) {
					n++
				}
			}
			return n == 3
		})
		if count(c, "subscribed", "secret") != 0 {
			t.Fatal("subscribed to a refused room")
		}
		admin := connect(t, a, "admin", "secret")
		publish(t, a.hub(), "secret", "x")
		receives(t, admin, "secret", "x")

		// Without Authenticate the hub refuses everyone.
		b := testnode.Open(t, db, "chat", twice.Config{})
		srv := httptest.NewServer(b.Realtime().Handler())
		defer srv.Close()
		_, resp, err = websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/?user=alice", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("no Authenticate: %v %v", resp, err)
		}
	})
}

// Each connection is a presence connection, in the rooms it subscribes to: every instance
// sees its user online, until it goes.
func TestConnectionsArePresent(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, b := open(t, db, "chat", realtime.Config{}), open(t, db, "chat", realtime.Config{})
		c := connect(t, a, "alice", "lobby")
		online := func(room string) string {
			if err := b.node.Presence().Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			us, err := b.node.Presence().Online(ctx, room)
			if err != nil {
				t.Fatal(err)
			}
			return strings.Join(us, ",")
		}
		testnode.Eventually(t, liveness, "alice in the lobby", func() bool { return online("lobby") == "alice" })
		if err := c.Send(ctx, map[string]string{"type": "unsubscribe", "room": "lobby"}); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, liveness, "alice left the lobby", func() bool { return online("lobby") == "" && online("") == "alice" })
		c.Drop()
		testnode.Eventually(t, liveness, "alice gone", func() bool { return online("") == "" })
	})
}

// A lost hint delays a message until the next poll but never loses it: here the message
// is stored with no hint at all, and the instance holding the client finds it by its poll.
func TestLostHintFoundByPoll(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		// A backstop under the poll: the poll is the hub's own (1 second), even while the
		// bus vouches for its delivery.
		cfg := twice.Config{Backstop: 500 * time.Millisecond}
		a, b := openNode(t, db, "chat", cfg), openNode(t, db, "chat", cfg)
		c := connect(t, b, "alice", "lobby")
		if _, err := realtime.PublishQuiet(context.Background(), a.hub(), "lobby", "quiet"); err != nil {
			t.Fatal(err)
		}
		receives(t, c, "lobby", "quiet")
	})
}

// A bus that lost signals says so (Lost): the hub then reads every stream its connections
// follow again, so a message whose hint went missing arrives then, not at the poll (an
// hour here).
func TestLostBusResyncs(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		cfg := twice.Config{Backstop: time.Hour, Realtime: realtime.Config{Poll: time.Hour}}
		a, b := openNode(t, db, "chat", cfg), openNode(t, db, "chat", cfg)
		c := connect(t, b, "alice", "lobby")
		publish(t, a.hub(), "lobby", "heard")
		receives(t, c, "lobby", "heard")
		// Stored without a hint while b's bus is cut: only b's resync on Lost (when the cut
		// ends) finds it before the poll.
		restore := twicetest.CutBus(t, b.node)
		if _, err := realtime.PublishQuiet(context.Background(), a.hub(), "lobby", "unheard"); err != nil {
			t.Fatal(err)
		}
		restore()
		receives(t, c, "lobby", "heard", "unheard")
	})
}

// An instance that crashes drops its connections; its clients reconnect to another and
// resume with what they missed, and their presence on the crashed one vanishes once the
// cluster counts it dead.
func TestCrashedInstanceClientsResume(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a, b := open(t, db, "chat", realtime.Config{}), open(t, db, "chat", realtime.Config{})
		c := connect(t, a, "alice", "lobby")
		publish(t, b.hub(), "lobby", "1")
		receives(t, c, "lobby", "1")
		twicetest.Crash(t, a.node)
		testnode.Eventually(t, liveness, "the connection dropped", func() bool { return !c.Connected() })
		publish(t, b.hub(), "lobby", "2", "3")
		if err := c.Connect(ctx, b.url+"alice", nil); err != nil {
			t.Fatal(err)
		}
		receives(t, c, "lobby", "1", "2", "3")
		testnode.EventuallyNil(t, liveness, func() error {
			if err := b.node.Presence().Refresh(ctx); err != nil {
				return err
			}
			where, err := b.node.Presence().Where(ctx, "alice")
			if err == nil && (len(where) != 1 || where[0].Instance != b.node.ID()) {
				err = fmt.Errorf("alice is at %+v", where)
			}
			return err
		})
	})
}

// A client that missed more messages than its send buffer holds recovers them all, in
// order: the hub feeds it from the history as it drains.
func TestRecoveryLongerThanTheBuffer(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a := open(t, db, "chat", realtime.Config{SendBuffer: realtime.MinSendBuffer})
		b := open(t, db, "chat", realtime.Config{SendBuffer: realtime.MinSendBuffer})
		c := connect(t, a, "alice", "lobby")
		publish(t, a.hub(), "lobby", "0")
		receives(t, c, "lobby", "0")
		c.Drop()
		want := []string{"0"}
		for i := 1; i <= 600; i++ { // more than a read of the history (500) too
			want = append(want, fmt.Sprint(i))
		}
		publish(t, a.hub(), "lobby", want[1:]...)
		if err := c.Connect(ctx, b.url+"alice", nil); err != nil {
			t.Fatal(err)
		}
		receives(t, c, "lobby", want...)
	})
}

// A subscription that fails because the database does not answer ends the connection
// (1013, try again later) instead of answering an error the client could overlook: no
// client stays connected believing it follows a room it does not. Connected again, it
// subscribes anew.
func TestSubscribeFailureEndsTheConnection(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		blip := testdb.NewBlip(t, db)
		a, b := open(t, blip.DB, "chat", realtime.Config{}), open(t, db, "chat", realtime.Config{})
		c := connect(t, a, "alice")
		testnode.Eventually(t, liveness, "welcomed", func() bool { return count(c, "welcome", "") == 1 })
		blip.Start()
		if err := c.Subscribe(ctx, "lobby"); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, liveness, "the connection ended", func() bool { return !c.Connected() })
		blip.End()
		if n := count(c, "subscribed", "lobby"); n != 0 {
			t.Fatalf("subscribed %d times while the database was away", n)
		}
		// As every client does, it connects again whenever its connection ends: a may
		// still refuse a subscription or two (b may count it dead for a moment, and delete
		// its presence entries).
		testnode.Eventually(t, liveness, "subscribed again", func() bool {
			if !c.Connected() {
				_ = c.Connect(ctx, a.url+"alice", nil)
			}
			return count(c, "subscribed", "lobby") > 0
		})
		publish(t, b.hub(), "lobby", "after")
		receives(t, c, "lobby", "after")
	})
}

// A read of the history that fails is tried again after a short backoff, not at the next
// poll (an hour here, and no bus reconnection to resync on): the hint arrives while the
// messages' table is out of the way.
func TestFailedReadRetried(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		cfg := twice.Config{Backstop: time.Hour, Realtime: realtime.Config{Poll: time.Hour}}
		a, b := openNode(t, db, "chat", cfg), openNode(t, db, "chat", cfg)
		c := connect(t, a, "alice", "lobby")
		publish(t, b.hub(), "lobby", "1")
		receives(t, c, "lobby", "1")
		if _, err := realtime.PublishQuiet(ctx, b.hub(), "lobby", "2"); err != nil {
			t.Fatal(err)
		}
		st := b.node.Store()
		if _, err := st.Exec(ctx, `ALTER TABLE twice_realtime_messages RENAME TO twice_realtime_away`); err != nil {
			t.Fatal(err)
		}
		if err := b.node.Bus().Publish(ctx, realtime.Channel, []byte("r:lobby")); err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, liveness, "a's read failed", func() bool { return a.hub().Stats().FailedReads > 0 })
		if _, err := st.Exec(ctx, `ALTER TABLE twice_realtime_away RENAME TO twice_realtime_messages`); err != nil {
			t.Fatal(err)
		}
		receives(t, c, "lobby", "1", "2")
	})
}

// With a cluster secret the bus carries each message itself, signed: an instance whose
// clients are at the offset before it delivers it without reading the history. Without
// one, each message costs each instance a read.
func TestSignedBusCarriesMessages(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		for _, signed := range []bool{true, false} {
			t.Run(fmt.Sprint("signed=", signed), func(t *testing.T) {
				cfg := twice.Config{Backstop: time.Hour, Realtime: realtime.Config{Poll: time.Hour}}
				if signed {
					cfg.ClusterSecret = bustest.Secret()
				}
				svc := fmt.Sprint("chat-", signed)
				a, b := openNode(t, db, svc, cfg), openNode(t, db, svc, cfg)
				c := connect(t, b, "alice", "lobby")
				publish(t, a.hub(), "lobby", "0")
				receives(t, c, "lobby", "0")
				before := b.hub().Stats().Reads
				want := []string{"0"}
				for i := 1; i <= 20; i++ {
					want = append(want, fmt.Sprint(i))
					publish(t, a.hub(), "lobby", want[i])
				}
				receives(t, c, "lobby", want...)
				reads := b.hub().Stats().Reads - before
				st := b.hub().Stats()
				if signed && (reads != 0 || st.Direct != 20) {
					t.Errorf("the signed bus carried the messages, yet b read the history %d times: %+v", reads, st)
				}
				if !signed && (reads == 0 || st.Direct != 0 || st.FromHistory != 21) {
					t.Errorf("without a secret b read the history %d times: %+v", reads, st)
				}
			})
		}
	})
}
