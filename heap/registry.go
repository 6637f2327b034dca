package heap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/heapd/heapd/dmabuf"
)

// Config configures discovery. A nil *Config means the real system with
// default paths.
type Config struct {
	// Root prefixes /dev, /sys and /proc (for tests over captured trees);
	// empty means "/".
	Root string
	// Logger receives discovery decisions; nil discards them.
	Logger *slog.Logger
	// NoKernel, NoUdmabuf skip those backends (tests, and users who want
	// only the emulated heap).
	NoKernel  bool
	NoUdmabuf bool
	// NoDRM skips DRM devices: no scanout heaps.
	NoDRM bool
	// OnChange is called after a Refresh that published or retired heaps
	// (not after Open), outside the Registry's locks; nil means nobody
	// listens.
	OnChange func([]Change)
	// AllowRegularNodes accepts regular files as heap nodes under Root
	// (captured trees in tests; see dmaheap.Config).
	AllowRegularNodes bool
	// Discover replaces discovery entirely (tests of the naming logic over
	// fake backends). It returns the backends found and what owns their
	// fds.
	Discover func(cfg *Config) (Found, error)
}

// Found is the raw result of discovery, before naming.
type Found struct {
	// Kernel holds one Heap per kernel heap name (aliases included), keyed
	// by kernel name.
	Kernel map[string]Heap
	// SystemKernelName is the kernel name of the system heap ("" if none).
	SystemKernelName string
	// CMAKernelName is the CMA heap chosen by the resolver ("" if none),
	// and CMAWhy says why.
	CMAKernelName string
	CMAWhy        string
	// Udmabuf is the udmabuf backend, nil if unavailable.
	Udmabuf Heap
	// Emulated is the emulated backend (always available).
	Emulated Heap
	// Closers release what discovery opened.
	Closers []io.Closer
	// Devices are the DRM devices found and opened (their Close is in
	// Closers); display devices get a scanout/<id> heap.
	Devices []Device
	// Unopened are DRM devices that exist but could not be opened, with why.
	Unopened []Resolution
	// Problems lists backends that exist but could not be used, with why.
	Problems []string
}

// Registry publishes the discovered heaps under their logical names. It is
// safe for concurrent use; Close releases the fds it holds (buffers already
// handed out stay valid).
type Registry struct {
	cfg Config
	log *slog.Logger

	refreshMu sync.Mutex // serialises Refresh

	mu          sync.RWMutex
	closed      bool
	retired     map[string]string // name -> why, until the name comes back
	heaps       map[string]Heap
	found       Found
	resolutions []Resolution
	cache       map[probeKey]Attempt
	closers     []io.Closer
	problems    []string
}

// Open discovers the system's heaps and returns a Registry. cfg may be nil.
func Open(cfg *Config) (*Registry, error) {
	r := &Registry{}
	if cfg != nil {
		r.cfg = *cfg
	}
	r.log = r.cfg.Logger
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if err := r.Refresh(); err != nil {
		return nil, err
	}
	return r, nil
}

// Refresh discovers again and republishes. Buffers allocated before stay
// valid; fds of the previous discovery are closed.
func (r *Registry) Refresh() error {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	discover := r.cfg.Discover
	if discover == nil {
		discover = discoverSystem
	}
	found, err := discover(&r.cfg)
	if err != nil {
		return err
	}
	// Probe every display device: this is I/O, done before taking the lock.
	cache := map[probeKey]Attempt{}
	var resolutions []Resolution
	for _, d := range found.Devices {
		if info := d.Info(); info.Display() {
			resolutions = append(resolutions, r.resolve(context.Background(), &found, d, cache))
		}
	}
	resolutions = append(resolutions, found.Unopened...)
	sort.Slice(resolutions, func(i, j int) bool { return resolutions[i].Device < resolutions[j].Device })
	heaps := publish(found)
	publishScanout(heaps, &found, resolutions, r.log)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		closeAll(found.Closers)
		return ErrClosed
	}
	old := r.closers
	changes := r.retireLocked(heaps, &found, time.Now())
	oldDefault := ""
	if h, ok := r.heaps["scanout"]; ok {
		oldDefault = h.Info().Device
	}
	r.heaps, r.closers, r.problems = heaps, found.Closers, found.Problems
	r.found, r.resolutions, r.cache = found, resolutions, cache
	r.mu.Unlock()
	// Buffers already handed out are the kernel's refcounted objects: closing
	// the previous discovery's fds does not touch them.
	closeAll(old)
	if h, ok := heaps["scanout"]; ok && oldDefault != "" && h.Info().Device != oldDefault {
		r.log.Warn("default scanout heap moved to another display", "from", oldDefault, "to", h.Info().Device)
	}
	for _, c := range changes {
		if c.Kind == Retired {
			r.log.Warn("heap retired", "heap", c.Heap, "reason", c.Reason)
		} else {
			r.log.Info("heap published", "heap", c.Heap, "reason", c.Reason)
		}
	}
	if r.cfg.OnChange != nil && len(changes) > 0 {
		r.cfg.OnChange(changes)
	}
	for _, name := range sortedNames(heaps) {
		info := heaps[name].Info()
		r.log.Debug("heap published", "name", name, "backend", info.Backend, "target", info.Target, "note", info.Note)
	}
	for _, p := range found.Problems {
		r.log.Warn("heap backend unusable", "problem", p)
	}
	return nil
}

