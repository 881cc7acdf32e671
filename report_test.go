package twice_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cluster"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/metrics"
)

// Every instance reports its health checks and its requests with its heartbeat: another
// instance reading the status sees a failing check with its error, and the requests the
// metrics middleware counted (5xx and panics as failures), summed for the service. An
// instance nobody probed reports no checks.
func TestInstancesReportHealthAndRequests(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		a := testnode.Open(t, db, "shop", testnode.Fast())
		b := testnode.Open(t, db, "shop", testnode.Fast())
		if err := a.Health().Register("payments", 0, func(context.Context) error {
			return errors.New("payments.internal:443: connection refused")
		}); err != nil {
			t.Fatal(err)
		}
		m, err := metrics.New(a, metrics.Config{})
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /ok", func(http.ResponseWriter, *http.Request) {})
		mux.HandleFunc("GET /missing", http.NotFound)
		mux.HandleFunc("GET /down", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
		mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
		h := m.Middleware(mux)
		for _, path := range []string{"/ok", "/ok", "/ok", "/missing", "/down", "/panic"} {
			func() {
				defer func() { _ = recover() }()
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
			}()
		}
		if code, _ := probe(a.Health(), "/readyz"); code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz with a failing check: %d", code)
		}
		want := cluster.Requests{Total: 6, Failed: 2}
		var st twice.ServiceStatus
		testnode.EventuallyNil(t, 30*time.Second, func() error {
			sts, err := twice.Status(ctx, b.Store(), "shop")
			if err != nil || len(sts) != 1 {
				return fmt.Errorf("status: %+v, %v", sts, err)
			}
			st = sts[0]
			for _, mb := range st.Members {
				if mb.ID == a.ID() && (mb.Report == nil || mb.Report.Requests != want || len(mb.Report.Checks) == 0) {
					return fmt.Errorf("a's report: %+v", mb.Report)
				}
			}
			return nil
		})
		if st.Requests != want || fmt.Sprintf("%.4f", st.Requests.Availability()) != "0.6667" {
			t.Errorf("the service's requests %+v, availability %v; want %+v, 4/6", st.Requests, st.Requests.Availability(), want)
		}
		for _, mb := range st.Members {
			switch r := mb.Report; mb.ID {
			case a.ID():
				var payments *cluster.Check
				for i, c := range r.Checks {
					if c.Name == "payments" {
						payments = &r.Checks[i]
					}
				}
				if payments == nil || payments.OK || payments.Kind != "readiness" || payments.Error != "payments.internal:443: connection refused" {
					t.Errorf("a's payments check as b sees it: %+v in %+v", payments, r.Checks)
				}
				if f := r.Failing(); len(f) != 1 || f[0] != "payments" {
					t.Errorf("a's failing checks: %v", f)
				}
				if r.ChecksAge <= 0 || r.ChecksAge > 30*time.Second {
					t.Errorf("a's checks are %v old", r.ChecksAge)
				}
			case b.ID():
				if r == nil || r.Requests != (cluster.Requests{}) || len(r.Checks) != 0 {
					t.Errorf("b, which served nothing and was never probed, reports %+v", r)
				}
			default:
				t.Errorf("an unknown instance %s", mb.ID)
			}
		}
	})
}
