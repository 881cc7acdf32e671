package check

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/report"
	"github.com/twicehq/twice/store"
)

// The building blocks a run's operations are counted under, in the order the report lists
// them.
const (
	BlockFencedWrites = "leader: fenced writes"
	BlockReads        = "register reads"
	BlockLocks        = "locks"
	BlockEvents       = "events: published"
	BlockJobs         = "jobs: runs started"
	BlockCron         = "cron: ticks run"
	BlockWorkflows    = "workflows: steps completed"
	BlockSessions     = "sessions (HTTP)"
	BlockIdempotency  = "idempotency (HTTP)"
)

var blockOrder = []string{BlockFencedWrites, BlockReads, BlockLocks, BlockEvents, BlockJobs, BlockCron, BlockWorkflows, BlockSessions, BlockIdempotency}

// Timeline is what happened during a run, for the HTML report: when it ran, the operations
// of each building block over time, every fault with the instances it hit, and the
// leadership terms. Times are the machine's wall clock.
type Timeline struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Slots is how many instance slots the run had; faults and terms name a slot.
	Slots int `json:"slots"`
	// BucketS is the width in seconds of one bucket of the series.
	BucketS float64  `json:"bucket_s"`
	Series  []Series `json:"series"`
	Faults  []Fault  `json:"faults"`
	Terms   []Term   `json:"terms"`
	// Phases are the stages of the run: starting the instances, faults, healing,
	// draining, verifying.
	Phases []Phase `json:"phases"`
}

// Series is one building block's operations over the run, one entry per bucket: those that
// started in it and succeeded (OK) or did not (Failed: refused, an error, an unknown
// outcome). Where the checker measured each operation's latency, the percentiles are its
// latency's per bucket, 0 in a bucket without operations.
type Series struct {
	Block  string `json:"block"`
	OK     []int  `json:"ok"`
	Failed []int  `json:"failed"`
	report.Percentiles
}

// Fault is one fault over a stretch of the run. Slots are the instance slots it hit (every
// slot for a PostgreSQL restart). Injected is false for a heartbeat stall the instances
// reported, which the checker did not cause but judges like a fault.
type Fault struct {
	Kind     string    `json:"kind"`
	Slots    []int     `json:"slots"`
	Instance string    `json:"instance,omitempty"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Injected bool      `json:"injected"`
}

// Term is one instance's belief that it led, from its election to its demotion or death.
type Term struct {
	Slot     int       `json:"slot"`
	Instance string    `json:"instance"`
	Token    int64     `json:"token"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
}

// Phase is one stage of a run.
type Phase struct {
	Name  string    `json:"name"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// sample is one operation: its building block, when it started, how long it took (0 when
// not measured) and whether it succeeded.
type sample struct {
	block   string
	at      time.Time
	latency time.Duration
	failed  bool
}

// recorder collects the operations of a run as they happen (the HTTP client's) or as the
// analysis reads them back (the instances' events, the database's rows).
type recorder struct {
	mu  sync.Mutex // protects ops
	ops []sample
}

func (r *recorder) add(s sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, s)
}

// series buckets the operations recorded between start and end, one series per block that
// had any, in blockOrder.
func (r *recorder) series(start, end time.Time, width time.Duration) []Series {
	r.mu.Lock()
	ops := slices.Clone(r.ops)
	r.mu.Unlock()
	n := int(end.Sub(start)/width) + 1
	type acc struct {
		ok, failed []int
		lat        []report.Sample
	}
	by := map[string]*acc{}
	for _, s := range ops {
		if s.at.Before(start) || s.at.After(end) {
			continue
		}
		a := by[s.block]
		if a == nil {
			a = &acc{ok: make([]int, n), failed: make([]int, n)}
			by[s.block] = a
		}
		i := int(s.at.Sub(start) / width)
		if s.failed {
			a.failed[i]++
		} else {
			a.ok[i]++
		}
		if s.latency > 0 {
			a.lat = append(a.lat, report.Sample{At: s.at.Sub(start).Seconds(), MS: float64(s.latency) / float64(time.Millisecond)})
		}
	}
	var out []Series
	for _, b := range blockOrder {
		a := by[b]
		if a == nil {
			continue
		}
		s := Series{Block: b, OK: a.ok, Failed: a.failed}
		if a.lat != nil {
			s.Percentiles = report.LatencyIn(a.lat, width.Seconds(), n).Percentiles
		}
		out = append(out, s)
	}
	return out
}

// timeline records the operations the instances reported and the database holds, then
// builds the report's timeline from them, the faults (with stalls) and the stages.
func (r *run) timeline(ctx context.Context, events []instance.Event, faults []faultRec) error {
	for _, e := range events {
		switch {
		case e.Event == "op" && e.Op.Kind == "write":
			r.rec.add(sample{block: BlockFencedWrites, at: time.Unix(0, e.Op.Call), latency: time.Duration(e.Op.Return - e.Op.Call), failed: e.Op.Result != "ok"})
		case e.Event == "op":
			r.rec.add(sample{block: BlockReads, at: time.Unix(0, e.Op.Call), latency: time.Duration(e.Op.Return - e.Op.Call)})
		case e.Event == "locked":
			r.rec.add(sample{block: BlockLocks, at: e.Time()})
		}
	}
	at := "at" // SQLite keeps Unix microseconds
	if r.s.Dialect() == store.Postgres {
		at = "(extract(epoch FROM at) * 1000000)::bigint"
	}
	for _, q := range []struct {
		block, sql string
		unit       time.Duration
	}{
		{BlockEvents, "SELECT " + at + " FROM twice_events WHERE service = $1 AND topic = '" + instance.CheckTopic + "'", time.Microsecond},
		{BlockJobs, "SELECT started FROM " + instance.CheckJobRuns + " WHERE service = $1", time.Nanosecond},
		{BlockCron, "SELECT started FROM " + instance.CheckTickRuns + " WHERE service = $1", time.Nanosecond},
		{BlockWorkflows, "SELECT at FROM " + instance.FlowStepsTable + " WHERE service = $1", time.Nanosecond},
	} {
		stamps, err := ints(ctx, r.s, q.sql, r.service)
		if err != nil {
			return err
		}
		for _, t := range stamps {
			r.rec.add(sample{block: q.block, at: time.Unix(0, t*int64(q.unit))})
		}
	}

	r.phases[len(r.phases)-1].End = time.Now()
	tl := &Timeline{Slots: r.p.Instances, Phases: r.phases, Start: r.phases[0].Start, End: r.phases[len(r.phases)-1].End}
	tl.BucketS = report.BucketWidth(tl.End.Sub(tl.Start).Seconds())
	width := time.Duration(tl.BucketS * float64(time.Second))
	tl.Series = r.rec.series(tl.Start, tl.End, width)
	for _, f := range faults {
		fl := Fault{Kind: f.kind, Instance: f.instance, Start: f.start, End: f.end, Injected: f.kind != "stall"}
		if fl.End.After(tl.End) {
			fl.End = tl.End // a stall that never ended
		}
		if f.slot >= 0 {
			fl.Slots = []int{f.slot}
		} else {
			for i := range r.p.Instances {
				fl.Slots = append(fl.Slots, i)
			}
		}
		tl.Faults = append(tl.Faults, fl)
	}
	for _, t := range instance.Terms(events, tl.End) {
		tl.Terms = append(tl.Terms, Term{Slot: t.Proc, Instance: t.ID, Token: t.Token, Start: t.Start, End: t.End})
	}
	r.report.Timeline = tl
	return nil
}
