package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/jobs"
)

type topJob struct{}

func (topJob) Kind() string { return "top-job" }

// twice top shows the instances and the queues, with the lag of a queue nobody works, once
// per frame; --json gives the same reading.
func TestTop(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		n, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "shop", Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close(ctx)
		if _, err := n.Jobs().Enqueue(ctx, topJob{}, &jobs.Opts{Queue: "stuck", RunAt: time.Now().Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		env := []string{"TWICE_DSN=" + db.DSN, "TWICE_SCHEMA=" + db.Schema, "TWICE_SERVICE=shop"}
		code, out, stderr := cli(t, env, "top", "--count", "2", "--every", "100ms")
		if code != 0 || strings.Count(out, "twice top: shop") != 2 || !strings.Contains(out, "service shop: 1 instances") ||
			!strings.Contains(out, n.ID()) || !strings.Contains(out, "LAG") || !strings.Contains(out, "stuck") {
			t.Fatalf("top: exit %d\n%s%s", code, out, stderr)
		}
		if strings.Contains(out, "\x1b[") {
			t.Errorf("top redrew the screen of something that is not a terminal:\n%q", out)
		}
		code, out, stderr = cli(t, env, "top", "--count", "1", "--json")
		var f frame
		if err := json.Unmarshal([]byte(out), &f); code != 0 || err != nil {
			t.Fatalf("top --json: exit %d, %v\n%s%s", code, err, out, stderr)
		}
		if len(f.Services) != 1 || len(f.Services[0].Members) != 1 || len(f.Queues) != 1 || f.Queues[0].Lag < 59*time.Minute {
			t.Errorf("top --json: %+v", f)
		}
		for _, bad := range [][]string{{"top", "--every", "1ms"}, {"top", "--count", "-1"}, {"top", "extra"}} {
			if code, _, stderr := cli(t, env, bad...); code != 2 || !strings.Contains(stderr, "Usage:") {
				t.Errorf("twice %v: exit %d\n%s", bad, code, stderr)
			}
		}
	})
}
