package instance

import (
	"context"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/jobs"
)

// Jobs is the workload "jobs": the instance works CrashJobs and, with Cron, fires the
// schedule "tick", reporting each start.
type Jobs struct {
	// Concurrency is the default queue's concurrency on the instance. Defaults to 100.
	Concurrency int `json:"concurrency,omitempty"`
	// JobDuration is how long each job sleeps. Defaults to 0.
	JobDuration time.Duration `json:"job_duration,omitempty"`
	// RescueInterval overrides the jobs default.
	RescueInterval time.Duration `json:"rescue_interval,omitempty"`
	// Report makes every job start print a "job" event; off for benchmarks.
	Report bool `json:"report,omitempty"`
	// Cron, if set, declares the schedule "tick" with this expression; each tick's job
	// prints a "tick" event.
	Cron string `json:"cron,omitempty"`
	// CatchUp and Grace configure the schedule.
	CatchUp cron.CatchUp  `json:"catch_up,omitempty"`
	Grace   time.Duration `json:"grace,omitempty"`
}

// Name implements Workload.
func (Jobs) Name() string { return "jobs" }

// CrashJob is the job a [Jobs] workload runs.
type CrashJob struct {
	N int `json:"n"`
}

// Kind implements jobs.Args.
func (CrashJob) Kind() string { return "crash" }

// CronTick is the job of the "tick" schedule.
type CronTick struct{}

// Kind implements jobs.Args.
func (CronTick) Kind() string { return "cron-tick" }

func (w Jobs) configure(cfg *twice.Config) {
	cfg.Jobs = jobs.Config{Queues: []jobs.QueueConfig{{Name: jobs.DefaultQueue, Concurrency: w.Concurrency}},
		RescueInterval: w.RescueInterval}
}

func (w Jobs) start(_ context.Context, in *env) (func(), error) {
	node := in.node
	err := jobs.Register(node.Jobs(), jobs.WorkFunc[CrashJob](func(ctx context.Context, job *jobs.Job[CrashJob]) error {
		if w.Report {
			in.emit(Event{Event: "job", Job: job.ID, Attempt: job.Attempt})
		}
		if w.JobDuration > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(w.JobDuration):
			}
		}
		return nil
	}))
	if err != nil || w.Cron == "" {
		return func() {}, err
	}
	err = jobs.Register(node.Jobs(), jobs.WorkFunc[CronTick](func(ctx context.Context, job *jobs.Job[CronTick]) error {
		in.emit(Event{Event: "tick", Job: job.ID, Attempt: job.Attempt, Tick: job.Meta["tick"]})
		return nil
	}))
	if err != nil {
		return nil, err
	}
	return func() {}, node.Cron().Add("tick", w.Cron, CronTick{}, &cron.Opts{CatchUp: w.CatchUp, Grace: w.Grace})
}
