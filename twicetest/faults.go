package twicetest

import (
	"testing"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/nodehook"
)

// StopHeartbeats stops n's heartbeats until the returned resume is called, or until t
// ends: the other nodes count n dead after Config.DeadAfter and rescue the jobs it runs,
// which run again elsewhere while n's workers go on (a job runs at least once), as when an
// instance's heartbeats fail and nothing else does. Its leases are renewed on their own,
// so it keeps leading if it led. After resume it heartbeats again, registering anew if its
// row was reaped, and reports the stall to Node.OnHeartbeatStall.
func StopHeartbeats(t testing.TB, n *twice.Node) (resume func()) {
	t.Helper()
	resume = nodehook.StopHeartbeats(n)
	t.Cleanup(resume)
	return resume
}

// CutBus stops n from hearing the bus until the returned restore is called, or until t
// ends, as when its PostgreSQL LISTEN connection or NATS subscription drops: its
// subscribers are told the signals were lost, it hears none of the others' signals, and
// its building blocks fall back to their own polls (Config.Jobs.Poll and the like, instead
// of Config.Backstop), so it still sees every change, later. What it publishes still
// reaches the others. Restoring tells its subscribers Lost again, so they look at once.
func CutBus(t testing.TB, n *twice.Node) (restore func()) {
	t.Helper()
	restore = nodehook.CutBus(n)
	t.Cleanup(restore)
	return restore
}

// Crash stops n as a crash of its process would, inside the test's process, as `twice
// check` does to an instance with SIGKILL: every loop and goroutine of n ends and its
// connections to the database close, but it hands nothing over. The contexts of its running
// jobs are cancelled and what they return is dropped; its leases, leadership included,
// stay held; its membership row stays as it was (it neither drains nor leaves); and so do
// the idempotency claims, event partitions and progress it held. The other nodes take over
// as after a real crash: they count n dead at once, since its liveness lock goes with it
// (with Config.NoLivenessLock, once its last heartbeat is Config.DeadAfter old), free its
// leases so that one of them leads if n led (with NoLivenessLock, once they expire after
// Config.LeaseTTL), and rescue its jobs, which run again on a node that works their queue
// (the attempt n was running counts). n is of no use afterwards: closing it, as Open's
// cleanup does, does nothing. Crash fails t if n was closed already.
func Crash(t testing.TB, n *twice.Node) {
	t.Helper()
	if !nodehook.Crash(n) {
		t.Fatalf("twicetest: Crash: node %s is closed already", n.ID())
	}
}
