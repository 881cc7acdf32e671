// Package jobs is a transactional job queue in the service's own database that loses
// nothing: a job enqueued in the caller's transaction exists exactly when the business write
// does, a job whose instance dies is rescued as soon as that instance is declared dead (and
// never because it has merely run for long), and a completion from an instance whose
// attempt was rescued is refused.
//
// Jobs are typed: an argument type names its kind with a Kind method and is stored as JSON;
// a [Worker] per kind is registered with [Register]. Workers run per queue with a local
// concurrency, an optional cluster-wide limit per queue, and per-key serialisation (at most
// one running job per [Opts].Key, cluster-wide). Failed jobs are retried with exponential
// backoff and jitter until their attempts run out, then kept as discarded, retryable from the
// CLI. An operator cancels, discards or retries one job ([Client.Cancel], [Client.Discard],
// [Client.Retry]). Instances fetch and complete jobs in batches and wake each other over the bus, with a
// poll as backstop.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twicehq/twice/store"
)

// Args are a job's arguments: a JSON-encodable value whose Kind names the worker that runs
// it. Kind must be stable across deployments: it is stored with every job.
type Args interface {
	Kind() string
}

// ArgsWithOpts is implemented by argument types that carry default [Opts] for their kind;
// options given at enqueue override them field by field.
type ArgsWithOpts interface {
	Args
	Opts() Opts
}

// State is where a job is in its life.
type State string

const (
	// Available jobs wait to run, now or at their scheduled time (retries included).
	Available State = "available"
	// Running jobs are held by one instance, their owner.
	Running State = "running"
	// Completed jobs ran successfully.
	Completed State = "completed"
	// Cancelled jobs were cancelled before or while running, or by their worker.
	Cancelled State = "cancelled"
	// Discarded jobs failed on every attempt, could not be decoded, or were discarded by
	// hand ([Client.Discard]). They are kept, and can be retried.
	Discarded State = "discarded"
	// Waiting jobs are batch callbacks waiting for their batch to finish.
	Waiting State = "waiting"
)

// The state bits stored in the database.
const (
	bitAvailable = 1
	bitRunning   = 2
	bitCompleted = 4
	bitCancelled = 8
	bitDiscarded = 16
	bitWaiting   = 32
)

var stateBits = map[State]int{Available: bitAvailable, Running: bitRunning, Completed: bitCompleted,
	Cancelled: bitCancelled, Discarded: bitDiscarded, Waiting: bitWaiting}

func stateOf(bit int) State {
	switch bit {
	case bitAvailable:
		return Available
	case bitRunning:
		return Running
	case bitCompleted:
		return Completed
	case bitCancelled:
		return Cancelled
	case bitDiscarded:
		return Discarded
	case bitWaiting:
		return Waiting
	}
	return State(fmt.Sprintf("unknown(%d)", bit))
}

// ParseState parses a state name.
func ParseState(s string) (State, error) {
	if _, ok := stateBits[State(s)]; !ok {
		return "", fmt.Errorf("jobs: unknown state %q (available, running, completed, cancelled, discarded, waiting)", s)
	}
	return State(s), nil
}

// Finished reports whether s is final: completed, cancelled or discarded.
func (s State) Finished() bool { return s == Completed || s == Cancelled || s == Discarded }

// Opts are a job's options at enqueue. A nil *Opts is valid; zero fields take the defaults
// of the argument type ([ArgsWithOpts]) and then of the [Config].
type Opts struct {
	// Queue is the queue the job runs in. Defaults to "default".
	Queue string
	// Priority orders jobs within a queue: lower runs first. 0 to 100. Defaults to 0.
	Priority int
	// RunAt schedules the job, in database time. Defaults to now.
	RunAt time.Time
	// Delay postpones the job by a duration after RunAt (or now). Defaults to 0.
	Delay time.Duration
	// MaxAttempts is how many times the job runs before it is discarded. Defaults to
	// [Config].MaxAttempts (25).
	MaxAttempts int
	// Timeout bounds one attempt; the job's context is cancelled when it passes. Defaults
	// to [Config].Timeout (none).
	Timeout time.Duration
	// Key serialises jobs: at most one job with a given key runs at a time, cluster-wide.
	// Defaults to none.
	Key string
	// Unique makes the job unique: another job with the same unique key in one of the
	// covered states makes the enqueue a no-op that returns the existing job. Defaults to
	// nil (not unique).
	Unique *Unique
	// Tags label the job for operators (`twice jobs list --tag`). Defaults to none.
	Tags []string
	// Meta is free-form metadata stored with the job. Defaults to none.
	Meta map[string]string
}

// Unique configures a unique job.
type Unique struct {
	// Key identifies the job within its kind. Defaults to the job's encoded arguments.
	Key string
	// Window makes the key unique per window of database time (a job per key per hour,
	// say). Defaults to 0: unique for as long as a job is in a covered state.
	Window time.Duration
	// States are the states in which an existing job blocks a new one. Defaults to every
	// state but cancelled and discarded.
	States []State
}

// Limits on what a job may carry.
const (
	MaxKindLen   = 128
	MaxQueueLen  = 128
	MaxKeyLen    = 512
	MaxArgsBytes = 1 << 20
	MaxPriority  = 100
	MaxTags      = 32
	// MaxErrorLen is the most bytes of a job's last error that are kept: an attempt's error,
	// or the reason given to [Client.Discard] with its prefix.
	MaxErrorLen = store.MaxErrorText
)

// DefaultQueue is the queue of a job that names none.
const DefaultQueue = "default"

