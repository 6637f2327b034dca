// Package protocol is heapd's wire protocol: the message types, their
// little-endian encoding, and a Conn that moves whole messages and their
// file descriptors over a SOCK_SEQPACKET Unix socket. docs/protocol.md
// describes the same format byte by byte, for clients in other languages.
//
// One packet carries one message: a 16-byte header (type, fd count,
// serial, body length, flags) and a body. File descriptors travel as
// SCM_RIGHTS on the same packet. A connection starts with Hello, which
// negotiates the version and feature bits; requests carry a serial that
// the reply echoes, so a client may have several requests in flight.
//
// Decode is strict: an unknown type, a body shorter or longer than its
// fields, an out-of-range enum, a string with a NUL or bad UTF-8, or a fd
// count the type does not carry is an error wrapping ErrMalformed, never a
// panic (FuzzDecode checks), and a decoded message re-encodes to the same
// bytes. Conn closes every fd that arrives with a message it rejects.
//
// Errors from the daemon are *Error values carrying a stable Code;
// errors.Is(err, CodeDenied) matches them.
//
// Encoding and decoding are pure functions, safe for concurrent use. A
// Conn allows one Send and one Recv at a time each (concurrent callers are
// serialised). Nothing here needs privilege.
package protocol
