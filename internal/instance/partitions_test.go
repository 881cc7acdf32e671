package instance_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/store"
)

// Three instances own six partitions and write for each under its fence. One after the
// other, an instance is killed with SIGKILL (and started again) or frozen with SIGSTOP
// past its lease. Each time the others take its partitions over; a rejoining instance
// takes only its share, and only from the others' surplus; a frozen one's stale writes
// are refused when it wakes. In commit order, no partition's writes ever go back to an
// older token, and every token's writes come from the instance it was assigned to.
func TestPartitionsSurviveKillsAndPauses(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		partitionsUnderFaults(t, db)
	})
}

func partitionsUnderFaults(t *testing.T, db testdb.DB) {
	ctx := context.Background()
	s := db.Open(t, nil)
	if _, err := store.NewMigrator(s, instance.Components()...).Up(ctx); err != nil {
		t.Fatal(err)
	}
	const procs, parts = 3, 6
	const ttl = time.Second
	opts := instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc",
		Workloads: []instance.Workload{instance.PartitionWrites{Partitions: parts}},
		LeaseTTL:  ttl, LeaderPoll: 50 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond, DeadAfter: 800 * time.Millisecond}
	g := instance.NewGroup(spawner(t), opts, t.Output())
	defer g.Stop(10 * time.Second)
	for i := range procs {
		if _, err := g.Start(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	// owners replays the "assigned" events: each partition's latest assignment.
	owners := func() map[int]instance.Event {
		log, _ := g.Log()
		out := map[int]instance.Event{}
		for _, e := range log {
			if e.Event == "assigned" {
				p, _ := strconv.Atoi(e.Key)
				if e.Token > out[p].Token {
					out[p] = e
				}
			}
		}
		return out
	}
	// settled waits until every partition's latest assignment is to a live process other
	// than skip, each process holding two.
	settled := func(what string, skip int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second) // liveness, not a timing
		for {
			o := owners()
			load := map[int]int{}
			for _, e := range o {
				if p := g.Proc(e.Proc); p != nil && !p.Exited() && p.ID == e.ID && e.Proc != skip {
					load[e.Proc]++
				}
			}
			n := procs
			if skip >= 0 {
				n--
			}
			even := len(o) == parts && len(load) == n
			for _, l := range load {
				even = even && l == parts/n
			}
			if even {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the partitions did not settle: %v", what, o)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	settled("start", -1)

	var takeovers []time.Duration
	for round := range 6 {
		slot := round % procs
		victim := g.Proc(slot)
		var held []int
		heldToken := map[int]int64{}
		for p, e := range owners() {
			if e.Proc == slot && e.ID == victim.ID {
				held = append(held, p)
				heldToken[p] = e.Token
			}
		}
		_, from := g.Log()
		t0 := time.Now()
		pause := round%2 == 1
		if pause {
			if err := g.Signal(slot, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		} else if err := g.Kill(slot); err != nil {
			t.Fatal(err)
		}
		// The survivors take the victim's partitions over. (On SQLite a process frozen
		// inside a write transaction holds the file's write lock: nobody can take anything
		// over until it resumes.)
		resumed := false
		for _, p := range held {
			// Once a frozen SQLite writer has resumed, it may take the partition back
			// itself, under a new token.
			took := func(e instance.Event) bool {
				return e.Event == "assigned" && e.Key == strconv.Itoa(p) && (e.Proc != slot || resumed && e.Token > heldToken[p])
			}
			wctx, cancel := context.WithTimeout(ctx, 5*ttl)
			_, _, err := g.WaitFor(wctx, from, took)
			cancel()
			if err != nil && pause && !resumed && db.Dialect == store.SQLite {
				t.Logf("round %d: the frozen instance holds SQLite's write lock; the takeover waits for it to resume", round)
				if err := g.Signal(slot, syscall.SIGCONT); err != nil {
					t.Fatal(err)
				}
				resumed = true
			}
			if err != nil {
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, _, err = g.WaitFor(wctx, from, took)
				cancel()
			}
			if err != nil {
				t.Fatalf("round %d: partition %d of the %s instance not taken over: %v", round, p, map[bool]string{true: "paused", false: "killed"}[pause], err)
			}
		}
		takeovers = append(takeovers, time.Since(t0))
		if resumed {
			settled(fmt.Sprintf("round %d, after the fault and the resume", round), -1)
		} else {
			settled(fmt.Sprintf("round %d, after the fault", round), slot)
		}

		if !resumed {
			_, from = g.Log()
		}
		if pause {
			if err := g.Signal(slot, syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			// Its writers wake with their old tokens: each is refused.
			for _, p := range held {
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, _, err := g.WaitFor(wctx, from, func(e instance.Event) bool {
					return e.Event == "fenced" && e.Proc == slot && e.Key == strconv.Itoa(p)
				})
				cancel()
				if err != nil {
					t.Fatalf("round %d: the paused owner's stale write to partition %d was not refused: %v", round, p, err)
				}
			}
		} else if _, err := g.Start(ctx, slot); err != nil {
			t.Fatal(err)
		}
		settled(fmt.Sprintf("round %d, after the return", round), -1)
		// The newcomer took its share and only that; nobody else took anything. (Unless an
		// instance's heartbeats stalled meanwhile, as a loaded machine makes them: its
		// leases may have run out, and their partitions moved for that reason.)
		since, _ := g.Since(from)
		if i := slices.IndexFunc(since, func(e instance.Event) bool {
			if pause && e.Proc == slot {
				return false // the frozen instance's own stall and lost leases: expected
			}
			return e.Event == "stall" || e.Event == "revoked" && e.Err != ""
		}); i >= 0 {
			t.Logf("round %d: slot %d's heartbeats stalled or a lease ran out during the rejoin (%s); its moves are not counted", round, since[i].Proc, since[i].Event)
			continue
		}
		moved := 0
		for _, e := range since {
			if e.Event != "assigned" {
				continue
			}
			moved++
			if e.Proc != slot {
				t.Errorf("round %d: partition %s moved to slot %d while slot %d rejoined", round, e.Key, e.Proc, slot)
			}
		}
		if limit := (parts + procs - 1) / procs; moved > limit {
			t.Errorf("round %d: the rejoin moved %d partitions, more than ⌈%d/%d⌉ = %d", round, moved, parts, procs, limit)
		}
	}
	g.Stop(10 * time.Second)

	// In commit order, a partition's tokens never go back, and each token writes as the
	// instance it was assigned to.
	log, _ := g.Log()
	assignee := map[[2]int64]string{}
	for _, e := range log {
		if e.Event == "assigned" {
			p, _ := strconv.Atoi(e.Key)
			assignee[[2]int64{int64(p), e.Token}] = e.ID
		}
	}
	writes, err := instance.PartitionWritesOf(ctx, s, "svc")
	if err != nil {
		t.Fatal(err)
	}
	last := map[int]int64{}
	for n, w := range writes {
		if w.Token < last[w.Partition] {
			t.Fatalf("write %d to partition %d has token %d after token %d: a stale write was accepted", n, w.Partition, w.Token, last[w.Partition])
		}
		last[w.Partition] = w.Token
		if id := assignee[[2]int64{int64(w.Partition), w.Token}]; id != w.Instance {
			t.Fatalf("write %d to partition %d with token %d by %s, assigned to %q", n, w.Partition, w.Token, w.Instance, id)
		}
	}
	slices.Sort(takeovers)
	t.Logf("%d writes; takeover after a kill or a pause: min %v, max %v (lease TTL %v)", len(writes), takeovers[0], takeovers[len(takeovers)-1], ttl)
}
