package instance

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/internal/loop"
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

// CheckJobs is the workload "check-jobs" (see [CheckWorkloads]). It also reports every
// heartbeat stall past dead-after: the cluster may have counted the instance dead and
// rescued its jobs, so the checker judges a stall like a fault for duplicate runs. A stall
// is reported twice: as "stalling" once the last heartbeat is dead-after old (an instance
// killed before its heartbeats land again reports only that), and as "stall" when they
// land again, with the same From.
type CheckJobs struct{}

// Name implements Workload.
func (CheckJobs) Name() string { return "check-jobs" }

func (CheckJobs) start(ctx context.Context, in *env) (func(), error) {
	node := in.node
	s := node.Store()
	node.OnHeartbeatStall(func(from, to time.Time) {
		in.emit(Event{Event: "stall", From: from.UnixNano(), T: to.UnixNano()})
	})
	record := "INSERT INTO " + CheckJobRuns + " (service, job_id, attempt, instance, claimed, started) VALUES ($1, $2, $3, $4, $5, $6)"
	err := jobs.Register(node.Jobs(), jobs.WorkFunc[CheckJob](func(ctx context.Context, job *jobs.Job[CheckJob]) error {
		// The run is recorded when it starts, on its own: a job that runs twice shows twice.
		// claimed is when this instance took the job (database time: this machine's clock).
		if _, err := s.Exec(ctx, record, node.Service(), job.ID, job.Attempt, node.ID(), job.AttemptedAt.UnixNano(), time.Now().UnixNano()); err != nil {
			return err
		}
		loop.Sleep(ctx, time.Duration(rand.Int64N(int64(checkJobMaxRun))))
		return ctx.Err()
	}))
	if err != nil {
		return nil, err
	}
	err = jobs.Register(node.Jobs(), jobs.WorkFunc[CheckTick](func(ctx context.Context, job *jobs.Job[CheckTick]) error {
		_, err := s.Exec(ctx, "INSERT INTO "+CheckTickRuns+" (service, tick, job_id, attempt, instance, claimed, started) VALUES ($1, $2, $3, $4, $5, $6, $7)",
			node.Service(), job.Meta["tick"], job.ID, job.Attempt, node.ID(), job.AttemptedAt.UnixNano(), time.Now().UnixNano())
		return err
	}))
	if err != nil {
		return nil, err
	}
	if err := node.Cron().Add(CheckSchedule, "@every 1s", CheckTick{}, &cron.Opts{CatchUp: cron.CatchUpAll}); err != nil {
		return nil, err
	}
	l := newLoops(ctx)
	deadAfter := node.Config().DeadAfter
	l.wg.Go(func() {
		var reported time.Time
		for l.ctx.Err() == nil {
			if last := node.LastHeartbeat(); !last.IsZero() && !last.Equal(reported) && time.Since(last) >= deadAfter {
				reported = last
				in.emit(Event{Event: "stalling", From: last.Add(deadAfter).UnixNano()})
			}
			loop.Sleep(l.ctx, deadAfter/8)
		}
	})
	enqueueing := in.writing
	l.wg.Go(func() {
		for i := 0; enqueueing.Err() == nil; i++ {
			if i%2 == 0 {
				_, _ = node.Jobs().Enqueue(enqueueing, CheckJob{From: node.ID()}, nil)
			} else {
				_ = s.InTx(enqueueing, func(tx store.Tx) error {
					_, err := node.Jobs().EnqueueTx(enqueueing, tx, CheckJob{From: node.ID()}, nil)
					return err
				})
			}
			loop.Sleep(enqueueing, opPeriod)
		}
	})
	return l.stop, nil
}
