package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/partition"
)

func TestMain(m *testing.M) {
	if instance.IsChild() {
		os.Exit(instance.Main())
	}
	if os.Getenv(envRunChild) != "" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// cli runs a command line and returns its exit status and output.
func cli(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{}, {"frobnicate"}, {"status", "--frobnicate"}, {"migrate"}, {"migrate", "sideways"},
		{"migrate", "down", "--steps", "0"}, {"migrate", "sql", "--dialect", "oracle"},
		{"bench"}, {"bench", "failover", "--kills", "0"}, {"bench", "nothing"}, {"version", "extra"},
		{"demo", "--nope"}, {"demo", "--scenario", "nope"}, {"demo", "--scenario", "leader", "--for", "1s"}, {"demo", "--for", "-1s"},
		{"check", "--store", "oracle"}, {"check", "--faults", "meteor"}, {"check", "--instances", "1"},
	} {
		code, _, stderr := cli(t, nil, args...)
		if code != 2 || !strings.Contains(stderr, "Usage:") {
			t.Errorf("twice %v: exit %d, stderr %q; want 2 and usage", args, code, stderr)
		}
	}
	if code, out, _ := cli(t, nil, "version"); code != 0 || !strings.HasPrefix(out, "twice ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, out, _ := cli(t, nil, "help"); code != 0 || !strings.Contains(out, "Usage:") {
		t.Errorf("help: %d %q", code, out)
	}
}

// Help is per command: `twice jobs -h` shows the jobs commands only, `twice jobs list -h`
// that command's flags, and a usage error the usage of its command.
func TestHelpPerCommand(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		want, not []string
	}{
		{[]string{"jobs", "-h"}, []string{"twice jobs list", "twice jobs show|retry|cancel ID", "$TWICE_SERVICE"}, []string{"twice migrate", "Flags:"}},
		{[]string{"help", "jobs"}, []string{"twice jobs list", "twice jobs stats"}, []string{"twice queues"}},
		{[]string{"jobs", "list", "-h"}, []string{"twice jobs list [--state", "-state string", "-limit int", "-service string"}, []string{"twice jobs stats", "-dialect"}},
		{[]string{"jobs", "retry", "--help"}, []string{"twice jobs show|retry|cancel ID", "-json"}, []string{"twice jobs list", "-state"}},
		{[]string{"migrate", "down", "-h"}, []string{"twice migrate down", "-steps int", "-all"}, []string{"twice migrate up", "-dialect"}},
		{[]string{"status", "-h"}, []string{"twice status [--dsn DSN]", "-service string"}, []string{"twice demo"}},
		{[]string{"bench", "-h"}, []string{"twice bench failover", "twice bench config"}, []string{"twice check", "Flags:"}},
		{[]string{"help"}, []string{"twice demo", "twice cron trigger NAME", "twice version"}, nil},
	} {
		code, out, stderr := cli(t, nil, tc.args...)
		if code != 0 || stderr != "" {
			t.Errorf("twice %v: exit %d, stderr %q", tc.args, code, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("twice %v lacks %q:\n%s", tc.args, w, out)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(out, n) {
				t.Errorf("twice %v shows %q:\n%s", tc.args, n, out)
			}
		}
	}
	code, _, stderr := cli(t, nil, "jobs", "list", "--bogus")
	if code != 2 || !strings.Contains(stderr, "flag provided but not defined: -bogus") || !strings.Contains(stderr, "twice jobs stats") || strings.Contains(stderr, "twice migrate") {
		t.Errorf("usage error in jobs list: exit %d\n%s", code, stderr)
	}
}

// Every line of the command table names a command that exists, with flags of its own:
// the usage cannot promise a command the CLI does not have.
func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range commands {
		for _, l := range c.lines {
			for sub := range strings.SplitSeq(l.sub, "|") {
				args := strings.Fields(c.name + " " + sub + " -h")
				code, out, stderr := cli(t, nil, args...)
				if code != 0 || !strings.Contains(out, "Usage:\n") || !strings.Contains(out, "  twice "+c.name) || !strings.Contains(out, sub) {
					t.Errorf("twice %v: exit %d\n%s%s", args, code, out, stderr)
				}
				if c.name != "help" && !strings.Contains(out, "Flags:") && len(c.lines) == 1 {
					t.Errorf("twice %v shows no flags:\n%s", args, out)
				}
			}
		}
	}
}

