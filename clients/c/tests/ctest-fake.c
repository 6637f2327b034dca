/*
 * ctest-fake.c - the C client against a fake heapd: a child process that
 * listens on a SOCK_SEQPACKET socket in a temporary directory, accepts one
 * connection and sends exactly the bytes a case wants, well-formed or not.
 *
 * It proves that the client and docs/protocol.md agree (the golden case
 * replays protocol/testdata/golden, the bytes the document shows), that
 * every malformed reply is an error and never a crash, and - through the
 * harness's fd check around each case - that every fd the client receives
 * is closed on every path.
 */
#define _GNU_SOURCE

#include "heapd-client.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CTEST_CASES                                                            \
	X(fake, golden)                                                        \
	X(fake, hello_info)                                                    \
	X(fake, env_socket)                                                    \
	X(fake, no_daemon)                                                     \
	X(fake, not_a_seqpacket_socket)                                        \
	X(fake, api_misuse)                                                    \
	X(fake, strerror)                                                      \
	X(fake, request_validation)                                            \
	X(fake, allocate_batch)                                                \
	X(fake, usage)                                                         \
	X(fake, max_message)                                                   \
	X(fake, event_then_reply)                                              \
	X(fake, denied_then_ok)                                                \
	X(fake, quota)                                                         \
	X(fake, unknown_error_code)                                            \
	X(fake, fatal_error_code)                                              \
	X(fake, busy)                                                          \
	X(fake, version_error)                                                 \
	X(fake, shutting_down_queued)                                          \
	X(fake, closed_mid_request)                                            \
	X(fake, closed_idle)                                                   \
	X(fake, reconnect_idle)                                                \
	X(fake, timeout_late_reply)                                            \
	X(fake, bad_hello_magic)                                               \
	X(fake, bad_hello_major)                                               \
	X(fake, bad_hello_minor)                                               \
	X(fake, bad_hello_features)                                            \
	X(fake, bad_hello_max_batch)                                           \
	X(fake, bad_trailing_bytes)                                            \
	X(fake, bad_short_body)                                                \
	X(fake, bad_long_string)                                               \
	X(fake, bad_utf8)                                                      \
	X(fake, bad_nul_in_string)                                             \
	X(fake, bad_huge_count)                                                \
	X(fake, bad_count_over_limit)                                          \
	X(fake, bad_fd_on_heaps)                                               \
	X(fake, bad_wrong_reply_type)                                          \
	X(fake, bad_unknown_type)                                              \
	X(fake, bad_serial_zero)                                               \
	X(fake, bad_length_field)                                              \
	X(fake, bad_header_flags)                                              \
	X(fake, bad_short_packet)                                              \
	X(fake, bad_oversize_packet)                                           \
	X(fake, bad_nfds_lie)                                                  \
	X(fake, bad_error_code_zero)                                           \
	X(fake, bad_event)                                                     \
	X(fake, bad_ctrunc)                                                    \
	X(fake, bad_allocated_fewer_fds)                                       \
	X(fake, bad_allocated_count)                                           \
	X(fake, bad_allocated_ids)                                             \
	X(fake, bad_allocated_too_many_fds)

#include "ctest.h"

enum {
	T_HELLO = 0x0001,
	T_LIST_HEAPS = 0x0002,
	T_ALLOCATE = 0x0003,
	T_MY_USAGE = 0x0004,
	T_ERROR = 0x8000,
	T_HELLO_REPLY = 0x8001,
	T_HEAPS = 0x8002,
	T_ALLOCATED = 0x8003,
	T_USAGE = 0x8004,
	T_EVENT = 0xC001
};

/* ---- packets ---- */

struct pkt {
	unsigned char b[80000];
	size_t n;
};

static void p_u8(struct pkt *p, uint8_t v)
{
	p->b[p->n++] = v;
}

static void p_u16(struct pkt *p, uint16_t v)
{
	p_u8(p, (uint8_t)v);
	p_u8(p, (uint8_t)(v >> 8));
}

static void p_u32(struct pkt *p, uint32_t v)
{
	p_u16(p, (uint16_t)v);
	p_u16(p, (uint16_t)(v >> 16));
}

static void p_u64(struct pkt *p, uint64_t v)
{
	p_u32(p, (uint32_t)v);
	p_u32(p, (uint32_t)(v >> 32));
}

static void p_bytes(struct pkt *p, const void *s, size_t n)
{
	memcpy(p->b + p->n, s, n);
	p->n += n;
}

static void p_str(struct pkt *p, const char *s)
{
	p_u16(p, (uint16_t)strlen(s));
	p_bytes(p, s, strlen(s));
}

/* p_begin starts a message; p_end fills in the body length. */
static void p_begin(struct pkt *p, uint16_t type, uint16_t nfds, uint32_t serial)
{
	p->n = 0;
	p_u16(p, type);
	p_u16(p, nfds);
	p_u32(p, serial);
	p_u32(p, 0);
	p_u32(p, 0);
}

static void p_end(struct pkt *p)
{
	uint32_t len = (uint32_t)(p->n - 16);
	for (int i = 0; i < 4; i++)
		p->b[8 + i] = (unsigned char)(len >> (8 * i));
}

/* ---- the fake server (runs in a child process) ---- */

typedef int (*server_fn)(int conn);

struct fake {
	pid_t pid;
	char dir[256];
	char path[300];
};

static int srv_send(int s, const struct pkt *p, const int *fds, int nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 32)];
	} control;
	struct iovec iov = {.iov_base = (void *)p->b, .iov_len = p->n};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds > 0) {
		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	if (sendmsg(s, &msg, MSG_NOSIGNAL) != (ssize_t)p->n) {
		perror("fake: sendmsg");
		return 1;
	}
	return 0;
}

/* srv_recv reads one request; it returns its length, 0 at EOF, -1 on
 * error. */
static ssize_t srv_recv(int s, unsigned char *buf, size_t cap, uint16_t *type,
			uint32_t *serial)
{
	ssize_t n = recv(s, buf, cap, 0);
	if (n < 0) {
		if (errno == ECONNRESET)
			return 0;
		perror("fake: recv");
		return -1;
	}
	if (n >= 16) {
		*type = (uint16_t)(buf[0] | buf[1] << 8);
		*serial = (uint32_t)buf[4] | (uint32_t)buf[5] << 8 | (uint32_t)buf[6] << 16 |
			  (uint32_t)buf[7] << 24;
	}
	return n;
}

/* srv_expect reads one request of type want and returns its serial (0 on
 * failure). */
static uint32_t srv_expect(int s, uint16_t want)
{
	unsigned char buf[70000];
	uint16_t type = 0;
	uint32_t serial = 0;
	ssize_t n = srv_recv(s, buf, sizeof buf, &type, &serial);
	if (n < 16 || type != want) {
		fprintf(stderr, "fake: got %zd bytes of type 0x%04x, want a 0x%04x\n", n, type,
			want);
		return 0;
	}
	return serial;
}

/* srv_expect_eof waits for the client to close the connection, having
 * sent nothing more. */
static int srv_expect_eof(int s)
{
	unsigned char buf[70000];
	uint16_t type = 0;
	uint32_t serial = 0;
	ssize_t n = srv_recv(s, buf, sizeof buf, &type, &serial);
	if (n != 0) {
		fprintf(stderr, "fake: want EOF, got %zd bytes (type 0x%04x)\n", n, type);
		return 1;
	}
	return 0;
}

static void hello_reply(struct pkt *p, uint32_t serial, uint32_t magic, uint16_t major,
			uint16_t minor, uint64_t features, uint16_t max_batch)
{
	p_begin(p, T_HELLO_REPLY, 0, serial);
	p_u32(p, magic);
	p_u16(p, major);
	p_u16(p, minor);
	p_u64(p, features);
	p_u64(p, 1234);
	p_u16(p, max_batch);
	p_u16(p, 4);
	p_u32(p, 65536);
	p_str(p, "fake heapd");
	p_end(p);
}

