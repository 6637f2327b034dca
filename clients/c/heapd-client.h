/*
 * heapd-client.h - C client for heapd, the DMA-BUF broker.
 *
 * heapd hands DMA-BUF file descriptors to unprivileged processes over a
 * Unix socket (docs/protocol.md). This library speaks that protocol with
 * nothing but libc:
 *
 *	struct heapd_client *c = heapd_client_new();
 *	int r = heapd_client_connect(c, NULL, 0);   // $HEAPD_SOCKET or /run/heapd/socket
 *	struct heapd_request req = {
 *		.heap = "scanout", .width = 1920, .height = 1080,
 *		.fourcc = HEAPD_FORMAT_XRGB8888,
 *	};
 *	struct heapd_allocation a;
 *	r = heapd_allocate(c, &req, &a);            // a.fds[0], a.pitch, a.size...
 *	if (r < 0)
 *		fprintf(stderr, "%s: %s\n", heapd_strerror(r), heapd_client_error_message(c));
 *	heapd_client_free(c);
 *
 * Conventions (those of libdrm and libseat):
 *
 *  - Functions returning int return 0 on success and a negative
 *    enum heapd_error on failure: -HEAPD_ERROR_DENIED, -HEAPD_ERROR_NO_DAEMON...
 *    heapd_client_error_message() then says what went wrong in words (the
 *    daemon's own message for its refusals: which rule, what would allow it).
 *  - Ownership is stated on every function. Every fd the library receives
 *    is close-on-exec (MSG_CMSG_CLOEXEC); on every error path none is left
 *    open.
 *  - No global state. A struct heapd_client is thread-compatible: use each
 *    one from one thread at a time (or lock around it); distinct clients
 *    are independent. heapd_strerror() and heapd_error_name() may be called
 *    from any thread.
 *  - The library never raises SIGPIPE (MSG_NOSIGNAL) and retries calls
 *    interrupted by signals.
 *  - After heapd_client_connect, a client reconnects by itself (as the Go
 *    client does): a call that finds the connection lost, e.g. after the
 *    daemon crashed and a new one took its socket, connects again and
 *    redoes the handshake. A request is sent at most once: one lost
 *    after it was sent fails with -HEAPD_ERROR_DISCONNECTED (the daemon
 *    may have acted on it) and the next call reconnects. Buffers already
 *    received are not affected by any of this.
 */
#ifndef HEAPD_CLIENT_H
#define HEAPD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version (not the protocol's). */
#define HEAPD_CLIENT_VERSION_MAJOR 1
#define HEAPD_CLIENT_VERSION_MINOR 0
#define HEAPD_CLIENT_VERSION_PATCH 0

/* The wire protocol version this library speaks. */
#define HEAPD_PROTOCOL_MAJOR 1
#define HEAPD_PROTOCOL_MINOR 0

/* Where heapd listens unless $HEAPD_SOCKET names another socket. */
#define HEAPD_DEFAULT_SOCKET "/run/heapd/socket"
#define HEAPD_SOCKET_ENV "HEAPD_SOCKET"

/* Limits of the protocol. */
#define HEAPD_MAX_BATCH 16   /* buffers in one allocation */
#define HEAPD_MAX_DEVICES 16 /* device ids in one allocation */
#define HEAPD_MAX_NAME 255   /* heap names, device ids, backends, debug names */
#define HEAPD_MAX_LABEL 31   /* a client's buffer label */
#define HEAPD_MAX_MESSAGE 65536
#define HEAPD_UNLIMITED UINT64_MAX /* a limit that is not set */

/* Default per-call timeout of a new client, in milliseconds. */
#define HEAPD_DEFAULT_TIMEOUT_MS 30000

/* Protocol features (Hello). heapd_client_connect() with features 0 asks
 * for every feature this library knows. */
#define HEAPD_FEATURE_IMAGE (UINT64_C(1) << 0)      /* allocate by image description */
#define HEAPD_FEATURE_BATCH (UINT64_C(1) << 1)      /* count > 1 */
#define HEAPD_FEATURE_EVENTS (UINT64_C(1) << 2)     /* (not used by this library) */
#define HEAPD_FEATURE_USAGE (UINT64_C(1) << 3)      /* heapd_my_usage() */
#define HEAPD_FEATURE_DEVICE_SET (UINT64_C(1) << 4) /* devices in a request */
#define HEAPD_FEATURES_ALL                                                     \
	(HEAPD_FEATURE_IMAGE | HEAPD_FEATURE_BATCH | HEAPD_FEATURE_USAGE |     \
	 HEAPD_FEATURE_DEVICE_SET)

