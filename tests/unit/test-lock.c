/* SPDX-License-Identifier: MIT */
/* Image locks (drivers/engine/td-lock.c): the table's rules and QEMU's bytes. */
#include <sys/stat.h>

#include <tapfs/engine.h>
#include <tapfs/lock.h>

#include "unit.h"
#include "vhd/vhd-image.h"

/* Owners are identities: any distinct addresses. */
static const char ids[4];
#define OWNER(i)	((const void *)&ids[i])

struct fx {
	char			 path[256];
	char			 link[300];
	struct td_lock_table	*t;
	char			 err[512];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	int fd;

	assert_non_null(f);
	fd = unit_tmpfile(f->path, sizeof(f->path), "lock", 1 << 20);
	close(fd);
	snprintf(f->link, sizeof(f->link), "%s.link", f->path);
	assert_int_equal(link(f->path, f->link), 0);
	f->t = td_lock_table_new();
	assert_non_null(f->t);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	td_lock_table_free(f->t);
	unlink(f->link);
	unlink(f->path);
	free(f);
	return 0;
}

/* Is byte off of path locked by any open file description but a new one? */
static bool byte_held(const char *path, unsigned off)
{
	struct flock fl = {
		.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off,
		.l_len = 1,
	};
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_OFD_GETLK, &fl), 0);
	close(fd);
	return fl.l_type != F_UNLCK;
}

/* The bytes 100..103 and 200..203 held, as a bit mask (bit 4 + i: 20x). */
static unsigned bytes_held(const char *path)
{
	unsigned m = 0, i;

	for (i = 0; i < 4; i++) {
		if (byte_held(path, TD_LOCK_PERM_BASE + i))
			m |= 1u << i;
		if (byte_held(path, TD_LOCK_SHARED_BASE + i))
			m |= 1u << (4 + i);
	}
	return m;
}

/* QEMU 7.2's writer: 100, 101, 103 and 201, 203; its reader 100, 201, 203. */
#define QEMU_WRITER	(0x1u | 0x2u | 0x8u | 0x20u | 0x80u)
#define QEMU_READER	(0x1u | 0x20u | 0x80u)
/* Its force-share reader (-U), and a tapfs standby: 100 only. */
#define QEMU_SHARE	0x1u

static void test_lock_layout(void **state)
{
	struct fx *f = *state;
	struct td_lock *w, *r;
	const void *o1 = OWNER(0), *o2 = OWNER(1);

	assert_int_equal(bytes_held(f->path), 0);
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, o1, "g/a", &w,
					 f->err, sizeof(f->err)), 0);
	assert_int_equal(bytes_held(f->path), QEMU_WRITER);
	td_lock_release(w);
	assert_int_equal(bytes_held(f->path), 0);

	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_READ,
					 TD_LOCK_ROLE_PARENT, o1, "g/a", &r,
					 f->err, sizeof(f->err)), 0);
	assert_int_equal(bytes_held(f->path), QEMU_READER);
	/* A second reader shares the one lock fd. */
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_READ,
					 TD_LOCK_ROLE_PARENT, o2, "g/b", &w,
					 f->err, sizeof(f->err)), 0);
	td_lock_release(r);
	assert_int_equal(bytes_held(f->path), QEMU_READER);
	td_lock_release(w);
	assert_int_equal(bytes_held(f->path), 0);
}

static void test_lock_one_writer(void **state)
{
	struct fx *f = *state;
	struct td_lock *a, *b;
	const void *oa = OWNER(0), *ob = OWNER(1);
	char want[600];

	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, oa, "g1/a", &a,
					 f->err, sizeof(f->err)), 0);
	/* Another writer, by another name of the same file. */
	assert_int_equal(td_lock_acquire(f->t, f->link, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, ob, "g2/c", &b,
					 f->err, sizeof(f->err)), -EBUSY);
	snprintf(want, sizeof(want), "g1/a holds %s read-write", f->link);
	assert_string_equal(f->err, want);
	assert_null(b);
	/* A reader of a written image: refused too. */
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_READ,
					 TD_LOCK_ROLE_PARENT, ob, "g2/c", &b,
					 f->err, sizeof(f->err)), -EBUSY);
	/* The failed attempts changed nothing. */
	assert_int_equal(bytes_held(f->path), QEMU_WRITER);
	td_lock_release(a);
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, ob, "g2/c", &b,
					 f->err, sizeof(f->err)), 0);
	td_lock_release(b);
}

