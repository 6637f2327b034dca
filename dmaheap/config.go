package dmaheap

import "path/filepath"

// Default roots of the kernel's file systems.
const (
	DefaultDevDir  = "/dev"
	DefaultSysDir  = "/sys"
	DefaultProcDir = "/proc"
)

// Config says where the package finds the kernel's files. A nil *Config, and
// any empty field, mean the real system paths. A Config is read-only once in
// use; its methods are then safe for concurrent use.
type Config struct {
	// DevDir is the root of devtmpfs; heap nodes are DevDir/dma_heap/<name>.
	DevDir string
	// SysDir is the root of sysfs: SysDir/class/dma_heap,
	// SysDir/kernel/mm/cma and SysDir/firmware/devicetree/base.
	SysDir string
	// ProcDir is the root of procfs: ProcDir/meminfo and ProcDir/cmdline.
	ProcDir string
	// AllowRegularNodes accepts regular files as heap nodes. It exists for
	// captured trees (tests, bug reports), which cannot hold device nodes
	// without mknod: a regular file stands for a character device, and its
	// content, when it is "major:minor", for its device number. Never set it
	// for a real system.
	AllowRegularNodes bool
}

func (c *Config) devDir() string {
	if c == nil || c.DevDir == "" {
		return DefaultDevDir
	}
	return c.DevDir
}

func (c *Config) sysDir() string {
	if c == nil || c.SysDir == "" {
		return DefaultSysDir
	}
	return c.SysDir
}

func (c *Config) procDir() string {
	if c == nil || c.ProcDir == "" {
		return DefaultProcDir
	}
	return c.ProcDir
}

func (c *Config) regularNodes() bool { return c != nil && c.AllowRegularNodes }

// heapDir is where the heap nodes live.
func (c *Config) heapDir() string { return filepath.Join(c.devDir(), "dma_heap") }

// classDir is the sysfs class directory of heaps.
func (c *Config) classDir() string { return filepath.Join(c.sysDir(), "class", "dma_heap") }

// cmaSysDir lists CMA areas by name (CONFIG_CMA_SYSFS).
func (c *Config) cmaSysDir() string { return filepath.Join(c.sysDir(), "kernel", "mm", "cma") }

// reservedMemDir is the device tree's reserved-memory node (what
// /proc/device-tree/reserved-memory points at).
func (c *Config) reservedMemDir() string {
	return filepath.Join(c.sysDir(), "firmware", "devicetree", "base", "reserved-memory")
}

func (c *Config) meminfoPath() string { return filepath.Join(c.procDir(), "meminfo") }
func (c *Config) cmdlinePath() string { return filepath.Join(c.procDir(), "cmdline") }

// nodePath is the node of the named heap.
func (c *Config) nodePath(name string) string { return filepath.Join(c.heapDir(), name) }
