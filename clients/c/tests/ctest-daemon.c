/*
 * ctest-daemon.c - the C client against the real heapd, which the Go
 * driver (../ctest/ctest_test.go) starts on a temporary socket and names in
 * $HEAPD_SOCKET. Groups (the driver sets each up):
 *
 *	daemon   run as the test's user (root) against a shared heapd
 *	nobody   run as uid/gid 65534 against the same heapd
 *	denied   run as uid/gid 65533 against the same heapd
 *	quota    run as uid/gid 65534 against a heapd of its own
 *	busy     heapd started with --max-connections-per-uid 2
 *	gone     a heapd of its own, pid in $HEAPD_TEST_DAEMON_PID, killed
 *	restart  a heapd of its own, which the driver kills with SIGKILL and
 *	         replaces by a new heapd on the same socket when the case
 *	         prints "RESTART HEAPD" (answering "restarted" on stdin)
 *	stopped  a heapd of its own, stopped with SIGTERM
 *
 * heapd runs with the driver's policy file (policy() in ctest/ctest_test.go):
 * root unlimited; uid 65534 the system heap only, max_alloc 4 MiB, a quota
 * of 8 MiB and 6 buffers; any other uid matches no rule and is denied.
 *
 * On the host heapd serves the emulated heap (sealed memfds); in the VM
 * tier ($HEAPD_REQUIRE_DEVICES=1) real DMA-BUF heaps, which the tests then
 * insist on.
 */
#define _GNU_SOURCE

#include "heapd-client.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/dma-buf.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define CTEST_CASES                                                            \
	X(daemon, info)                                                        \
	X(daemon, list_heaps)                                                  \
	X(daemon, allocate_size)                                               \
	X(daemon, allocate_image)                                              \
	X(daemon, allocate_batch)                                              \
	X(daemon, daemon_errors)                                               \
	X(daemon, usage)                                                       \
	X(daemon, disconnect_keeps_buffers)                                    \
	X(daemon, threads)                                                     \
	X(nobody, nobody_usage)                                                \
	X(nobody, nobody_system)                                               \
	X(nobody, nobody_denied)                                               \
	X(denied, denied)                                                      \
	X(quota, quota)                                                        \
	X(busy, busy)                                                          \
	X(gone, daemon_killed)                                                 \
	X(restart, daemon_restarted)                                           \
	X(restart, daemon_restarted_under_load)                                \
	X(stopped, daemon_stopped)

#include "ctest.h"

static int required(void)
{
	const char *r = getenv("HEAPD_REQUIRE_DEVICES");
	return r && strcmp(r, "1") == 0;
}

static struct heapd_client *connect_env(void)
{
	struct heapd_client *c = heapd_client_new();
	if (!c) {
		perror("heapd_client_new");
		exit(2);
	}
	/* NULL: $HEAPD_SOCKET, as every client would. */
	int r = heapd_client_connect(c, NULL, 0);
	if (r != 0)
		fprintf(stderr, "connect: %s: %s\n", heapd_error_name(r),
			heapd_client_error_message(c));
	return c;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* sync_buffer brackets CPU access to a DMA-BUF (a memfd needs none: the
 * ioctl fails with ENOTTY there, which is fine). */
static int sync_buffer(int fd, uint64_t flags)
{
	struct dma_buf_sync s = {.flags = flags};
	int r;
	while ((r = ioctl(fd, DMA_BUF_IOCTL_SYNC, &s)) < 0 && (errno == EINTR || errno == EAGAIN))
		;
	return r == 0 || errno == ENOTTY ? 0 : -1;
}

/* fill_check maps a buffer, writes a pattern, reads it back. */
static int fill_check(int fd, uint64_t size, unsigned int seed)
{
	if (size > SIZE_MAX) {
		fprintf(stderr, "fill_check: %llu bytes do not fit the address space\n", (unsigned long long)size);
		return 0;
	}
	unsigned char *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 0;
	}
	int ok = sync_buffer(fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE) == 0;
	for (uint64_t i = 0; i < size; i++)
		p[i] = (unsigned char)(i * 7 + seed);
	ok = ok && sync_buffer(fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE) == 0;
	ok = ok && sync_buffer(fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ) == 0;
	for (uint64_t i = 0; ok && i < size; i++)
		ok = p[i] == (unsigned char)(i * 7 + seed);
	ok = sync_buffer(fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ) == 0 && ok;
	munmap(p, (size_t)size);
	return ok;
}

/* debug_name reads the name the kernel shows for fd: a DMA-BUF's
 * fdinfo "name:", or a memfd's link "/memfd:NAME (deleted)" (heapd's
 * emulated heap names its memfds "heapd-emulated:" + the buffer name). */
