package instance_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/testdb"
)

// A request in flight on an instance killed with SIGKILL does not lock its key for the
// retention period: once the cluster counts the instance dead (plus the grace) the retry
// runs on another instance, and until then it gets 409.
func TestKilledIdempotencyOwner(t *testing.T) {
	t.Parallel()
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		opts := instance.Options{DSN: db.DSN, Schema: db.Schema, Service: "svc", Workloads: []instance.Workload{instance.IdempotencyHTTP{}},
			HeartbeatInterval: 100 * time.Millisecond, DeadAfter: 400 * time.Millisecond, DeadOwnerGrace: 200 * time.Millisecond}
		stuck := opts
		stuck.Workloads = []instance.Workload{instance.IdempotencyHTTP{Block: true}}
		ga, gb := instance.NewGroup(spawner(t), stuck, t.Output()), instance.NewGroup(spawner(t), opts, t.Output())
		defer ga.Stop(10 * time.Second)
		defer gb.Stop(10 * time.Second)
		addr := func(g *instance.Group) string {
			t.Helper()
			if _, err := g.Start(ctx, 0); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			ev, _, err := g.WaitFor(wctx, 0, func(e instance.Event) bool { return e.Event == "http" })
			if err != nil {
				t.Fatal(err)
			}
			return "http://" + ev.Addr
		}
		a, b := addr(ga), addr(gb)
		client := &http.Client{Transport: &http.Transport{}}
		defer client.CloseIdleConnections()
		post := func(base string) (int, string, error) {
			req, _ := http.NewRequest(http.MethodPost, base+"/orders", strings.NewReader(`{"sku":"apple"}`))
			req.Header.Set(idempotency.Header, `"order-7"`)
			req.Header.Set("Authorization", instance.CheckAuth)
			res, err := client.Do(req)
			if err != nil {
				return 0, "", err
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			return res.StatusCode, string(body), nil
		}
		go func() { _, _, _ = post(a) }() // never answered: a is killed mid-request
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, _, err := ga.WaitFor(wctx, 0, func(e instance.Event) bool { return e.Event == "handling" }); err != nil {
			t.Fatal(err)
		}
		if code, _, err := post(b); err != nil || code != http.StatusConflict {
			t.Fatalf("duplicate while the owner lives: %d, %v", code, err)
		}
		if err := ga.Kill(0); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		// The bound only catches "never": recovery is expected after DeadAfter + grace.
		for {
			code, body, err := post(b)
			if err != nil {
				t.Fatal(err)
			}
			if code == http.StatusCreated {
				if !strings.HasPrefix(body, "done by ") {
					t.Errorf("body %q", body)
				}
				t.Logf("retry ran %v after the kill", time.Since(killed).Round(time.Millisecond))
				break
			}
			if code != http.StatusConflict || time.Since(killed) > 30*time.Second {
				t.Fatalf("status %d %s %v after the kill; the killed owner's claim was never taken over", code, body, time.Since(killed))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if code, _, _ := post(b); code != http.StatusCreated {
			t.Errorf("replay after recovery: %d", code)
		}
	})
}
