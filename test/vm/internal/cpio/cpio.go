// Package cpio writes the "newc" (SVR4, magic 070701) cpio archives the
// Linux kernel unpacks as an initramfs. Writing the archive here instead of
// with cpio(1) or the kernel's gen_init_cpio means no extra host tool and
// no mknod: a device node is just a header with a device number.
//
// The format is documented in the kernel's
// Documentation/driver-api/early-userspace/buffer-format.rst: a 110-byte
// ASCII header, the NUL-terminated name padded to 4 bytes, the data padded
// to 4 bytes, and a final entry named "TRAILER!!!".
package cpio

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// File type bits of the mode field (S_IF*).
const (
	TypeDir     = 0o040000
	TypeRegular = 0o100000
	TypeSymlink = 0o120000
	TypeChar    = 0o020000
)

// Writer writes one archive. Parent directories are not created
// implicitly: add them before their contents. Names are stored without a
// leading slash, as the kernel expects.
type Writer struct {
	w   *bufio.Writer
	ino uint32
	err error
}

// NewWriter returns a Writer that writes to w. Close writes the trailer
// and flushes; it does not close w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 1<<20), ino: 1}
}

// Header describes one entry.
type Header struct {
	Name         string
	Mode         uint32 // type bits | permission bits
	UID, GID     uint32
	Size         int64
	Major, Minor uint32 // device number of a TypeChar node
}

func (w *Writer) header(h Header) {
	if w.err != nil {
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
	if h.Name == "TRAILER!!!" {
		name = h.Name
	}
	if name == "" {
		name = "."
	}
	if h.Size < 0 || h.Size > 0xffffffff {
		w.err = fmt.Errorf("cpio: %s: size %d does not fit newc", name, h.Size)
		return
	}
	nlink := 1
	if h.Mode&0o170000 == TypeDir {
		nlink = 2
	}
	ino := w.ino
	w.ino++
	_, w.err = fmt.Fprintf(w.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, h.Mode, h.UID, h.GID, nlink, 0, h.Size,
		0, 0, h.Major, h.Minor, len(name)+1, 0)
	if w.err != nil {
		return
	}
	w.write([]byte(name + "\x00"))
	w.pad(110 + len(name) + 1)
}

func (w *Writer) write(b []byte) {
	if w.err == nil {
		_, w.err = w.w.Write(b)
	}
}

func (w *Writer) pad(n int) {
	if r := n % 4; r != 0 {
		w.write(make([]byte, 4-r))
	}
}

// Dir adds a directory.
func (w *Writer) Dir(name string, perm uint32) error {
	w.header(Header{Name: name, Mode: TypeDir | perm})
	return w.err
}

// Bytes adds a regular file with the given contents.
func (w *Writer) Bytes(name string, perm uint32, data []byte) error {
	w.header(Header{Name: name, Mode: TypeRegular | perm, Size: int64(len(data))})
	w.write(data)
	w.pad(len(data))
	return w.err
}

// Symlink adds a symbolic link name -> target.
func (w *Writer) Symlink(name, target string) error {
	w.header(Header{Name: name, Mode: TypeSymlink | 0o777, Size: int64(len(target))})
	w.write([]byte(target))
	w.pad(len(target))
	return w.err
}

// CharDev adds a character device node.
func (w *Writer) CharDev(name string, perm, major, minor uint32) error {
	w.header(Header{Name: name, Mode: TypeChar | perm, Major: major, Minor: minor})
	return w.err
}

// File adds the host file src as name, keeping its permission bits.
func (w *Writer) File(name, src string) error {
	if w.err != nil {
		return w.err
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("cpio: %s is not a regular file", src)
	}
	w.header(Header{Name: name, Mode: TypeRegular | uint32(st.Mode().Perm()), Size: st.Size()})
	if w.err != nil {
		return w.err
	}
	n, err := io.Copy(w.w, f)
	if err == nil && n != st.Size() {
		err = fmt.Errorf("cpio: %s changed size while being archived", src)
	}
	if err != nil {
		w.err = err
		return err
	}
	w.pad(int(n % 4))
	return w.err
}

// Tree adds the host directory src and everything below it as name,
// keeping permission bits and symbolic links.
func (w *Writer) Tree(name, src string) error {
	return fs.WalkDir(os.DirFS(src), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := path.Join(name, p)
		host := path.Join(src, p)
		switch t := d.Type(); {
		case t.IsDir():
			info, err := d.Info()
			if err != nil {
				return err
			}
			return w.Dir(dst, uint32(info.Mode().Perm()))
		case t&fs.ModeSymlink != 0:
			target, err := os.Readlink(host)
			if err != nil {
				return err
			}
			return w.Symlink(dst, target)
		case t.IsRegular():
			return w.File(dst, host)
		default:
			return fmt.Errorf("cpio: %s: unsupported file type %v", host, t)
		}
	})
}

// Close writes the trailer and flushes. It returns the first error of any
// earlier call.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	w.header(Header{Name: "TRAILER!!!"})
	if w.err != nil {
		return w.err
	}
	if err := w.w.Flush(); err != nil {
		return err
	}
	w.err = errors.New("cpio: writer closed")
	return nil
}
