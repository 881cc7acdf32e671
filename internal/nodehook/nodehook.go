// Package nodehook lets twicetest inject faults into a node of the twice package without
// the Node's API offering them to every caller. The twice package sets the hooks when it
// is initialised; nothing else may.
package nodehook

// StopHeartbeats stops the heartbeats of node (a *twice.Node) until resume is called: see
// cluster.Membership.Suspend.
var StopHeartbeats func(node any) (resume func())

// CutBus stops node (a *twice.Node) from hearing the bus until restore is called: see
// bus.Cuttable.Cut.
var CutBus func(node any) (restore func())

// Crash stops node (a *twice.Node) as a crash of its process would, and reports whether it
// did: false if the node was closed already.
var Crash func(node any) (crashed bool)
