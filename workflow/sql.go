package workflow

import (
	"embed"

	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the workflow tables' schema, for [store.Migrator].
func Component() store.Component {
	return store.MustLoadComponent("workflow", migrations,
		store.Table{Name: "twice_workflows", Service: "service"},
		store.Table{Name: "twice_workflow_steps", Service: "service"},
		store.Table{Name: "twice_workflow_signals", Service: "service"})
}

// queries are the workflow statements.
type queries struct {
	insert, nameOf, get, steps, cancelRequested, requestCancel, stepDone, stepFailed, compDone, compFailed,
	compensating, finish, claim, setJob, waitAt, waitGet, waitDone, lockFor, signal, consume, retry, retryComps string
}

// workflowCols are the columns [scanWorkflow] reads, in order.
const workflowCols = `id, name, version, input, state, cancel_requested, error, created_at, updated_at, finished_at,
	coalesce(job_id, 0)`

// stepCols are the columns [scanStep] reads, in order.
const stepCols = `seq, name, kind, state, attempts, result, error, comp_state, comp_attempts, comp_error, updated_at,
	wake_at`

// templates are the statements as written, once for both dialects (see [store.Store.SQL]).
// Reads take the service as $1; writes take "now" as $1 and the service as $2.
var templates = queries{
	// Starting a workflow whose id exists returns no row: starting twice is a no-op.
	insert: `
INSERT INTO twice_workflows (service, id, name, version, input, state, created_at, updated_at)
VALUES ($2, $3, $4, $5, $6, 'running', {now}, {now})
ON CONFLICT (service, id) DO NOTHING
RETURNING id`,
	nameOf:          `SELECT name FROM twice_workflows WHERE service = $1 AND id = $2`,
	get:             `SELECT ` + workflowCols + ` FROM twice_workflows WHERE service = $1 AND id = $2`,
	steps:           `SELECT ` + stepCols + ` FROM twice_workflow_steps WHERE service = $1 AND workflow_id = $2 ORDER BY seq`,
	cancelRequested: `SELECT cancel_requested FROM twice_workflows WHERE service = $1 AND id = $2`,
	// Only a workflow still running or compensating can be cancelled; the state returned
	// tells a finished one from a missing one.
	requestCancel: `
UPDATE twice_workflows
SET cancel_requested = (cancel_requested OR state IN ('running', 'compensating')),
	updated_at = CASE WHEN state IN ('running', 'compensating') THEN {now} ELSE updated_at END
WHERE service = $2 AND id = $3
RETURNING state, coalesce(job_id, 0)`,
	// A step's completion. It never overwrites a completed step (one completed by a run
	// that overlapped this one): no row comes back then, and the caller reads the stored
	// result instead (a StepTx rolls its effect back).
	stepDone: `
INSERT INTO twice_workflow_steps (service, workflow_id, seq, name, state, attempts, result, updated_at)
VALUES ($2, $3, $4, $5, 'completed', $6, $7, {now})
ON CONFLICT (service, workflow_id, seq) DO UPDATE
SET state = 'completed', attempts = excluded.attempts, result = excluded.result, error = '', updated_at = excluded.updated_at
WHERE twice_workflow_steps.state <> 'completed' AND twice_workflow_steps.name = excluded.name
RETURNING seq`,
	// A failed attempt of a step: $6 is 'retrying' or 'failed' (for good).
	stepFailed: `
INSERT INTO twice_workflow_steps (service, workflow_id, seq, name, state, attempts, error, updated_at)
VALUES ($2, $3, $4, $5, $6, $7, $8, {now})
ON CONFLICT (service, workflow_id, seq) DO UPDATE
SET state = excluded.state, attempts = excluded.attempts, error = excluded.error, updated_at = excluded.updated_at
WHERE twice_workflow_steps.state <> 'completed' AND twice_workflow_steps.name = excluded.name`,
	compDone: `
UPDATE twice_workflow_steps SET comp_state = 'done', comp_attempts = $5, comp_error = '', updated_at = {now}
WHERE service = $2 AND workflow_id = $3 AND seq = $4 AND comp_state <> 'done'`,
	// $5: 'retrying' or 'failed' (for good: a person must look).
	compFailed: `
UPDATE twice_workflow_steps SET comp_state = $5, comp_attempts = $6, comp_error = $7, updated_at = {now}
WHERE service = $2 AND workflow_id = $3 AND seq = $4 AND comp_state <> 'done'`,
	compensating: `
UPDATE twice_workflows SET state = 'compensating', error = $4, updated_at = {now}
WHERE service = $2 AND id = $3 AND state = 'running'`,
	finish: `
UPDATE twice_workflows SET state = $4, error = CASE WHEN $5::text = '' THEN error ELSE $5::text END,
	updated_at = {now}, finished_at = {now}
WHERE service = $2 AND id = $3 AND state IN ('running', 'compensating')`,
	// A run about to wait records its job ($3) as the one to wake; the row lock orders the
	// wait against a signal or a cancellation, which lock the row too. No row: the workflow
	// has ended. (Service as $1: no time here.)
	claim: `
UPDATE twice_workflows SET job_id = $3
WHERE service = $1 AND id = $2 AND state IN ('running', 'compensating')
RETURNING cancel_requested`,
	// The job enqueued to wake a workflow whose job was running (service as $1).
	setJob: `UPDATE twice_workflows SET job_id = $3 WHERE service = $1 AND id = $2`,
	// A wait reached for the first time is stored waiting, to wake $7 milliseconds from
	// now; reaching it again (a resumed run) keeps the time stored first.
	waitAt: `
INSERT INTO twice_workflow_steps (service, workflow_id, seq, name, kind, state, attempts, wake_at, updated_at)
VALUES ($2, $3, $4, $5, $6, 'waiting', 0, {now} + {ms $7::bigint}, {now})
ON CONFLICT (service, workflow_id, seq) DO NOTHING`,
	// A wait as stored, and the microseconds left until it wakes (negative once past).
	waitGet: `
SELECT name, kind, state, result, {age wake_at, {now}} FROM twice_workflow_steps
WHERE service = $2 AND workflow_id = $3 AND seq = $4`,
	// A signal locks the workflow's row, which orders it against a wait (see claim), and
	// reads its state and the job to wake. (Service as $1: no time here.)
	lockFor: `
UPDATE twice_workflows SET job_id = job_id WHERE service = $1 AND id = $2
RETURNING state, coalesce(job_id, 0)`,
	signal: `
INSERT INTO twice_workflow_signals (service, workflow_id, name, payload, sent_at) VALUES ($2, $3, $4, $5, {now})`,
	// A wait for signal $3 at place $4 takes the oldest signal of that name not taken.
	// (Service as $1: no time here.)
	consume: `
UPDATE twice_workflow_signals SET consumed_seq = $4
WHERE consumed_seq IS NULL AND id = (SELECT min(id) FROM twice_workflow_signals
	WHERE service = $1 AND workflow_id = $2 AND name = $3 AND consumed_seq IS NULL)
RETURNING payload`,
	// [Engine.Retry]: a failed workflow runs again, compensating if any of its
	// compensations had run (or been tried), else running. Its error is kept, marked as the
	// past's. No row: it is not failed (any more). The caller holds the row lock (see
	// lockFor).
	retry: `
UPDATE twice_workflows
SET state = CASE WHEN EXISTS (SELECT 1 FROM twice_workflow_steps s
		WHERE s.service = $2 AND s.workflow_id = $3 AND s.comp_state <> '') THEN 'compensating' ELSE 'running' END,
	error = 'retried after: ' || error, updated_at = {now}, finished_at = NULL
WHERE service = $2 AND id = $3 AND state = 'failed'
RETURNING state`,
	// The compensations that failed for good get a fresh set of attempts; their last error
	// stays until one succeeds.
	retryComps: `
UPDATE twice_workflow_steps SET comp_state = 'retrying', comp_attempts = 0, updated_at = {now}
WHERE service = $2 AND workflow_id = $3 AND comp_state = 'failed'`,
	// A wait ends: $5 is 'completed' (woken; $6 the signal's payload) or 'timedout'.
	waitDone: `
UPDATE twice_workflow_steps SET state = $5, result = $6, updated_at = {now}
WHERE service = $2 AND workflow_id = $3 AND seq = $4 AND state = 'waiting'`,
}

// queriesFor returns the statements as s runs them: for its dialect, its schema's tables
// named in full (see [store.Store.SQL]). Build them once per store.
func queriesFor(s *store.Store) queries {
	q := templates
	s.SQLAll(&q)
	return q
}
