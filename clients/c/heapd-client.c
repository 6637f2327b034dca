/*
 * heapd-client.c - the heapd wire protocol (docs/protocol.md) in C11 and
 * libc. Every rule of the protocol's "Writing a client: checklist" is
 * applied here: one packet per message, little-endian fields read with
 * byte copies and bounds checks, no bytes left over, fds received
 * close-on-exec and closed with every message that is rejected.
 */
#define _GNU_SOURCE /* MSG_CMSG_CLOEXEC, SOCK_CLOEXEC, MSG_NOSIGNAL */

#include "heapd-client.h"

#include <errno.h>
#include <poll.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HEAPD_API __attribute__((visibility("default")))

#define MAGIC UINT32_C(0x50414548)
#define HEADER_SIZE 16u
#define MAX_FDS 16u
/* Room for one fd more than a message may carry, so that a peer sending
 * too many is seen as a count mismatch rather than silently cut. */
#define RECV_FDS (MAX_FDS + 1u)
#define MAX_STRING 4096u
#define MAX_HEAPS 256u
#define MAX_PROBLEMS 64u
#define MAX_GROUPS 1024u
#define REPLY_BIT 0x8000u

/* The largest request this library builds: Allocate with every string at
 * its limit (36 fixed bytes, heap, 16 devices, label). */
#define SEND_MAX                                                               \
	(HEADER_SIZE + 36u + (2u + HEAPD_MAX_NAME) + 2u +                      \
	 HEAPD_MAX_DEVICES * (2u + HEAPD_MAX_NAME) + (2u + HEAPD_MAX_LABEL))

enum msg_type {
	T_HELLO = 0x0001,
	T_LIST_HEAPS = 0x0002,
	T_ALLOCATE = 0x0003,
	T_MY_USAGE = 0x0004,
	T_ERROR = 0x8000,
	T_HELLO_REPLY = 0x8001,
	T_HEAPS = 0x8002,
	T_ALLOCATED = 0x8003,
	T_USAGE = 0x8004,
	T_SUBSCRIBED = 0x8005,
	T_EVENT = 0xC001
};

struct heapd_client {
	int fd;          /* the socket, -1 when not connected */
	/* Where heapd_client_connect last pointed the client, and the
	 * features it asked for: a call that finds the connection gone dials
	 * them again. have_addr is 0 before the first heapd_client_connect
	 * and after heapd_client_disconnect. */
	int have_addr;
	struct sockaddr_un addr;
	uint64_t features;
	uint32_t serial; /* last serial used */
	int timeout_ms;
	int sys_errno;
	struct heapd_server_info info;
	char msg[MAX_STRING + 512];

	/* The packet being handled: its header, body and fds. */
	uint16_t type, nfds;
	uint32_t rserial;
	size_t rlen; /* body length */
	int rfds[RECV_FDS];
	unsigned int rnfds;

	unsigned char sbuf[SEND_MAX];
	unsigned char rbuf[HEAPD_MAX_MESSAGE];
};

/* ---- errors ---- */

struct error_desc {
	int code;
	const char *name, *text;
};

static const struct error_desc errors[] = {
	{HEAPD_OK, "OK", "success"},
	{HEAPD_ERROR_PROTOCOL, "PROTOCOL", "heapd received a malformed message"},
	{HEAPD_ERROR_VERSION, "VERSION", "no protocol version in common with heapd"},
	{HEAPD_ERROR_HANDSHAKE, "HANDSHAKE", "request sent before the handshake"},
	{HEAPD_ERROR_UNKNOWN_REQUEST, "UNKNOWN_REQUEST", "heapd does not serve this request"},
	{HEAPD_ERROR_INVALID_ARGUMENT, "INVALID_ARGUMENT", "heapd refused an argument"},
	{HEAPD_ERROR_UNKNOWN_HEAP, "UNKNOWN_HEAP", "no heap has that name"},
	{HEAPD_ERROR_NOT_SUPPORTED, "NOT_SUPPORTED", "heapd does not offer this format or modifier"},
	{HEAPD_ERROR_DENIED, "DENIED", "heapd's policy denied the request"},
	{HEAPD_ERROR_QUOTA, "QUOTA", "the allocation would exceed the quota"},
	{HEAPD_ERROR_NO_MEMORY, "NO_MEMORY", "the heap is out of memory"},
	{HEAPD_ERROR_BUSY, "BUSY", "heapd has too many connections"},
	{HEAPD_ERROR_INTERNAL, "INTERNAL", "heapd failed internally"},
	{HEAPD_ERROR_SHUTTING_DOWN, "SHUTTING_DOWN", "heapd is shutting down"},
	{HEAPD_ERROR_RATE_LIMITED, "RATE_LIMITED", "allocating faster than the policy allows"},
	{HEAPD_ERROR_UNKNOWN_DEVICE, "UNKNOWN_DEVICE", "no such display or render device"},
	{HEAPD_ERROR_NO_HEAP, "NO_HEAP", "no heap suits every device"},
	{HEAPD_ERROR_NO_DAEMON, "NO_DAEMON", "heapd is not running"},
	{HEAPD_ERROR_NOT_CONNECTED, "NOT_CONNECTED", "not connected to heapd"},
	{HEAPD_ERROR_DISCONNECTED, "DISCONNECTED", "the connection to heapd was lost"},
	{HEAPD_ERROR_BAD_MESSAGE, "BAD_MESSAGE", "heapd sent a malformed message"},
	{HEAPD_ERROR_BAD_ARGUMENT, "BAD_ARGUMENT", "invalid argument"},
	{HEAPD_ERROR_TIMEOUT, "TIMEOUT", "heapd did not answer in time"},
	{HEAPD_ERROR_SYSTEM, "SYSTEM", "a system call failed"},
};

static const struct error_desc *find_error(int error)
{
	if (error < 0)
		error = -error;
	for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
		if (errors[i].code == error)
			return &errors[i];
	return NULL;
}

HEAPD_API const char *heapd_strerror(int error)
{
	const struct error_desc *d = find_error(error);
	return d ? d->text : "unknown heapd error";
}