/* srv_hello completes a normal handshake. */
static int srv_hello(int s)
{
	unsigned char buf[256];
	uint16_t type = 0;
	uint32_t serial = 0;
	ssize_t n = srv_recv(s, buf, sizeof buf, &type, &serial);
	if (n != 32 || type != T_HELLO) {
		fprintf(stderr, "fake: want a 32-byte Hello, got %zd bytes of 0x%04x\n", n, type);
		return 1;
	}
	uint64_t features = 0;
	for (int i = 0; i < 8; i++)
		features |= (uint64_t)buf[24 + i] << (8 * i);
	struct pkt p;
	hello_reply(&p, serial, 0x50414548, 1, 0, features & 0x1f, 16);
	return srv_send(s, &p, NULL, 0);
}

static void error_msg(struct pkt *p, uint32_t serial, uint32_t code, const char *text)
{
	p_begin(p, T_ERROR, 0, serial);
	p_u32(p, code);
	p_str(p, text);
	p_end(p);
}

static void empty_heaps(struct pkt *p, uint32_t serial)
{
	p_begin(p, T_HEAPS, 0, serial);
	p_u16(p, 0);
	p_u16(p, 0);
	p_end(p);
}

static void allocated(struct pkt *p, uint32_t serial, uint16_t count, uint16_t nfds)
{
	p_begin(p, T_ALLOCATED, nfds, serial);
	p_u16(p, count);
	p_u16(p, 1); /* emulated */
	p_u64(p, 4096);
	for (int i = 0; i < 5; i++)
		p_u32(p, 0);
	p_u64(p, 0);
	p_str(p, "system");
	p_str(p, "emulated");
	p_str(p, "heapd:uid0:ctest");
	for (uint16_t i = 0; i < count; i++)
		p_u64(p, 100u + i);
	p_end(p);
}

/* memfds makes n small memfds for the fake to send. */
static int memfds(int *fds, int n)
{
	for (int i = 0; i < n; i++) {
		fds[i] = memfd_create("ctest-fake", MFD_CLOEXEC);
		if (fds[i] < 0 || ftruncate(fds[i], 4096) < 0) {
			perror("fake: memfd");
			return 1;
		}
	}
	return 0;
}

/* unix_addr fills a with path; the directories the tests make are short. */
static void unix_addr(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof a->sun_path) {
		fprintf(stderr, "socket path %s too long (set TMPDIR to a shorter directory)\n", path);
		exit(2);
	}
	memcpy(a->sun_path, path, strlen(path) + 1);
}

static const char *tmp_dir(void)
{
	const char *t = getenv("TMPDIR");
	return t && *t ? t : "/tmp";
}

static void fake_listen(struct fake *f, server_fn fn);

/* fake_start makes a socket in a new directory and forks a server that
 * accepts one connection on it and runs fn (fake_listen). */
static void fake_start(struct fake *f, server_fn fn)
{
	snprintf(f->dir, sizeof f->dir, "%s/heapd-ctest-XXXXXX", tmp_dir());
	if (!mkdtemp(f->dir)) {
		perror("mkdtemp");
		exit(2);
	}
	snprintf(f->path, sizeof f->path, "%s/socket", f->dir);
	fake_listen(f, fn);
}

/* fake_restart starts another fake server on f's socket path, as a
 * restarted heapd would (the old one must have been finished). */
static void fake_restart(struct fake *f, server_fn fn)
{
	unlink(f->path);
	fake_listen(f, fn);
}

