package run

import (
	"context"
	"os"

	"golang.org/x/sys/unix"
)

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), ioctlGetTermios)
	return err == nil
}

// TerminalWidth is the width of the terminal f, or 0 when it is not one.
func TerminalWidth(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}

// ReadKeys calls key with each key pressed on the terminal f, without waiting for Enter and
// without echo, until ctx ends; Ctrl-C still interrupts. It restores the terminal before it
// returns, and returns at once when f is not a terminal.
func ReadKeys(ctx context.Context, f *os.File, key func(byte)) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		return
	}
	if fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err != nil || fg != unix.Getpgrp() {
		return // in the background: changing the terminal would stop the process (SIGTTOU)
	}
	raw := *old
	raw.Lflag &^= unix.ICANON | unix.ECHO
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 0, 1 // a read returns after a tenth of a second at most
	if err := unix.IoctlSetTermios(fd, ioctlSetTermios, &raw); err != nil {
		return
	}
	defer unix.IoctlSetTermios(fd, ioctlSetTermios, old)
	buf := make([]byte, 16)
	for ctx.Err() == nil {
		n, err := unix.Read(fd, buf)
		if err != nil && err != unix.EINTR && err != unix.EAGAIN {
			return
		}
		for _, b := range buf[:max(n, 0)] {
			key(b)
		}
	}
}
