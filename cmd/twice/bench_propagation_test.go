package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
)

func TestBenchPropagationUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "invalidation", "--count", "0"}, {"bench", "invalidation", "--instances", "1"},
		{"bench", "invalidation", "--burst", "-1"}, {"bench", "config", "--burst", "5"}, {"bench", "config", "extra"},
	} {
		code, _, stderr := cli(t, nil, args...)
		if code != 2 || !strings.Contains(stderr, "Usage:") {
			t.Errorf("twice %v: exit %d, stderr %q; want 2 and usage", args, code, stderr)
		}
	}
}

// Both benchmarks run end to end on each store, and over NATS, and report sane figures; the
// figures themselves are the benchmark's business, not the test's.
func TestBenchPropagationJSON(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		benchPropagationJSON(t, db, "", false)
	})
	t.Run("nats", func(t *testing.T) {
		benchPropagationJSON(t, testdb.New(t, "sqlite"), testnats.URL(t), false)
	})
	// Every instance, children included, signs with the same secret, or nothing arrives.
	t.Run("signed", func(t *testing.T) {
		benchPropagationJSON(t, testdb.New(t, "sqlite"), "", true)
	})
}

func benchPropagationJSON(t *testing.T, db testdb.DB, busURL string, signed bool) {
	for _, kind := range []string{"invalidation", "config"} {
		args := []string{"bench", kind, "--dsn", db.DSN, "--count", "5", "--json"}
		if db.Schema != "" {
			args = append(args, "--schema", db.Schema)
		}
		wantBus := "store"
		if busURL != "" {
			args, wantBus = append(args, "--bus", busURL), "nats"
		}
		if kind == "invalidation" {
			args = append(args, "--burst", "50")
		}
		if signed {
			args = append(args, "--signed")
		}
		code, out, stderr := cli(t, nil, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", kind, code, stderr)
		}
		var res struct {
			Store       string    `json:"store"`
			Bus         string    `json:"bus"`
			Signed      bool      `json:"signed"`
			Kind        string    `json:"kind"`
			Count       int       `json:"count"`
			Instances   int       `json:"instances"`
			EveryP99MS  float64   `json:"every_p99_ms"`
			EveryMS     []float64 `json:"every_ms"`
			Burst       int       `json:"burst"`
			BurstPerSec float64   `json:"burst_per_sec"`
			ChangesAtS  []float64 `json:"changes_at_s"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%s: %v: %q", kind, err, out)
		}
		if res.Store != string(db.Dialect) || res.Bus != wantBus || res.Signed != signed || res.Kind != kind || res.Count != 5 || len(res.EveryMS) != 5 || len(res.ChangesAtS) != 5 ||
			res.Instances != 3 || res.EveryP99MS <= 0 {
			t.Errorf("%s: result %s", kind, out)
		}
		if kind == "invalidation" && (res.Burst != 50 || res.BurstPerSec <= 0) {
			t.Errorf("burst: %s", out)
		}
		if !strings.Contains(stderr, kind+" 5/5") {
			t.Errorf("%s: no progress lines on stderr: %q", kind, stderr)
		}
	}
}
