package instance

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/partition"
	"github.com/twicehq/twice/store"
)

// PartitionWrites is the workload "partition-writes": the instance joins the partition set
// PartitionSet and, for each partition it is assigned, reports "assigned" (Key: the
// partition, Token: its epoch) and inserts a row into PartitionTable every few
// milliseconds, each checked with the assignment's fence. The writer ignores the end of
// its assignment, like a worker that does not notice it was paused or revoked, so that
// fencing alone must refuse its stale writes; the refusal is reported as "fenced", with
// the partition, its token and the writes it made. It reports "joining" just before it
// joins the set. A revocation is reported as "revoked"
// (Err: why, when the lease was lost rather than handed over), and a heartbeat that lands
// past dead-after as "stall".
type PartitionWrites struct {
	Partitions int `json:"partitions"`
	// NoWrites reports assignments and revocations only, for a benchmark of the
	// hand-overs themselves.
	NoWrites bool `json:"no_writes,omitempty"`
}

// PartitionSet is the set [PartitionWrites] joins.
const PartitionSet = "crash"

// Name implements Workload.
func (PartitionWrites) Name() string { return "partition-writes" }

func (w PartitionWrites) start(ctx context.Context, in *env) (func(), error) {
	in.node.OnHeartbeatStall(func(from, to time.Time) {
		in.emit(Event{Event: "stall", From: from.UnixNano(), T: to.UnixNano()})
	})
	in.emit(Event{Event: "joining"})
	set, err := in.node.Partitions().Join(ctx, partition.Config{Name: PartitionSet, Partitions: w.Partitions,
		OnAssigned: func(_ context.Context, a *partition.Assignment) {
			in.emit(Event{Event: "assigned", Key: strconv.Itoa(a.Partition()), Token: a.Token()})
			if !w.NoWrites {
				go partitionWriter(in.node, a, in.em)
			}
		},
		OnRevoked: func(ctx context.Context, a *partition.Assignment) {
			ev := Event{Event: "revoked", Key: strconv.Itoa(a.Partition()), Token: a.Token()}
			if ctx.Err() != nil {
				ev.Err = context.Cause(ctx).Error()
			}
			in.emit(ev)
		}})
	if err != nil {
		return nil, err
	}
	return func() { _ = set.Close(context.Background()) }, nil
}

// partitionWriter writes for a's partition under its token until a write is fenced.
func partitionWriter(node *twice.Node, a *partition.Assignment, em *emitter) {
	ctx := context.Background()
	var writes int
	for {
		err := node.Store().InTx(ctx, func(tx store.Tx) error {
			if err := a.Check(ctx, tx); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+PartitionTable+" (service, part, token, instance) VALUES ($1, $2, $3, $4)",
				node.Service(), a.Partition(), a.Token(), node.ID())
			return err
		})
		switch {
		case errors.Is(err, partition.ErrFenced):
			em.emit(Event{Event: "fenced", Key: strconv.Itoa(a.Partition()), Token: a.Token(), Writes: writes, Err: err.Error()})
			return
		case err != nil:
			if node.Store().Ping(ctx) != nil {
				return // the node is shutting down
			}
			em.emit(Event{Event: "write_error", Key: strconv.Itoa(a.Partition()), Token: a.Token(), Err: err.Error()})
		default:
			writes++
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// PartitionWrite is one accepted write of [PartitionWrites], in commit order.
type PartitionWrite struct {
	Partition int
	Token     int64
	Instance  string
}

// PartitionWritesOf returns the writes the owners of service's partitions made, in the
// order they committed (see [FencedWrites]: a write fenced by token n commits before n+1
// is issued).
func PartitionWritesOf(ctx context.Context, s *store.Store, service string) ([]PartitionWrite, error) {
	rows, err := s.Reader().Query(ctx, "SELECT part, token, instance FROM "+PartitionTable+" WHERE service = $1 ORDER BY id", service)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PartitionWrite
	for rows.Next() {
		var w PartitionWrite
		if err := rows.Scan(&w.Partition, &w.Token, &w.Instance); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}