static void debug_name(int fd, int emulated, char *out, size_t n)
{
	char path[64];
	out[0] = '\0';
	if (emulated) {
		char link[512];
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
		ssize_t len = readlink(path, link, sizeof link - 1);
		if (len < 0)
			return;
		link[len] = '\0';
		const char *s = link;
		if (strncmp(s, "/memfd:", 7) == 0)
			s += 7;
		snprintf(out, n, "%s", s);
		char *del = strstr(out, " (deleted)");
		if (del)
			*del = '\0';
		return;
	}
	snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof line, f))
		if (strncmp(line, "name:", 5) == 0) {
			const char *s = line + 5;
			while (*s == ' ' || *s == '\t')
				s++;
			snprintf(out, n, "%s", s);
			out[strcspn(out, "\n")] = '\0';
		}
	fclose(f);
}

/* check_buffers checks what every allocation must be. */
static void check_buffers(const struct heapd_allocation *a, unsigned int count,
			  const char *label)
{
	CHECK_INT(a->count, count);
	int emulated = (a->flags & HEAPD_BUFFER_EMULATED) != 0;
	if (required())
		CHECK(!emulated); /* the VM tier has real heaps */
	if (emulated)
		CHECK_STR(a->backend, "emulated");
	CHECK(a->size > 0 && a->size % (uint64_t)sysconf(_SC_PAGESIZE) == 0);
	char prefix[64];
	snprintf(prefix, sizeof prefix, "heapd:uid%u:", (unsigned int)geteuid());
	CHECK(strncmp(a->name, prefix, strlen(prefix)) == 0);
	if (label) {
		size_t n = strlen(a->name), l = strlen(label);
		CHECK(n > l && strcmp(a->name + n - l, label) == 0 && a->name[n - l - 1] == ':');
	}
	for (unsigned int i = 0; i < a->count; i++) {
		int flags = fcntl(a->fds[i], F_GETFD);
		CHECK(flags >= 0 && (flags & FD_CLOEXEC));
		CHECK((fcntl(a->fds[i], F_GETFL) & O_ACCMODE) == O_RDWR);
		struct stat st;
		CHECK(fstat(a->fds[i], &st) == 0 && (uint64_t)st.st_size == a->size);
		char name[600], want[300];
		debug_name(a->fds[i], emulated, name, sizeof name);
		snprintf(want, sizeof want, "%s%s", emulated ? "heapd-emulated:" : "", a->name);
		CHECK_STR(name, want);
		if (emulated) {
			int seals = fcntl(a->fds[i], F_GET_SEALS);
			CHECK(seals >= 0 && (seals & F_SEAL_SHRINK) && (seals & F_SEAL_GROW));
		}
		for (unsigned int j = 0; j < i; j++)
			CHECK(a->ids[i] != a->ids[j]);
	}
	for (unsigned int i = a->count; i < HEAPD_MAX_BATCH; i++)
		CHECK_INT(a->fds[i], -1);
}

/* ---- daemon ---- */

static void test_info(void)
{
	struct heapd_client *c = connect_env();
	REQUIRE(heapd_client_is_connected(c));
	struct heapd_server_info info;
	CHECK_ERR(c, heapd_client_server_info(c, &info), 0);
	CHECK_INT(info.major, 1);
	CHECK_INT(info.minor, 0);
	CHECK_INT(info.features, HEAPD_FEATURES_ALL);
	CHECK(strncmp(info.server, "heapd", 5) == 0);
	CHECK(info.max_batch >= 1 && info.max_batch <= HEAPD_MAX_BATCH);
	CHECK(info.max_in_flight >= 1);
	CHECK_INT(info.max_message, HEAPD_MAX_MESSAGE);
	printf("server %s, uptime %llu ms, features 0x%llx, max batch %u\n", info.server,
	       (unsigned long long)info.uptime_ms, (unsigned long long)info.features,
	       info.max_batch);

	/* Fewer features: the daemon answers with what was asked. */
	CHECK_ERR(c, heapd_client_connect(c, NULL, HEAPD_FEATURE_USAGE), 0);
	CHECK_ERR(c, heapd_client_server_info(c, &info), 0);
	CHECK_INT(info.features, HEAPD_FEATURE_USAGE);
	/* And a feature not negotiated is refused by the daemon, politely. */
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .width = 64, .height = 64,
				    .fourcc = HEAPD_FORMAT_XRGB8888};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), -HEAPD_ERROR_INVALID_ARGUMENT);
	CHECK(strstr(heapd_client_error_message(c), "image") != NULL);
	CHECK(heapd_client_is_connected(c));
	heapd_client_free(c);
}

