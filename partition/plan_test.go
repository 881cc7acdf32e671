package partition

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// sim simulates the lease table: members plan in turns and act on what they planned,
// a take failing when the partition was taken meanwhile, as TryAcquire does.
type sim struct {
	p        int
	members  []string
	holders  map[int]string
	maxMoves int
	rng      *rand.Rand
}

func (c *sim) view(me string) view {
	return view{partitions: c.p, me: me, members: slices.Clone(c.members), holders: maps(c.holders),
		first: start(me, c.p), maxMoves: c.maxMoves}
}

func maps(m map[int]string) map[int]string {
	out := make(map[int]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// round lets every member plan, all from one snapshot when stale (as instances that look
// at the same moment), or each from the table as the one before left it; it reports
// whether anything moved.
func (c *sim) round(stale bool) bool {
	order := slices.Clone(c.members)
	c.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	views := map[string]view{}
	for _, m := range order {
		views[m] = c.view(m)
	}
	moved := false
	for _, m := range order {
		v := views[m]
		if !stale {
			v = c.view(m)
		}
		release, take := plan(v)
		for _, p := range release {
			if c.holders[p] != m {
				panic(fmt.Sprintf("%s gives back partition %d held by %q", m, p, c.holders[p]))
			}
			delete(c.holders, p)
			moved = true
		}
		for _, p := range take {
			if _, held := c.holders[p]; !held {
				c.holders[p] = m
				moved = true
			}
		}
	}
	return moved
}

// settle runs rounds until nothing moves, and fails if that takes too long.
func (c *sim) settle(t testing.TB, stale bool) {
	t.Helper()
	for i := 0; i < 10*c.p+20; i++ {
		if !c.round(stale) {
			return
		}
	}
	t.Fatalf("no fixed point: P=%d members=%v holders=%v", c.p, c.members, c.holders)
}

// balanced checks that every partition is held, by a member, and that each member holds
// P/n or P/n+1 of them, at most ⌈P/n⌉.
func (c *sim) balanced(t testing.TB) {
	t.Helper()
	n := len(c.members)
	if n == 0 {
		return
	}
	load := map[string]int{}
	for p := 0; p < c.p; p++ {
		h, ok := c.holders[p]
		if !ok || !slices.Contains(c.members, h) {
			t.Fatalf("partition %d has no live owner (%q): P=%d members=%v holders=%v", p, h, c.p, c.members, c.holders)
		}
		load[h]++
	}
	base, extra, above := c.p/n, c.p%n, 0
	for _, m := range c.members {
		switch load[m] {
		case base:
		case base + 1:
			above++
		default:
			t.Fatalf("%s holds %d of %d partitions with %d members: loads %v", m, load[m], c.p, n, load)
		}
	}
	if above != extra {
		t.Fatalf("%d members above %d, want %d: loads %v", above, base, extra, load)
	}
}

// moved counts the partitions whose holder differs between before and after.
func moved(before, after map[int]string) int {
	n := 0
	for p, h := range after {
		if before[p] != h {
			n++
		}
	}
	return n
}

func TestPlanBalancesAndSticks(t *testing.T) {
	for _, stale := range []bool{false, true} {
		for _, p := range []int{1, 2, 3, 7, 8, 16, 64, 100} {
			t.Run(fmt.Sprintf("P%d/stale=%v", p, stale), func(t *testing.T) {
				c := &sim{p: p, holders: map[int]string{}, rng: rand.New(rand.NewPCG(uint64(p), 1))}
				for i := range 7 {
					before := maps(c.holders)
					name := fmt.Sprintf("i%d", i)
					c.members = append(c.members, name)
					c.settle(t, stale)
					c.balanced(t)
					n := len(c.members)
					// A join moves partitions only to the newcomer, at most its share.
					if got, limit := moved(before, c.holders), (p+n-1)/n; i > 0 && got > limit {
						t.Fatalf("join of %s moved %d partitions, more than ⌈%d/%d⌉ = %d", name, got, p, n, limit)
					}
					for q, h := range c.holders {
						if b, ok := before[q]; ok && b != h && h != name {
							t.Fatalf("join of %s moved partition %d from %s to %s", name, q, b, h)
						}
					}
				}
				for len(c.members) > 1 {
					// A leave (or a crash: its leases end) frees its partitions; only they move.
					gone := c.members[c.rng.IntN(len(c.members))]
					c.members = slices.DeleteFunc(c.members, func(m string) bool { return m == gone })
					kept := map[int]string{}
					for q, h := range c.holders {
						if h != gone {
							kept[q] = h
						}
					}
					c.holders = maps(kept)
					c.settle(t, stale)
					c.balanced(t)
					for q, h := range kept {
						if c.holders[q] != h {
							t.Fatalf("leave of %s moved partition %d from %s to %s", gone, q, h, c.holders[q])
						}
					}
				}
			})
		}
	}
}

// A cap on moves slows a rebalance down to a few partitions per round, and it still ends
// balanced.
func TestPlanMaxMoves(t *testing.T) {
	c := &sim{p: 64, holders: map[int]string{}, maxMoves: 2, rng: rand.New(rand.NewPCG(2, 2))}
	c.members = []string{"a"}
	c.settle(t, false)
	c.members = append(c.members, "b", "c")
	before := maps(c.holders)
	c.round(false)
	if got := moved(before, c.holders); got > 2*3 {
		t.Fatalf("one round with MaxMoves 2 moved %d partitions", got)
	}
	c.settle(t, false)
	c.balanced(t)
}

// A member holding partitions the others do not count as members (an instance whose
// membership ran out before its partitions did) keeps nobody from converging.
func TestPlanIgnoresHoldersOutsideTheSet(t *testing.T) {
	c := &sim{p: 8, members: []string{"a", "b"}, holders: map[int]string{0: "x", 1: "x", 2: "x"},
		rng: rand.New(rand.NewPCG(3, 3))}
	c.settle(t, true)
	for q := 3; q < 8; q++ {
		if _, ok := c.holders[q]; !ok {
			t.Fatalf("partition %d left free: %v", q, c.holders)
		}
	}
	delete(c.holders, 0)
	delete(c.holders, 1)
	delete(c.holders, 2)
	c.settle(t, true)
	c.balanced(t)
}

// FuzzPlan starts from any assignment, members and staleness, and checks that the plans
// converge to an even spread without one member giving back what it does not hold.
func FuzzPlan(f *testing.F) {
	f.Add(uint8(8), uint8(3), uint64(1), false, []byte{0, 1, 2, 0, 1})
	f.Add(uint8(1), uint8(5), uint64(2), true, []byte{})
	f.Add(uint8(100), uint8(7), uint64(3), true, []byte{6, 6, 6, 6, 6, 6, 6, 6, 9, 9})
	f.Fuzz(func(t *testing.T, p, n uint8, seed uint64, stale bool, owners []byte) {
		if p == 0 || n == 0 || n > 20 {
			return
		}
		c := &sim{p: int(p), holders: map[int]string{}, rng: rand.New(rand.NewPCG(seed, 0))}
		for i := range int(n) {
			c.members = append(c.members, fmt.Sprintf("m%02d", i))
		}
		for q, o := range owners {
			if q >= int(p) {
				break
			}
			if int(o) < int(n)+2 { // a few holders outside the set
				c.holders[q] = fmt.Sprintf("m%02d", o)
			}
		}
		c.settle(t, stale)
		for q, h := range c.holders {
			if !slices.Contains(c.members, h) {
				delete(c.holders, q) // their leases run out
			}
		}
		c.settle(t, stale)
		c.balanced(t)
	})
}
