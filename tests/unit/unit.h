/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the cmocka unit tests.  Header-only and static inline
 * so that every test-*.c stays one self-contained binary.
 */
#ifndef TAPFS_UNIT_H
#define TAPFS_UNIT_H

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <tapfs/engine.h>

/*
 * Scratch files live on a disk file system, not tmpfs, so that O_DIRECT
 * and libaio behave as they do on real images.  UNIT_TMPDIR overrides.
 */
#define UNIT_TMPDIR_DEFAULT	"/var/tmp"

static inline const char *unit_tmpdir(void)
{
	const char *d = getenv("UNIT_TMPDIR");

	return d && *d ? d : UNIT_TMPDIR_DEFAULT;
}

/*
 * Create an empty scratch file of size bytes; its name goes to path.
 * Returns an O_RDWR fd; the caller unlinks and closes it.
 */
static inline int unit_tmpfile(char *path, size_t pathlen, const char *tag,
			       off_t size)
{
	int fd;

	snprintf(path, pathlen, "%s/tapfs-unit-%s.XXXXXX", unit_tmpdir(), tag);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, size), 0);
	return fd;
}

/* snprintf into the array buf; the test fails if it does not fit. */
#define unit_fmt(buf, ...) \
	assert_true(snprintf((buf), sizeof(buf), __VA_ARGS__) < \
		    (int)sizeof(buf))

/* Resident pages of [p, p + len): mincore(2). */
static inline size_t unit_resident_pages(const void *p, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), n = (len + page - 1) / page;
	unsigned char *vec = calloc(n, 1);
	size_t i, r = 0;

	assert_non_null(vec);
	assert_int_equal(mincore((void *)p, len, vec), 0);
	for (i = 0; i < n; i++)
		r += vec[i] & 1;
	free(vec);
	return r;
}

/* A buffer aligned for O_DIRECT (TD_BUF_ALIGN); free() it. */
static inline void *unit_aligned(size_t len)
{
	void *p = NULL;

	assert_int_equal(posix_memalign(&p, TD_BUF_ALIGN, len), 0);
	memset(p, 0, len);
	return p;
}

/*
 * Run loop iterations until *count reaches want or timeout_ms passes.
 * Returns true when the count was reached.
 */
static inline bool unit_run_until(struct td_loop *loop,
				  const unsigned *count, unsigned want,
				  unsigned timeout_ms)
{
	uint64_t end = td_now_ns() + (uint64_t)timeout_ms * 1000000ull;

	while (*count < want) {
		if (td_now_ns() >= end)
			return false;
		if (td_loop_run_once(loop, 10) < 0)
			return false;
	}
	return true;
}

/*
 * Run fn(arg) in a child process, so that a crash (or an expected abort)
 * is observed instead of taking the test binary down.  cmocka's own
 * signal handlers are reset in the child: they would longjmp back into
 * the test runner and carry on running the suite there.  fn reports
 * through its exit status (_exit).  Returns the raw wait status.
 */
static inline int unit_in_child(void (*fn)(void *arg), void *arg)
{
	static const int sigs[] = {
		SIGFPE, SIGILL, SIGSEGV, SIGBUS, SIGSYS, SIGABRT,
	};
	int status = 0;
	pid_t pid;
	size_t i;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit nocore = { 0, 0 };

		/* An expected abort must not leave a core file behind. */
		setrlimit(RLIMIT_CORE, &nocore);
		for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
			signal(sigs[i], SIG_DFL);
		fn(arg);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

/* ---- images through the engine ---------------------------------------- */

/*
 * Images are written and read in tests as the daemon does: a VBD on an
 * engine of its own (drivers, chain, locks), one request at a time.
 */
struct unit_vbd {
	struct td_engine	*e;
	td_vbd_t		*v;
	char			 err[1024];
};

/* Open "driver:path" with flags: 0 (u filled) or -errno (u->err says). */
static inline int unit_vbd_open(struct unit_vbd *u, const char *spec,
				td_flag_t flags)
{
	int rc;

	memset(u, 0, sizeof(*u));
	assert_int_equal(td_drivers_init(), 0);
	u->e = td_engine_new();
	assert_non_null(u->e);
	rc = vbd_open(u->e, spec, flags, NULL, &u->v, u->err, sizeof(u->err));
	if (rc) {
		td_engine_free(u->e);
		u->e = NULL;
	}
	return rc;
}

static inline void unit_vbd_close(struct unit_vbd *u)
{
	assert_int_equal(vbd_close(u->v), 0);
	td_engine_free(u->e);
	u->e = NULL;
}

struct unit_vbd_req {
	struct vbd_request	r;
	unsigned		done;
	int			err;
};

static inline void unit_vbd_cb(struct vbd_request *vreq, int err)
{
	struct unit_vbd_req *q = (struct unit_vbd_req *)vreq;

	q->err = err;
	q->done = 1;
}

/*
 * One read, write or flush of secs sectors at sec (any buffer: it goes
 * through an aligned bounce buffer); 0 or -errno.
 */
static inline int unit_vbd_io(struct unit_vbd *u, enum td_op op,
			      uint64_t sec, uint32_t secs, void *buf)
{
	size_t len = (size_t)secs * TD_SECTOR_SIZE;
	struct unit_vbd_req q;
	char *b = unit_aligned(len ? len : TD_SECTOR_SIZE);

	memset(&q, 0, sizeof(q));
	q.r.op = op;
	q.r.buf = b;
	q.r.sec = sec;
	q.r.secs = secs;
	q.r.cb = unit_vbd_cb;
	if (op == TD_OP_WRITE)
		memcpy(b, buf, len);
	vbd_submit(u->v, &q.r);
	assert_true(unit_run_until(u->e->loop, &q.done, 1, 30000));
	if (op == TD_OP_READ && !q.err)
		memcpy(buf, b, len);
	free(b);
	return q.err;
}

/* Open spec, write (then flush), close: 0 or the first -errno. */
static inline int unit_image_write(const char *spec, uint64_t sec,
				   uint32_t secs, const void *buf)
{
	struct unit_vbd u;
	int rc = unit_vbd_open(&u, spec, 0);

	if (rc)
		fail_msg("%s: %s", spec, u.err);
	rc = unit_vbd_io(&u, TD_OP_WRITE, sec, secs, (void *)buf);
	if (!rc)
		rc = unit_vbd_io(&u, TD_OP_FLUSH, 0, 0, NULL);
	unit_vbd_close(&u);
	return rc;
}

#endif
