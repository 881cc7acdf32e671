package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/workflow"
)

// twice workflows list, show and cancel, from outside the instance running them: the
// cancellation, signed with $TWICE_CLUSTER_SECRET as the instance checks, interrupts the
// step running there (which would otherwise wait forever), and the compensation runs.
func TestWorkflowsCommands(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		run := adminCLI(t, db)
		secret := "a cluster secret of 32 bytes or more, for the test"
		t.Setenv(envSecret, secret)
		n, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "shop", Logger: testdb.Logger(t),
			ClusterSecret: []byte(secret)})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close(ctx)
		waiting := make(chan struct{}, 1)
		wf, err := workflow.Register(n.Workflows(), workflow.Def[string]{Name: "order", Run: func(wc *workflow.Context, in string) error {
			if _, err := workflow.Do(wc, workflow.Step[string]{Name: "reserve",
				Do:         func(context.Context, string) (string, error) { return "reserved " + in, nil },
				Compensate: func(context.Context, string, string) error { return nil },
			}); err != nil {
				return err
			}
			_, err := workflow.Do(wc, workflow.Step[string]{Name: "wait", Do: func(ctx context.Context, _ string) (string, error) {
				if in != "slow" {
					return "done", nil
				}
				waiting <- struct{}{}
				<-ctx.Done() // until cancelled
				return "", ctx.Err()
			}})
			return err
		}})
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"fast", "slow"} {
			if _, err := wf.Start(ctx, id, id); err != nil {
				t.Fatal(err)
			}
		}
		<-waiting
		testnode.EventuallyNil(t, time.Minute, func() error {
			st, err := n.Workflows().Get(ctx, "fast")
			if err == nil && st.State != workflow.Completed {
				err = errors.New(string(st.State))
			}
			return err
		})

		out := run(0, "workflows", "list")
		if !strings.Contains(out, "fast") || !strings.Contains(out, "completed") || !strings.Contains(out, "running") {
			t.Errorf("workflows list:\n%s", out)
		}
		var ws []workflow.Summary
		if err := json.Unmarshal([]byte(run(0, "workflows", "list", "--state", "running", "--json")), &ws); err != nil || len(ws) != 1 || ws[0].ID != "slow" {
			t.Errorf("workflows list --state running --json: %+v %v", ws, err)
		}
		if out := run(0, "workflows", "show", "fast"); !strings.Contains(out, "reserved fast") || !strings.Contains(out, "wait") {
			t.Errorf("workflows show:\n%s", out)
		}
		if out := run(0, "workflows", "cancel", "slow"); !strings.Contains(out, "cancellation requested") {
			t.Errorf("workflows cancel: %s", out)
		}
		testnode.EventuallyNil(t, time.Minute, func() error {
			var st workflow.Status
			if err := json.Unmarshal([]byte(run(0, "workflows", "show", "slow", "--json")), &st); err != nil {
				return err
			}
			if st.State != workflow.Cancelled || len(st.Steps) == 0 || st.Steps[0].Compensation != "done" {
				return errors.New("not cancelled and compensated yet: " + string(st.State))
			}
			return nil
		})
		if out := run(1, "workflows", "cancel", "slow"); !strings.Contains(out, "finished") {
			t.Errorf("second cancel: %s", out)
		}
		if out := run(1, "workflows", "show", "nope"); !strings.Contains(out, "not found") {
			t.Errorf("show of a missing workflow: %s", out)
		}
		for _, bad := range [][]string{{"workflows"}, {"workflows", "show"}, {"workflows", "list", "--state", "asleep"},
			{"workflows", "list", "--limit", "0"}, {"workflows", "frob"}, {"workflows", "cancel", "a", "b"}} {
			if out := run(2, bad...); !strings.Contains(out, "Usage:") {
				t.Errorf("twice %v: no usage", bad)
			}
		}
	})
}

