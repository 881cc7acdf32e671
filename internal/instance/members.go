package instance

import (
	"context"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twicehq/twice/internal/loop"
)

// Members is the workload "members": the instance watches the service's membership as
// [twice.Node.Members] lists it, polling every Poll from a random point of the first
// period, and prints a "members" event with the number of live instances when it first
// looks and each time the number changes. Nothing in a node pushes membership, so a poll
// is how an instance sees a new one; `twice bench scale` times from a start until every
// instance has seen it.
//
// Each poll is a few statements, which a parent measuring what idle instances cost does not
// want counted: with OnSignal the instance watches only from its first SIGUSR2 on, and with
// Until it stops once it has seen that many live instances.
type Members struct {
	// Poll is how often the instance lists the members. Defaults to 100ms.
	Poll time.Duration `json:"poll,omitempty"`
	// OnSignal makes the instance start watching on SIGUSR2 rather than at once.
	OnSignal bool `json:"on_signal,omitempty"`
	// Until, if set, stops the watch once this many live instances are listed. Defaults
	// to 0: the instance watches until it stops.
	Until int `json:"until,omitempty"`
}

// Name implements Workload.
func (Members) Name() string { return "members" }

// DefaultMembersPoll is [Members.Poll]'s default.
const DefaultMembersPoll = 100 * time.Millisecond

func (w Members) start(_ context.Context, in *env) (func(), error) {
	poll := w.Poll
	if poll <= 0 {
		poll = DefaultMembersPoll
	}
	var watching atomic.Bool
	watching.Store(!w.OnSignal)
	last, phased := -1, false // only the loop's goroutine touches them
	step := func(ctx context.Context) time.Duration {
		if !watching.Load() {
			return loop.Forever
		}
		if !phased {
			// Instances signalled together would poll in step; real ones do not, so
			// each starts at a random point of the period.
			phased = true
			return 1 + rand.N(poll)
		}
		ms, err := in.node.Members(ctx)
		if err != nil {
			return poll
		}
		alive := 0
		for _, m := range ms {
			if m.Alive {
				alive++
			}
		}
		if alive != last {
			last = alive
			in.emit(Event{Event: "members", Members: alive})
		}
		if w.Until > 0 && alive >= w.Until {
			watching.Store(false)
			return loop.Forever
		}
		return poll
	}
	l := loop.StartAfter(loop.Forever, step)
	if !w.OnSignal {
		l.Kick()
		return l.Stop, nil
	}
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	go func() {
		for range usr2 {
			watching.Store(true)
			l.Kick()
		}
	}()
	return func() {
		signal.Stop(usr2)
		close(usr2) // no signal is delivered to it after Stop returns
		l.Stop()
	}, nil
}
