package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twicehq/twice/internal/check"
)

// `twice check` exits 1 for violations, 3 when it could not run, 0 when it ran clean, so a
// CI job can tell a broken invariant from a broken setup.
func TestCheckExitStatus(t *testing.T) {
	t.Run("DatabaseUnreachable", func(t *testing.T) {
		dir := t.TempDir() // a directory where the database file should be
		code, _, stderr := cli(t, nil, "check", "--store", "sqlite", "--dsn", "sqlite:"+dir, "--duration", "1s")
		if code != 3 || !strings.Contains(stderr, "could not run") {
			t.Errorf("SQLite file that cannot be opened: exit %d, %q; want 3", code, stderr)
		}
		code, _, stderr = cli(t, nil, "check", "--store", "postgres", "--dsn", "postgres://postgres@127.0.0.1:1/test", "--duration", "1s")
		if code != 3 || !strings.Contains(stderr, "could not run") {
			t.Errorf("PostgreSQL refusing connections: exit %d, %q; want 3", code, stderr)
		}
	})
	t.Run("Usage", func(t *testing.T) {
		if code, _, _ := cli(t, nil, "check", "--store", "oracle"); code != 2 {
			t.Errorf("bad --store: exit %d, want 2", code)
		}
	})
	for _, c := range []struct {
		name string
		run  checkRunner
		want int
	}{
		{"Violations", func(context.Context, check.Params) (*check.Report, error) {
			return &check.Report{Violations: 2, Invariants: []check.Invariant{{Name: "x", Operations: 5, Violations: 2}}}, nil
		}, 1},
		{"InstanceDidNotStart", func(context.Context, check.Params) (*check.Report, error) {
			return nil, errors.New("instance: child exited before it was ready")
		}, 3},
		{"Clean", func(context.Context, check.Params) (*check.Report, error) {
			return &check.Report{Invariants: []check.Invariant{{Name: "x", Operations: 5}}}, nil
		}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := checkWith(context.Background(), []string{"--store", "sqlite", "--duration", "1s"}, &out, &errOut, c.run)
			if code := exitStatus(err, &out, &errOut); code != c.want {
				t.Errorf("exit %d, want %d (%v)\n%s%s", code, c.want, err, out.String(), errOut.String())
			}
		})
	}
}

// A --report that cannot be written is a usage error before the run, not a failure after it.
func TestCheckReportPath(t *testing.T) {
	dir := t.TempDir()
	ran := false
	never := func(context.Context, check.Params) (*check.Report, error) {
		ran = true
		return &check.Report{}, nil
	}
	for _, path := range []string{filepath.Join(dir, "missing", "r.html"), dir} {
		var out, errOut bytes.Buffer
		err := checkWith(context.Background(), []string{"--report", path}, &out, &errOut, never)
		if code := exitStatus(err, &out, &errOut); code != 2 || ran || !strings.Contains(errOut.String(), "--report "+path) {
			t.Errorf("--report %s: exit %d, ran %v, %q; want 2 before the run, naming the path", path, code, ran, errOut.String())
		}
	}

	// With violations the report is still written (it is for finding them), and nothing is
	// left beside it.
	path := filepath.Join(dir, "r.html")
	var out, errOut bytes.Buffer
	err := checkWith(context.Background(), []string{"--report", path}, &out, &errOut, func(context.Context, check.Params) (*check.Report, error) {
		return &check.Report{Violations: 1, Invariants: []check.Invariant{{Name: "x", Operations: 5, Violations: 1, Details: []string{"planted"}}}}, nil
	})
	if code := exitStatus(err, &out, &errOut); code != 1 {
		t.Errorf("exit %d, want 1 (violations)", code)
	}
	page, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(page), "planted") {
		t.Errorf("report: %v; %.200q", err, page)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want the report alone", len(entries))
	}

	// A check that could not run leaves no report, and no temporary file.
	path = filepath.Join(dir, "none.html")
	err = checkWith(context.Background(), []string{"--report", path}, &out, &errOut, func(context.Context, check.Params) (*check.Report, error) {
		return nil, errors.New("instance: child exited before it was ready")
	})
	if code := exitStatus(err, &out, &errOut); code != 3 {
		t.Errorf("exit %d, want 3", code)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("after a failed run the directory holds %d entries, want the first report alone", len(entries))
	}
}
