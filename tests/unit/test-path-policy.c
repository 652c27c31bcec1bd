/* SPDX-License-Identifier: MIT */
/*
 * The image path policy (fs/path-policy.c): resolving a path as open(2)
 * would, and confining it to the store and the allow_path directories.
 *
 * A scratch tree, made once:
 *
 *   ROOT/store/img.raw         ROOT/store/sub/c.raw
 *   ROOT/store/in     -> img.raw              (relative, stays inside)
 *   ROOT/store/etc    -> /etc/passwd          (absolute, escapes)
 *   ROOT/store/outdir -> ../out               (a directory outside)
 *   ROOT/store/loop1  -> loop2 -> loop1
 *   ROOT/store/intomnt -> ROOT/mnt/g          (into the "mount")
 *   ROOT/store2/y.raw                         (a prefix of "store")
 *   ROOT/out/x.raw     ROOT/mnt/
 */
#include "unit.h"

#include <limits.h>
#include <sys/stat.h>

#include "path-policy.h"

static char root[PATH_MAX];
static char err[1024];

/* ROOT/rel into a static buffer (the last eight stay valid). */
static const char *at(const char *rel)
{
	static char buf[8][PATH_MAX];
	static unsigned i;

	i = (i + 1) % 8;
	unit_fmt(buf[i], "%s/%s", root, rel);
	return buf[i];
}

static void touch(const char *rel)
{
	int fd = open(at(rel), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	close(fd);
}

static int setup(void **state)
{
	char tmpl[PATH_MAX], *real;

	(void)state;
	snprintf(tmpl, sizeof(tmpl), "%s/tapfs-unit-paths.XXXXXX",
		 unit_tmpdir());
	if (!mkdtemp(tmpl))
		return -1;
	/* The directory may be reached through a link: use its real name. */
	real = realpath(tmpl, NULL);
	if (!real)
		return -1;
	snprintf(root, sizeof(root), "%s", real);
	free(real);
	if (mkdir(at("store"), 0700) || mkdir(at("store/sub"), 0700) ||
	    mkdir(at("store2"), 0700) || mkdir(at("out"), 0700) ||
	    mkdir(at("mnt"), 0700))
		return -1;
	touch("store/img.raw");
	touch("store/sub/c.raw");
	touch("store2/y.raw");
	touch("out/x.raw");
	if (symlink("img.raw", at("store/in")) ||
	    symlink("/etc/passwd", at("store/etc")) ||
	    symlink("../out", at("store/outdir")) ||
	    symlink("loop2", at("store/loop1")) ||
	    symlink("loop1", at("store/loop2")) ||
	    symlink(at("mnt/g"), at("store/intomnt")))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 32];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd) ? -1 : 0;
}

/* ---- path_is_below ---------------------------------------------------- */

static void test_is_below(void **state)
{
	(void)state;
	assert_true(path_is_below("/a/b", "/a/b"));
	assert_true(path_is_below("/a/b/c", "/a/b"));
	assert_true(path_is_below("/a/b/c", "/a/b/"));
	assert_false(path_is_below("/a/bc", "/a/b"));	/* prefix trick */
	assert_false(path_is_below("/a/b2/c", "/a/b"));
	assert_false(path_is_below("/a", "/a/b"));
	assert_false(path_is_below("/", "/a"));
	assert_true(path_is_below("/anything", "/"));
	assert_true(path_is_below("/", "/"));
}

/* ---- path_resolve ----------------------------------------------------- */

static void resolves(const char *in, const char *want)
{
	char out[PATH_MAX];
	int rc = path_resolve(in, NULL, out, sizeof(out));

	if (rc)
		fail_msg("%s: %s", in, strerror(-rc));
	if (strcmp(out, want))
		fail_msg("%s resolved to %s, want %s", in, out, want);
}

static void resolve_fails(const char *in, const char *mount, int want)
{
	char out[PATH_MAX];
	int rc = path_resolve(in, mount, out, sizeof(out));

	if (rc != want)
		fail_msg("%s: got %d (%s), want %d (%s)", in, rc,
			 rc ? strerror(-rc) : "ok", want, strerror(-want));
}

