package twice

import "github.com/twicehq/twice/internal/nodehook"

// The faults twicetest injects into a node (see package nodehook).
func init() {
	nodehook.StopHeartbeats = func(node any) func() { return node.(*Node).members.Suspend() }
	nodehook.CutBus = func(node any) func() { return node.(*Node).cuttable.Cut() }
	nodehook.Crash = func(node any) bool { return node.(*Node).crash() }
}
