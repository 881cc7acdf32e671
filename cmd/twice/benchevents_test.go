package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
)

func TestBenchEventsUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "events", "--events", "0"}, {"bench", "events", "--rate", "0"},
		{"bench", "events", "--publishers", "-1"}, {"bench", "events", "--partitions", "0"}, {"bench", "events", "extra"},
	} {
		code, _, stderr := cli(t, nil, args...)
		if code != 2 || !strings.Contains(stderr, "Usage:") {
			t.Errorf("twice %v: exit %d, stderr %q; want 2 and usage", args, code, stderr)
		}
	}
}

func TestBenchEventsJSON(t *testing.T) {
	run := func(t *testing.T, args ...string) eventsResult {
		t.Helper()
		args = append([]string{"bench", "events", "--events", "200", "--latency-events", "50", "--rate", "500", "--json"}, args...)
		code, out, stderr := cli(t, nil, args...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var res eventsResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v in %q", err, out)
		}
		if res.PublishPerSec <= 0 || res.ConsumePerSec <= 0 || res.P50MS <= 0 || res.P99MS < res.P50MS || res.Events != 200 {
			t.Fatalf("result %+v", res)
		}
		latencies := 0
		for _, n := range res.Latency.Count {
			latencies += n
		}
		if !slices.ContainsFunc(res.Published.PerSec, func(v float64) bool { return v > 0 }) || len(res.Consumed.PerSec) == 0 || latencies != 50 {
			t.Fatalf("over time: published %v, consumed %v, latencies %v", res.Published, res.Consumed, res.Latency.Count)
		}
		if !strings.Contains(stderr, "bench events:") {
			t.Fatalf("no progress on stderr: %q", stderr)
		}
		return res
	}
	t.Run("sqlite", func(t *testing.T) {
		if res := run(t, "--dsn", "sqlite:"+t.TempDir()+"/b.db"); res.Store != "sqlite" || res.Bus != "store" {
			t.Fatalf("result %+v", res)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		db := testdb.New(t, "postgres")
		if res := run(t, "--dsn", db.DSN, "--schema", db.Schema); res.Store != "postgres" {
			t.Fatalf("result %+v", res)
		}
	})
	t.Run("nats", func(t *testing.T) {
		url := testnats.URL(t)
		if res := run(t, "--dsn", "sqlite:"+t.TempDir()+"/b.db", "--bus", url); res.Bus != "nats" {
			t.Fatalf("result %+v", res)
		}
	})
}