static void test_resolve(void **state)
{
	char want[PATH_MAX];

	(void)state;
	snprintf(want, sizeof(want), "%s", at("store/img.raw"));
	resolves(at("store/img.raw"), want);
	resolves(at("store/./sub/../img.raw"), want);
	resolves(at("store//sub///..//img.raw"), want);
	resolves(at("store/in"), want);
	resolves(at("store/sub/../in"), want);
	snprintf(want, sizeof(want), "%s", at("store"));
	resolves(at("store/"), want);			/* trailing slashes */
	resolves(at("store///"), want);
	resolves(at("store/sub/.."), want);
	snprintf(want, sizeof(want), "%s", at("out/x.raw"));
	resolves(at("store/outdir/x.raw"), want);	/* a dir link */
	resolves(at("store/../out/x.raw"), want);
	resolves(at("store/outdir/../out/x.raw"), want); /* ".." after a link */
	resolves("/..", "/");
	resolves("/", "/");
	resolves("/etc/../etc/passwd", "/etc/passwd");
	resolves(at("store/etc"), "/etc/passwd");
}

static void test_resolve_errors(void **state)
{
	char mnt[PATH_MAX];

	(void)state;
	snprintf(mnt, sizeof(mnt), "%s", at("mnt"));
	resolve_fails("relative/path", NULL, -EINVAL);
	resolve_fails("", NULL, -EINVAL);
	resolve_fails(at("store/missing.raw"), NULL, -ENOENT);
	resolve_fails(at("nodir/x.raw"), NULL, -ENOENT);
	resolve_fails(at("store/img.raw/"), NULL, -ENOTDIR);
	resolve_fails(at("store/img.raw/.."), NULL, -ENOTDIR);
	resolve_fails(at("store/loop1"), NULL, -ELOOP);
	/* The mount is never looked into, even through a link. */
	resolve_fails(at("mnt"), mnt, -EXDEV);
	resolve_fails(at("mnt/g/x"), mnt, -EXDEV);
	resolve_fails(at("store/intomnt/x"), mnt, -EXDEV);
	resolve_fails(at("store/../mnt/../mnt/x"), mnt, -EXDEV);
}

/* ---- the policy ------------------------------------------------------- */

static struct path_policy pp;

static void policy(const char *store, const char *extra)
{
	path_policy_fini(&pp);
	path_policy_init(&pp);
	assert_int_equal(path_policy_set_mount(&pp, at("mnt")), 0);
	assert_int_equal(path_policy_allow(&pp, store, err, sizeof(err)), 0);
	if (extra && path_policy_allow(&pp, extra, err, sizeof(err)))
		fail_msg("allow %s: %s", extra, err);
}

static void allowed(const char *path, const char *want)
{
	char *real = NULL;
	int rc = path_policy_check(&pp, path, &real, err, sizeof(err));

	if (rc)
		fail_msg("%s refused: %s", path, err);
	assert_non_null(real);
	if (strcmp(real, want))
		fail_msg("%s allowed as %s, want %s", path, real, want);
	free(real);
}

/* Refused with want, and a one-line message naming path and needle. */
static void refused(const char *path, int want, const char *needle)
{
	char *real = (char *)1;
	int rc;

	err[0] = '\0';
	rc = path_policy_check(&pp, path, &real, err, sizeof(err));
	if (rc != want)
		fail_msg("%s: got %d (%s), want %d", path, rc, err, want);
	assert_null(real);
	if (!strstr(err, path) || (needle && !strstr(err, needle)))
		fail_msg("%s: message '%s' does not name it and '%s'", path,
			 err, needle ? needle : "");
	assert_null(strchr(err, '\n'));
}

static void test_store_only(void **state)
{
	char img[PATH_MAX];

	(void)state;
	policy(at("store"), NULL);
	snprintf(img, sizeof(img), "%s", at("store/img.raw"));
	allowed(img, img);
	allowed(at("store/in"), img);
	allowed(at("store/sub/../img.raw"), img);
	allowed(at("store/sub/c.raw"), at("store/sub/c.raw"));
	refused(at("out/x.raw"), -EACCES, "outside the allowed directories");
	refused(at("out/x.raw"), -EACCES, "allow_path");
	refused(at("store2/y.raw"), -EACCES, NULL);	/* prefix trick */
	refused(at("store/../out/x.raw"), -EACCES, "(really ");
	refused(at("store/outdir/x.raw"), -EACCES, "(really ");
	refused(at("store/etc"), -EACCES, "(really /etc/passwd)");
	refused("/etc/passwd", -EACCES, NULL);
	refused(at("store/missing.raw"), -ENOENT, "No such file");
	refused(at("store/loop1"), -ELOOP, NULL);
	refused(at("store/intomnt/x"), -EINVAL, "inside this tapfs mount");
	refused("img.raw", -EINVAL, "path 'img.raw' is not absolute");
}

