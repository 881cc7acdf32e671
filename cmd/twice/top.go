package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/store"
)

// topCmd shows the cluster page of a service in the terminal, read again every --every:
// its instances, leader, locks and partition sets (as `twice status`), then its queues
// with their lag (as `twice queues list`). Each frame is one reading, the same few
// statements whoever else watches.
func topCmd(ctx context.Context, args []string, stdout io.Writer) error {
	var a adminFlags
	fs := flag.NewFlagSet("top", flag.ContinueOnError)
	a.register(fs)
	every := fs.Duration("every", 2*time.Second, "read the cluster again this often (at least 100ms)")
	frames := fs.Int("count", 0, "frames to show before exiting; 0 shows them until interrupted")
	if _, err := parseN(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	switch {
	case *every < 100*time.Millisecond:
		return fmt.Errorf("%w: --every %s is shorter than 100ms", errUsage, *every)
	case *frames < 0:
		return fmt.Errorf("%w: --count %d is negative", errUsage, *frames)
	}
	return withClient(ctx, &a, func(c *jobs.Client, s *store.Store, service string) error {
		redraw := terminal(stdout) && !a.asJSON
		t := time.NewTicker(*every)
		defer t.Stop()
		for i := 0; *frames == 0 || i < *frames; i++ {
			if i > 0 {
				select {
				case <-ctx.Done():
					return nil // Ctrl-C ends the view, not in error
				case <-t.C:
				}
			}
			f, err := readFrame(ctx, c, s, service)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			if a.asJSON {
				if err != nil {
					return err
				}
				if err := printJSON(stdout, f); err != nil {
					return err
				}
				continue
			}
			var b bytes.Buffer
			if redraw {
				b.WriteString("\x1b[H\x1b[2J") // home, clear: the frame replaces the last
			} else if i > 0 {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "twice top: %s, %s, every %s (Ctrl-C to quit)\n\n", service, f.At.Format(time.TimeOnly), *every)
			if err != nil {
				// A database that does not answer is what the operator needs to see; the
				// next frame tries again.
				fmt.Fprintf(&b, "cannot read the cluster: %v\n", err)
			} else {
				printStatus(&b, s.String(), f.Services)
				fmt.Fprintln(&b)
				printStats(&b, service, f.Queues)
			}
			if _, err := stdout.Write(b.Bytes()); err != nil {
				return err
			}
		}
		return nil
	})
}

// frame is one reading of the cluster.
type frame struct {
	At       time.Time             `json:"at"`
	Services []twice.ServiceStatus `json:"services"`
	Queues   []jobs.QueueStats     `json:"queues"`
}

func readFrame(ctx context.Context, c *jobs.Client, s *store.Store, service string) (frame, error) {
	f := frame{At: time.Now()}
	var err error
	if f.Services, err = twice.Status(ctx, s, service); err != nil {
		return f, err
	}
	f.Queues, err = c.Stats(ctx)
	return f, err
}

// terminal reports whether w is a terminal, where a frame redraws the screen; elsewhere
// (a pipe, a file, a test) frames follow one another.
func terminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