/* DRM pixel formats heapd 1.0 lays out (drm_fourcc.h values). */
#define HEAPD_FOURCC(a, b, c, d)                                               \
	((uint32_t)(a) | ((uint32_t)(b) << 8) | ((uint32_t)(c) << 16) |        \
	 ((uint32_t)(d) << 24))
#define HEAPD_FORMAT_RGB565 HEAPD_FOURCC('R', 'G', '1', '6')
#define HEAPD_FORMAT_XRGB8888 HEAPD_FOURCC('X', 'R', '2', '4')
#define HEAPD_FORMAT_ARGB8888 HEAPD_FOURCC('A', 'R', '2', '4')
#define HEAPD_FORMAT_XBGR8888 HEAPD_FOURCC('X', 'B', '2', '4')
#define HEAPD_FORMAT_ABGR8888 HEAPD_FOURCC('A', 'B', '2', '4')
#define HEAPD_FORMAT_XRGB2101010 HEAPD_FOURCC('X', 'R', '3', '0')
#define HEAPD_FORMAT_XRGB16161616 HEAPD_FOURCC('X', 'R', '4', '8')
#define HEAPD_FORMAT_ARGB16161616 HEAPD_FOURCC('A', 'R', '4', '8')

/* DRM format modifiers. */
#define HEAPD_MOD_LINEAR UINT64_C(0)
#define HEAPD_MOD_INVALID UINT64_C(0x00ffffffffffffff) /* no preference */

/* struct heapd_heap.flags */
#define HEAPD_HEAP_CONTIGUOUS (1u << 0)
#define HEAPD_HEAP_DEVICE_IMPORTABLE (1u << 1)
#define HEAPD_HEAP_CPU_CACHED_KNOWN (1u << 2)
#define HEAPD_HEAP_CPU_CACHED (1u << 3)

/* struct heapd_allocation.flags */
#define HEAPD_BUFFER_EMULATED (1u << 0) /* sealed memfds: CPU only, no device imports them */
#define HEAPD_BUFFER_CONTIGUOUS (1u << 1)
#define HEAPD_BUFFER_DEVICE_IMPORTABLE (1u << 2)

/* struct heapd_usage.flags */
#define HEAPD_USAGE_ACCOUNTED (1u << 0) /* bytes/buffers follow buffers' real lifetimes */

/*
 * Errors. Functions return them negated. Values 1..255 are the daemon's
 * codes, numerically those of the wire protocol; a code this library does
 * not know is reported as HEAPD_ERROR_INTERNAL (the message keeps the
 * number). Values from 256 are the library's own and never travel.
 */
enum heapd_error {
	HEAPD_OK = 0,

	/* Sent by the daemon (docs/protocol.md, "Error"). */
	HEAPD_ERROR_PROTOCOL = 1,          /* the daemon got a malformed message; connection closed */
	HEAPD_ERROR_VERSION = 2,           /* no common protocol version; connection closed */
	HEAPD_ERROR_HANDSHAKE = 3,         /* a request before Hello; connection closed */
	HEAPD_ERROR_UNKNOWN_REQUEST = 4,   /* the daemon does not serve this request */
	HEAPD_ERROR_INVALID_ARGUMENT = 5,  /* a value out of range, or a feature not negotiated */
	HEAPD_ERROR_UNKNOWN_HEAP = 6,      /* no heap has that name */
	HEAPD_ERROR_NOT_SUPPORTED = 7,     /* a format or modifier heapd cannot lay out */
	HEAPD_ERROR_DENIED = 8,            /* policy refuses this user */
	HEAPD_ERROR_QUOTA = 9,             /* the allocation would exceed the user's quota */
	HEAPD_ERROR_NO_MEMORY = 10,        /* the heap could not supply the memory */
	HEAPD_ERROR_BUSY = 11,             /* too many connections; connection closed */
	HEAPD_ERROR_INTERNAL = 12,         /* the daemon failed */
	HEAPD_ERROR_SHUTTING_DOWN = 13,    /* the daemon is stopping; connection closed */
	HEAPD_ERROR_RATE_LIMITED = 14,     /* allocating faster than policy allows */
	HEAPD_ERROR_UNKNOWN_DEVICE = 15,   /* a device id names no DRM device */
	HEAPD_ERROR_NO_HEAP = 16,          /* no heap satisfied every device */

