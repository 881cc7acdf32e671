package jobs

import (
	"errors"
	"testing"
	"time"
)

func TestRateLimitCheck(t *testing.T) {
	for _, ok := range []RateLimit{{}, {Limit: 1, Period: time.Millisecond}, {Limit: 10, Period: time.Second, ByField: "customer_id"},
		{Limit: 1, Period: MaxRatePeriod, ByField: "_X9"}} {
		if err := ok.check("q"); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	for _, bad := range []RateLimit{{Limit: -1, Period: time.Second}, {Limit: 1}, {Limit: 1, Period: time.Microsecond},
		{Limit: 1, Period: 1500 * time.Microsecond}, {Limit: 1, Period: MaxRatePeriod + time.Millisecond}, {Period: time.Second},
		{ByField: "a"}, {Limit: 1, Period: time.Second, ByField: "a.b"}, {Limit: 1, Period: time.Second, ByField: "9a"},
		{Limit: 1, Period: time.Second, ByField: "x' OR '1"}, {Limit: 1, Period: time.Second, ByField: string(make([]byte, 65))}} {
		if err := bad.check("q"); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v; want ErrInvalid", bad, err)
		}
	}
}

func TestRateLimitString(t *testing.T) {
	for r, want := range map[RateLimit]string{
		{}:                               "-",
		{Limit: 10, Period: time.Second}: "10/1s",
		{Limit: 3, Period: 500 * time.Millisecond, ByField: "c"}: "3/500ms by c",
	} {
		if got := r.String(); got != want {
			t.Errorf("%+v: %q, want %q", r, got, want)
		}
	}
}

// The slot the fetch asks for is when the earliest full window frees, from the starts it
// counted and those it just made.
func TestRecordNextSlot(t *testing.T) {
	now := time.Unix(1000, 0)
	r := RateLimit{Limit: 2, Period: time.Second, ByField: "c"}
	plan := ratePlan{used: map[string]window{
		"a": {n: 2, oldest: now.Add(-700 * time.Millisecond)}, // full: frees in 300ms
		"b": {n: 1, oldest: now.Add(-900 * time.Millisecond)}, // not full
	}, keys: map[int64]string{}}
	if d := plan.nextSlot(now, r); d != 300*time.Millisecond {
		t.Errorf("next slot in %v, want 300ms", d)
	}
	plan.used["b"] = window{n: 2, oldest: now.Add(-900 * time.Millisecond)}
	if d := plan.nextSlot(now, r); d != 100*time.Millisecond {
		t.Errorf("next slot in %v, want 100ms", d)
	}
	if d := (ratePlan{used: map[string]window{"a": {n: 1, oldest: now}}}).nextSlot(now, r); d != 0 {
		t.Errorf("next slot in %v with no full window, want 0", d)
	}
}
