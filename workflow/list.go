package workflow

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/twicehq/twice/store"
)

// ListParams filters [Engine.List].
type ListParams struct {
	// States keeps the workflows in these states; none: every state.
	States []State
	// Name keeps the workflows of this definition.
	Name string
	// Limit is the most returned, newest first. Defaults to 50; at most [MaxList].
	Limit int
}

// MaxList is the most workflows one [Engine.List] returns.
const MaxList = 10000

// Summary is a workflow in a list: its stored row, without its input and steps (see
// [Engine.Get]).
type Summary struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	Version         int       `json:"version"`
	State           State     `json:"state"`
	CancelRequested bool      `json:"cancel_requested,omitempty"`
	Error           string    `json:"error,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
	FinishedAt      time.Time `json:"finished_at,omitzero"`
}

// ParseState returns the state named s, or an error listing the states.
func ParseState(s string) (State, error) {
	for _, st := range []State{Running, Compensating, Completed, Compensated, Cancelled, Failed} {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("%w: state %q (running, compensating, completed, compensated, cancelled or failed)", ErrInvalid, s)
}

// List returns the service's workflows that p keeps, newest first, from any instance or
// from a tool that runs none (`twice workflows list`).
func (e *Engine) List(ctx context.Context, p ListParams) ([]Summary, error) {
	where := []string{"service = $1"}
	args := []any{e.d.Service}
	if len(p.States) > 0 {
		var in []string
		for _, s := range p.States {
			if _, err := ParseState(string(s)); err != nil {
				return nil, err
			}
			args = append(args, string(s))
			in = append(in, fmt.Sprintf("$%d", len(args)))
		}
		where = append(where, "state IN ("+strings.Join(in, ", ")+")")
	}
	if p.Name != "" {
		args = append(args, p.Name)
		where = append(where, fmt.Sprintf("name = $%d", len(args)))
	}
	switch {
	case p.Limit < 0 || p.Limit > MaxList:
		return nil, fmt.Errorf("%w: limit %d is not between 1 and %d", ErrInvalid, p.Limit, MaxList)
	case p.Limit == 0:
		p.Limit = 50
	}
	args = append(args, p.Limit)
	query := fmt.Sprintf(`SELECT id, name, version, state, cancel_requested, error, created_at, updated_at, finished_at
FROM twice_workflows WHERE %s ORDER BY created_at DESC, id DESC LIMIT $%d`, strings.Join(where, " AND "), len(args))
	rows, err := e.s.Reader().Query(ctx, e.s.SQL(query), args...)
	if err != nil {
		return nil, fmt.Errorf("workflow: list: %w", err)
	}
	defer rows.Close()
	out := []Summary{}
	for rows.Next() {
		var w Summary
		var created, updated, finished store.Time
		if err := rows.Scan(&w.ID, &w.Name, &w.Version, &w.State, &w.CancelRequested, &w.Error, &created, &updated, &finished); err != nil {
			return nil, fmt.Errorf("workflow: list: %w", err)
		}
		w.CreatedAt, w.UpdatedAt, w.FinishedAt = created.Time, updated.Time, finished.Time
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("workflow: list: %w", err)
	}
	return out, nil
}