/* fake_listen listens on f->path and forks the server. */
static void fake_listen(struct fake *f, server_fn fn)
{
	int l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr;
	unix_addr(&addr, f->path);
	if (l < 0 || bind(l, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(l, 4) < 0) {
		perror("fake: listen");
		exit(2);
	}
	fflush(NULL);
	f->pid = fork();
	if (f->pid < 0) {
		perror("fork");
		exit(2);
	}
	if (f->pid == 0) {
		alarm(20); /* a stuck fake dies rather than hang the test */
		int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		close(l);
		if (s < 0) {
			perror("fake: accept");
			_exit(3);
		}
		int r = fn(s);
		close(s);
		_exit(r ? 1 : 0);
	}
	close(l);
}

/* fake_wait waits for the server and returns 0 if it saw what it
 * expected; its socket stays, for fake_restart. */
static int fake_wait(struct fake *f)
{
	int status = 0;
	while (waitpid(f->pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFSIGNALED(status)) {
		fprintf(stderr, "fake server killed by signal %d\n", WTERMSIG(status));
		return 1;
	}
	return WEXITSTATUS(status);
}

/* fake_finish is fake_wait, then removes the socket and its directory. */
static int fake_finish(struct fake *f)
{
	int r = fake_wait(f);
	unlink(f->path);
	rmdir(f->dir);
	return r;
}

static struct heapd_client *client_for(struct fake *f, uint64_t features)
{
	struct heapd_client *c = heapd_client_new();
	if (!c) {
		perror("heapd_client_new");
		exit(2);
	}
	heapd_client_set_timeout(c, 10000);
	int r = heapd_client_connect(c, f->path, features);
	if (r != 0)
		fprintf(stderr, "connect %s: %s: %s\n", f->path, heapd_error_name(r),
			heapd_client_error_message(c));
	return c;
}

/* ---- golden: the bytes of docs/protocol.md, both ways ---- */

static int read_golden(const char *name, struct pkt *p)
{
	const char *dir = getenv("HEAPD_GOLDEN_DIR");
	char path[512];
	snprintf(path, sizeof path, "%s/%s.hex", dir && *dir ? dir : "../../protocol/testdata/golden",
		 name);
	FILE *fp = fopen(path, "re");
	if (!fp) {
		perror(path);
		return 1;
	}
	p->n = 0;
	unsigned int byte;
	while (fscanf(fp, "%2x", &byte) == 1)
		p->b[p->n++] = (unsigned char)byte;
	int bad = ferror(fp) || !feof(fp);
	fclose(fp);
	if (bad || p->n < 16) {
		fprintf(stderr, "%s: not a hex dump\n", path);
		return 1;
	}
	return 0;
}

/* srv_golden_request checks the client sent exactly the golden request. */
static int srv_golden_request(int s, const char *name)
{
	struct pkt want;
	unsigned char buf[70000];
	uint16_t type;
	uint32_t serial;
	if (read_golden(name, &want))
		return 1;
	ssize_t n = srv_recv(s, buf, sizeof buf, &type, &serial);
	if (n != (ssize_t)want.n || memcmp(buf, want.b, want.n) != 0) {
		fprintf(stderr, "fake: request %s differs from protocol/testdata/golden/%s.hex:\n",
			name, name);
		fprintf(stderr, "  got ");
		for (ssize_t i = 0; i < n; i++)
			fprintf(stderr, "%02x ", buf[i]);
		fprintf(stderr, "\n  want ");
		for (size_t i = 0; i < want.n; i++)
			fprintf(stderr, "%02x ", want.b[i]);
		fprintf(stderr, "\n");
		return 1;
	}
	return 0;
}

static int srv_golden_reply(int s, const char *name, int nfds)
{
	struct pkt p;
	int fds[16];
	if (read_golden(name, &p) || memfds(fds, nfds))
		return 1;
	int r = srv_send(s, &p, fds, nfds);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	return r;
}

static int srv_golden(int s)
{
	struct pkt p;
	if (srv_golden_request(s, "hello") || srv_golden_reply(s, "hello_reply", 0) ||
	    srv_golden_request(s, "list_heaps") || srv_golden_reply(s, "heaps", 0) ||
	    srv_golden_request(s, "allocate_size") || srv_golden_reply(s, "error", 0) ||
	    srv_golden_request(s, "allocate_image") || srv_golden_reply(s, "allocated", 2) ||
	    srv_golden_request(s, "allocate_devices"))
		return 1;
	/* An event before the reply, and a stale reply (serial 3) the client
	 * must skip. */
	error_msg(&p, 5, 16, "no heap for platform-vkms");
	if (srv_golden_reply(s, "event", 0) || srv_golden_reply(s, "error", 0) ||
	    srv_send(s, &p, NULL, 0))
		return 1;
	return srv_golden_request(s, "my_usage") || srv_golden_reply(s, "usage", 0) ||
	       srv_expect_eof(s);
}

static void test_golden(void)
{
	struct fake f;
	fake_start(&f, srv_golden);
	/* The golden Hello asks for IMAGE | BATCH | EVENTS | USAGE. */
	struct heapd_client *c = client_for(&f, 0x0f);
	struct heapd_server_info info;
	CHECK_ERR(c, heapd_client_server_info(c, &info), 0);
	CHECK_INT(info.major, 1);
	CHECK_INT(info.minor, 0);
	CHECK_INT(info.features, 0x0f);
	CHECK_INT(info.uptime_ms, 5000);
	CHECK_INT(info.max_batch, 16);
	CHECK_INT(info.max_in_flight, 4);
	CHECK_INT(info.max_message, 65536);
	CHECK_STR(info.server, "heapd 1.0");

	struct heapd_heap_list *l = NULL;
	CHECK_ERR(c, heapd_list_heaps(c, &l), 0);
	if (l) {
		CHECK_INT(l->count, 1);
		CHECK_INT(l->problem_count, 0);
		const struct heapd_heap *h = heapd_heap_list_find(l, "system");
		CHECK(h != NULL);
		if (h) {
			CHECK_STR(h->backend, "kernel");
			CHECK_STR(h->target, "/dev/dma_heap/system");
			CHECK_STR(h->kernel_name, "system");
			CHECK_STR(h->device, "");
			CHECK_STR(h->note, "");
			CHECK_INT(h->flags, HEAPD_HEAP_DEVICE_IMPORTABLE);
			CHECK_INT(h->max_size, 0);
		}
		CHECK(heapd_heap_list_find(l, "contiguous") == NULL);
		heapd_heap_list_free(l);
	}

	struct heapd_allocation a;
	struct heapd_request size_req = {.heap = "system", .size = 1 << 20, .label = "fb"};
	CHECK_ERR(c, heapd_allocate(c, &size_req, &a), -HEAPD_ERROR_UNKNOWN_HEAP);
	CHECK_STR(heapd_client_error_message(c), "no heap named \"x\"");
	CHECK_INT(a.count, 0);
	CHECK_INT(a.fds[0], -1);
	CHECK(heapd_client_is_connected(c));

	struct heapd_request image_req = {.heap = "contiguous",
					  .width = 640,
					  .height = 480,
					  .fourcc = HEAPD_FORMAT_XRGB8888,
					  .modifier = HEAPD_MOD_INVALID,
					  .count = 2};
	CHECK_ERR(c, heapd_allocate(c, &image_req, &a), 0);
	CHECK_INT(a.count, 2);
	CHECK_INT(a.flags, HEAPD_BUFFER_CONTIGUOUS | HEAPD_BUFFER_DEVICE_IMPORTABLE);
	CHECK_INT(a.size, 1228800);
	CHECK_INT(a.width, 640);
	CHECK_INT(a.height, 480);
	CHECK_INT(a.fourcc, HEAPD_FORMAT_XRGB8888);
	CHECK_INT(a.pitch, 2560);
	CHECK_INT(a.offset, 0);
	CHECK_INT(a.modifier, HEAPD_MOD_LINEAR);
	CHECK_STR(a.heap, "contiguous");
	CHECK_STR(a.backend, "kernel");
	CHECK_STR(a.name, "heapd:uid1000:weston");
	CHECK_INT(a.ids[0], 7);
	CHECK_INT(a.ids[1], 8);
	CHECK(a.fds[0] >= 0 && a.fds[1] >= 0 && a.fds[2] == -1);
	heapd_allocation_close(&a);
	CHECK_INT(a.count, 0);

	const char *devs[] = {"platform-vkms"};
	struct heapd_request dev_req = {.devices = devs, .device_count = 1, .size = 4096};
	CHECK_ERR(c, heapd_allocate(c, &dev_req, &a), -HEAPD_ERROR_NO_HEAP);
	CHECK_STR(heapd_client_error_message(c), "no heap for platform-vkms");

	struct heapd_usage *u = NULL;
	CHECK_ERR(c, heapd_my_usage(c, &u), 0);
	if (u) {
		CHECK_INT(u->uid, 1000);
		CHECK_INT(u->gid, 1000);
		CHECK_INT(u->pid, 4242);
		CHECK_INT(u->group_count, 2);
		CHECK_INT(u->groups[0], 44);
		CHECK_INT(u->groups[1], 109);
		CHECK_STR(u->comm, "weston");
		CHECK_INT(u->flags, 0);
		CHECK_INT(u->bytes, 0);
		CHECK(u->limit_bytes == HEAPD_UNLIMITED);
		CHECK(u->limit_buffers == HEAPD_UNLIMITED);
		CHECK(u->max_alloc == HEAPD_UNLIMITED);
		CHECK_INT(u->total_bytes, 1 << 20);
		CHECK_INT(u->total_buffers, 1);
		CHECK_INT(u->heap_count, 1);
		if (u->heap_count == 1) {
			CHECK_STR(u->heaps[0].heap, "system");
			CHECK(u->heaps[0].limit_bytes == HEAPD_UNLIMITED);
		}
		CHECK_STR(u->policy, "built-in");
		heapd_usage_free(u);
	}
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

/* ---- connecting ---- */

static int srv_hello_then_eof(int s)
{
	return srv_hello(s) || srv_expect_eof(s);
}

static void test_hello_info(void)
{
	struct fake f;
	fake_start(&f, srv_hello_then_eof);
	struct heapd_client *c = client_for(&f, 0);
	CHECK(heapd_client_is_connected(c));
	struct heapd_server_info info;
	CHECK_ERR(c, heapd_client_server_info(c, &info), 0);
	CHECK_INT(info.features, HEAPD_FEATURES_ALL);
	CHECK_STR(info.server, "fake heapd");
	CHECK_STR(heapd_client_error_message(c), "");
	heapd_client_disconnect(c);
	CHECK(!heapd_client_is_connected(c));
	CHECK_ERR(c, heapd_client_server_info(c, &info), -HEAPD_ERROR_NOT_CONNECTED);
	/* An explicit disconnect is not undone by the next call. */
	struct heapd_heap_list *l = NULL;
	CHECK_ERR(c, heapd_list_heaps(c, &l), -HEAPD_ERROR_NOT_CONNECTED);
	heapd_client_disconnect(c); /* idempotent */
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

static void test_env_socket(void)
{
	struct fake f;
	fake_start(&f, srv_hello_then_eof);
	struct heapd_client *c = heapd_client_new();
	REQUIRE(c);
	setenv("HEAPD_SOCKET", f.path, 1);
	CHECK_ERR(c, heapd_client_connect(c, NULL, 0), 0);
	CHECK(heapd_client_is_connected(c));
	heapd_client_disconnect(c);
	unsetenv("HEAPD_SOCKET");
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);

	/* A path longer than sun_path. */
	c = heapd_client_new();
	REQUIRE(c);
	char longpath[200];
	memset(longpath, 'x', sizeof longpath - 1);
	longpath[0] = '/';
	longpath[sizeof longpath - 1] = '\0';
	CHECK_ERR(c, heapd_client_connect(c, longpath, 0), -HEAPD_ERROR_BAD_ARGUMENT);
	heapd_client_free(c);
}

static void test_no_daemon(void)
{
	struct heapd_client *c = heapd_client_new();
	REQUIRE(c);
	char dir[256], path[300];
	snprintf(dir, sizeof dir, "%s/heapd-ctest-XXXXXX", tmp_dir());
	REQUIRE(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/socket", dir);

	/* No socket at all. */
	CHECK_ERR(c, heapd_client_connect(c, path, 0), -HEAPD_ERROR_NO_DAEMON);
	CHECK_INT(heapd_client_errno(c), ENOENT);
	CHECK(strstr(heapd_client_error_message(c), "is heapd running?") != NULL);
	CHECK(!heapd_client_is_connected(c));

	/* A stale socket: bound, nobody listening (a crashed daemon). */
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr;
	unix_addr(&addr, path);
	REQUIRE(s >= 0 && bind(s, (struct sockaddr *)&addr, sizeof addr) == 0);
	close(s);
	CHECK_ERR(c, heapd_client_connect(c, path, 0), -HEAPD_ERROR_NO_DAEMON);
	CHECK_INT(heapd_client_errno(c), ECONNREFUSED);
	unlink(path);
	rmdir(dir);
	heapd_client_free(c);
}

static void test_not_a_seqpacket_socket(void)
{
	char dir[256], path[300];
	snprintf(dir, sizeof dir, "%s/heapd-ctest-XXXXXX", tmp_dir());
	REQUIRE(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/socket", dir);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr;
	unix_addr(&addr, path);
	REQUIRE(s >= 0 && bind(s, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(s, 1) == 0);
	struct heapd_client *c = heapd_client_new();
	REQUIRE(c);
	CHECK_ERR(c, heapd_client_connect(c, path, 0), -HEAPD_ERROR_SYSTEM);
	CHECK_INT(heapd_client_errno(c), EPROTOTYPE);
	heapd_client_free(c);
	close(s);
	unlink(path);
	rmdir(dir);
}

static void test_api_misuse(void)
{
	struct heapd_client *c = heapd_client_new();
	REQUIRE(c);
	/* Non-NULL junk the calls must reset to NULL (never dereferenced);
	 * through void * because arm's -Wcast-align rejects the direct cast. */
	struct heapd_heap_list *l = (struct heapd_heap_list *)(void *)&l;
	struct heapd_usage *u = (struct heapd_usage *)(void *)&u;
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .size = 4096};
	CHECK_ERR(c, heapd_list_heaps(c, &l), -HEAPD_ERROR_NOT_CONNECTED);
	CHECK(l == NULL);
	CHECK_ERR(c, heapd_my_usage(c, &u), -HEAPD_ERROR_NOT_CONNECTED);
	CHECK(u == NULL);
	CHECK_ERR(c, heapd_allocate(c, &req, &a), -HEAPD_ERROR_NOT_CONNECTED);
	CHECK_INT(a.count, 0);
	CHECK_ERR(c, heapd_allocate(c, NULL, &a), -HEAPD_ERROR_BAD_ARGUMENT);
	CHECK_ERR(c, heapd_allocate(c, &req, NULL), -HEAPD_ERROR_BAD_ARGUMENT);
	CHECK_ERR(c, heapd_list_heaps(c, NULL), -HEAPD_ERROR_BAD_ARGUMENT);
	CHECK_ERR(c, heapd_my_usage(c, NULL), -HEAPD_ERROR_BAD_ARGUMENT);
	CHECK_ERR(c, heapd_client_server_info(c, NULL), -HEAPD_ERROR_BAD_ARGUMENT);
	CHECK_ERR(c, heapd_list_heaps(NULL, &l), -HEAPD_ERROR_BAD_ARGUMENT);
	CHECK_ERR(c, heapd_allocate(NULL, &req, &a), -HEAPD_ERROR_BAD_ARGUMENT);
	CHECK_ERR(c, heapd_my_usage(NULL, &u), -HEAPD_ERROR_BAD_ARGUMENT);
	CHECK_ERR(c, heapd_client_connect(NULL, NULL, 0), -HEAPD_ERROR_BAD_ARGUMENT);
	CHECK(!heapd_client_is_connected(NULL));
	heapd_client_disconnect(NULL);
	heapd_client_set_timeout(NULL, 5);
	heapd_client_free(NULL);
	heapd_heap_list_free(NULL);
	heapd_usage_free(NULL);
	heapd_allocation_close(NULL);
	CHECK(heapd_heap_list_find(NULL, "system") == NULL);
	heapd_client_free(c);
}

static void test_strerror(void)
{
	for (int e = 1; e <= 16; e++) {
		CHECK(strcmp(heapd_error_name(e), "UNKNOWN") != 0);
		CHECK_STR(heapd_error_name(-e), heapd_error_name(e));
		CHECK(strcmp(heapd_strerror(-e), "unknown heapd error") != 0);
	}
	for (int e = HEAPD_ERROR_NO_DAEMON; e <= HEAPD_ERROR_SYSTEM; e++)
		CHECK(strcmp(heapd_error_name(-e), "UNKNOWN") != 0);
	CHECK_STR(heapd_error_name(-HEAPD_ERROR_DENIED), "DENIED");
	CHECK_STR(heapd_error_name(-HEAPD_ERROR_NO_DAEMON), "NO_DAEMON");
	CHECK_STR(heapd_error_name(0), "OK");
	CHECK_STR(heapd_error_name(17), "UNKNOWN");
	CHECK_STR(heapd_error_name(-1000), "UNKNOWN");
	CHECK_STR(heapd_strerror(-9999), "unknown heapd error");
	CHECK_STR(heapd_strerror(-HEAPD_ERROR_QUOTA), "the allocation would exceed the quota");
}

/* ---- requests ---- */

static void test_request_validation(void)
{
	struct fake f;
	fake_start(&f, srv_hello_then_eof); /* nothing may reach the daemon */
	struct heapd_client *c = client_for(&f, 0);
	struct heapd_allocation a;
	char name256[257];
	memset(name256, 'h', 256);
	name256[256] = '\0';
	const char *empty_dev[] = {""};
	const char *null_dev[] = {NULL};
	struct {
		const char *why;
		struct heapd_request req;
	} cases[] = {
		{"no heap, no devices", {.size = 4096}},
		{"size and image", {.heap = "system", .size = 4096, .width = 64}},
		{"size and modifier", {.heap = "system", .size = 4096, .modifier = HEAPD_MOD_INVALID}},
		{"neither size nor image", {.heap = "system"}},
		{"count over 16", {.heap = "system", .size = 4096, .count = 17}},
		{"heap name too long", {.heap = name256, .size = 4096}},
		{"heap name not UTF-8", {.heap = "sys\xfftem", .size = 4096}},
		{"overlong UTF-8", {.heap = "\xc0\xaf", .size = 4096}},
		{"UTF-16 surrogate", {.heap = "\xed\xa0\x80", .size = 4096}},
		{"label too long", {.heap = "system", .size = 4096, .label = "0123456789abcdef0123456789abcdef"}},
		{"label with newline", {.heap = "system", .size = 4096, .label = "a\nb"}},
		{"label with DEL", {.heap = "system", .size = 4096, .label = "a\x7f"}},
		{"empty device", {.heap = "system", .size = 4096, .devices = empty_dev, .device_count = 1}},
		{"NULL device", {.heap = "system", .size = 4096, .devices = null_dev, .device_count = 1}},
		{"devices NULL", {.heap = "system", .size = 4096, .device_count = 1}},
		{"17 devices", {.heap = "system", .size = 4096, .devices = empty_dev, .device_count = 17}},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int r = heapd_allocate(c, &cases[i].req, &a);
		if (r != -HEAPD_ERROR_BAD_ARGUMENT)
			fprintf(stderr, "case \"%s\":\n", cases[i].why);
		CHECK_ERR(c, r, -HEAPD_ERROR_BAD_ARGUMENT);
		CHECK_INT(a.count, 0);
		CHECK(heapd_client_is_connected(c));
	}
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

static int srv_allocate_batch(int s)
{
	if (srv_hello(s))
		return 1;
	uint32_t serial = srv_expect(s, T_ALLOCATE);
	if (!serial)
		return 1;
	int fds[3];
	struct pkt p;
	if (memfds(fds, 3))
		return 1;
	allocated(&p, serial, 3, 3);
	int r = srv_send(s, &p, fds, 3);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	return r || srv_expect_eof(s);
}

static void test_allocate_batch(void)
{
	struct fake f;
	fake_start(&f, srv_allocate_batch);
	struct heapd_client *c = client_for(&f, 0);
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .size = 100, .count = 3, .label = "batch"};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), 0);
	CHECK_INT(a.count, 3);
	for (unsigned int i = 0; i < a.count; i++) {
		int flags = fcntl(a.fds[i], F_GETFD);
		CHECK(flags >= 0 && (flags & FD_CLOEXEC));
		struct stat st;
		CHECK(fstat(a.fds[i], &st) == 0 && st.st_size == 4096);
		CHECK_INT(a.ids[i], 100 + i);
	}
	CHECK_INT(a.fds[3], -1);
	CHECK_INT(a.flags, HEAPD_BUFFER_EMULATED);
	CHECK_STR(a.backend, "emulated");
	/* The allocation is plain data: a copy holds the same fds. */
	struct heapd_allocation copy = a;
	heapd_allocation_close(&copy);
	CHECK(fcntl(a.fds[0], F_GETFD) < 0 && errno == EBADF);
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

static int srv_usage(int s)
{
	if (srv_hello(s))
		return 1;
	uint32_t serial = srv_expect(s, T_MY_USAGE);
	if (!serial)
		return 1;
	struct pkt p;
	p_begin(&p, T_USAGE, 0, serial);
	p_u32(&p, 65534);
	p_u32(&p, 65534);
	p_u32(&p, (uint32_t)-1); /* pid is signed */
	p_u16(&p, 0);
	p_str(&p, "");
	p_u32(&p, 1); /* ACCOUNTED */
	p_u64(&p, 3 << 20);
	p_u64(&p, 3);
	p_u64(&p, 64 << 20);
	p_u64(&p, 16);
	p_u64(&p, 32 << 20);
	p_u64(&p, 5 << 20);
	p_u64(&p, 5);
	p_u16(&p, 2);
	p_str(&p, "contiguous");
	for (int i = 0; i < 4; i++)
		p_u64(&p, (uint64_t)i);
	p_str(&p, "system");
	for (int i = 0; i < 4; i++)
		p_u64(&p, (uint64_t)i + 10);
	p_str(&p, "policy file rule \"users\"");
	p_end(&p);
	return srv_send(s, &p, NULL, 0) || srv_expect_eof(s);
}

static void test_usage(void)
{
	struct fake f;
	fake_start(&f, srv_usage);
	struct heapd_client *c = client_for(&f, 0);
	struct heapd_usage *u = NULL;
	CHECK_ERR(c, heapd_my_usage(c, &u), 0);
	REQUIRE(u);
	CHECK_INT(u->uid, 65534);
	CHECK_INT(u->pid, -1);
	CHECK_INT(u->group_count, 0);
	CHECK(u->groups == NULL);
	CHECK_STR(u->comm, "");
	CHECK_INT(u->flags, HEAPD_USAGE_ACCOUNTED);
	CHECK_INT(u->bytes, 3 << 20);
	CHECK_INT(u->limit_bytes, 64 << 20);
	CHECK_INT(u->max_alloc, 32 << 20);
	CHECK_INT(u->heap_count, 2);
	CHECK_STR(u->heaps[0].heap, "contiguous");
	CHECK_INT(u->heaps[0].limit_buffers, 3);
	CHECK_STR(u->heaps[1].heap, "system");
	CHECK_INT(u->heaps[1].bytes, 10);
	CHECK_STR(u->policy, "policy file rule \"users\"");
	heapd_usage_free(u);
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

/* A Heaps reply of exactly HEAPD_MAX_MESSAGE bytes must be accepted. */
static int srv_max_message(int s)
{
	if (srv_hello(s))
		return 1;
	uint32_t serial = srv_expect(s, T_LIST_HEAPS);
	if (!serial)
		return 1;
	static struct pkt p;
	static char text[4097];
	p_begin(&p, T_HEAPS, 0, serial);
	p_u16(&p, 0);
	p_u16(&p, 16);
	memset(text, 'p', 4096);
	for (int i = 0; i < 15; i++)
		p_str(&p, text);
	text[65536 - p.n - 2] = '\0';
	p_str(&p, text);
	p_end(&p);
	if (p.n != 65536) {
		fprintf(stderr, "fake: built %zu bytes\n", p.n);
		return 1;
	}
	return srv_send(s, &p, NULL, 0) || srv_expect_eof(s);
}

static void test_max_message(void)
{
	struct fake f;
	fake_start(&f, srv_max_message);
	struct heapd_client *c = client_for(&f, 0);
	struct heapd_heap_list *l = NULL;
	CHECK_ERR(c, heapd_list_heaps(c, &l), 0);
	if (l) {
		CHECK_INT(l->count, 0);
		CHECK_INT(l->problem_count, 16);
		CHECK_INT(strlen(l->problems[0]), 4096);
		CHECK_INT(strlen(l->problems[15]), 65536 - 16 - 4 - 15 * 4098 - 2);
		heapd_heap_list_free(l);
	}
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

static int srv_event_then_reply(int s)
{
	if (srv_hello(s))
		return 1;
	uint32_t serial = srv_expect(s, T_LIST_HEAPS);
	struct pkt p;
	p_begin(&p, T_EVENT, 0, 0);
	p_u64(&p, 1);
	p_u16(&p, 6); /* overflow */
	p_str(&p, "");
	p_end(&p);
	if (!serial || srv_send(s, &p, NULL, 0))
		return 1;
	empty_heaps(&p, serial);
	return srv_send(s, &p, NULL, 0) || srv_expect_eof(s);
}

static void test_event_then_reply(void)
{
	struct fake f;
	fake_start(&f, srv_event_then_reply);
	struct heapd_client *c = client_for(&f, 0);
	struct heapd_heap_list *l = NULL;
	CHECK_ERR(c, heapd_list_heaps(c, &l), 0);
	CHECK(l && l->count == 0 && l->heaps == NULL && l->problems == NULL);
	heapd_heap_list_free(l);
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

static int srv_denied_then_ok(int s)
{
	if (srv_hello(s))
		return 1;
	uint32_t serial = srv_expect(s, T_ALLOCATE);
	struct pkt p;
	error_msg(&p, serial,
		  8, "uid 65534 may not allocate from contiguous: a policy file that grants "
		     "contiguous to this user would allow it");
	if (!serial || srv_send(s, &p, NULL, 0))
		return 1;
	serial = srv_expect(s, T_ALLOCATE);
	int fd;
	if (!serial || memfds(&fd, 1))
		return 1;
	allocated(&p, serial, 1, 1);
	int r = srv_send(s, &p, &fd, 1);
	close(fd);
	return r || srv_expect_eof(s);
}

static void test_denied_then_ok(void)
{
	struct fake f;
	fake_start(&f, srv_denied_then_ok);
	struct heapd_client *c = client_for(&f, 0);
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "contiguous", .size = 4096};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), -HEAPD_ERROR_DENIED);
	CHECK(strstr(heapd_client_error_message(c), "policy file") != NULL);
	CHECK(heapd_client_is_connected(c));
	req.heap = "system";
	CHECK_ERR(c, heapd_allocate(c, &req, &a), 0);
	CHECK_STR(heapd_client_error_message(c), "");
	CHECK_INT(a.count, 1);
	heapd_allocation_close(&a);
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

static int srv_quota(int s)
{
	if (srv_hello(s))
		return 1;
	struct pkt p;
	for (int i = 0; i < 2; i++) {
		uint32_t serial = srv_expect(s, T_ALLOCATE);
		error_msg(&p, serial, 9,
			  "uid 1000 holds 60 MiB of its 64 MiB on contiguous; 8 MiB more would exceed it");
		if (!serial || srv_send(s, &p, NULL, 0))
			return 1;
	}
	return srv_expect_eof(s);
}

static void test_quota(void)
{
	struct fake f;
	fake_start(&f, srv_quota);
	struct heapd_client *c = client_for(&f, 0);
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "contiguous", .size = 8 << 20, .count = 2};
	for (int i = 0; i < 2; i++) {
		CHECK_ERR(c, heapd_allocate(c, &req, &a), -HEAPD_ERROR_QUOTA);
		CHECK(strstr(heapd_client_error_message(c), "would exceed") != NULL);
		CHECK(heapd_client_is_connected(c));
	}
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

static int srv_unknown_error_code(int s)
{
	if (srv_hello(s))
		return 1;
	uint32_t serial = srv_expect(s, T_LIST_HEAPS);
	struct pkt p;
	error_msg(&p, serial, 99, "from the future");
	if (!serial || srv_send(s, &p, NULL, 0))
		return 1;
	serial = srv_expect(s, T_LIST_HEAPS);
	empty_heaps(&p, serial);
	return !serial || srv_send(s, &p, NULL, 0) || srv_expect_eof(s);
}

static void test_unknown_error_code(void)
{
	struct fake f;
	fake_start(&f, srv_unknown_error_code);
	struct heapd_client *c = client_for(&f, 0);
	struct heapd_heap_list *l = NULL;
	/* docs/protocol.md: an unknown code is treated like INTERNAL. */
	CHECK_ERR(c, heapd_list_heaps(c, &l), -HEAPD_ERROR_INTERNAL);
	CHECK(strstr(heapd_client_error_message(c), "error code 99") != NULL);
	CHECK(strstr(heapd_client_error_message(c), "from the future") != NULL);
	CHECK(heapd_client_is_connected(c));
	CHECK_ERR(c, heapd_list_heaps(c, &l), 0);
	heapd_heap_list_free(l);
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

static int srv_fatal_error_code(int s)
{
	if (srv_hello(s))
		return 1;
	uint32_t serial = srv_expect(s, T_LIST_HEAPS);
	struct pkt p;
	error_msg(&p, serial, 1, "decoding ListHeaps: trailing bytes");
	return !serial || srv_send(s, &p, NULL, 0) || srv_expect_eof(s);
}

static void test_fatal_error_code(void)
{
	struct fake f;
	fake_start(&f, srv_fatal_error_code);
	struct heapd_client *c = client_for(&f, 0);
	struct heapd_heap_list *l = NULL;
	CHECK_ERR(c, heapd_list_heaps(c, &l), -HEAPD_ERROR_PROTOCOL);
	CHECK(!heapd_client_is_connected(c)); /* the daemon closes after PROTOCOL */
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

static int srv_busy(int s)
{
	struct pkt p;
	error_msg(&p, 0, 11, "uid 1000 has 64 connections, the most allowed");
	return srv_send(s, &p, NULL, 0);
}

static void test_busy(void)
{
	struct fake f;
	fake_start(&f, srv_busy);
	struct heapd_client *c = heapd_client_new();
	REQUIRE(c);
	CHECK_ERR(c, heapd_client_connect(c, f.path, 0), -HEAPD_ERROR_BUSY);
	CHECK(strstr(heapd_client_error_message(c), "64 connections") != NULL);
	CHECK(!heapd_client_is_connected(c));
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

static int srv_version_error(int s)
{
	uint32_t serial = srv_expect(s, T_HELLO);
	struct pkt p;
	error_msg(&p, serial, 2, "this heapd speaks protocol 2.0; the client asked for 1.0");
	return !serial || srv_send(s, &p, NULL, 0) || srv_expect_eof(s);
}

static void test_version_error(void)
{
	struct fake f;
	fake_start(&f, srv_version_error);
	struct heapd_client *c = heapd_client_new();
	REQUIRE(c);
	CHECK_ERR(c, heapd_client_connect(c, f.path, 0), -HEAPD_ERROR_VERSION);
	CHECK(strstr(heapd_client_error_message(c), "protocol 2.0") != NULL);
	CHECK(!heapd_client_is_connected(c));
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

/* The daemon said why it closed and closed; the client, idle meanwhile,
 * finds out when its next send fails. */
static int srv_shutting_down(int s)
{
	struct pkt p;
	error_msg(&p, 0, 13, "heapd is shutting down");
	return srv_hello(s) || srv_send(s, &p, NULL, 0);
}

static void test_shutting_down_queued(void)
{
	struct fake f;
	fake_start(&f, srv_shutting_down);
	struct heapd_client *c = client_for(&f, 0);
	CHECK_INT(fake_finish(&f), 0); /* the server has closed */
	struct heapd_heap_list *l = NULL;
	CHECK_ERR(c, heapd_list_heaps(c, &l), -HEAPD_ERROR_SHUTTING_DOWN);
	CHECK(!heapd_client_is_connected(c));
	heapd_client_free(c);
}

static int srv_closed_mid_request(int s)
{
	return srv_hello(s) || !srv_expect(s, T_ALLOCATE);
}

/* srv_allocate_once answers one Allocate, and expects nothing more. */
static int srv_allocate_once(int s)
{
	if (srv_hello(s))
		return 1;
	uint32_t serial = srv_expect(s, T_ALLOCATE);
	int fd;
	if (!serial || memfds(&fd, 1))
		return 1;
	struct pkt p;
	allocated(&p, serial, 1, 1);
	int r = srv_send(s, &p, &fd, 1);
	close(fd);
	return r || srv_expect_eof(s);
}

/* The daemon dies having read a request, before answering. A new one
 * already listens on the same socket, yet the call fails DISCONNECTED:
 * the request is never sent twice (the first daemon may have allocated).
 * The next call reconnects by itself. */
static void test_closed_mid_request(void)
{
	struct fake f;
	fake_start(&f, srv_closed_mid_request);
	struct heapd_client *c = client_for(&f, 0);
	struct fake next = f;
	fake_restart(&next, srv_allocate_once);
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .size = 4096};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), -HEAPD_ERROR_DISCONNECTED);
	CHECK_INT(a.count, 0);
	CHECK(!heapd_client_is_connected(c));
	CHECK_INT(fake_wait(&f), 0);

	CHECK_ERR(c, heapd_allocate(c, &req, &a), 0);
	CHECK_INT(a.count, 1);
	CHECK(a.fds[0] >= 0 && fcntl(a.fds[0], F_GETFD) == FD_CLOEXEC);
	CHECK(heapd_client_is_connected(c));
	heapd_allocation_close(&a);
	heapd_client_free(c);
	CHECK_INT(fake_finish(&next), 0);
}

static int srv_hello_only(int s)
{
	return srv_hello(s);
}

/* The daemon closed an idle connection and nothing listens any more:
 * the request never left, the library tries once to reconnect, and says
 * so. */
static void test_closed_idle(void)
{
	struct fake f;
	fake_start(&f, srv_hello_only);
	struct heapd_client *c = client_for(&f, 0);
	CHECK_INT(fake_finish(&f), 0);
	struct heapd_usage *u = NULL;
	CHECK_ERR(c, heapd_my_usage(c, &u), -HEAPD_ERROR_NO_DAEMON);
	CHECK(u == NULL);
	CHECK(strstr(heapd_client_error_message(c), "reconnecting") != NULL);
	CHECK(!heapd_client_is_connected(c));
	/* Every later call tries again. */
	CHECK_ERR(c, heapd_my_usage(c, &u), -HEAPD_ERROR_NO_DAEMON);
	CHECK(u == NULL);
	heapd_client_free(c);
}

/* The daemon restarted while the client was idle: the next call finds the
 * old connection dead when sending (nothing was sent), reconnects to the
 * same socket and sends the request there, once. */
static void test_reconnect_idle(void)
{
	struct fake f;
	fake_start(&f, srv_hello_only);
	struct heapd_client *c = client_for(&f, HEAPD_FEATURE_IMAGE);
	CHECK_INT(fake_wait(&f), 0);
	fake_restart(&f, srv_allocate_once);
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .size = 4096};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), 0);
	CHECK_INT(a.count, 1);
	CHECK_STR(heapd_client_error_message(c), "");
	struct heapd_server_info info;
	CHECK_ERR(c, heapd_client_server_info(c, &info), 0);
	CHECK_INT(info.features, HEAPD_FEATURE_IMAGE); /* asked for again */
	heapd_allocation_close(&a);
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

/* The answer to a call that timed out arrives during the next call: it is
 * skipped and its fd closed. */
static int srv_timeout_late_reply(int s)
{
	if (srv_hello(s))
		return 1;
	uint32_t late = srv_expect(s, T_ALLOCATE);
	uint32_t serial = srv_expect(s, T_LIST_HEAPS); /* sent after the timeout */
	int fd;
	struct pkt p;
	if (!late || !serial || memfds(&fd, 1))
		return 1;
	allocated(&p, late, 1, 1);
	int r = srv_send(s, &p, &fd, 1);
	close(fd);
	empty_heaps(&p, serial);
	return r || srv_send(s, &p, NULL, 0) || srv_expect_eof(s);
}

static void test_timeout_late_reply(void)
{
	struct fake f;
	fake_start(&f, srv_timeout_late_reply);
	struct heapd_client *c = client_for(&f, 0);
	heapd_client_set_timeout(c, 200);
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .size = 4096};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), -HEAPD_ERROR_TIMEOUT);
	CHECK(heapd_client_is_connected(c));
	heapd_client_set_timeout(c, 10000);
	struct heapd_heap_list *l = NULL;
	CHECK_ERR(c, heapd_list_heaps(c, &l), 0);
	heapd_heap_list_free(l);
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

/* ---- malformed replies: an error, the connection closed, no fd left ---- */

/* The scenario of the running case: the fake answers request with build's
 * packet and nfds memfds, and the client must fail with want_msg in its
 * message. */
static struct scenario {
	uint16_t request;
	void (*build)(struct pkt *p, uint32_t serial);
	int nfds;
	unsigned int count; /* buffers the Allocate asks for (0: 1) */
	const char *want_msg;
} sc;

static int srv_scenario(int s)
{
	if (srv_hello(s))
		return 1;
	uint32_t serial = srv_expect(s, sc.request);
	if (!serial)
		return 1;
	static struct pkt p;
	int fds[32];
	if (memfds(fds, sc.nfds))
		return 1;
	sc.build(&p, serial);
	int r = srv_send(s, &p, fds, sc.nfds);
	for (int i = 0; i < sc.nfds; i++)
		close(fds[i]);
	return r || srv_expect_eof(s);
}

static void run_scenario(uint16_t request, void (*build)(struct pkt *, uint32_t), int nfds,
			 const char *want_msg)
{
	sc.request = request;
	sc.build = build;
	sc.nfds = nfds;
	sc.want_msg = want_msg;
	struct fake f;
	fake_start(&f, srv_scenario);
	struct heapd_client *c = client_for(&f, 0);
	int r;
	if (request == T_ALLOCATE) {
		struct heapd_allocation a;
		struct heapd_request req = {.heap = "system", .size = 4096, .count = sc.count};
		r = heapd_allocate(c, &req, &a);
		CHECK_INT(a.count, 0);
		CHECK_INT(a.fds[0], -1);
	} else {
		struct heapd_heap_list *l = (struct heapd_heap_list *)&r;
		r = heapd_list_heaps(c, &l);
		CHECK(l == NULL);
	}
	CHECK_ERR(c, r, -HEAPD_ERROR_BAD_MESSAGE);
	if (!strstr(heapd_client_error_message(c), want_msg)) {
		fprintf(stderr, "message \"%s\" lacks \"%s\"\n", heapd_client_error_message(c),
			want_msg);
		ctest_failures++;
	}
	CHECK(!heapd_client_is_connected(c));
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
	sc.count = 0;
}

/* Malformed HelloReplies: connect fails and leaves no connection. */
static struct pkt bad_hello;

static int srv_bad_hello(int s)
{
	return !srv_expect(s, T_HELLO) || srv_send(s, &bad_hello, NULL, 0) || srv_expect_eof(s);
}

static void run_bad_hello(const char *want_msg)
{
	struct fake f;
	fake_start(&f, srv_bad_hello);
	struct heapd_client *c = heapd_client_new();
	REQUIRE(c);
	CHECK_ERR(c, heapd_client_connect(c, f.path, 0), -HEAPD_ERROR_BAD_MESSAGE);
	CHECK(strstr(heapd_client_error_message(c), want_msg) != NULL);
	CHECK(!heapd_client_is_connected(c));
	heapd_client_free(c);
	CHECK_INT(fake_finish(&f), 0);
}

static void test_bad_hello_magic(void)
{
	hello_reply(&bad_hello, 1, 0x50414549, 1, 0, 0, 16);
	run_bad_hello("not heapd's");
}

static void test_bad_hello_major(void)
{
	hello_reply(&bad_hello, 1, 0x50414548, 2, 0, 0, 16);
	run_bad_hello("major version 2");
}

static void test_bad_hello_minor(void)
{
	hello_reply(&bad_hello, 1, 0x50414548, 1, 1, 0, 16);
	run_bad_hello("minor version 1");
}

static void test_bad_hello_features(void)
{
	hello_reply(&bad_hello, 1, 0x50414548, 1, 0, UINT64_C(1) << 40, 16);
	run_bad_hello("not asked for");
}

static void test_bad_hello_max_batch(void)
{
	hello_reply(&bad_hello, 1, 0x50414548, 1, 0, 0, 17);
	run_bad_hello("max batch 17");
}

static void build_trailing(struct pkt *p, uint32_t serial)
{
	p_begin(p, T_HEAPS, 0, serial);
	p_u16(p, 0);
	p_u16(p, 0);
	p_u8(p, 0);
	p_end(p);
}

static void test_bad_trailing_bytes(void)
{
	run_scenario(T_LIST_HEAPS, build_trailing, 0, "1 trailing bytes");
}

static void build_short_body(struct pkt *p, uint32_t serial)
{
	p_begin(p, T_HEAPS, 0, serial);
	p_u16(p, 1);
	p_str(p, "system");
	for (int i = 0; i < 5; i++)
		p_str(p, "");
	p_u32(p, 0);
	p_u64(p, 0);
	p_u64(p, 0);
	p_u64(p, 0);
	p_u8(p, 0); /* half of the problem count */
	p_end(p);
}

static void test_bad_short_body(void)
{
	run_scenario(T_LIST_HEAPS, build_short_body, 0, "need 2 bytes, 1 left");
}

static void build_long_string(struct pkt *p, uint32_t serial)
{
	char name[257];
	memset(name, 'n', 256);
	name[256] = '\0';
	p_begin(p, T_HEAPS, 0, serial);
	p_u16(p, 1);
	p_str(p, name);
	for (int i = 0; i < 5; i++)
		p_str(p, "");
	p_u32(p, 0);
	p_u64(p, 0);
	p_u64(p, 0);
	p_u64(p, 0);
	p_u16(p, 0);
	p_end(p);
}

static void test_bad_long_string(void)
{
	run_scenario(T_LIST_HEAPS, build_long_string, 0, "heap name: 256 bytes, at most 255");
}

static void build_heap_named(struct pkt *p, uint32_t serial, const char *name, size_t n)
{
	p_begin(p, T_HEAPS, 0, serial);
	p_u16(p, 1);
	p_u16(p, (uint16_t)n);
	p_bytes(p, name, n);
	for (int i = 0; i < 5; i++)
		p_str(p, "");
	p_u32(p, 0);
	p_u64(p, 0);
	p_u64(p, 0);
	p_u64(p, 0);
	p_u16(p, 0);
	p_end(p);
}

static void build_bad_utf8(struct pkt *p, uint32_t serial)
{
	build_heap_named(p, serial, "sys\xfftem", 7);
}

static void test_bad_utf8(void)
{
	run_scenario(T_LIST_HEAPS, build_bad_utf8, 0, "not valid UTF-8");
}

static void build_nul(struct pkt *p, uint32_t serial)
{
	build_heap_named(p, serial, "sys\0tem", 7);
}

static void test_bad_nul_in_string(void)
{
	run_scenario(T_LIST_HEAPS, build_nul, 0, "NUL");
}

static void build_huge_count(struct pkt *p, uint32_t serial)
{
	p_begin(p, T_HEAPS, 0, serial);
	p_u16(p, 256);
	p_u16(p, 0);
	p_end(p);
}

static void test_bad_huge_count(void)
{
	run_scenario(T_LIST_HEAPS, build_huge_count, 0, "cannot fit");
}

static void build_count_over_limit(struct pkt *p, uint32_t serial)
{
	p_begin(p, T_HEAPS, 0, serial);
	p_u16(p, 0xffff);
	p_u16(p, 0);
	p_end(p);
}

static void test_bad_count_over_limit(void)
{
	run_scenario(T_LIST_HEAPS, build_count_over_limit, 0, "65535, at most 256");
}

static void build_heaps_with_fd(struct pkt *p, uint32_t serial)
{
	empty_heaps(p, serial);
	p->b[2] = 1; /* nfds */
}

static void test_bad_fd_on_heaps(void)
{
	run_scenario(T_LIST_HEAPS, build_heaps_with_fd, 1, "carries no fds, 1 arrived");
}

static void build_wrong_reply_type(struct pkt *p, uint32_t serial)
{
	p_begin(p, T_USAGE, 0, serial);
	p_end(p);
}

static void test_bad_wrong_reply_type(void)
{
	run_scenario(T_LIST_HEAPS, build_wrong_reply_type, 0,
		     "answered request 0x0002 with message 0x8004");
}

static void build_unknown_type(struct pkt *p, uint32_t serial)
{
	p_begin(p, 0x8123, 0, serial);
	p_u32(p, 7);
	p_end(p);
}

static void test_bad_unknown_type(void)
{
	run_scenario(T_LIST_HEAPS, build_unknown_type, 0, "with message 0x8123");
}

static void build_serial_zero(struct pkt *p, uint32_t serial)
{
	(void)serial;
	empty_heaps(p, 0);
}

static void test_bad_serial_zero(void)
{
	run_scenario(T_LIST_HEAPS, build_serial_zero, 0, "0x8002 with serial 0");
}

static void build_length_field(struct pkt *p, uint32_t serial)
{
	empty_heaps(p, serial);
	p->b[8] = 8;
}

static void test_bad_length_field(void)
{
	run_scenario(T_LIST_HEAPS, build_length_field, 0, "says 8 body bytes, the packet has 4");
}

static void build_header_flags(struct pkt *p, uint32_t serial)
{
	empty_heaps(p, serial);
	p->b[12] = 1;
}

static void test_bad_header_flags(void)
{
	run_scenario(T_LIST_HEAPS, build_header_flags, 0, "header flags 0x1");
}

static void build_short_packet(struct pkt *p, uint32_t serial)
{
	empty_heaps(p, serial);
	p->n = 10;
}

static void test_bad_short_packet(void)
{
	run_scenario(T_LIST_HEAPS, build_short_packet, 0, "10-byte packet");
}

static void build_oversize(struct pkt *p, uint32_t serial)
{
	p_begin(p, T_HEAPS, 0, serial);
	p_u16(p, 0);
	p_u16(p, 1);
	char text[4097];
	memset(text, 'x', 4096);
	text[4096] = '\0';
	while (p->n < 70000)
		p_str(p, text);
	p_end(p);
}

static void test_bad_oversize_packet(void)
{
	run_scenario(T_LIST_HEAPS, build_oversize, 0, "MSG_TRUNC");
}

static void build_nfds_lie(struct pkt *p, uint32_t serial)
{
	allocated(p, serial, 1, 2);
}

static void test_bad_nfds_lie(void)
{
	run_scenario(T_ALLOCATE, build_nfds_lie, 1, "says 2 fds, 1 arrived");
}

static void build_error_code_zero(struct pkt *p, uint32_t serial)
{
	error_msg(p, serial, 0, "zero");
}

static void test_bad_error_code_zero(void)
{
	run_scenario(T_LIST_HEAPS, build_error_code_zero, 0, "error code 0");
}

static void build_bad_event(struct pkt *p, uint32_t serial)
{
	(void)serial;
	p_begin(p, T_EVENT, 0, 0);
	p_u64(p, 1);
	p_u16(p, 9);
	p_str(p, "");
	p_end(p);
}

static void test_bad_event(void)
{
	run_scenario(T_LIST_HEAPS, build_bad_event, 0, "unknown event kind 9");
}

/* More fds than the client has control space for: the kernel truncates
 * (MSG_CTRUNC) after installing those that fit, which must all be closed. */
static void build_ctrunc(struct pkt *p, uint32_t serial)
{
	allocated(p, serial, 1, 1);
}

static void test_bad_ctrunc(void)
{
	run_scenario(T_ALLOCATE, build_ctrunc, 24, "MSG_CTRUNC");
}

static void build_allocated_fewer_fds(struct pkt *p, uint32_t serial)
{
	allocated(p, serial, 2, 1);
}

static void test_bad_allocated_fewer_fds(void)
{
	sc.count = 2;
	run_scenario(T_ALLOCATE, build_allocated_fewer_fds, 1, "2 buffers but 1 fds");
}

static void build_allocated_count(struct pkt *p, uint32_t serial)
{
	allocated(p, serial, 1, 2);
}

static void test_bad_allocated_count(void)
{
	/* One buffer in the body, two fds: the count and the fds disagree. */
	run_scenario(T_ALLOCATE, build_allocated_count, 2, "1 buffers but 2 fds");
}

static void build_allocated_ids(struct pkt *p, uint32_t serial)
{
	allocated(p, serial, 1, 1);
	p->n -= 4;
	p_end(p);
}

static void test_bad_allocated_ids(void)
{
	run_scenario(T_ALLOCATE, build_allocated_ids, 1, "1 buffer ids need 8 bytes, 4 left");
}

static void build_allocated_17(struct pkt *p, uint32_t serial)
{
	allocated(p, serial, 1, 17);
}

static void test_bad_allocated_too_many_fds(void)
{
	run_scenario(T_ALLOCATE, build_allocated_17, 17, "1 buffers but 17 fds");
}
