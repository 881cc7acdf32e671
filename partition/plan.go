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
//   - With n members and P partitions, each should hold base = P/n, and extra = P%n of
//     them base+1, so that no one holds more than ⌈P/n⌉.
//   - An instance below base takes free partitions up to base. One at base takes one
//     more only while fewer than extra members are above base and the free partitions
//     outnumber what the members below base still need.
//   - Members above base keep base+1 in the order (most held, then id); those beyond the
//     first extra of that order give back down to base, and anyone above ⌈P/n⌉ down to it.
//
// So a join moves only what the newcomer takes (the others give back no more than its
// share), a leave or a crash moves only the leaver's partitions, and nothing moves while
// the spread is already even: the assignment is sticky.
func plan(v view) (release, take []int) {
	n := len(v.members)
	if n == 0 || !slices.Contains(v.members, v.me) {
		return nil, nil
	}
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

	var over []string // the members above base, by (most held, id)
	for _, m := range v.members {
		if load[m] > base {
			over = append(over, m)
		}
	}
	slices.SortFunc(over, func(a, b string) int {
		if c := cmp.Compare(load[b], load[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	if i := slices.Index(over, v.me); i >= 0 {
		keep := base
		if i < extra {
			keep = base + 1
		}
		release = mine[:len(mine)-keep]
		return capMoves(release, v.maxMoves), nil
	}

	free := v.partitions - len(v.holders)
	if free <= 0 {
		return nil, nil
	}
	want := base - load[v.me]
	if want <= 0 && extra > 0 && len(over) < extra {
		need := 0 // what the other members below base still need
		for _, m := range v.members {
			if m != v.me && load[m] < base {
				need += base - load[m]
			}
		}
		if free > need {
			want = 1
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
