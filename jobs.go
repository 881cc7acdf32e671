package twice

import (
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/jobs"
)

// Jobs is the service's job queue: enqueue (also inside your own transaction), register
// workers with [jobs.Register], administer. It starts working (fetching, rescuing the jobs
// of dead instances) once a worker is registered; an instance that only enqueues runs no
// loop of it. The leader prunes finished jobs.
func (n *Node) Jobs() *jobs.Client { return n.blocks.jobs.use(n) }

// Cron is the service's schedules: each tick fires exactly once across all instances. The
// leader fires the ticks; every-instance schedules run on each instance that adds them.
func (n *Node) Cron() *cron.Cron { return n.blocks.cron.use(n) }
