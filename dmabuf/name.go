package dmabuf

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/internal/uapi"
)

// MaxNameLen is the longest buffer name in bytes (DMA_BUF_NAME_LEN less the
// NUL). Emulated buffer names follow the same rule so a name works on every
// backend.
const MaxNameLen = uapi.DMABufNameLen - 1

// ValidateName checks that name can name a buffer: at most MaxNameLen
// bytes, with no NUL (the kernel would cut the name there) and no newline
// (it would corrupt the line-based fdinfo and debugfs listings everybody
// parses). The empty name is valid. Errors wrap ErrInvalidName.
func ValidateName(name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("dmabuf: name %q is %d bytes, the kernel keeps at most %d: shorten it: %w", name, len(name), MaxNameLen, ErrInvalidName)
	}
	if i := strings.IndexAny(name, "\x00\n"); i >= 0 {
		return fmt.Errorf("dmabuf: name %q has a NUL or newline at byte %d: remove it: %w", name, i, ErrInvalidName)
	}
	return nil
}

// SetName sets the buffer's debug name (DMA_BUF_SET_NAME), shown in fdinfo
// (Stat), /proc/<pid>/maps and debugfs. The name is validated first (see
// ValidateName). An emulated buffer's name is fixed at creation, in its
// memfd name: SetName returns ErrNotSupported for it. ErrClosed after Close
// or on a nil Buffer. Safe for concurrent use.
func (b *Buffer) SetName(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	return b.withFD(func(fd int) error {
		if b.kind == KindEmulated {
			return fmt.Errorf("dmabuf: SetName: an emulated buffer's name is fixed when it is allocated: %w", ErrNotSupported)
		}
		cname := append([]byte(name), 0)
		if err := uapi.DMABufSetNameCall(fd, cname); err != nil {
			if errors.Is(err, unix.ENOTTY) {
				return fmt.Errorf("dmabuf: SetName: kernel has no DMA_BUF_SET_NAME: %w (%w)", ErrNotSupported, err)
			}
			return fmt.Errorf("dmabuf: SetName(%q): %w", name, err)
		}
		return nil
	})
}