static void test_list_heaps(void)
{
	struct heapd_client *c = connect_env();
	struct heapd_heap_list *l = NULL;
	CHECK_ERR(c, heapd_list_heaps(c, &l), 0);
	REQUIRE(l);
	CHECK(l->count >= 1);
	const struct heapd_heap *sys = heapd_heap_list_find(l, "system");
	REQUIRE(sys);
	for (unsigned int i = 0; i < l->count; i++) {
		const struct heapd_heap *h = &l->heaps[i];
		printf("heap %-24s backend %-8s target %s flags 0x%x\n", h->name, h->backend,
		       h->target, h->flags);
		CHECK(h->name[0] != '\0');
		CHECK(strcmp(h->backend, "kernel") == 0 || strcmp(h->backend, "udmabuf") == 0 ||
		      strcmp(h->backend, "emulated") == 0);
		if (strcmp(h->backend, "emulated") == 0)
			CHECK(!(h->flags & HEAPD_HEAP_DEVICE_IMPORTABLE));
	}
	for (unsigned int i = 0; i < l->problem_count; i++)
		printf("problem: %s\n", l->problems[i]);
	if (required())
		CHECK(strcmp(sys->backend, "emulated") != 0);
	heapd_heap_list_free(l);
	heapd_client_free(c);
}

static void test_allocate_size(void)
{
	struct heapd_client *c = connect_env();
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .size = (1 << 20) + 1, .label = "ctest"};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), 0);
	REQUIRE(a.count == 1);
	check_buffers(&a, 1, "ctest");
	CHECK(a.size >= (1 << 20) + 1);
	CHECK_STR(a.heap, "system");
	CHECK(a.width == 0 && a.height == 0 && a.pitch == 0 && a.fourcc == 0);
	CHECK(fill_check(a.fds[0], a.size, 3));
	printf("%llu bytes from %s (%s), name %s, id %llu\n", (unsigned long long)a.size, a.heap,
	       a.backend, a.name, (unsigned long long)a.ids[0]);
	heapd_allocation_close(&a);
	heapd_client_free(c);
}

static void test_allocate_image(void)
{
	struct heapd_client *c = connect_env();
	struct {
		uint32_t w, h, fourcc;
		uint64_t modifier;
		uint32_t pitch;
	} cases[] = {
		/* docs/protocol.md, "The image layout rule": LINEAR, 64-byte rows. */
		{640, 480, HEAPD_FORMAT_XRGB8888, HEAPD_MOD_INVALID, 2560},
		{100, 10, HEAPD_FORMAT_XRGB8888, HEAPD_MOD_LINEAR, 448},
		{33, 7, HEAPD_FORMAT_RGB565, HEAPD_MOD_LINEAR, 128},
		{1, 1, HEAPD_FORMAT_ARGB16161616, HEAPD_MOD_INVALID, 64},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct heapd_allocation a;
		struct heapd_request req = {.heap = "system",
					    .width = cases[i].w,
					    .height = cases[i].h,
					    .fourcc = cases[i].fourcc,
					    .modifier = cases[i].modifier};
		CHECK_ERR(c, heapd_allocate(c, &req, &a), 0);
		if (a.count != 1)
			continue;
		check_buffers(&a, 1, NULL);
		CHECK_INT(a.width, cases[i].w);
		CHECK_INT(a.height, cases[i].h);
		CHECK_INT(a.fourcc, cases[i].fourcc);
		CHECK_INT(a.pitch, cases[i].pitch);
		CHECK_INT(a.offset, 0);
		CHECK_INT(a.modifier, HEAPD_MOD_LINEAR);
		CHECK(a.size >= (uint64_t)a.pitch * a.height);
		CHECK(fill_check(a.fds[0], a.size, (unsigned int)i));
		heapd_allocation_close(&a);
	}
	heapd_client_free(c);
}

static void test_allocate_batch(void)
{
	struct heapd_client *c = connect_env();
	struct heapd_server_info info;
	CHECK_ERR(c, heapd_client_server_info(c, &info), 0);
	unsigned int n = info.max_batch < 4 ? info.max_batch : 4;
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .size = 65536, .count = n, .label = "batch"};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), 0);
	check_buffers(&a, n, "batch");
	for (unsigned int i = 0; i < a.count; i++)
		CHECK(fill_check(a.fds[i], a.size, i));
	heapd_allocation_close(&a);
	heapd_client_free(c);
}

