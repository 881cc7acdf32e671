// Package workflow runs durable workflows: named, versioned functions of typed input made
// of steps, whose progress is checkpointed in the service's own database so that a
// workflow survives the crash of the instance running it and resumes on any live one,
// without running a completed step again, and which undo their completed steps with
// compensations when a step fails for good (the saga pattern).
//
// A workflow runs as a job of the job queue (package jobs), keyed by the workflow's id:
// when its instance dies the job is rescued by liveness and runs again on another. The run
// replays the workflow's function from the start: each step it reaches that completed
// before returns its stored result (JSON) instead of running (steps are identified by
// their order and name, as in DBOS), so the function must call the same steps in the same
// order given the same input and results. A history that does not match the code (a step
// renamed, added before or moved, or a workflow started under a version no longer
// registered) fails the workflow with an error naming the step and the versions, instead
// of doing something undefined.
//
// A step ([Do]) runs at least once per workflow until it completes, with its own retry
// policy, and gets an idempotency key that is the same on every attempt and after every
// resume, to pass to outside systems. A step that writes to the same database ([DoTx])
// commits its effect and its checkpoint in one transaction: exactly once. [DoAll] runs
// several steps at once and waits for all of them (a fan-out, whose results come back in
// order for the function to aggregate); each keeps its own place, result and compensation,
// so a resumed run runs only those that had not completed.
//
// A workflow can wait without holding a worker: [Sleep] sleeps durably, its wake-up time
// stored when first reached, so that a crash neither restarts nor skips it; [WaitSignal]
// waits, with a timeout, for a signal sent from any instance ([Engine.Signal]), which is
// kept until the workflow takes it and wakes it when it commits. A waiting
// workflow's run ends, its job is put back in the queue until the wait is over, and the
// next run replays the function to the wait from the stored results.
//
// When the workflow's function returns an error (a step failed for good, or it was
// cancelled), the compensations of its completed steps run in reverse order, each retried
// until it succeeds or its attempts run out, when it is marked for a person. A workflow
// ends [Completed], [Compensated], [Cancelled] or [Failed] (needs attention): never
// silently half done.
//
// Deploying a change: a workflow runs with the definition of the version it was started
// with. Register the new version next to the old one, deploy it everywhere, then start
// workflows with the new version's handle, and remove the old version once no workflow of it runs. An instance that
// fetches a workflow of a version newer than any it has (a deploy half done) leaves it for
// another instance; one of an older version it no longer has fails it, naming both.
package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// State is where a workflow is in its life.
type State string

const (
	// Running workflows run their steps (or wait for an instance to run them).
	Running State = "running"
	// Compensating workflows failed or were cancelled and undo their completed steps.
	Compensating State = "compensating"
	// Completed workflows returned nil: every step they ran completed.
	Completed State = "completed"
	// Compensated workflows failed and every compensation of their completed steps ran.
	Compensated State = "compensated"
	// Cancelled workflows were cancelled and every compensation of their completed steps ran.
	Cancelled State = "cancelled"
	// Failed workflows need a person: a compensation failed on every attempt, or the
	// stored history does not match the code. The error says which.
	Failed State = "failed"
)

// Finished reports whether s is final.
func (s State) Finished() bool { return s != Running && s != Compensating }

// Queue is the job queue workflows run in. Set its concurrency per instance in the jobs
// Config's Queues.
const Queue = "twice.workflows"

// Limits on what a workflow carries.
const (
	MaxIDLen      = jobs.MaxKeyLen
	MaxNameLen    = 128
	MaxInputBytes = jobs.MaxArgsBytes
)

// Defaults of [Config] and of a step's [Retry].
const (
	DefaultStepAttempts         = 3
	DefaultCompensationAttempts = 10
	DefaultStepConcurrency      = 16
	DefaultUnknownRetry         = 5 * time.Second
)

var (
	// ErrNotFound is returned for a workflow id that does not exist in the service.
	ErrNotFound = errors.New("workflow: not found")
	// ErrFinished is returned when cancelling a workflow that has already ended.
	ErrFinished = errors.New("workflow: already finished")
	// ErrCancelled is what a step returns, without running, once the workflow's
	// cancellation was requested; returned from the workflow's function, it makes the
	// workflow compensate and end [Cancelled].
	ErrCancelled = errors.New("workflow: cancelled")
	// ErrMismatch wraps every disagreement between a workflow's stored history and the code
	// that runs it. The workflow ends [Failed].
	ErrMismatch = errors.New("workflow: history does not match the code")
	// ErrIDTaken is returned when starting a workflow with the id of a workflow of another
	// name.
	ErrIDTaken = errors.New("workflow: id taken by a workflow of another name")
	// ErrInvalid wraps every rejected definition, id or input.
	ErrInvalid = errors.New("workflow: invalid")
)

