package cluster_test

import (
	"context"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/testdb"
)

// What an instance reports is written by its registration and each heartbeat, in the
// heartbeat's own statement, and listed with it: the checks' age grows with the
// heartbeat's in database time, a long error is cut, and an instance without a report
// lists none.
func TestBeatWritesTheReport(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		clock := testdb.NewClock()
		s := open(t, db, clock)
		var mu sync.Mutex
		rep := cluster.Report{Requests: cluster.Requests{Total: 3, Failed: 1}}
		m := member(t, s, "a", cluster.Config{DeadAfter: 2 * time.Hour, NoLivenessLock: true, Report: func() cluster.Report {
			mu.Lock()
			defer mu.Unlock()
			return rep
		}})
		join(t, m)
		got := only(t, s)
		if got.Report == nil || got.Report.Requests != rep.Requests || len(got.Report.Checks) != 0 || got.Report.ChecksAge != 0 {
			t.Fatalf("after Join: report %+v, want %+v", got.Report, rep)
		}

		long := strings.Repeat("é", cluster.MaxReportError) // two bytes each
		mu.Lock()
		rep = cluster.Report{Requests: cluster.Requests{Total: 10, Failed: 4}, ChecksAge: time.Second,
			Checks: []cluster.Check{{Name: "store", Kind: "readiness", OK: true}, {Name: "payments", Kind: "readiness", Error: long}}}
		mu.Unlock()
		if err := m.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
		got = only(t, s)
		r := got.Report
		if r == nil || r.Requests != (cluster.Requests{Total: 10, Failed: 4}) || len(r.Checks) != 2 {
			t.Fatalf("after a beat: report %+v", r)
		}
		if r.ChecksAge != time.Minute+time.Second {
			t.Errorf("checks age %v a minute after a beat that said 1s; want 1m1s", r.ChecksAge)
		}
		if f := r.Failing(); len(f) != 1 || f[0] != "payments" {
			t.Errorf("failing %v, want [payments]", f)
		}
		if e := r.Checks[1].Error; len(e) > cluster.MaxReportError || !strings.HasSuffix(e, "é…") || !strings.HasPrefix(long, strings.TrimSuffix(e, "…")) {
			t.Errorf("a long error is stored as %d bytes: %q", len(e), e)
		}
		if a := r.Requests.Availability(); a != 0.6 {
			t.Errorf("availability %v, want 0.6", a)
		}

		other := member(t, s, "b", cluster.Config{DeadAfter: 2 * time.Hour, NoLivenessLock: true})
		join(t, other)
		ms, err := cluster.List(ctx, s, "svc")
		if err != nil || len(ms) != 2 || ms[1].ID != "b" || ms[1].Report != nil {
			t.Fatalf("an instance without a report: %+v, %v", ms, err)
		}
	})
}

func TestRequests(t *testing.T) {
	t.Parallel()
	if a := (cluster.Requests{}).Availability(); !math.IsNaN(a) {
		t.Errorf("availability without requests: %v, want NaN", a)
	}
	sum := cluster.Requests{Total: 3, Failed: 1}.Add(cluster.Requests{Total: 1})
	if sum != (cluster.Requests{Total: 4, Failed: 1}) || sum.Availability() != 0.75 {
		t.Errorf("sum %+v, availability %v", sum, sum.Availability())
	}
	if got := sum.String(); got != "75.00% of 4 (1 failed)" {
		t.Errorf("shown as %q", got)
	}
	if got := (cluster.Requests{}).String(); got != "no requests" {
		t.Errorf("no requests shown as %q", got)
	}
	var none *cluster.Report
	if none.Failing() != nil {
		t.Error("a nil report has failing checks")
	}
}