static void test_daemon_errors(void)
{
	struct heapd_client *c = connect_env();
	struct heapd_allocation a;
	struct {
		struct heapd_request req;
		int want;
		const char *msg;
	} cases[] = {
		{{.heap = "no-such-heap", .size = 4096}, -HEAPD_ERROR_UNKNOWN_HEAP, "no-such-heap"},
		{{.heap = "system", .width = 20000, .height = 1, .fourcc = HEAPD_FORMAT_XRGB8888},
		 -HEAPD_ERROR_INVALID_ARGUMENT, "20000"},
		{{.heap = "system", .width = 0, .height = 16, .fourcc = HEAPD_FORMAT_XRGB8888},
		 -HEAPD_ERROR_INVALID_ARGUMENT, ""},
		{{.heap = "system", .width = 64, .height = 64, .fourcc = HEAPD_FOURCC('N', 'V', '1', '2')},
		 -HEAPD_ERROR_NOT_SUPPORTED, ""},
		{{.heap = "system", .width = 64, .height = 64, .fourcc = HEAPD_FORMAT_XRGB8888,
		  .modifier = 1},
		 -HEAPD_ERROR_NOT_SUPPORTED, ""},
		{{.heap = "system", .size = UINT64_MAX}, -HEAPD_ERROR_INVALID_ARGUMENT, ""},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int r = heapd_allocate(c, &cases[i].req, &a);
		if (r != cases[i].want)
			fprintf(stderr, "case %zu:\n", i);
		CHECK_ERR(c, r, cases[i].want);
		CHECK_INT(a.count, 0);
		CHECK(strstr(heapd_client_error_message(c), cases[i].msg) != NULL);
		printf("%s: %s\n", heapd_error_name(r), heapd_client_error_message(c));
		/* Refusals leave the connection usable. */
		CHECK(heapd_client_is_connected(c));
	}
	/* An argument the protocol cannot carry is refused before sending. */
	struct heapd_request bad = {.heap = "system", .size = 4096, .label = "tab\there"};
	CHECK_ERR(c, heapd_allocate(c, &bad, &a), -HEAPD_ERROR_BAD_ARGUMENT);
	struct heapd_request good = {.heap = "system", .size = 4096};
	CHECK_ERR(c, heapd_allocate(c, &good, &a), 0);
	heapd_allocation_close(&a);
	heapd_client_free(c);
}

static void own_comm(char *out, size_t n)
{
	out[0] = '\0';
	FILE *f = fopen("/proc/self/comm", "re");
	if (!f)
		return;
	if (fgets(out, (int)n, f))
		out[strcspn(out, "\n")] = '\0';
	fclose(f);
}

static void test_usage(void)
{
	struct heapd_client *c = connect_env();
	struct heapd_usage *before = NULL, *after = NULL;
	CHECK_ERR(c, heapd_my_usage(c, &before), 0);
	REQUIRE(before);
	CHECK_INT(before->uid, geteuid());
	CHECK_INT(before->gid, getegid());
	CHECK_INT(before->pid, getpid());
	char comm[64];
	own_comm(comm, sizeof comm);
	CHECK_STR(before->comm, comm);
	CHECK(before->policy[0] != '\0');
	printf("policy: %s\n", before->policy);
	if (!(before->flags & HEAPD_USAGE_ACCOUNTED))
		CHECK(before->bytes == 0 && before->buffers == 0);

	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .size = 1 << 20};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), 0);
	CHECK_ERR(c, heapd_my_usage(c, &after), 0);
	if (after) {
		/* The ledger follows buffers: what this process holds counts. */
		CHECK(after->flags & HEAPD_USAGE_ACCOUNTED);
		CHECK(after->bytes >= (1 << 20) && after->buffers >= 1);
		CHECK(after->total_buffers == before->total_buffers + 1);
		CHECK(after->total_bytes >= before->total_bytes + (1 << 20));
		int found = 0;
		for (unsigned int i = 0; i < after->heap_count; i++)
			found |= strcmp(after->heaps[i].heap, "system") == 0;
		CHECK(found);
		printf("uid %u: %llu buffers, %llu bytes handed out; limit %s\n", after->uid,
		       (unsigned long long)after->total_buffers,
		       (unsigned long long)after->total_bytes,
		       after->limit_bytes == HEAPD_UNLIMITED ? "none" : "set");
	}
	heapd_allocation_close(&a);
	heapd_usage_free(before);
	heapd_usage_free(after);
	heapd_client_free(c);
}

static void test_disconnect_keeps_buffers(void)
{
	struct heapd_client *c = connect_env();
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .size = 8192};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), 0);
	heapd_client_free(c); /* buffers belong to whoever holds their fds */
	if (a.count == 1)
		CHECK(fill_check(a.fds[0], a.size, 9));
	heapd_allocation_close(&a);
}

/* Distinct clients are independent: one per thread, all at once. */
static void *thread_main(void *arg)
{
	long failures = 0;
	struct heapd_client *c = heapd_client_new();
	if (!c || heapd_client_connect(c, NULL, 0) != 0)
		return (void *)1;
	for (int i = 0; i < 16; i++) {
		struct heapd_allocation a;
		struct heapd_request req = {.heap = "system", .size = 65536, .count = 2};
		int r = heapd_allocate(c, &req, &a);
		if (r != 0) {
			fprintf(stderr, "thread %ld: %s: %s\n", (long)(intptr_t)arg,
				heapd_error_name(r), heapd_client_error_message(c));
			failures++;
			continue;
		}
		if (!fill_check(a.fds[1], a.size, (unsigned int)i))
			failures++;
		heapd_allocation_close(&a);
	}
	heapd_client_free(c);
	return (void *)failures;
}

