package partition

import (
	"cmp"
	"hash/fnv"
	"slices"
)

// view is what one instance knows at the start of a round: the set's live members and who
// holds each partition, as the lease table says.
type view struct {
	partitions int
	me         string
	members    []string       // the set's live members, me among them
	holders    map[int]string // partition → holder, for each held partition
	first      int            // the partition me starts from (see start)
	maxMoves   int            // at most this many takes and this many releases; 0: no cap
}

// plan decides what me gives back and what it takes this round. Every instance plans from
// its own reading of the table and changes only its own partitions: it gives back only
// partitions it holds, and takes only free ones, through a lease that one holder at a
// time can have. The plans agree when the readings do, and converge when they do not:
//
//   - With n members and P partitions, each should hold base = P/n, and the first
//     extra = P%n members by id base+1: its target, so that no one holds more than ⌈P/n⌉.
//     The targets depend on the membership alone, so instances that plan at the same
//     moment agree on them whatever each has moved meanwhile.
//   - An instance above its target gives back down to it.
//   - An instance below base takes free partitions up to base; one whose target is base+1
//     takes one more only while the free partitions outnumber what the members below base
//     still need.
//
// So a join moves only what the newcomer takes (the others give back no more than its
// share), a leave or a crash moves only the leaver's partitions, and nothing moves while
// the spread is already even: the assignment is sticky.
func plan(v view) (release, take []int) {
	n := len(v.members)
	if n == 0 || !slices.Contains(v.members, v.me) {
		return nil, nil
	}
	v.members = slices.Sorted(slices.Values(v.members))
	base, extra := v.partitions/n, v.partitions%n
	load := make(map[string]int, n)
	for _, m := range v.members {
		load[m] = 0
	}
	var mine []int
	for p, h := range v.holders {
		if _, ok := load[h]; ok {
			load[h]++
		}
		if h == v.me {
			mine = append(mine, p)
		}
	}
	// Farthest from where me starts first: that is what it gives back first, so that
	// instances keep the partitions they prefer and hand-overs are stable.
	slices.SortFunc(mine, func(a, b int) int { return cmp.Compare(v.dist(b), v.dist(a)) })

	// The first extra members by id may hold base+1: a choice every instance makes alike
	// from the membership alone, so that no instance's choice depends on loads that change
	// while the others move (a choice by load made two instances give a partition back
	// and take one again, under a join of 10 instances to 900 partitions).
	target := base
	if slices.Index(v.members, v.me) < extra {
		target = base + 1
	}
	if len(mine) > target {
		return capMoves(mine[:len(mine)-target], v.maxMoves), nil
	}
	free := v.partitions - len(v.holders)
	if free <= 0 || len(mine) == target {
		return nil, nil
	}
	want := min(target, base) - len(mine)
	if len(mine)+max(want, 0) == base && target > base {
		need := 0 // what the other members below base still need
		for _, m := range v.members {
			if m != v.me && load[m] < base {
				need += base - load[m]
			}
		}
		if free-max(want, 0) > need {
			want = max(want, 0) + 1
		}
	}
	for i := 0; i < v.partitions && len(take) < min(want, free); i++ {
		p := (v.first + i) % v.partitions
		if _, held := v.holders[p]; !held {
			take = append(take, p)
		}
	}
	return nil, capMoves(take, v.maxMoves)
}

// dist is how far p lies after the partition me starts from.
func (v view) dist(p int) int { return (p - v.first + v.partitions) % v.partitions }

func capMoves(ps []int, maxMoves int) []int {
	if maxMoves > 0 && len(ps) > maxMoves {
		return ps[:maxMoves]
	}
	return ps
}

// start is the partition instance starts from when it takes free partitions and gives back
// the farthest first: a hash of its id, so that instances prefer different partitions.
func start(instance string, partitions int) int {
	h := fnv.New32a()
	h.Write([]byte(instance))
	return int(h.Sum32() % uint32(partitions))
}