static void test_lock_parent_not_written(void **state)
{
	struct fx *f = *state;
	struct td_lock *p1, *p2, *w;
	const void *o1 = OWNER(0), *o2 = OWNER(1), *o3 = OWNER(2);
	char want[600];

	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_READ,
					 TD_LOCK_ROLE_PARENT, o1, "g1/ch", &p1,
					 f->err, sizeof(f->err)), 0);
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_READ,
					 TD_LOCK_ROLE_IMAGE, o2, "g2/ro", &p2,
					 f->err, sizeof(f->err)), 0);
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, o3, "g3/w", &w,
					 f->err, sizeof(f->err)), -EBUSY);
	snprintf(want, sizeof(want), "g1/ch uses %s as a read-only parent",
		 f->path);
	assert_string_equal(f->err, want);
	td_lock_release(p1);
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, o3, "g3/w", &w,
					 f->err, sizeof(f->err)), -EBUSY);
	snprintf(want, sizeof(want), "g2/ro holds %s read-only", f->path);
	assert_string_equal(f->err, want);
	td_lock_release(p2);
}

/* A snapshot: the owner holds the old leaf rw, then ro, then drops rw. */
static void test_lock_same_owner(void **state)
{
	struct fx *f = *state;
	struct td_lock *w, *r, *other;
	const void *owner = OWNER(0), *o2 = OWNER(1);

	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, owner, "g/a", &w,
					 f->err, sizeof(f->err)), 0);
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_READ,
					 TD_LOCK_ROLE_PARENT, owner, "g/a", &r,
					 f->err, sizeof(f->err)), 0);
	td_lock_release(w);
	/* Downgraded: QEMU (and other readers) may read a parent. */
	assert_int_equal(bytes_held(f->path), QEMU_READER);
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_READ,
					 TD_LOCK_ROLE_PARENT, o2, "g/b", &other,
					 f->err, sizeof(f->err)), 0);
	td_lock_release(other);
	/* And back (a failed snapshot): the same owner may write again. */
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, owner, "g/a", &w,
					 f->err, sizeof(f->err)), 0);
	assert_int_equal(bytes_held(f->path), QEMU_WRITER);
	td_lock_release(r);
	td_lock_release(w);
	assert_int_equal(bytes_held(f->path), 0);
}

/* Hold byte offsets of path from a fresh open file description. */
static int foreign_hold(const char *path, const unsigned *offs, unsigned n)
{
	int fd = open(path, O_RDONLY);
	unsigned i;

	assert_true(fd >= 0);
	for (i = 0; i < n; i++) {
		struct flock fl = {
			.l_type = F_RDLCK, .l_whence = SEEK_SET,
			.l_start = offs[i], .l_len = 1,
		};
		assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
	}
	return fd;
}

static void test_lock_qemu_bytes(void **state)
{
	static const unsigned writer[] = { 100, 101, 103, 201, 203 };
	static const unsigned shared[] = { 100 };	/* qemu -U */
	struct fx *f = *state;
	struct td_lock *l;
	const void *o = OWNER(0);
	int fd;

	/* Another open file description stands for QEMU's writer. */
	fd = foreign_hold(f->path, writer, 5);
	assert_int_equal(td_lock_acquire(NULL, f->path, TD_LOCK_READ,
					 TD_LOCK_ROLE_IMAGE, o, "x", &l,
					 f->err, sizeof(f->err)), -EBUSY);
	assert_non_null(strstr(f->err, "is in use read-write"));
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, o, "x", &l,
					 f->err, sizeof(f->err)), -EBUSY);
	/* Refused attempts leave only QEMU's bytes. */
	close(fd);
	assert_int_equal(bytes_held(f->path), 0);

	/* A force-share reader (qemu-img info -U) does not stop a writer. */
	fd = foreign_hold(f->path, shared, 1);
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, o, "x", &l,
					 f->err, sizeof(f->err)), 0);
	td_lock_release(l);
	close(fd);
}