static void test_threads(void)
{
	pthread_t t[4];
	for (intptr_t i = 0; i < 4; i++)
		REQUIRE(pthread_create(&t[i], NULL, thread_main, (void *)i) == 0);
	for (int i = 0; i < 4; i++) {
		void *ret;
		REQUIRE(pthread_join(t[i], &ret) == 0);
		CHECK(ret == NULL);
	}
}

/* ---- nobody ---- */

static void test_nobody_usage(void)
{
	REQUIRE(geteuid() == 65534);
	struct heapd_client *c = connect_env();
	struct heapd_usage *u = NULL;
	CHECK_ERR(c, heapd_my_usage(c, &u), 0);
	if (u) {
		CHECK_INT(u->uid, 65534);
		CHECK_INT(u->gid, 65534);
		CHECK_INT(u->group_count, 0);
		printf("policy for nobody: %s\n", u->policy);
	}
	heapd_usage_free(u);
	heapd_client_free(c);
}

static void test_nobody_system(void)
{
	struct heapd_client *c = connect_env();
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .size = 1 << 20, .label = "n"};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), 0);
	check_buffers(&a, 1, "n");
	CHECK(strncmp(a.name, "heapd:uid65534:", 15) == 0);
	if (a.count == 1)
		CHECK(fill_check(a.fds[0], a.size, 1));
	heapd_allocation_close(&a);
	heapd_client_free(c);
}

/* The policy grants uid 65534 the system heap only: contiguous (CMA)
 * memory, where there is some, is denied. */
static void test_nobody_denied(void)
{
	struct heapd_client *c = connect_env();
	struct heapd_heap_list *l = NULL;
	CHECK_ERR(c, heapd_list_heaps(c, &l), 0);
	const struct heapd_heap *contig = NULL;
	for (unsigned int i = 0; l && i < l->count; i++)
		if (l->heaps[i].flags & HEAPD_HEAP_CONTIGUOUS) {
			contig = &l->heaps[i];
			break;
		}
	if (!contig) {
		heapd_heap_list_free(l);
		heapd_client_free(c);
		SKIP("heapd publishes no contiguous heap here (no CMA): the DENIED path needs "
		     "one; the VM tier has it (cma=64M)");
	}
	struct heapd_allocation a;
	struct heapd_request req = {.heap = contig->name, .size = 1 << 20};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), -HEAPD_ERROR_DENIED);
	CHECK(strstr(heapd_client_error_message(c), "65534") != NULL);
	CHECK(strstr(heapd_client_error_message(c), "may not allocate from") != NULL);
	printf("DENIED: %s\n", heapd_client_error_message(c));
	CHECK(heapd_client_is_connected(c));
	struct heapd_request ok = {.heap = "system", .size = 4096};
	CHECK_ERR(c, heapd_allocate(c, &ok, &a), 0);
	heapd_allocation_close(&a);
	heapd_heap_list_free(l);
	heapd_client_free(c);
}

/* ---- denied: a uid no rule matches ---- */

static void test_denied(void)
{
	REQUIRE(geteuid() == 65533);
	struct heapd_client *c = connect_env();
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .size = 4096};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), -HEAPD_ERROR_DENIED);
	CHECK_INT(a.count, 0);
	CHECK(strstr(heapd_client_error_message(c), "65533") != NULL);
	CHECK(strstr(heapd_client_error_message(c), "matches no rule") != NULL);
	printf("DENIED: %s\n", heapd_client_error_message(c));
	/* A refusal leaves the connection usable. */
	CHECK(heapd_client_is_connected(c));
	struct heapd_usage *u = NULL;
	CHECK_ERR(c, heapd_my_usage(c, &u), 0);
	if (u) {
		CHECK_INT(u->uid, 65533);
		CHECK_INT(u->buffers, 0);
		printf("policy for uid 65533: %s\n", u->policy);
	}
	heapd_usage_free(u);
	heapd_client_free(c);
}

/* ---- quota: uid 65534 may hold 8 MiB in 6 buffers, 4 MiB at once ---- */

#define MiB (UINT64_C(1) << 20)

/* allocate_eventually retries while the ledger has not yet noticed
 * buffers freed a moment ago. */
static int allocate_eventually(struct heapd_client *c, const struct heapd_request *req,
			       struct heapd_allocation *a)
{
	int r = -1;
	for (int i = 0; i < 250; i++) {
		r = heapd_allocate(c, req, a);
		if (r != -HEAPD_ERROR_QUOTA)
			break;
		sleep_ms(20);
	}
	return r;
}

