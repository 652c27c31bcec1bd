/* SPDX-License-Identifier: MIT */
/*
 * The driver table (drivers/engine/td-registry.c): lookup; and the interface
 * (drivers/engine/td-driver.c): validation of a table entry, the defaults for
 * optional callbacks.
 */
#include <sys/stat.h>

#include "unit.h"

/* ---- a minimal driver: only the required callbacks ------------------ */

static int min_open(td_driver_t *drv, const char *path, td_flag_t flags)
{
	(void)path;
	(void)flags;
	drv->info.size = 8;
	drv->info.sector_size = TD_SECTOR_SIZE;
	return 0;
}

static int min_close(td_driver_t *drv)
{
	(void)drv;
	return 0;
}

static void min_queue(td_driver_t *drv, td_request_t treq)
{
	(void)drv;
	td_complete_request(treq, 0);
}

static const struct tap_disk min_ops = {
	TD_DISK_VERSION,
	.name			= "minimal",
	.td_open		= min_open,
	.td_close		= min_close,
	.td_queue_read		= min_queue,
	.td_queue_write		= min_queue,
};

struct done {
	unsigned	calls;
	int		err;
	td_request_t	treq;
};

static void done_cb(td_request_t treq, int err)
{
	struct done *d = treq.cb_data;

	d->calls++;
	d->err = err;
	d->treq = treq;
}

static td_request_t make_treq(enum td_op op, struct done *d)
{
	td_request_t treq = {
		.op = op,
		.cb = done_cb,
		.cb_data = d,
	};

	memset(d, 0, sizeof(*d));
	d->err = 1;
	return treq;
}

/* ---- registry -------------------------------------------------------- */

static void test_drivers_init(void **state)
{
	const struct tap_disk *const *list;
	char err[256];
	unsigned n;

	(void)state;
	assert_int_equal(td_drivers_init(), 0);
	assert_int_equal(td_drivers_init(), 0);	/* idempotent */
	list = td_driver_list();
	assert_non_null(list);
	for (n = 0; list[n]; n++) {
		err[0] = '\0';
		if (td_driver_validate(list[n], err, sizeof(err)))
			fail_msg("built-in driver: %s", err);
		assert_ptr_equal(td_driver_find(list[n]->name), list[n]);
	}
	assert_true(n >= 3);
}

static void test_driver_find(void **state)
{
	const struct tap_disk *aio, *d;

	(void)state;
	aio = td_driver_find("aio");
	assert_non_null(aio);
	assert_string_equal(aio->name, "aio");
	d = td_driver_find("sync");
	assert_non_null(d);
	assert_string_equal(d->name, "sync");
	d = td_driver_find("ram");
	assert_non_null(d);
	assert_string_equal(d->name, "ram");
	/* "raw" is an alias of aio, not a driver of its own. */
	assert_ptr_equal(td_driver_find("raw"), aio);
	d = td_driver_find("vhd");
	assert_non_null(d);
	assert_non_null(d->td_create_child);
	assert_null(td_driver_find("qcow9"));
	assert_null(td_driver_find(""));
	assert_null(td_driver_find("aio "));
	assert_null(td_driver_find("ai"));
}

/* ---- validation ------------------------------------------------------ */

