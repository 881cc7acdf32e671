package main

import (
	"bytes"
	"context"
	"errors"
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
