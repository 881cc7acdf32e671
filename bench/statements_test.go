package main

import (
	"bytes"
	"strings"
	"testing"
)

// A statement's text loses the run's schema and its extra whitespace, so each round's
// statement sums with the others'; the top are the most time, with µs per row, cut to the
// table's width.
func TestStatements(t *testing.T) {
	long := "SELECT id FROM \"bench_0a\".twice_jobs WHERE\n\t state = $1 AND queue = $2 AND run_at <= now() ORDER BY priority, run_at LIMIT $3"
	rounds := [][]statement{
		{{Query: long, Calls: 10, TotalMS: 100, Rows: 1000}, {Query: "COMMIT", Calls: 5, TotalMS: 1}, {Query: "UPDATE bench_0a.twice_leases SET x = $1", Calls: 1, TotalMS: 30, Rows: 1}},
		{{Query: strings.ReplaceAll(long, "bench_0a", "bench_0b"), Calls: 30, TotalMS: 300, Rows: 3000}, {Query: "UPDATE bench_0b.twice_leases SET x = $1", Calls: 1, TotalMS: 5, Rows: 1}},
	}
	var all []statement
	for r, sts := range rounds {
		for _, st := range sts {
			st.Query = tidy(st.Query, []string{"bench_0a", "bench_0b"}[r])
			all = append(all, st)
		}
	}
	top := topStatements(all, 2)
	if len(top) != 2 {
		t.Fatalf("%d statements, want the top 2: %v", len(top), top)
	}
	want := statement{Query: "SELECT id FROM twice_jobs WHERE state = $1 AND queue = $2 AND run_at <= now() ORDER BY priority, run_at LIMIT $3",
		Calls: 40, TotalMS: 400, Rows: 4000, USPerRow: 100}
	if top[0] != want {
		t.Errorf("top statement %+v, want %+v", top[0], want)
	}
	if top[1].Query != "UPDATE twice_leases SET x = $1" || top[1].Calls != 2 || top[1].TotalMS != 35 {
		t.Errorf("second statement %+v, want the lease update of both rounds", top[1])
	}
	var out bytes.Buffer
	printStatements(&out, []systemStatements{{System: "twice", Config: "defaults", Top: append(top, statement{Query: "COMMIT", Calls: 5, TotalMS: 1})}}, 2)
	got := out.String()
	for _, s := range []string{"summed over 2 rounds", "twice defaults", "µs/row", "100.0",
		string([]rune(want.Query)[:queryWidth-1]) + "…", "17500.0", "  COMMIT"} {
		if !strings.Contains(got, s) {
			t.Errorf("the table lacks %q:\n%s", s, got)
		}
	}
	if strings.Contains(got, "priority") {
		t.Errorf("the table shows more than %d characters of a statement:\n%s", queryWidth, got)
	}
	// A statement with no rows has no figure per row.
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if line := lines[len(lines)-1]; !strings.Contains(line, " - ") {
		t.Errorf("the COMMIT line %q shows a figure per row", line)
	}
}

// shared_preload_libraries names the module bare, quoted or by path, among others.
func TestPreloads(t *testing.T) {
	for list, want := range map[string]bool{
		"pg_stat_statements": true, "auto_explain, pg_stat_statements": true, `"pg_stat_statements"`: true,
		"$libdir/pg_stat_statements": true, "": false, "auto_explain": false, "pg_stat_statements_x": false,
	} {
		if got := preloads(list, "pg_stat_statements"); got != want {
			t.Errorf("preloads(%q) = %v, want %v", list, got, want)
		}
	}
}
