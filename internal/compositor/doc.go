// Package compositor is a small privileged compositor over package drm: it
// puts a DMA-BUF on a display with atomic mode setting, captures what the
// display shows through a writeback connector, compares and saves
// captures, and measures page flips over a swapchain. heapd's tests and
// `heapctl demo scanout` use it to prove that a buffer a client got from
// heapd really scans out; it is not a general compositor.
//
// # Flow
//
// OpenDisplay opens a display device (vkms in the VM tier) as DRM master
// with the atomic and writeback client capabilities. Show imports a
// buffer, creates a framebuffer (ADDFB2) in the given layout and commits a
// modeset on a connected connector whose mode has the layout's size, its
// CRTC and the CRTC's primary plane; it returns a Screen. Screen.Capture
// moves the CRTC to the writeback connector for one commit, waits for the
// writeback out fence and moves it back: drivers such as vkms cannot feed a
// display and a writeback connector from one CRTC at once. Screen.Flip
// flips between the buffers of a swapchain with non-blocking commits and
// page-flip events and reports the rate against the mode's refresh rate.
// Screen.Close restores the display state found by Show as far as the
// kernel allows (else switches the pipeline off) and releases everything.
//
// Compare, CompareBuffers, ReadPixels, Image and WritePNG work on
// XRGB8888/ARGB8888 LINEAR pixels; FillPattern and PatternPixel make the
// known test pattern. vkms writes the X byte of an XRGB8888 capture as
// 0xff whatever the source held, so Compare counts X-only differences
// apart from colour differences.
//
// # Ownership and concurrency
//
// Nothing here takes ownership of a drm.Device or dmabuf.Buffer passed in:
// the caller closes them, after the Screen. A Screen owns its import,
// framebuffer, mode blob and (during Flip) event reader, and releases them
// on every path: a failing Show, Capture or Flip leaves nothing behind.
// Screen methods are safe for concurrent use; they run one at a time.
// Close is idempotent and nil-safe.
//
// # Privilege
//
// Show, Capture and Flip need DRM master on the display's primary node
// (root, or the seat's user when no other compositor runs); OpenDisplay
// takes it. The pixel helpers need none.
package compositor
