package realtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// inFrame is a frame a client sends (see the package doc).
type inFrame struct {
	Type   string          `json:"type"`
	Room   string          `json:"room"`
	Offset *int64          `json:"offset,omitempty"`
	Epoch  string          `json:"epoch,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	ID     string          `json:"id,omitempty"`
}

// outFrame is a frame the hub sends.
type outFrame struct {
	Type      string          `json:"type"`
	Room      string          `json:"room,omitempty"`
	Epoch     string          `json:"epoch,omitempty"`
	Offset    *int64          `json:"offset,omitempty"`
	Recovered *bool           `json:"recovered,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	ID        string          `json:"id,omitempty"`
	User      string          `json:"user,omitempty"`
	Conn      string          `json:"conn,omitempty"`
	Error     string          `json:"error,omitempty"`
}

// maxID is the longest id a client may give a publish.
const maxID = 128

var errFrame = errors.New("realtime: bad frame")

// parseFrame reads and checks a client's frame.
func parseFrame(b []byte) (inFrame, error) {
	var f inFrame
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		return inFrame{}, fmt.Errorf("%w: %w", errFrame, err)
	}
	if d.More() {
		return inFrame{}, fmt.Errorf("%w: more than one JSON value", errFrame)
	}
	if f.Room != UserRoom {
		if err := CheckRoom(f.Room); err != nil {
			return inFrame{}, fmt.Errorf("%w: %w", errFrame, err)
		}
	}
	if len(f.ID) > maxID || !utf8.ValidString(f.ID) {
		return inFrame{}, fmt.Errorf("%w: an id is at most %d bytes of UTF-8", errFrame, maxID)
	}
	switch f.Type {
	case "subscribe":
		if f.Offset != nil && *f.Offset < 0 {
			return inFrame{}, fmt.Errorf("%w: negative offset", errFrame)
		}
		if f.Offset == nil && f.Epoch != "" {
			return inFrame{}, fmt.Errorf("%w: an epoch without an offset", errFrame)
		}
		if len(f.Epoch) > maxID || !utf8.ValidString(f.Epoch) {
			return inFrame{}, fmt.Errorf("%w: bad epoch", errFrame)
		}
	case "unsubscribe":
	case "publish":
		if f.Room == UserRoom {
			return inFrame{}, fmt.Errorf("%w: clients cannot publish to %s", errFrame, UserRoom)
		}
		if len(f.Data) == 0 {
			return inFrame{}, fmt.Errorf("%w: publish without data", errFrame)
		}
		if len(f.Data) > MaxMessage {
			return inFrame{}, fmt.Errorf("%w: %w", errFrame, ErrTooLarge)
		}
	default:
		return inFrame{}, fmt.Errorf("%w: unknown type %q", errFrame, f.Type)
	}
	return f, nil
}

func ptr[T any](v T) *T { return &v }