HEAPD_API const char *heapd_error_name(int error)
{
	const struct error_desc *d = find_error(error);
	return d ? d->name : "UNKNOWN";
}

/* errno_text is strerror without its thread-safety problem. */
static const char *errno_text(int e, char *buf, size_t n)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
	return strerror_r(e, buf, n);
#else
	if (strerror_r(e, buf, n) != 0)
		snprintf(buf, n, "errno %d", e);
	return buf;
#endif
}

/* fail records what went wrong and returns -error. */
__attribute__((format(printf, 3, 4))) static int fail(struct heapd_client *c, int error,
						      const char *format, ...)
{
	va_list ap;
	va_start(ap, format);
	vsnprintf(c->msg, sizeof c->msg, format, ap);
	va_end(ap);
	return -error;
}

/* fail_errno is fail with errno e appended and kept. */
__attribute__((format(printf, 4, 5))) static int
fail_errno(struct heapd_client *c, int error, int e, const char *format, ...)
{
	char buf[128];
	va_list ap;
	va_start(ap, format);
	int n = vsnprintf(c->msg, sizeof c->msg, format, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof c->msg)
		snprintf(c->msg + n, sizeof c->msg - (size_t)n, ": %s",
			 errno_text(e, buf, sizeof buf));
	c->sys_errno = e;
	return -error;
}

static int fatal_code(uint32_t code)
{
	return code == HEAPD_ERROR_PROTOCOL || code == HEAPD_ERROR_VERSION ||
	       code == HEAPD_ERROR_HANDSHAKE || code == HEAPD_ERROR_BUSY ||
	       code == HEAPD_ERROR_SHUTTING_DOWN;
}

/* ---- fds and time ---- */

