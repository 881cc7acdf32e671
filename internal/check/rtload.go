package check

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/internal/rtclient"
)

// rtClients is how many real-time clients the checker keeps connected, each to a random
// instance, all in the room rtRoom; rtPeriod is how often one of them publishes.
const (
	rtClients = 3
	rtRoom    = "check"
	rtPeriod  = 50 * time.Millisecond
)

// rtLoad is the checker's real-time clients (the hub of the "realtime" workload): each
// stays connected to some live instance, reconnecting elsewhere when its instance dies,
// pauses or is cut off, and resuming the room from its last position; one of them
// publishes now and then. At the end every client must have received every message once,
// in order, or been told explicitly that it could not ("lost"): never a silent gap.
type rtLoad struct {
	http    *httpLoad // knows where the instances serve
	clients []*rtclient.Client

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newRTLoad(h *httpLoad) *rtLoad {
	l := &rtLoad{http: h}
	for range rtClients {
		l.clients = append(l.clients, rtclient.New())
	}
	return l
}

func (l *rtLoad) url(i int, addr string) string {
	return "ws://" + addr + "/realtime?user=rt" + strconv.Itoa(i)
}

// connect connects client i to a random live instance when it has no connection, and
// subscribes it on its first connection; it reports whether the client is connected.
func (l *rtLoad) connect(ctx context.Context, i int) bool {
	c := l.clients[i]
	if c.Connected() {
		return true
	}
	addr := l.http.addr()
	if addr == "" {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.Connect(cctx, l.url(i, addr), nil); err != nil {
		return false
	}
	if !c.Position(rtRoom).Known {
		_ = c.Subscribe(cctx, rtRoom)
	}
	return c.Connected()
}

// start keeps the clients connected and publishes until stop.
func (l *rtLoad) start(ctx context.Context) {
	ctx, l.cancel = context.WithCancel(ctx)
	for i := range l.clients {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				l.connect(ctx, i)
				loop.Sleep(ctx, 100*time.Millisecond)
			}
		})
	}
	l.wg.Go(func() {
		for n := 0; ctx.Err() == nil; n++ {
			c := l.clients[rand.IntN(len(l.clients))]
			if c.Connected() {
				pctx, cancel := context.WithTimeout(ctx, time.Second)
				_ = c.Publish(pctx, rtRoom, map[string]int{"n": n}, strconv.Itoa(n))
				cancel()
			}
			loop.Sleep(ctx, rtPeriod)
		}
	})
}

func (l *rtLoad) stop() {
	if l.cancel != nil {
		l.cancel()
	}
	l.wg.Wait()
}

// verify publishes a last message once every fault is healed, waits until every client has
// received it, then audits what each received.
func (l *rtLoad) verify(ctx context.Context) Invariant {
	inv := Invariant{Name: invRealtime}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	wait := func(what func() string, cond func() bool) bool {
		for !cond() {
			if !loop.Sleep(ctx, 20*time.Millisecond) {
				inv.violate(time.Time{}, "%s within a minute of the end", what())
				return false
			}
		}
		return true
	}
	say := func(s string) func() string { return func() string { return s } }
	for i := range l.clients {
		if !wait(say(fmt.Sprintf("client %d was not connected again", i)), func() bool { return l.connect(ctx, i) }) {
			return inv
		}
	}
	last, c := -1, l.clients[0]
	if err := c.Publish(ctx, rtRoom, map[string]int{"n": -1}, "last"); err != nil {
		inv.violate(time.Time{}, "the last message could not be published: %v", err)
		return inv
	}
	if !wait(say("the last message was not acknowledged"), func() bool {
		return c.Has(func(f rtclient.Frame) bool {
			if f.Type == "published" && f.ID == "last" && f.Offset != nil {
				last = int(*f.Offset)
				return true
			}
			return false
		})
	}) {
		return inv
	}
	for i, c := range l.clients {
		// A client whose connection ends meanwhile connects again and resumes, as every
		// client of the hub does: the keepers stopped with the load.
		caughtUp := func() bool {
			l.connect(ctx, i)
			return c.Position(rtRoom).Offset >= int64(last)
		}
		what := func() string {
			return fmt.Sprintf("client %d did not receive the last message (offset %d; at %d, connected %v, %d connections ended)",
				i, last, c.Position(rtRoom).Offset, c.Connected(), c.Closes())
		}
		if wait(what, caughtUp) {
			judgeRealtime(&inv, i, c.Audit(rtRoom))
		}
	}
	return inv
}

// judgeRealtime judges what client i received: no message after a silent gap, none twice.
func judgeRealtime(inv *Invariant, i int, a rtclient.Audit) {
	inv.Operations += a.Messages
	if a.Gaps > 0 {
		inv.violate(time.Time{}, "client %d: %d messages came after a silent gap (%d messages, %d explicit losses)", i, a.Gaps, a.Messages, a.Lost)
	}
	if a.Duplicates > 0 {
		inv.violate(time.Time{}, "client %d received %d messages twice", i, a.Duplicates)
	}
}
