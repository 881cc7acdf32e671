package dashboard

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/health"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/presence"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/settings"
	"github.com/twicehq/twice/workflow"
)

// Sizes of the snapshot's lists.
const (
	recentWorkflows = 50
	deadLetters     = 20
	recentTicks     = 5
)

// snapshot is what every viewer sees: the service read at one moment, a fixed number of
// statements whatever the number of viewers.
type snapshot struct {
	Seq     int64
	At      time.Time
	Service string
	Status  twice.ServiceStatus
	Health  *health.Report // of the local instance; nil without one
	Queues  []jobs.QueueStats
	Flows   []workflow.Summary
	Topics  []events.TopicStats
	Groups  []groupView
	Cron    []cron.Entry
	// Ticks are each schedule's latest ticks with their jobs' states, by schedule.
	Ticks    map[string][]cron.Tick
	Config   []settings.Setting
	Online   presence.Counts
	Sessions session.Counts
	// Recent are the requests since an earlier snapshot, by instance.
	Recent recent
	// Errs are what could not be read, by part; the rest is shown.
	Errs []string
}

// groupView is an event consumer group: its lag per partition, with each partition's
// owner, and its latest dead letters.
type groupView struct {
	events.Lag
	Members     int
	DeadLetters []events.DeadLetter
}

// read reads a snapshot. A part that fails is reported in Errs and left empty.
func (db *Dashboard) read(ctx context.Context, seq int64) *snapshot {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	s := &snapshot{Seq: seq, At: time.Now(), Service: db.t.Service}
	fail := func(part string, err error) {
		if err != nil {
			s.Errs = append(s.Errs, fmt.Sprintf("%s: %v", part, err))
		}
	}
	sts, err := twice.Status(ctx, db.t.Store, db.t.Service)
	fail("cluster", err)
	if len(sts) == 1 {
		s.Status = sts[0]
		s.Recent = db.requests.add(s.At, s.Status.Members)
	}
	if db.t.Health != nil {
		r := db.t.Health.Report(ctx)
		s.Health = &r
	}
	s.Queues, err = db.jobs.Stats(ctx)
	fail("jobs", err)
	s.Flows, err = db.flows.List(ctx, workflow.ListParams{Limit: recentWorkflows})
	fail("workflows", err)
	s.Topics, err = db.events.Topics(ctx)
	fail("topics", err)
	for _, p := range s.Status.Partitions {
		group, ok := strings.CutPrefix(p.Set, events.LeasePrefix)
		if !ok {
			continue
		}
		g := groupView{Members: len(p.Members)}
		g.Lag, err = db.events.Lag(ctx, group)
		fail("events "+group, err)
		// The dashboard's Log holds no leases: the owners come from the status's reading of
		// them, so they cost no statement of their own.
		for i, pl := range g.Lag.Partitions {
			if pl.Owner == "" {
				g.Lag.Partitions[i].Owner = p.Owners[pl.Partition]
			}
		}
		if g.Lag.DeadLetters > 0 {
			g.DeadLetters, err = db.events.DeadLetters(ctx, group, 0, deadLetters)
			fail("dead letters "+group, err)
		}
		g.Group = group
		s.Groups = append(s.Groups, g)
	}
	s.Cron, err = cron.List(ctx, db.t.Store, db.t.Service)
	fail("cron", err)
	s.Ticks = map[string][]cron.Tick{}
	for _, e := range s.Cron {
		s.Ticks[e.Name], err = cron.Recent(ctx, db.jobs, e.Name, e.Kind, recentTicks)
		fail("cron "+e.Name, err)
	}
	s.Config, err = db.settingsList(ctx)
	fail("config", err)
	s.Online, err = db.online(ctx)
	fail("presence", err)
	s.Sessions, err = db.sess.Count(ctx)
	fail("sessions", err)
	return s
}

// online counts who is online: the presence's view is read again only when its revision
// moved since the last snapshot.
func (db *Dashboard) online(ctx context.Context) (presence.Counts, error) {
	if err := db.pres.Refresh(ctx); err != nil {
		return presence.Counts{}, err
	}
	return db.pres.Count(ctx)
}

// settingsList reads the changes to the settings since the last read (the first read
// reads them all) and returns every setting.
func (db *Dashboard) settingsList(ctx context.Context) ([]settings.Setting, error) {
	db.setsMu.Lock()
	defer db.setsMu.Unlock()
	if err := db.sets.Refresh(ctx); err != nil {
		return nil, err
	}
	return db.sets.List(""), nil
}
