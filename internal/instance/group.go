package instance

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spawner makes the command that starts one instance; the group adds the environment.
type Spawner func() *exec.Cmd

// Self returns a Spawner that runs this executable again with args: the twice command
// passes its hidden "__instance" subcommand, a test binary nothing (its TestMain checks
// [IsChild]).
func Self(args ...string) (Spawner, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return func() *exec.Cmd { return exec.Command(exe, args...) }, nil
}

// Proc is one child process.
type Proc struct {
	Slot int
	ID   string // set once the child reports ready
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and its output is read
}

// Done is closed when the process has exited and its output is read.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Group runs numbered slots of instances and keeps every event they print, in order of
// arrival, for waiting on and for analysis afterwards.
type Group struct {
	spawn  Spawner
	opts   Options
	stderr io.Writer

	// Configure, if set, adjusts the options of the instance started in a slot (to give
	// each its own network path, say). Set it before the first Start.
	Configure func(slot int, o *Options)

	mu      sync.Mutex // protects procs, log, changed
	procs   map[int]*Proc
	log     []Event
	changed chan struct{} // closed and replaced on every new event or exit
}

// NewGroup returns a group that starts instances with spawn and opts; their stderr goes to
// stderr (nil discards it).
func NewGroup(spawn Spawner, opts Options, stderr io.Writer) *Group {
	if stderr == nil {
		stderr = io.Discard
	}
	return &Group{spawn: spawn, opts: opts, stderr: stderr, procs: map[int]*Proc{}, changed: make(chan struct{})}
}

// Start starts an instance in slot (replacing an exited one) and waits until it is ready.
func (g *Group) Start(ctx context.Context, slot int) (*Proc, error) {
	opts := g.opts
	if g.Configure != nil {
		g.Configure(slot, &opts)
	}
	enc, err := json.Marshal(opts)
	if err != nil {
		return nil, err
	}
	cmd := g.spawn()
	cmd.Env = append(os.Environ(), EnvOptions+"="+string(enc))
	tail := &tailWriter{max: 2048}
	cmd.Stderr = io.MultiWriter(g.stderr, tail)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("instance: start slot %d: %w", slot, err)
	}
	p := &Proc{Slot: slot, cmd: cmd, done: make(chan struct{})}
	g.mu.Lock()
	if old := g.procs[slot]; old != nil && !old.Exited() {
		g.mu.Unlock()
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("instance: slot %d is still running", slot)
	}
	g.procs[slot] = p
	from := len(g.log)
	g.mu.Unlock()

	go g.read(p, out)
	ev, _, err := g.WaitFor(ctx, from, func(e Event) bool {
		return e.Proc == slot && (e.Event == "ready" || e.Event == "exited")
	})
	if err != nil {
		return nil, err
	}
	if ev.Event != "ready" {
		// Its stderr says why, which the group may otherwise discard.
		return nil, fmt.Errorf("instance: slot %d exited before it was ready: %s; its last output: %q", slot, ev.Err, tail.String())
	}
	g.mu.Lock()
	p.ID = ev.ID
	g.mu.Unlock()
	return p, nil
}

// read turns the child's stdout into events, then records its exit as an "exited" event.
func (g *Group) read(p *Proc, out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			ev = Event{Event: "error", Err: "unparseable output: " + sc.Text(), T: time.Now().UnixNano()}
		}
		ev.Proc = p.Slot
		g.add(ev)
	}
	err := p.cmd.Wait()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	g.add(Event{Event: "exited", Proc: p.Slot, PID: p.cmd.Process.Pid, T: time.Now().UnixNano(), Err: msg})
	close(p.done)
}

// Record adds an event of the parent's own to the log, as if a child had printed it: what
// an instance running in the parent's process saw, say (its Proc tells them apart).
func (g *Group) Record(ev Event) { g.add(ev) }

func (g *Group) add(ev Event) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.log = append(g.log, ev)
	close(g.changed)
	g.changed = make(chan struct{})
}

// WaitFor returns the first event at or after position from that matches, and its position.
// match runs without the group's lock held, so it may call the group's methods.
func (g *Group) WaitFor(ctx context.Context, from int, match func(Event) bool) (Event, int, error) {
	for {
		g.mu.Lock()
		fresh := append([]Event(nil), g.log[min(from, len(g.log)):]...)
		changed := g.changed
		g.mu.Unlock()
		for i, ev := range fresh {
			if match(ev) {
				return ev, from + i, nil
			}
		}
		from += len(fresh)
		select {
		case <-ctx.Done():
			return Event{}, 0, fmt.Errorf("instance: waiting for an event: %w", ctx.Err())
		case <-changed:
		}
	}
}

// Log returns a copy of every event so far, and the position after the last.
func (g *Group) Log() ([]Event, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Event(nil), g.log...), len(g.log)
}

// Since returns a copy of the events from position from on, and the position after the last.
func (g *Group) Since(from int) ([]Event, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	from = min(from, len(g.log))
	return append([]Event(nil), g.log[from:]...), len(g.log)
}

// Proc returns the process in slot, or nil.
func (g *Group) Proc(slot int) *Proc {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.procs[slot]
}

// SlotOf returns the slot of the live process with instance id, or -1.
func (g *Group) SlotOf(id string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	for slot, p := range g.procs {
		if p.ID == id && !p.Exited() {
			return slot
		}
	}
	return -1
}

// Signal sends sig to the process in slot.
func (g *Group) Signal(slot int, sig syscall.Signal) error {
	p := g.Proc(slot)
	if p == nil {
		return fmt.Errorf("instance: no process in slot %d", slot)
	}
	return p.cmd.Process.Signal(sig)
}

// Kill kills the process in slot with SIGKILL and waits for it to exit.
func (g *Group) Kill(slot int) error {
	p := g.Proc(slot)
	if p == nil {
		return fmt.Errorf("instance: no process in slot %d", slot)
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-p.done
	return nil
}

// Stop asks every process to close gracefully (SIGTERM, and SIGCONT in case it is paused),
// and kills those still running after timeout.
func (g *Group) Stop(timeout time.Duration) {
	g.mu.Lock()
	procs := make([]*Proc, 0, len(g.procs))
	for _, p := range g.procs {
		procs = append(procs, p)
	}
	g.mu.Unlock()
	for _, p := range procs {
		if !p.Exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	deadline := time.After(timeout)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// Leader returns the slot and event of the instance that leads now according to the
// events: the latest "elected" whose process has neither been demoted in that term nor
// exited since. ok is false when nobody leads.
func (g *Group) Leader() (slot int, elected Event, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := len(g.log) - 1; i >= 0; i-- {
		ev := g.log[i]
		if ev.Event != "elected" {
			continue
		}
		for _, later := range g.log[i+1:] {
			if later.Proc == ev.Proc && (later.Event == "exited" || later.Event == "demoted" && later.Token == ev.Token) {
				return 0, Event{}, false
			}
		}
		return ev.Proc, ev, true
	}
	return 0, Event{}, false
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex // protects buf
	max int
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.TrimSpace(string(w.buf))
}
