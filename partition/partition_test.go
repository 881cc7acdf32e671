package partition_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/partition"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/twicetest"
)

const settle = 30 * time.Second // a liveness bound for a loaded machine, not a timing

// ledger records what every instance does with the set's partitions, and fails the test
// when a partition is active on two instances at once, or its epoch goes back.
type ledger struct {
	t      *testing.T
	mu     sync.Mutex
	active map[int]string // partition → the instance it is active on
	tokens map[int]int64  // partition → the highest token assigned
	takes  int
}

func newLedger(t *testing.T) *ledger {
	return &ledger{t: t, active: map[int]string{}, tokens: map[int]int64{}}
}

func (l *ledger) config(n *twice.Node, name string, parts int) partition.Config {
	return partition.Config{
		Name: name, Partitions: parts,
		OnAssigned: func(ctx context.Context, a *partition.Assignment) {
			l.mu.Lock()
			defer l.mu.Unlock()
			p := a.Partition()
			if other, ok := l.active[p]; ok {
				l.t.Errorf("partition %d assigned to %s while active on %s", p, n.ID(), other)
			}
			if a.Token() <= l.tokens[p] {
				l.t.Errorf("partition %d assigned to %s with token %d after %d", p, n.ID(), a.Token(), l.tokens[p])
			}
			l.active[p], l.tokens[p] = n.ID(), a.Token()
			l.takes++
		},
		OnRevoked: func(ctx context.Context, a *partition.Assignment) {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.active[a.Partition()] == n.ID() {
				delete(l.active, a.Partition())
			}
		},
	}
}

// spread reads which instance holds each partition, from the sets' own view; ok says every
// partition is held by exactly one of them and each holds P/n or P/n+1.
func spread(sets []*partition.Set) (holders map[int]int, ok bool) {
	holders = map[int]int{}
	p := sets[0].Partitions()
	for i, s := range sets {
		for _, q := range s.Mine() {
			if _, dup := holders[q]; dup {
				return holders, false
			}
			holders[q] = i
		}
		if n := len(s.Mine()); n < p/len(sets) || n > (p+len(sets)-1)/len(sets) {
			return holders, false
		}
	}
	return holders, len(holders) == p
}

func waitSpread(t *testing.T, sets []*partition.Set) map[int]int {
	t.Helper()
	var h map[int]int
	testnode.Eventually(t, settle, "the partitions spread evenly", func() bool {
		var ok bool
		h, ok = spread(sets)
		return ok
	})
	return h
}

func open(t *testing.T, db testdb.DB, n int) []*twice.Node {
	nodes := make([]*twice.Node, n)
	for i := range nodes {
		cfg := testnode.Steady()
		cfg.AdvertiseAddr = fmt.Sprintf("10.0.0.%d:8080", i+1)
		nodes[i] = testnode.Open(t, db, "svc", cfg)
	}
	return nodes
}

