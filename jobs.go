package twice

import (
	"context"

	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/jobs"
)

// startJobs starts the job queue and cron on the node: workers fetch once registered, the
// every instance rescues the jobs of dead ones, the leader prunes and fires schedules, and
// Close drains both (cron first).
func (n *Node) startJobs(ctx context.Context) error {
	jc := n.cfg.Jobs
	jc.Service, jc.Instance, jc.Bus, jc.Logger, jc.Panics = n.cfg.Name, n.cfg.InstanceID, n.bus, n.log, &n.panics
	var err error
	if n.jobs, err = jobs.New(n.store, jc); err != nil {
		return err
	}
	if err := n.jobs.Start(ctx); err != nil {
		return err
	}
	n.onClose(n.jobs.Stop)
	n.leader.OnElected(n.jobs.Maintain)

	cc := n.cfg.Cron
	cc.Service, cc.Instance, cc.Logger = n.cfg.Name, n.cfg.InstanceID, n.log
	if n.cron, err = cron.New(n.store, n.jobs, cc); err != nil {
		return err
	}
	n.cron.Start()
	n.onClose(n.cron.Stop)
	n.leader.OnElected(n.cron.Lead)
	return nil
}

// Jobs is the service's job queue: enqueue (also inside your own transaction), register
// workers with [jobs.Register], administer.
func (n *Node) Jobs() *jobs.Client { return n.jobs }

// Cron is the service's schedules: each tick fires exactly once across all instances.
func (n *Node) Cron() *cron.Cron { return n.cron }
