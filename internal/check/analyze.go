package check

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
	"github.com/twicehq/twice/workflow"
)

// The invariants a run judges. Each has an analyser, and analyze_test.go plants exactly
// one violation of each (and none) to show the analyser reports it.
const (
	invSessions     = "sessions: concurrent writes of different keys never lose an update"
	invIdempotency  = "idempotency: each key's effect happens exactly once"
	invConverge     = "config and cache: every instance converges to the last value"
	invLeaderOrder  = "leader: fenced writes commit in token order"
	invLockOrder    = "locks: fenced writes commit in token order"
	invPartitions   = "partitions: each partition's fenced writes commit in token order"
	invRealtime     = "realtime: clients moved by faults get every message once, or are told they cannot"
	invRefused      = "leader: writes refused by fencing left no trace"
	invLinearizable = "leader: fenced register is linearizable (porcupine)"
	invOneLeader    = "leader: two instances never both lead for longer than a lease" // + " (TTL)"
	invEventsEO     = "events: an exactly-once group handles every event exactly once"
	invEventsShared = "events: a shared group loses no event (commit order, no skips)"
	invJobsLost     = "jobs: every enqueued job completes (none lost)"
	invJobsTwice    = "jobs: a job runs twice only if it was in flight on a faulted instance"
	invCron         = "cron: every tick fires once, and runs twice only if in flight on a faulted instance"
	invWorkflows    = "workflows: every started workflow ends, and no completed step runs twice"
	invRecovery     = "cluster: recovers after the faults (a leader writes, work catches up)"
)

// logWrite is one committed fenced write, from the log table in id (commit) order.
type logWrite struct {
	kind     string
	token    int64
	value    int64
	instance string
}

func (r *run) analyze(ctx context.Context, recovered bool) error {
	events, _ := r.g.Log()
	writes, err := readLog(ctx, r.s, r.service)
	if err != nil {
		return err
	}
	var final int64
	finalCall := time.Now().UnixNano()
	if err := r.s.QueryRow(ctx, "SELECT value FROM "+instance.RegisterTable+" WHERE service = $1", r.service).Scan(&final); err != nil {
		return err
	}
	finalOp := instance.Op{Kind: "read", Value: final, Call: finalCall, Return: time.Now().UnixNano(), Result: "ok"}

	at := writeTimes(events)
	r.report.add(tokenOrder(invLeaderOrder, writes, "leader", at))
	r.report.add(tokenOrder(invLockOrder, writes, "lock", at))
	r.report.add(partitionOrder(writes))
	r.report.add(refusedLeftNoTrace(events, writes))
	r.report.add(linearizable(events, writes, finalOp))
	r.report.add(oneBeliever(events, r.p.LeaseTTL))
	eo, shared, err := eventInvariants(ctx, r.s, r.service)
	if err != nil {
		return err
	}
	r.report.add(eo)
	r.report.add(shared)
	faults := r.faultsAndStalls(events)
	lost, twice, err := jobInvariants(ctx, r.s, r.service, faults)
	if err != nil {
		return err
	}
	r.report.add(lost)
	r.report.add(twice)
	ticks, err := tickInvariant(ctx, r.s, r.service, faults)
	if err != nil {
		return err
	}
	r.report.add(ticks)
	flows, err := workflowInvariant(ctx, r.s, r.flows, r.service)
	if err != nil {
		return err
	}
	r.report.add(flows)
	r.report.add(recovery(recovered))
	return r.timeline(ctx, events, faults)
}

// recovery judges whether, once every fault was healed, a leader wrote and the consumer
// groups, the jobs, the schedule and the workflows caught up (see run.heal and run.drain).
func recovery(recovered bool) Invariant {
	inv := Invariant{Name: invRecovery, Operations: 1}
	if !recovered {
		inv.violate(time.Time{}, "after every fault was healed, no leader wrote, or the consumer groups, the jobs, the schedule or the workflows did not catch up within a minute")
	}
	return inv
}