// Three instances share twelve partitions four each; every instance names the same owner,
// with its address, for every key; a join moves only the newcomer's share, and a leave
// only the leaver's partitions, handed over at once.
func TestSpreadJoinAndLeave(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		nodes := open(t, db, 3)
		l := newLedger(t)
		var sets []*partition.Set
		for _, n := range nodes[:2] {
			s, err := n.Partitions().Join(ctx, l.config(n, "rooms", 12))
			if err != nil {
				t.Fatal(err)
			}
			sets = append(sets, s)
		}
		before := waitSpread(t, sets)

		s3, err := nodes[2].Partitions().Join(ctx, l.config(nodes[2], "rooms", 12))
		if err != nil {
			t.Fatal(err)
		}
		sets = append(sets, s3)
		after := waitSpread(t, sets)
		moved := 0
		for p, i := range after {
			if before[p] != i {
				moved++
				if i != 2 {
					t.Errorf("the join moved partition %d from instance %d to %d, not to the newcomer", p, before[p], i)
				}
			}
		}
		if moved > 4 {
			t.Errorf("the join moved %d partitions, more than ⌈12/3⌉ = 4", moved)
		}

		keys := []string{"alice", "bob", "carol", "dave", "room:7", ""}
		testnode.Eventually(t, settle, "every instance names the same owner for each key", func() bool {
			for _, k := range keys {
				want, err := sets[0].Owner(k)
				if err != nil {
					return false
				}
				for i, s := range sets {
					o, err := s.Owner(k)
					if err != nil || o.Instance != want.Instance || o.Token != want.Token || o.Self != (nodes[i].ID() == o.Instance) {
						return false
					}
				}
				i := slices.IndexFunc(nodes, func(n *twice.Node) bool { return n.ID() == want.Instance })
				if i < 0 || want.Addr != fmt.Sprintf("10.0.0.%d:8080", i+1) || want.Partition != partition.Of(k, 12) {
					return false
				}
			}
			return true
		})

		kept := map[int]int{}
		for p, i := range after {
			if i != 1 {
				kept[p] = i
			}
		}
		if err := sets[1].Close(ctx); err != nil {
			t.Fatal(err)
		}
		if got := sets[1].Mine(); len(got) != 0 {
			t.Fatalf("a closed set still holds %v", got)
		}
		left := []*partition.Set{sets[0], sets[2]}
		final := waitSpread(t, left)
		for p, i := range kept {
			if want := map[int]int{0: 0, 2: 1}[i]; final[p] != want {
				t.Errorf("the leave moved partition %d, which the leaver did not hold", p)
			}
		}
		testnode.Eventually(t, settle, "every partition active on one instance", func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return len(l.active) == 12
		})
	})
}

// A crashed instance's partitions go to the others, under higher tokens, and a write the
// crashed owner fences with its old assignment is refused.
func TestCrashHandsOverFenced(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, st twicetest.Store) {
		ctx := context.Background()
		nodes := twicetest.Open(t, 3, &twicetest.Options{Store: st})
		var sets []*partition.Set
		for _, n := range nodes {
			s, err := n.Partitions().Join(ctx, partition.Config{Name: "shards", Partitions: 6})
			if err != nil {
				t.Fatal(err)
			}
			sets = append(sets, s)
		}
		waitSpread(t, sets)
		victim := sets[2].Mine()
		old := sets[2].Assignment(victim[0])
		twicetest.Crash(t, nodes[2])
		waitSpread(t, sets[:2])
		for _, p := range victim {
			var now int64
			for _, s := range sets[:2] {
				if a := s.Assignment(p); a != nil {
					now = a.Token()
				}
			}
			if p == victim[0] && now <= old.Token() {
				t.Errorf("partition %d taken over with token %d, not above the crashed owner's %d", p, now, old.Token())
			}
		}
		err := nodes[0].Store().InTx(ctx, func(tx store.Tx) error { return old.Check(ctx, tx) })
		if !errors.Is(err, partition.ErrFenced) {
			t.Fatalf("a write fenced by the crashed owner's assignment: %v, want ErrFenced", err)
		}
		p := victim[0]
		for _, s := range sets[:2] {
			if a := s.Assignment(p); a != nil {
				if err := nodes[0].Store().InTx(ctx, func(tx store.Tx) error { return s.Check(ctx, tx, p) }); err != nil {
					t.Fatalf("the new owner's fenced write: %v", err)
				}
			}
		}
	})
}

// Instances crash and come back at once, as restarted processes under new ids, ten times
// a few hundred milliseconds apart, with short leases (as internal/instance's kill tests
// run them): a newcomer joins while a dead one's leases may still run, and the partitions
// they free may belong by the plan to an instance that saw no death. The set still
// spreads over the live instances, by signals alone: the Backstop is an hour.
func TestCrashAndRestartTakesOverBeforeBackstop(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		cfg := testnode.Steady()
		cfg.Backstop = time.Hour
		cfg.LeaseTTL, cfg.DeadAfter, cfg.HeartbeatInterval = 500*time.Millisecond, 400*time.Millisecond, 100*time.Millisecond
		var nodes []*twice.Node
		var sets []*partition.Set
		join := func() {
			n := testnode.Open(t, db, "svc", cfg)
			s, err := n.Partitions().Join(ctx, partition.Config{Name: "shards", Partitions: 8})
			if err != nil {
				t.Fatal(err)
			}
			nodes, sets = append(nodes, n), append(sets, s)
		}
		for range 3 {
			join()
		}
		waitSpread(t, sets)
		live := []int{0, 1, 2}
		for range 10 {
			time.Sleep(100*time.Millisecond + rand.N(150*time.Millisecond))
			i := rand.IntN(3)
			twicetest.Crash(t, nodes[live[i]])
			join()
			live[i] = len(nodes) - 1
		}
		waitSpread(t, []*partition.Set{sets[live[0]], sets[live[1]], sets[live[2]]})
	})
}

