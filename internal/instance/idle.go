package instance

import (
	"context"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/jobs"
)

// Idle is the workload "idle": an instance of a service at rest. It registers a job worker,
// declares an hourly schedule, joins a shared consumer group and reads a setting, as a
// typical service does, then does nothing; every Report it prints an "idle" event with the
// statements its node has run and the CPU its process has used so far. `twice bench idle`
// measures from those what an instance costs when there is nothing to do.
type Idle struct {
	// Report is how often the instance prints its counts. Defaults to 1s.
	Report time.Duration `json:"report,omitempty"`
}

// Name implements Workload.
func (Idle) Name() string { return "idle" }

// IdleJob, IdleTick and IdleTopic are what an [Idle] instance is ready to work, fire and
// consume; nothing produces them.
type (
	IdleJob  struct{}
	IdleTick struct{}
)

// Kind implements jobs.Args.
func (IdleJob) Kind() string { return "idle-job" }

// Kind implements jobs.Args.
func (IdleTick) Kind() string { return "idle-tick" }

// IdleTopic is the topic an [Idle] instance's group consumes.
const IdleTopic = "idle"

// idleStatements counts the statements the node of this process runs. A child runs one
// node, so one counter per process is the node's.
var idleStatements atomic.Int64

type statementCounter struct{}

func (statementCounter) Statement(string) { idleStatements.Add(1) }

func (Idle) configure(cfg *twice.Config) { cfg.Observer = statementCounter{} }

func (w Idle) start(ctx context.Context, in *env) (func(), error) {
	node := in.node
	none := func(context.Context, *jobs.Job[IdleJob]) error { return nil }
	if err := jobs.Register(node.Jobs(), jobs.WorkFunc[IdleJob](none)); err != nil {
		return nil, err
	}
	tick := func(context.Context, *jobs.Job[IdleTick]) error { return nil }
	if err := jobs.Register(node.Jobs(), jobs.WorkFunc[IdleTick](tick)); err != nil {
		return nil, err
	}
	if err := node.Cron().Add("idle-hourly", "@hourly", IdleTick{}, nil); err != nil {
		return nil, err
	}
	if _, err := node.Events().Subscribe(ctx, events.GroupConfig{Name: "idle-group", Topics: []string{IdleTopic},
		Handle: func(context.Context, events.Event) error { return nil }}); err != nil {
		return nil, err
	}
	_ = node.Settings().String("idle.greeting", "hello")

	every := w.Report
	if every <= 0 {
		every = time.Second
	}
	l := loop.Start(func(context.Context) time.Duration {
		in.emit(Event{Event: "idle", Statements: idleStatements.Load(), CPUMicros: cpuMicros()})
		return every
	})
	return l.Stop, nil
}

// cpuMicros is the user and system CPU this process has used, in microseconds.
func cpuMicros() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano()/1000 + ru.Stime.Nano()/1000
}
