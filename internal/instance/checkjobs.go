package instance

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// The checker's jobs and cron: every instance enqueues CheckJobs and works them, recording
// each start in CheckJobRuns; the schedule CheckSchedule fires CheckTick every second,
// recording each run in CheckTickRuns.
const (
	CheckSchedule  = "check-tick"
	checkJobMaxRun = 30 * time.Millisecond
)

// CheckJob is the job the checker's instances enqueue and work.
type CheckJob struct {
	From string `json:"from"`
}

// Kind implements jobs.Args.
func (CheckJob) Kind() string { return "check-job" }

// CheckTick is the job of the checker's one-second schedule.
type CheckTick struct{}

// Kind implements jobs.Args.
func (CheckTick) Kind() string { return "check-tick" }

// startCheckJobs registers the workers and the schedule, and enqueues a job every few
// tens of milliseconds until enqueueing ends.
func startCheckJobs(ctx, enqueueing context.Context, node *twice.Node) error {
	s := node.Store()
	record := "INSERT INTO " + CheckJobRuns + " (service, job_id, attempt, instance, claimed, started) VALUES ($1, $2, $3, $4, $5, $6)"
	err := jobs.Register(node.Jobs(), jobs.WorkFunc[CheckJob](func(ctx context.Context, job *jobs.Job[CheckJob]) error {
		// The run is recorded when it starts, on its own: a job that runs twice shows twice.
		// claimed is when this instance took the job (database time: this machine's clock).
		if _, err := s.Exec(ctx, record, node.Service(), job.ID, job.Attempt, node.ID(), job.AttemptedAt.UnixNano(), time.Now().UnixNano()); err != nil {
			return err
		}
		sleep(ctx, time.Duration(rand.Int64N(int64(checkJobMaxRun))))
		return ctx.Err()
	}))
	if err != nil {
		return err
	}
	err = jobs.Register(node.Jobs(), jobs.WorkFunc[CheckTick](func(ctx context.Context, job *jobs.Job[CheckTick]) error {
		_, err := s.Exec(ctx, "INSERT INTO "+CheckTickRuns+" (service, tick, job_id, attempt, instance, claimed, started) VALUES ($1, $2, $3, $4, $5, $6, $7)",
			node.Service(), job.Meta["tick"], job.ID, job.Attempt, node.ID(), job.AttemptedAt.UnixNano(), time.Now().UnixNano())
		return err
	}))
	if err != nil {
		return err
	}
	if err := node.Cron().Add(CheckSchedule, "@every 1s", CheckTick{}, &cron.Opts{CatchUp: cron.CatchUpAll}); err != nil {
		return err
	}
	go func() {
		for i := 0; enqueueing.Err() == nil; i++ {
			if i%2 == 0 {
				_, _ = node.Jobs().Enqueue(enqueueing, CheckJob{From: node.ID()}, nil)
			} else {
				_ = s.InTx(enqueueing, func(tx store.Tx) error {
					_, err := node.Jobs().EnqueueTx(enqueueing, tx, CheckJob{From: node.ID()}, nil)
					return err
				})
			}
			sleep(enqueueing, opPeriod)
		}
	}()
	return nil
}