/*
 * Handing an image over: a standby holder lets one writer in, a writer
 * becomes standby by closing its write hold, and the next one may write;
 * QEMU's bytes for a standby are those of its force-share reader.
 */
static void test_lock_standby(void **state)
{
	static const unsigned writer[] = { 100, 101, 103, 201, 203 };
	struct fx *f = *state;
	struct td_lock *a, *as, *b, *bw, *c;
	const void *oa = OWNER(0), *ob = OWNER(1), *oc = OWNER(2);
	int fd;

	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, oa, "g/a", &a,
					 f->err, sizeof(f->err)), 0);
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_STANDBY,
					 TD_LOCK_ROLE_IMAGE, ob, "g/b", &b,
					 f->err, sizeof(f->err)), 0);
	/* Never two writers: b cannot write while a does. */
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, ob, "g/b", &bw,
					 f->err, sizeof(f->err)), -EBUSY);
	assert_non_null(strstr(f->err, "g/a holds"));
	/* a releases: standby first, then the write hold goes. */
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_STANDBY,
					 TD_LOCK_ROLE_IMAGE, oa, "g/a", &as,
					 f->err, sizeof(f->err)), 0);
	td_lock_release(a);
	assert_int_equal(bytes_held(f->path), QEMU_SHARE);
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, ob, "g/b", &bw,
					 f->err, sizeof(f->err)), 0);
	/* A plain reader is still kept out of a written image. */
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_READ,
					 TD_LOCK_ROLE_IMAGE, oc, "g/c", &c,
					 f->err, sizeof(f->err)), -EBUSY);
	td_lock_release(bw);
	td_lock_release(b);
	td_lock_release(as);
	assert_int_equal(bytes_held(f->path), 0);

	/* Another process writing: a standby joins, a writer does not. */
	fd = foreign_hold(f->path, writer, 5);
	assert_int_equal(td_lock_acquire(NULL, f->path, TD_LOCK_STANDBY,
					 TD_LOCK_ROLE_IMAGE, ob, "g/b", &b,
					 f->err, sizeof(f->err)), 0);
	assert_int_equal(td_lock_acquire(NULL, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, ob, "g/b", &bw,
					 f->err, sizeof(f->err)), -EBUSY);
	assert_non_null(strstr(f->err, "is in use"));
	close(fd);
	td_lock_release(b);
}

