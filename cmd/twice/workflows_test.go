package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
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