// Config configures an [Engine].
type Config struct {
	// Backoff is the delay before attempt number attempt+1 of a step or compensation whose
	// Retry sets none. Defaults to [DefaultBackoff]: exponential from 1 second, capped at
	// 1 minute, ±20% jitter.
	Backoff func(attempt int) time.Duration
	// StepAttempts is how many times a step runs before it fails for good, when its Retry
	// says nothing. Defaults to 3.
	StepAttempts int
	// CompensationAttempts is how many times a compensation runs before the workflow is
	// marked [Failed] for a person, when the step's Retry says nothing. Defaults to 10.
	CompensationAttempts int
	// StepConcurrency is how many steps of one [DoAll] run at a time. Defaults to 16.
	StepConcurrency int
	// UnknownRetry is how long an instance leaves a workflow it has no definition for (a
	// name, or a version newer than its own, registered only on instances deployed since)
	// before it may fetch it again. Defaults to 5 seconds.
	UnknownRetry time.Duration
	// Retention is how long a workflow that ended completed, compensated or cancelled is
	// kept, with the history of its steps, after it ended; the leader then deletes it
	// ([Engine.Prune]). A [Failed] workflow waits for a person and is never deleted.
	// Negative keeps every workflow. Defaults to [DefaultRetention] (7 days).
	Retention time.Duration
}

