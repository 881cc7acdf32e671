package twice

import "testing"

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