static void close_fds(int *fds, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

static void drop_packet_fds(struct heapd_client *c)
{
	close_fds(c->rfds, c->rnfds);
	c->rnfds = 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* deadline_in returns the deadline of a call starting now, -1 for none. */
static int64_t deadline_in(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* poll_timeout is what is left until deadline, for poll(2). */
static int poll_timeout(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t left = deadline - now_ms();
	if (left <= 0)
		return 0;
	return left > 1000000 ? 1000000 : (int)left;
}

/* wait_for polls the socket for events until deadline: 1 ready, 0 timed
 * out, -1 error (errno). */
static int wait_for(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int n = poll(&p, 1, poll_timeout(deadline));
		if (n < 0 && errno == EINTR)
			continue;
		return n;
	}
}

static void close_socket(struct heapd_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	drop_packet_fds(c);
}

/* ---- UTF-8 (the protocol's strings are UTF-8 without NUL) ---- */

/* utf8_valid follows Go's utf8.ValidString, the daemon's rule: no
 * overlong forms, no surrogates, nothing above U+10FFFF; and no NUL. */
static int utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char b = s[i];
		if (b == 0)
			return 0;
		if (b < 0x80) {
			i++;
			continue;
		}
		size_t len;
		unsigned char lo = 0x80, hi = 0xbf;
		if (b >= 0xc2 && b <= 0xdf) {
			len = 2;
		} else if (b >= 0xe0 && b <= 0xef) {
			len = 3;
			if (b == 0xe0)
				lo = 0xa0;
			else if (b == 0xed)
				hi = 0x9f;
		} else if (b >= 0xf0 && b <= 0xf4) {
			len = 4;
			if (b == 0xf0)
				lo = 0x90;
			else if (b == 0xf4)
				hi = 0x8f;
		} else {
			return 0;
		}
		if (n - i < len)
			return 0;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return 0;
		for (size_t k = 2; k < len; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				return 0;
		i += len;
	}
	return 1;
}

/* ---- decoding: a cursor over a body whose first failure sticks ---- */

struct rd {
	struct heapd_client *c;
	const unsigned char *p;
	size_t n, off;
	const char *msgname;
	int bad;
};

__attribute__((format(printf, 2, 3))) static void rd_fail(struct rd *r, const char *format,
							  ...)
{
	if (r->bad)
		return;
	r->bad = 1;
	int n = snprintf(r->c->msg, sizeof r->c->msg, "malformed %s from heapd: ",
			 r->msgname);
	if (n < 0 || (size_t)n >= sizeof r->c->msg)
		return;
	va_list ap;
	va_start(ap, format);
	vsnprintf(r->c->msg + n, sizeof r->c->msg - (size_t)n, format, ap);
	va_end(ap);
}

static const unsigned char *rd_take(struct rd *r, size_t n, const char *what)
{
	if (r->bad)
		return NULL;
	if (n > r->n - r->off) {
		rd_fail(r, "%s at body offset %zu: need %zu bytes, %zu left", what, r->off, n,
			r->n - r->off);
		return NULL;
	}
	const unsigned char *p = r->p + r->off;
	r->off += n;
	return p;
}

static uint16_t get_u16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
	return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static uint16_t rd_u16(struct rd *r, const char *what)
{
	const unsigned char *p = rd_take(r, 2, what);
	return p ? get_u16(p) : 0;
}

static uint32_t rd_u32(struct rd *r, const char *what)
{
	const unsigned char *p = rd_take(r, 4, what);
	return p ? get_u32(p) : 0;
}

static uint64_t rd_u64(struct rd *r, const char *what)
{
	const unsigned char *p = rd_take(r, 8, what);
	return p ? get_u64(p) : 0;
}

/* rd_str reads a string of at most max bytes into dst (room for max + 1)
 * and NUL-terminates it. It returns the length written. */
static size_t rd_str(struct rd *r, const char *what, size_t max, char *dst)
{
	dst[0] = '\0';
	size_t n = rd_u16(r, what);
	if (r->bad)
		return 0;
	if (n > max) {
		rd_fail(r, "%s: %zu bytes, at most %zu allowed", what, n, max);
		return 0;
	}
	const unsigned char *p = rd_take(r, n, what);
	if (!p)
		return 0;
	if (!utf8_valid(p, n)) {
		rd_fail(r, "%s: not valid UTF-8, or contains a NUL byte", what);
		return 0;
	}
	memcpy(dst, p, n);
	dst[n] = '\0';
	return n;
}

/* rd_arena_str reads a string into an arena that has room for it: a
 * string of n bytes takes n + 2 bytes of the body and n + 1 of the arena,
 * so an arena as large as the body always suffices. */
static char *rd_arena_str(struct rd *r, const char *what, size_t max, char **arena)
{
	char *s = *arena;
	size_t n = rd_str(r, what, max, s);
	*arena += n + 1;
	return s;
}

/* rd_count reads an element count, checking it against max and against
 * the bytes left (each element takes at least min_size), so that a hostile
 * count cannot make the library allocate more than the packet holds. */
static unsigned int rd_count(struct rd *r, const char *what, unsigned int max,
			     size_t min_size)
{
	unsigned int n = rd_u16(r, what);
	if (r->bad)
		return 0;
	if (n > max) {
		rd_fail(r, "%s: %u, at most %u allowed", what, n, max);
		return 0;
	}
	if ((size_t)n * min_size > r->n - r->off) {
		rd_fail(r, "%s: %u elements cannot fit in the %zu bytes left", what, n,
			r->n - r->off);
		return 0;
	}
	return n;
}

/* rd_end fails the cursor if bytes are left over; it returns whether the
 * body was good. */
static int rd_end(struct rd *r)
{
	if (!r->bad && r->off != r->n)
		rd_fail(r, "%zu trailing bytes after the last field", r->n - r->off);
	return !r->bad;
}

static struct rd body_reader(struct heapd_client *c, const char *msgname)
{
	struct rd r = {.c = c, .p = c->rbuf + HEADER_SIZE, .n = c->rlen, .msgname = msgname};
	return r;
}

/* ---- encoding ---- */

struct wr {
	unsigned char *p;
	size_t off;
};

static void wr_u8(struct wr *w, uint8_t v)
{
	w->p[w->off++] = v;
}

static void wr_u16(struct wr *w, uint16_t v)
{
	w->p[w->off++] = (unsigned char)(v & 0xff);
	w->p[w->off++] = (unsigned char)(v >> 8);
}

static void wr_u32(struct wr *w, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		w->p[w->off++] = (unsigned char)(v >> (8 * i));
}

static void wr_u64(struct wr *w, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		w->p[w->off++] = (unsigned char)(v >> (8 * i));
}

/* wr_str writes a string already checked against its limit (the buffer is
 * sized for every field at its limit). */
static void wr_str(struct wr *w, const char *s, size_t n)
{
	wr_u16(w, (uint16_t)n);
	memcpy(w->p + w->off, s, n);
	w->off += n;
}

static struct wr body_writer(struct heapd_client *c)
{
	struct wr w = {.p = c->sbuf + HEADER_SIZE, .off = 0};
	return w;
}

/* ---- transport ---- */

/* The peer is gone (EOF, EPIPE, ECONNRESET). */
static int disconnected(struct heapd_client *c, const char *how)
{
	close_socket(c);
	return fail(c, HEAPD_ERROR_DISCONNECTED, "heapd %s (did the daemon stop or crash?)",
		    how);
}

/* A packet broke the protocol: its fds are closed and so is the
 * connection, whose state can no longer be trusted. c->msg says why. */
static int bad_message(struct heapd_client *c)
{
	close_socket(c);
	return -HEAPD_ERROR_BAD_MESSAGE;
}

__attribute__((format(printf, 2, 3))) static int bad(struct heapd_client *c,
						     const char *format, ...)
{
	va_list ap;
	va_start(ap, format);
	vsnprintf(c->msg, sizeof c->msg, format, ap);
	va_end(ap);
	return bad_message(c);
}

/*
 * recv_packet receives one packet into c->rbuf and c->rfds and checks its
 * header against what arrived. On error the packet's fds are closed, and
 * so is the connection unless the error is a timeout.
 */
static int recv_packet(struct heapd_client *c, int64_t deadline)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * RECV_FDS)];
	} control;
	ssize_t n;
	struct msghdr msg;

	int reset = 0;
	drop_packet_fds(c);
	for (;;) {
		struct iovec iov = {.iov_base = c->rbuf, .iov_len = sizeof c->rbuf};
		memset(&msg, 0, sizeof msg);
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof control.buf;
		n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int ready = wait_for(c->fd, POLLIN, deadline);
			if (ready == 0)
				return fail(c, HEAPD_ERROR_TIMEOUT,
					    "heapd did not answer within %d ms", c->timeout_ms);
			if (ready < 0) {
				int e = errno;
				close_socket(c);
				return fail_errno(c, HEAPD_ERROR_SYSTEM, e, "poll");
			}
			continue;
		}
		if (errno == ECONNRESET) {
			/* The peer closed with our request unread. The kernel
			 * reports that before the packets it had queued for us
			 * (a last Error saying why, a reply): read on until
			 * end of file. */
			if (reset++)
				return disconnected(c, "reset the connection");
			continue;
		}
		int e = errno;
		close_socket(c);
		return fail_errno(c, HEAPD_ERROR_SYSTEM, e, "recvmsg");
	}

	/* Take every fd that arrived before judging the packet, so that each
	 * is closed whatever is wrong with it. */
	int stray = 0;
	if (msg.msg_controllen > 0) {
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			size_t bytes = cm->cmsg_len - CMSG_LEN(0);
			const unsigned char *data = CMSG_DATA(cm);
			for (size_t i = 0; i + sizeof(int) <= bytes; i += sizeof(int)) {
				int fd;
				memcpy(&fd, data + i, sizeof fd);
				if (c->rnfds < RECV_FDS) {
					c->rfds[c->rnfds++] = fd;
				} else {
					close(fd);
					stray = 1;
				}
			}
		}
	}
	if (n == 0 && msg.msg_controllen == 0)
		return disconnected(c, "closed the connection");
	if (msg.msg_flags & MSG_CTRUNC)
		return bad(c, "heapd sent more file descriptors than fit (MSG_CTRUNC): more "
			      "than %u fds, or this process is at its fd limit (RLIMIT_NOFILE)",
			   MAX_FDS);
	if (stray)
		return bad(c, "heapd sent more than %u file descriptors", MAX_FDS);
	if (msg.msg_flags & MSG_TRUNC)
		return bad(c, "heapd sent a packet larger than %u bytes (MSG_TRUNC)",
			   HEAPD_MAX_MESSAGE);
	if ((size_t)n < HEADER_SIZE)
		return bad(c, "heapd sent a %zd-byte packet, shorter than the %u-byte header", n,
			   HEADER_SIZE);

	const unsigned char *h = c->rbuf;
	c->type = get_u16(h);
	c->nfds = get_u16(h + 2);
	c->rserial = get_u32(h + 4);
	uint32_t length = get_u32(h + 8);
	uint32_t flags = get_u32(h + 12);
	c->rlen = (size_t)n - HEADER_SIZE;
	if (length != c->rlen)
		return bad(c, "heapd's message 0x%04x says %u body bytes, the packet has %zu",
			   c->type, length, c->rlen);
	if (flags != 0)
		return bad(c, "heapd's message 0x%04x has header flags 0x%x; they must be 0",
			   c->type, flags);
	if (c->nfds != c->rnfds)
		return bad(c, "heapd's message 0x%04x says %u fds, %u arrived", c->type, c->nfds,
			   c->rnfds);
	if (c->type != T_ALLOCATED && c->rnfds != 0)
		return bad(c, "heapd's message 0x%04x carries no fds, %u arrived", c->type,
			   c->rnfds);
	return 0;
}

