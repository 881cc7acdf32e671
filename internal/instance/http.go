package instance

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/twicehq/twice"
)

// serveIdempotency serves the node's Idempotency-Key middleware on a free local port and
// reports it in an "http" event. Each request that reaches the handler is reported as
// "handling"; with BlockRequests the handler then waits for ever, otherwise it answers 201
// naming the instance. It returns the function that stops the server.
func serveIdempotency(node *twice.Node, o Options, em *emitter) (stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		em.emit(Event{Event: "error", Err: err.Error()})
		return func() {}
	}
	block := make(chan struct{})
	h := node.Idempotency().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		em.emit(Event{Event: "handling"})
		if o.BlockRequests {
			<-block
			return
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "done by %s", node.ID())
	}))
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	em.emit(Event{Event: "http", Addr: ln.Addr().String()})
	return func() {
		close(block)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
}
