package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/twicehq/twice/internal/testdb"
)

func TestConfigUsage(t *testing.T) {
	for _, args := range [][]string{
		{"config"}, {"config", "frob"}, {"config", "get"}, {"config", "get", "k"},
		{"config", "get", "a", "b", "--service", "s"}, {"config", "set", "k", "--service", "s"},
		{"config", "get", "bad key", "--service", "s"}, {"config", "history", "--limit", "0", "--service", "s"},
		{"config", "list", "--type", "int", "--service", "s"},
	} {
		code, _, stderr := cli(t, nil, args...)
		if code != 2 || !strings.Contains(stderr, "Usage:") {
			t.Errorf("twice %v: exit %d, stderr %q; want 2 and usage", args, code, stderr)
		}
	}
}

func TestConfig(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		env := []string{"TWICE_DSN=" + db.DSN, "USER=carol"}
		schema := func(args ...string) []string {
			if db.Schema != "" {
				args = append(args, "--schema", db.Schema)
			}
			return args
		}
		with := func(args ...string) []string { return schema(append(args, "--service", "shop")...) }
		if code, _, stderr := cli(t, env, schema("migrate", "up")...); code != 0 {
			t.Fatalf("migrate up: %s", stderr)
		}
		// A new key needs its type; values are checked against it.
		code, _, stderr := cli(t, env, with("config", "set", "upload.max_bytes", "1048576")...)
		if code != 2 || !strings.Contains(stderr, "--type") {
			t.Fatalf("set without a type: %d %q", code, stderr)
		}
		code, _, stderr = cli(t, env, with("config", "set", "upload.max_bytes", "1MB", "--type", "int")...)
		if code != 2 || !strings.Contains(stderr, `"1MB" is not a valid int`) {
			t.Fatalf("set of a bad int: %d %q", code, stderr)
		}
		code, out, stderr := cli(t, env, with("config", "set", "upload.max_bytes", "1048576", "--type", "int")...)
		if code != 0 || out != "upload.max_bytes = 1048576 (int, version 1)\n" {
			t.Fatalf("set: %d %q %q", code, out, stderr)
		}
		// Later sets keep the type; a value starting with a dash follows "--".
		code, out, stderr = cli(t, env, append(with("config", "set", "--actor", "dave", "--if-version", "1", "upload.max_bytes"), "--", "-1")...)
		if code != 0 || !strings.Contains(out, "= -1 (int, version 2)") {
			t.Fatalf("second set: %d %q %q", code, out, stderr)
		}
		code, _, stderr = cli(t, env, with("config", "set", "upload.max_bytes", "5", "--if-version", "1")...)
		if code != 1 || !strings.Contains(stderr, "version conflict") {
			t.Fatalf("stale --if-version: %d %q", code, stderr)
		}
		code, _, stderr = cli(t, env, with("config", "set", "upload.max_bytes", "x", "--type", "string")...)
		if code != 1 || !strings.Contains(stderr, "type mismatch") {
			t.Fatalf("another type: %d %q", code, stderr)
		}
		if code, out, _ := cli(t, env, with("config", "get", "upload.max_bytes")...); code != 0 || out != "-1\n" {
			t.Fatalf("get: %d %q", code, out)
		}
		code, out, _ = cli(t, env, with("config", "get", "upload.max_bytes", "--json")...)
		var got map[string]any
		if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got["value"] != -1.0 || got["version"] != 2.0 || got["actor"] != "dave" {
			t.Fatalf("get --json: %d %q", code, out)
		}
		if code, _, stderr := cli(t, env, with("config", "get", "nothing")...); code != 1 || !strings.Contains(stderr, "no such key") {
			t.Fatalf("get of a missing key: %d %q", code, stderr)
		}
		cli(t, env, with("config", "set", "checkout.timeout", "1m30s", "--type", "duration")...)
		code, out, _ = cli(t, env, with("config", "list")...)
		if code != 0 || !strings.Contains(out, "checkout.timeout") || !strings.Contains(out, "1m30s") || !strings.Contains(out, "dave via twice-cli@") {
			t.Fatalf("list: %d %q", code, out)
		}
		code, out, _ = cli(t, env, with("config", "list", "checkout.", "--json")...)
		var list []map[string]any
		if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0]["value"] != "1m30s" {
			t.Fatalf("list --json: %d %q", code, out)
		}
		if code, out, _ := cli(t, env, with("config", "delete", "checkout.timeout")...); code != 0 || !strings.Contains(out, "deleted (version 2)") {
			t.Fatalf("delete: %d %q", code, out)
		}
		code, out, _ = cli(t, env, with("config", "history", "--limit", "3")...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 0 || len(lines) != 4 || !strings.Contains(lines[1], "deleted") || !strings.Contains(lines[1], "carol via") ||
			!strings.Contains(lines[3], "upload.max_bytes") {
			t.Fatalf("history: %d %q", code, out)
		}
		code, out, _ = cli(t, env, with("config", "history", "upload.max_bytes", "--json")...)
		var hist []map[string]any
		if code != 0 || json.Unmarshal([]byte(out), &hist) != nil || len(hist) != 2 || hist[1]["value"] != 1048576.0 {
			t.Fatalf("history --json: %d %q", code, out)
		}
		// Another service has its own settings.
		code, out, _ = cli(t, env, schema("config", "list", "--service", "billing")...)
		if code != 0 || !strings.Contains(out, "no settings in service billing") {
			t.Fatalf("list of another service: %d %q", code, out)
		}
	})
}