func (c Config) withDefaults() Config {
	if c.Backoff == nil {
		c.Backoff = DefaultBackoff
	}
	if c.StepAttempts <= 0 {
		c.StepAttempts = DefaultStepAttempts
	}
	if c.CompensationAttempts <= 0 {
		c.CompensationAttempts = DefaultCompensationAttempts
	}
	if c.StepConcurrency <= 0 {
		c.StepConcurrency = DefaultStepConcurrency
	}
	if c.UnknownRetry <= 0 {
		c.UnknownRetry = DefaultUnknownRetry
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	return c
}

// DefaultBackoff waits 2^(attempt-1) seconds, at most a minute, with ±20% jitter.
func DefaultBackoff(attempt int) time.Duration {
	d := time.Minute
	if attempt < 7 {
		d = min(time.Minute, time.Second<<max(attempt-1, 0))
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Engine starts, runs, cancels and reports the workflows of one service. Workflows run on
// the instances whose engine has their definition registered ([Register]).
type Engine struct {
	d    block.Deps
	s    *store.Store
	q    queries
	jobs *jobs.Client
	cfg  Config
	log  *slog.Logger

	mu      sync.Mutex                                 // protects defs, working, closed, running, unsub
	defs    map[string]map[int]*def                    // by name, then version
	working bool                                       // the job worker is registered
	closed  bool                                       //
	running map[string]map[int]context.CancelCauseFunc // workflow id → step place → its running attempt's cancel
	unsub   func()                                     // the subscription to CancelChannel
	checks  sync.WaitGroup                             // the looks at cancellations that signals started
}

// CancelChannel is the bus channel on which [Engine.Cancel] names the workflow it asked
// to stop, so that the instance running one of its steps interrupts it at once rather
// than at its next step. A hint: the instance re-reads the workflow's cancellation before
// it interrupts anything.
const CancelChannel = "twice.workflows.cancel"

// New returns an engine working on d that runs its workflows as jobs of jc. It starts
// nothing and runs no statement.
func New(d block.Deps, jc *jobs.Client, cfg Config) (*Engine, error) {
	d = d.WithDefaults()
	if err := d.Validate("workflow", true); err != nil {
		return nil, err
	}
	if jc == nil {
		return nil, errors.New("workflow: a jobs client is required")
	}
	return &Engine{d: d, s: d.Store, q: queriesFor(d.Store), jobs: jc, cfg: cfg.withDefaults(), log: d.Logger,
		defs: map[string]map[int]*def{}, running: map[string]map[int]context.CancelCauseFunc{}}, nil
}

// Start listens for cancellations of the steps running here. Workflows run through the
// job queue, whose worker for them is registered with the first definition.
func (e *Engine) Start(context.Context) error {
	if b := e.d.Bus; b != nil {
		unsub := b.Subscribe(CancelChannel, e.onCancel)
		e.mu.Lock()
		e.unsub = unsub
		e.mu.Unlock()
	}
	return nil
}

// Close stops registering definitions and listening for cancellations. Running workflows
// are drained by the job queue, which hands back those that do not finish in time; they
// resume elsewhere.
func (e *Engine) Close(context.Context) error {
	e.mu.Lock()
	e.closed = true
	unsub := e.unsub
	e.unsub = nil
	e.mu.Unlock()
	if unsub != nil {
		unsub()
	}
	e.checks.Wait()
	return nil
}

// Abandon is Close: the engine writes nothing of its own outside the runs, which the job
// queue abandons.
func (e *Engine) Abandon(ctx context.Context) { _ = e.Close(ctx) }

// Def defines a workflow of input In.
type Def[In any] struct {
	// Name names the workflow, stored with every instance of it. Required.
	Name string
	// Version numbers the definition: change it when the steps change (see the package
	// doc on deploying a change). Defaults to 1.
	Version int
	// Run is the workflow: it calls its steps with [Do] and [DoTx], and must call the same
	// steps in the same order given the same input and step results. Returning an error
	// makes the workflow compensate. Required.
	Run func(ctx *Context, in In) error
}

// def is a registered definition with its input type erased.
type def struct {
	name    string
	version int
	run     func(ctx *Context, input []byte) error
}

// Workflow is a registered definition, through which workflows of it are started.
type Workflow[In any] struct {
	e       *Engine
	name    string
	version int
}

// Register adds d to e, so that this instance runs workflows of it, and returns the
// handle that starts them. Several versions of one name may be registered: a workflow runs
// with the version it was started with, and each handle starts its own.
func Register[In any](e *Engine, d Def[In]) (*Workflow[In], error) {
	if err := checkName("name", d.Name, MaxNameLen); err != nil {
		return nil, err
	}
	if d.Version == 0 {
		d.Version = 1
	}
	if d.Version < 0 {
		return nil, fmt.Errorf("%w: workflow %q: negative version %d", ErrInvalid, d.Name, d.Version)
	}
	if d.Run == nil {
		return nil, fmt.Errorf("%w: workflow %q: Run is required", ErrInvalid, d.Name)
	}
	run := d.Run
	df := &def{name: d.Name, version: d.Version, run: func(ctx *Context, input []byte) error {
		var in In
		if err := json.Unmarshal(input, &in); err != nil {
			return fmt.Errorf("%w: workflow %q: decode input into %T: %v", ErrMismatch, d.Name, in, err)
		}
		return run(ctx, in)
	}}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errors.New("workflow: engine closed")
	}
	if e.defs[d.Name][d.Version] != nil {
		return nil, fmt.Errorf("%w: workflow %q version %d is registered already", ErrInvalid, d.Name, d.Version)
	}
	if !e.working {
		if err := jobs.Register(e.jobs, jobs.WorkFunc[runArgs](e.work)); err != nil {
			return nil, fmt.Errorf("workflow: registering the job worker: %w", err)
		}
		e.working = true
	}
	if e.defs[d.Name] == nil {
		e.defs[d.Name] = map[int]*def{}
	}
	e.defs[d.Name][d.Version] = df
	return &Workflow[In]{e: e, name: d.Name, version: d.Version}, nil
}

// versions returns the versions of name registered here, ascending.
func (e *Engine) versions(name string) []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Sorted(maps.Keys(e.defs[name]))
}

func (e *Engine) def(name string, version int) *def {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.defs[name][version]
}

// runArgs are the arguments of the job that runs a workflow.
type runArgs struct {
	ID string `json:"id"`
	// After is the job this one succeeds: a wake found that one running and enqueued this
	// one to carry the workflow on once it ended ([Engine.wake]). If this one is still the
	// workflow's job when it runs, that one did not take the workflow back, and is spare.
	After int64 `json:"after,omitempty"`
}

func (runArgs) Kind() string    { return "twice.workflow" }
func (runArgs) Opts() jobs.Opts { return jobs.Opts{Queue: Queue} }

// runAttempts is how many times the job of a workflow runs before the queue gives up on
// it: a run fails only when the database does (a step's failure is the workflow's
// business, not the job's), so it is retried for as long as it takes.
const runAttempts = 1_000_000

// Name is the workflow's name.
func (w *Workflow[In]) Name() string { return w.name }

// Start starts a workflow of w with the given id and input; it returns false, and does
// nothing, when a workflow with that id exists already (it returns [ErrIDTaken] when that
// one is of another name). The id is the caller's: an order id, say, so that a retried
// request starts the workflow once.
func (w *Workflow[In]) Start(ctx context.Context, id string, in In) (bool, error) {
	var started bool
	err := w.e.s.InTx(ctx, func(tx store.Tx) error {
		var err error
		started, err = w.start(ctx, tx, id, in)
		return err
	})
	return started, err
}

// StartTx is [Workflow.Start] inside the caller's transaction (any transaction
// [store.Store.Wrap] accepts): the workflow exists, and runs, only if tx commits.
func (w *Workflow[In]) StartTx(ctx context.Context, tx any, id string, in In) (bool, error) {
	q, err := w.e.s.Wrap(tx)
	if err != nil {
		return false, err
	}
	return w.start(ctx, q, id, in)
}

func (w *Workflow[In]) start(ctx context.Context, q store.Querier, id string, in In) (bool, error) {
	e := w.e
	if err := checkName("id", id, MaxIDLen); err != nil {
		return false, err
	}
	input, err := json.Marshal(in)
	if err != nil {
		return false, fmt.Errorf("%w: encode input of workflow %q: %v", ErrInvalid, w.name, err)
	}
	if len(input) > MaxInputBytes {
		return false, fmt.Errorf("%w: input of workflow %q is %d bytes, more than %d", ErrInvalid, w.name, len(input), MaxInputBytes)
	}
	var got string
	err = q.QueryRow(ctx, e.q.insert, e.s.NowArg(), e.d.Service, id, w.name, w.version, string(input)).Scan(&got)
	if errors.Is(err, store.ErrNoRows) {
		var name string
		if err := q.QueryRow(ctx, e.q.nameOf, e.d.Service, id).Scan(&name); err != nil {
			return false, fmt.Errorf("workflow: start %q: %w", id, err)
		}
		if name != w.name {
			return false, fmt.Errorf("%w: %q is a workflow %q, not %q", ErrIDTaken, id, name, w.name)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("workflow: start %q: %w", id, err)
	}
	if _, err := e.jobs.EnqueueTx(ctx, q, runArgs{ID: id}, &jobs.Opts{Key: id, MaxAttempts: runAttempts}); err != nil {
		return false, fmt.Errorf("workflow: start %q: %w", id, err)
	}
	return true, nil
}

// Cancel asks the workflow id to stop: a step of it running now has its context cancelled
// (the instance running it hears of it over the bus; without a bus, or if the signal is
// lost, the step finishes first), the next step it reaches returns [ErrCancelled] without
// running, and once its function returns, the compensations of its completed steps run
// and it ends [Cancelled] (or [Failed] if a compensation fails for good); a workflow that
// waits ([Sleep], [WaitSignal]) is woken to do so at once. An interrupted
// step did not complete, so it has no compensation: give outside systems its idempotency
// key, so that they can tell what it did. It returns [ErrNotFound] for an unknown
// id and [ErrFinished] for a workflow that has ended.
func (e *Engine) Cancel(ctx context.Context, id string) error {
	var state State
	err := e.s.InTx(ctx, func(tx store.Tx) error {
		var job int64
		if err := tx.QueryRow(ctx, e.q.requestCancel, e.s.NowArg(), e.d.Service, id).Scan(&state, &job); err != nil {
			return err
		}
		if state.Finished() {
			return nil
		}
		return e.wake(ctx, tx, id, job) // a waiting workflow compensates now, not when its wait ends
	})
	switch {
	case errors.Is(err, store.ErrNoRows):
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	case err != nil:
		return fmt.Errorf("workflow: cancel %q: %w", id, err)
	case state.Finished():
		return fmt.Errorf("%w: %q is %s", ErrFinished, id, state)
	}
	if b := e.d.Bus; b != nil {
		if err := b.Publish(ctx, CancelChannel, []byte(id)); err != nil {
			e.log.Debug("workflow: cancellation signal not sent; the workflow stops at its next step", "workflow", id, "err", err)
		}
	}
	return nil
}

// onCancel takes a cancellation signal as a hint: when it names a workflow whose step runs
// here (or signals were lost), it re-reads those workflows' cancellation and interrupts
// the steps of those cancelled. A signal naming anything else costs no query.
func (e *Engine) onCancel(m bus.Message) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []string
	if m.Lost {
		ids = slices.Collect(maps.Keys(e.running))
	} else if _, ok := e.running[string(m.Payload)]; ok {
		ids = []string{string(m.Payload)}
	}
	if len(ids) == 0 || e.closed {
		return
	}
	e.checks.Add(1)
	go func() {
		defer e.checks.Done()
		ctx, cancel := context.WithTimeout(context.Background(), loop.StatementTimeout)
		defer cancel()
		for _, id := range ids {
			var requested bool
			if err := e.s.QueryRow(ctx, e.q.cancelRequested, e.d.Service, id).Scan(&requested); err != nil || !requested {
				continue
			}
			e.mu.Lock()
			for _, stop := range e.running[id] {
				stop(ErrCancelled)
			}
			e.mu.Unlock()
		}
	}()
}

// track records the cancel of the attempt of step seq of workflow id running here (the
// steps of a [DoAll] run at once); the returned function forgets it.
func (e *Engine) track(id string, seq int, stop context.CancelCauseFunc) func() {
	e.mu.Lock()
	if e.running[id] == nil {
		e.running[id] = map[int]context.CancelCauseFunc{}
	}
	e.running[id][seq] = stop
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		delete(e.running[id], seq)
		if len(e.running[id]) == 0 {
			delete(e.running, id)
		}
		e.mu.Unlock()
		stop(nil)
	}
}

