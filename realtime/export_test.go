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
