// Package nodehook lets twicetest inject faults into a node of the twice package, and
// package metrics read it without starting its blocks, without the Node's API offering
// either to every caller. The twice package sets the hooks when it is initialised; nothing
// else may.
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

// Blocks returns the building blocks of node (a *twice.Node) that the application has
// used (started) and those it has not, without starting any, for package metrics, which
// reads their counters and must not start a block by looking at it.
var Blocks func(node any) (started, unused []any)

// LostSignals counts the Lost messages node's bus delivered: see bus.Cuttable.LostSignals.
var LostSignals func(node any) uint64
