//go:build unix

package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/twicehq/twice/internal/loop"
)

// fileLiveness holds the lock as an exclusive flock on a file named by its key, in a
// directory beside the database file: every instance of a SQLite store runs on this host.
// The kernel drops the lock when the process dies. A flock belongs to an open file, not to
// a process, so two nodes of one process exclude each other as two processes do.
type fileLiveness struct {
	dir     string
	own     *os.File
	watched *os.File // the successor's file, while it is watched
	key     int64    // the watched file's key
}

func newFileLiveness(dbPath string) livenessBackend {
	return &fileLiveness{dir: dbPath + ".live"}
}

func (f *fileLiveness) path(key int64) string {
	return filepath.Join(f.dir, strconv.FormatInt(key, 10))
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
		if err != nil || !info.Mode().IsRegular() || time.Since(info.ModTime()) < staleAfter {
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

// watch tries the successor's lock every livenessPoll: a system call, no database statement.
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
		if !loop.Sleep(ctx, livenessPoll) {
			return false, ctx.Err()
		}
	}
}

func (f *fileLiveness) idle(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (f *fileLiveness) forget(_ context.Context, key int64) {
	os.Remove(f.path(key))
	if f.key == key {
		f.dropWatched()
	}
}

func (f *fileLiveness) dropWatched() {
	if f.watched != nil {
		f.watched.Close()
		f.watched, f.key = nil, 0
	}
}

func (f *fileLiveness) close() {
	f.dropWatched()
	if f.own != nil {
		os.Remove(f.own.Name())
		f.own.Close() // and with it the lock
		f.own = nil
	}
}