	/* The library's own. */
	HEAPD_ERROR_NO_DAEMON = 256,       /* nothing listens on the socket */
	HEAPD_ERROR_NOT_CONNECTED = 257,   /* heapd_client_connect was never called, or heapd_client_disconnect since */
	HEAPD_ERROR_DISCONNECTED = 258,    /* the connection was lost during the call; it may or may not have been served; the next call reconnects */
	HEAPD_ERROR_BAD_MESSAGE = 259,     /* the daemon sent bytes that break the protocol; connection closed */
	HEAPD_ERROR_BAD_ARGUMENT = 260,    /* the caller's arguments are invalid; nothing was sent */
	HEAPD_ERROR_TIMEOUT = 261,         /* no answer within the client's timeout */
	HEAPD_ERROR_SYSTEM = 262           /* a system call failed: heapd_client_errno() */
};

/* A short description of error (either sign), e.g. "policy denied the
 * request". Never NULL; static storage. */
const char *heapd_strerror(int error);

/* The error's name as in docs/protocol.md ("DENIED", "NO_DAEMON"), or
 * "UNKNOWN" for a value that is none. Never NULL; static storage. */
const char *heapd_error_name(int error);

/* A client: one connection to heapd, and what the last call said. */
struct heapd_client;

/* heapd_client_new allocates an unconnected client. It returns NULL (errno
 * ENOMEM) when memory is short. Free it with heapd_client_free(). */
struct heapd_client *heapd_client_new(void);

/* heapd_client_free disconnects and frees c. NULL is allowed. */
void heapd_client_free(struct heapd_client *c);

/*
 * heapd_client_connect connects to heapd and performs the version
 * handshake. socket_path NULL means $HEAPD_SOCKET when set and non-empty,
 * else HEAPD_DEFAULT_SOCKET. features are the HEAPD_FEATURE_* bits to ask
 * for; 0 means HEAPD_FEATURES_ALL. A connected client is disconnected
 * first.
 *
 * The client remembers the socket (the path as resolved now) and the
 * features, even when this attempt fails: every later call that finds no
 * live connection connects to them again and redoes the handshake first,
 * and a request that could not be sent because the connection had died
 * while idle (the daemon was restarted) is sent once on a new connection.
 * Such a call fails with this function's errors when the daemon is still
 * not there, and its message then starts with "...reconnecting: ".
 *
 * Errors: -HEAPD_ERROR_NO_DAEMON (no socket, or nobody listening),
 * -HEAPD_ERROR_BUSY (the daemon's connection limits), -HEAPD_ERROR_VERSION,
 * -HEAPD_ERROR_BAD_MESSAGE (not a heapd socket), -HEAPD_ERROR_TIMEOUT,
 * -HEAPD_ERROR_SYSTEM (e.g. EACCES: the socket is not reachable by this user).
 */
int heapd_client_connect(struct heapd_client *c, const char *socket_path,
			 uint64_t features);

/* heapd_client_disconnect closes the connection, if any, and forgets the
 * socket: later calls fail with -HEAPD_ERROR_NOT_CONNECTED until
 * heapd_client_connect. Buffers already received stay valid: they belong
 * to whoever holds their fds. */
void heapd_client_disconnect(struct heapd_client *c);

/* heapd_client_is_connected reports whether c has a live connection (as
 * far as the library knows: a daemon that just died is noticed by the
 * next call, which reconnects). 0 does not stop the next call from
 * reconnecting. */
int heapd_client_is_connected(const struct heapd_client *c);

/* heapd_client_set_timeout bounds each later call (connect, send and the
 * wait for the reply; a call that reconnects waits up to this long for
 * the handshake and again for its reply) to timeout_ms milliseconds; a negative value waits
 * forever. A new client uses HEAPD_DEFAULT_TIMEOUT_MS. A reply that comes
 * after its call timed out is discarded (its fds closed) by a later call. */
void heapd_client_set_timeout(struct heapd_client *c, int timeout_ms);

