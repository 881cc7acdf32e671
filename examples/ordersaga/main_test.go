package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/workflow"
)

// The program on each store: the first order completes, charged once although its first
// charge's answer was lost; the second, which cannot be shipped, is refunded and then
// released; the third, out of stock, undoes nothing. Twice on one database: a second run
// has orders of its own and a full shelf again.
func TestOrderSaga(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		for range 2 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var out bytes.Buffer
			r, err := run(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "ordersaga", Logger: testdb.Logger(t)}, &out)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("output:\n%s", out.String())
			if len(r.Orders) != 3 {
				t.Fatalf("%d orders", len(r.Orders))
			}
			check := func(i int, state workflow.State, errPart string, steps []string, effects ...string) {
				t.Helper()
				o := r.Orders[i]
				if o.State != state || !strings.Contains(o.Error, errPart) {
					t.Errorf("%s: %s %q; want %s, an error with %q", o.ID, o.State, o.Error, state, errPart)
				}
				var got []string
				for _, s := range o.Steps {
					got = append(got, strings.TrimSpace(s.Name+" "+s.State+" "+s.Compensation))
				}
				if strings.Join(got, "|") != strings.Join(steps, "|") {
					t.Errorf("%s: steps %q, want %q", o.ID, got, steps)
				}
				if strings.Join(o.Effects, "|") != strings.Join(effects, "|") {
					t.Errorf("%s: effects %q, want %q", o.ID, o.Effects, effects)
				}
				if !strings.Contains(out.String(), o.ID+": "+string(o.State)) {
					t.Errorf("%s is not printed", o.ID)
				}
			}
			// The provider numbers charges as they come: the two orders' race.
			charge := func(i int) string {
				var id string
				if len(r.Orders[i].Steps) > 1 {
					id = strings.Trim(string(r.Orders[i].Steps[1].Result), `"`)
				}
				return id
			}
			check(0, workflow.Completed, "", []string{"reserve completed", "charge completed", "ship completed"},
				"reserve 1 lamp", "charge "+charge(0)+": 4900 cents")
			if a := r.Orders[0].Steps[1].Attempts; a != 2 {
				t.Errorf("the charge whose answer was lost ran %d times, want 2 (with one key: one charge)", a)
			}
			check(1, workflow.Compensated, `step "ship" failed after 3 attempts: no carrier delivers to Atlantis`,
				[]string{"reserve completed done", "charge completed done", "ship failed"},
				"reserve 2 lamp", "charge "+charge(1)+": 9800 cents", "refund "+charge(1), "release 2 lamp")
			check(2, workflow.Compensated, "99 lamp: out of stock", []string{"reserve failed"})
			if r.Stock != initialStock-1 || r.Charges != 2 || r.Refunds != 1 {
				t.Errorf("stock %d, charges %d, refunds %d; want %d, 2, 1", r.Stock, r.Charges, r.Refunds, initialStock-1)
			}
		}
	})
}
