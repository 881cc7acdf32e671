package cron

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func mustParse(t *testing.T, expr string, loc *time.Location) Schedule {
	t.Helper()
	sc, _, err := Parse(expr, loc)
	if err != nil {
		t.Fatalf("Parse(%q): %v", expr, err)
	}
	return sc
}

func TestParseForms(t *testing.T) {
	at := time.Date(2026, 3, 28, 12, 34, 56, 789, time.UTC)
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		expr string
		loc  *time.Location
		want time.Time
	}{
		{"* * * * *", nil, time.Date(2026, 3, 28, 12, 35, 0, 0, time.UTC)},
		{"*/10 * * * * *", nil, time.Date(2026, 3, 28, 12, 35, 0, 0, time.UTC)},
		{"0 3 * * *", nil, time.Date(2026, 3, 29, 3, 0, 0, 0, time.UTC)},
		{"@hourly", nil, time.Date(2026, 3, 28, 13, 0, 0, 0, time.UTC)},
		{"@every 90s", nil, time.Unix((at.Unix()/90+1)*90, 0)},
		// 03:00 in Berlin on the night summer time starts is 01:00 UTC.
		{"0 3 * * *", berlin, time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)},
		{"CRON_TZ=Europe/Berlin 0 3 * * *", nil, time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)},
	} {
		if got := mustParse(t, c.expr, c.loc).Next(at); !got.Equal(c.want) {
			t.Errorf("%q in %v: next after %v is %v, want %v", c.expr, c.loc, at, got.UTC(), c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, expr := range []string{"", "  ", "61 * * * *", "* * *", "@every 10ms", "@every -1s", "@fortnightly",
		"CRON_TZ=Nowhere/City * * * * *", strings.Repeat("*", 2000)} {
		if _, _, err := Parse(expr, nil); err == nil {
			t.Errorf("Parse(%q) accepted", expr)
		}
	}
}

// TestEveryIsAligned: every instance and every restart computes the same @every ticks.
func TestEveryIsAligned(t *testing.T) {
	sc := mustParse(t, "@every 1m", nil)
	a := sc.Next(time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC))
	b := sc.Next(time.Date(2026, 1, 1, 0, 0, 59, 0, time.UTC))
	if !a.Equal(b) || a.Second() != 0 {
		t.Errorf("@every 1m from two instants: %v and %v", a, b)
	}
}

func TestPlan(t *testing.T) {
	anchor := time.Date(2026, 1, 1, 0, 0, 30, 0, time.UTC)
	now := anchor.Add(10 * time.Minute) // ticks 00:01 … 00:10; 00:10 is within the grace
	for _, c := range []struct {
		catchUp CatchUp
		limit   int
		fire    int
	}{{CatchUpSkip, 0, 1}, {CatchUpOnce, 0, 2}, {CatchUpAll, 100, 10}, {CatchUpAll, 3, 4}} {
		sc := &schedule{sched: mustParse(t, "* * * * *", nil), opts: Opts{CatchUp: c.catchUp, CatchUpLimit: c.limit, Grace: time.Minute}}
		p := plan(sc, anchor, now)
		if len(p.fire) != c.fire || p.missedCount != 9 || !p.advance.Equal(time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)) {
			t.Errorf("%s limit %d: fire %v, missed %d, advance %v", c.catchUp, c.limit, p.fire, p.missedCount, p.advance)
		}
		for i := 1; i < len(p.fire); i++ {
			if !p.fire[i].After(p.fire[i-1]) {
				t.Errorf("%s: ticks out of order: %v", c.catchUp, p.fire)
			}
		}
	}
	sc := &schedule{sched: mustParse(t, "0 3 * * *", nil), opts: Opts{CatchUp: CatchUpOnce, Grace: time.Minute}}
	if p := plan(sc, anchor, now); !p.advance.IsZero() || len(p.fire) != 0 {
		t.Errorf("nothing due: %+v", p)
	}
}

// FuzzParse: no expression makes the parser panic, and an accepted one yields ticks that
// move forward.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{"* * * * *", "0 3 * * *", "*/5 * * * * *", "@every 1s", "@every 1h30m", "@hourly", "@yearly",
		"CRON_TZ=Europe/Berlin 0 3 * * 1-5", "TZ=UTC 0 0 1 1 *", "0 0 30 2 *", "61 * * * *", "* * *", "", "@every 0s",
		"1-5/2 1,2,3 L * MON#2", "0 0 ? * MON-FRI"} {
		f.Add(seed)
	}
	at := time.Date(2026, 6, 15, 10, 20, 30, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr string) {
		sc, _, err := Parse(expr, nil)
		if err != nil {
			return
		}
		next := sc.Next(at)
		if !next.IsZero() && !next.After(at) {
			t.Fatalf("%q: next after %v is %v", expr, at, next)
		}
	})
}