/* heapd_client_error_message describes the last failed call on c: the
 * daemon's message for its errors, the library's own otherwise. "" after a
 * call that succeeded. Valid until the next call on c. */
const char *heapd_client_error_message(const struct heapd_client *c);

/* heapd_client_errno is the errno behind the last -HEAPD_ERROR_SYSTEM or
 * -HEAPD_ERROR_NO_DAEMON, else 0. */
int heapd_client_errno(const struct heapd_client *c);

/* What the daemon said in its HelloReply. */
struct heapd_server_info {
	uint16_t major, minor;   /* negotiated protocol version */
	uint64_t features;       /* negotiated HEAPD_FEATURE_* bits */
	uint64_t uptime_ms;      /* how long the daemon had been running */
	uint16_t max_batch;      /* largest count an allocation may ask for */
	uint16_t max_in_flight;  /* requests the daemon serves at once per connection */
	uint32_t max_message;    /* largest packet the daemon accepts */
	char server[HEAPD_MAX_NAME + 1]; /* "heapd v1.0.0" */
};

/* heapd_client_server_info copies what the daemon said at the last
 * (re)connect into *out. -HEAPD_ERROR_NOT_CONNECTED without a live
 * connection (it does not reconnect). */
int heapd_client_server_info(const struct heapd_client *c,
			     struct heapd_server_info *out);

/* One heap the daemon publishes. Strings are NUL-terminated UTF-8. */
struct heapd_heap {
	char *name;        /* what to allocate by: "system", "contiguous", "scanout/<id>", "kernel/<name>" */
	char *backend;     /* "kernel", "udmabuf" or "emulated" */
	char *target;      /* what the name maps to ("/dev/dma_heap/system", "memfd") */
	char *kernel_name; /* the kernel's own heap name; may be "" */
	char *device;      /* a scanout heap's display device id; else "" */
	char *note;        /* why this mapping, in words; may be "" */
	uint32_t flags;    /* HEAPD_HEAP_* */
	uint64_t max_size; /* largest single allocation, 0 if unknown */
	uint64_t cma_total, cma_free; /* CMA pool bytes for contiguous heaps, else 0 */
};

/* heapd_list_heaps' answer: one allocation, freed by heapd_heap_list_free. */
struct heapd_heap_list {
	unsigned int count;
	struct heapd_heap *heaps;
	/* Backends that exist but could not be used, and why. */
	unsigned int problem_count;
	char **problems;
};

/* heapd_list_heaps asks for the published heaps. On success *out is the
 * caller's, to free with heapd_heap_list_free(); on failure it is NULL. */
int heapd_list_heaps(struct heapd_client *c, struct heapd_heap_list **out);

/* heapd_heap_list_free frees list. NULL is allowed. */
void heapd_heap_list_free(struct heapd_heap_list *list);

/* heapd_heap_list_find returns the heap called name in list, or NULL. */
const struct heapd_heap *heapd_heap_list_find(const struct heapd_heap_list *list,
					      const char *name);

/*
 * An allocation request: a size in bytes, or an image the daemon lays out.
 * Zero-initialise it and set what applies:
 *
 *	struct heapd_request r = { .heap = "system", .size = 1 << 20 };
 *	struct heapd_request r = { .heap = "scanout", .width = 640, .height = 480,
 *	                           .fourcc = HEAPD_FORMAT_XRGB8888 };
 */
struct heapd_request {
	/* The heap's name. NULL or "" with devices: the daemon's resolver
	 * chooses a heap every device accepts (HEAPD_FEATURE_DEVICE_SET). */
	const char *heap;
	/* Device ids ("platform-vkms") or driver names ("vkms") every buffer
	 * must import into (HEAPD_FEATURE_DEVICE_SET); NULL when device_count
	 * is 0. */
	const char *const *devices;
	unsigned int device_count;
	/* Bytes; 0 for an image. */
	uint64_t size;
	/* An image (HEAPD_FEATURE_IMAGE), when size is 0: width and height in
	 * pixels (1..16384), a HEAPD_FORMAT_*, and HEAPD_MOD_LINEAR (0) or
	 * HEAPD_MOD_INVALID. Use the layout of the answer, never your own. */
	uint32_t width, height;
	uint32_t fourcc;
	uint64_t modifier;
	/* Identical buffers wanted, all or none (more than 1 needs
	 * HEAPD_FEATURE_BATCH); 0 means 1. */
	unsigned int count;
	/* NULL, or at most HEAPD_MAX_LABEL bytes of UTF-8 without control
	 * characters, added to the buffers' debug name. */
	const char *label;
};

