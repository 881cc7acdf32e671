package instance

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/partition"
	"github.com/twicehq/twice/store"
)

// CheckWorkloads are the workloads of the consistency checker's instances (internal/check),
// each in its own file:
//   - check-register: while leading, write unique values to the register, each fenced by
//     the term's token, and log each write; a term's writer goes on after the term ends, as
//     a worker that does not notice a pause would, until a write is refused. Every instance
//     reads the register.
//   - check-locks: take the lock "check" and log a fenced write under it.
//   - check-partitions: join the partition set "check" and, for each partition assigned,
//     log fenced writes under its token; the writer goes on after the revocation, as a
//     worker that does not notice a pause would, until a write is refused.
//   - check-events: publish events in transactions that commit late at random, and consume
//     them in an exactly-once group and a shared group that record each handling.
//   - check-jobs: enqueue jobs and work them, and declare a one-second schedule.
//   - check-workflows: start step flows (five steps that write to the database, one flow
//     in five failing at its fourth) and run them.
//   - check-converge: set a setting and change a cached row in one transaction now and
//     then, keeping the cache warm.
//   - check-http: serve HTTP for the checker's session and idempotency client.
//   - realtime: serve the real-time hub for the checker's clients.
//
// The writers among them stop when the instance is asked to quiesce (SIGUSR1), so the
// consumers and workers can catch up before the end.
func CheckWorkloads() []Workload {
	return []Workload{CheckRegister{}, CheckLocks{}, CheckPartitions{}, CheckEvents{}, CheckJobs{}, CheckWorkflows{}, CheckConverge{}, CheckHTTP{}, Realtime{}}
}

// CheckTopic is the topic the checker's instances publish, and CheckGroupEO and
// CheckGroupShared the groups that consume it.
const (
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

// loops runs the goroutines of a workload until its stop function is called.
type loops struct {
	ctx    context.Context // ends at stop
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newLoops(ctx context.Context) *loops {
	l := &loops{}
	l.ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	return l
}

func (l *loops) stop() {
	l.cancel()
	l.wg.Wait()
}

// CheckRegister is the workload "check-register" (see [CheckWorkloads]).
type CheckRegister struct{}

// Name implements Workload.
func (CheckRegister) Name() string { return "check-register" }

func (CheckRegister) start(ctx context.Context, in *env) (func(), error) {
	if _, err := in.node.Store().Exec(ctx, "INSERT INTO "+RegisterTable+" (service, value, token) VALUES ($1, 0, 0) ON CONFLICT (service) DO NOTHING",
		in.node.Service()); err != nil {
		return nil, err
	}
	l := newLoops(ctx)
	in.node.Leader().OnElected(func(term context.Context) {
		ls := lease.FromContext(term)
		l.wg.Go(func() { checkWriter(l.ctx, in, ls) })
	})
	l.wg.Go(func() { checkReader(l.ctx, in) })
	return l.stop, nil
}

func checkWriter(ctx context.Context, in *env, l *lease.Lease) {
	node, s := in.node, in.node.Store()
	for ctx.Err() == nil {
		v := in.unique()
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
		in.emit(Event{Event: "op", Token: l.Token(), Op: op})
		if op.Result == "fenced" {
			return
		}
		loop.Sleep(ctx, opPeriod)
	}
}

func checkReader(ctx context.Context, in *env) {
	for ctx.Err() == nil {
		op := &Op{Kind: "read", Call: time.Now().UnixNano()}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := in.node.Store().Reader().QueryRow(rctx, "SELECT value FROM "+RegisterTable+" WHERE service = $1", in.node.Service()).Scan(&op.Value)
		cancel()
		op.Return = time.Now().UnixNano()
		if err == nil {
			op.Result = "ok"
			in.emit(Event{Event: "op", Op: op})
		}
		loop.Sleep(ctx, opPeriod)
	}
}

// CheckLocks is the workload "check-locks" (see [CheckWorkloads]).
type CheckLocks struct{}

// Name implements Workload.
func (CheckLocks) Name() string { return "check-locks" }

func (CheckLocks) start(ctx context.Context, in *env) (func(), error) {
	l := newLoops(ctx)
	l.wg.Go(func() { checkLocker(l.ctx, in) })
	return l.stop, nil
}

func checkLocker(ctx context.Context, in *env) {
	node := in.node
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		k, err := node.Locks().Acquire(actx, "check", nil)
		cancel()
		if err != nil {
			loop.Sleep(ctx, opPeriod)
			continue
		}
		err = node.Store().InTx(ctx, func(tx store.Tx) error {
			if err := k.Check(ctx, tx); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+LogTable+" (service, kind, token, value, instance) VALUES ($1, 'lock', $2, $3, $4)",
				node.Service(), k.Token(), in.unique(), node.ID())
			return err
		})
		if err == nil {
			in.emit(Event{Event: "locked", Token: k.Token()})
		}
		loop.Sleep(ctx, opPeriod/2)
		_ = k.Release(context.WithoutCancel(ctx))
		loop.Sleep(ctx, opPeriod/2)
	}
}

// CheckPartitions is the workload "check-partitions" (see [CheckWorkloads]).
type CheckPartitions struct{}

// CheckPartitionSet is the partition set of [CheckPartitions], and CheckPartitionCount its
// number of partitions.
const (
	CheckPartitionSet   = "check"
	CheckPartitionCount = 4
)

// Name implements Workload.
func (CheckPartitions) Name() string { return "check-partitions" }

func (CheckPartitions) start(ctx context.Context, in *env) (func(), error) {
	l := newLoops(ctx)
	set, err := in.node.Partitions().Join(ctx, partition.Config{Name: CheckPartitionSet, Partitions: CheckPartitionCount,
		OnAssigned: func(_ context.Context, a *partition.Assignment) {
			in.emit(Event{Event: "assigned", Key: strconv.Itoa(a.Partition()), Token: a.Token()})
			l.wg.Go(func() { checkPartitionWriter(in, a) })
		}})
	if err != nil {
		return nil, err
	}
	return func() {
		_ = set.Close(context.Background())
		l.stop()
	}, nil
}

// checkPartitionWriter logs fenced writes for a's partition, its value the partition, until
// one is refused or the instance quiesces. It does not watch a's context on purpose.
func checkPartitionWriter(in *env, a *partition.Assignment) {
	node, ctx := in.node, in.writing
	for ctx.Err() == nil {
		err := node.Store().InTx(ctx, func(tx store.Tx) error {
			if err := a.Check(ctx, tx); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+LogTable+" (service, kind, token, value, instance) VALUES ($1, 'partition', $2, $3, $4)",
				node.Service(), a.Token(), a.Partition(), node.ID())
			return err
		})
		if errors.Is(err, partition.ErrFenced) {
			return
		}
		loop.Sleep(ctx, opPeriod)
	}
}

// CheckEvents is the workload "check-events" (see [CheckWorkloads]).
type CheckEvents struct{}

// Name implements Workload.
func (CheckEvents) Name() string { return "check-events" }

func (CheckEvents) start(ctx context.Context, in *env) (func(), error) {
	if err := checkConsumers(ctx, in.node); err != nil {
		return nil, err
	}
	l := newLoops(ctx)
	l.wg.Go(func() { checkPublisher(in.writing, in.node) })
	return l.stop, nil
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
				loop.Sleep(ctx, time.Duration(rand.Int64N(int64(hold))))
			}
			return err
		})
		loop.Sleep(ctx, opPeriod/2)
	}
}
