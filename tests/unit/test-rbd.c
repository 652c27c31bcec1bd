/* SPDX-License-Identifier: MIT */
/*
 * The rbd driver without a cluster: its argument parser
 * (drivers/rbd/rbd-target.c), its table, and the engine's settings and
 * shared driver state it relies on (td_engine_option,
 * td_engine_driver_state).  The driver against a real cluster is
 * tests/functional/test-rbd.sh.
 */
#include "unit.h"

#include "rbd/rbd-target.h"

extern const struct tap_disk tapdisk_rbd;

static struct rbd_target t;
static char err[512];

static void target_snap_ok(const char *s, const char *pool, const char *ns,
			   const char *image, const char *snap)
{
	err[0] = '\0';
	if (rbd_parse_target(s, &t, err, sizeof(err)))
		fail_msg("'%s' refused: %s", s, err);
	assert_string_equal(t.pool, pool);
	assert_string_equal(t.ns, ns);
	assert_string_equal(t.image, image);
	assert_string_equal(t.snap, snap);
}

static void target_ok(const char *s, const char *pool, const char *ns,
		      const char *image)
{
	target_snap_ok(s, pool, ns, image, "");
}

/* Refused with -EINVAL and a reason containing needle. */
static void target_bad(const char *s, const char *needle)
{
	err[0] = '\0';
	assert_int_equal(rbd_parse_target(s, &t, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("'%s': reason '%s' lacks '%s'", s, err, needle);
}

/* prefix, then 'x' up to len bytes: refused with needle in the reason. */
static void target_long_bad(const char *prefix, size_t len,
			    const char *needle)
{
	char *s = malloc(len + 1);

	assert_non_null(s);
	memset(s, 'x', len);
	s[len] = '\0';
	memcpy(s, prefix, strlen(prefix));
	target_bad(s, needle);
	free(s);
}

static void test_rbd_target(void **state)
{
	(void)state;
	target_ok("rbd/img", "rbd", "", "img");
	target_ok("p/ns/img.1", "p", "ns", "img.1");
	target_bad("rbd", "is not POOL/IMAGE");
	target_bad("", "is not POOL/IMAGE");
	target_bad("/img", "empty pool name");
	target_bad("rbd/", "empty image name");
	target_bad("rbd//img", "empty namespace name");
	target_bad("a/b/c/d", "more than three parts");
	target_snap_ok("rbd/img@s1", "rbd", "", "img", "s1");
	target_snap_ok("p/ns/img@tapfs.2", "p", "ns", "img", "tapfs.2");
	target_bad("rbd/img@", "empty snapshot name");
	target_bad("rbd/@s", "empty image name");
	target_bad("rbd/img@a@b", "'@' only separates");
	target_bad("rb@d/img", "'@' only separates");
	target_bad("rbd/n@s/img", "'@' only separates");
	target_bad("rbd/img@s 1", "character 0x20");
	target_bad("rbd/im g", "character 0x20");
	target_bad("rbd/im\tg", "character 0x09");
	target_long_bad("rbd/", RBD_NAME_MAX + 7, "longer than 255 bytes");
}

/* QEMU's ":conf=FILE:id=NAME" after the image: the VBD's own cluster. */
static void target_opts_ok(const char *s, const char *image,
			   const char *snap, const char *conf, const char *id)
{
	target_snap_ok(s, "rbd", "", image, snap);
	assert_string_equal(t.conf, conf);
	assert_string_equal(t.id, id);
}

static void test_rbd_target_options(void **state)
{
	(void)state;
	target_opts_ok("rbd/img", "img", "", "", "");
	target_opts_ok("rbd/img:conf=/etc/ceph/c2.conf", "img", "",
		       "/etc/ceph/c2.conf", "");
	target_opts_ok("rbd/img:id=tapfs.h1", "img", "", "", "tapfs.h1");
	target_opts_ok("rbd/img@s1:conf=/c.conf:id=admin", "img", "s1",
		       "/c.conf", "admin");
	target_opts_ok("rbd/img:id=a:conf=/c.conf", "img", "", "/c.conf",
		       "a");
	/* A ':' ends the image part: '@' and '/' after it are the value's. */
	target_opts_ok("rbd/img:conf=/a@b/c.conf", "img", "", "/a@b/c.conf",
		       "");
	target_bad("rbd/img:conf=ceph.conf", "conf=ceph.conf is not an "
		   "absolute path");
	target_bad("rbd/img:conf=", "option conf has no value");
	target_bad("rbd/img:conf", "option conf has no value");
	target_bad("rbd/img:id=", "option id has no value");
	target_bad("rbd/img:", "option '' is not taken");
	target_bad("rbd/img:conf=/a:conf=/b", "option conf given twice");
	target_bad("rbd/img:id=a:id=b", "option id given twice");
	target_bad("rbd/img:keyring=/etc/shadow", "option 'keyring=/etc/"
		   "shadow' is not taken (only :conf=FILE and :id=NAME)");
	target_bad("rbd/img:mon_host=1.2.3.4", "option 'mon_host=1.2.3.4'");
	target_bad("rbd/img:conf=/a\\:b", "'\\' escapes are not taken");
	target_bad("rbd/img:id=a b", "client id name contains character "
		   "0x20");
	target_bad("rbd/img:conf=/a\nb", "character 0x0a");
	target_bad("rbd:conf=/c", "is not POOL/IMAGE");
	target_bad("rbd/img@:id=a", "empty snapshot name");
	target_long_bad("rbd/i:conf=/", PATH_MAX + 15,
			"conf file name longer than 4095 bytes");
}

static void test_rbd_table(void **state)
{
	(void)state;
	assert_int_equal(td_driver_validate(&tapdisk_rbd, err, sizeof(err)),
			 0);
	assert_ptr_equal(td_driver_find("rbd"), &tapdisk_rbd);
	assert_int_equal(td_disk_flags(&tapdisk_rbd),
			 TD_DISK_NO_FILE | TD_DISK_REMOTE);
	assert_true(td_disk_can_create_remote(&tapdisk_rbd));
	assert_false(td_disk_can_create(&tapdisk_rbd));
	/* A qcow2 backing name "rbd:..." is an rbd parent (QEMU's way). */
	{
		const char *arg = NULL;

		assert_ptr_equal(td_remote_parent("rbd:rbd/gold@s1", &arg),
				 &tapdisk_rbd);
		assert_string_equal(arg, "rbd/gold@s1");
		assert_null(td_remote_parent("vhd:x.vhd", &arg));
		assert_null(td_remote_parent("base.raw", &arg));
		assert_null(td_remote_parent("/imgs/rbd:x", &arg));
		assert_null(td_remote_parent(":rbd/x", &arg));
	}
	/* Other drivers get the defaults. */
	assert_false(td_disk_can_create_remote(td_driver_find("vhd")));
	assert_int_equal(td_drv_create_remote(td_driver_find("vhd"), NULL,
					      "x", 1 << 20, err, 1, err,
					      sizeof(err)), -ENOTSUP);
	assert_non_null(strstr(err, "cannot create"));
}

static int fini_calls;

static void count_fini(void *state)
{
	assert_ptr_equal(state, &fini_calls);
	fini_calls++;
}

static void test_engine_settings(void **state)
{
	struct td_engine *e = td_engine_new();

	(void)state;
	assert_non_null(e);
	assert_null(td_engine_option(e, "ceph_conf"));
	assert_null(td_engine_option(NULL, "ceph_conf"));
	assert_int_equal(td_engine_set_option(e, "ceph_conf", "/a"), 0);
	assert_int_equal(td_engine_set_option(e, "ceph_id", "x"), 0);
	assert_int_equal(td_engine_set_option(e, "ceph_conf", "/b"), 0);
	assert_string_equal(td_engine_option(e, "ceph_conf"), "/b");
	assert_string_equal(td_engine_option(e, "ceph_id"), "x");

	assert_null(td_engine_driver_state(e, &tapdisk_rbd));
	assert_int_equal(td_engine_set_driver_state(e, &tapdisk_rbd,
						    &fini_calls, count_fini),
			 0);
	assert_int_equal(td_engine_set_driver_state(e, &tapdisk_rbd,
						    &fini_calls, count_fini),
			 -EEXIST);
	assert_ptr_equal(td_engine_driver_state(e, &tapdisk_rbd),
			 &fini_calls);
	td_engine_free(e);
	assert_int_equal(fini_calls, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rbd_target),
		cmocka_unit_test(test_rbd_target_options),
		cmocka_unit_test(test_rbd_table),
		cmocka_unit_test(test_engine_settings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
