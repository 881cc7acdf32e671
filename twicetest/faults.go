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