/* Another process: refused with its PID; free the moment it dies. */
static void test_lock_other_process(void **state)
{
	struct fx *f = *state;
	struct td_lock *l;
	char pidstr[32], who[256];
	const void *o = OWNER(0);
	int pfd[2], status;
	pid_t pid;
	char c;

	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct td_lock *cl;
		char e[256];

		close(pfd[0]);
		if (td_lock_acquire(NULL, f->path, TD_LOCK_WRITE,
				    TD_LOCK_ROLE_IMAGE, o, "child", &cl, e,
				    sizeof(e)))
			_exit(1);
		if (write(pfd[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(pfd[1]);
	assert_int_equal(read(pfd[0], &c, 1), 1);
	close(pfd[0]);

	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_READ,
					 TD_LOCK_ROLE_IMAGE, o, "me", &l,
					 f->err, sizeof(f->err)), -EBUSY);
	snprintf(pidstr, sizeof(pidstr), "pid %d (", (int)pid);
	assert_non_null(strstr(f->err, pidstr));
	assert_non_null(strstr(f->err, "in use read-write by"));
	assert_int_equal(td_lock_describe(f->t, f->path, who, sizeof(who)),
			 0);
	assert_non_null(strstr(who, pidstr));

	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(td_lock_acquire(f->t, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, o, "me", &l,
					 f->err, sizeof(f->err)), 0);
	assert_int_equal(td_lock_describe(f->t, f->path, who, sizeof(who)),
			 0);
	assert_string_equal(who, "read-write by me");
	td_lock_release(l);
	assert_int_equal(td_lock_describe(f->t, f->path, who, sizeof(who)),
			 0);
	assert_string_equal(who, "");
}

/*
 * The engines of one family (a daemon's loops) share one table: a holder
 * on one engine is named to the other, and the table lives until the
 * last engine goes.
 */
static void test_lock_engine_family(void **state)
{
	struct fx *f = *state;
	struct td_engine *e1 = td_engine_new(), *e2 = td_engine_new();
	struct td_lock *l, *l2;
	char who[128], want[512];

	assert_non_null(e1);
	assert_non_null(e2);
	assert_ptr_equal(e1->peer, e1);
	td_engine_join(e2, e1);
	assert_ptr_equal(e1->locks, e2->locks);
	assert_ptr_equal(e1->peer, e2);
	assert_ptr_equal(e2->peer, e1);
	assert_int_equal(td_lock_acquire(e2->locks, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, OWNER(0), "g/a",
					 &l, f->err, sizeof(f->err)), 0);
	assert_int_equal(td_lock_acquire(e1->locks, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, OWNER(1), "g/b",
					 &l2, f->err, sizeof(f->err)), -EBUSY);
	snprintf(want, sizeof(want), "g/a holds %s read-write", f->path);
	assert_string_equal(f->err, want);
	assert_int_equal(td_lock_describe(e1->locks, f->path, who,
					  sizeof(who)), 0);
	assert_string_equal(who, "read-write by g/a");
	td_lock_release(l);
	td_engine_free(e2);
	assert_ptr_equal(e1->peer, e1);
	/* The table outlived e2: e1 still locks with it. */
	assert_int_equal(td_lock_acquire(e1->locks, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, OWNER(1), "g/b",
					 &l2, f->err, sizeof(f->err)), 0);
	td_lock_release(l2);
	td_engine_free(e1);
}

/*
 * Two tables of one process (a tool's lock beside a daemon's table): the
 * table that does not hold the image names this process, from the
 * file's locks.
 */
static void test_lock_describe_tables(void **state)
{
	struct fx *f = *state;
	struct td_lock_table *t2 = td_lock_table_new();
	struct td_lock *l;
	char who[128], pidstr[32];

	assert_non_null(t2);
	assert_int_equal(td_lock_acquire(t2, f->path, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, OWNER(0), "g/a",
					 &l, f->err, sizeof(f->err)), 0);
	assert_int_equal(td_lock_describe(t2, f->path, who, sizeof(who)), 0);
	assert_string_equal(who, "read-write by g/a");
	assert_int_equal(td_lock_describe(f->t, f->path, who, sizeof(who)),
			 0);
	snprintf(pidstr, sizeof(pidstr), "(pid %d)", (int)getpid());
	assert_non_null(strstr(who, pidstr));
	td_lock_release(l);
	assert_int_equal(td_lock_describe(f->t, f->path, who, sizeof(who)),
			 0);
	assert_string_equal(who, "");
	td_lock_table_free(t2);
}

static void test_lock_errors(void **state)
{
	struct fx *f = *state;
	struct td_lock *l = (struct td_lock *)f;
	const void *o = OWNER(0);
	char who[64];

	assert_int_equal(td_lock_acquire(f->t, "/nonexistent/img",
					 TD_LOCK_WRITE, TD_LOCK_ROLE_IMAGE, o,
					 "x", &l, f->err, sizeof(f->err)),
			 -ENOENT);
	assert_null(l);
	assert_string_equal(f->err, "/nonexistent/img: No such file or "
			    "directory");
	assert_int_equal(td_lock_describe(NULL, "/nonexistent/img", who,
					  sizeof(who)), -ENOENT);
	td_lock_release(NULL);

	/* A directory or a FIFO is no image (and a FIFO must not hang). */
	assert_int_equal(td_lock_acquire(f->t, "/", TD_LOCK_READ,
					 TD_LOCK_ROLE_IMAGE, o, "x", &l,
					 f->err, sizeof(f->err)), -EINVAL);
	assert_string_equal(f->err, "/: not a regular file or block device");
	unlink(f->link);	/* the hard link of setup(): a FIFO now */
	assert_int_equal(mkfifo(f->link, 0600), 0);
	assert_int_equal(td_lock_acquire(f->t, f->link, TD_LOCK_WRITE,
					 TD_LOCK_ROLE_IMAGE, o, "x", &l,
					 f->err, sizeof(f->err)), -EINVAL);
}

/*
 * The engine's open flags for tools: TD_OPEN_FORCE_SHARE reads an image
 * another VBD writes, taking no lock; TD_OPEN_LEAF_ONLY opens a child
 * without its parent (which stays unlocked).
 */
static void test_vbd_open_flags(void **state)
{
	struct fx *f = *state;
	struct td_engine *e = td_engine_new();
	struct vhd_create_params p = {
		.type = VHD_TYPE_DIFF, .parent = f->path, .parent_raw = true,
	};
	char spec[600], child[300];
	td_vbd_t *w, *r;

	assert_non_null(e);
	assert_int_equal(td_drivers_init(), 0);
	snprintf(spec, sizeof(spec), "aio:%s", f->path);
	assert_int_equal(vbd_open(e, spec, 0, NULL, &w, f->err,
				  sizeof(f->err)), 0);
	assert_int_equal(vbd_open(e, spec, TD_OPEN_RDONLY, NULL, &r, f->err,
				  sizeof(f->err)), -EBUSY);
	assert_int_equal(vbd_open(e, spec, TD_OPEN_RDONLY |
				  TD_OPEN_FORCE_SHARE, NULL, &r, f->err,
				  sizeof(f->err)), 0);
	assert_int_equal(bytes_held(f->path), QEMU_WRITER);
	assert_int_equal(vbd_close(r), 0);
	assert_int_equal(vbd_close(w), 0);
	assert_int_equal(bytes_held(f->path), 0);

	snprintf(child, sizeof(child), "%s.vhd", f->path);
	assert_int_equal(vhd_image_create(child, &p, f->err, sizeof(f->err)),
			 0);
	snprintf(spec, sizeof(spec), "vhd:%s", child);
	assert_int_equal(vbd_open(e, spec, TD_OPEN_RDONLY, NULL, &r, f->err,
				  sizeof(f->err)), 0);
	assert_int_equal(vbd_chain_length(r), 2);
	assert_int_equal(bytes_held(f->path), QEMU_READER);
	assert_int_equal(vbd_close(r), 0);
	assert_int_equal(vbd_open(e, spec, TD_OPEN_RDONLY | TD_OPEN_LEAF_ONLY,
				  NULL, &r, f->err, sizeof(f->err)), 0);
	assert_int_equal(vbd_chain_length(r), 1);
	assert_int_equal(bytes_held(f->path), 0);
	assert_int_equal(bytes_held(child), QEMU_READER);
	assert_int_equal(vbd_close(r), 0);
	unlink(child);
	td_engine_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_lock_layout, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_lock_one_writer, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_lock_parent_not_written,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_same_owner, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_lock_standby, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_lock_qemu_bytes, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_lock_other_process,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_vbd_open_flags, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_lock_engine_family,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_describe_tables,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_errors, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