/* send_packet sends the request of body_len bytes in buf (whose first
 * HEADER_SIZE bytes it fills with the header). */
static int send_packet(struct heapd_client *c, unsigned char *buf, uint16_t type,
		       uint32_t serial, size_t body_len, int64_t deadline)
{
	unsigned char *h = buf;
	struct wr w = {.p = h, .off = 0};
	wr_u16(&w, type);
	wr_u16(&w, 0);
	wr_u32(&w, serial);
	wr_u32(&w, (uint32_t)body_len);
	wr_u32(&w, 0);
	for (;;) {
		ssize_t n = send(c->fd, buf, HEADER_SIZE + body_len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n >= 0) {
			if ((size_t)n != HEADER_SIZE + body_len) {
				close_socket(c);
				return fail(c, HEAPD_ERROR_SYSTEM, "short send: %zd of %zu bytes", n,
					    HEADER_SIZE + body_len);
			}
			return 0;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int ready = wait_for(c->fd, POLLOUT, deadline);
			if (ready == 0)
				return fail(c, HEAPD_ERROR_TIMEOUT,
					    "heapd did not take the request within %d ms",
					    c->timeout_ms);
			if (ready < 0) {
				int e = errno;
				close_socket(c);
				return fail_errno(c, HEAPD_ERROR_SYSTEM, e, "poll");
			}
			continue;
		}
		if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)
			return -HEAPD_ERROR_DISCONNECTED;
		int e = errno;
		close_socket(c);
		return fail_errno(c, HEAPD_ERROR_SYSTEM, e, "send");
	}
}

/* daemon_error turns the Error message in c->rbuf into -code and the
 * daemon's message. */
static int daemon_error(struct heapd_client *c)
{
	struct rd r = body_reader(c, "Error");
	uint32_t code = rd_u32(&r, "code");
	if (!r.bad && code == 0)
		rd_fail(&r, "error code 0");
	char buf[MAX_STRING + 1];
	rd_str(&r, "message", MAX_STRING, buf);
	if (!rd_end(&r))
		return bad_message(c);
	if (code > 255 || !find_error((int)code)) {
		snprintf(c->msg, sizeof c->msg, "error code %u (unknown to this library): %s",
			 code, buf);
		code = HEAPD_ERROR_INTERNAL;
	} else {
		snprintf(c->msg, sizeof c->msg, "%s", buf);
	}
	if (fatal_code(code))
		close_socket(c);
	return -(int)code;
}

/* skip_event checks an Event (sent unasked; this library subscribes to
 * nothing, but a reader must cope with them between a request and its
 * reply). */
static int skip_event(struct heapd_client *c)
{
	char name[HEAPD_MAX_NAME + 1];
	struct rd r = body_reader(c, "Event");
	rd_u64(&r, "seq");
	uint16_t kind = rd_u16(&r, "kind");
	if (!r.bad && (kind < 1 || kind > 6))
		rd_fail(&r, "unknown event kind %u", kind);
	rd_str(&r, "name", HEAPD_MAX_NAME, name);
	return rd_end(&r) ? 0 : bad_message(c);
}

/*
 * exchange sends the request of type and body_len bytes in buf on the
 * current connection and waits for its reply, which is left in c->rbuf
 * (and its fds in c->rfds, owned by the caller from then on). Events and
 * replies to calls that timed out are skipped; an Error reply becomes
 * -code.
 *
 * *unsent is set when the connection was found gone before the request
 * left (the send failed: EPIPE, ECONNRESET, ENOTCONN) and the daemon had
 * queued no Error saying why: nothing reached any daemon, so the request
 * may be sent again on a new connection. Once the request is sent, a lost
 * connection is never reported as unsent: the daemon may have acted on it
 * (an allocation is not idempotent).
 */
static int exchange(struct heapd_client *c, unsigned char *buf, uint16_t type,
		    size_t body_len, int *unsent)
{
	*unsent = 0;
	int64_t deadline = deadline_in(c->timeout_ms);
	uint32_t serial = ++c->serial;
	if (serial == 0)
		serial = c->serial = 1;
	int r = send_packet(c, buf, type, serial, body_len, deadline);
	if (r == -HEAPD_ERROR_DISCONNECTED) {
		/* The daemon closed the connection. It may have said why first
		 * (BUSY, SHUTTING_DOWN): read what is queued without waiting. */
		while (recv_packet(c, now_ms()) == 0) {
			if (c->type == T_ERROR && (c->rserial == 0 || c->rserial == serial)) {
				r = daemon_error(c);
				close_socket(c);
				return r;
			}
			drop_packet_fds(c);
		}
		*unsent = 1;
		return disconnected(c, "closed the connection");
	}
	if (r < 0)
		return r;
	for (;;) {
		r = recv_packet(c, deadline);
		if (r < 0)
			return r;
		if (c->rserial == 0) {
			if (c->type == T_EVENT) {
				if ((r = skip_event(c)) < 0)
					return r;
				continue;
			}
			if (c->type == T_ERROR) {
				/* About the connection (over a limit, shutting
				 * down): it ends here. */
				r = daemon_error(c);
				close_socket(c);
				return r;
			}
			return bad(c, "heapd sent message 0x%04x with serial 0", c->type);
		}
		if (c->rserial != serial) {
			/* The reply to a call that timed out. */
			drop_packet_fds(c);
			continue;
		}
		if (c->type == T_ERROR)
			return daemon_error(c);
		if (c->type != (type | REPLY_BIT))
			return bad(c, "heapd answered request 0x%04x with message 0x%04x", type,
				   c->type);
		return 0;
	}
}