static void expect_invalid(const struct tap_disk *d, const char *needle)
{
	char err[256] = "";

	assert_int_equal(td_driver_validate(d, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("message \"%s\" does not say \"%s\"", err, needle);
}

static void test_validate_ok(void **state)
{
	char err[256] = "untouched";

	(void)state;
	assert_int_equal(td_driver_validate(&min_ops, err, sizeof(err)), 0);
}

static void test_validate_version(void **state)
{
	struct tap_disk d = min_ops;

	(void)state;
	d.api_version = TD_API_VERSION + 1;
	expect_invalid(&d, "api_version");
	expect_invalid(&d, "minimal");
	d.api_version = 0;
	expect_invalid(&d, "api_version 0");
}

static void test_validate_struct_size(void **state)
{
	struct tap_disk d = min_ops;

	(void)state;
	d.struct_size = 0;
	expect_invalid(&d, "struct_size 0");
	/* One field short of version 1. */
	d.struct_size = offsetof(struct tap_disk, td_create);
	expect_invalid(&d, "struct_size");
	/* A larger table (a newer driver) is fine. */
	d.struct_size = sizeof(struct tap_disk) + 64;
	assert_int_equal(td_driver_validate(&d, NULL, 0), 0);
}

static void test_validate_required(void **state)
{
	struct tap_disk d;
	char small[8];

	(void)state;
	d = min_ops;
	d.td_open = NULL;
	expect_invalid(&d, "must have a .td_open callback");
	expect_invalid(&d, "minimal");
	d = min_ops;
	d.td_close = NULL;
	expect_invalid(&d, "must have a .td_close callback");
	d = min_ops;
	d.td_queue_read = NULL;
	expect_invalid(&d, "must have a .td_queue_read callback");
	d = min_ops;
	d.td_queue_write = NULL;
	expect_invalid(&d, "must have a .td_queue_write callback");
	d = min_ops;
	d.name = NULL;
	expect_invalid(&d, ".name");
	d = min_ops;
	d.name = "";
	expect_invalid(&d, ".name");
	/* A small err buffer is truncated, not overrun. */
	memset(small, 'x', sizeof(small));
	d = min_ops;
	d.td_open = NULL;
	assert_int_equal(td_driver_validate(&d, small, 4), -EINVAL);
	assert_int_equal(small[3], '\0');
	assert_int_equal(small[4], 'x');
}

/* ---- defaults for optional callbacks -------------------------------- */

static void test_default_queue(void **state)
{
	td_driver_t drv = { .ops = &min_ops, .name = (char *)"m" };
	td_request_t treq;
	struct done d;
	char buf[TD_SECTOR_SIZE];

	(void)state;
	/* Discard: refused. */
	treq = make_treq(TD_OP_DISCARD, &d);
	treq.sec = 0;
	treq.secs = 1;
	td_drv_queue(&drv, treq);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.err, -EOPNOTSUPP);
	/* Flush: nothing volatile, success. */
	treq = make_treq(TD_OP_FLUSH, &d);
	td_drv_queue(&drv, treq);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.err, 0);
	/* Reads and writes reach the driver. */
	treq = make_treq(TD_OP_READ, &d);
	treq.buf = buf;
	treq.secs = 1;
	td_drv_queue(&drv, treq);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.err, 0);
	assert_ptr_equal(d.treq.buf, buf);
	treq.op = TD_OP_WRITE;
	td_drv_queue(&drv, treq);
	assert_int_equal(d.calls, 2);
	/* An op the engine does not know: -EINVAL, still completed. */
	treq = make_treq((enum td_op)99, &d);
	td_drv_queue(&drv, treq);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.err, -EINVAL);
}

static void test_default_parent(void **state)
{
	td_driver_t drv = { .ops = &min_ops, .name = (char *)"m" };
	td_driver_t parent = drv;
	td_disk_id_t id = { (char *)"junk", (char *)"junk" };

	(void)state;
	assert_int_equal(td_drv_get_parent_id(&drv, &id), TD_NO_PARENT);
	assert_null(id.name);
	assert_null(id.drivertype);
	/* A driver without parents accepts none. */
	assert_int_equal(td_drv_validate_parent(&drv, &parent, 0), -EINVAL);
}

static void test_default_debug_create(void **state)
{
	td_driver_t drv = { .ops = &min_ops, .name = (char *)"disk0" };
	char *text = NULL;
	size_t len = 0;
	FILE *out;

	(void)state;
	drv.info.size = 2048;
	out = open_memstream(&text, &len);
	assert_non_null(out);
	td_drv_debug(&drv, out);
	fclose(out);
	assert_non_null(strstr(text, "minimal"));
	assert_non_null(strstr(text, "disk0"));
	assert_non_null(strstr(text, "2048"));
	free(text);
	assert_int_equal(td_drv_create(&min_ops, "/nonexistent/x", 4096, 0),
			 -ENOTSUP);
	assert_int_equal(td_drv_create(td_driver_find("ram"), "/nonexistent/x",
				       4096, 0), -ENOTSUP);
}

/* Snapshot children and settings: the defaults say why they refuse. */
static void test_default_child_control(void **state)
{
	td_driver_t drv = { .ops = &min_ops, .name = (char *)"disk0" };
	char err[128] = "";

	(void)state;
	assert_false(td_disk_can_create_child(&min_ops));
	assert_int_equal(td_drv_create_child(&min_ops, "/nonexistent/c",
					     "/nonexistent/p", "aio", err,
					     sizeof(err)), -ENOTSUP);
	assert_non_null(strstr(err, "minimal cannot make a snapshot child"));
	assert_int_equal(td_drv_control(&drv, "none", err, sizeof(err)),
			 -ENOTSUP);
	assert_non_null(strstr(err, "minimal:disk0 takes no settings"));
	assert_int_equal(td_disk_flags(&min_ops), 0);
	assert_true(td_disk_can_create_child(td_driver_find("vhd")));
	assert_int_equal(td_disk_flags(td_driver_find("fault")),
			 TD_DISK_FILTER);
	assert_int_equal(td_disk_flags(td_driver_find("ram")),
			 TD_DISK_NO_FILE);
}

/*
 * A table of version 1 as first shipped ends at td_create: what lies
 * beyond its struct_size is not the driver's and must never be read (here
 * it is garbage that would crash if called).
 */
