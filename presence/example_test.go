package presence_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/presence"
)

// A chat server records each WebSocket as a connection of its user, in the rooms it
// joins. Every instance reads who is online from memory and hears who joins and leaves,
// wherever the connections are.
func Example() {
	dir, err := os.MkdirTemp("", "twice-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(dir, "twice.db"), Name: "chat",
		AdvertiseAddr: "10.0.0.7:8080", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close(ctx)

	p := node.Presence()
	seen := make(chan presence.Event, 10)
	defer p.Watch("lobby", func(e presence.Event) { seen <- e })()

	tab1, err := p.Connect(ctx, "alice", "lobby") // a WebSocket opens
	if err != nil {
		log.Fatal(err)
	}
	tab2, err := p.Connect(ctx, "alice", "lobby") // a second tab
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Refresh(ctx); err != nil { // the view catches up by itself; a test need not wait
		log.Fatal(err)
	}
	users, _ := p.Online(ctx, "lobby")
	where, _ := p.Where(ctx, "alice")
	fmt.Println("online:", users, "connections:", len(where), "at", where[0].Addr)
	fmt.Println(<-seen)

	_ = tab1.Close(ctx) // alice is still in the lobby through her second tab
	_ = tab2.Close(ctx) // now she leaves
	if err := p.Refresh(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-seen)
	// Output:
	// online: [alice] connections: 2 at 10.0.0.7:8080
	// {joined lobby alice}
	// {left lobby alice}
}
