package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
)

func TestFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	s, err := fromEnv(env(map[string]string{"TWICE_INSTANCE": "2"}))
	if err != nil {
		t.Fatal(err)
	}
	if s.port != "8080" || s.service != "deploy-example" || s.instance != "2" || s.shutdownDelay != 5*time.Second || s.shutdownTimeout != 20*time.Second {
		t.Errorf("defaults: %+v", s)
	}
	s, err = fromEnv(env(map[string]string{"PORT": "9000", "SHUTDOWN_DELAY": "250ms", "SHUTDOWN_TIMEOUT": "1m", "TWICE_SERVICE": "shop"}))
	if err != nil {
		t.Fatal(err)
	}
	if s.port != "9000" || s.service != "shop" || s.shutdownDelay != 250*time.Millisecond || s.shutdownTimeout != time.Minute {
		t.Errorf("from the environment: %+v", s)
	}
	for _, bad := range []map[string]string{{"PORT": "http"}, {"PORT": "70000"}, {"SHUTDOWN_DELAY": "5"}, {"SHUTDOWN_TIMEOUT": "-1s"}} {
		if _, err := fromEnv(env(bad)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestShutdownSequence runs the app in the test's process and stops it as SIGTERM does:
// /readyz turns 503 while requests are still served during the delay; a second signal
// ends the delay (an hour here), then the server closes and run returns without an error,
// the node closed.
func TestShutdownSequence(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Setenv("TWICE_DSN", db.DSN)
		t.Setenv("TWICE_SCHEMA", db.Schema)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ln.Close()
		s := settings{port: port, service: "app-test", instance: "7", shutdownDelay: time.Hour, shutdownTimeout: 10 * time.Second}
		stop := make(chan os.Signal, 2)
		ran := make(chan error, 1)
		go func() { ran <- run(context.Background(), s, testdb.Logger(t), stop) }()
		base := "http://127.0.0.1:" + port

		get := func(path string) (int, string, error) {
			resp, err := http.Get(base + path)
			if err != nil {
				return 0, "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b), err
		}
		testnode.Eventually(t, 30*time.Second, "/readyz answers 200", func() bool {
			code, _, err := get("/readyz")
			return err == nil && code == http.StatusOK
		})
		if code, body, err := get("/"); err != nil || code != http.StatusOK || !strings.Contains(body, "instance 7") {
			t.Fatalf("GET /: %d %q %v", code, body, err)
		}
		for want := int64(1); want <= 2; want++ {
			resp, err := http.Post(base+"/count", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			var c counter
			err = json.NewDecoder(resp.Body).Decode(&c)
			resp.Body.Close()
			if err != nil || c.Count != want || c.Instance != "7" {
				t.Fatalf("POST /count: %+v %v, want the count %d", c, err, want)
			}
		}

		stop <- syscall.SIGTERM
		testnode.Eventually(t, 30*time.Second, "/readyz answers 503 after SIGTERM", func() bool {
			code, _, err := get("/readyz")
			return err == nil && code == http.StatusServiceUnavailable
		})
		// Still serving while the balancer notices: a request that uses the node succeeds.
		if code, body, err := get("/count"); err != nil || code != http.StatusOK || !strings.Contains(body, `"count":2`) {
			t.Errorf("GET /count while draining: %d %q %v", code, body, err)
		}
		stop <- syscall.SIGTERM
		select {
		case err := <-ran:
			if err != nil {
				t.Fatalf("run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("run has not returned within 60s of SIGTERM")
		}
		if _, _, err := get("/"); err == nil {
			t.Error("the server still answers after run returned")
		}
	})
}
