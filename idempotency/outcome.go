package idempotency

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// What the background writer may hold while the database is away. Past pendingBytes a
// response is kept as its status only (a retry is told it was processed but not kept);
// past maxPending outcomes new keyed requests get 503 until the writer catches up, so the
// backlog grows no further than the requests already running.
const (
	maxPending     = 10_000
	pendingBytes   = 32 << 20
	writeTimeout   = 5 * time.Second
	retryFirst     = 50 * time.Millisecond
	retryMax       = 2 * time.Second
	closeFlushWait = 5 * time.Second
)

// errBacklog is why a keyed request is refused while too many outcomes wait to be written.
var errBacklog = errors.New("idempotency: too many request outcomes wait for the database")

// outcome is a bookkeeping write the middleware owes the store for a request it served:
// the stored response (res set) or the release of the key (res nil).
type outcome struct {
	p     Params
	res   *Response
	state int
}

func (o outcome) size() int {
	if o.res == nil {
		return 0
	}
	return len(o.res.Body)
}

// write stores o once, bounded by writeTimeout.
func (k *Keys) write(ctx context.Context, o outcome) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if o.res == nil {
		return k.release(ctx, o.p)
	}
	return k.complete(ctx, k.s, o.p, o.res, o.state)
}

// settle records the outcome of a request that ran: at once if the database takes it,
// otherwise in the background, retried until it lands or the keys close. Giving up sooner
// would leave the key claimed by a live instance, answering 409 for the whole retention
// although the request finished. The client's cancellation does not stop it.
func (k *Keys) settle(ctx context.Context, o outcome) {
	if k.out.isAbandoned() {
		return // as in a crash: the key stays claimed until this instance counts dead
	}
	err := k.write(context.WithoutCancel(ctx), o)
	if err == nil {
		return
	}
	k.out.add(k, o, err)
}

// outbox holds the outcomes the database did not take, for one writer goroutine that runs
// only while there are some.
type outbox struct {
	mu        sync.Mutex // protects everything below
	queue     []outcome
	bytes     int
	running   bool
	closed    bool
	abandoned bool          // Abandon closed it: outcomes are dropped unwritten, quietly
	done      chan struct{} // closed when the running writer exits
	dropped   int           // outcomes given up when Close ran out of time

	stop   context.Context // ends the writer's attempts when Close gives up
	cancel context.CancelFunc
}

func newOutbox() *outbox {
	o := &outbox{}
	o.stop, o.cancel = context.WithCancel(context.Background())
	return o
}

// full reports whether new claims must wait for the backlog to shrink.
func (o *outbox) full() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.queue) >= maxPending
}

func (o *outbox) add(k *Keys, oc outcome, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.abandoned {
		return
	}
	if o.closed {
		k.log.Error("idempotency: could not record the outcome of a request while closing; its key is freed once this instance has left the cluster",
			"key", oc.p.Key, "err", err)
		return
	}
	if oc.res != nil && o.bytes+oc.size() > pendingBytes {
		oc.res, oc.state = &Response{Status: oc.res.Status}, stateNotStored
	}
	o.queue = append(o.queue, oc)
	o.bytes += oc.size()
	if o.running {
		return
	}
	k.log.Warn("idempotency: could not record the outcome of a request; retrying in the background (its key answers 409 until then)", "err", err)
	o.running, o.done = true, make(chan struct{})
	go o.run(k, o.done)
}

// run writes the queue in order, backing off while the database refuses, until it is
// empty or Close gives up.
func (o *outbox) run(k *Keys, done chan struct{}) {
	defer close(done)
	wait, written := retryFirst, 0
	for {
		o.mu.Lock()
		if len(o.queue) == 0 {
			o.running = false
			o.mu.Unlock()
			k.log.Info("idempotency: recorded the outcomes that had waited for the database", "count", written)
			return
		}
		oc := o.queue[0]
		o.mu.Unlock()
		err := k.write(o.stop, oc)
		if err == nil {
			o.mu.Lock()
			o.queue[0] = outcome{}
			o.queue, o.bytes = o.queue[1:], o.bytes-oc.size()
			o.mu.Unlock()
			wait, written = retryFirst, written+1
			continue
		}
		k.log.Debug("idempotency: recording an outcome failed again", "err", err)
		select {
		case <-time.After(wait):
		case <-o.stop.Done():
			o.mu.Lock()
			o.dropped, o.queue, o.bytes, o.running = len(o.queue), nil, 0, false
			o.mu.Unlock()
			return
		}
		wait = min(2*wait, retryMax)
	}
}

// Close stops the background writer of request outcomes, after giving it until ctx ends
// (at most 5 seconds) to write what the database has not taken yet. An outcome still
// unwritten then is dropped: its key stays claimed by this instance until the cluster no
// longer counts the instance alive (at once when the node leaves the cluster, or
// DeadAfter plus DeadOwnerGrace after its last heartbeat), and the client's retry then
// runs the request again. Outcomes of requests finishing after Close are written once or
// dropped the same way. The node calls Close as it drains.
func (k *Keys) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, closeFlushWait)
	defer cancel()
	o := k.out
	o.mu.Lock()
	o.closed = true
	running, done := o.running, o.done
	o.mu.Unlock()
	if running {
		select {
		case <-done:
		case <-ctx.Done():
			o.cancel()
			<-done
		}
	}
	o.cancel()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dropped > 0 {
		return fmt.Errorf("idempotency: %d request outcomes could not be recorded before closing; their keys are freed once this instance has left the cluster", o.dropped)
	}
	return nil
}

// Abandon stops the background writer of request outcomes as a crash of the process
// would, for tests that crash an instance (see block.Block): the outcomes it holds are
// dropped, and so are those of requests that finish later, unwritten. Their keys stay
// claimed by this instance until the cluster counts it dead and DeadOwnerGrace has passed;
// a client's retry then runs the request again. It waits, until ctx ends, for a write
// under way.
func (k *Keys) Abandon(ctx context.Context) {
	o := k.out
	o.mu.Lock()
	o.closed, o.abandoned = true, true
	running, done := o.running, o.done
	o.mu.Unlock()
	o.cancel()
	if running {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}

func (o *outbox) isAbandoned() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.abandoned
}

// refuseWhenBacklogged answers 503 while the outcome backlog is full; it reports whether it
// did.
func (k *Keys) refuseWhenBacklogged(w http.ResponseWriter) bool {
	if !k.out.full() {
		return false
	}
	k.unavailable(w, errBacklog)
	return true
}
