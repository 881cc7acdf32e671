package twice

import (
	"net/http"
	"time"

	"github.com/twicehq/twice/cluster"
)

// CountRequest counts an HTTP request this instance answered with status, for the
// request-based availability every instance reports with its heartbeat (a request fails
// when status is 500 or above): [Members] and [Status] return each instance's counts since
// it started, and the dashboard shows them. The middleware of package metrics calls it
// for each request it counts, whether or not Prometheus scrapes them; a service that does
// not use that middleware calls it once per request from its own. It costs two atomic
// additions at most.
func (n *Node) CountRequest(status int) {
	n.requests.Add(1)
	if status >= http.StatusInternalServerError {
		n.failed.Add(1)
	}
}

// report is what this instance tells the others with each heartbeat (see
// cluster.Config.Report): its health checks' latest results, which it does not run for
// this (an idle instance costs no more), and its requests.
func (n *Node) report() cluster.Report {
	// failed is read first: a request counts in requests before it counts in failed, so
	// failed never exceeds requests.
	failed := n.failed.Load()
	r := cluster.Report{Requests: cluster.Requests{Total: n.requests.Load(), Failed: failed}}
	rs, oldest := n.health.Last()
	for _, c := range rs {
		r.Checks = append(r.Checks, cluster.Check{Name: c.Name, Kind: c.Kind, OK: c.OK, Error: c.Error})
	}
	if len(rs) > 0 {
		r.ChecksAge = time.Since(oldest)
	}
	return r
}
