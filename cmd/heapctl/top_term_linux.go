package main

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// term is a terminal set up for the live view: keys one at a time without
// echo, the alternate screen, no cursor. restore undoes all of it.
type term struct {
	in, out *os.File
	saved   *unix.Termios // nil when in is not a terminal
	keys    chan byte     // nil when in is not a terminal
	resize  chan os.Signal
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

func openTerm(in, out *os.File) (*term, error) {
	t := &term{in: in, out: out, resize: make(chan os.Signal, 1), stop: make(chan struct{})}
	if in != nil && isTerminal(in) {
		fd := int(in.Fd())
		saved, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			return nil, os.NewSyscallError("tcgetattr", err)
		}
		raw := *saved
		// Keys arrive one by one and are not echoed. ISIG stays, so ^C
		// interrupts as everywhere else; ^Z is disabled, since a stopped
		// top would leave the shell on the alternate screen.
		raw.Lflag &^= unix.ICANON | unix.ECHO
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		raw.Cc[unix.VSUSP] = 0 // _POSIX_VDISABLE
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
			return nil, os.NewSyscallError("tcsetattr", err)
		}
		t.saved = saved
		t.keys = make(chan byte, 16)
		t.wg.Add(1)
		go t.readKeys(fd)
	}
	signal.Notify(t.resize, syscall.SIGWINCH)
	_, _ = out.WriteString(escAltScreen + escHideCur)
	return t, nil
}

// readKeys sends key presses to t.keys until stop or end of file. It polls
// so that restore can stop it without a key press.
func (t *term) readKeys(fd int) {
	defer t.wg.Done()
	defer close(t.keys)
	buf := make([]byte, 64)
	for {
		select {
		case <-t.stop:
			return
		default:
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 100)
		if errors.Is(err, unix.EINTR) || n == 0 {
			continue
		}
		if err != nil {
			return
		}
		n, err = unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil || n == 0 {
			return
		}
		for _, k := range buf[:n] {
			select {
			case t.keys <- k:
			case <-t.stop:
				return
			}
		}
	}
}

// size returns the terminal's columns and rows (80×24 when unknown).
func (t *term) size() (cols, rows int) {
	ws, err := unix.IoctlGetWinsize(int(t.out.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 || ws.Row == 0 {
		return 80, 24
	}
	return int(ws.Col), int(ws.Row)
}

// restore stops the key reader and puts the terminal back as it was.
// Idempotent.
func (t *term) restore() {
	t.once.Do(func() {
		close(t.stop)
		t.wg.Wait()
		signal.Stop(t.resize)
		_, _ = t.out.WriteString(escShowCur + escMainScr)
		if t.saved != nil {
			_ = unix.IoctlSetTermios(int(t.in.Fd()), unix.TCSETS, t.saved)
		}
	})
}