// $TWICE_SERVICE and $TWICE_SCHEMA stand for --service and --schema in every command that
// takes them.
func TestEnvServiceAndSchema(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		for _, name := range []string{"shop", "other"} {
			n, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: name, Logger: testdb.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close(ctx)
		}
		env := []string{"TWICE_DSN=" + db.DSN, "TWICE_SCHEMA=" + db.Schema, "TWICE_SERVICE=shop"}
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"config", "set", "greeting", "hello", "--type", "string"}, "greeting = hello"},
			{[]string{"config", "get", "greeting"}, "hello"},
			{[]string{"config", "list"}, "greeting"},
			{[]string{"jobs", "stats"}, "service shop"},
			{[]string{"queues", "list"}, "service shop"},
			{[]string{"cron", "list"}, "service shop"},
			{[]string{"migrate", "status"}, "Z\n"}, // applied, with a timestamp, not pending
		} {
			code, out, stderr := cli(t, env, tc.args...)
			if code != 0 || !strings.Contains(out, tc.want) {
				t.Errorf("twice %v: exit %d, want %q\n%s%s", tc.args, code, tc.want, out, stderr)
			}
		}
		// status shows only $TWICE_SERVICE, and every service without it.
		if code, out, stderr := cli(t, env, "status"); code != 0 || !strings.Contains(out, "service shop") || strings.Contains(out, "service other") {
			t.Errorf("status with TWICE_SERVICE=shop: %d\n%s%s", code, out, stderr)
		}
		env[2] = "TWICE_SERVICE="
		if code, out, _ := cli(t, env, "status"); code != 0 || !strings.Contains(out, "service shop") || !strings.Contains(out, "service other") {
			t.Errorf("status without TWICE_SERVICE: %d\n%s", code, out)
		}
		if code, _, stderr := cli(t, env, "config", "list"); code != 2 || !strings.Contains(stderr, "--service (or $TWICE_SERVICE) is required") {
			t.Errorf("config list without a service: %d\n%s", code, stderr)
		}
	})
}

func TestMigrateAndStatus(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		env := []string{"TWICE_DSN=" + db.DSN}
		schema := []string{}
		if db.Schema != "" {
			schema = []string{"--schema", db.Schema}
		}
		with := func(args ...string) []string { return append(args, schema...) }

		if db.Dialect == "sqlite" {
			code, _, stderr := cli(t, env, "status")
			if code != 1 || !strings.Contains(stderr, "no database file") {
				t.Fatalf("status before any instance: %d %q", code, stderr)
			}
		}
		code, out, stderr := cli(t, env, with("migrate", "sql")...)
		if code != 0 || !strings.Contains(out, "CREATE TABLE twice_leases") {
			t.Fatalf("migrate sql: %d %q %q", code, out, stderr)
		}
		code, out, stderr = cli(t, env, with("migrate", "up")...)
		if code != 0 || !strings.Contains(out, "applied lease 0001_leases") {
			t.Fatalf("migrate up: %d %q %q", code, out, stderr)
		}
		if code, out, _ := cli(t, env, with("migrate", "up")...); code != 0 || !strings.Contains(out, "up to date") {
			t.Fatalf("second migrate up: %d %q", code, out)
		}
		if code, out, _ := cli(t, env, with("migrate", "sql")...); code != 0 || !strings.Contains(out, "up to date") {
			t.Fatalf("migrate sql when up to date: %d %q", code, out)
		}
		code, out, _ = cli(t, env, with("migrate", "status", "--json")...)
		var ms struct {
			Migrations []struct {
				Component string
				Applied   bool
			}
		}
		want := 0
		for _, c := range twice.Components() {
			want += len(c.Migrations)
		}
		if code != 0 || json.Unmarshal([]byte(out), &ms) != nil || len(ms.Migrations) != want || !ms.Migrations[0].Applied {
			t.Fatalf("migrate status --json: %d %q", code, out)
		}

		n, err := twice.Open(context.Background(), twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "shop", Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Locks().Acquire(context.Background(), "nightly", nil); err != nil {
			t.Fatal(err)
		}
		rooms, err := n.Partitions().Join(context.Background(), partition.Config{Name: "rooms", Partitions: 4})
		if err != nil {
			t.Fatal(err)
		}
		testnode.Eventually(t, 30*time.Second, "the instance holds the 4 partitions", func() bool { return len(rooms.Mine()) == 4 })
		code, out, stderr = cli(t, env, with("status")...)
		if code != 0 || !strings.Contains(out, "service shop: 1 instances") || !strings.Contains(out, n.ID()) || !strings.Contains(out, "lock:nightly") || !strings.Contains(out, "HEALTH  AVAIL") ||
			!strings.Contains(out, "rooms  1        "+n.ID()+" 4") || strings.Contains(out, "part/rooms") {
			t.Fatalf("status: %d %q %q", code, out, stderr)
		}
		code, out, _ = cli(t, env, with("status", "--json", "--service", "shop")...)
		var st struct {
			Services []twice.ServiceStatus
		}
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Services) != 1 || len(st.Services[0].Members) != 1 {
			t.Fatalf("status --json: %d %q", code, out)
		}
		if err := n.Close(context.Background()); err != nil {
			t.Fatal(err)
		}

		code, out, _ = cli(t, env, with("migrate", "down", "--all")...)
		if code != 0 || strings.Count(out, "undone") != want {
			t.Fatalf("migrate down --all: %d %q", code, out)
		}
		if code, _, stderr := cli(t, env, with("status")...); code != 1 || !strings.Contains(stderr, "no twice schema") {
			t.Fatalf("status without schema: %d %q", code, stderr)
		}
	})
}

