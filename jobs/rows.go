package jobs

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/twicehq/twice/store"
)

// queryRows runs a query returning [rowCols] and scans every row.
func queryRows(ctx context.Context, q store.Querier, query string, args ...any) ([]*Row, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	scan := scanRow
	if q.Dialect() == store.Postgres {
		scan = scanRowPG
	}
	var out []*Row
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// scanRowPG is scanRow for PostgreSQL, scanning timestamps as pgx's own time values: the
// database/sql scanner path costs a sixth of a busy worker's CPU.
func scanRowPG(rows store.Row) (*Row, error) {
	var r Row
	var state int
	var owner, key, uniqueKey, lastError *string
	var batch *int64
	var timeoutMS int64
	var cancelReq bool
	var tags, meta, args []byte
	var attempted, finishedAt *time.Time
	if err := rows.Scan(&r.ID, &r.Queue, &r.Kind, &args, &state, &r.Priority, &r.ScheduledAt, &r.Attempt, &r.MaxAttempts,
		&owner, &key, &uniqueKey, &batch, &timeoutMS, &cancelReq, &tags, &meta, &lastError, &r.CreatedAt, &attempted, &finishedAt); err != nil {
		return nil, err
	}
	if attempted != nil {
		r.AttemptedAt = *attempted
	}
	if finishedAt != nil {
		r.FinishedAt = *finishedAt
	}
	fill(&r, state, args, owner, key, uniqueKey, lastError, batch, timeoutMS, cancelReq, tags, meta)
	return &r, nil
}

func scanRow(rows store.Row) (*Row, error) {
	var r Row
	var state int
	var owner, key, uniqueKey, lastError *string
	var batch *int64
	var timeoutMS int64
	var cancelReq bool
	var tags, meta, args []byte
	var runAt, created, attempted, finishedAt store.Time
	if err := rows.Scan(&r.ID, &r.Queue, &r.Kind, &args, &state, &r.Priority, &runAt, &r.Attempt, &r.MaxAttempts,
		&owner, &key, &uniqueKey, &batch, &timeoutMS, &cancelReq, &tags, &meta, &lastError, &created, &attempted, &finishedAt); err != nil {
		return nil, err
	}
	r.ScheduledAt, r.CreatedAt, r.AttemptedAt, r.FinishedAt = runAt.Time, created.Time, attempted.Time, finishedAt.Time
	fill(&r, state, args, owner, key, uniqueKey, lastError, batch, timeoutMS, cancelReq, tags, meta)
	return &r, nil
}

// fill sets the fields both scanners read the same way.
func fill(r *Row, state int, args []byte, owner, key, uniqueKey, lastError *string, batch *int64, timeoutMS int64,
	cancelReq bool, tags, meta []byte) {
	r.Args = json.RawMessage(args)
	r.State = stateOf(state)
	r.Owner, r.Key, r.UniqueKey, r.LastError = deref(owner), deref(key), deref(uniqueKey), deref(lastError)
	if batch != nil {
		r.BatchID = *batch
	}
	r.Timeout = time.Duration(timeoutMS) * time.Millisecond
	r.CancelRequested = cancelReq
	if len(tags) > 0 {
		_ = json.Unmarshal(tags, &r.Tags)
	}
	if len(meta) > 0 {
		_ = json.Unmarshal(meta, &r.Meta)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// formatID is a job id as the cancel signal carries it.
func formatID(id int64) string { return strconv.FormatInt(id, 10) }
