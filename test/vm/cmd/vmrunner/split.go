package main

import (
	"errors"
	"strings"
)

// splitCommand splits a command line into argv the way a shell would for
// simple words, without running a shell: words are separated by blanks;
// '…' quotes literally; "…" quotes with \" and \\ escapes; a backslash
// outside quotes escapes the next character. Nothing else is special
// ($, *, ;, | are plain characters).
func splitCommand(s string) ([]string, error) {
	var (
		argv  []string
		word  strings.Builder
		in    bool // inside a word (a quoted empty string is a word)
		quote rune
		esc   bool
	)
	for _, r := range s {
		switch {
		case esc:
			word.WriteRune(r)
			esc = false
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				word.WriteRune(r)
			}
		case quote == '"':
			switch r {
			case '"':
				quote = 0
			case '\\':
				esc = true
			default:
				word.WriteRune(r)
			}
		case r == '\\':
			esc, in = true, true
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if in {
				argv = append(argv, word.String())
				word.Reset()
				in = false
			}
		default:
			word.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote in command line")
	}
	if esc {
		return nil, errors.New("command line ends with a backslash")
	}
	if in {
		argv = append(argv, word.String())
	}
	return argv, nil
}
