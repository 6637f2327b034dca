package dmaheap

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Resolution is ResolveCMA's choice and its reasons. It is a plain value.
type Resolution struct {
	// Heap is the chosen kernel heap (never an alias).
	Heap Info
	// Why says why it was chosen.
	Why string
	// Aliases are the links that point at the chosen heap (vidbuf_cached on
	// a Raspberry Pi 4).
	Aliases []string
	// PassedOver lists every other entry and why it was not chosen, in
	// listing order.
	PassedOver []PassedOver
}

// PassedOver is a heap ResolveCMA did not choose, and why. It is a plain
// value.
type PassedOver struct {
	// Name is the entry's name in /dev/dma_heap.
	Name string
	// Why says why it was not chosen.
	Why string
}

// String explains the resolution in a few lines, for people.
func (r Resolution) String() string {
	var b strings.Builder
	if r.Heap.Name != "" {
		fmt.Fprintf(&b, "contiguous memory: heap %q (%s): %s", r.Heap.Name, r.Heap.Path, r.Why)
		if len(r.Aliases) > 0 {
			fmt.Fprintf(&b, "; also reachable as %s", strings.Join(r.Aliases, ", "))
		}
	} else {
		b.WriteString("contiguous memory: no CMA heap")
	}
	for _, p := range r.PassedOver {
		fmt.Fprintf(&b, "\n  passed over %q: %s", p.Name, p.Why)
	}
	return b.String()
}

// CMA candidate ranks: lower is preferred.
const (
	rankStable    = iota // default_cma_region
	rankLegacy           // reserved, linux,cma, default-pool: the default area by its old names
	rankPerRegion        // any other CMA-backed heap: a separate region
)

func cmaRank(name string) int {
	switch name {
	case "default_cma_region":
		return rankStable
	case "reserved", "linux,cma", "default-pool":
		return rankLegacy
	}
	return rankPerRegion
}

// ResolveCMA picks, from a listing (List), the heap that gives physically
// contiguous memory on this kernel, whatever it is called:
//
//  1. default_cma_region, the default CMA area's stable name (6.17+);
//  2. else reserved, linux,cma or default-pool, the default area's names
//     before 6.17 (on 6.17+ they are duplicates of default_cma_region);
//  3. else another heap backed by CMA (a per-region heap, 6.19+), the first
//     by name.
//
// Among the names of the default area (1 and 2) it prefers one this process
// may open. Links are never chosen (their target is), heaps of unknown
// backing never. The Resolution explains the choice and every entry passed
// over. When no heap qualifies the error matches ErrNotExist and the
// Resolution still lists what was passed over. ResolveCMA only reads heaps.
func ResolveCMA(heaps []Info) (Resolution, error) {
	var res Resolution
	var cands []Info
	passed := map[string]string{}
	for _, h := range heaps {
		switch {
		case h.Alias():
			continue // explained once the choice is known
		case h.Path == "":
			passed[h.Name] = "the kernel has it but there is no node to open"
		case h.Backing == BackingSystem:
			passed[h.Name] = h.BackingWhy
		case h.Backing != BackingCMA:
			passed[h.Name] = "backing unknown, so not trusted to be contiguous: " + h.BackingWhy
		default:
			cands = append(cands, h)
		}
	}
	slices.SortStableFunc(cands, func(a, b Info) int {
		return cmp.Or(cmp.Compare(cmaRank(a.Name), cmaRank(b.Name)), strings.Compare(a.Name, b.Name))
	})

	if len(cands) == 0 {
		res.PassedOver = passedOver(heaps, passed, "")
		return res, &kindError{ErrNotExist, fmt.Sprintf("dmaheap: no CMA heap among %d entries: the kernel needs CONFIG_DMABUF_HEAPS_CMA and a CMA area (cma=<size> on the command line, CONFIG_CMA_SIZE_MBYTES, or a reusable shared-dma-pool reserved-memory region)",
			len(heaps))}
	}

	chosen := cands[0]
	var note string
	if !chosen.Accessible && cmaRank(chosen.Name) <= rankLegacy {
		for _, c := range cands[1:] {
			if c.Accessible && cmaRank(c.Name) <= rankLegacy {
				note = fmt.Sprintf("; preferred over %q, another name of the same default CMA area, because this process may open only this one", chosen.Name)
				chosen = c
				break
			}
		}
	}
	res.Heap = chosen
	switch cmaRank(chosen.Name) {
	case rankStable:
		res.Why = chosen.BackingWhy
	case rankLegacy:
		res.Why = "no default_cma_region on this kernel; " + chosen.BackingWhy
		if cands[0].Name != chosen.Name {
			res.Why = chosen.BackingWhy
		}
	default:
		res.Why = "no heap for the default CMA area on this kernel; " + chosen.BackingWhy
	}
	res.Why += note
	if !chosen.Accessible {
		res.Why += fmt.Sprintf("; note that this process may not open %s (%s:%s %s): open fails with permission denied",
			chosen.Path, chosen.Owner, chosen.Group, modeString(chosen.Mode))
	}

	for _, c := range cands {
		if c.Name == chosen.Name {
			continue
		}
		var why string
		switch {
		case cmaRank(c.Name) <= rankLegacy && cmaRank(chosen.Name) <= rankLegacy:
			why = fmt.Sprintf("another name of the same default CMA area as %q", chosen.Name)
			if c.Name != "default_cma_region" {
				why += " (the legacy name: CONFIG_DMABUF_HEAPS_CMA_LEGACY on 6.17 and 6.18, the default region's own heap from 6.19)"
			}
			if !c.Accessible {
				why += ", and this process may not open it"
			}
		case cmaRank(c.Name) == rankPerRegion && cmaRank(chosen.Name) <= rankLegacy:
			why = fmt.Sprintf("a separate CMA region (per-region heap, Linux 6.19+); the default area %q serves devices that have no region of their own. Ask for it by name to use it", chosen.Name)
		default:
			why = fmt.Sprintf("also CMA-backed; %q sorts first", chosen.Name)
		}
		passed[c.Name] = why
	}
	for _, h := range heaps {
		if h.Alias() && h.AliasOf == chosen.Name {
			res.Aliases = append(res.Aliases, h.Name)
		}
	}
	res.PassedOver = passedOver(heaps, passed, chosen.Name)
	return res, nil
}

// passedOver lists, in listing order, the explained entries and every link
// (links are never chosen).
func passedOver(heaps []Info, passed map[string]string, chosen string) []PassedOver {
	var out []PassedOver
	for _, h := range heaps {
		if !h.Alias() {
			if why, ok := passed[h.Name]; ok {
				out = append(out, PassedOver{h.Name, why})
			}
			continue
		}
		var why string
		switch {
		case h.AliasOf == chosen:
			why = fmt.Sprintf("a link to %q (%s -> %s): the resolver names the heap itself", chosen, h.Name, h.LinkTarget)
		case h.Backing == BackingSystem:
			why = fmt.Sprintf("a link to %q, which is not physically contiguous (Raspberry Pi OS points vidbuf_cached at system on a Pi 5, whose display has an IOMMU)", h.AliasOf)
		case h.Backing == BackingCMA:
			why = fmt.Sprintf("a link to %q, which was not chosen", h.AliasOf)
		default:
			why = fmt.Sprintf("a link to %q, whose backing is unknown", h.LinkTarget)
		}
		out = append(out, PassedOver{h.Name, why})
	}
	return out
}
