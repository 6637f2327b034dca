package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// goPkg is one package of the module, as go list reports it.
type goPkg struct {
	ImportPath string
	Dir        string
	Rel        string // Dir relative to the module root, slash-separated
	Name       string
	Tests      bool // has _test.go files
}

// goEnv is the environment of every go command the runner starts: static
// binaries for the guest's architecture. CC names the guest's C compiler
// for the vm-static Makefiles.
func goEnv(a *arch) []string {
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+a.goarch, "GOARM="+a.goarm)
	if a.cc != "" {
		env = append(env, "CC="+a.cc)
	}
	return env
}

func goCmd(ctx context.Context, dir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stderr = os.Stderr
	return cmd
}

// listPackages runs go list on patterns in root.
func listPackages(ctx context.Context, root string, env []string, patterns []string) ([]goPkg, error) {
	args := append([]string{"list", "-e", "-f",
		"{{.ImportPath}}\t{{.Dir}}\t{{.Name}}\t{{len .TestGoFiles}}\t{{len .XTestGoFiles}}\t{{if .Error}}{{.Error}}{{end}}"},
		patterns...)
	cmd := goCmd(ctx, root, env, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s: %v\n%s", strings.Join(patterns, " "), err, stderr.Bytes())
	}
	var pkgs []goPkg
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), "\t", 6)
		if len(f) != 6 {
			continue
		}
		if f[5] != "" {
			return nil, fmt.Errorf("go list: %s: %s", f[0], f[5])
		}
		rel, err := filepath.Rel(root, f[1])
		if err != nil || strings.HasPrefix(rel, "..") {
			return nil, fmt.Errorf("go list: %s is outside the module (%s)", f[0], f[1])
		}
		pkgs = append(pkgs, goPkg{
			ImportPath: f[0], Dir: f[1], Rel: filepath.ToSlash(rel), Name: f[2],
			Tests: f[3] != "0" || f[4] != "0",
		})
	}
	return pkgs, nil
}

// testBinary is a built test binary and where it goes in the guest.
type testBinary struct {
	pkg  goPkg
	host string // path on the host
}

// guestPath is where the binary lives in the guest: in its package
// directory under /src, which mirrors the repository.
func (b testBinary) guestPath() string {
	return path.Join("/src", b.pkg.Rel, path.Base(b.pkg.ImportPath)+".test")
}

