package instance

import (
	"embed"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/store"
)

// The workloads' own tables, all made by [Component]'s migrations.
const (
	// FenceTable holds the writes of [FencedWriter], each with its leader's token.
	FenceTable = "twice_fence_writes"
	// RegisterTable is the checker's register, which only the leader writes (fenced), and
	// LogTable the log of every fenced write, the leaders' and the lock holders', in commit
	// order ([CheckRegister], [CheckLocks]).
	RegisterTable = "twice_check_register"
	LogTable      = "twice_check_log"
	// EffectsCheckTable records every event the checker's consumer groups handle
	// ([CheckEvents]).
	EffectsCheckTable = "twice_check_effects"
	// CheckCachedTable holds the row the checker's setting and cache converge to
	// ([CheckConverge]).
	CheckCachedTable = "twice_check_cached"
	// CheckPayTable holds the effects of the checker's POST /pay ([CheckHTTP]).
	CheckPayTable = "twice_check_payments"
	// CheckJobRuns and CheckTickRuns record every start of the checker's jobs and of its
	// schedule's ticks ([CheckJobs]).
	CheckJobRuns  = "twice_check_job_runs"
	CheckTickRuns = "twice_check_tick_runs"
	// EffectsTable records every event a [Consume] workload handles, one row per handling,
	// so duplicates and losses show.
	EffectsTable = "twice_event_effects"
	// CrashTable is the one row (id 1) a [CacheWriter] bumps and invalidates.
	CrashTable = "twice_cache_crash"
	// PartitionTable holds the writes of [PartitionWrites], each with its partition and
	// the owner's token.
	PartitionTable = "twice_partition_writes"
	// FlowStartsTable records every step flow started ([StepFlow]), in the transaction
	// that starts it; FlowStepsTable every completed run of a step, in the step's
	// transaction; FlowCompensationsTable each compensation once, in the order they first
	// ran.
	FlowStartsTable        = "twice_flow_starts"
	FlowStepsTable         = "twice_flow_steps"
	FlowCompensationsTable = "twice_flow_compensations"
)

//go:embed migrations
var migrations embed.FS

// Component is the schema of the workloads' tables, migrated like a block's. The tables
// with a service column are removed with the service's other rows; the crash tests' tables
// (EffectsTable, CrashTable) belong to no one service: those tests use a database each.
func Component() store.Component {
	return store.MustLoadComponent("workloads", migrations,
		store.Table{Name: FenceTable, Service: "service"},
		store.Table{Name: RegisterTable, Service: "service"},
		store.Table{Name: LogTable, Service: "service"},
		store.Table{Name: EffectsCheckTable, Service: "service"},
		store.Table{Name: CheckCachedTable, Service: "service"},
		store.Table{Name: CheckPayTable, Service: "service"},
		store.Table{Name: CheckJobRuns, Service: "service"},
		store.Table{Name: CheckTickRuns, Service: "service"},
		store.Table{Name: PartitionTable, Service: "service"},
		store.Table{Name: FlowStartsTable, Service: "service"},
		store.Table{Name: FlowStepsTable, Service: "service"},
		store.Table{Name: FlowCompensationsTable, Service: "service"},
		store.Table{Name: EffectsTable},
		store.Table{Name: CrashTable})
}

// Components are twice's Components and the workloads': what a database the instances run
// on is migrated with.
func Components() []store.Component {
	return append(twice.Components(), Component())
}
