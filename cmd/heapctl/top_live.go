package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heapd/heapd/scan"
)

// liveTop runs the live view on a terminal: out must be one; in gives the
// keys when it is one too. The terminal is restored however it ends.
func liveTop(ctx context.Context, in, out *os.File, scanner func(context.Context) (*scan.Snapshot, error), view topView, interval time.Duration) error {
	t, err := openTerm(in, out)
	if err != nil {
		return err
	}
	defer t.restore()
	return runLive(ctx, liveIO{
		out:    out,
		keys:   t.keys,
		resize: t.resize,
		size:   t.size,
	}, scanner, view, interval)
}

// liveIO is what the live view talks to: a terminal, or a test.
type liveIO struct {
	out io.Writer
	// keys delivers key presses; nil when there is no keyboard, closed at
	// its end of file.
	keys <-chan byte
	// resize fires when the terminal changed size.
	resize <-chan os.Signal
	// size returns the terminal's columns and rows.
	size func() (cols, rows int)
}

// Keys of the live view. ^C arrives as a signal (the terminal keeps ISIG);
// 0x03 is there for terminals that send it as a byte anyway.
const (
	keyQuit    = 'q'
	keyProcs   = 'p'
	keyBuffers = 'b'
	keyHeaps   = 'h'
	keyRescan  = ' '
	keyCtrlC   = 0x03
)

// runLive scans every interval and redraws, until q, ^C or ctx ends.
func runLive(ctx context.Context, tio liveIO, scanner func(context.Context) (*scan.Snapshot, error), view topView, interval time.Duration) error {
	var snap *scan.Snapshot
	var scanErr error
	rescan := func() {
		s, err := scanner(ctx)
		switch {
		case err == nil:
			snap, scanErr = s, nil
		case ctx.Err() == nil:
			scanErr = err
		}
	}
	draw := func() error {
		cols, rows := tio.size()
		_, err := tio.out.Write(frame(snap, scanErr, view, tio.keys != nil, cols, rows))
		return err
	}
	rescan()
	if err := draw(); err != nil {
		return err
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	keys := tio.keys
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			rescan()
		case <-tio.resize:
		case k, ok := <-keys:
			if !ok {
				keys = nil // stdin ended: go on until ^C
				continue
			}
			switch k {
			case keyQuit, 'Q', keyCtrlC:
				return nil
			case keyProcs:
				view = viewProcesses
			case keyBuffers:
				view = viewBuffers
			case keyHeaps:
				view = viewHeaps
			case keyRescan, 'r':
				rescan()
			default:
				continue
			}
		}
		if err := draw(); err != nil {
			return err
		}
	}
}

// Terminal control sequences (VT100/xterm; every terminal emulator in use
// knows them).
const (
	escHome      = "\x1b[H"
	escClearEOL  = "\x1b[K"
	escClearDown = "\x1b[J"
	escAltScreen = "\x1b[?1049h"
	escMainScr   = "\x1b[?1049l"
	escHideCur   = "\x1b[?25l"
	escShowCur   = "\x1b[?25h"
	escBold      = "\x1b[1m"
	escReset     = "\x1b[m"
)

// frame renders one screen: a header, the view cut to the terminal's
// size, the notes. It never writes more lines than rows nor longer ones
// than cols, so the screen does not scroll.
func frame(s *scan.Snapshot, scanErr error, view topView, haveKeys bool, cols, rows int) []byte {
	if cols < 20 {
		cols = 20
	}
	if rows < 5 {
		rows = 5
	}
	keys := "p processes  b buffers  h heaps  space rescan  q quit"
	if !haveKeys {
		keys = "stdin is not a terminal: ^C quits"
	}
	lines := []string{fmt.Sprintf("heapctl top  %s  view: %s   %s", time.Now().Format(time.TimeOnly), view, keys)}
	switch {
	case s == nil && scanErr != nil:
		lines = append(lines, "scan failed: "+clean(scanErr.Error()))
	case s == nil:
		lines = append(lines, "scanning…")
	default:
		lines = append(lines, summary(s))
		if scanErr != nil {
			lines = append(lines, "last scan failed, showing the one before: "+clean(scanErr.Error()))
		}
		lines = append(lines, "")
		extra := len(s.Notes()) + len(s.Problems)
		// header lines, the table's own header, "… N more", the notes
		maxRows := max(rows-len(lines)-2-extra, 1)
		var tb bytes.Buffer
		_ = writeTop(&tb, s, view, 0, maxRows)
		body := strings.Split(strings.TrimSuffix(tb.String(), "\n"), "\n")
		if len(body) > 0 {
			body[0] = escBold + body[0] + escReset
		}
		lines = append(lines, body...)
	}
	if len(lines) > rows {
		lines = lines[:rows]
	}
	var b bytes.Buffer
	b.WriteString(escHome)
	for i, l := range lines {
		b.WriteString(cutVisible(l, cols))
		b.WriteString(escClearEOL)
		if i < len(lines)-1 {
			b.WriteString("\r\n")
		}
	}
	b.WriteString(escClearDown)
	return b.Bytes()
}

// cutVisible cuts s to n visible characters, not counting the escape
// sequences frame itself adds (escBold, escReset).
func cutVisible(s string, n int) string {
	var b strings.Builder
	seen := 0
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], escBold) {
			b.WriteString(escBold)
			i += len(escBold)
			continue
		}
		if strings.HasPrefix(s[i:], escReset) {
			b.WriteString(escReset)
			i += len(escReset)
			continue
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		if seen < n {
			b.WriteString(s[i : i+size])
			seen++
		}
		i += size
	}
	return b.String()
}
