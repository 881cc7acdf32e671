package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testnode"
)

// envRunChild makes the test binary the tiny server `twice run` starts in TestRunServes.
const envRunChild = "TWICE_RUN_CLI_TEST_CHILD"

// runChild serves its $TWICE_INSTANCE on $PORT, ready at once, until SIGTERM.
func runChild() int {
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("serving instance", os.Getenv("TWICE_INSTANCE"))
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, os.Getenv("TWICE_INSTANCE"))
	}))
	return 0
}

func TestRunUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "run needs a command"},
		{[]string{"run", "-n", "0", "--", "x"}, "-n 0: want 1 to 64"},
		{[]string{"run", "-n", "two", "x"}, "invalid value"},
		{[]string{"run", "--port", "70000", "x"}, "--port 70000"},
		{[]string{"run", "--health", "readyz", "x"}, "starting with /"},
		{[]string{"run", "--interval", "1ms", "x"}, "--interval 1ms"},
		{[]string{"run", "--fails", "0", "x"}, "--fails 0"},
		{[]string{"run", "--restart", "sometimes", "x"}, `restart policy "sometimes"`},
		{[]string{"run", "--chaos", "1ns", "x"}, "--chaos 1ns"},
		{[]string{"run", "--faults", "kill", "x"}, "--faults needs --chaos"},
		{[]string{"run", "--chaos", "1s", "--faults", "kill,meteor", "x"}, `fault "meteor"`},
		{[]string{"run", "--grace", "0s", "x"}, "--grace 0s"},
	} {
		code, _, stderr := cli(t, nil, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) || !strings.Contains(stderr, "twice run [-n 3]") {
			t.Errorf("twice %v: exit %d, stderr:\n%s\nwant 2, %q and the usage of run", c.args, code, stderr, c.want)
		}
	}
}

func TestRunServes(t *testing.T) {
	t.Setenv(envRunChild, "1")
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &testnode.Buffer{}
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"run", "-n", "2", "--port", "0", "--interval", "100ms",
			"--dsn", "sqlite:" + filepath.Join(dir, "run.db"), "--", os.Args[0]}, out, io.Discard)
	}()
	addr := regexp.MustCompile(`proxy on (http://127\.0\.0\.1:\d+)`)
	var url string
	testnode.Eventually(t, 30*time.Second, "the proxy listening", func() bool {
		m := addr.FindStringSubmatch(out.String())
		if m != nil {
			url = m[1]
		}
		return m != nil
	})
	seen := map[string]bool{}
	testnode.Eventually(t, 90*time.Second, "both instances answering through the proxy", func() bool {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				seen[string(body)] = true
			}
		}
		return seen["1"] && seen["2"]
	})
	// SIGHUP restarts them one at a time.
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, 90*time.Second, "a rolling restart on SIGHUP", func() bool {
		return strings.Contains(out.String(), "rolling restart done")
	})
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("twice run did not stop\n%s", out.String())
	}
	for _, want := range []string{"1     | serving instance 1", "2     | serving instance 2", "twice | stopped"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the output lacks %q:\n%s", want, out.String())
		}
	}
}
