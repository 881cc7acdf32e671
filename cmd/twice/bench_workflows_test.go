package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twicehq/twice/internal/testdb"
)

// `twice bench workflows` end to end on two instances, small: every figure is measured
// (what they are is for the command on a quiet machine), each resumption is on another
// instance than the one killed, and the page is written.
func TestBenchWorkflows(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		page := filepath.Join(t.TempDir(), "wf.html")
		code, out, stderr := cli(t, nil, "bench", "workflows", "--dsn", db.DSN, "--schema", db.Schema, "--instances", "2", "--concurrency", "50",
			"--workflows", "40", "--latency", "10", "--rate", "100", "--kills", "2", "--hold", "1s", "--json", "--report", page)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if !strings.Contains(stderr, "resume 2/2: SIGKILL") {
			t.Errorf("no progress line per kill on stderr: %q", stderr)
		}
		var res map[string]any
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v: %q", err, out)
		}
		for _, k := range []string{"workflows_per_sec", "workflows_per_sec_dotx", "starts_per_sec", "duration_s", "duration_dotx_s",
			"start_to_completed_ms_p50", "start_to_completed_ms_p99", "start_to_completed_ms_max",
			"resume_ms_p50", "resume_ms_p99", "resume_ms_max", "run_s"} {
			if v, ok := res[k].(float64); !ok || v <= 0 {
				t.Errorf("%s = %v, want a positive number", k, res[k])
			}
		}
		if res["store"] != string(db.Dialect) || res["workflows"] != 40.0 || res["kills"] != 2.0 || res["concurrency"] != 50.0 {
			t.Errorf("store %v, workflows %v, kills %v, concurrency %v", res["store"], res["workflows"], res["kills"], res["concurrency"])
		}
		if p50, p99 := res["resume_ms_p50"].(float64), res["resume_ms_p99"].(float64); p99 < p50 {
			t.Errorf("resume p99 %v below p50 %v", p99, p50)
		}
		resumes, _ := res["resumes"].([]any)
		if len(resumes) != 2 {
			t.Fatalf("resumes %v, want 2", res["resumes"])
		}
		for _, r := range resumes {
			r := r.(map[string]any)
			if r["killed"] == r["next"] || r["slot"] == r["next_slot"] || r["killed"] == "" {
				t.Errorf("resumption %v: not on another instance", r)
			}
		}
		html, err := os.ReadFile(page)
		if err != nil || !strings.Contains(string(html), "workflows/s with Do steps") || !strings.Contains(string(html), "Resumption after SIGKILL") {
			t.Errorf("page: %v, %d bytes", err, len(html))
		}
	})
}

func TestBenchWorkflowsUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--instances", "1"}, {"--workflows", "0"}, {"--concurrency", "-1"}, {"--kills", "-1"}, {"--hold", "10ms"}, {"--latency", "-1"},
		{"--rate", "0"}, {"--rate", "NaN"}, {"extra"},
	} {
		code, _, stderr := cli(t, nil, append([]string{"bench", "workflows"}, args...)...)
		if code != 2 || !strings.Contains(stderr, "bench workflows") {
			t.Errorf("twice bench workflows %v: exit %d, stderr %q; want 2 and why", args, code, stderr)
		}
	}
}
