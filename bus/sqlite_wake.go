//go:build unix

package bus

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/twicehq/twice/internal/loop"
)

// maxSocketPath is the longest socket path used as it is: sun_path holds 104 bytes on
// macOS and the BSDs and 108 on Linux, its terminating zero included. A longer one is
// reached through a short link (see [shortDir]).
const maxSocketPath = 100

// sockWaker wakes the pollers of the other instances of a service on this host: all of them
// share the SQLite file, so they share the directory beside it (<file>.bus, mode 0700),
// where each bus binds a Unix datagram socket named by its service's hash and a random
// part. After signal rows commit, announce sends one byte to every other socket of the
// service; the receiver only looks at the table, so the byte is a hint that any local
// process able to write the directory could forge, at the cost of one look.
//
// An announcement sends one datagram to each other instance, a system call each: cheap for
// the tens of instances a SQLite file serves (Publish announces once per batch, not per
// message); hundreds would want something less than all-to-all.
type sockWaker struct {
	dir    string // where the sockets live, as read and cleaned
	via    string // the directory the socket paths are built on: dir or a short link to it
	prefix string // the service's part of a socket name
	name   string // this bus's socket
	conn   *net.UnixConn
	raw    syscall.RawConn
	log    *slog.Logger
	reader *loop.Loop
}

// newWaker binds this bus's socket beside dbPath. An error leaves the bus to poll at its
// fast pace.
func newWaker(dbPath, service string, log *slog.Logger) (waker, error) {
	abs, err := filepath.Abs(dbPath + ".bus")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, err
	}
	w := &sockWaker{dir: abs, via: abs, prefix: socketPrefix(service), log: log}
	random := make([]byte, 6)
	_, _ = rand.Read(random)
	w.name = w.prefix + hex.EncodeToString(random)
	if len(w.sockPath(w.name)) > maxSocketPath {
		if w.via, err = shortDir(abs); err != nil {
			return nil, err
		}
		if len(w.sockPath(w.name)) > maxSocketPath {
			return nil, fmt.Errorf("the socket path %s is too long even through %s", filepath.Join(abs, w.name), w.via)
		}
	}
	w.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: w.sockPath(w.name), Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	if w.raw, err = w.conn.SyscallConn(); err != nil {
		w.conn.Close()
		os.Remove(filepath.Join(w.dir, w.name))
		return nil, err
	}
	return w, nil
}

// start reads the socket from now on, calling kick on every datagram.
func (w *sockWaker) start(kick func()) { w.reader = loop.Start(w.read(kick)) }

// socketPrefix begins the names of service's sockets, so services sharing a file do not
// wake each other.
func socketPrefix(service string) string {
	sum := sha256.Sum256([]byte(service))
	return hex.EncodeToString(sum[:4]) + "."
}

func (w *sockWaker) sockPath(name string) string { return w.via + "/" + name }

// shortDir returns a short path to dir: a symbolic link in the temporary directory named by
// dir's hash. The sockets stay in dir itself, so processes whose temporary directories
// differ (containers sharing the database's volume) still find each other. A link that
// exists is used only if it is this user's and points to dir.
func shortDir(dir string) (string, error) {
	sum := sha256.Sum256([]byte(dir))
	link := filepath.Join(os.TempDir(), "twice-bus-"+hex.EncodeToString(sum[:8]))
	err := os.Symlink(dir, link)
	if err == nil || !errors.Is(err, os.ErrExist) {
		return link, err
	}
	info, err := os.Lstat(link)
	if err != nil {
		return "", err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if target, _ := os.Readlink(link); info.Mode()&os.ModeSymlink == 0 || !ok || int(st.Uid) != os.Getuid() || target != dir {
		return "", fmt.Errorf("%s is in the way: not this user's link to %s", link, dir)
	}
	return link, nil
}

// read waits for a datagram and kicks the poller. Many datagrams before the poller runs
// make one look: kicks merge.
func (w *sockWaker) read(kick func()) loop.Step {
	buf := make([]byte, 16)
	var retry loop.Backoff
	return func(ctx context.Context) time.Duration {
		if _, err := w.conn.Read(buf); err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return loop.Forever
			}
			w.log.Warn("bus: reading wake-ups failed; the poll goes on", "err", err)
			return retry.Next()
		}
		retry.Reset()
		kick()
		return 0
	}
}

// announce wakes every other bus of the service on this host. The directory is read each
// time, so an instance started a moment ago is woken too.
func (w *sockWaker) announce() {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		w.log.Debug("bus: cannot list the instances to wake; they will poll", "dir", w.dir, "err", err)
		return
	}
	relinked := false
	for _, e := range entries {
		name := e.Name()
		if name == w.name || !strings.HasPrefix(name, w.prefix) || e.Type()&os.ModeSocket == 0 {
			continue
		}
		err := w.send(name)
		if errors.Is(err, syscall.ENOENT) && w.via != w.dir && !relinked {
			// The short link may be gone (a cleaner of the temporary directory): make it
			// again, once per announcement.
			relinked = true
			if _, lerr := shortDir(w.dir); lerr == nil {
				err = w.send(name)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, syscall.ECONNREFUSED):
			// Nobody is bound to it: its process died without closing (SIGKILL).
			os.Remove(filepath.Join(w.dir, name))
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.ENOENT):
			// Its queue is full, so it has wake-ups to read already; or it just closed.
		default:
			w.log.Debug("bus: cannot wake an instance; it will poll", "socket", name, "err", err)
		}
	}
}

// send writes one byte to the socket name without waiting: Go would otherwise park the
// sender until a full queue drains, and a stopped process never drains its queue.
func (w *sockWaker) send(name string) error {
	var serr error
	to := &syscall.SockaddrUnix{Name: w.sockPath(name)}
	if err := w.raw.Write(func(fd uintptr) bool {
		serr = syscall.Sendto(int(fd), []byte{1}, 0, to)
		return true
	}); err != nil {
		return err
	}
	return serr
}

func (w *sockWaker) close() {
	w.conn.Close() // ends the read under way, which Stop alone would not
	if w.reader != nil {
		w.reader.Stop()
	}
	os.Remove(filepath.Join(w.dir, w.name))
}
