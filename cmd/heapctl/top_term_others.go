//go:build !linux

package main

import (
	"errors"
	"os"
)

// isTerminal is false where the live view is not implemented: top prints
// tables instead.
func isTerminal(f *os.File) bool { return false }

type term struct {
	keys   chan byte
	resize chan os.Signal
}

func openTerm(in, out *os.File) (*term, error) {
	return nil, errors.New("heapctl top: live view not implemented on this system: use --once")
}

func (t *term) size() (cols, rows int) { return 80, 24 }
func (t *term) restore()               {}
