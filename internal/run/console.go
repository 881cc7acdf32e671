package run

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// colors are the ANSI colours of the instances' prefixes, by slot; the runner's own lines are
// bold.
var colors = []string{"36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91"}

// console merges every instance's output and the runner's own lines onto one writer, each line
// prefixed with who wrote it, and keeps a status line below them when asked to.
type console struct {
	w     io.Writer
	color bool
	tty   bool

	mu     sync.Mutex // protects writes to w, status, width
	status string     // the status line shown below the last line, "" for none
	width  int        // the terminal's width, to keep the status line on one row

	whoWidth int // the width of the widest prefix, so the lines start in one column
}

func newConsole(w io.Writer, color, statusLine bool, instances int) *console {
	return &console{w: w, color: color, tty: statusLine, width: 80, whoWidth: max(len("twice"), len(fmt.Sprint(instances)))}
}

// line writes one line from who (slot 0 for the runner itself).
func (c *console) line(slot int, who, text string) {
	prefix := fmt.Sprintf("%-*s | ", c.whoWidth, who)
	if c.color {
		code := "1"
		if slot > 0 {
			code = colors[(slot-1)%len(colors)]
		}
		prefix = "\x1b[" + code + "m" + prefix + "\x1b[0m"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tty && c.status != "" {
		io.WriteString(c.w, "\r\x1b[K")
	}
	io.WriteString(c.w, prefix+text+"\n")
	if c.tty && c.status != "" {
		io.WriteString(c.w, c.status)
	}
}

// setStatus replaces the status line.
func (c *console) setStatus(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.tty {
		return
	}
	if rs := []rune(s); c.width > 1 && len(rs) > c.width-1 {
		s = string(rs[:c.width-1])
	}
	c.status = s
	io.WriteString(c.w, "\r\x1b[K"+s)
}

// clearStatus removes the status line for good.
func (c *console) clearStatus() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tty && c.status != "" {
		io.WriteString(c.w, "\r\x1b[K")
	}
	c.status, c.tty = "", false
}

// statusLoop redraws the status line every half second.
func (r *Runner) statusLoop() {
	f, _ := r.cfg.Out.(*os.File)
	for {
		if f != nil {
			if w := TerminalWidth(f); w > 0 {
				r.console.mu.Lock()
				r.console.width = w
				r.console.mu.Unlock()
			}
		}
		r.console.setStatus(r.statusText())
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// statusText is the status line: each instance's state and requests, then the totals.
func (r *Runner) statusText() string {
	var b strings.Builder
	for i, s := range r.Instances() {
		if i > 0 {
			b.WriteString(" · ")
		}
		fmt.Fprintf(&b, "%d %s %d req", s.Slot, s.State, s.Requests)
		if s.Failures > 0 {
			fmt.Fprintf(&b, " %d failed", s.Failures)
		}
	}
	served, failed := r.Totals()
	fmt.Fprintf(&b, " | %d requests, %d failed", served, failed)
	r.mu.Lock()
	if r.rolling {
		b.WriteString(" | rolling restart")
	}
	r.mu.Unlock()
	return b.String()
}
