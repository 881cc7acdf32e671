package check

import (
	"bytes"
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
)

func TestMain(m *testing.M) {
	if instance.IsChild() {
		os.Exit(instance.Main())
	}
	os.Exit(m.Run())
}

func op(e string, proc int, o instance.Op) instance.Event {
	return instance.Event{Event: e, Proc: proc, ID: "i" + string(rune('0'+proc)), Op: &o}
}

// Each analyser must catch what it is for.
func TestAnalyzersCatchViolations(t *testing.T) {
	t.Parallel()
	writes := []logWrite{{"leader", 1, 10, "a"}, {"leader", 2, 20, "b"}, {"leader", 1, 11, "a"}}
	if inv := tokenOrder("x", writes, "leader", nil); inv.Violations != 1 || inv.Operations != 3 {
		t.Errorf("token order: %+v", inv)
	}
	if inv := tokenOrder("x", writes[:2], "leader", nil); inv.Violations != 0 {
		t.Errorf("token order on a good log: %+v", inv)
	}
	refused := []instance.Event{op("op", 0, instance.Op{Kind: "write", Value: 11, Token: 1, Result: "fenced"})}
	if inv := refusedLeftNoTrace(refused, writes); inv.Violations != 1 {
		t.Errorf("refused but committed: %+v", inv)
	}

	// A stale holder's write succeeding after a newer token wrote is not linearizable.
	stale := []instance.Event{
		op("op", 0, instance.Op{Kind: "write", Value: 20, Token: 2, Call: 10, Return: 20, Result: "ok"}),
		op("op", 1, instance.Op{Kind: "write", Value: 11, Token: 1, Call: 30, Return: 40, Result: "ok"}),
	}
	good := []logWrite{{"leader", 2, 20, "b"}, {"leader", 1, 11, "a"}}
	if inv := linearizable(stale, good, instance.Op{Kind: "read", Value: 11, Call: 50, Return: 60}); inv.Violations != 1 {
		t.Errorf("stale write accepted: %+v", inv)
	}
	// A read of a value nobody wrote is not linearizable.
	ghost := []instance.Event{op("op", 0, instance.Op{Kind: "read", Value: 99, Call: 10, Return: 20, Result: "ok"})}
	if inv := linearizable(ghost, nil, instance.Op{Kind: "read", Value: 0, Call: 50, Return: 60}); inv.Violations != 1 {
		t.Errorf("ghost read: %+v", inv)
	}
	// A sound history with an unknown outcome that committed, a killed writer's write and
	// a refused stale write is linearizable.
	sound := []instance.Event{
		op("op", 0, instance.Op{Kind: "write", Value: 10, Token: 1, Call: 10, Return: 20, Result: "ok"}),
		op("op", 0, instance.Op{Kind: "write", Value: 11, Token: 1, Call: 25, Return: 30, Result: "unknown"}),
		op("op", 1, instance.Op{Kind: "read", Value: 11, Call: 40, Return: 45, Result: "ok"}),
		op("op", 1, instance.Op{Kind: "write", Value: 20, Token: 2, Call: 50, Return: 60, Result: "ok"}),
		op("op", 0, instance.Op{Kind: "write", Value: 12, Token: 1, Call: 70, Return: 80, Result: "fenced"}),
		op("op", 2, instance.Op{Kind: "read", Value: 21, Call: 90, Return: 95, Result: "ok"}),
	}
	log := []logWrite{{"leader", 1, 10, "a"}, {"leader", 1, 11, "a"}, {"leader", 2, 20, "b"}, {"leader", 2, 21, "b"}}
	if inv := linearizable(sound, log, instance.Op{Kind: "read", Value: 21, Call: 100, Return: 110}); inv.Violations != 0 {
		t.Errorf("sound history: %+v", inv)
	}

	now := time.Now().Add(-time.Hour)
	terms := []instance.Event{
		{Event: "elected", Proc: 0, ID: "a", Token: 1, T: now.UnixNano()},
		{Event: "elected", Proc: 1, ID: "b", Token: 2, T: now.Add(time.Second).UnixNano()},
		{Event: "demoted", Proc: 0, ID: "a", Token: 1, T: now.Add(3 * time.Second).UnixNano()},
	}
	if inv := oneBeliever(terms, time.Second); inv.Violations != 1 {
		t.Errorf("two believers for 2s: %+v", inv)
	}
}

