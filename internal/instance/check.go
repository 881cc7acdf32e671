package instance

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// The checker's events.
const (
	// CheckTopic is the topic the checker's instances publish, and CheckGroupEO and
	// CheckGroupShared the groups that consume it.
	CheckTopic       = "check"
	CheckGroupEO     = "check-exactly-once"
	CheckGroupShared = "check-shared"
)

// Op is one register operation as the workload saw it, for the linearizability check.
type Op struct {
	Kind   string `json:"kind"` // "read" or "write"
	Value  int64  `json:"value"`
	Token  int64  `json:"token,omitempty"`
	Call   int64  `json:"call"`   // Unix nanoseconds
	Return int64  `json:"return"` // Unix nanoseconds
	// Result of a write: "ok", "fenced" (refused, no effect) or "unknown" (an error that may
	// have come after the commit). Reads are only reported when they succeed.
	Result string `json:"result,omitempty"`
}

// opPeriod is the pause between two operations of one workload loop.
const opPeriod = 40 * time.Millisecond

// startCheck runs the checker workload until the returned stop function is called:
//   - while leading, write unique values to the register, each fenced by the term's token,
//     and log each write; a term's writer goes on after the term ends, as a worker that
//     does not notice a pause would, until a write is refused;
//   - on every instance, read the register;
//   - on every instance, take the lock "check" and log a fenced write under it;
//   - on every instance, publish events in transactions that commit late at random, and
//     consume them in an exactly-once group and a shared group that record each handling;
//   - on every instance, enqueue jobs and work them, and declare a one-second schedule
//     (see checkjobs.go);
//   - on every instance, set a setting and change a cached row in one transaction now and
//     then, keeping the cache warm (see checkconverge.go);
//   - on every instance, serve HTTP for the checker's session and idempotency client
//     (see checkhttp.go).
//
// quiesce stops the publishers only, so the consumers can catch up before the end.
func startCheck(ctx context.Context, node *twice.Node, em *emitter) (stop, quiesce func()) {
	if _, err := node.Store().Exec(ctx, "INSERT INTO "+RegisterTable+" (service, value, token) VALUES ($1, 0, 0) ON CONFLICT (service) DO NOTHING",
		node.Service()); err != nil {
		em.emit(Event{Event: "error", Err: err.Error()})
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	pubCtx, stopPublishing := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var seq atomic.Int64
	unique := func() int64 { return int64(os.Getpid())<<24 | seq.Add(1) }

	// A stall past dead-after counts as a fault for judging duplicate job runs: the cluster
	// may have counted this instance dead and rescued its jobs.
	node.OnHeartbeatStall(func(from, to time.Time) {
		em.emit(Event{Event: "stall", From: from.UnixNano(), T: to.UnixNano()})
	})
	node.Leader().OnElected(func(term context.Context) {
		l := lease.FromContext(term)
		wg.Go(func() { checkWriter(ctx, node, l, em, unique) })
	})
	wg.Go(func() { checkReader(ctx, node, em) })
	wg.Go(func() { checkLocker(ctx, node, em, unique) })
	if err := checkConsumers(ctx, node); err != nil {
		em.emit(Event{Event: "error", Err: err.Error()})
	}
	wg.Go(func() { checkPublisher(pubCtx, node) })
	if err := startCheckJobs(ctx, pubCtx, node); err != nil {
		em.emit(Event{Event: "error", Err: err.Error()})
	}
	converge, err := startConverge(ctx, pubCtx, node, unique)
	if err != nil {
		em.emit(Event{Event: "error", Err: err.Error()})
	}
	stopHTTP := serveCheckHTTP(node, em, converge)
	return func() {
		stopHTTP()
		cancel()
		wg.Wait()
	}, stopPublishing
}

func checkWriter(ctx context.Context, node *twice.Node, l *lease.Lease, em *emitter, unique func() int64) {
	s := node.Store()
	for ctx.Err() == nil {
		v := unique()
		op := &Op{Kind: "write", Value: v, Token: l.Token(), Call: time.Now().UnixNano()}
		err := s.InTx(ctx, func(tx store.Tx) error {
			if err := twice.Fenced(ctx, tx, l); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE "+RegisterTable+" SET value = $1, token = $2 WHERE service = $3", v, l.Token(), node.Service()); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+LogTable+" (service, kind, token, value, instance) VALUES ($1, 'leader', $2, $3, $4)",
				node.Service(), l.Token(), v, node.ID())
			return err
		})
		op.Return = time.Now().UnixNano()
		switch {
		case err == nil:
			op.Result = "ok"
		case errors.Is(err, twice.ErrFenced):
			op.Result = "fenced"
		default:
			op.Result = "unknown"
		}
		if ctx.Err() != nil && op.Result == "unknown" {
			return // shutting down; the outcome is not worth a history entry
		}
		em.emit(Event{Event: "op", Token: l.Token(), Op: op})
		if op.Result == "fenced" {
			return
		}
		sleep(ctx, opPeriod)
	}
}

