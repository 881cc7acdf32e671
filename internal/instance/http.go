package instance

import (
	"context"
	"fmt"
	"net/http"

	"github.com/twicehq/twice"
)

// IdempotencyHTTP is the workload "idempotency-http": the instance serves the node's
// Idempotency-Key middleware (see the "http" event). Each request that reaches the handler is
// reported as "handling"; the handler then answers 201 naming the instance, or with Block
// never answers, like a request in flight when the process is killed.
type IdempotencyHTTP struct {
	Block bool `json:"block,omitempty"`
}

// Name implements Workload.
func (IdempotencyHTTP) Name() string { return "idempotency-http" }

func (w IdempotencyHTTP) start(_ context.Context, in *env) (func(), error) {
	block := make(chan struct{})
	in.handle("/", idempotent(in.node, in.em, w.Block, block))
	return func() { close(block) }, nil
}

func idempotent(node *twice.Node, em *emitter, blocked bool, block <-chan struct{}) http.Handler {
	return node.Idempotency().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		em.emit(Event{Event: "handling"})
		if blocked {
			<-block
			return
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "done by %s", node.ID())
	}))
}
