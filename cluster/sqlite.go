//go:build unix

package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twicehq/twice/internal/loop"
)

// fileLiveness holds the lock as an exclusive flock on a file named by its key, in a
// directory beside the database file: every instance of a SQLite store runs on this host.
// The kernel drops the lock when the process dies. A flock belongs to an open file, not to
// a process, so two nodes of one process exclude each other as two processes do.
//
// Beside its lock file each instance listens on a Unix socket (KEY.s), and its predecessor
// connects to it and waits for the connection to end: the kernel closes a dead process's
// connections at once, so the wait costs no CPU and ends the moment the process is gone.
// The end of a connection is only a hint; the flock says whether the holder is gone. The
// lock is tried once a second besides, and every livenessPoll where there is no socket (a
// path too long for one, or a socket that cannot be made).
type fileLiveness struct {
	dir      string
	own      *os.File
	listener *net.UnixListener // this instance's socket; nil without one
	accepted sync.WaitGroup    // the listener's accept loop
	watched  *os.File          // the successor's file, while it is watched
	key      int64             // the watched file's key
	peer     *net.UnixConn     // a connection to the successor's socket, while it is open
	dialed   bool              // a connection to the watched key was tried
}

// maxSocketPath is the longest socket path used: sun_path holds 108 bytes on Linux and 104
// on the BSDs, with a terminating zero.
const maxSocketPath = 103

// socketBackstop is how often the successor's lock is tried while its socket connection is
// open, in case the connection outlives the process (it does not on any system we know).
var socketBackstop = time.Second // a variable for tests

func newFileLiveness(dbPath string) livenessBackend {
	return &fileLiveness{dir: dbPath + ".live"}
}

func (f *fileLiveness) path(key int64) string {
	return filepath.Join(f.dir, strconv.FormatInt(key, 10))
}

// socketPath is where the holder of key listens.
func (f *fileLiveness) socketPath(key int64) string { return f.path(key) + socketSuffix }

const socketSuffix = ".s"

// listen opens this instance's socket for key, if its path is short enough. Connections are
// accepted and held, never read: they end when this process does (or at close).
func (f *fileLiveness) listen(key int64) {
	path := f.socketPath(key)
	if len(path) > maxSocketPath {
		return
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return
	}
	l.SetUnlinkOnClose(true)
	f.listener = l
	f.accepted.Add(1)
	go func() {
		defer f.accepted.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return // closed
			}
			conns = append(conns, c)
		}
	}()
}

func (f *fileLiveness) hold(_ context.Context, key int64) error {
	f.close()
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	f.sweep()
	file, err := os.OpenFile(f.path(key), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(file.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		file.Close()
		os.Remove(file.Name())
		return fmt.Errorf("liveness lock %s: %w", file.Name(), err)
	}
	f.own = file
	f.listen(key)
	return nil
}

// staleAfter is how old an unlocked file must be before sweep removes it: a file is
// created a moment before its lock is taken, and must not be mistaken for a dead one's.
const staleAfter = time.Minute

// sweep removes the files of processes that died with nobody watching them (the last
// instances of a service, killed together), so the directory does not grow.
func (f *fileLiveness) sweep() {
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < staleAfter {
			continue
		}
		if info.Mode()&os.ModeSocket != 0 {
			// A socket whose lock file is gone was left by a process that died.
			lock := strings.TrimSuffix(e.Name(), socketSuffix)
			if _, err := os.Stat(filepath.Join(f.dir, lock)); errors.Is(err, os.ErrNotExist) {
				os.Remove(filepath.Join(f.dir, e.Name()))
			}
			continue
		}
		if !info.Mode().IsRegular() {
			continue
		}
		file, err := os.OpenFile(filepath.Join(f.dir, e.Name()), os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(int(file.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.Remove(file.Name())
		}
		file.Close()
	}
}

// watch waits for the end of a connection to the successor's socket and then tries its
// lock; without a connection it tries the lock every livenessPoll. System calls only, no
// database statement.
func (f *fileLiveness) watch(ctx context.Context, key int64) (bool, error) {
	if f.watched == nil || f.key != key {
		f.dropWatched()
		file, err := os.OpenFile(f.path(key), os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			return true, nil // gone, and already cleaned up by another watcher
		}
		if err != nil {
			return false, err
		}
		f.watched, f.key = file, key
	}
	for {
		err := syscall.Flock(int(f.watched.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return false, err
		}
		if f.peer == nil && !f.dialed {
			f.dialed = true
			f.peer, _ = net.DialUnix("unix", nil, &net.UnixAddr{Name: f.socketPath(key), Net: "unix"})
			if f.peer == nil {
				// No socket to connect to: none was made (a long path), or its holder
				// went since the lock was tried (close frees the lock before the socket).
				// Try the lock once more before waiting.
				continue
			}
		}
		if f.peer == nil {
			if !loop.Sleep(ctx, livenessPoll) {
				return false, ctx.Err()
			}
			continue
		}
		if ended := waitEnd(ctx, f.peer, socketBackstop); ended {
			// The holder closed it, or died: the lock says which. A holder that lives
			// is connected to again at the next round.
			f.peer.Close()
			f.peer, f.dialed = nil, false
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
	}
}

// waitEnd waits until c ends (true), ctx ends or d passes (false).
func waitEnd(ctx context.Context, c *net.UnixConn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func (f *fileLiveness) idle(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (f *fileLiveness) forget(_ context.Context, key int64) {
	os.Remove(f.path(key))
	os.Remove(f.socketPath(key))
	if f.key == key {
		f.dropWatched()
	}
}

func (f *fileLiveness) dropWatched() {
	if f.peer != nil {
		f.peer.Close()
		f.peer = nil
	}
	f.dialed = false
	if f.watched != nil {
		f.watched.Close()
		f.watched, f.key = nil, 0
	}
}

// close gives up the lock first and the socket after it: a watcher that finds the socket
// gone then finds the lock free (see watch).
func (f *fileLiveness) close() {
	f.dropWatched()
	if f.own != nil {
		os.Remove(f.own.Name())
		f.own.Close() // and with it the lock
		f.own = nil
	}
	if f.listener != nil {
		f.listener.Close() // removes the socket file
		f.accepted.Wait()
		f.listener = nil
	}
}
