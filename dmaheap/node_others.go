//go:build !linux

package dmaheap

import "io/fs"

type nodeStat struct {
	uid, gid     uint32
	major, minor uint32
}

func statNode(fs.FileInfo) nodeStat { return nodeStat{} }

func canRead(string) bool { return false }
