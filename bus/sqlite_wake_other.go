//go:build !unix

package bus

import "log/slog"

// newWaker returns no waker: without Unix sockets, the SQLite bus polls at its fast pace.
func newWaker(string, string, *slog.Logger) (waker, error) { return nil, nil }