static void test_quota(void)
{
	REQUIRE(geteuid() == 65534);
	struct heapd_client *c = connect_env();
	struct heapd_allocation big, a, b, x, small;
	struct heapd_usage *u = NULL;

	/* Larger than max_alloc. */
	struct heapd_request too_big = {.heap = "system", .size = 5 * MiB};
	CHECK_ERR(c, heapd_allocate(c, &too_big, &big), -HEAPD_ERROR_QUOTA);
	CHECK(strstr(heapd_client_error_message(c), "max_alloc") != NULL);
	printf("QUOTA: %s\n", heapd_client_error_message(c));

	/* 8 MiB fill the byte quota... */
	struct heapd_request four = {.heap = "system", .size = 4 * MiB, .label = "q"};
	CHECK_ERR(c, heapd_allocate(c, &four, &a), 0);
	CHECK_ERR(c, heapd_allocate(c, &four, &b), 0);
	struct heapd_request one = {.heap = "system", .size = 1 * MiB};
	CHECK_ERR(c, heapd_allocate(c, &one, &x), -HEAPD_ERROR_QUOTA);
	CHECK(strstr(heapd_client_error_message(c), "would exceed") != NULL);
	printf("QUOTA: %s\n", heapd_client_error_message(c));
	CHECK(heapd_client_is_connected(c));

	CHECK_ERR(c, heapd_my_usage(c, &u), 0);
	if (u) {
		CHECK(u->flags & HEAPD_USAGE_ACCOUNTED);
		CHECK_INT(u->bytes, 8 * MiB);
		CHECK_INT(u->buffers, 2);
		CHECK_INT(u->limit_bytes, 8 * MiB);
		CHECK_INT(u->limit_buffers, 6);
		CHECK_INT(u->max_alloc, 4 * MiB);
		printf("held %llu bytes in %llu buffers, quota %llu bytes, %llu buffers: %s\n",
		       (unsigned long long)u->bytes, (unsigned long long)u->buffers,
		       (unsigned long long)u->limit_bytes, (unsigned long long)u->limit_buffers,
		       u->policy);
		heapd_usage_free(u);
	}

	/* ...until a buffer is freed: closing the fd makes room. */
	heapd_allocation_close(&a);
	CHECK_ERR(c, allocate_eventually(c, &one, &x), 0);

	/* Now 2 buffers held; 4 more reach the buffer quota of 6... */
	struct heapd_request four_small = {.heap = "system", .size = 4096, .count = 4};
	CHECK_ERR(c, heapd_allocate(c, &four_small, &small), 0);
	struct heapd_request seventh = {.heap = "system", .size = 4096};
	CHECK_ERR(c, heapd_allocate(c, &seventh, &a), -HEAPD_ERROR_QUOTA);
	CHECK(strstr(heapd_client_error_message(c), "buffer") != NULL);
	printf("QUOTA: %s\n", heapd_client_error_message(c));

	/* ...and the batch is all or nothing. */
	heapd_allocation_close(&x);
	struct heapd_request two = {.heap = "system", .size = 4096, .count = 2};
	CHECK_ERR(c, heapd_allocate(c, &two, &a), -HEAPD_ERROR_QUOTA);
	CHECK_INT(a.count, 0);

	heapd_allocation_close(&small);
	heapd_allocation_close(&b);
	CHECK_ERR(c, allocate_eventually(c, &four, &a), 0);
	heapd_allocation_close(&a);
	heapd_client_free(c);
}

/* ---- busy: heapd --max-connections-per-uid 2 ---- */

static void test_busy(void)
{
	struct heapd_client *c[3];
	for (int i = 0; i < 2; i++) {
		c[i] = connect_env();
		CHECK(heapd_client_is_connected(c[i]));
	}
	c[2] = heapd_client_new();
	REQUIRE(c[2]);
	CHECK_ERR(c[2], heapd_client_connect(c[2], NULL, 0), -HEAPD_ERROR_BUSY);
	printf("BUSY: %s\n", heapd_client_error_message(c[2]));
	CHECK(!heapd_client_is_connected(c[2]));
	/* A slot frees when a connection closes (the daemon notices
	 * asynchronously). */
	heapd_client_free(c[0]);
	int r = -1;
	for (int i = 0; i < 100 && r != 0; i++) {
		r = heapd_client_connect(c[2], NULL, 0);
		if (r != 0)
			sleep_ms(20);
	}
	CHECK_ERR(c[2], r, 0);
	heapd_client_free(c[1]);
	heapd_client_free(c[2]);
}

/* ---- gone: the daemon is killed ---- */

static pid_t daemon_pid(void)
{
	const char *s = getenv("HEAPD_TEST_DAEMON_PID");
	return s ? (pid_t)atoi(s) : 0;
}

/* until_disconnected calls until the client notices the daemon has gone
 * (it may answer a last request while the signal is on its way). */
static int until_disconnected(struct heapd_client *c)
{
	int r = 0;
	for (int i = 0; i < 250; i++) {
		struct heapd_heap_list *l = NULL;
		r = heapd_list_heaps(c, &l);
		heapd_heap_list_free(l);
		if (r != 0)
			return r;
		sleep_ms(20);
	}
	return r;
}