func closeAll(cs []io.Closer) {
	for _, c := range cs {
		c.Close()
	}
}

// publish applies the naming scheme to what discovery found.
func publish(f Found) map[string]Heap {
	heaps := map[string]Heap{}
	for name, h := range f.Kernel {
		heaps["kernel/"+name] = alias{name: "kernel/" + name, h: h}
	}
	switch {
	case f.SystemKernelName != "" && f.Kernel[f.SystemKernelName] != nil:
		heaps["system"] = alias{name: "system", h: f.Kernel[f.SystemKernelName],
			note: "kernel system heap " + f.SystemKernelName}
	case f.Udmabuf != nil:
		heaps["system"] = alias{name: "system", h: f.Udmabuf,
			note: "no kernel system heap; udmabuf over memfd pages"}
	case f.Emulated != nil:
		heaps["system"] = alias{name: "system", h: f.Emulated,
			note: "no kernel heap and no udmabuf: " + dmabuf.EmulatedLabel}
	}
	if f.CMAKernelName != "" && f.Kernel[f.CMAKernelName] != nil {
		heaps["contiguous"] = alias{name: "contiguous", h: f.Kernel[f.CMAKernelName], note: f.CMAWhy}
	}
	if f.Udmabuf != nil {
		heaps["udmabuf"] = alias{name: "udmabuf", h: f.Udmabuf}
	}
	return heaps
}

// alias publishes a backend under a logical name.
type alias struct {
	name   string
	h      Heap
	note   string
	device string // display device id for scanout names
}

func (a alias) Info() Info {
	i := a.h.Info()
	i.Name = a.name
	if a.note != "" {
		i.Note = a.note
	}
	if a.device != "" {
		i.Device = a.device
	}
	return i
}

func (a alias) Alloc(ctx context.Context, size int64, opts AllocOptions) (*dmabuf.Buffer, error) {
	// Validate under the name the caller used, so errors speak of it.
	if err := checkSize(a.name, size, a.h.Info().MaxSize); err != nil {
		return nil, err
	}
	return a.h.Alloc(ctx, size, opts)
}

func sortedNames(m map[string]Heap) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return nameRank(names[i]) < nameRank(names[j]) || nameRank(names[i]) == nameRank(names[j]) && names[i] < names[j]
	})
	return names
}

// nameRank orders logical names before raw kernel ones.
func nameRank(n string) int {
	switch {
	case n == "system":
		return 0
	case n == "contiguous":
		return 1
	case n == "scanout":
		return 2
	case strings.HasPrefix(n, "scanout/"):
		return 3
	case n == "udmabuf":
		return 4
	}
	return 5
}

// List returns every published heap, logical names first. Safe on a closed
// Registry (returns nothing).
func (r *Registry) List() []Info {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Info, 0, len(r.heaps))
	for _, n := range sortedNames(r.heaps) {
		out = append(out, r.heaps[n].Info())
	}
	return out
}

// Problems lists backends that exist but could not be used, with why.
func (r *Registry) Problems() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]string(nil), r.problems...)
}

// Get returns the heap published as name. An unknown name gives
// ErrUnknownHeap with the list of names that do exist.
func (r *Registry) Get(name string) (Heap, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return nil, ErrClosed
	}
	if h, ok := r.heaps[name]; ok {
		return h, nil
	}
	if why, ok := r.retired[name]; ok {
		return nil, fmt.Errorf("heap %q is retired: %s; buffers already allocated stay valid: %w", name, why, ErrRetired)
	}
	return nil, fmt.Errorf("no heap named %q (available: %s): %w", name, strings.Join(sortedNames(r.heaps), ", "), ErrUnknownHeap)
}

// Alloc allocates size bytes from the heap published as name. The Buffer is
// owned by the caller.
func (r *Registry) Alloc(ctx context.Context, name string, size int64, opts AllocOptions) (*dmabuf.Buffer, error) {
	h, err := r.Get(name)
	if err != nil {
		return nil, err
	}
	return h.Alloc(ctx, size, opts)
}

// Close releases the registry's fds. Idempotent and nil-safe; buffers
// already handed out stay valid.
func (r *Registry) Close() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	cs := r.closers
	r.closers, r.heaps = nil, nil
	r.mu.Unlock()
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