func checkReader(ctx context.Context, node *twice.Node, em *emitter) {
	for ctx.Err() == nil {
		op := &Op{Kind: "read", Call: time.Now().UnixNano()}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := node.Store().Reader().QueryRow(rctx, "SELECT value FROM "+RegisterTable+" WHERE service = $1", node.Service()).Scan(&op.Value)
		cancel()
		op.Return = time.Now().UnixNano()
		if err == nil {
			op.Result = "ok"
			em.emit(Event{Event: "op", Op: op})
		}
		sleep(ctx, opPeriod)
	}
}

func checkLocker(ctx context.Context, node *twice.Node, em *emitter, unique func() int64) {
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		k, err := node.Locks().Acquire(actx, "check", nil)
		cancel()
		if err != nil {
			sleep(ctx, opPeriod)
			continue
		}
		err = node.Store().InTx(ctx, func(tx store.Tx) error {
			if err := k.Check(ctx, tx); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+LogTable+" (service, kind, token, value, instance) VALUES ($1, 'lock', $2, $3, $4)",
				node.Service(), k.Token(), unique(), node.ID())
			return err
		})
		if err == nil {
			em.emit(Event{Event: "locked", Token: k.Token()})
		}
		sleep(ctx, opPeriod/2)
		_ = k.Release(context.WithoutCancel(ctx))
		sleep(ctx, opPeriod/2)
	}
}

// checkConsumers joins the checker's two groups; the node closes them when it drains.
func checkConsumers(ctx context.Context, node *twice.Node) error {
	record := "INSERT INTO " + EffectsCheckTable + " (service, grp, event_id, instance) VALUES ($1, $2, $3, $4)"
	_, err := node.Events().Subscribe(ctx, events.GroupConfig{Name: CheckGroupEO, Topics: []string{CheckTopic}, Mode: events.ExactlyOnce,
		HandleTx: func(ctx context.Context, tx store.Tx, e events.Event) error {
			_, err := tx.Exec(ctx, record, node.Service(), CheckGroupEO, e.ID, node.ID())
			return err
		}})
	if err != nil {
		return err
	}
	_, err = node.Events().Subscribe(ctx, events.GroupConfig{Name: CheckGroupShared, Topics: []string{CheckTopic}, Mode: events.Shared,
		Handle: func(ctx context.Context, e events.Event) error {
			_, err := node.Store().Exec(ctx, record, node.Service(), CheckGroupShared, e.ID, node.ID())
			return err
		}})
	return err
}

// checkPublisher publishes an event per transaction and holds some commits back, so that
// events commit out of id order: a reader that trusted ids would skip the late ones.
func checkPublisher(ctx context.Context, node *twice.Node) {
	hold := 8 * time.Millisecond
	if node.Store().Dialect() == store.SQLite {
		hold = 2 * time.Millisecond // a SQLite write transaction holds every writer up
	}
	for i := 0; ctx.Err() == nil; i++ {
		_ = node.Store().InTx(ctx, func(tx store.Tx) error {
			_, err := node.Events().PublishTx(ctx, tx, events.Message{Topic: CheckTopic, Key: strconv.Itoa(i % 8), Payload: []byte(node.ID())})
			if err == nil && i%3 == 0 {
				sleep(ctx, time.Duration(rand.Int64N(int64(hold))))
			}
			return err
		})
		sleep(ctx, opPeriod/2)
	}
}
