//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "vminit: runs only as /init of the Linux test VM")
	os.Exit(2)
}