static void test_struct_size_honoured(void **state)
{
	struct tap_disk d;
	td_driver_t drv = { .ops = &d, .name = (char *)"old" };
	char err[128];
	bool mine;

	(void)state;
	memset(&d, 0xa5, sizeof(d));
	memcpy(&d, &min_ops, offsetof(struct tap_disk, td_create_child));
	d.struct_size = offsetof(struct tap_disk, td_create) +
			sizeof(d.td_create);
	assert_int_equal(td_driver_validate(&d, err, sizeof(err)), 0);
	assert_false(TD_DISK_HAS(&d, td_create_child));
	assert_false(TD_DISK_HAS(&d, disk_flags));
	assert_false(TD_DISK_HAS(&d, td_control));
	assert_false(TD_DISK_HAS(&d, td_probe));
	assert_int_equal(td_disk_flags(&d), 0);
	mine = true;
	assert_int_equal(td_drv_probe(&d, "/nonexistent/p", &mine), 0);
	assert_false(mine);
	assert_false(td_disk_can_create_child(&d));
	assert_int_equal(td_drv_create_child(&d, "/nonexistent/c",
					     "/nonexistent/p", "aio", err,
					     sizeof(err)), -ENOTSUP);
	assert_int_equal(td_drv_control(&drv, "none", err, sizeof(err)),
			 -ENOTSUP);
	/* One field more: disk_flags is read, td_control still is not. */
	d.struct_size = offsetof(struct tap_disk, disk_flags) +
			sizeof(d.disk_flags);
	d.disk_flags = TD_DISK_NO_FILE;
	assert_true(TD_DISK_HAS(&d, disk_flags));
	assert_int_equal(td_disk_flags(&d), TD_DISK_NO_FILE);
	assert_int_equal(td_drv_control(&drv, "none", err, sizeof(err)),
			 -ENOTSUP);
}

/* The raw drivers create sparse images, refusing to overwrite one. */
static void test_raw_create(void **state)
{
	const struct tap_disk *aio = td_driver_find("aio");
	char path[256];
	struct stat st;
	int fd;

	(void)state;
	fd = unit_tmpfile(path, sizeof(path), "create", 0);
	close(fd);
	unlink(path);
	assert_int_equal(td_drv_create(aio, path, 1 << 20, 0), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 1 << 20);
	assert_int_equal(td_drv_create(aio, path, 1 << 20, 0), -EEXIST);
	unlink(path);
	assert_int_equal(td_drv_create(aio, path, 1000, 0), -EINVAL);
	assert_int_equal(td_drv_create(aio, path, 0, 0), -EINVAL);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(td_drv_create(td_driver_find("sync"), path, 4096, 0),
			 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 4096);
	unlink(path);
}

/*
 * The services on another driver's image: which driver claims a file
 * (raw when none does), and an image's size through its own driver.
 */
static void test_probe_and_size(void **state)
{
	static const char *const fmts[] = { "aio", "qcow2", "vhd" };
	const char *name;
	char path[256], err[256];
	uint64_t size;
	unsigned i;
	int fd;

	(void)state;
	for (i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
		fd = unit_tmpfile(path, sizeof(path), "probe", 0);
		close(fd);
		unlink(path);
		assert_int_equal(td_drv_create(td_driver_find(fmts[i]), path,
					       (i + 1) << 20, 0), 0);
		assert_int_equal(td_probe_driver(path, &name), 0);
		assert_string_equal(name, fmts[i]);
		assert_int_equal(td_image_size(fmts[i], path, &size, err,
					       sizeof(err)), 0);
		assert_int_equal(size, (uint64_t)(i + 1) << 20);
		if (i) {
			/* Not a qcow2 image: refused, naming the file. */
			assert_int_not_equal(td_image_size("qcow2", i == 1 ?
							   "/dev/null" : path,
							   &size, err,
							   sizeof(err)), 0);
			assert_non_null(strstr(err, i == 1 ? "/dev/null" :
					       path));
		}
		unlink(path);
	}
	assert_int_equal(td_image_size("ram", "1M", &size, err, sizeof(err)),
			 0);
	assert_int_equal(size, 1 << 20);
	assert_int_equal(td_image_size("nosuch", path, &size, err,
				       sizeof(err)), -ENOENT);
	assert_int_equal(td_probe_driver("/nonexistent/p", &name), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_drivers_init),
		cmocka_unit_test(test_driver_find),
		cmocka_unit_test(test_validate_ok),
		cmocka_unit_test(test_validate_version),
		cmocka_unit_test(test_validate_struct_size),
		cmocka_unit_test(test_validate_required),
		cmocka_unit_test(test_default_queue),
		cmocka_unit_test(test_default_parent),
		cmocka_unit_test(test_default_debug_create),
		cmocka_unit_test(test_default_child_control),
		cmocka_unit_test(test_struct_size_honoured),
		cmocka_unit_test(test_raw_create),
		cmocka_unit_test(test_probe_and_size),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
