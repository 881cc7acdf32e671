package twice_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/forward"
	"github.com/twicehq/twice/partition"
)

// Two instances of a chat service share its rooms through a partition set; a request about
// a room goes to the instance that owns the room, whichever instance it reaches. Each
// instance advertises where it listens, and the cluster secret signs what they forward to
// each other.
func ExampleNode_Forwarder() {
	dsn, cleanup := scratch()
	defer cleanup()
	ctx := context.Background()
	secret := []byte("an example secret of at least 32 bytes, from your config")

	var urls []string
	var sets []*partition.Set
	for _, id := range []string{"chat-1", "chat-2"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		node, err := twice.Open(ctx, twice.Config{DSN: dsn, Name: "chat", InstanceID: id, Logger: quiet,
			ClusterSecret: secret, AdvertiseAddr: ln.Addr().String()})
		if err != nil {
			log.Fatal(err)
		}
		defer node.Close(ctx)
		rooms, err := node.Partitions().Join(ctx, partition.Config{Name: "rooms", Partitions: 8})
		if err != nil {
			log.Fatal(err)
		}
		sets = append(sets, rooms)
		fwd, err := node.Forwarder(forward.Config{
			Key: func(r *http.Request) (string, bool) { // /rooms/ROOM/…
				rest, ok := strings.CutPrefix(r.URL.Path, "/rooms/")
				room, _, _ := strings.Cut(rest, "/")
				return room, ok && room != ""
			},
			Locate: twice.LocateIn(rooms),
		})
		if err != nil {
			log.Fatal(err)
		}
		defer fwd.Close()
		srv := httptest.NewUnstartedServer(fwd.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, id)
		})))
		srv.Listener.Close()
		srv.Listener = ln
		srv.Start()
		defer srv.Close()
		urls = append(urls, srv.URL)
	}
	// Wait until the instances settle on four partitions each, and agree on the lobby's owner.
	var owner partition.Owner
	for {
		o0, err0 := sets[0].Owner("lobby")
		o1, err1 := sets[1].Owner("lobby")
		if len(sets[0].Mine()) == 4 && len(sets[1].Mine()) == 4 && err0 == nil && err1 == nil && o0.Instance == o1.Instance {
			owner = o0
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, url := range urls {
		resp, err := http.Get(url + "/rooms/lobby")
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, "served by the lobby's owner:", string(body) == owner.Instance)
	}
	// Output:
	// 200 served by the lobby's owner: true
	// 200 served by the lobby's owner: true
}
