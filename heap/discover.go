package heap

import (
	"fmt"
	"path/filepath"

	"github.com/heapd/heapd/dmaheap"
	"github.com/heapd/heapd/drm"
)

// discoverSystem finds the backends of the running system (or of the tree
// under cfg.Root).
func discoverSystem(cfg *Config) (Found, error) {
	f := Found{Kernel: map[string]Heap{}, Emulated: emulatedHeap{}}
	if !cfg.NoKernel {
		discoverKernel(cfg, &f)
	}
	if !cfg.NoUdmabuf {
		discoverUdmabuf(cfg, &f)
	}
	if !cfg.NoDRM {
		discoverDRM(cfg, &f)
	}
	return f, nil
}

func (c *Config) dmaheapConfig() *dmaheap.Config {
	if c.Root == "" {
		return nil
	}
	return &dmaheap.Config{
		DevDir:  filepath.Join(c.Root, "dev"),
		SysDir:  filepath.Join(c.Root, "sys"),
		ProcDir: filepath.Join(c.Root, "proc"),

		AllowRegularNodes: c.AllowRegularNodes,
	}
}

func discoverKernel(cfg *Config, f *Found) {
	dcfg := cfg.dmaheapConfig()
	list, err := dcfg.List()
	if err != nil {
		f.Problems = append(f.Problems, fmt.Sprintf("listing kernel heaps: %v", err))
		return
	}
	opened := map[string]*dmaheap.Heap{} // by real (alias-resolved) name
	for _, hi := range list {
		real := hi.Name
		if hi.AliasOf != "" {
			real = hi.AliasOf
		}
		h, ok := opened[real]
		if !ok {
			var err error
			h, err = dcfg.Open(real)
			if err != nil {
				f.Problems = append(f.Problems, err.Error())
				continue
			}
			opened[real] = h
			f.Closers = append(f.Closers, h)
		}
		info := Info{
			Name:       "kernel/" + hi.Name,
			Backend:    BackendKernel,
			Target:     hi.Path,
			KernelName: hi.Name,
			Properties: Properties{Contiguous: hi.Contiguous(), DeviceImportable: true},
			Note:       hi.BackingWhy,
		}
		if hi.AliasOf != "" {
			info.Note = fmt.Sprintf("alias of %s; %s", hi.AliasOf, hi.BackingWhy)
		}
		f.Kernel[hi.Name] = &kernelHeap{h: h, info: info, cfg: dcfg}
		if hi.Name == "system" {
			f.SystemKernelName = "system"
		}
	}
	if name, why, ok := resolveCMA(list); ok {
		f.CMAKernelName, f.CMAWhy = name, why
	}
}

// resolveCMA picks the contiguous heap with dmaheap.ResolveCMA.
func resolveCMA(list []dmaheap.Info) (name, why string, ok bool) {
	res, err := dmaheap.ResolveCMA(list)
	if err != nil {
		return "", "", false
	}
	return res.Heap.Name, "CMA heap " + res.Heap.Name + ": " + res.Why, true
}

func (c *Config) drmConfig() *drm.Config {
	if c.Root == "" {
		return nil
	}
	return &drm.Config{SysfsRoot: filepath.Join(c.Root, "sys"), DevRoot: filepath.Join(c.Root, "dev")}
}

// discoverDRM opens every DRM device. A device that cannot be opened is
// reported (its scanout heap cannot be probed), never fatal.
func discoverDRM(cfg *Config, f *Found) {
	infos, err := drm.Discover(cfg.drmConfig())
	if err != nil {
		f.Problems = append(f.Problems, fmt.Sprintf("listing DRM devices: %v", err))
		return
	}
	for _, info := range infos {
		d, err := openDevice(info)
		if err != nil {
			if info.Display() {
				f.Unopened = append(f.Unopened, Resolution{Device: info.ID, Driver: info.Driver, IOMMU: info.IOMMU,
					Error: fmt.Sprintf("cannot open the display to probe it: %v", err)})
				f.Problems = append(f.Problems, fmt.Sprintf("scanout/%s not published: %v", info.ID, err))
			}
			continue
		}
		f.Devices = append(f.Devices, d)
		f.Closers = append(f.Closers, d)
	}
}