/* until_no_daemon connects until the daemon's socket is gone or dead. */
static int until_no_daemon(struct heapd_client *c)
{
	int r = 0;
	for (int i = 0; i < 250; i++) {
		r = heapd_client_connect(c, NULL, 0);
		if (r == -HEAPD_ERROR_NO_DAEMON)
			break;
		heapd_client_disconnect(c);
		sleep_ms(20);
	}
	return r;
}

static void test_daemon_killed(void)
{
	pid_t pid = daemon_pid();
	REQUIRE(pid > 0);
	struct heapd_client *c = connect_env();
	struct heapd_allocation a;
	struct heapd_request req = {.heap = "system", .size = 1 << 16};
	CHECK_ERR(c, heapd_allocate(c, &req, &a), 0);
	REQUIRE(kill(pid, SIGKILL) == 0);
	/* Noticed on sending (the library then tries once to reconnect:
	 * nobody listens) or while waiting for the reply (DISCONNECTED; a
	 * connection queued on the dying listener is reset the same way). */
	int r = until_disconnected(c);
	if (r != -HEAPD_ERROR_NO_DAEMON)
		CHECK_ERR(c, r, -HEAPD_ERROR_DISCONNECTED);
	printf("after SIGKILL: %s: %s\n", heapd_error_name(r), heapd_client_error_message(c));
	CHECK(!heapd_client_is_connected(c));
	/* Every later call tries to reconnect, and says why it cannot. */
	struct heapd_allocation none;
	r = heapd_allocate(c, &req, &none);
	if (r != -HEAPD_ERROR_NO_DAEMON)
		CHECK_ERR(c, r, -HEAPD_ERROR_DISCONNECTED);
	CHECK_INT(none.count, 0);
	CHECK(strstr(heapd_client_error_message(c), "reconnecting") != NULL ||
	      r == -HEAPD_ERROR_DISCONNECTED);
	/* The buffer outlives the daemon. */
	CHECK(fill_check(a.fds[0], a.size, 5));
	heapd_allocation_close(&a);
	/* Soon nobody listens on the socket (until the process is gone, a
	 * connection may still be queued, then reset: DISCONNECTED). */
	CHECK_ERR(c, until_no_daemon(c), -HEAPD_ERROR_NO_DAEMON);
	printf("reconnecting: %s\n", heapd_client_error_message(c));
	heapd_client_free(c);
}

static void test_daemon_stopped(void)
{
	pid_t pid = daemon_pid();
	REQUIRE(pid > 0);
	struct heapd_client *c = connect_env();
	REQUIRE(kill(pid, SIGTERM) == 0);
	int r = until_disconnected(c);
	/* Closed between requests (the library then tries once to
	 * reconnect: the socket is gone), or told SHUTTING_DOWN while
	 * sending one. */
	if (r != -HEAPD_ERROR_SHUTTING_DOWN && r != -HEAPD_ERROR_NO_DAEMON)
		CHECK_ERR(c, r, -HEAPD_ERROR_DISCONNECTED);
	printf("after SIGTERM: %s: %s\n", heapd_error_name(r), heapd_client_error_message(c));
	CHECK(!heapd_client_is_connected(c));
	CHECK_ERR(c, until_no_daemon(c), -HEAPD_ERROR_NO_DAEMON);
	heapd_client_free(c);
}

/* ---- restart: heapd is killed and a new one takes its socket ---- */

/* restart_daemon asks the driver to kill heapd (SIGKILL) and start a new
 * one on the same socket, and waits until it has. */
static int restart_daemon(void)
{
	printf("RESTART HEAPD\n");
	fflush(stdout);
	char line[64];
	if (!fgets(line, sizeof line, stdin)) {
		fprintf(stderr, "restart: no answer from the driver on stdin\n");
		return 0;
	}
	return strcmp(line, "restarted\n") == 0;
}

