package forward_test

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/twicehq/twice/forward"
)

// Three instances of a chat service; each room is owned by one of them, which keeps the
// room's state. A request about a room, sent to any instance, is served by the room's
// owner. The ownership table here stands for the service's partitions: in a service,
// Locate asks them (twice's Node does it for you), and Secret is twice.Config.ClusterSecret.
func Example() {
	secret := []byte("an example secret of at least 32 bytes, from your config")
	owners := map[string]string{"lobby": "a", "games": "c"} // room → instance
	addrs := map[string]string{}                            // instance → advertised address

	room := func(r *http.Request) (string, bool) { // /rooms/ROOM/…
		rest, ok := strings.CutPrefix(r.URL.Path, "/rooms/")
		name, _, _ := strings.Cut(rest, "/")
		return name, ok && name != ""
	}
	var urls []string
	for _, id := range []string{"a", "b", "c"} {
		fwd, err := forward.New(forward.Config{Secret: secret, Service: "chat", Instance: id, Key: room,
			Locate: func(key string) (forward.Target, error) {
				owner, ok := owners[key]
				if !ok {
					return forward.Target{}, forward.ErrNoOwner
				}
				return forward.Target{Instance: owner, Addr: addrs[owner]}, nil
			},
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			log.Fatal(err)
		}
		defer fwd.Close()
		app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			by, forwarded := forward.ForwardedBy(r.Context())
			fmt.Fprintf(w, "%s served by %s (forwarded: %v %s)", r.URL.Path, id, forwarded, by)
		})
		srv := httptest.NewServer(fwd.Middleware(app))
		defer srv.Close()
		addrs[id] = srv.Listener.Addr().String()
		urls = append(urls, srv.URL)
	}

	get := func(url string) {
		resp, err := http.Get(url)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d %s\n", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	get(urls[1] + "/rooms/lobby/messages") // at b: forwarded to a
	get(urls[0] + "/rooms/lobby/messages") // at a: its own
	get(urls[0] + "/rooms/games/messages") // at a: forwarded to c
	get(urls[2] + "/rooms/empty/messages") // nobody owns it
	// Output:
	// 200 /rooms/lobby/messages served by a (forwarded: true b)
	// 200 /rooms/lobby/messages served by a (forwarded: false )
	// 200 /rooms/games/messages served by c (forwarded: true a)
	// 503 {"type":"urn:twice:problem:forward-no-owner","title":"Service Unavailable","status":503,"detail":"no live instance owns this request's key"}
}
