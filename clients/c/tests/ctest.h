/*
 * ctest.h - a minimal test harness for the C client's tests, in the shape
 * the Go driver (../ctest/ctest_test.go) expects:
 *
 *	prog -l            list the cases, one "GROUP NAME" per line
 *	prog NAME...       run the named cases
 *
 * Each case prints "--- PASS: NAME" or "--- FAIL: NAME" (with the failed
 * checks above it). The exit status is 0 when every case passed, 1 when
 * one failed, 77 when one skipped (it says why). Around every case the
 * harness compares the process's open fds: a case that leaves one open
 * fails, which is how the tests prove the library closes every fd it
 * receives on every path.
 *
 * Include it in exactly one file, after defining CTEST_CASES: a list of
 * X(group, name) entries whose functions are named test_NAME.
 */
#ifndef CTEST_H
#define CTEST_H

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int ctest_failures;
static int ctest_skipped;

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, \
				__LINE__, #cond);                              \
			ctest_failures++;                                      \
		}                                                              \
	} while (0)

/* REQUIRE is CHECK that ends the case. */
#define REQUIRE(cond)                                                          \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: REQUIRE(%s) failed\n",         \
				__FILE__, __LINE__, #cond);                    \
			ctest_failures++;                                      \
			return;                                                \
		}                                                              \
	} while (0)

#define CHECK_INT(got, want)                                                   \
	do {                                                                   \
		long long ctest_g = (long long)(got), ctest_w = (long long)(want); \
		if (ctest_g != ctest_w) {                                      \
			fprintf(stderr, "%s:%d: %s = %lld, want %s = %lld\n",  \
				__FILE__, __LINE__, #got, ctest_g, #want,      \
				ctest_w);                                      \
			ctest_failures++;                                      \
		}                                                              \
	} while (0)

#define CHECK_STR(got, want)                                                   \
	do {                                                                   \
		const char *ctest_g = (got), *ctest_w = (want);                \
		if (!ctest_g || strcmp(ctest_g, ctest_w) != 0) {               \
			fprintf(stderr, "%s:%d: %s = \"%s\", want \"%s\"\n",   \
				__FILE__, __LINE__, #got,                      \
				ctest_g ? ctest_g : "(null)", ctest_w);        \
			ctest_failures++;                                      \
		}                                                              \
	} while (0)

/* CHECK_ERR compares a heapd result with an expected one, by name, and
 * shows the client's message when they differ. */
#define CHECK_ERR(c, got, want)                                                \
	do {                                                                   \
		int ctest_g = (got), ctest_w = (want);                         \
		if (ctest_g != ctest_w) {                                      \
			fprintf(stderr, "%s:%d: %s = %d (%s), want %d (%s): %s\n", \
				__FILE__, __LINE__, #got, ctest_g,             \
				heapd_error_name(ctest_g), ctest_w,            \
				heapd_error_name(ctest_w),                     \
				heapd_client_error_message(c));                \
			ctest_failures++;                                      \
		}                                                              \
	} while (0)

#define SKIP(why)                                                              \
	do {                                                                   \
		fprintf(stderr, "SKIP: %s\n", why);                            \
		ctest_skipped = 1;                                             \
		return;                                                        \
	} while (0)

#define CTEST_MAX_FD 4096

/* ctest_fds marks the open fds in open[]. */
static void ctest_fds(char open[CTEST_MAX_FD])
{
	memset(open, 0, CTEST_MAX_FD);
	DIR *d = opendir("/proc/self/fd");
	if (!d) {
		perror("opendir /proc/self/fd");
		exit(2);
	}
	int self = dirfd(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		if (*end || end == e->d_name || fd == self || fd < 0 || fd >= CTEST_MAX_FD)
			continue;
		open[fd] = 1;
	}
	closedir(d);
}

#define X(group, name) static void test_##name(void);
CTEST_CASES
#undef X

struct ctest_case {
	const char *group, *name;
	void (*fn)(void);
};

static const struct ctest_case ctest_cases[] = {
#define X(group, name) {#group, #name, test_##name},
	CTEST_CASES
#undef X
};

static int ctest_run(const struct ctest_case *tc)
{
	static char before[CTEST_MAX_FD], after[CTEST_MAX_FD];
	int failures = ctest_failures;
	ctest_skipped = 0;
	fprintf(stderr, "=== RUN %s\n", tc->name);
	ctest_fds(before);
	tc->fn();
	ctest_fds(after);
	for (int fd = 0; fd < CTEST_MAX_FD; fd++) {
		if (after[fd] && !before[fd]) {
			char link[64], target[PATH_MAX];
			snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
			ssize_t n = readlink(link, target, sizeof target - 1);
			target[n < 0 ? 0 : n] = '\0';
			fprintf(stderr, "leaked fd %d -> %s\n", fd, target);
			ctest_failures++;
		}
	}
	if (ctest_failures != failures) {
		fprintf(stderr, "--- FAIL: %s\n", tc->name);
		return 1;
	}
	if (ctest_skipped) {
		fprintf(stderr, "--- SKIP: %s\n", tc->name);
		return 77;
	}
	fprintf(stderr, "--- PASS: %s\n", tc->name);
	return 0;
}

int main(int argc, char **argv)
{
	size_t n = sizeof ctest_cases / sizeof ctest_cases[0];
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 2 && strcmp(argv[1], "-l") == 0) {
		for (size_t i = 0; i < n; i++)
			printf("%s %s\n", ctest_cases[i].group, ctest_cases[i].name);
		return 0;
	}
	if (argc < 2) {
		fprintf(stderr, "usage: %s -l | NAME...\n", argv[0]);
		return 2;
	}
	int status = 0;
	for (int a = 1; a < argc; a++) {
		size_t i;
		for (i = 0; i < n; i++)
			if (strcmp(argv[a], ctest_cases[i].name) == 0)
				break;
		if (i == n) {
			fprintf(stderr, "no test case %s\n", argv[a]);
			return 2;
		}
		int r = ctest_run(&ctest_cases[i]);
		if (r == 1)
			status = 1;
		else if (r == 77 && status == 0)
			status = 77;
	}
	return status;
}

#endif /* CTEST_H */