// OnRevoked runs while the assignment still holds, so a hand-over can commit what it did
// under the partition's fence; the context of the partition's work ends after it.
func TestRevokeBeforeHandOver(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		nodes := open(t, db, 2)
		var mu sync.Mutex
		var committed []string
		ended := make(chan error, 1)
		cfg := partition.Config{Name: "one", Partitions: 1,
			OnAssigned: func(_ context.Context, a *partition.Assignment) {
				a.Go(func(ctx context.Context) {
					<-ctx.Done()
					ended <- context.Cause(ctx)
				})
			},
			OnRevoked: func(ctx context.Context, a *partition.Assignment) {
				err := nodes[0].Store().InTx(ctx, func(tx store.Tx) error { return a.Check(ctx, tx) })
				mu.Lock()
				committed = append(committed, fmt.Sprint(err))
				mu.Unlock()
				if partition.FromContext(ctx) != a {
					t.Errorf("OnRevoked's context does not carry its assignment")
				}
			},
		}
		s0, err := nodes[0].Partitions().Join(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, settle, "the first instance takes the partition", func() bool { return len(s0.Mine()) == 1 })
		s1, err := nodes[1].Partitions().Join(ctx, partition.Config{Name: "one", Partitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := s0.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-ended; !errors.Is(err, partition.ErrRevoked) {
			t.Errorf("OnAssigned's context ended with %v, want ErrRevoked", err)
		}
		mu.Lock()
		if len(committed) != 1 || committed[0] != "<nil>" {
			t.Errorf("the write in OnRevoked: %v, want one that commits", committed)
		}
		mu.Unlock()
		testnode.Eventually(t, settle, "the second instance takes it", func() bool { return len(s1.Mine()) == 1 })
	})
}

// A set's definition is fixed, and bad configurations are refused with what is wrong.
func TestJoinRefusesBadConfig(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		nodes := open(t, db, 2)
		if _, err := nodes[0].Partitions().Join(ctx, partition.Config{Name: "s", Partitions: 8}); err != nil {
			t.Fatal(err)
		}
		_, err := nodes[1].Partitions().Join(ctx, partition.Config{Name: "s", Partitions: 9})
		if err == nil || !strings.Contains(err.Error(), `set "s" has 8 partitions; this instance asks for 9`) {
			t.Errorf("joining with another number of partitions: %v", err)
		}
		if _, err := nodes[0].Partitions().Join(ctx, partition.Config{Name: "s", Partitions: 8}); err == nil ||
			!strings.Contains(err.Error(), "already joined") {
			t.Errorf("joining twice: %v", err)
		}
		for cfg, want := range map[*partition.Config]string{
			{Name: ""}:                               `Name ""`,
			{Name: "a/b"}:                            `Name "a/b"`,
			{Name: "x", Partitions: 5000}:            "Partitions 5000 must be from 1 to 4096",
			{Name: "x", MaxMoves: -1}:                "MaxMoves -1",
			{Name: "x", Rebalance: time.Microsecond}: "Rebalance 1µs",
		} {
			if _, err := nodes[0].Partitions().Join(ctx, *cfg); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Join(%+v): %v, want an error naming %q", *cfg, err, want)
			}
		}
		s, _ := nodes[0].Partitions().Sets()[0], 0
		if _, err := s.OwnerOf(8); err == nil {
			t.Errorf("OwnerOf(8) of a set of 8: no error")
		}
	})
}