/* heapd_allocate's answer: count buffers and their common description. It
 * holds no pointers: keep it anywhere, copy it freely. */
struct heapd_allocation {
	unsigned int count;
	/* The buffers: DMA-BUF fds (sealed memfds on the emulated heap),
	 * O_RDWR | O_CLOEXEC, owned by the caller. -1 from fds[count] on. */
	int fds[HEAPD_MAX_BATCH];
	uint64_t ids[HEAPD_MAX_BATCH]; /* the daemon's ids of the buffers */
	uint32_t flags;                /* HEAPD_BUFFER_* */
	uint64_t size;                 /* each buffer's size in bytes (whole pages) */
	/* The image layout; all 0 for a size request. */
	uint32_t width, height, fourcc;
	uint32_t pitch;  /* bytes per row */
	uint32_t offset; /* where row 0 starts */
	uint64_t modifier;
	char heap[HEAPD_MAX_NAME + 1];    /* the heap that supplied the memory */
	char backend[HEAPD_MAX_NAME + 1]; /* "kernel", "udmabuf", "emulated" */
	char name[HEAPD_MAX_NAME + 1];    /* the buffers' debug name: "heapd:uid1000:weston:fb" */
};

/*
 * heapd_allocate asks the daemon for req->count buffers (1 when 0). On
 * success every fd in out->fds[0..out->count) is the caller's, to close
 * (heapd_allocation_close closes them all). On failure out->count is 0,
 * every out->fds[i] is -1 and nothing is left open.
 *
 * Daemon refusals: -HEAPD_ERROR_UNKNOWN_HEAP, -HEAPD_ERROR_DENIED,
 * -HEAPD_ERROR_QUOTA, -HEAPD_ERROR_NO_MEMORY, -HEAPD_ERROR_INVALID_ARGUMENT,
 * -HEAPD_ERROR_NOT_SUPPORTED... (the connection stays usable). Arguments the
 * protocol cannot carry give -HEAPD_ERROR_BAD_ARGUMENT without sending.
 */
int heapd_allocate(struct heapd_client *c, const struct heapd_request *req,
		   struct heapd_allocation *out);

/* heapd_allocation_close closes every fd in a and sets count to 0. NULL
 * is allowed. */
void heapd_allocation_close(struct heapd_allocation *a);

/* One heap's share of a heapd_usage. */
struct heapd_heap_usage {
	char *heap;
	uint64_t bytes, buffers;
	uint64_t limit_bytes, limit_buffers; /* HEAPD_UNLIMITED: none */
};

/* Who the daemon sees on this connection (from the socket, never from the
 * client) and what is charged to that uid. One allocation, freed by
 * heapd_usage_free. */
struct heapd_usage {
	uint32_t uid, gid;
	int32_t pid; /* in the daemon's pid namespace, 0 if unknown */
	unsigned int group_count;
	uint32_t *groups;
	char *comm;     /* process name */
	uint32_t flags; /* HEAPD_USAGE_ACCOUNTED */
	/* Charged now (0 unless HEAPD_USAGE_ACCOUNTED). */
	uint64_t bytes, buffers;
	/* Limits; HEAPD_UNLIMITED means none. */
	uint64_t limit_bytes, limit_buffers, max_alloc;
	/* Handed out to this uid since the daemon started. */
	uint64_t total_bytes, total_buffers;
	unsigned int heap_count;
	struct heapd_heap_usage *heaps;
	char *policy; /* which policy rule applies, in words */
};

/* heapd_my_usage asks what the daemon charges to this process's uid
 * (needs HEAPD_FEATURE_USAGE). On success *out is the caller's, to free
 * with heapd_usage_free(); on failure it is NULL. */
int heapd_my_usage(struct heapd_client *c, struct heapd_usage **out);

/* heapd_usage_free frees u. NULL is allowed. */
void heapd_usage_free(struct heapd_usage *u);

#ifdef __cplusplus
}
#endif

#endif /* HEAPD_CLIENT_H */