// A violation is placed on the timeline where it happened when the history tells, else when
// it was found.
func TestViolationTimes(t *testing.T) {
	t.Parallel()
	t0 := time.Now().Add(-time.Hour)
	terms := []instance.Event{
		{Event: "elected", Proc: 0, ID: "a", Token: 1, T: t0.UnixNano()},
		{Event: "elected", Proc: 1, ID: "b", Token: 2, T: t0.Add(time.Second).UnixNano()},
		{Event: "demoted", Proc: 0, ID: "a", Token: 1, T: t0.Add(3 * time.Second).UnixNano()},
	}
	inv := oneBeliever(terms, time.Second)
	if len(inv.Found) != 1 || !inv.Found[0].At.Equal(time.Unix(0, t0.Add(time.Second).UnixNano())) || inv.Found[0].Detail != inv.Details[0] {
		t.Errorf("two leaders: found %+v, want at b's election, %s", inv.Found, t0.Add(time.Second))
	}

	// A stale lock holder's write, at the time its holder reported it.
	events := []instance.Event{{Event: "locked", Token: 1, T: t0.Add(5 * time.Second).UnixNano()}}
	writes := []logWrite{{"lock", 2, 1, "b"}, {"lock", 1, 2, "a"}}
	inv = tokenOrder("x", writes, "lock", writeTimes(events))
	if len(inv.Found) != 1 || !inv.Found[0].At.Equal(time.Unix(0, t0.Add(5*time.Second).UnixNano())) {
		t.Errorf("stale lock write: found %+v, want at %s", inv.Found, t0.Add(5*time.Second))
	}
	// Without a report of the write, when the checker found it.
	before := time.Now()
	inv = tokenOrder("x", writes, "lock", writeTimes(nil))
	if len(inv.Found) != 1 || inv.Found[0].At.Before(before) {
		t.Errorf("stale lock write, time unknown: found %+v, want now", inv.Found)
	}

	// Past maxFound, violations are counted but no longer placed.
	var many Invariant
	for range maxFound + 5 {
		many.violate(t0, "v")
	}
	if many.Violations != maxFound+5 || len(many.Found) != maxFound {
		t.Errorf("%d violations, %d placed", many.Violations, len(many.Found))
	}
}

func TestFaultKinds(t *testing.T) {
	t.Parallel()
	if _, err := faultKinds(Params{Faults: []string{"drop"}}, "sqlite"); err == nil {
		t.Error("drop on SQLite accepted")
	}
	if _, err := faultKinds(Params{Faults: []string{"meteor"}}, "postgres"); err == nil || !strings.Contains(err.Error(), "unknown fault") {
		t.Errorf("unknown fault: %v", err)
	}
	if got, _ := faultKinds(Params{}, "sqlite"); strings.Join(got, ",") != "kill,stop" {
		t.Errorf("SQLite defaults %v", got)
	}
	if got, _ := faultKinds(Params{}, "postgres"); strings.Join(got, ",") != "kill,stop,drop,delay,blackhole" {
		t.Errorf("PostgreSQL defaults without a restart command %v", got)
	}
}

// A short run of the real thing on each store: every fault kind, no violation.
func TestRun(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		spawn, err := instance.Self()
		if err != nil {
			t.Fatal(err)
		}
		var logs syncBuffer
		rep, err := Run(context.Background(), Params{DSN: db.DSN, Schema: db.Schema, Duration: 10 * time.Second,
			FaultEvery: 2 * time.Second, Spawn: spawn, Progress: t.Output(), InstanceLog: &logs})
		if err != nil {
			t.Fatal(err)
		}
		for _, inv := range rep.Invariants {
			t.Logf("%-62s ops %6d  violations %d %v", inv.Name, inv.Operations, inv.Violations, inv.Details)
			if inv.Operations == 0 && !strings.Contains(inv.Name, "refused") {
				t.Errorf("%s: no operations: the run exercised nothing", inv.Name)
			}
			if !coveredByAnalyserTest(inv.Name) {
				t.Errorf("%s: no case in analyserCases plants a violation of it", inv.Name)
			}
		}
		if rep.Violations != 0 {
			t.Logf("the instances' logs:\n%s", logs.String())
			t.Fatalf("%d violations", rep.Violations)
		}
		if len(rep.Faults) == 0 {
			t.Fatal("no fault injected")
		}
		checkTimeline(t, rep)
	})
}

// checkTimeline checks that a run's report has what the HTML report draws: every building
// block's operations, every injected fault on an instance, the stages in order.
func checkTimeline(t *testing.T, rep *Report) {
	t.Helper()
	tl := rep.Timeline
	if tl == nil {
		t.Fatal("no timeline")
	}
	var blocks []string
	for _, s := range tl.Series {
		blocks = append(blocks, s.Block)
		total := 0
		for i := range s.OK {
			total += s.OK[i]
		}
		if total == 0 {
			t.Errorf("%s: no operation succeeded", s.Block)
		}
	}
	if !slices.Equal(blocks, blockOrder) {
		t.Errorf("series %v, want one per block: %v", blocks, blockOrder)
	}
	injected := 0
	for _, f := range tl.Faults {
		if len(f.Slots) == 0 || f.End.Before(f.Start) || f.Start.Before(tl.Start) || f.End.After(tl.End) {
			t.Errorf("fault %+v: no instance, or outside the run %v to %v", f, tl.Start, tl.End)
		}
		if f.Injected {
			injected++
		}
	}
	want := 0
	for _, n := range rep.Faults {
		want += n
	}
	if injected != want {
		t.Errorf("%d injected faults on the timeline, %d counted", injected, want)
	}
	var names []string
	for i, p := range tl.Phases {
		names = append(names, p.Name)
		if p.End.Before(p.Start) || i > 0 && !p.Start.Equal(tl.Phases[i-1].End) {
			t.Errorf("stage %+v does not follow the one before", p)
		}
	}
	if strings.Join(names, ",") != "start instances,faults,heal,drain,verify" {
		t.Errorf("stages %v", names)
	}
	if len(tl.Terms) == 0 {
		t.Error("no leadership term")
	}
	if err := rep.WriteHTML(io.Discard); err != nil {
		t.Error(err)
	}
}

// syncBuffer collects the instances' logs, which their processes write concurrently.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