static void test_daemon_restarted(void)
{
	struct heapd_client *c = connect_env();
	REQUIRE(heapd_client_is_connected(c));
	struct heapd_server_info before;
	CHECK_ERR(c, heapd_client_server_info(c, &before), 0);
	struct heapd_request req = {.heap = "system", .size = 1 << 16};
	struct heapd_allocation a;
	CHECK_ERR(c, heapd_allocate(c, &req, &a), 0);
	REQUIRE(a.count == 1);
	size_t size = (size_t)a.size;
	unsigned char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, a.fds[0], 0);
	REQUIRE(p != MAP_FAILED);
	CHECK(sync_buffer(a.fds[0], DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE) == 0);
	for (size_t i = 0; i < size; i++)
		p[i] = (unsigned char)(i * 13 + 1);
	CHECK(sync_buffer(a.fds[0], DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE) == 0);

	if (!restart_daemon()) {
		CHECK(!"the driver restarted heapd");
		munmap(p, size);
		heapd_allocation_close(&a);
		heapd_client_free(c);
		return;
	}

	/* The buffer from before the crash is still mapped and holds what
	 * was written; it can be mapped again and written. */
	CHECK(sync_buffer(a.fds[0], DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ) == 0);
	int same = 1;
	for (size_t i = 0; same && i < size; i++)
		same = p[i] == (unsigned char)(i * 13 + 1);
	CHECK(sync_buffer(a.fds[0], DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ) == 0);
	CHECK(same);
	CHECK(fill_check(a.fds[0], a.size, 11));
	CHECK(p[1] == (unsigned char)(7 + 11)); /* fill_check's write, seen here */

	/* The next call succeeds without heapd_client_connect: the dead
	 * connection is noticed when sending, the library reconnects to the
	 * same socket and sends the request there. */
	struct heapd_allocation b;
	CHECK_ERR(c, heapd_allocate(c, &req, &b), 0);
	CHECK(heapd_client_is_connected(c));
	CHECK_INT(b.count, 1);
	/* Served by the new daemon: its buffer ids start again, so its first
	 * buffer has the id the old daemon gave its first. */
	CHECK_INT(b.ids[0], a.ids[0]);
	struct heapd_server_info after;
	CHECK_ERR(c, heapd_client_server_info(c, &after), 0);
	CHECK_INT(after.features, before.features);
	if (b.count == 1) {
		CHECK(fcntl(b.fds[0], F_GETFD) == FD_CLOEXEC);
		CHECK(fill_check(b.fds[0], b.size, 3));
	}
	struct heapd_heap_list *l = NULL;
	CHECK_ERR(c, heapd_list_heaps(c, &l), 0);
	heapd_heap_list_free(l);
	printf("after the restart: buffer id %llu from %s (%s)\n",
	       (unsigned long long)b.ids[0], after.server, b.backend);

	munmap(p, size);
	heapd_allocation_close(&a);
	heapd_allocation_close(&b);
	heapd_client_free(c);
}

/* A client allocating and freeing in a loop while heapd dies and
 * returns. */
struct loader {
	pthread_t thread;
	struct heapd_client *c;
	atomic_int *phase; /* 0: before the restart, 1: after, 2: stop */
	atomic_int ok_after; /* successes of calls begun after the restart */
	int fail_after;      /* failures of calls begun after the restart */
	int bad;             /* failures that are neither DISCONNECTED nor NO_DAEMON */
	char msg[512];
};

static void *load(void *arg)
{
	struct loader *l = arg;
	struct heapd_request req = {.heap = "system", .size = 4096};
	int phase;
	while ((phase = atomic_load(l->phase)) != 2) {
		struct heapd_allocation a;
		int r = heapd_allocate(l->c, &req, &a);
		if (r == 0) {
			if (phase == 1)
				atomic_fetch_add(&l->ok_after, 1);
			heapd_allocation_close(&a);
			continue;
		}
		if (phase == 1 || (r != -HEAPD_ERROR_DISCONNECTED && r != -HEAPD_ERROR_NO_DAEMON)) {
			if (phase == 1)
				l->fail_after++;
			else
				l->bad++;
			snprintf(l->msg, sizeof l->msg, "%s: %s", heapd_error_name(r),
				 heapd_client_error_message(l->c));
		}
		sleep_ms(2);
	}
	return NULL;
}

/* heapd is killed while clients allocate: each fails with DISCONNECTED
 * or NO_DAEMON until the new heapd listens, then every call succeeds,
 * none calling heapd_client_connect again. */
static void test_daemon_restarted_under_load(void)
{
	enum { N = 3 };
	atomic_int phase = 0;
	struct loader l[N];
	memset(l, 0, sizeof l);
	for (int i = 0; i < N; i++) {
		l[i].c = connect_env();
		l[i].phase = &phase;
		atomic_init(&l[i].ok_after, 0);
		REQUIRE(heapd_client_is_connected(l[i].c));
		REQUIRE(pthread_create(&l[i].thread, NULL, load, &l[i]) == 0);
	}
	sleep_ms(100);
	int restarted = restart_daemon();
	CHECK(restarted);
	atomic_store(&phase, 1);
	for (int waited = 0; restarted && waited < 10000; waited += 10) {
		int all = 1;
		for (int i = 0; i < N; i++)
			all = all && atomic_load(&l[i].ok_after) > 0;
		if (all)
			break;
		sleep_ms(10);
	}
	atomic_store(&phase, 2);
	for (int i = 0; i < N; i++) {
		pthread_join(l[i].thread, NULL);
		printf("client %d: %d allocations after the restart\n", i,
		       atomic_load(&l[i].ok_after));
		CHECK(atomic_load(&l[i].ok_after) > 0);
		CHECK_INT(l[i].fail_after, 0);
		CHECK_INT(l[i].bad, 0);
		if (l[i].fail_after || l[i].bad)
			fprintf(stderr, "client %d: %s\n", i, l[i].msg);
		heapd_client_free(l[i].c);
	}
}
