package realtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/coder/websocket"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/realtime"
)

// A chat server serves the hub's endpoint; a client subscribes to a room and gets what the
// server publishes to it, with each message's offset in the room's history (a client that
// reconnects, to any instance, sends its last offset and epoch to get what it missed).
func Example() {
	dir, err := os.MkdirTemp("", "twice-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "twice.db"), Name: "chat",
		Logger: slog.New(slog.DiscardHandler),
		Realtime: realtime.Config{
			Authenticate: func(r *http.Request) (string, error) { // a real service reads its session
				if u := r.URL.Query().Get("user"); u != "" {
					return u, nil
				}
				return "", errors.New("who are you?")
			},
		}})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)
	srv := httptest.NewServer(node.Realtime().Handler())
	defer srv.Close()

	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"?user=alice", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer ws.CloseNow()
	read := func() map[string]any {
		_, b, err := ws.Read(ctx)
		if err != nil {
			log.Fatal(err)
		}
		var f map[string]any
		_ = json.Unmarshal(b, &f)
		return f
	}
	fmt.Println(read()["type"]) // welcome
	_ = ws.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","room":"lobby"}`))
	f := read()
	fmt.Println(f["type"], f["room"], f["offset"])

	if _, err := node.Realtime().Publish(ctx, "lobby", map[string]string{"text": "hello"}); err != nil {
		log.Fatal(err)
	}
	f = read()
	fmt.Println(f["type"], f["room"], f["offset"], f["data"])
	// Output:
	// welcome
	// subscribed lobby 0
	// message lobby 1 map[text:hello]
}

// An order is saved and announced in one transaction: the message is stored, and sent,
// only if the order commits. Each message of a room gets the room's next offset.
func ExampleHub_PublishTx() {
	dir, err := os.MkdirTemp("", "twice-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "twice.db"), Name: "shop",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)
	hub := node.Realtime()

	tx, err := node.Store().Begin(ctx) // or the application's own *sql.Tx / pgx.Tx
	if err != nil {
		log.Fatal(err)
	}
	// … the business write in tx …
	if _, err := hub.PublishTx(ctx, tx, "orders", map[string]int{"order": 1}); err != nil {
		log.Fatal(err)
	}
	_ = tx.Rollback(ctx) // the order is not saved: nothing is sent, the offset is not used

	pos, err := hub.Publish(ctx, "orders", map[string]int{"order": 2})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("offset", pos.Offset)
	pos, err = hub.SendToUser(ctx, "alice", "your order shipped") // every tab of alice's
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("alice's offset", pos.Offset)
	// Output:
	// offset 1
	// alice's offset 1
}
