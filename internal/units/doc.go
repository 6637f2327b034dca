// Package units parses and formats byte sizes the way heapd's command line
// and configuration accept them: plain byte counts ("4096") and binary
// suffixes ("4KiB", "8MiB", "1GiB"; "K", "M", "G" mean the same). Decimal
// suffixes ("4KB") are refused with a hint, because a page-rounding heap
// would silently turn 4000 into 4096 and surprise the user.
//
// Everything here is pure and safe for concurrent use.
package units
