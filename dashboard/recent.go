package dashboard

import (
	"sync"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cluster"
)

// recentWindow is how far back the cluster page's recent availability looks, at most.
const recentWindow = 5 * time.Minute

// recent is the requests each instance answered between an earlier snapshot and this one:
// the instances report their counts since they started (see cluster.Report), and the
// difference between two snapshots shows what the cumulative figure hides, an outage now.
type recent struct {
	For   time.Duration               // how far back: the age of the earlier snapshot; 0 with none
	ByID  map[string]cluster.Requests // by instance
	Total cluster.Requests            // over the instances
}

// requestHistory keeps the request counts of the snapshots of the last recentWindow, to
// find the recent requests of each new one. It costs no statement: the counts come with
// the members, which every snapshot reads.
type requestHistory struct {
	mu      sync.Mutex      // protects samples
	samples []requestSample // oldest first
}

type requestSample struct {
	at   time.Time
	byID map[string]cluster.Requests
}

// add records the counts of members, read at at, and returns the requests since the
// oldest snapshot kept within recentWindow. An instance that the earlier snapshot did not
// list, or listed with more requests (it is another process under the same id), started
// since: all its requests are recent.
func (h *requestHistory) add(at time.Time, members []twice.Member) recent {
	now := requestSample{at: at, byID: map[string]cluster.Requests{}}
	for _, m := range members {
		if m.Report != nil {
			now.byID[m.ID] = m.Report.Requests
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.samples) > 0 && at.Sub(h.samples[0].at) > recentWindow {
		h.samples = h.samples[1:]
	}
	var r recent
	if len(h.samples) > 0 {
		base := h.samples[0]
		r = recent{For: at.Sub(base.at), ByID: map[string]cluster.Requests{}}
		for id, cur := range now.byID {
			d := cur
			if old, ok := base.byID[id]; ok && old.Total <= cur.Total && old.Failed <= cur.Failed {
				d = cluster.Requests{Total: cur.Total - old.Total, Failed: cur.Failed - old.Failed}
			}
			r.ByID[id] = d
			r.Total = r.Total.Add(d)
		}
	}
	h.samples = append(h.samples, now)
	return r
}
