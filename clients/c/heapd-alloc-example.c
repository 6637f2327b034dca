/*
 * heapd-alloc-example - allocate a scanout buffer through heapd, map it,
 * fill it, and print its layout.
 *
 *	heapd-alloc-example [-s SOCKET] [-H HEAP] [WIDTHxHEIGHT]
 *
 * It asks for an XRGB8888 image (640x480 unless told otherwise) from the
 * "scanout" heap - memory the default display can scan out - or, where
 * heapd publishes none (no display, or the emulated heap of a machine
 * without DMA-BUF heaps), from "system". The layout comes from the daemon:
 * always use the pitch, offset and size it answers, never your own.
 *
 * Build: cc heapd-alloc-example.c $(pkg-config --cflags --libs heapd-client)
 */
#define _GNU_SOURCE

#include <heapd-client.h>

#include <errno.h>
#include <linux/dma-buf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* cpu_access brackets CPU access to a DMA-BUF, so that caches are made
 * coherent with devices. A memfd (the emulated heap) needs none and fails
 * with ENOTTY. */
static int cpu_access(int fd, uint64_t flags)
{
	struct dma_buf_sync sync = {.flags = flags};
	while (ioctl(fd, DMA_BUF_IOCTL_SYNC, &sync) < 0) {
		if (errno == ENOTTY)
			return 0;
		if (errno != EINTR && errno != EAGAIN)
			return -1;
	}
	return 0;
}

static const char *fourcc_str(uint32_t f, char out[5])
{
	for (int i = 0; i < 4; i++)
		out[i] = (char)((f >> (8 * i)) & 0xff);
	out[4] = '\0';
	return out;
}

static int usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [-s SOCKET] [-H HEAP] [WIDTHxHEIGHT]\n", argv0);
	return 2;
}

int main(int argc, char **argv)
{
	const char *socket_path = NULL; /* NULL: $HEAPD_SOCKET or /run/heapd/socket */
	const char *heap = NULL;
	unsigned int width = 640, height = 480;
	int opt;
	while ((opt = getopt(argc, argv, "s:H:h")) != -1) {
		switch (opt) {
		case 's':
			socket_path = optarg;
			break;
		case 'H':
			heap = optarg;
			break;
		default:
			return usage(argv[0]);
		}
	}
	if (optind < argc && sscanf(argv[optind++], "%ux%u", &width, &height) != 2)
		return usage(argv[0]);
	if (optind != argc)
		return usage(argv[0]);

	struct heapd_client *c = heapd_client_new();
	if (!c) {
		perror("heapd_client_new");
		return 1;
	}
	int status = 1;
	struct heapd_heap_list *heaps = NULL;
	struct heapd_allocation a = {.count = 0};

	int r = heapd_client_connect(c, socket_path, 0);
	if (r < 0) {
		fprintf(stderr, "connecting to heapd: %s: %s\n", heapd_strerror(r),
			heapd_client_error_message(c));
		goto out;
	}
	struct heapd_server_info info;
	heapd_client_server_info(c, &info);
	printf("daemon:   %s, protocol %u.%u, features 0x%llx\n", info.server, info.major,
	       info.minor, (unsigned long long)info.features);

	/* Pick the heap: the one asked for, else scanout, else system. */
	if (!heap) {
		r = heapd_list_heaps(c, &heaps);
		if (r < 0) {
			fprintf(stderr, "listing heaps: %s: %s\n", heapd_strerror(r),
				heapd_client_error_message(c));
			goto out;
		}
		heap = heapd_heap_list_find(heaps, "scanout") ? "scanout" : "system";
		if (strcmp(heap, "scanout") != 0)
			printf("note:     no \"scanout\" heap here (no display device?): using \"system\"\n");
	}

	struct heapd_request req = {
		.heap = heap,
		.width = width,
		.height = height,
		.fourcc = HEAPD_FORMAT_XRGB8888,
		.modifier = HEAPD_MOD_LINEAR,
		.label = "example",
	};
	r = heapd_allocate(c, &req, &a);
	if (r < 0) {
		fprintf(stderr, "allocating %ux%u XR24 from %s: %s: %s\n", width, height, heap,
			heapd_strerror(r), heapd_client_error_message(c));
		goto out;
	}
	/* The fd is ours now; the connection is no longer needed for it. */
	char fmt[5];
	printf("buffer:   fd %d, %llu bytes, id %llu, debug name %s\n", a.fds[0],
	       (unsigned long long)a.size, (unsigned long long)a.ids[0], a.name);
	printf("heap:     %s (backend %s)%s%s%s\n", a.heap, a.backend,
	       a.flags & HEAPD_BUFFER_EMULATED ? ", emulated: CPU only" : "",
	       a.flags & HEAPD_BUFFER_CONTIGUOUS ? ", contiguous" : "",
	       a.flags & HEAPD_BUFFER_DEVICE_IMPORTABLE ? ", device importable" : "");
	printf("layout:   %ux%u %s, pitch %u, offset %u, modifier 0x%llx%s\n", a.width, a.height,
	       fourcc_str(a.fourcc, fmt), a.pitch, a.offset, (unsigned long long)a.modifier,
	       a.modifier == HEAPD_MOD_LINEAR ? " (LINEAR)" : "");

	if (a.size > SIZE_MAX) { /* a 32-bit process cannot map more than it can address */
		fprintf(stderr, "heapd-alloc-example: %llu bytes do not fit this process's address space\n",
			(unsigned long long)a.size);
		goto out;
	}
	size_t maplen = (size_t)a.size;
	unsigned char *map = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_SHARED, a.fds[0], 0);
	if (map == MAP_FAILED) {
		perror("mmap");
		goto out;
	}
	/* A gradient: red across, green down, in the layout heapd chose. */
	if (cpu_access(a.fds[0], DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE) < 0)
		perror("DMA_BUF_IOCTL_SYNC");
	for (uint32_t y = 0; y < a.height; y++) {
		uint32_t *row = (uint32_t *)(void *)(map + a.offset + (size_t)y * a.pitch);
		for (uint32_t x = 0; x < a.width; x++)
			row[x] = 0xff000000u | (x * 255 / a.width) << 16 | (y * 255 / a.height) << 8;
	}
	if (cpu_access(a.fds[0], DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE) < 0)
		perror("DMA_BUF_IOCTL_SYNC");
	uint32_t last = *(uint32_t *)(void *)(map + a.offset + (size_t)(a.height - 1) * a.pitch +
					      (size_t)(a.width - 1) * 4);
	printf("filled:   %ux%u gradient, last pixel 0x%08x\n", a.width, a.height, last);
	munmap(map, maplen);
	status = 0;

out:
	heapd_allocation_close(&a);
	heapd_heap_list_free(heaps);
	heapd_client_free(c);
	return status;
}
