package store

import (
	"context"
	"fmt"
	"regexp"
	"strings"
)

// Table is one table a [Component]'s migrations create, and how the rows of one service are
// found in it. A component declares every table it creates: code outside the block reaches
// its tables through these declarations (as [DeleteService] does), never by naming them.
type Table struct {
	// Name is the table's name.
	Name string
	// Service is the column holding the service a row belongs to. Empty for a child table
	// (see Parent) and for a table whose rows belong to no one service.
	Service string
	// Parent, for a table whose rows belong to rows of another table of the same component
	// (a session's values to the session), says which. Defaults to nil: none.
	Parent *Parent
	// Dialect, if set, is the one dialect whose migrations create the table (the bus's
	// table exists on SQLite only). Defaults to "": both.
	Dialect Dialect
}

// Parent says which rows of a parent table a child table's rows belong to: those whose Key
// equals the child's Column.
type Parent struct {
	// Table is the parent table, declared in the same component with a Service column.
	Table string
	// Column is the child's column that refers to the parent row.
	Column string
	// Key is the parent's column it refers to.
	Key string
}

// TablesIn returns the tables c declares that exist in dialect d.
func (c Component) TablesIn(d Dialect) []Table {
	var out []Table
	for _, t := range c.Tables {
		if t.Dialect == "" || t.Dialect == d {
			out = append(out, t)
		}
	}
	return out
}

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// checkTables reports a declaration that cannot be right: a name that is not a plain
// identifier, a table declared twice, a table with both a service and a parent, or a parent
// that is not a service table of the component.
func (c Component) checkTables() error {
	byName := map[string]Table{}
	for _, t := range c.Tables {
		if _, dup := byName[t.Name]; dup {
			return fmt.Errorf("store: component %s declares table %q twice", c.Name, t.Name)
		}
		byName[t.Name] = t
	}
	for _, t := range c.Tables {
		names := []string{t.Name}
		if t.Service != "" {
			names = append(names, t.Service)
		}
		if p := t.Parent; p != nil {
			if t.Service != "" {
				return fmt.Errorf("store: component %s: table %s has both a service column and a parent", c.Name, t.Name)
			}
			if pt, ok := byName[p.Table]; !ok || pt.Service == "" || pt.Dialect != t.Dialect {
				return fmt.Errorf("store: component %s: the parent of table %s, %q, is not a table of the component with a service column", c.Name, t.Name, p.Table)
			}
			names = append(names, p.Column, p.Key)
		}
		for _, n := range names {
			if !identifier.MatchString(n) {
				return fmt.Errorf("store: component %s: %q is not a plain lower-case identifier", c.Name, n)
			}
		}
		if t.Dialect != "" && t.Dialect != Postgres && t.Dialect != SQLite {
			return fmt.Errorf("store: component %s: table %s: unknown dialect %q", c.Name, t.Name, t.Dialect)
		}
	}
	return nil
}

// DeleteService deletes every row of service from the tables comps declare, in one
// transaction: the rows of each table with a service column, and the rows of child tables
// that belong to them. Tables whose rows belong to no one service are left alone. It is
// for removing a service that no longer runs (a finished benchmark's, say): its leases go
// too, so fencing tokens under its name start again from 1. It returns how many rows it
// deleted.
func DeleteService(ctx context.Context, s *Store, service string, comps ...Component) (int64, error) {
	var stmts []string
	for _, c := range comps {
		tables := c.TablesIn(s.Dialect())
		// Children first: they are found through their parents' rows.
		for _, t := range tables {
			if p := t.Parent; p != nil {
				parent := ""
				for _, pt := range tables {
					if pt.Name == p.Table {
						parent = pt.Service
					}
				}
				stmts = append(stmts, fmt.Sprintf("DELETE FROM %s WHERE %s IN (SELECT %s FROM %s WHERE %s = $1)",
					t.Name, p.Column, p.Key, p.Table, parent))
			}
		}
		for _, t := range tables {
			if t.Service != "" {
				stmts = append(stmts, fmt.Sprintf("DELETE FROM %s WHERE %s = $1", t.Name, t.Service))
			}
		}
	}
	var total int64
	err := s.InTx(ctx, func(tx Tx) error {
		total = 0
		for _, q := range stmts {
			n, err := tx.Exec(ctx, s.SQL(q), service)
			if err != nil {
				return fmt.Errorf("store: delete service %s: %w", service, err)
			}
			total += n
		}
		return nil
	})
	return total, err
}

// Services returns, in order, every service with a row in a table comps declare with a
// service column.
func Services(ctx context.Context, s *Store, comps ...Component) ([]string, error) {
	var parts []string
	for _, c := range comps {
		for _, t := range c.TablesIn(s.Dialect()) {
			if t.Service != "" {
				parts = append(parts, fmt.Sprintf("SELECT DISTINCT %s FROM %s", t.Service, t.Name))
			}
		}
	}
	if len(parts) == 0 {
		return nil, nil
	}
	out, err := Strings(ctx, s.Reader(), s.SQL(strings.Join(parts, " UNION ")+" ORDER BY 1"))
	if err != nil {
		return nil, fmt.Errorf("store: list services: %w", err)
	}
	return out, nil
}

// Strings runs a query that returns one text column, and returns its values.
func Strings(ctx context.Context, q Querier, query string, args ...any) ([]string, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
