package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
)

// statement is one statement's figures from pg_stat_statements.
type statement struct {
	// Query is the normalized statement, its whitespace collapsed and the run's schema left
	// out of its table names, so the same statement of every round has the same text.
	Query    string  `json:"query"`
	Calls    int64   `json:"calls"`
	TotalMS  float64 `json:"total_ms"`
	Rows     int64   `json:"rows"`
	USPerRow float64 `json:"us_per_row"` // 0 when it returned or touched no row
}

// systemStatements is a system's top statements in its work runs, summed over the rounds.
type systemStatements struct {
	System string      `json:"system"`
	Config string      `json:"config"`
	Top    []statement `json:"top"`
}

// statementStats reads pg_stat_statements around the work runs.
type statementStats struct {
	conn *pgx.Conn // the bench's own, on the --dsn database
}

// openStatementStats creates the pg_stat_statements extension in conn's database if the
// server has the module loaded. Without it, it says once how to load it and returns nil.
func openStatementStats(ctx context.Context, conn *pgx.Conn) (*statementStats, error) {
	var available bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements')").Scan(&available); err != nil {
		return nil, err
	}
	var preload string
	if err := conn.QueryRow(ctx, "SELECT current_setting('shared_preload_libraries')").Scan(&preload); err != nil {
		return nil, err
	}
	if !available || !preloads(preload, "pg_stat_statements") {
		fmt.Fprintln(os.Stderr, "bench: --statements: the server has no pg_stat_statements loaded; set shared_preload_libraries = 'pg_stat_statements'"+
			" in postgresql.conf (with contrib installed) and restart PostgreSQL. Going on without it.")
		return nil, nil
	}
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return nil, fmt.Errorf("--statements: %w", err)
	}
	return &statementStats{conn: conn}, nil
}

// preloads reports whether the shared_preload_libraries setting list names library, bare,
// quoted or by path.
func preloads(list, library string) bool {
	for _, l := range strings.Split(list, ",") {
		l = strings.Trim(strings.TrimSpace(l), `"`)
		if l == library || strings.HasSuffix(l, "/"+library) {
			return true
		}
	}
	return false
}

// reset clears the server's statement statistics (all of them: the function takes no
// database in PostgreSQL 15's form the bench calls).
func (s *statementStats) reset(ctx context.Context) error {
	_, err := s.conn.Exec(ctx, "SELECT pg_stat_statements_reset()")
	return err
}

// read returns the statements since the last reset that name schema. Both systems qualify
// every table with their schema (twice always, River with Config.Schema), and the schema's
// name is random, so these are exactly the run's statements on its tables: statements that
// name none (BEGIN, COMMIT, LISTEN) are shared with every session and left out, as are the
// bench's own polls, which go through the search_path.
func (s *statementStats) read(ctx context.Context, schema string) ([]statement, error) {
	rows, err := s.conn.Query(ctx, `SELECT query, calls, total_exec_time, rows FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND strpos(query, $1) > 0`, schema)
	if err != nil {
		return nil, err
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (statement, error) {
		var st statement
		err := r.Scan(&st.Query, &st.Calls, &st.TotalMS, &st.Rows)
		return st, err
	})
	for i := range got {
		got[i].Query = tidy(got[i].Query, schema)
	}
	return got, err
}

// tidy collapses a statement's whitespace and leaves the schema out of its table names.
func tidy(query, schema string) string {
	query = strings.ReplaceAll(query, `"`+schema+`".`, "")
	query = strings.ReplaceAll(query, schema+".", "")
	return strings.Join(strings.Fields(query), " ")
}

// topStatements sums the statements of the same text (one per round) and returns the n
// with the most execution time, most first.
func topStatements(sts []statement, n int) []statement {
	var out []statement
	at := map[string]int{}
	for _, st := range sts {
		i, ok := at[st.Query]
		if !ok {
			at[st.Query], out = len(out), append(out, statement{Query: st.Query})
			i = len(out) - 1
		}
		out[i].Calls += st.Calls
		out[i].TotalMS += st.TotalMS
		out[i].Rows += st.Rows
	}
	slices.SortStableFunc(out, func(a, b statement) int { return cmp.Compare(b.TotalMS, a.TotalMS) })
	out = out[:min(n, len(out))]
	for i := range out {
		if out[i].Rows > 0 {
			out[i].USPerRow = out[i].TotalMS * 1000 / float64(out[i].Rows)
		}
	}
	return out
}

// queryWidth is how much of a statement's text the table shows.
const queryWidth = 70

// printStatements writes each system's top statements as a table.
func printStatements(out io.Writer, systems []systemStatements, rounds int) {
	over := ""
	if rounds > 1 {
		over = fmt.Sprintf(", summed over %d rounds", rounds)
	}
	fmt.Fprintf(out, "Top statements of the work runs by execution time, from when working starts (pg_stat_statements%s):\n", over)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	for _, s := range systems {
		fmt.Fprintf(tw, "%s %s\tcalls\ttotal ms\trows\tµs/row\t\n", s.System, s.Config)
		for _, st := range s.Top {
			q := st.Query
			if r := []rune(q); len(r) > queryWidth {
				q = string(r[:queryWidth-1]) + "…"
			}
			perRow := "-"
			if st.USPerRow > 0 {
				perRow = fmt.Sprintf("%.1f", st.USPerRow)
			}
			fmt.Fprintf(tw, "\t%d\t%.0f\t%d\t%s\t  %s\n", st.Calls, st.TotalMS, st.Rows, perRow, q)
		}
	}
	_ = tw.Flush()
}