// buildTests builds the test binary of every package in pkgs, with as few
// go commands as possible: `go test -c -o DIR/` takes many packages at once
// and builds them in parallel, but needs distinct base names, so packages
// sharing a base name go to separate groups (built concurrently).
func buildTests(ctx context.Context, root, out string, env []string, pkgs []goPkg) ([]testBinary, error) {
	var groups [][]goPkg
	for _, p := range pkgs {
		base := path.Base(p.ImportPath)
		placed := false
		for i, g := range groups {
			clash := false
			for _, q := range g {
				if path.Base(q.ImportPath) == base {
					clash = true
					break
				}
			}
			if !clash {
				groups[i] = append(g, p)
				placed = true
				break
			}
		}
		if !placed {
			groups = append(groups, []goPkg{p})
		}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		bins []testBinary
	)
	for i, g := range groups {
		dir := filepath.Join(out, fmt.Sprintf("tests%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		args := []string{"test", "-c", "-ldflags=-s -w", "-o", dir + string(filepath.Separator)}
		for _, p := range g {
			args = append(args, p.ImportPath)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := goCmd(ctx, root, env, args...).Run()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("go test -c: %w", err))
				return
			}
			for _, p := range g {
				b := testBinary{pkg: p, host: filepath.Join(dir, path.Base(p.ImportPath)+".test")}
				if _, err := os.Stat(b.host); err != nil {
					errs = append(errs, fmt.Errorf("go test -c %s: no binary: %w", p.ImportPath, err))
					continue
				}
				bins = append(bins, b)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sort.Slice(bins, func(i, j int) bool { return bins[i].pkg.ImportPath < bins[j].pkg.ImportPath })
	return bins, nil
}

// buildCommands builds the given main packages into out (named after the
// last element of their import paths), with flags (make vmtest passes make
// dist's, so that the heapd and heapctl tested are the ones released), and
// logs each binary's SHA-256 to compare with dist/SHA256SUMS.
func buildCommands(ctx context.Context, root, out string, env, flags []string, pkgs []string) error {
	if len(pkgs) == 0 {
		return nil
	}
	args := append([]string{"build"}, flags...)
	args = append(args, "-o", out+string(filepath.Separator))
	args = append(args, pkgs...)
	if err := goCmd(ctx, root, env, args...).Run(); err != nil {
		return fmt.Errorf("go build %s: %w", strings.Join(pkgs, " "), err)
	}
	for _, p := range pkgs {
		name := path.Base(p)
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "vmrunner: %s sha256 %x\n", name, sha256.Sum256(b))
	}
	return nil
}

// sourceFiles lists the repository's files (tracked and untracked, minus
// what .gitignore ignores), relative to root, for the guest's /src mirror:
// tests find their testdata, and tests that read docs or go.mod find them
// too. Without git it walks the tree, skipping hidden directories. Large
// files and ELF binaries (a stray `go build` output) are left out.
func sourceFiles(root string) ([]string, error) {
	var names []string
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		for _, n := range strings.Split(string(out), "\x00") {
			if n != "" {
				names = append(names, n)
			}
		}
	} else {
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && p != root && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			if !d.IsDir() {
				rel, _ := filepath.Rel(root, p)
				names = append(names, filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	var keep []string
	for _, n := range names {
		p := filepath.Join(root, filepath.FromSlash(n))
		st, err := os.Lstat(p)
		if err != nil || !(st.Mode().IsRegular() || st.Mode()&os.ModeSymlink != 0) {
			continue // deleted but still tracked, or not a file
		}
		if st.Mode().IsRegular() && (st.Size() > maxSourceFile || isELF(p)) {
			continue
		}
		keep = append(keep, n)
	}
	sort.Strings(keep)
	return keep, nil
}

const maxSourceFile = 2 << 20

func isELF(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [4]byte
	n, _ := f.Read(b[:])
	return n == 4 && string(b[:]) == "\x7fELF"
}

// vmStaticTarget is the make target a package directory provides when its
// tests need programs Go does not build (the C client's static test
// programs): `make -C DIR vm-static OUT=ABSDIR` must put them in ABSDIR,
// and the runner packs ABSDIR as DIR/vm-static/ beside the test binary.
const vmStaticTarget = "vm-static"

// hasVMStatic reports whether dir's Makefile defines the vm-static target.
func hasVMStatic(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "Makefile"))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, vmStaticTarget+":") {
			return true
		}
	}
	return false
}

// extraTree is a host directory packed at a guest path.
type extraTree struct {
	guest, host string
}

// buildVMStatic runs the vm-static target of every package in pkgs that
// has one, each into its own directory under out.
func buildVMStatic(ctx context.Context, out string, env []string, pkgs []goPkg) ([]extraTree, error) {
	var trees []extraTree
	for i, p := range pkgs {
		if !hasVMStatic(p.Dir) {
			continue
		}
		dir := filepath.Join(out, fmt.Sprintf("vm-static%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "-C", p.Dir, vmStaticTarget, "OUT="+dir)
		// The guest's architecture, for Makefiles that cross-compile;
		// the Go variables of goEnv mean nothing to make.
		cmd.Env = env
		cmd.Stdout = os.Stderr
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("make -C %s %s: %w", p.Rel, vmStaticTarget, err)
		}
		trees = append(trees, extraTree{guest: path.Join("/src", p.Rel, vmStaticTarget), host: dir})
	}
	return trees, nil
}

// filterPackages keeps the packages that have tests and whose import path
// does not match exclude.
func filterPackages(pkgs []goPkg, exclude *regexp.Regexp) []goPkg {
	var out []goPkg
	for _, p := range pkgs {
		if p.Tests && (exclude == nil || !exclude.MatchString(p.ImportPath)) {
			out = append(out, p)
		}
	}
	return out
}