// Row is a job as stored.
type Row struct {
	ID              int64             `json:"id"`
	Queue           string            `json:"queue"`
	Kind            string            `json:"kind"`
	Args            json.RawMessage   `json:"args"`
	State           State             `json:"state"`
	Priority        int               `json:"priority"`
	ScheduledAt     time.Time         `json:"scheduled_at"`
	Attempt         int               `json:"attempt"`
	MaxAttempts     int               `json:"max_attempts"`
	Owner           string            `json:"owner,omitempty"`
	Key             string            `json:"key,omitempty"`
	UniqueKey       string            `json:"unique_key,omitempty"`
	BatchID         int64             `json:"batch_id,omitempty"`
	Timeout         time.Duration     `json:"timeout,omitempty"`
	CancelRequested bool              `json:"cancel_requested,omitempty"`
	Tags            []string          `json:"tags,omitempty"`
	Meta            map[string]string `json:"meta,omitempty"`
	LastError       string            `json:"last_error,omitempty"`
	CreatedAt       time.Time         `json:"created_at"`
	AttemptedAt     time.Time         `json:"attempted_at,omitzero"`
	FinishedAt      time.Time         `json:"finished_at,omitzero"`
}

// Job is a job handed to its worker: the stored row and the decoded arguments.
type Job[T Args] struct {
	*Row
	Args T
}

// Worker runs the jobs of one kind. Work returning nil completes the job; an error retries
// it with backoff (or discards it after its last attempt); [Snooze] and [Cancel] say
// otherwise. Work must return when ctx ends: the job was cancelled, timed out, or the
// instance is shutting down.
type Worker[T Args] interface {
	Work(ctx context.Context, job *Job[T]) error
}

// WorkFunc adapts a function to a [Worker].
type WorkFunc[T Args] func(ctx context.Context, job *Job[T]) error

// Work calls f.
func (f WorkFunc[T]) Work(ctx context.Context, job *Job[T]) error { return f(ctx, job) }

var (
	// ErrNotFound is returned for a job id that does not exist in the service.
	ErrNotFound = errors.New("jobs: job not found")
	// ErrFinished is returned when cancelling or discarding a job that has already finished.
	ErrFinished = errors.New("jobs: job already finished")
	// ErrRunning is returned when retrying or discarding a job that is running.
	ErrRunning = errors.New("jobs: job is running")
	// ErrCancelled is the cause of a running job's context when the job was cancelled.
	ErrCancelled = errors.New("jobs: job cancelled")
	// ErrShutdown is the cause of a running job's context when its instance shuts down and
	// the job is handed back to the queue.
	ErrShutdown = errors.New("jobs: instance shutting down")
	// ErrNoWorker is recorded on a job whose kind has no worker on the instance that
	// fetched it; the job is retried.
	ErrNoWorker = errors.New("jobs: no worker registered for this kind")
	// ErrInvalid wraps every rejected argument or option.
	ErrInvalid = errors.New("jobs: invalid")
	// ErrClosed is returned once the client has stopped.
	ErrClosed = errors.New("jobs: client closed")
)

type snoozeError struct{ d time.Duration }

func (e *snoozeError) Error() string { return fmt.Sprintf("jobs: snoozed for %v", e.d) }

// Snooze, returned by a worker, puts the job back to run again after d without counting
// the attempt.
func Snooze(d time.Duration) error { return &snoozeError{d: max(d, 0)} }

type cancelError struct{ err error }

func (e *cancelError) Error() string { return "jobs: cancelled by worker: " + errString(e.err) }
func (e *cancelError) Unwrap() error { return e.err }

// Cancel, returned by a worker, cancels the job for good (no retry), recording err.
func Cancel(err error) error { return &cancelError{err: err} }

// capError is s as the database keeps an error (see [store.Text]): valid UTF-8 with no NUL,
// at most MaxErrorLen bytes.
func capError(s string) string { return store.Text(s, MaxErrorLen) }

func errString(err error) string {
	if err == nil {
		return "no reason given"
	}
	return err.Error()
}

// DecodeArgs decodes a job's stored arguments into T, as the worker of T's kind receives
// them. It rejects anything but one JSON value, and returns the zero T with its error.
func DecodeArgs[T Args](data []byte) (T, error) {
	var v T
	err := decodeArgsInto(data, &v)
	return v, err
}

// decodeArgsInto is DecodeArgs into *v, which a worker points at its Job's Args: the
// arguments are decoded where the job keeps them, with no copy on the heap of their own.
func decodeArgsInto[T Args](data []byte, v *T) error {
	if len(data) > MaxArgsBytes {
		return fmt.Errorf("%w: args of %d bytes exceed %d", ErrInvalid, len(data), MaxArgsBytes)
	}
	if err := json.Unmarshal(data, v); err != nil {
		var zero T
		*v = zero // what a failed decode left half set is no argument
		return fmt.Errorf("jobs: decode args into %T: %w", zero, err)
	}
	return nil
}

// Raw is arguments already encoded as JSON, for code that enqueues jobs of kinds it has no
// type for: the CLI, and cron replaying a schedule's stored arguments.
type Raw struct {
	KindName string
	JSON     json.RawMessage
}

// Kind returns r.KindName.
func (r Raw) Kind() string { return r.KindName }

// MarshalJSON returns r.JSON, or {} when it is empty.
func (r Raw) MarshalJSON() ([]byte, error) {
	if len(r.JSON) == 0 {
		return []byte("{}"), nil
	}
	return r.JSON, nil
}