// faultsAndStalls is the injected faults plus every heartbeat stall the instances
// reported: both let the cluster count an instance dead and rescue its jobs. A stall that
// began ("stalling") and never ended ("stall" with the same From) lasted until the
// instance was gone: it was killed, or the run ended, before its heartbeats landed again.
func (r *run) faultsAndStalls(events []instance.Event) []faultRec {
	type stallKey struct {
		id   string
		from int64
	}
	ended := map[stallKey]bool{}
	for _, ev := range events {
		if ev.Event == "stall" {
			ended[stallKey{ev.ID, ev.From}] = true
		}
	}
	forever := time.Unix(1<<40, 0)
	all := slices.Clone(r.log)
	for _, ev := range events {
		from, to := time.Unix(0, ev.From), ev.Time()
		switch {
		case ev.Event == "stalling" && !ended[stallKey{ev.ID, ev.From}]:
			to = forever
		case ev.Event != "stall":
			continue
		}
		if !faultedBetween(r.log, ev.ID, from, to) && !r.pausedWriter(from, to) {
			r.report.Stalls++ // not the echo of a pause or a cut the checker made
		}
		all = append(all, faultRec{kind: "stall", instance: ev.ID, slot: ev.Proc, start: from, end: to})
	}
	return all
}

// pausedWriter reports whether, on SQLite, some instance was paused during [from, to]: it
// may have held the file's one write lock, and every instance's heartbeat waited for it.
func (r *run) pausedWriter(from, to time.Time) bool {
	if r.s.Dialect() != store.SQLite {
		return false
	}
	for _, f := range r.log {
		if f.kind == FaultStop && !f.end.Before(from) && !f.start.After(to) {
			return true
		}
	}
	return false
}

