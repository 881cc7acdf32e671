package conformance

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/rtclient"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/realtime"
)

// exerciseRealtime checks the real-time hub over the backend's bus: messages published on
// any instance, by the server, a client or in a committed transaction, reach every client
// subscribed on every instance, in offset order; and a message to a user reaches each of
// their tabs. (Forged hints and messages: exerciseForged.)
func exerciseRealtime(t *testing.T, backend Backend) {
	runAll(t, backend, []test{
		{"ReachesEveryInstance", realtimeReachesEveryInstance},
	})
}

// hubs opens n instances of a new service serving their hubs; a client is the user named
// by the "user" query parameter, and may publish.
func hubs(t *testing.T, backend Backend, n int) (db testdb.DB, nodes []*twice.Node, urls []string) {
	t.Helper()
	db, svc := testdb.New(t, backend.Dialect), testnats.Service()
	cfg := testnode.Calm()
	cfg.Realtime = realtime.Config{
		Authenticate: func(r *http.Request) (string, error) {
			if u := r.URL.Query().Get("user"); u != "" {
				return u, nil
			}
			return "", errors.New("no user")
		},
		CanPublish: func(context.Context, string, string) error { return nil },
	}
	for range n {
		node := backend.node(t, db, svc, cfg)
		srv := httptest.NewServer(node.Realtime().Handler())
		t.Cleanup(srv.Close)
		t.Cleanup(func() { _ = node.Close(context.Background()) })
		nodes = append(nodes, node)
		urls = append(urls, "ws"+strings.TrimPrefix(srv.URL, "http")+"/?user=")
	}
	return db, nodes, urls
}

// rtConnect connects a client of user at url, subscribed to rooms.
func rtConnect(t *testing.T, url, user string, rooms ...string) *rtclient.Client {
	t.Helper()
	c := rtclient.New()
	if err := c.Connect(context.Background(), url+user, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Drop)
	for _, r := range rooms {
		if err := c.Subscribe(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	testnode.Eventually(t, 20*time.Second, user+" subscribed", func() bool {
		for _, r := range rooms {
			if !c.Position(r).Known {
				return false
			}
		}
		return true
	})
	return c
}

// rtReceived waits until c has received want in room, in this order and nothing else,
// with no gap and no duplicate.
func rtReceived(t *testing.T, c *rtclient.Client, room string, want ...string) {
	t.Helper()
	testnode.Eventually(t, 20*time.Second, fmt.Sprintf("%v in %s", want, room), func() bool {
		return slices.Equal(c.Messages(room), want)
	})
	if a := c.Audit(room); a.Gaps != 0 || a.Duplicates != 0 || a.Lost != 0 {
		t.Fatalf("%s: %+v", room, a)
	}
}

func realtimeReachesEveryInstance(t *testing.T, backend Backend) {
	ctx := context.Background()
	_, nodes, urls := hubs(t, backend, 3)
	var cs []*rtclient.Client
	for i, u := range urls {
		cs = append(cs, rtConnect(t, u, fmt.Sprintf("user%d", i), "lobby"))
	}
	if _, err := nodes[0].Realtime().Publish(ctx, "lobby", "from 0"); err != nil {
		t.Fatal(err)
	}
	rtReceived(t, cs[2], "lobby", `"from 0"`)
	if err := cs[2].Publish(ctx, "lobby", "from user2", "x"); err != nil {
		t.Fatal(err)
	}
	rtReceived(t, cs[0], "lobby", `"from 0"`, `"from user2"`)
	for _, commit := range []bool{false, true} {
		tx, err := nodes[1].Store().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nodes[1].Realtime().PublishTx(ctx, tx, "lobby", fmt.Sprint(commit)); err != nil {
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
	for _, c := range cs {
		rtReceived(t, c, "lobby", `"from 0"`, `"from user2"`, `"true"`)
	}

	tabs := []*rtclient.Client{rtConnect(t, urls[0], "alice", realtime.UserRoom), rtConnect(t, urls[2], "alice", realtime.UserRoom)}
	if _, err := nodes[1].Realtime().SendToUser(ctx, "alice", "hi"); err != nil {
		t.Fatal(err)
	}
	for _, c := range tabs {
		rtReceived(t, c, realtime.UserRoom, `"hi"`)
	}
}

// A forged hint makes an instance read a stream again, which delivers nothing new; a
// forged message, at the very offset the clients expect next, is dropped by a signed bus
// and only a hint on an unsigned one: the clients get the one published there.
func realtimeForgedHints(t *testing.T, backend Backend) {
	ctx := context.Background()
	_, nodes, urls := hubs(t, backend, 2)
	c := rtConnect(t, urls[1], "alice", "lobby", realtime.UserRoom)
	pos, err := nodes[0].Realtime().Publish(ctx, "lobby", "real")
	if err != nil {
		t.Fatal(err)
	}
	rtReceived(t, c, "lobby", `"real"`)
	forged := []string{"r:lobby", "u:alice", "r:other", "", strings.Repeat("x", 300), "\x00\xff", "{", `{"k":"r:lobby"}`}
	for _, k := range []string{"r:lobby", "u:alice"} {
		forged = append(forged, fmt.Sprintf(`{"k":%q,"e":%q,"o":%d,"d":"forged"}`, k, pos.Epoch, pos.Offset+1),
			fmt.Sprintf(`{"k":%q,"e":"","o":1,"d":"forged"}`, k))
	}
	for _, p := range forged {
		backend.forge(t, nodes[1], realtime.Channel, []byte(p))
	}
	if _, err := nodes[0].Realtime().Publish(ctx, "lobby", "marker"); err != nil {
		t.Fatal(err)
	}
	rtReceived(t, c, "lobby", `"real"`, `"marker"`)
	if m := c.Messages(realtime.UserRoom); len(m) != 0 {
		t.Fatalf("forged hints delivered %v", m)
	}
}