func TestMigrateSQLDialect(t *testing.T) {
	for _, d := range []string{"postgres", "sqlite"} {
		code, out, _ := cli(t, nil, "migrate", "sql", "--dialect", d)
		if code != 0 || !strings.Contains(out, "CREATE TABLE twice_members") || !strings.Contains(out, "COMMIT;") {
			t.Errorf("migrate sql --dialect %s: %d %q", d, code, out)
		}
	}
}

func TestBenchFailoverJSON(t *testing.T) {
	dir := t.TempDir()
	code, out, stderr := cli(t, nil, "bench", "failover", "--dsn", "sqlite:"+dir+"/b.db", "--kills", "2", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	for _, k := range []string{"p50_ms", "p99_ms", "kills"} {
		if _, ok := res[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, out)
		}
	}
	if res["kills"].(float64) != 2 || res["p99_ms"].(float64) <= 0 {
		t.Errorf("result %s", out)
	}
	if !strings.Contains(stderr, "failover 2/2") {
		t.Errorf("no progress lines on stderr: %q", stderr)
	}
}

func TestDemoLeader(t *testing.T) {
	t.Setenv("TWICE_DSN", "")
	code, out, stderr := cli(t, nil, "demo", "--scenario", "leader")
	if code != 0 {
		t.Fatalf("demo exit %d\n%s\n%s", code, out, stderr)
	}
	// Without --dsn the demo runs on a scratch file and leaves nothing behind.
	if _, err := os.Stat("twice.db"); err == nil {
		t.Error("demo wrote ./twice.db")
	}
	for _, want := range []string{"/twice-demo-", "leads with fencing token 1", "refused: lease: fenced", "every one in token order"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckPostgresNeedsDSN(t *testing.T) {
	t.Setenv("TWICE_DSN", "")
	code, _, stderr := cli(t, nil, "check", "--store", "postgres")
	if code != 2 || !strings.Contains(stderr, "needs --dsn") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestCheckJSON(t *testing.T) {
	t.Setenv("TWICE_DSN", "")
	code, out, stderr := cli(t, nil, "check", "--duration", "3s", "--fault-every", "1s", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, stderr, out)
	}
	var rep struct {
		Store      string
		Violations int
		Invariants []struct {
			Name       string
			Operations int
			Violations int
		}
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rep.Store != "sqlite" || len(rep.Invariants) < 5 || rep.Violations != 0 {
		t.Fatalf("report %+v", rep)
	}
}