func readLog(ctx context.Context, s *store.Store, service string) ([]logWrite, error) {
	rows, err := s.Reader().Query(ctx, "SELECT kind, token, value, instance FROM "+instance.LogTable+" WHERE service = $1 ORDER BY id", service)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []logWrite
	for rows.Next() {
		var w logWrite
		if err := rows.Scan(&w.kind, &w.token, &w.value, &w.instance); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// tokenOrder checks that, in commit order, no write of kind carries a token lower than an
// earlier one: a stale holder's write was never accepted after a newer holder's. at, if not
// nil, tells when a write committed, as its writer saw it (zero if unknown).
func tokenOrder(name string, writes []logWrite, kind string, at func(logWrite) time.Time) Invariant {
	inv := Invariant{Name: name}
	var last int64
	var lastBy string
	for _, w := range writes {
		if w.kind != kind {
			continue
		}
		inv.Operations++
		if w.token < last {
			var when time.Time
			if at != nil {
				when = at(w)
			}
			inv.violate(when, "write by %s with token %d committed after %s's with token %d", w.instance, w.token, lastBy, last)
			continue
		}
		last, lastBy = w.token, w.instance
	}
	return inv
}

// partitionOrder checks, for each partition of the checker's set, that in commit order no
// write carries a token lower than an earlier one (the writes' value is their partition):
// an owner that lost the partition never wrote after its successor did.
func partitionOrder(writes []logWrite) Invariant {
	inv := Invariant{Name: invPartitions}
	type last struct {
		token int64
		by    string
	}
	seen := map[int64]last{}
	for _, w := range writes {
		if w.kind != "partition" {
			continue
		}
		inv.Operations++
		l := seen[w.value]
		if w.token < l.token {
			inv.violate(time.Time{}, "a write to partition %d by %s with token %d committed after %s's with token %d", w.value, w.instance, w.token, l.by, l.token)
			continue
		}
		seen[w.value] = last{w.token, w.instance}
	}
	return inv
}

// writeTimes returns when each logged write committed as its writer saw it: a leader's
// write by its unique value, when its operation returned; a lock holder's by its token,
// when it reported the lock's write. The log table has no clock of its own.
func writeTimes(events []instance.Event) func(logWrite) time.Time {
	leader, lock := map[int64]time.Time{}, map[int64]time.Time{}
	for _, e := range events {
		switch {
		case e.Event == "op" && e.Op.Kind == "write":
			leader[e.Op.Value] = time.Unix(0, e.Op.Return)
		case e.Event == "locked":
			lock[e.Token] = e.Time()
		}
	}
	return func(w logWrite) time.Time {
		if w.kind == "lock" {
			return lock[w.token]
		}
		return leader[w.value]
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// refusedLeftNoTrace checks that a write refused by fencing never committed.
func refusedLeftNoTrace(events []instance.Event, writes []logWrite) Invariant {
	inv := Invariant{Name: invRefused}
	committed := map[int64]bool{}
	for _, w := range writes {
		if w.kind == "leader" {
			committed[w.value] = true
		}
	}
	for _, e := range events {
		if e.Event == "op" && e.Op.Kind == "write" && e.Op.Result == "fenced" {
			inv.Operations++
			if committed[e.Op.Value] {
				inv.violate(time.Unix(0, e.Op.Return), "%s's write %d with token %d was refused yet committed", e.ID, e.Op.Value, e.Op.Token)
			}
		}
	}
	return inv
}

// regState is the fenced register: its value and the highest token that wrote it.
type regState struct{ value, token int64 }

type regInput struct {
	write        bool
	value, token int64
}

// fencedRegister is the sequential specification: a read returns the value; a write with a
// token at least the highest one so far may succeed; a refusal is always allowed (refusing
// is never unsafe); a write whose outcome is unknown may or may not have happened.
var fencedRegister = porcupine.NondeterministicModel{
	Init: func() []any { return []any{regState{}} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(regState), input.(regInput), output.(string)
		if !in.write {
			if fmt.Sprint(s.value) == out {
				return []any{s}
			}
			return nil
		}
		switch out {
		case "fenced":
			return []any{s}
		case "ok":
			if in.token >= s.token {
				return []any{regState{value: in.value, token: in.token}}
			}
			return nil
		default: // unknown
			if in.token >= s.token {
				return []any{s, regState{value: in.value, token: in.token}}
			}
			return []any{s}
		}
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.write {
			return fmt.Sprintf("write(%d, token %d) -> %s", in.value, in.token, output)
		}
		return fmt.Sprintf("read() -> %s", output)
	},
}

// linearizable checks the register history with porcupine. Writes whose outcome the writer
// never learned (an error, or a process killed mid-write) are placed by the log: one that
// committed may have taken effect at any moment after it was called; one that did not is
// dropped.
func linearizable(events []instance.Event, writes []logWrite, final instance.Op) Invariant {
	inv := Invariant{Name: invLinearizable}
	committed := map[int64]logWrite{}
	for _, w := range writes {
		if w.kind == "leader" {
			committed[w.value] = w
		}
	}
	seen := map[int64]bool{}
	var ops []porcupine.Operation
	add := func(client int, op instance.Op, in regInput, out string) {
		ops = append(ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: op.Call, Return: op.Return})
	}
	for _, e := range events {
		if e.Event != "op" {
			continue
		}
		op := *e.Op
		switch {
		case op.Kind == "read":
			add(e.Proc, op, regInput{}, fmt.Sprint(op.Value))
		case op.Result == "ok":
			seen[op.Value] = true
			add(e.Proc, op, regInput{write: true, value: op.Value, token: op.Token}, "ok")
		case op.Result == "unknown":
			if _, ok := committed[op.Value]; ok {
				seen[op.Value] = true
				op.Return = math.MaxInt64
				add(e.Proc, op, regInput{write: true, value: op.Value, token: op.Token}, "ok")
			}
		}
	}
	for v, w := range committed {
		if !seen[v] {
			// Killed before it could report: it happened at some point of the run.
			add(-1, instance.Op{Call: 0, Return: math.MaxInt64}, regInput{write: true, value: v, token: w.token}, "ok")
		}
	}
	add(-1, final, regInput{}, fmt.Sprint(final.Value))
	inv.Operations = len(ops)
	for i := range ops {
		if ops[i].ClientId < 0 {
			ops[i].ClientId = 1000
		}
	}
	switch porcupine.CheckOperationsTimeout(fencedRegister.ToModel(), ops, 2*time.Minute) {
	case porcupine.Ok:
	case porcupine.Illegal:
		inv.violate(time.Time{}, "the history of register reads and fenced writes has no linearization")
	default:
		inv.violate(time.Time{}, "porcupine could not decide within two minutes")
	}
	return inv
}

// oneBeliever checks that no two instances believed they led at once for longer than ttl.
func oneBeliever(events []instance.Event, ttl time.Duration) Invariant {
	inv := Invariant{Name: fmt.Sprintf("%s (%v)", invOneLeader, ttl)}
	terms := instance.Terms(events, time.Now())
	inv.Operations = len(terms)
	for i, a := range terms {
		for _, b := range terms[i+1:] {
			if a.Proc == b.Proc {
				continue
			}
			if overlap := a.Overlap(b); overlap > ttl {
				inv.violate(later(a.Start, b.Start), "%s (token %d) and %s (token %d) both led for %v", a.ID, a.Token, b.ID, b.Token, overlap)
			}
		}
	}
	return inv
}

// eventInvariants compares every committed event of the checker's topic with what its two
// groups recorded: the exactly-once group handled each exactly once, the shared group at
// least once. An event skipped by a reader that trusted id order would be missing from both.
func eventInvariants(ctx context.Context, s *store.Store, service string) (eo, shared Invariant, err error) {
	eo = Invariant{Name: invEventsEO}
	shared = Invariant{Name: invEventsShared}
	ids, err := ints(ctx, s, "SELECT id FROM twice_events WHERE service = $1 AND topic = $2", service, instance.CheckTopic)
	if err != nil {
		return eo, shared, err
	}
	counts := map[string]map[int64]int{instance.CheckGroupEO: {}, instance.CheckGroupShared: {}}
	rows, err := s.Reader().Query(ctx, "SELECT grp, event_id FROM "+instance.EffectsCheckTable+" WHERE service = $1", service)
	if err != nil {
		return eo, shared, err
	}
	for rows.Next() {
		var g string
		var id int64
		if err := rows.Scan(&g, &id); err != nil {
			rows.Close()
			return eo, shared, err
		}
		if counts[g] != nil {
			counts[g][id]++
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return eo, shared, err
	}
	eo.Operations, shared.Operations = len(ids), len(ids)
	for _, id := range ids {
		switch n := counts[instance.CheckGroupEO][id]; {
		case n == 0:
			eo.violate(time.Time{}, "event %d never handled", id)
		case n > 1:
			eo.violate(time.Time{}, "event %d handled %d times", id, n)
		}
		if counts[instance.CheckGroupShared][id] == 0 {
			shared.violate(time.Time{}, "event %d never handled", id)
		}
	}
	return eo, shared, nil
}

func ints(ctx context.Context, s *store.Store, q string, args ...any) ([]int64, error) {
	rows, err := s.Reader().Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

type jobRun struct {
	attempt          int
	instance         string
	claimed, started time.Time
}

// jobInvariants judges the checker's jobs: every job enqueued completed and ran; a job ran
// more than once only when an earlier run's instance was hit by a fault between claiming the
// job and the next run's start (killed, paused or cut off while the job was in flight there:
// rescued by liveness). A run that starts after a pause, of a job claimed before it, is such
// a run: the job was in flight on the paused instance.
func jobInvariants(ctx context.Context, s *store.Store, service string, faults []faultRec) (lost, twice Invariant, err error) {
	lost = Invariant{Name: invJobsLost}
	twice = Invariant{Name: invJobsTwice}
	rows, err := s.Reader().Query(ctx, "SELECT id, state FROM twice_jobs WHERE service = $1 AND kind = 'check-job'", service)
	if err != nil {
		return lost, twice, err
	}
	states := map[int64]int{}
	for rows.Next() {
		var id int64
		var st int
		if err := rows.Scan(&id, &st); err != nil {
			rows.Close()
			return lost, twice, err
		}
		states[id] = st
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return lost, twice, err
	}
	runs := map[int64][]jobRun{}
	rows, err = s.Reader().Query(ctx, "SELECT job_id, attempt, instance, claimed, started FROM "+instance.CheckJobRuns+" WHERE service = $1", service)
	if err != nil {
		return lost, twice, err
	}
	for rows.Next() {
		var id, claimed, started int64
		var r jobRun
		if err := rows.Scan(&id, &r.attempt, &r.instance, &claimed, &started); err != nil {
			rows.Close()
			return lost, twice, err
		}
		r.claimed, r.started = time.Unix(0, claimed), time.Unix(0, started)
		runs[id] = append(runs[id], r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return lost, twice, err
	}
	lost.Operations = len(states)
	for id, st := range states {
		if st != 4 || len(runs[id]) == 0 {
			lost.violate(time.Time{}, "job %d: state bits %d, %d runs", id, st, len(runs[id]))
		}
	}
	twice.Operations = len(runs)
	for id, rs := range runs {
		judgeRuns(&twice, fmt.Sprintf("job %d", id), rs, faults)
	}
	return lost, twice, nil
}

// judgeRuns adds a violation for each run of one job that follows an earlier run whose
// instance was not hit by a fault between claiming the job and the later run's start.
func judgeRuns(inv *Invariant, what string, rs []jobRun, faults []faultRec) {
	// In claim order: a run of an older attempt can start after a newer one, when its
	// instance was frozen between claiming the job and running it.
	slices.SortFunc(rs, func(a, b jobRun) int {
		if a.attempt != b.attempt {
			return a.attempt - b.attempt
		}
		return a.claimed.Compare(b.claimed)
	})
	for i := 0; i+1 < len(rs); i++ {
		if !faultedBetween(faults, rs[i].instance, rs[i].claimed, rs[i+1].started) {
			inv.violate(rs[i+1].started, "%s ran on %s (attempt %d) and again on %s (attempt %d) %v later, with no fault on %s between",
				what, rs[i].instance, rs[i].attempt, rs[i+1].instance, rs[i+1].attempt, rs[i+1].started.Sub(rs[i].started).Round(time.Millisecond), rs[i].instance)
		}
	}
}

// faultedBetween reports whether a fault on instance (or on every instance) overlapped
// [from, to].
func faultedBetween(faults []faultRec, instance string, from, to time.Time) bool {
	for _, f := range faults {
		if (f.instance == instance || f.instance == "") && !f.end.Before(from) && !f.start.After(to) {
			return true
		}
	}
	return false
}

// tickInvariant judges the one-second schedule: every tick from the first to the last fired
// as exactly one job, and that job ran; it ran more than once only as any job may, when it
// was in flight on a faulted instance (see jobInvariants).
func tickInvariant(ctx context.Context, s *store.Store, service string, faults []faultRec) (Invariant, error) {
	inv := Invariant{Name: invCron}
	rows, err := s.Reader().Query(ctx, "SELECT tick, job_id, attempt, instance, claimed, started FROM "+instance.CheckTickRuns+" WHERE service = $1", service)
	if err != nil {
		return inv, err
	}
	ticks := map[int64]map[int64][]jobRun{} // tick second → job id → its runs
	var first, last int64
	for rows.Next() {
		var stamp string
		var id, claimed, started int64
		var r jobRun
		if err := rows.Scan(&stamp, &id, &r.attempt, &r.instance, &claimed, &started); err != nil {
			rows.Close()
			return inv, err
		}
		t, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil {
			rows.Close()
			return inv, fmt.Errorf("check: tick %q: %w", stamp, err)
		}
		r.claimed, r.started = time.Unix(0, claimed), time.Unix(0, started)
		sec := t.Unix()
		if ticks[sec] == nil {
			ticks[sec] = map[int64][]jobRun{}
		}
		ticks[sec][id] = append(ticks[sec][id], r)
		if first == 0 || sec < first {
			first = sec
		}
		last = max(last, sec)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return inv, err
	}
	if len(ticks) == 0 {
		inv.violate(time.Time{}, "the schedule never fired")
		return inv, nil
	}
	inv.Operations = int(last - first + 1)
	for sec := first; sec <= last; sec++ {
		name := "tick " + time.Unix(sec, 0).UTC().Format(time.RFC3339)
		jobs := ticks[sec]
		switch {
		case jobs == nil:
			inv.violate(time.Unix(sec, 0), "%s never ran", name)
			continue
		case len(jobs) > 1:
			inv.violate(time.Unix(sec, 0), "%s fired as %d jobs", name, len(jobs))
		}
		for _, rs := range jobs {
			judgeRuns(&inv, name, rs, faults)
		}
	}
	return inv, nil
}

// flowEngine returns an engine of service's workflows on s for reading them: its job client
// never starts, so it runs none. done closes it.
func flowEngine(s *store.Store, service string) (e *workflow.Engine, done func(), err error) {
	d := block.Deps{Store: s, Service: service, Instance: "checker"}
	jc, err := jobs.New(d, jobs.Config{})
	if err != nil {
		return nil, nil, err
	}
	done = func() { _ = jc.Close(context.Background()) }
	if e, err = workflow.New(d, jc, workflow.Config{}); err != nil {
		done()
		return nil, nil, err
	}
	return e, done, nil
}

// workflowInvariant judges the step flows the instances started (see
// [instance.CheckStepFlows]): each ended, completed or, when it was to fail, compensated
// (its steps 3, 2, 1 undone in that order, each recorded once); every step that completed
// ran once, its effect committed with its checkpoint. The steps write to the database
// (DoTx), so no fault excuses a second run: a run rescued from an instance that only seemed
// dead, and still runs, cannot commit the step again.
func workflowInvariant(ctx context.Context, s *store.Store, e *workflow.Engine, service string) (Invariant, error) {
	inv := Invariant{Name: invWorkflows}
	n, problems, err := instance.CheckStepFlows(ctx, s, e, service)
	if err != nil {
		return inv, err
	}
	inv.Operations = n
	for _, p := range problems {
		inv.violate(time.Time{}, "%s", p)
	}
	return inv, nil
}
