package scan

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/dmaheap"
	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/internal/uapi"
	"github.com/heapd/heapd/udmabuf"
)

// capture allocates known buffers from every exporter the VM has, maps,
// names, duplicates and imports some of them, and writes a txtar archive of
// what the kernel then shows: each buffer's fdinfo, this process's maps and
// debugfs bufinfo. It is how testdata/<kernel>/ was made:
//
//	make vmrun KERNEL=6.1 PKG=./scan CMD='/src/scan/scan.test -scan.capture' > capture.txtar
//
// Steps that fail are reported on stderr and left out; the archive says
// what it holds.
func capture(w io.Writer) int {
	var closers []io.Closer
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i].Close()
		}
	}()
	keep := func(c io.Closer) { closers = append(closers, c) }
	warn := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "capture: "+format+"\n", args...) }

	type labelled struct {
		label string
		buf   *dmabuf.Buffer
	}
	var bufs []labelled
	alloc := func(heap string, size int64, name, label string, maps int) *dmabuf.Buffer {
		h, err := dmaheap.Open(heap)
		if err != nil {
			warn("open heap %s: %v", heap, err)
			return nil
		}
		defer h.Close()
		b, err := h.Alloc(size)
		if err != nil {
			warn("alloc %d from %s: %v", size, heap, err)
			return nil
		}
		keep(b)
		if name != "" {
			if err := b.SetName(name); err != nil {
				warn("set name %q: %v", name, err)
			}
		}
		for range maps {
			m, err := b.Map(dmabuf.ProtReadWrite)
			if err != nil {
				warn("map %s: %v", label, err)
				break
			}
			keep(m)
		}
		bufs = append(bufs, labelled{label, b})
		return b
	}

	sys := alloc("system", 1<<20, "cap-system", "system-1m", 2)
	alloc("reserved", 2<<20, "cap-reserved", "reserved-2m", 1)
	alloc("system", 4096, "", "system-unnamed", 0)
	// A name with blanks and a colon: the parsers must take it verbatim.
	alloc("system", 8192, "a b:c", "system-odd-name", 1)

	// A second fd for the same buffer.
	if sys != nil {
		if c, err := sys.Clone(); err != nil {
			warn("clone: %v", err)
		} else {
			keep(c)
			bufs = append(bufs, labelled{"system-1m-dup", c})
		}
	}

	if dev, err := udmabuf.Open(); err != nil {
		warn("udmabuf: %v", err)
	} else {
		keep(dev)
		if b, err := dev.Create(64 << 10); err != nil {
			warn("udmabuf create: %v", err)
		} else {
			keep(b)
			if err := b.SetName("cap-udmabuf"); err != nil {
				warn("udmabuf name: %v", err)
			}
			if m, err := b.Map(dmabuf.ProtReadWrite); err != nil {
				warn("udmabuf map: %v", err)
			} else {
				keep(m)
			}
			bufs = append(bufs, labelled{"udmabuf-64k", b})
		}
	}

	// vgem: export a dumb buffer (exporter "drm"), and import the system
	// buffer so bufinfo lists an attached device.
	if card := cardOf("vgem"); card == "" {
		warn("no vgem card")
	} else if d, err := drm.Open(card); err != nil {
		warn("open %s: %v", card, err)
	} else {
		keep(d)
		if db, err := d.CreateDumb(64, 64, 32); err != nil {
			warn("vgem dumb: %v", err)
		} else {
			keep(db)
			if b, err := db.Export(); err != nil {
				warn("vgem export: %v", err)
			} else {
				keep(b)
				if m, err := b.Map(dmabuf.ProtReadWrite); err != nil {
					warn("vgem export map: %v", err)
				} else {
					keep(m)
				}
				bufs = append(bufs, labelled{"vgem-export", b})
			}
		}
		if sys != nil {
			if h, err := d.Import(sys); err != nil {
				warn("vgem import: %v", err)
			} else {
				keep(h)
			}
		}
	}
	if card := cardOf("vkms"); card == "" {
		warn("no vkms card")
	} else if d, err := drm.Open(card); err != nil {
		warn("open %s: %v", card, err)
	} else {
		keep(d)
		if sys != nil {
			if h, err := d.Import(sys); err != nil {
				warn("vkms import: %v", err)
			} else {
				keep(h)
			}
		}
	}

	// A pending write fence on the reserved buffer, for bufinfo's fence
	// lines.
	if len(bufs) > 1 {
		if tl, err := unix.Open("/sys/kernel/debug/sync/sw_sync", unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
			warn("sw_sync: %v", err)
		} else {
			keep(fdCloser(tl))
			if fence, err := uapi.SwSyncCreateFenceCall(tl, 1, "cap-fence"); err != nil {
				warn("fence: %v", err)
			} else {
				f := os.NewFile(uintptr(fence), "fence")
				keep(f)
				if err := bufs[1].buf.ImportSyncFile(dmabuf.Write, f); err != nil {
					warn("import fence: %v", err)
				}
			}
		}
	}

	var out bytes.Buffer
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	fmt.Fprintf(&out, "Captured by scan.test -scan.capture on Linux %s.\n", unix.ByteSliceToString(uts.Release[:]))
	for _, b := range bufs {
		fmt.Fprintf(&out, "%s: fd %d\n", b.label, b.buf.FD())
	}
	file := func(name string, data []byte) {
		fmt.Fprintf(&out, "-- %s --\n", name)
		out.Write(data)
		if len(data) > 0 && data[len(data)-1] != '\n' {
			out.WriteByte('\n')
		}
	}
	for _, b := range bufs {
		data, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", b.buf.FD()))
		if err != nil {
			warn("fdinfo %s: %v", b.label, err)
			continue
		}
		file("fdinfo/"+b.label, data)
		link, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", b.buf.FD()))
		file("fdlink/"+b.label, []byte(link+"\n"))
	}
	if memfd, err := unix.MemfdCreate("cap-memfd", unix.MFD_CLOEXEC); err == nil {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", memfd))
		file("fdinfo/memfd", data)
		unix.Close(memfd)
	}
	for _, p := range []string{"/proc/self/maps", "/sys/kernel/debug/dma_buf/bufinfo"} {
		data, err := os.ReadFile(p)
		if err != nil {
			warn("%s: %v", p, err)
			continue
		}
		file(strings.TrimPrefix(filepath.Base(p), "/"), data)
	}
	if _, err := w.Write(out.Bytes()); err != nil {
		return 1
	}
	return 0
}

type fdCloser int

func (f fdCloser) Close() error { return unix.Close(int(f)) }

// cardOf returns /dev/dri/cardN of the DRM device the named driver made.
func cardOf(driver string) string {
	cards, _ := filepath.Glob("/sys/class/drm/card*")
	for _, c := range cards {
		if strings.Contains(filepath.Base(c), "-") {
			continue
		}
		dev, err := os.Readlink(filepath.Join(c, "device"))
		if err == nil && filepath.Base(dev) == driver {
			return filepath.Join("/dev/dri", filepath.Base(c))
		}
	}
	return ""
}