static int dial(struct heapd_client *c);

/* prefix_msg puts prefix before c->msg, cutting the end if need be. */
static void prefix_msg(struct heapd_client *c, const char *prefix)
{
	size_t p = strlen(prefix), n = strlen(c->msg);
	if (p >= sizeof c->msg)
		return;
	if (n > sizeof c->msg - 1 - p)
		n = sizeof c->msg - 1 - p;
	memmove(c->msg + p, c->msg, n);
	memcpy(c->msg, prefix, p);
	c->msg[p + n] = '\0';
}

/* redial connects again to where heapd_client_connect pointed c. */
static int redial(struct heapd_client *c, const char *why)
{
	int r = dial(c);
	if (r < 0)
		prefix_msg(c, why);
	return r;
}

/*
 * call is exchange on a live connection, reconnecting as the Go client
 * does: a client whose connection was lost (and not closed by
 * heapd_client_disconnect) dials the remembered socket and shakes hands
 * first; and a request that could not be sent because the connection
 * had died while idle (the daemon was restarted) is sent once more on a
 * new connection. A request that was sent is never sent again.
 */
static int call(struct heapd_client *c, uint16_t type, size_t body_len)
{
	int fresh = 0;
	if (c->fd < 0) {
		if (!c->have_addr)
			return fail(c, HEAPD_ERROR_NOT_CONNECTED,
				    "not connected to heapd (call heapd_client_connect first)");
		int r = redial(c, "reconnecting to heapd: ");
		if (r < 0)
			return r;
		fresh = 1;
	}
	int unsent;
	int r = exchange(c, c->sbuf, type, body_len, &unsent);
	if (r < 0 && unsent && !fresh) {
		if ((r = redial(c, "heapd closed the connection (did it restart?); "
				   "reconnecting: ")) < 0)
			return r;
		r = exchange(c, c->sbuf, type, body_len, &unsent);
		if (r == 0) {
			/* Recovered: the lost connection is no error. */
			c->msg[0] = '\0';
			c->sys_errno = 0;
		}
	}
	return r;
}

/* begin starts a public call: it forgets the previous call's error. */
static void begin(struct heapd_client *c)
{
	c->msg[0] = '\0';
	c->sys_errno = 0;
}

/* ---- the client ---- */

HEAPD_API struct heapd_client *heapd_client_new(void)
{
	struct heapd_client *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->fd = -1;
	c->timeout_ms = HEAPD_DEFAULT_TIMEOUT_MS;
	for (unsigned int i = 0; i < RECV_FDS; i++)
		c->rfds[i] = -1;
	return c;
}

HEAPD_API void heapd_client_free(struct heapd_client *c)
{
	if (!c)
		return;
	close_socket(c);
	free(c);
}

HEAPD_API void heapd_client_disconnect(struct heapd_client *c)
{
	if (!c)
		return;
	close_socket(c);
	c->have_addr = 0;
}

HEAPD_API int heapd_client_is_connected(const struct heapd_client *c)
{
	return c && c->fd >= 0;
}

