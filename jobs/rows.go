package jobs

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/twicehq/twice/store"
)

// queryRows runs a query returning [rowCols] and scans every row with the engine's scanner.
func (c *Client) queryRows(ctx context.Context, q store.Querier, query string, args ...any) ([]*Row, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Row
	for rows.Next() {
		r, err := c.e.scanRow(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// queryFetched runs a fetch returning [fetchCols] and scans the jobs it took, running here.
func (c *Client) queryFetched(ctx context.Context, q store.Querier, query string, args ...any) ([]*Row, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Row
	var s fetchScan // one for the fetch: per row, it and its destinations were a fifth of a worked job's garbage
	for rows.Next() {
		r := &Row{State: Running, Owner: c.d.Instance}
		if err := c.e.scanFetched(rows, r, &s); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// rowScan holds what scanning a row of [rowCols] reads besides its timestamps, which each
// engine scans its own way.
type rowScan struct {
	state                            int
	owner, key, uniqueKey, lastError *string
	batch                            *int64
	timeoutMS                        int64
	cancelReq                        bool
	tags, meta, args                 []byte
}

// dest returns the scan destinations of [rowCols] for r, with the engine's for run_at,
// created_at, attempted_at and finished_at.
func (s *rowScan) dest(r *Row, runAt, created, attempted, finished any) []any {
	return []any{&r.ID, &r.Queue, &r.Kind, &s.args, &s.state, &r.Priority, runAt, &r.Attempt, &r.MaxAttempts,
		&s.owner, &s.key, &s.uniqueKey, &s.batch, &s.timeoutMS, &s.cancelReq, &s.tags, &s.meta, &s.lastError,
		created, attempted, finished}
}

func (s *rowScan) fill(r *Row) {
	fill(r, s.state, s.args, s.owner, s.key, s.uniqueKey, s.lastError, s.batch, s.timeoutMS, s.cancelReq, s.tags, s.meta)
}

// fetchScan is [rowScan] for the rows of [fetchCols], reused from row to row: every field
// is a destination that each row's scan sets (a NULL to nil), and the byte slices are the
// driver's copies, which the row keeps.
type fetchScan struct {
	key, uniqueKey, lastError *string
	batch                     *int64
	timeoutMS                 int64
	tags, meta, args          []byte
	dst                       []any
}

// dest returns the scan destinations of [fetchCols] for r, with the engine's for run_at,
// created_at and attempted_at, in the array of the previous row's.
func (s *fetchScan) dest(r *Row, runAt, created, attempted any) []any {
	s.dst = append(s.dst[:0], &r.ID, &r.Queue, &r.Kind, &s.args, &r.Priority, runAt, &r.Attempt, &r.MaxAttempts, &s.key,
		&s.uniqueKey, &s.batch, &s.timeoutMS, &s.tags, &s.meta, &s.lastError, created, attempted)
	return s.dst
}

func (s *fetchScan) fill(r *Row) {
	fill(r, bitRunning, s.args, &r.Owner, s.key, s.uniqueKey, s.lastError, s.batch, s.timeoutMS, false, s.tags, s.meta)
}

// fill sets the fields every scanner reads the same way.
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
