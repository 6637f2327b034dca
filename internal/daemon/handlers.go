package daemon

import (
	"math"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heapd/heapd/dmabuf"
	"github.com/heapd/heapd/drm"
	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/metrics"
	"github.com/heapd/heapd/protocol"
)

// handleHello negotiates; false means the connection ends.
func (c *conn) handleHello(serial uint32, m *protocol.Hello) bool {
	if m.Major != protocol.VersionMajor {
		c.log.Info("disconnecting: protocol version mismatch", "client", m.Major)
		c.fatal(serial, protocol.Errorf(protocol.CodeVersion,
			"this heapd speaks protocol %d.%d; the client asked for %d.%d", protocol.VersionMajor, protocol.VersionMinor, m.Major, m.Minor))
		return false
	}
	c.hello = true
	c.features = m.Features & Features
	c.send(serial, &protocol.HelloReply{
		Major:        protocol.VersionMajor,
		Minor:        min(m.Minor, protocol.VersionMinor),
		Features:     c.features,
		UptimeMillis: uint64(c.s.uptime().Milliseconds()),
		MaxBatch:     uint16(c.s.cfg.MaxBatch),
		MaxInFlight:  uint16(c.s.cfg.MaxInFlight),
		MaxMessage:   protocol.MaxMessageSize,
		Server:       c.s.cfg.Version,
	}, nil)
	return true
}

// heapsReply lists the published heaps.
func (s *Server) heapsReply() *protocol.Heaps {
	infos := s.cfg.Heaps.List()
	m := &protocol.Heaps{}
	for _, h := range infos {
		if len(m.Heaps) == protocol.MaxHeaps {
			break
		}
		m.Heaps = append(m.Heaps, HeapToWire(h))
	}
	for _, p := range s.cfg.Heaps.Problems() {
		if len(m.Problems) == protocol.MaxProblems {
			break
		}
		m.Problems = append(m.Problems, clip(p, protocol.MaxString))
	}
	return m
}

// HeapToWire converts a heap.Info to its wire form.
func HeapToWire(h heap.Info) protocol.HeapInfo {
	w := protocol.HeapInfo{
		Name:       clip(h.Name, protocol.MaxNameLen),
		Backend:    clip(string(h.Backend), protocol.MaxNameLen),
		Target:     clip(h.Target, protocol.MaxString),
		KernelName: clip(h.KernelName, protocol.MaxNameLen),
		Device:     clip(h.Device, protocol.MaxNameLen),
		Note:       clip(h.Note, protocol.MaxString),
		MaxSize:    uint64(max(h.MaxSize, 0)),
		CMATotal:   uint64(max(h.CMATotal, 0)),
		CMAFree:    uint64(max(h.CMAFree, 0)),
	}
	if h.Contiguous {
		w.Flags |= protocol.HeapContiguous
	}
	if h.DeviceImportable {
		w.Flags |= protocol.HeapDeviceImportable
	}
	if h.CPUCached != nil {
		w.Flags |= protocol.HeapCPUCachedKnown
		if *h.CPUCached {
			w.Flags |= protocol.HeapCPUCached
		}
	}
	return w
}

// HeapFromWire converts a wire heap back to a heap.Info.
func HeapFromWire(w protocol.HeapInfo) heap.Info {
	h := heap.Info{
		Name:       w.Name,
		Backend:    heap.Backend(w.Backend),
		Target:     w.Target,
		KernelName: w.KernelName,
		Device:     w.Device,
		Note:       w.Note,
	}
	h.Contiguous = w.Flags&protocol.HeapContiguous != 0
	h.DeviceImportable = w.Flags&protocol.HeapDeviceImportable != 0
	if w.Flags&protocol.HeapCPUCachedKnown != 0 {
		cached := w.Flags&protocol.HeapCPUCached != 0
		h.CPUCached = &cached
	}
	h.MaxSize = clampInt64(w.MaxSize)
	h.CMATotal = clampInt64(w.CMATotal)
	h.CMAFree = clampInt64(w.CMAFree)
	return h
}