static void test_allow_path(void **state)
{
	char x[PATH_MAX], dir[PATH_MAX + 2];

	(void)state;
	snprintf(x, sizeof(x), "%s", at("out/x.raw"));
	policy(at("store"), at("out"));
	allowed(x, x);
	allowed(at("store/outdir/x.raw"), x);
	allowed(at("store/../out/x.raw"), x);
	refused(at("store2/y.raw"), -EACCES, at("out"));
	refused(at("store/etc"), -EACCES, NULL);

	/* Trailing slash, "..", and a link in the allowed directory. */
	snprintf(dir, sizeof(dir), "%s/", at("out"));
	policy(at("store"), dir);
	allowed(x, x);
	policy(at("store"), at("store2/../out"));
	allowed(x, x);
	policy(at("store"), at("store/outdir"));
	allowed(x, x);

	/* A single file. */
	policy(at("store"), x);
	allowed(x, x);
	refused(at("store2/y.raw"), -EACCES, NULL);

	/* "/" allows everything but the mount. */
	policy(at("store"), "/");
	allowed(at("store/etc"), "/etc/passwd");
	refused(at("mnt/g/x"), -EINVAL, "inside this tapfs mount");
}

static void test_allow_bad(void **state)
{
	(void)state;
	policy(at("store"), NULL);
	assert_int_equal(path_policy_allow(&pp, "out", err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "absolute"));
	assert_int_equal(path_policy_allow(&pp, at("mnt/g"), err,
					   sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "inside the mount"));
	assert_int_equal(path_policy_allow(&pp, at("mnt"), err,
					   sizeof(err)), -EINVAL);
	assert_int_equal(pp.ndirs, 1);

	/* Not there yet: allowed as written, and it counts once it is. */
	assert_int_equal(path_policy_allow(&pp, at("later/./d/"), err,
					   sizeof(err)), 0);
	assert_string_equal(pp.dirs[1], at("later/d"));
	assert_int_equal(mkdir(at("later"), 0700), 0);
	assert_int_equal(mkdir(at("later/d"), 0700), 0);
	touch("later/d/z.raw");
	allowed(at("later/d/z.raw"), at("later/d/z.raw"));
	path_policy_fini(&pp);
	path_policy_fini(&pp);		/* safe twice */
}

/* ---- the engine asks it -------------------------------------------- */

static void test_engine_asks(void **state)
{
	struct td_engine *e = td_engine_new();
	char spec[PATH_MAX + 8];
	td_vbd_t *v = NULL;

	(void)state;
	assert_non_null(e);
	policy(at("store"), NULL);
	e->path_policy = path_policy_check;
	e->path_policy_arg = &pp;
	assert_int_equal(truncate(at("store/img.raw"), 1 << 20), 0);
	assert_int_equal(truncate(at("out/x.raw"), 1 << 20), 0);

	snprintf(spec, sizeof(spec), "aio:%s", at("store/in"));
	assert_int_equal(vbd_open(e, spec, TD_OPEN_RDONLY, NULL, &v, err,
				  sizeof(err)), 0);
	/* Opened by the canonical path; shown by the one given. */
	assert_string_equal(vbd_image(v, 0)->name, at("store/in"));
	assert_int_equal(vbd_close(v), 0);

	snprintf(spec, sizeof(spec), "aio:%s", at("store/outdir/x.raw"));
	assert_int_equal(vbd_open(e, spec, TD_OPEN_RDONLY, NULL, &v, err,
				  sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "image "));
	assert_non_null(strstr(err, "outside the allowed directories"));

	/* A filter's argument is not a path; what it filters is. */
	snprintf(spec, sizeof(spec), "fault:none:aio:%s", at("out/x.raw"));
	assert_int_equal(vbd_open(e, spec, TD_OPEN_RDONLY, NULL, &v, err,
				  sizeof(err)), -EACCES);
	snprintf(spec, sizeof(spec), "fault:none:aio:%s", at("store/img.raw"));
	assert_int_equal(vbd_open(e, spec, TD_OPEN_RDONLY, NULL, &v, err,
				  sizeof(err)), 0);
	assert_int_equal(vbd_close(v), 0);

	/* ram's argument is a size, not a file. */
	assert_int_equal(vbd_open(e, "ram:1M", 0, NULL, &v, err, sizeof(err)),
			 0);
	assert_int_equal(vbd_close(v), 0);
	td_engine_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_is_below),
		cmocka_unit_test(test_resolve),
		cmocka_unit_test(test_resolve_errors),
		cmocka_unit_test(test_store_only),
		cmocka_unit_test(test_allow_path),
		cmocka_unit_test(test_allow_bad),
		cmocka_unit_test(test_engine_asks),
	};

	path_policy_init(&pp);
	return cmocka_run_group_tests(tests, setup, teardown);
}
