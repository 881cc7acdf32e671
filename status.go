package twice

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/partition"
	"github.com/twicehq/twice/store"
)

// ServiceStatus is what the cluster looks like for one service: its instances, who leads,
// and the locks held. `twice status` prints it.
type ServiceStatus struct {
	Service     string       `json:"service"`
	Leader      string       `json:"leader"` // instance id; empty when nobody leads
	LeaderToken int64        `json:"leader_token,omitempty"`
	Members     []Member     `json:"members"`
	Locks       []lease.Info `json:"locks"`
	// Partitions summarizes each partition set (and event group) by instance; their
	// leases are not listed among Locks.
	Partitions []PartitionSetStatus `json:"partitions,omitempty"`
	// Requests sums the HTTP requests that the instances listed in Members counted, each
	// since it started (see [Node.CountRequest]): Requests.Availability() is the service's
	// request-based availability over them.
	Requests cluster.Requests `json:"requests"`
}

// PartitionSetStatus is one partition set as its leases show it: its members, and how many
// partitions each instance holds.
type PartitionSetStatus struct {
	// Set is the set's name, or "events/<group>" for an event consumer group.
	Set     string         `json:"set"`
	Members []string       `json:"members"`
	Held    map[string]int `json:"held"` // instance → partitions held
	// Owners is who holds each partition: partition number → instance. A partition nobody
	// holds is absent.
	Owners map[int]string `json:"owners,omitempty"`
}

// partitionSets takes the leases of partition sets and event groups out of held, and
// summarizes them by set.
func partitionSets(held []lease.Info) (locks []lease.Info, sets []PartitionSetStatus) {
	bySet := map[string]*PartitionSetStatus{}
	for _, i := range held {
		set, kind, ok := partitionLease(i.Name)
		if !ok {
			locks = append(locks, i)
			continue
		}
		st := bySet[set]
		if st == nil {
			st = &PartitionSetStatus{Set: set, Held: map[string]int{}, Owners: map[int]string{}}
			bySet[set] = st
		}
		if kind == "m" {
			st.Members = append(st.Members, i.Holder)
		} else {
			st.Held[i.Holder]++
			// partitionLease checked that the name ends in the partition's number.
			n, _ := strconv.Atoi(i.Name[strings.LastIndexByte(i.Name, '/')+1:])
			st.Owners[n] = i.Holder
		}
	}
	for _, st := range bySet {
		slices.Sort(st.Members)
		sets = append(sets, *st)
	}
	slices.SortFunc(sets, func(a, b PartitionSetStatus) int { return strings.Compare(a.Set, b.Set) })
	return locks, sets
}

// partitionLease parses the name of a partition set's lease, or an event group's (its set
// named "events/<group>").
func partitionLease(name string) (set, kind string, ok bool) {
	if set, kind, ok = partition.ParseLease(partition.Prefix, name); ok {
		return set, kind, true
	}
	if set, kind, ok = partition.ParseLease(events.LeasePrefix, name); ok {
		return events.LeasePrefix + set, kind, true
	}
	return "", "", false
}

// Status reads the status of service from s, or of every service when service is empty. It
// only reads; it does not register anything.
func Status(ctx context.Context, s *store.Store, service string) ([]ServiceStatus, error) {
	if err := store.NewMigrator(s, Components()...).Check(ctx); err != nil {
		if errors.Is(err, store.ErrMigrationsPending) {
			return nil, fmt.Errorf("twice: %s has no twice schema yet, or an old one: %w", s, err)
		}
		return nil, err
	}
	services := []string{service}
	if service == "" {
		var err error
		if services, err = cluster.Services(ctx, s); err != nil {
			return nil, err
		}
	}
	out := make([]ServiceStatus, 0, len(services))
	for _, svc := range services {
		st := ServiceStatus{Service: svc}
		var err error
		if st.Members, err = Members(ctx, s, svc); err != nil {
			return nil, err
		}
		for _, m := range st.Members {
			if m.Report != nil {
				st.Requests = st.Requests.Add(m.Report.Requests)
			}
		}
		l, err := lease.Lookup(ctx, s, svc, cluster.LeaderLease)
		if err != nil && !errors.Is(err, lease.ErrNotFound) {
			return nil, err
		}
		if l.Held() {
			st.Leader, st.LeaderToken = l.Holder, l.Token
		}
		held, err := lease.List(ctx, s, svc, "")
		if err != nil {
			return nil, err
		}
		held = slices.DeleteFunc(held, func(i lease.Info) bool { return i.Name == cluster.LeaderLease })
		st.Locks, st.Partitions = partitionSets(held)
		out = append(out, st)
	}
	return out, nil
}
