package twice

import (
	"reflect"
	"testing"

	"github.com/twicehq/twice/lease"
)

// Only the leases of partition sets and event groups are summarized; every other lease
// stays a lock, whatever it looks like.
func TestPartitionLease(t *testing.T) {
	for name, want := range map[string][3]string{
		"part/rooms/p/3":         {"rooms", "p", "ok"},
		"part/rooms/m/vm-1-ab":   {"rooms", "m", "ok"},
		"events/emails/p/0":      {"events/emails", "p", "ok"},
		"events/emails/m/i-1":    {"events/emails", "m", "ok"},
		"part/rooms/p/x":         {"", "", ""},
		"part/rooms/q/1":         {"", "", ""},
		"part//p/1":              {"", "", ""},
		"part/rooms/p/":          {"", "", ""},
		"lock:nightly":           {"", "", ""},
		"sem:pool#2":             {"", "", ""},
		"leader":                 {"", "", ""},
		"partition/rooms/p/1":    {"", "", ""},
		"events/emails/p/1/more": {"", "", ""},
	} {
		set, kind, ok := partitionLease(name)
		got := [3]string{set, kind, map[bool]string{true: "ok"}[ok]}
		if got != want {
			t.Errorf("partitionLease(%q) = %v, want %v", name, got, want)
		}
	}
}

// Each set's partitions are summarized by instance and named with their owner; the other
// leases stay locks.
func TestPartitionSets(t *testing.T) {
	held := []lease.Info{
		{Name: "events/emails/p/0", Holder: "a"}, {Name: "events/emails/p/3", Holder: "b"},
		{Name: "events/emails/p/1", Holder: "a"}, {Name: "events/emails/m/a", Holder: "a"},
		{Name: "events/emails/m/b", Holder: "b"}, {Name: "part/rooms/p/12", Holder: "c"},
		{Name: "lock:nightly", Holder: "c"},
	}
	locks, sets := partitionSets(held)
	if len(locks) != 1 || locks[0].Name != "lock:nightly" {
		t.Errorf("locks %+v", locks)
	}
	want := []PartitionSetStatus{
		{Set: "events/emails", Members: []string{"a", "b"}, Held: map[string]int{"a": 2, "b": 1}, Owners: map[int]string{0: "a", 1: "a", 3: "b"}},
		{Set: "rooms", Held: map[string]int{"c": 1}, Owners: map[int]string{12: "c"}},
	}
	if !reflect.DeepEqual(sets, want) {
		t.Errorf("partitionSets = %+v, want %+v", sets, want)
	}
}
