package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"

	"github.com/heapd/heapd/test/vm/internal/cpio"
	"github.com/heapd/heapd/test/vm/internal/vmproto"
)

// image is what goes into the initramfs. One image serves every kernel of a
// run: modules live under /lib/modules/<release>/ and /init picks its own.
type image struct {
	init    string            // host path of the vminit binary
	bin     []string          // host paths of commands, installed as /bin/<name>
	tests   []testBinary      // test binaries, installed in /src/<pkg dir>/
	extra   []extraTree       // host-built helpers (vm-static targets)
	modules map[string]string // kernel release -> host directory of its .ko files
	root    string            // repository root, mirrored as /src
	sources []string          // files under root to mirror
	config  vmproto.Config
}

// The guest's users and groups: root, a plain user for privilege tests,
// and the groups device nodes usually belong to.
const (
	guestPasswd = "root:x:0:0:root:/root:/bin/sh\n" +
		"heapd-test:x:1000:1000:heapd test user:/tmp:/bin/sh\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	guestGroup = "root:x:0:\nvideo:x:44:\nrender:x:105:\nheapd-test:x:1000:\nnogroup:x:65534:\n"
)

func (im *image) write(dst string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	w := cpio.NewWriter(f)
	dirs := map[string]bool{"": true, ".": true, "/": true}
	var mkdir func(d string) error
	mkdir = func(d string) error {
		d = path.Clean(d)
		if dirs[d] {
			return nil
		}
		if err := mkdir(path.Dir(d)); err != nil {
			return err
		}
		dirs[d] = true
		return w.Dir(d, 0o755)
	}
	add := func(name string, fn func() error) error {
		if err := mkdir(path.Dir(name)); err != nil {
			return err
		}
		return fn()
	}

	cfg, err := json.MarshalIndent(im.config, "", "  ")
	if err != nil {
		return err
	}
	steps := []func() error{
		func() error {
			for _, d := range []string{"/bin", "/dev", "/etc", "/proc", "/sys", "/tmp", "/root", "/src", vmproto.ModulesDir} {
				if err := mkdir(d); err != nil {
					return err
				}
			}
			return nil
		},
		// The kernel opens /dev/console as init's stdin/out/err before
		// /init can mount devtmpfs: the node must be in the archive.
		func() error { return w.CharDev("/dev/console", 0o600, 5, 1) },
		func() error { return w.File("/init", im.init) },
		func() error { return w.Bytes(vmproto.ConfigPath, 0o644, cfg) },
		func() error { return w.Bytes("/etc/passwd", 0o644, []byte(guestPasswd)) },
		func() error { return w.Bytes("/etc/group", 0o644, []byte(guestGroup)) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			f.Close()
			return err
		}
	}
	for _, b := range im.bin {
		if err := w.File(path.Join("/bin", filepath.Base(b)), b); err != nil {
			f.Close()
			return err
		}
	}
	releases := make([]string, 0, len(im.modules))
	for r := range im.modules {
		releases = append(releases, r)
	}
	sort.Strings(releases)
	for _, r := range releases {
		kos, err := filepath.Glob(filepath.Join(im.modules[r], "*.ko"))
		if err != nil {
			return err
		}
		for _, ko := range kos {
			name := path.Join(vmproto.ModulesDir, r, filepath.Base(ko))
			if err := add(name, func() error { return w.File(name, ko) }); err != nil {
				f.Close()
				return err
			}
		}
	}
	for _, s := range im.sources {
		name := path.Join("/src", s)
		host := filepath.Join(im.root, filepath.FromSlash(s))
		err := add(name, func() error {
			st, err := os.Lstat(host)
			if err != nil {
				return err
			}
			if st.Mode()&os.ModeSymlink != 0 {
				target, err := os.Readlink(host)
				if err != nil {
					return err
				}
				return w.Symlink(name, target)
			}
			return w.File(name, host)
		})
		if err != nil {
			f.Close()
			return fmt.Errorf("packing %s: %w", s, err)
		}
	}
	for _, e := range im.extra {
		if err := add(e.guest, func() error { return w.Tree(e.guest, e.host) }); err != nil {
			f.Close()
			return fmt.Errorf("packing %s: %w", e.host, err)
		}
	}
	for _, t := range im.tests {
		name := t.guestPath()
		if err := add(name, func() error { return w.File(name, t.host) }); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