// twice workflows signal wakes a workflow that waits for the signal on an instance.
func TestWorkflowsSignalCommand(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		run, n := adminCLI(t, db), shopNode(t, db)
		wf, err := workflow.Register(n.Workflows(), workflow.Def[string]{Name: "refund", Run: func(wc *workflow.Context, in string) error {
			who, err := workflow.WaitSignal[string](wc, "approval", 24*time.Hour)
			if err != nil {
				return err
			}
			_, err = workflow.Do(wc, workflow.Step[string]{Name: "answer",
				Do: func(context.Context, string) (string, error) { return "approved by " + who, nil }})
			return err
		}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wf.Start(ctx, "r-1", ""); err != nil {
			t.Fatal(err)
		}
		if out := run(2, "workflows", "signal", "r-1", "approval", "alice"); !strings.Contains(out, "not JSON") {
			t.Errorf("a payload that is not JSON: %s", out)
		}
		if out := run(0, "workflows", "signal", "r-1", "approval", `"alice"`); !strings.Contains(out, "sent") {
			t.Errorf("workflows signal: %s", out)
		}
		testnode.EventuallyNil(t, time.Minute, func() error {
			st, err := n.Workflows().Get(ctx, "r-1")
			if err == nil && (st.State != workflow.Completed || string(st.Steps[1].Result) != `"approved by alice"`) {
				err = errors.New(string(st.State))
			}
			return err
		})
		if out := run(1, "workflows", "signal", "r-1", "approval", `"bob"`); !strings.Contains(out, "finished") {
			t.Errorf("signalling a finished workflow: %s", out)
		}
	})
}

// twice workflows retry runs a failed workflow again once its cause is fixed: its
// compensation that had failed on every attempt runs again, and it ends compensated.
func TestWorkflowsRetryCommand(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		ctx := context.Background()
		run, n := adminCLI(t, db), shopNode(t, db)
		var fixed atomic.Bool
		wf, err := workflow.Register(n.Workflows(), workflow.Def[string]{Name: "order", Run: func(wc *workflow.Context, in string) error {
			if _, err := workflow.Do(wc, workflow.Step[string]{Name: "charge",
				Do: func(context.Context, string) (string, error) { return "charged " + in, nil },
				Compensate: func(context.Context, string, string) error {
					if !fixed.Load() {
						return errors.New("the refund API is down")
					}
					return nil
				},
				CompensateRetry: workflow.Retry{Attempts: 1}}); err != nil {
				return err
			}
			_, err := workflow.Do(wc, workflow.Step[string]{Name: "ship",
				Do: func(context.Context, string) (string, error) {
					return "", workflow.Permanent(errors.New("no such address"))
				}})
			return err
		}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wf.Start(ctx, "o-1", "o-1"); err != nil {
			t.Fatal(err)
		}
		state := func() workflow.State {
			var st workflow.Status
			if err := json.Unmarshal([]byte(run(0, "workflows", "show", "o-1", "--json")), &st); err != nil {
				t.Fatal(err)
			}
			return st.State
		}
		testnode.EventuallyNil(t, time.Minute, func() error {
			if s := state(); s != workflow.Failed {
				return errors.New("not failed yet: " + string(s))
			}
			return nil
		})

		fixed.Store(true)
		var st workflow.Status
		if err := json.Unmarshal([]byte(run(0, "workflows", "retry", "o-1", "--json")), &st); err != nil ||
			st.ID != "o-1" || !strings.HasPrefix(st.Error, "retried after: ") {
			t.Fatalf("workflows retry --json: %+v %v", st, err)
		}
		testnode.EventuallyNil(t, time.Minute, func() error {
			if s := state(); s != workflow.Compensated {
				return errors.New("not compensated yet: " + string(s))
			}
			return nil
		})
		if out := run(1, "workflows", "retry", "o-1"); !strings.Contains(out, "not failed") || !strings.Contains(out, "compensated") {
			t.Errorf("retrying a compensated workflow: %s", out)
		}
		if out := run(1, "workflows", "retry", "nope"); !strings.Contains(out, "not found") {
			t.Errorf("retrying a missing workflow: %s", out)
		}
		if out := run(2, "workflows", "retry"); !strings.Contains(out, "Usage:") {
			t.Errorf("retry without an id: %s", out)
		}
	})
}

// shopNode opens an instance of the service "shop" on db, closed when t ends.
func shopNode(t *testing.T, db testdb.DB) *twice.Node {
	t.Helper()
	n, err := twice.Open(context.Background(), twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "shop", Logger: testdb.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return n
}
