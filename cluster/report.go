package cluster

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
)

// Report is what an instance tells the others about itself: its heartbeat writes it to its
// row (see [Config.Report]), so it costs no statement of its own, and whoever lists the
// members reads it with them ([Member.Report]).
type Report struct {
	// Checks are the latest result of each of the instance's health checks, as its last
	// run of them left it (a probe of /readyz, /livez or /healthz, or a report); none
	// before the first run. At most [MaxReportChecks], each error cut to
	// [MaxReportError] bytes.
	Checks []Check `json:"checks,omitempty"`
	// ChecksAge is how old the oldest of Checks is. The instance writes their age when it
	// heartbeats; [List] adds the heartbeat's age in database time.
	ChecksAge time.Duration `json:"checks_age,omitempty"`
	// Requests are the HTTP requests the instance answered since it started.
	Requests Requests `json:"requests"`
}

// Check is the latest result of one health check.
type Check struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"` // "readiness" or "liveness"
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Requests counts an instance's HTTP requests: all of them, and those that failed (answered
// 500 or above, or whose handler panicked).
type Requests struct {
	Total  int64 `json:"total"`
	Failed int64 `json:"failed"`
}

// Add returns the sum of r and o, to sum requests over instances.
func (r Requests) Add(o Requests) Requests {
	return Requests{Total: r.Total + o.Total, Failed: r.Failed + o.Failed}
}

// Availability is the share of the requests that did not fail, from 0 to 1 (request-based
// availability); NaN when there were none.
func (r Requests) Availability() float64 {
	if r.Total <= 0 {
		return math.NaN()
	}
	return float64(r.Total-r.Failed) / float64(r.Total)
}

// String is the availability with the counts it is over, as `twice status` and the
// dashboard show it: "99.50% of 200 (1 failed)", or "no requests".
func (r Requests) String() string {
	if r.Total <= 0 {
		return "no requests"
	}
	return fmt.Sprintf("%.2f%% of %d (%d failed)", 100*r.Availability(), r.Total, r.Failed)
}

// Failing returns the names of the checks that failed.
func (r *Report) Failing() []string {
	if r == nil {
		return nil
	}
	var names []string
	for _, c := range r.Checks {
		if !c.OK {
			names = append(names, c.Name)
		}
	}
	return names
}

// Bounds of a report, which every heartbeat writes: a check's error can be as long as its
// author made it.
const (
	// MaxReportChecks is how many checks a report carries; the others are left out.
	MaxReportChecks = 32
	// MaxReportError is how many bytes of a check's error a report carries.
	MaxReportError = 200
)

// encodeReport returns r as the heartbeat writes it, within the bounds above.
func encodeReport(r Report) (string, error) {
	if len(r.Checks) > MaxReportChecks {
		r.Checks = r.Checks[:MaxReportChecks]
	}
	checks := make([]Check, len(r.Checks))
	for i, c := range r.Checks {
		c.Name, c.Error = cut(c.Name, MaxReportError), cut(c.Error, MaxReportError)
		checks[i] = c
	}
	r.Checks = checks
	b, err := json.Marshal(r)
	return string(b), err
}

// cut shortens s to at most n bytes, on a rune boundary, marking the cut with "…".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	end := n - len("…")
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + "…"
}

// decodeReport reads a report as List finds it: nil for NULL, and for what it cannot read
// (written by another version), which it leaves out rather than fail the list.
func decodeReport(raw *string, heartbeatAge time.Duration) *Report {
	if raw == nil {
		return nil
	}
	var r Report
	if err := json.Unmarshal([]byte(*raw), &r); err != nil {
		return nil
	}
	if len(r.Checks) > 0 {
		r.ChecksAge += heartbeatAge
	}
	return &r
}
