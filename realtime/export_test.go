package realtime

import (
	"context"

	"github.com/twicehq/twice/store"
)

// PublishQuiet stores msg in room's history and sends no hint, as if the hint were lost.
func PublishQuiet(ctx context.Context, h *Hub, room string, msg any) (Position, error) {
	data, err := encode(msg)
	if err != nil {
		return Position{}, err
	}
	var pos Position
	err = h.st.InTx(ctx, func(tx store.Tx) error {
		pos, err = h.store(ctx, tx, roomKey(room), data)
		return err
	})
	return pos, err
}

// FailedReads is how many reads of the history h's fetcher saw fail.
func FailedReads(h *Hub) int64 { return h.failedReads.Load() }

// Reads is how many reads of the history h's fetcher made.
func Reads(h *Hub) int64 { return h.reads.Load() }