static void set_send_timeout(struct heapd_client *c)
{
	struct timeval tv = {0, 0}; /* 0: block */
	if (c->timeout_ms >= 0) {
		tv.tv_sec = c->timeout_ms / 1000;
		tv.tv_usec = (c->timeout_ms % 1000) * 1000;
		if (c->timeout_ms == 0)
			tv.tv_usec = 1; /* 0 would mean forever */
	}
	/* Bounds connect(2) on a full backlog; sends use poll. */
	(void)setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

HEAPD_API void heapd_client_set_timeout(struct heapd_client *c, int timeout_ms)
{
	if (!c)
		return;
	c->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
	if (c->fd >= 0)
		set_send_timeout(c);
}

HEAPD_API const char *heapd_client_error_message(const struct heapd_client *c)
{
	return c ? c->msg : "no client";
}

HEAPD_API int heapd_client_errno(const struct heapd_client *c)
{
	return c ? c->sys_errno : 0;
}

HEAPD_API int heapd_client_server_info(const struct heapd_client *c,
				       struct heapd_server_info *out)
{
	if (!c || !out)
		return -HEAPD_ERROR_BAD_ARGUMENT;
	if (c->fd < 0)
		return -HEAPD_ERROR_NOT_CONNECTED;
	*out = c->info;
	return 0;
}

/* hello shakes hands on a new connection. Its packet has a buffer of
 * its own: c->sbuf may hold a request waiting for this connection. */
static int hello(struct heapd_client *c, uint64_t features)
{
	unsigned char buf[HEADER_SIZE + 16];
	struct wr w = {.p = buf + HEADER_SIZE, .off = 0};
	wr_u32(&w, MAGIC);
	wr_u16(&w, HEAPD_PROTOCOL_MAJOR);
	wr_u16(&w, HEAPD_PROTOCOL_MINOR);
	wr_u64(&w, features);
	int unsent;
	int r = exchange(c, buf, T_HELLO, w.off, &unsent);
	if (r < 0)
		return r;

	struct heapd_server_info *in = &c->info;
	struct rd rd = body_reader(c, "HelloReply");
	uint32_t magic = rd_u32(&rd, "magic");
	if (!rd.bad && magic != MAGIC)
		rd_fail(&rd, "magic 0x%08x, want 0x%08x: this socket is not heapd's", magic,
			MAGIC);
	in->major = rd_u16(&rd, "major");
	if (!rd.bad && in->major != HEAPD_PROTOCOL_MAJOR)
		rd_fail(&rd, "protocol major version %u; this library speaks %u", in->major,
			HEAPD_PROTOCOL_MAJOR);
	in->minor = rd_u16(&rd, "minor");
	if (!rd.bad && in->minor > HEAPD_PROTOCOL_MINOR)
		rd_fail(&rd, "minor version %u is above the %u this library asked for",
			in->minor, HEAPD_PROTOCOL_MINOR);
	in->features = rd_u64(&rd, "features");
	if (!rd.bad && (in->features & ~features) != 0)
		rd_fail(&rd, "features 0x%llx include some not asked for (0x%llx)",
			(unsigned long long)in->features, (unsigned long long)features);
	in->uptime_ms = rd_u64(&rd, "uptime");
	in->max_batch = rd_u16(&rd, "max batch");
	if (!rd.bad && (in->max_batch < 1 || in->max_batch > HEAPD_MAX_BATCH))
		rd_fail(&rd, "max batch %u: must be 1..%u", in->max_batch, HEAPD_MAX_BATCH);
	in->max_in_flight = rd_u16(&rd, "max in flight");
	in->max_message = rd_u32(&rd, "max message");
	rd_str(&rd, "server", HEAPD_MAX_NAME, in->server);
	if (!rd_end(&rd))
		return bad_message(c);
	return 0;
}

/* dial connects to c->addr and shakes hands asking for c->features. On
 * failure no socket is left open. */
static int dial(struct heapd_client *c)
{
	close_socket(c);
	memset(&c->info, 0, sizeof c->info);
	const char *path = c->addr.sun_path;
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return fail_errno(c, HEAPD_ERROR_SYSTEM, errno, "socket");
	set_send_timeout(c);
	int r;
	while ((r = connect(c->fd, (const struct sockaddr *)&c->addr, sizeof c->addr)) < 0 &&
	       errno == EINTR)
		;
	if (r < 0) {
		int e = errno;
		close_socket(c);
		if (e == ENOENT || e == ECONNREFUSED)
			return fail_errno(c, HEAPD_ERROR_NO_DAEMON, e,
					  "nothing listens at %s (is heapd running? set %s to use "
					  "another socket)",
					  path, HEAPD_SOCKET_ENV);
		if (e == EAGAIN || e == EWOULDBLOCK)
			return fail(c, HEAPD_ERROR_TIMEOUT,
				    "heapd at %s did not accept the connection within %d ms", path,
				    c->timeout_ms);
		if (e == EPROTOTYPE)
			return fail_errno(c, HEAPD_ERROR_SYSTEM, e,
					  "connect %s: not a SOCK_SEQPACKET socket (not heapd?)",
					  path);
		return fail_errno(c, HEAPD_ERROR_SYSTEM, e, "connect %s", path);
	}
	c->serial = 0;
	r = hello(c, c->features);
	if (r < 0) {
		close_socket(c);
		memset(&c->info, 0, sizeof c->info);
	}
	return r;
}

HEAPD_API int heapd_client_connect(struct heapd_client *c, const char *socket_path,
				   uint64_t features)
{
	if (!c)
		return -HEAPD_ERROR_BAD_ARGUMENT;
	begin(c);
	close_socket(c);
	memset(&c->info, 0, sizeof c->info);
	c->have_addr = 0;

	const char *path = socket_path;
	if (!path || !*path) {
		path = getenv(HEAPD_SOCKET_ENV);
		if (!path || !*path)
			path = HEAPD_DEFAULT_SOCKET;
	}
	size_t len = strlen(path);
	if (len >= sizeof c->addr.sun_path)
		return fail(c, HEAPD_ERROR_BAD_ARGUMENT,
			    "socket path %s: %zu bytes, at most %zu fit a Unix socket address",
			    path, len, sizeof c->addr.sun_path - 1);
	memset(&c->addr, 0, sizeof c->addr);
	c->addr.sun_family = AF_UNIX;
	memcpy(c->addr.sun_path, path, len + 1);
	c->features = features ? features : HEAPD_FEATURES_ALL;
	/* Remembered even if this attempt fails: a later call dials again. */
	c->have_addr = 1;
	return dial(c);
}

/* ---- requests ---- */

/* Layout of one-allocation answers: the struct, then arrays, then an arena
 * of strings as large as the body. */
static size_t align_up(size_t n, size_t a)
{
	return (n + a - 1) / a * a;
}

/* Smallest encoded heap: six empty strings and the fixed fields. */
#define MIN_HEAP_INFO (6u * 2u + 4u + 3u * 8u)

HEAPD_API int heapd_list_heaps(struct heapd_client *c, struct heapd_heap_list **out)
{
	if (out)
		*out = NULL;
	if (!c)
		return -HEAPD_ERROR_BAD_ARGUMENT;
	begin(c);
	if (!out)
		return fail(c, HEAPD_ERROR_BAD_ARGUMENT, "heapd_list_heaps: out is NULL");
	int r = call(c, T_LIST_HEAPS, 0);
	if (r < 0)
		return r;

	struct rd rd = body_reader(c, "Heaps");
	unsigned int n = rd_count(&rd, "heap count", MAX_HEAPS, MIN_HEAP_INFO);
	if (rd.bad)
		return bad_message(c);
	size_t off_heaps = align_up(sizeof(struct heapd_heap_list), alignof(struct heapd_heap));
	size_t off_problems =
		align_up(off_heaps + n * sizeof(struct heapd_heap), alignof(char *));
	size_t off_arena = off_problems + MAX_PROBLEMS * sizeof(char *);
	unsigned char *block = calloc(1, off_arena + c->rlen + 1);
	if (!block)
		return fail_errno(c, HEAPD_ERROR_SYSTEM, ENOMEM, "heapd_list_heaps");
	struct heapd_heap_list *l = (struct heapd_heap_list *)(void *)block;
	l->count = n;
	l->heaps = (struct heapd_heap *)(void *)(block + off_heaps);
	l->problems = (char **)(void *)(block + off_problems);
	char *arena = (char *)block + off_arena;
	for (unsigned int i = 0; i < n; i++) {
		struct heapd_heap *h = &l->heaps[i];
		h->name = rd_arena_str(&rd, "heap name", HEAPD_MAX_NAME, &arena);
		h->backend = rd_arena_str(&rd, "backend", HEAPD_MAX_NAME, &arena);
		h->target = rd_arena_str(&rd, "target", MAX_STRING, &arena);
		h->kernel_name = rd_arena_str(&rd, "kernel name", HEAPD_MAX_NAME, &arena);
		h->device = rd_arena_str(&rd, "device", HEAPD_MAX_NAME, &arena);
		h->note = rd_arena_str(&rd, "note", MAX_STRING, &arena);
		h->flags = rd_u32(&rd, "heap flags");
		h->max_size = rd_u64(&rd, "max size");
		h->cma_total = rd_u64(&rd, "cma total");
		h->cma_free = rd_u64(&rd, "cma free");
	}
	l->problem_count = rd_count(&rd, "problem count", MAX_PROBLEMS, 2);
	for (unsigned int i = 0; i < l->problem_count; i++)
		l->problems[i] = rd_arena_str(&rd, "problem", MAX_STRING, &arena);
	if (!rd_end(&rd)) {
		free(block);
		return bad_message(c);
	}
	if (l->problem_count == 0)
		l->problems = NULL;
	if (l->count == 0)
		l->heaps = NULL;
	*out = l;
	return 0;
}

HEAPD_API void heapd_heap_list_free(struct heapd_heap_list *list)
{
	free(list);
}

HEAPD_API const struct heapd_heap *heapd_heap_list_find(const struct heapd_heap_list *list,
							const char *name)
{
	if (!list || !name)
		return NULL;
	for (unsigned int i = 0; i < list->count; i++)
		if (strcmp(list->heaps[i].name, name) == 0)
			return &list->heaps[i];
	return NULL;
}

/* check_str validates a string the request carries: at most max bytes of
 * UTF-8 (the daemon closes the connection on anything else). */
static int check_str(struct heapd_client *c, const char *what, const char *s, size_t max,
		     size_t *len)
{
	size_t n = strlen(s);
	if (n > max)
		return fail(c, HEAPD_ERROR_BAD_ARGUMENT, "%s: %zu bytes, at most %zu allowed", what,
			    n, max);
	if (!utf8_valid((const unsigned char *)s, n))
		return fail(c, HEAPD_ERROR_BAD_ARGUMENT, "%s is not valid UTF-8", what);
	*len = n;
	return 0;
}

static void clear_allocation(struct heapd_allocation *a)
{
	memset(a, 0, sizeof *a);
	for (unsigned int i = 0; i < HEAPD_MAX_BATCH; i++)
		a->fds[i] = -1;
}

HEAPD_API void heapd_allocation_close(struct heapd_allocation *a)
{
	if (!a)
		return;
	close_fds(a->fds, a->count <= HEAPD_MAX_BATCH ? a->count : HEAPD_MAX_BATCH);
	a->count = 0;
}

HEAPD_API int heapd_allocate(struct heapd_client *c, const struct heapd_request *req,
			     struct heapd_allocation *out)
{
	if (out)
		clear_allocation(out);
	if (!c)
		return -HEAPD_ERROR_BAD_ARGUMENT;
	begin(c);
	if (!req || !out)
		return fail(c, HEAPD_ERROR_BAD_ARGUMENT, "heapd_allocate: %s is NULL",
			    req ? "out" : "req");

	/* Everything the daemon would reject as malformed (and close the
	 * connection for) is refused here. */
	unsigned int count = req->count ? req->count : 1;
	if (count > HEAPD_MAX_BATCH)
		return fail(c, HEAPD_ERROR_BAD_ARGUMENT, "count %u: must be 1..%u", req->count,
			    HEAPD_MAX_BATCH);
	const char *heap = req->heap ? req->heap : "";
	size_t heap_len = 0, label_len = 0;
	int r = check_str(c, "heap name", heap, HEAPD_MAX_NAME, &heap_len);
	if (r < 0)
		return r;
	if (req->device_count > HEAPD_MAX_DEVICES)
		return fail(c, HEAPD_ERROR_BAD_ARGUMENT, "%u devices, at most %u",
			    req->device_count, HEAPD_MAX_DEVICES);
	if (req->device_count > 0 && !req->devices)
		return fail(c, HEAPD_ERROR_BAD_ARGUMENT, "device_count %u but devices is NULL",
			    req->device_count);
	size_t dev_len[HEAPD_MAX_DEVICES] = {0};
	for (unsigned int i = 0; i < req->device_count; i++) {
		const char *d = req->devices[i];
		if (!d || !*d)
			return fail(c, HEAPD_ERROR_BAD_ARGUMENT, "device %u is empty", i);
		if ((r = check_str(c, "device id", d, HEAPD_MAX_NAME, &dev_len[i])) < 0)
			return r;
	}
	if (heap_len == 0 && req->device_count == 0)
		return fail(c, HEAPD_ERROR_BAD_ARGUMENT,
			    "name a heap, or devices for the daemon to choose one");
	int image = req->size == 0;
	if (!image && (req->width || req->height || req->fourcc || req->modifier))
		return fail(c, HEAPD_ERROR_BAD_ARGUMENT,
			    "give a size or an image (width, height, fourcc, modifier), not both");
	if (image && !req->width && !req->height && !req->fourcc)
		return fail(c, HEAPD_ERROR_BAD_ARGUMENT,
			    "give a size in bytes or an image (width, height, fourcc)");
	if (req->label) {
		if ((r = check_str(c, "label", req->label, HEAPD_MAX_LABEL, &label_len)) < 0)
			return r;
		for (size_t i = 0; i < label_len; i++) {
			unsigned char b = (unsigned char)req->label[i];
			if (b < 0x20 || b == 0x7f)
				return fail(c, HEAPD_ERROR_BAD_ARGUMENT,
					    "label has control byte 0x%02x", b);
		}
	}

	struct wr w = body_writer(c);
	wr_u8(&w, heap_len ? 1 : 2); /* target: a heap by name, or a device set */
	wr_u8(&w, image ? 2 : 1);    /* shape: an image, or a size */
	wr_u16(&w, (uint16_t)count);
	wr_u32(&w, 0);
	wr_u64(&w, req->size);
	wr_u32(&w, image ? req->width : 0);
	wr_u32(&w, image ? req->height : 0);
	wr_u32(&w, image ? req->fourcc : 0);
	wr_u64(&w, image ? req->modifier : 0);
	wr_str(&w, heap, heap_len);
	wr_u16(&w, (uint16_t)req->device_count);
	for (unsigned int i = 0; i < req->device_count; i++)
		wr_str(&w, req->devices[i], dev_len[i]);
	wr_str(&w, req->label ? req->label : "", label_len);
	if ((r = call(c, T_ALLOCATE, w.off)) < 0)
		return r;

	struct rd rd = body_reader(c, "Allocated");
	unsigned int n = rd_u16(&rd, "count");
	if (!rd.bad && n != count)
		rd_fail(&rd, "%u buffers for a request of %u", n, count);
	out->flags = rd_u16(&rd, "flags");
	out->size = rd_u64(&rd, "size");
	out->width = rd_u32(&rd, "width");
	out->height = rd_u32(&rd, "height");
	out->fourcc = rd_u32(&rd, "fourcc");
	out->pitch = rd_u32(&rd, "pitch");
	out->offset = rd_u32(&rd, "offset");
	out->modifier = rd_u64(&rd, "modifier");
	rd_str(&rd, "heap", HEAPD_MAX_NAME, out->heap);
	rd_str(&rd, "backend", HEAPD_MAX_NAME, out->backend);
	rd_str(&rd, "name", HEAPD_MAX_NAME, out->name);
	if (!rd.bad && (size_t)count * 8 != rd.n - rd.off)
		rd_fail(&rd, "%u buffer ids need %u bytes, %zu left", count, count * 8,
			rd.n - rd.off);
	for (unsigned int i = 0; i < count && !rd.bad; i++)
		out->ids[i] = rd_u64(&rd, "id");
	if (!rd.bad && c->rnfds != count)
		rd_fail(&rd, "%u buffers but %u fds", count, c->rnfds);
	if (!rd_end(&rd)) {
		clear_allocation(out);
		return bad_message(c);
	}
	for (unsigned int i = 0; i < count; i++) {
		out->fds[i] = c->rfds[i];
		c->rfds[i] = -1;
	}
	c->rnfds = 0;
	out->count = count;
	return 0;
}

HEAPD_API int heapd_my_usage(struct heapd_client *c, struct heapd_usage **out)
{
	if (out)
		*out = NULL;
	if (!c)
		return -HEAPD_ERROR_BAD_ARGUMENT;
	begin(c);
	if (!out)
		return fail(c, HEAPD_ERROR_BAD_ARGUMENT, "heapd_my_usage: out is NULL");
	int r = call(c, T_MY_USAGE, 0);
	if (r < 0)
		return r;

	struct rd rd = body_reader(c, "Usage");
	uint32_t uid = rd_u32(&rd, "uid");
	uint32_t gid = rd_u32(&rd, "gid");
	uint32_t pid = rd_u32(&rd, "pid");
	unsigned int ngroups = rd_count(&rd, "group count", MAX_GROUPS, 4);
	if (rd.bad)
		return bad_message(c);
	/* Heaps come after the groups; each takes at least 34 bytes. */
	size_t max_heaps = c->rlen / 34 < MAX_HEAPS ? c->rlen / 34 : MAX_HEAPS;
	size_t off_groups = align_up(sizeof(struct heapd_usage), alignof(uint32_t));
	size_t off_heaps = align_up(off_groups + ngroups * sizeof(uint32_t),
				    alignof(struct heapd_heap_usage));
	size_t off_arena = off_heaps + max_heaps * sizeof(struct heapd_heap_usage);
	unsigned char *block = calloc(1, off_arena + c->rlen + 1);
	if (!block)
		return fail_errno(c, HEAPD_ERROR_SYSTEM, ENOMEM, "heapd_my_usage");
	struct heapd_usage *u = (struct heapd_usage *)(void *)block;
	u->uid = uid;
	u->gid = gid;
	u->pid = (int32_t)pid;
	u->group_count = ngroups;
	u->groups = ngroups ? (uint32_t *)(void *)(block + off_groups) : NULL;
	for (unsigned int i = 0; i < ngroups; i++)
		u->groups[i] = rd_u32(&rd, "group");
	char *arena = (char *)block + off_arena;
	u->comm = rd_arena_str(&rd, "comm", HEAPD_MAX_NAME, &arena);
	u->flags = rd_u32(&rd, "flags");
	u->bytes = rd_u64(&rd, "bytes");
	u->buffers = rd_u64(&rd, "buffers");
	u->limit_bytes = rd_u64(&rd, "limit bytes");
	u->limit_buffers = rd_u64(&rd, "limit buffers");
	u->max_alloc = rd_u64(&rd, "max alloc");
	u->total_bytes = rd_u64(&rd, "total bytes");
	u->total_buffers = rd_u64(&rd, "total buffers");
	/* The size check bounds the count by max_heaps. */
	u->heap_count = rd_count(&rd, "heap count", MAX_HEAPS, 2 + 4 * 8);
	u->heaps = u->heap_count ? (struct heapd_heap_usage *)(void *)(block + off_heaps) : NULL;
	for (unsigned int i = 0; i < u->heap_count; i++) {
		struct heapd_heap_usage *h = &u->heaps[i];
		h->heap = rd_arena_str(&rd, "heap", HEAPD_MAX_NAME, &arena);
		h->bytes = rd_u64(&rd, "bytes");
		h->buffers = rd_u64(&rd, "buffers");
		h->limit_bytes = rd_u64(&rd, "limit bytes");
		h->limit_buffers = rd_u64(&rd, "limit buffers");
	}
	u->policy = rd_arena_str(&rd, "policy", MAX_STRING, &arena);
	if (!rd_end(&rd)) {
		free(block);
		return bad_message(c);
	}
	*out = u;
	return 0;
}

HEAPD_API void heapd_usage_free(struct heapd_usage *u)
{
	free(u);
}
