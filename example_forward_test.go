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

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/forward"
)

// Two instances of a chat service; a request about a room goes to the instance that owns
// the room, whichever instance it reaches. Each instance advertises where it listens, and
// the cluster secret signs what they forward to each other. The fixed owner here stands for
// the service's partitions; Locate should answer from memory, not read the members on every
// request as this example does.
func ExampleNode_Forwarder() {
	dsn, cleanup := scratch()
	defer cleanup()
	ctx := context.Background()
	secret := []byte("an example secret of at least 32 bytes, from your config")
	owner := map[string]string{"lobby": "chat-2"} // room → instance

	var urls []string
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
		fwd, err := node.Forwarder(forward.Config{
			Key: func(r *http.Request) (string, bool) { // /rooms/ROOM/…
				rest, ok := strings.CutPrefix(r.URL.Path, "/rooms/")
				room, _, _ := strings.Cut(rest, "/")
				return room, ok && room != ""
			},
			Locate: func(room string) (forward.Target, error) {
				members, err := node.Members(ctx)
				if err != nil {
					return forward.Target{}, err
				}
				for _, m := range members {
					if m.ID == owner[room] && m.Alive {
						return forward.Target{Instance: m.ID, Addr: m.Addr}, nil
					}
				}
				return forward.Target{}, forward.ErrNoOwner
			},
		})
		if err != nil {
			log.Fatal(err)
		}
		defer fwd.Close()
		srv := httptest.NewUnstartedServer(fwd.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s at %s", r.URL.Path, id)
		})))
		srv.Listener.Close()
		srv.Listener = ln
		srv.Start()
		defer srv.Close()
		urls = append(urls, srv.URL)
	}

	for _, url := range []string{urls[0] + "/rooms/lobby", urls[1] + "/rooms/lobby", urls[0] + "/rooms/attic"} {
		resp, err := http.Get(url)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, resp.Header.Get("Retry-After"), strings.TrimSpace(string(body)))
	}
	// Output:
	// 200  /rooms/lobby at chat-2
	// 200  /rooms/lobby at chat-2
	// 503 1 {"type":"urn:twice:problem:forward-no-owner","title":"Service Unavailable","status":503,"detail":"no live instance owns this request's key"}
}
