//go:build !unix

package cluster

// newFileLiveness returns nil: without flock, a SQLite instance runs on heartbeats alone.
func newFileLiveness(string) livenessBackend { return nil }
