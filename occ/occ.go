// Package occ is optimistic concurrency control for rows with a version column and for
// HTTP resources built on them.
//
// An update names the version it read; it applies only if the row still has that version,
// and bumps it, all in one statement. Otherwise it returns a [*ConflictError] and changes
// nothing, so two writers that read the same version never overwrite each other silently.
//
// Over HTTP the version is a strong ETag. [Preconditions] answers If-None-Match on GET
// with 304, refuses an If-Match that does not match with 412 (a weak tag never matches, per
// RFC 9110) and, when configured, an unsafe request without If-Match with 428; the handler
// then updates with the matched version from [Expected], so a change that slips in between
// the check and the update is still refused.
package occ

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/twicehq/twice/store"
)

// DefaultVersionColumn is the version column's name unless a call names another.
const DefaultVersionColumn = "version"

// Errors.
var (
	// ErrConflict matches every [*ConflictError] with errors.Is.
	ErrConflict = errors.New("occ: version conflict")
	// ErrNotFound is returned when no row has the key.
	ErrNotFound = errors.New("occ: no such row")
)

// ConflictError says a row's version was not the one expected: someone else changed it
// first. Re-read the row and decide again.
type ConflictError struct {
	Table    string
	Expected int64
	Actual   int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("occ: %s changed meanwhile: expected version %d, found %d", e.Table, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Versions runs versioned updates on one store. Get it from the node (twice.Node.Versions)
// or with [New].
type Versions struct {
	s *store.Store
}

// New returns versioned updates on s.
func New(s *store.Store) *Versions { return &Versions{s: s} }

// UpdateParams describe one versioned update.
type UpdateParams struct {
	// Table is the table, optionally schema-qualified ("billing.invoices").
	Table string
	// Key are the columns and values that identify the row.
	Key map[string]any
	// Set are the columns to change and their new values.
	Set map[string]any
	// Version is the version the caller read; the update applies only if the row still
	// has it.
	Version int64
	// VersionColumn names the version column. Defaults to [DefaultVersionColumn].
	VersionColumn string
}

// DeleteParams describe one versioned delete.
type DeleteParams struct {
	Table         string
	Key           map[string]any
	Version       int64
	VersionColumn string // defaults to DefaultVersionColumn
}

// Update changes the row if its version is p.Version, bumping the version, and returns the
// new version. It returns a [*ConflictError] if the version differs and [ErrNotFound] if
// there is no such row.
func (v *Versions) Update(ctx context.Context, p UpdateParams) (int64, error) {
	return v.update(ctx, v.s, p)
}

// UpdateTx is [Versions.Update] in the caller's transaction (*sql.Tx, pgx.Tx or store.Tx).
func (v *Versions) UpdateTx(ctx context.Context, tx any, p UpdateParams) (int64, error) {
	q, err := v.s.Wrap(tx)
	if err != nil {
		return 0, err
	}
	return v.update(ctx, q, p)
}

// Delete deletes the row if its version is p.Version, with the errors of Update.
func (v *Versions) Delete(ctx context.Context, p DeleteParams) error {
	return v.delete(ctx, v.s, p)
}

// DeleteTx is [Versions.Delete] in the caller's transaction.
func (v *Versions) DeleteTx(ctx context.Context, tx any, p DeleteParams) error {
	q, err := v.s.Wrap(tx)
	if err != nil {
		return err
	}
	return v.delete(ctx, q, p)
}

var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// quote validates and quotes a possibly schema-qualified identifier; both dialects quote
// with double quotes.
func quote(name string) (string, error) {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return "", fmt.Errorf("occ: bad identifier %q", name)
	}
	for i, p := range parts {
		if !ident.MatchString(p) {
			return "", fmt.Errorf("occ: bad identifier %q: letters, digits and underscores only", name)
		}
		parts[i] = `"` + p + `"`
	}
	return strings.Join(parts, "."), nil
}

// columns quotes the sorted names of m and collects their values after args, returning
// "c1 = $n, c2 = $n+1" joined by sep.
func columns(m map[string]any, sep string, args []any) (string, []any, error) {
	names := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(names))
	for i, n := range names {
		q, err := quote(n)
		if err != nil {
			return "", nil, err
		}
		args = append(args, m[n])
		parts[i] = fmt.Sprintf("%s = $%d", q, len(args))
	}
	return strings.Join(parts, sep), args, nil
}

type target struct {
	table, version, where string
	args                  []any
}

func prepare(table, versionCol string, key map[string]any) (target, error) {
	if versionCol == "" {
		versionCol = DefaultVersionColumn
	}
	var t target
	var err error
	if len(key) == 0 {
		return t, errors.New("occ: Key is empty")
	}
	if t.table, err = quote(table); err != nil {
		return t, err
	}
	if t.version, err = quote(versionCol); err != nil {
		return t, err
	}
	t.where, t.args, err = columns(key, " AND ", nil)
	return t, err
}

func (v *Versions) update(ctx context.Context, q store.Querier, p UpdateParams) (int64, error) {
	t, err := prepare(p.Table, p.VersionColumn, p.Key)
	if err != nil {
		return 0, err
	}
	if len(p.Set) == 0 {
		return 0, errors.New("occ: Set is empty")
	}
	if _, ok := p.Set[strings.Trim(t.version, `"`)]; ok {
		return 0, errors.New("occ: Set must not change the version column; Update bumps it")
	}
	set, args, err := columns(p.Set, ", ", t.args)
	if err != nil {
		return 0, err
	}
	args = append(args, p.Version)
	sql := fmt.Sprintf("UPDATE %s SET %s, %s = %s + 1 WHERE %s AND %s = $%d RETURNING %s",
		t.table, set, t.version, t.version, t.where, t.version, len(args), t.version)
	var next int64
	err = q.QueryRow(ctx, sql, args...).Scan(&next)
	if errors.Is(err, store.ErrNoRows) {
		return 0, v.why(ctx, q, t, p.Table, p.Version)
	}
	if err != nil {
		return 0, fmt.Errorf("occ: update %s: %w", p.Table, err)
	}
	return next, nil
}

func (v *Versions) delete(ctx context.Context, q store.Querier, p DeleteParams) error {
	t, err := prepare(p.Table, p.VersionColumn, p.Key)
	if err != nil {
		return err
	}
	args := append(t.args, p.Version)
	n, err := q.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s AND %s = $%d", t.table, t.where, t.version, len(args)), args...)
	if err != nil {
		return fmt.Errorf("occ: delete from %s: %w", p.Table, err)
	}
	if n == 0 {
		return v.why(ctx, q, t, p.Table, p.Version)
	}
	return nil
}

// why tells a conflict from a missing row after a conditional statement matched nothing.
func (v *Versions) why(ctx context.Context, q store.Querier, t target, table string, expected int64) error {
	var actual int64
	err := q.QueryRow(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE %s", t.version, t.table, t.where), t.args...).Scan(&actual)
	if errors.Is(err, store.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("occ: read version of %s: %w", table, err)
	}
	return &ConflictError{Table: table, Expected: expected, Actual: actual}
}
