// Package rtclient is a Go client of the real-time hub (package realtime) for tests: it
// keeps each room's position as the JavaScript client does, resumes from it when it
// connects again (to any instance), and records every frame, so that a test can count the
// silent gaps and duplicates a client saw.
package rtclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"

	"github.com/coder/websocket"
)

// Frame is a frame the hub sent.
type Frame struct {
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

// Pos is a room's position: the last offset seen, in its epoch; Known is false before the
// first "subscribed".
type Pos struct {
	Offset int64
	Epoch  string
	Known  bool
}

// Client is one client; it holds at most one connection at a time.
type Client struct {
	mu     sync.Mutex // protects the fields below
	ws     *websocket.Conn
	done   chan struct{} // closed when the current connection's reader ends
	rooms  map[string]Pos
	frames []Frame // every frame received, on every connection, in order
	closes int     // connections that ended
}

// New returns a client with no connection.
func New() *Client { return &Client{rooms: map[string]Pos{}} }

// Connect opens a connection to url (ws://…) with header h and subscribes again to every
// room, from its position. A previous connection is dropped first.
func (c *Client) Connect(ctx context.Context, url string, h http.Header) error {
	c.Drop()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return err
	}
	ws.SetReadLimit(1 << 20)
	done := make(chan struct{})
	c.mu.Lock()
	c.ws, c.done = ws, done
	rooms := make([]string, 0, len(c.rooms))
	for r := range c.rooms {
		rooms = append(rooms, r)
	}
	c.mu.Unlock()
	go c.read(ws, done)
	slices.Sort(rooms)
	for _, r := range rooms {
		if err := c.sendSubscribe(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// Subscribe follows room from now on (and from its position after every Connect).
func (c *Client) Subscribe(ctx context.Context, room string) error {
	c.mu.Lock()
	if _, ok := c.rooms[room]; !ok {
		c.rooms[room] = Pos{}
	}
	c.mu.Unlock()
	return c.sendSubscribe(ctx, room)
}

func (c *Client) sendSubscribe(ctx context.Context, room string) error {
	c.mu.Lock()
	p := c.rooms[room]
	c.mu.Unlock()
	f := map[string]any{"type": "subscribe", "room": room}
	if p.Known {
		f["offset"], f["epoch"] = p.Offset, p.Epoch
	}
	return c.Send(ctx, f)
}

// Publish asks the hub to publish data to room.
func (c *Client) Publish(ctx context.Context, room string, data any, id string) error {
	return c.Send(ctx, map[string]any{"type": "publish", "room": room, "data": data, "id": id})
}

// Send sends frame f as JSON.
func (c *Client) Send(ctx context.Context, f any) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return c.SendRaw(ctx, b)
}

// SendRaw sends b as a text frame.
func (c *Client) SendRaw(ctx context.Context, b []byte) error {
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	if ws == nil {
		return fmt.Errorf("rtclient: not connected")
	}
	return ws.Write(ctx, websocket.MessageText, b)
}

func (c *Client) read(ws *websocket.Conn, done chan struct{}) {
	defer close(done)
	for {
		_, b, err := ws.Read(context.Background())
		if err != nil {
			c.mu.Lock()
			c.closes++
			c.mu.Unlock()
			return
		}
		var f Frame
		if json.Unmarshal(b, &f) != nil {
			continue
		}
		c.mu.Lock()
		c.frames = append(c.frames, f)
		if _, ok := c.rooms[f.Room]; ok && f.Offset != nil {
			switch f.Type {
			case "subscribed", "lost", "message":
				c.rooms[f.Room] = Pos{Offset: *f.Offset, Epoch: f.Epoch, Known: true}
			}
		}
		c.mu.Unlock()
	}
}

// Drop ends the current connection without a closing handshake, as a network cut would,
// and waits for its reader.
func (c *Client) Drop() {
	c.mu.Lock()
	ws, done := c.ws, c.done
	c.ws = nil
	c.mu.Unlock()
	if ws != nil {
		_ = ws.CloseNow()
		<-done
	}
}

// Connected reports whether the current connection is still open.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Closes is how many connections ended.
func (c *Client) Closes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closes
}

// Position is room's position.
func (c *Client) Position(room string) Pos {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rooms[room]
}

// Frames returns every frame received.
func (c *Client) Frames() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.frames)
}

// Has reports whether a frame matching fn was received.
func (c *Client) Has(fn func(Frame) bool) bool {
	return slices.ContainsFunc(c.Frames(), fn)
}

// Messages returns the data of room's messages received, in order, as strings.
func (c *Client) Messages(room string) []string {
	var out []string
	for _, f := range c.Frames() {
		if f.Type == "message" && f.Room == room {
			out = append(out, string(f.Data))
		}
	}
	return out
}

// Audit is what [Client.Audit] found in one room's frames.
type Audit struct {
	Messages   int // message frames
	Gaps       int // messages whose offset skips one, with no "lost" or unrecovered "subscribed" before them
	Duplicates int // messages at a position already received
	Lost       int // "lost" frames and "subscribed" with recovered false
}

// Audit checks room's frames: each message must follow the last position in its epoch,
// unless a "lost" frame or an unrecovered "subscribed" said the stream continues
// elsewhere.
func (c *Client) Audit(room string) Audit {
	var a Audit
	var pos Pos
	seen := map[Pos]bool{}
	for _, f := range c.Frames() {
		if f.Room != room || f.Offset == nil {
			continue
		}
		switch f.Type {
		case "subscribed":
			if f.Recovered != nil && !*f.Recovered {
				a.Lost++
				pos = Pos{Offset: *f.Offset, Epoch: f.Epoch, Known: true}
			} else if !pos.Known || f.Recovered == nil {
				pos = Pos{Offset: *f.Offset, Epoch: f.Epoch, Known: true}
			}
		case "lost":
			a.Lost++
			pos = Pos{Offset: *f.Offset, Epoch: f.Epoch, Known: true}
		case "message":
			a.Messages++
			p := Pos{Offset: *f.Offset, Epoch: f.Epoch, Known: true}
			if seen[p] {
				a.Duplicates++
				continue
			}
			seen[p] = true
			if pos.Known && (p.Epoch != pos.Epoch && pos.Epoch != "" || p.Offset != pos.Offset+1) {
				a.Gaps++
			}
			pos = p
		}
	}
	return a
}
