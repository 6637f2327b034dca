package dmabuf

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrBadFDInfo means fdinfo text could not be parsed.
var ErrBadFDInfo = errors.New("dmabuf: malformed fdinfo")

// EmulatedExporter is the exporter name Stat reports for emulated buffers
// (kernel DMA-BUFs report the heap or module name, such as "system").
const EmulatedExporter = "emulated"

// EmulatedNamePrefix starts the memfd name of every emulated buffer; the
// buffer's own name follows it.
const EmulatedNamePrefix = "heapd-emulated:"

// Info is what the kernel reports about one open buffer, from
// /proc/<pid>/fdinfo/<fd>. Values are a snapshot.
type Info struct {
	// Kind is KindEmulated for emulated buffers.
	Kind Kind
	// Size is the buffer size in bytes (fdinfo "size:").
	Size int64
	// Count is the number of file references, mappings included, less
	// procfs's own (fdinfo "count:"). 0 for emulated buffers, where the
	// kernel does not report it.
	Count int64
	// Exporter is the heap name for heap buffers, the module name
	// otherwise ("udmabuf", "drm"), EmulatedExporter for emulated buffers
	// (fdinfo "exp_name:").
	Exporter string
	// Name is the buffer's debug name, "" if none (fdinfo "name:").
	Name string
	// Inode identifies the buffer system-wide (fdinfo "ino:").
	Inode uint64
	// Pos, Flags (open flags) and MntID are the generic fdinfo fields.
	Pos   int64
	Flags uint32
	MntID int64
}

// String renders info on one line; an emulated buffer says it is one.
func (i Info) String() string {
	s := fmt.Sprintf("size %d exporter %s name %q inode %d count %d", i.Size, i.Exporter, i.Name, i.Inode, i.Count)
	if i.Kind == KindEmulated {
		s += " (" + EmulatedLabel + ")"
	}
	return s
}

// ParseFDInfo parses the text of /proc/<pid>/fdinfo/<fd> for a DMA-BUF:
// the generic pos, flags (octal), mnt_id and ino lines and the DMA-BUF
// size, count, exp_name and name lines. Lines it does not know are skipped;
// when a key repeats the first line wins (the kernel prints the name last,
// so nothing a name contains can override the fields before it). A known
// numeric field that does not parse is an error wrapping ErrBadFDInfo.
// ParseFDInfo does not check that the text describes a DMA-BUF: an empty
// Exporter says it did not. It is a pure function, safe for concurrent use.
func ParseFDInfo(data []byte) (Info, error) {
	var info Info
	seen := map[string]bool{}
	for lineNo := 1; len(data) > 0; lineNo++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		k, v, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		key := string(k)
		switch key {
		case "pos", "flags", "mnt_id", "ino", "size", "count", "exp_name", "name":
		default:
			continue
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		// The kernel writes "key:\tvalue"; take the value after that one
		// tab verbatim (names may start with blanks). Tolerate hand-written
		// "key: value" for the numbers.
		text := string(bytes.TrimPrefix(v, []byte{'\t'}))
		num := strings.TrimSpace(text)
		var err error
		switch key {
		case "pos":
			info.Pos, err = strconv.ParseInt(num, 10, 64)
		case "flags":
			var f uint64
			f, err = strconv.ParseUint(num, 8, 32)
			info.Flags = uint32(f)
		case "mnt_id":
			info.MntID, err = strconv.ParseInt(num, 10, 64)
		case "ino":
			info.Inode, err = strconv.ParseUint(num, 10, 64)
		case "size":
			var sz uint64
			sz, err = strconv.ParseUint(num, 10, 64)
			if err == nil && sz > math.MaxInt64 {
				err = strconv.ErrRange
			}
			info.Size = int64(sz)
		case "count":
			info.Count, err = strconv.ParseInt(num, 10, 64)
		case "exp_name":
			info.Exporter = text
		case "name":
			info.Name = text
		}
		if err != nil {
			return Info{}, fmt.Errorf("fdinfo line %d: %s: %q: %w", lineNo, key, num, ErrBadFDInfo)
		}
	}
	return info, nil
}

// Stat reports the buffer's fdinfo (see Info). For an emulated buffer,
// Exporter is EmulatedExporter, Kind is KindEmulated and Name comes from the
// memfd name. Needs /proc mounted. ErrClosed after Close or on a nil Buffer.
// Safe for concurrent use.
func (b *Buffer) Stat() (Info, error) {
	var info Info
	err := b.withFD(func(fd int) error {
		data, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
		if err != nil {
			return fmt.Errorf("dmabuf: Stat: %w (is /proc mounted?)", err)
		}
		info, err = ParseFDInfo(data)
		if err != nil {
			return fmt.Errorf("dmabuf: Stat: /proc/self/fdinfo/%d: %w", fd, err)
		}
		if info.Inode == 0 { // kernels before 5.14 print no ino: line
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return fmt.Errorf("dmabuf: Stat: %w", os.NewSyscallError("fstat", err))
			}
			info.Inode = st.Ino
		}
		if b.kind == KindKernel {
			if info.Exporter == "" {
				return fmt.Errorf("dmabuf: Stat: /proc/self/fdinfo/%d has no exp_name line: not a DMA-BUF: %w", fd, ErrBadFDInfo)
			}
			return nil
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			return fmt.Errorf("dmabuf: Stat: %w", err)
		}
		info.Kind = KindEmulated
		info.Size = b.size
		info.Count = 0
		info.Exporter = EmulatedExporter
		info.Name = emulatedName(link)
		return nil
	})
	if err != nil {
		return Info{}, err
	}
	return info, nil
}

// emulatedName returns a buffer name from the /proc/self/fd link of its
// memfd ("/memfd:heapd-emulated:NAME (deleted)"). A sealed memfd that heapd
// did not create keeps its whole memfd name.
func emulatedName(link string) string {
	name := strings.TrimPrefix(link, "/memfd:")
	name = strings.TrimSuffix(name, " (deleted)")
	return strings.TrimPrefix(name, EmulatedNamePrefix)
}