func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// clip cuts s to n bytes for a wire field, keeping it valid UTF-8 and
// free of NULs.
func clip(s string, n int) string {
	b := []byte(s)
	for i, c := range b {
		if c == 0 {
			b[i] = ' '
		}
	}
	s = string(b)
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

func (c *conn) usage() (protocol.Message, error) {
	if c.features&protocol.FeatureUsage == 0 {
		return nil, protocol.Errorf(protocol.CodeInvalidArgument, "MyUsage needs the usage feature, which was not negotiated in Hello")
	}
	desc, lim := c.s.cfg.Authorizer.Describe(c.ctx, &c.id)
	u := c.s.cfg.Ledger.Usage(&c.id, lim)
	m := &protocol.Usage{
		UID: c.id.UID, GID: c.id.GID, PID: c.id.PID,
		Groups:     c.id.Groups,
		Comm:       clip(c.id.Comm, protocol.MaxNameLen),
		Bytes:      u.Bytes,
		Buffers:    u.Buffers,
		LimitBytes: u.LimitBytes, LimitBuffers: u.LimitBuffers, MaxAlloc: u.MaxAlloc,
		TotalBytes: u.TotalBytes, TotalBuffers: u.TotalBuffers,
		Heaps:  u.Heaps,
		Policy: clip(desc, protocol.MaxString),
	}
	if u.Accounted {
		m.Flags |= protocol.UsageAccounted
	}
	if len(m.Groups) > protocol.MaxGroups {
		m.Groups = m.Groups[:protocol.MaxGroups]
	}
	if len(m.Heaps) > protocol.MaxHeaps {
		m.Heaps = m.Heaps[:protocol.MaxHeaps]
	}
	return m, nil
}

func (c *conn) subscribe(m *protocol.Subscribe) (protocol.Message, error) {
	if c.features&protocol.FeatureEvents == 0 {
		return nil, protocol.Errorf(protocol.CodeInvalidArgument, "Subscribe needs the events feature, which was not negotiated in Hello")
	}
	mask := m.Mask & (protocol.EventsHeaps | protocol.EventsDevices)
	c.emu.Lock()
	c.mask = mask
	if mask == 0 {
		c.events, c.overflow = nil, false
	}
	c.emu.Unlock()
	return &protocol.Subscribed{Mask: mask}, nil
}

// allocate serves one Allocate. It returns the reply, the buffers to
// send with it (closed by the writer once sent) and what to call once
// they are closed (nil for nothing).
func (c *conn) allocate(m *protocol.Allocate) (protocol.Message, []*dmabuf.Buffer, func()) {
	start := time.Now()
	bufs, reply, handed, err := c.doAllocate(m)
	if err != nil {
		we := toWire(err)
		c.log.Info("allocation refused", "heap", m.Heap, "size", m.Size, "count", m.Count, "code", we.Code.String(), "err", we.Message)
		heapName := "" // only published names become metric labels
		if _, gerr := c.s.cfg.Heaps.Get(m.Heap); m.Heap != "" && gerr == nil {
			heapName = m.Heap
		}
		c.s.cfg.Metrics.AllocResult(heapName, we.Code, time.Since(start))
		switch we.Code {
		case protocol.CodeDenied, protocol.CodeQuota, protocol.CodeRateLimited:
			c.s.cfg.Metrics.Denied(metrics.Reason(we.Code))
		}
		return we, nil, nil
	}
	c.s.cfg.Metrics.AllocResult(reply.Heap, 0, time.Since(start))
	return reply, bufs, handed
}

func (c *conn) doAllocate(m *protocol.Allocate) ([]*dmabuf.Buffer, *protocol.Allocated, func(), error) {
	ctx := c.ctx
	if len(m.Devices) > 0 && c.features&protocol.FeatureDeviceSet == 0 {
		return nil, nil, nil, protocol.Errorf(protocol.CodeInvalidArgument, "a device set needs the device-set feature, which was not negotiated in Hello")
	}
	count := int(m.Count)
	if count > 1 && c.features&protocol.FeatureBatch == 0 {
		return nil, nil, nil, protocol.Errorf(protocol.CodeInvalidArgument, "count %d needs the batch feature, which was not negotiated in Hello", count)
	}
	if count > c.s.cfg.MaxBatch {
		return nil, nil, nil, protocol.Errorf(protocol.CodeInvalidArgument, "count %d exceeds this heapd's batch limit of %d", count, c.s.cfg.MaxBatch)
	}
	name := c.id.BufferName(m.Label, dmabuf.MaxNameLen)
	req := heap.Request{Heap: m.Heap, Devices: m.Devices, Name: name}
	var size int64 // for policy and ledger: the layout rule without devices
	switch m.Shape {
	case protocol.ShapeSize:
		if m.Size == 0 || m.Size > math.MaxInt64 {
			return nil, nil, nil, protocol.Errorf(protocol.CodeInvalidArgument, "size %d: must be 1..%d bytes", m.Size, int64(math.MaxInt64))
		}
		size = int64(m.Size)
		req.Size = size
	case protocol.ShapeImage:
		if c.features&protocol.FeatureImage == 0 {
			return nil, nil, nil, protocol.Errorf(protocol.CodeInvalidArgument, "an image description needs the image feature, which was not negotiated in Hello")
		}
		var err error
		if _, size, err = LinearLayout(m.Image); err != nil {
			return nil, nil, nil, err
		}
		req.Image = &heap.Image{Width: m.Image.Width, Height: m.Image.Height, Format: drm.Format(m.Image.Format), Modifier: drm.ModLinear}
	}
	// More than the machine's memory can never be met, and a kernel heap
	// (system) would try anyway, page by page, until the OOM killer
	// ends it: refuse before asking.
	if ram := physicalMemory(); ram > 0 && (size > ram || int64(count) > ram/size) {
		return nil, nil, nil, protocol.Errorf(protocol.CodeNoMemory, "%d × %d bytes is more than this machine's %d bytes of memory", count, size, ram)
	}

	// The heap: named, or (for a device set) the one the resolver picks
	// for the first buffer; the rest of a batch comes from the same heap.
	var (
		bufs  []*dmabuf.Buffer
		first *heap.Allocation
	)
	closeAll := func() {
		for _, b := range bufs {
			b.Close()
		}
	}
	if m.Heap == "" {
		// The resolver can only choose by allocating: first make sure
		// this peer may allocate at all, at this size.
		if _, err := c.s.cfg.Authorizer.AuthorizeAlloc(ctx, &c.id, AllocRequest{Size: size, Count: count}); err != nil {
			return nil, nil, nil, err
		}
		a, err := c.s.cfg.Heaps.Allocate(ctx, req)
		if err != nil {
			return nil, nil, nil, err
		}
		first = a
		bufs = append(bufs, a.Buffer)
		req.Heap = a.Heap
	}
	h, err := c.s.cfg.Heaps.Get(req.Heap)
	if err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	info := h.Info()
	areq := AllocRequest{Heap: info, Size: size, Count: count}
	lim, err := c.s.cfg.Authorizer.AuthorizeAlloc(ctx, &c.id, areq)
	if err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	res, err := c.s.cfg.Ledger.Reserve(&c.id, areq, lim)
	if err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	for len(bufs) < count {
		a, err := c.s.cfg.Heaps.Allocate(ctx, req)
		if err != nil {
			closeAll()
			res.Cancel()
			return nil, nil, nil, err
		}
		if first == nil {
			first = a
		}
		bufs = append(bufs, a.Buffer)
	}
	ids := make([]uint64, count)
	for i := range ids {
		ids[i] = c.s.ids.Add(1)
	}
	if err := res.Commit(bufs, ids); err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	reply := &protocol.Allocated{
		Size:    uint64(bufs[0].Size()),
		Heap:    clip(first.Heap, protocol.MaxNameLen),
		Backend: string(info.Backend),
		Name:    name,
		IDs:     ids,
	}
	if l := first.Layout; l != nil {
		reply.Layout = protocol.Layout{Width: l.Width, Height: l.Height, Format: uint32(l.Format), Pitch: l.Pitch, Offset: l.Offset, Modifier: uint64(l.Modifier)}
	}
	if bufs[0].Emulated() {
		reply.Flags |= protocol.BufferEmulated
	}
	if info.Contiguous {
		reply.Flags |= protocol.BufferContiguous
	}
	if info.DeviceImportable && !bufs[0].Emulated() {
		reply.Flags |= protocol.BufferDeviceImportable
	}
	c.log.Debug("allocated", "heap", first.Heap, "devices", m.Devices, "size", reply.Size, "count", count, "ids", ids, "name", name)
	var handed func()
	if h, ok := res.(HandOff); ok {
		handed = h.Handed
	}
	return bufs, reply, handed, nil
}

// physicalMemory is the machine's RAM in bytes, 0 if unknown.
func physicalMemory() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}