// Status is a workflow as stored, with the history of its steps.
type Status struct {
	ID              string          `json:"id"`
	Name            string          `json:"name"`
	Version         int             `json:"version"`
	Input           json.RawMessage `json:"input"`
	State           State           `json:"state"`
	CancelRequested bool            `json:"cancel_requested,omitempty"`
	// Error says why the workflow compensated or failed; after [Engine.Retry], prefixed
	// "retried after: " until it ends again.
	Error      string       `json:"error,omitempty"`
	CreatedAt  time.Time    `json:"created_at"`
	UpdatedAt  time.Time    `json:"updated_at"`
	FinishedAt time.Time    `json:"finished_at,omitzero"`
	Steps      []StepRecord `json:"steps"`

	jobID int64 // the job to wake while the workflow waits; 0 before it first waited
}

// StepRecord is the stored history of one step, or of one wait ([Sleep], [WaitSignal]).
type StepRecord struct {
	// Seq is the step's place in the workflow, from 1.
	Seq  int    `json:"seq"`
	Name string `json:"name"`
	// Kind is "step" ([Do], [DoTx]), "sleep" ([Sleep]) or "signal" ([WaitSignal]).
	Kind string `json:"kind"`
	// State is "completed", "retrying" (failed, attempts left) or "failed" (for good) for
	// a step; "waiting", "completed" or "timedout" (no signal came) for a wait. A
	// completed wait for a signal has the signal's payload as its Result.
	State    string          `json:"state"`
	Attempts int             `json:"attempts"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	// Compensation is "" (not run), "retrying", "done" or "failed" (needs a person).
	Compensation         string    `json:"compensation,omitempty"`
	CompensationAttempts int       `json:"compensation_attempts,omitempty"`
	CompensationError    string    `json:"compensation_error,omitempty"`
	UpdatedAt            time.Time `json:"updated_at"`
	// WakeAt is when a wait wakes (or woke), in database time.
	WakeAt time.Time `json:"wake_at,omitzero"`
}

// Get returns the workflow id with the history of its steps, or [ErrNotFound].
func (e *Engine) Get(ctx context.Context, id string) (*Status, error) {
	st, err := e.load(ctx, e.s.Reader(), id)
	if err != nil {
		return nil, fmt.Errorf("workflow: get %q: %w", id, err)
	}
	return st, nil
}

func (e *Engine) load(ctx context.Context, q store.Querier, id string) (*Status, error) {
	var st Status
	var input string
	var created, updated store.Time
	var finished store.Time
	err := q.QueryRow(ctx, e.q.get, e.d.Service, id).Scan(&st.ID, &st.Name, &st.Version, &input, &st.State,
		&st.CancelRequested, &st.Error, &created, &updated, &finished, &st.jobID)
	if errors.Is(err, store.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	st.Input = json.RawMessage(input)
	st.CreatedAt, st.UpdatedAt = created.Time, updated.Time
	st.FinishedAt = finished.Time
	rows, err := q.Query(ctx, e.q.steps, e.d.Service, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	st.Steps = []StepRecord{}
	for rows.Next() {
		var r StepRecord
		var result string
		var at, wake store.Time
		if err := rows.Scan(&r.Seq, &r.Name, &r.Kind, &r.State, &r.Attempts, &result, &r.Error, &r.Compensation,
			&r.CompensationAttempts, &r.CompensationError, &at, &wake); err != nil {
			return nil, err
		}
		r.WakeAt = wake.Time
		if result != "" {
			r.Result = json.RawMessage(result)
		}
		r.UpdatedAt = at.Time
		st.Steps = append(st.Steps, r)
	}
	return &st, rows.Err()
}

// checkName rejects empty, overlong or non-printable names and ids.
func checkName(what, s string, limit int) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty %s", ErrInvalid, what)
	case len(s) > limit:
		return fmt.Errorf("%w: %s of %d bytes is longer than %d", ErrInvalid, what, len(s), limit)
	case !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: %s %q has control characters or invalid UTF-8", ErrInvalid, what, s)
	}
	return nil
}
