package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/dashseed"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/twicetest"
)

// startDashboard runs `twice dashboard` with args on n's database until the test ends, and
// returns its address and its log.
func startDashboard(t *testing.T, n *twice.Node, args ...string) (base string, log *testnode.Buffer) {
	t.Helper()
	cfg := n.Config()
	ctx, cancel := context.WithCancel(context.Background())
	r, w := io.Pipe()
	log = &testnode.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- dashboardCmd(ctx, append([]string{"--dsn", cfg.DSN, "--schema", cfg.Schema, "--addr", "127.0.0.1:0"}, args...), w, log)
		w.Close()
	}()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("twice dashboard: %v; log:\n%s", <-done, log)
	}
	go func() { _, _ = io.Copy(io.Discard, r) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("twice dashboard: %v", err)
		}
	})
	_, base, ok := strings.Cut(strings.TrimSpace(line), " at ")
	if !ok || !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("twice dashboard said %q", line)
	}
	return strings.TrimSuffix(base, " (read-only)"), log
}

// `twice dashboard` serves the service's pages from its database, asks for a token off
// loopback, and logs the actions with who took them.
func TestDashboardCommand(t *testing.T) {
	twicetest.Each(t, func(t *testing.T, s twicetest.Store) {
		svc := dashseed.Open(t, s, 1)
		base, log := startDashboard(t, svc.Nodes[0], "--token", "s3cret")
		fetch(t, "GET", base+"jobs?kind=fail", "", http.StatusUnauthorized)
		page := fetch(t, "GET", strings.Replace(base, "http://", "http://alice:s3cret@", 1)+"jobs?kind=fail", "", 200)
		for _, want := range []string{`data-queue="mail"`, `<td class="n available">3</td>`, fmt.Sprintf(`id="job-%d" data-state="discarded"`, svc.Discarded)} {
			if !strings.Contains(page, want) {
				t.Errorf("the jobs page does not show %s", want)
			}
		}
		fetch(t, "POST", strings.Replace(base, "http://", "http://alice:s3cret@", 1)+"action",
			fmt.Sprintf("op=job-retry&id=%d&back=jobs", svc.Discarded), 200) // after the redirect
		if !strings.Contains(log.String(), "who=alice action=job-retry") {
			t.Errorf("the retry is not logged with who asked:\n%s", log)
		}
	})
}

func fetch(t *testing.T, method, u, form string, want int) string {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	if form != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d\n%s", method, u, resp.StatusCode, want, b)
	}
	return string(b)
}

func TestDashboardRefusesAnOpenAddressWithoutAToken(t *testing.T) {
	t.Setenv(envDashboardToken, "")
	for _, addr := range []string{"0.0.0.0:0", ":8081", "192.0.2.1:8081"} {
		code, _, stderr := cli(t, nil, "dashboard", "--addr", addr, "--dsn", "sqlite:"+t.TempDir()+"/none.db")
		if code != 2 || !strings.Contains(stderr, "not a loopback address") {
			t.Errorf("--addr %s: exit %d, %q", addr, code, stderr)
		}
	}
	code, _, stderr := cli(t, nil, "dashboard", "--addr", "localhost:0", "--dsn", "sqlite:"+t.TempDir()+"/none.db")
	if code != 1 || !strings.Contains(stderr, "no database file") {
		t.Errorf("on loopback the command goes on to open the database: exit %d, %q", code, stderr)
	}
}
