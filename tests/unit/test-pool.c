/* SPDX-License-Identifier: MIT */
/* td_pool: fixed-size object pools (drivers/engine/td-pool.c). */
#include <unistd.h>

#include "unit.h"

#define POOL_COUNT	8

static void test_pool_get_put(void **state)
{
	struct td_pool p;
	void *objs[POOL_COUNT];
	unsigned i, j;

	(void)state;
	assert_int_equal(td_pool_init(&p, POOL_COUNT, 100, 64), 0);
	assert_int_equal(p.count, POOL_COUNT);
	assert_int_equal(p.nfree, POOL_COUNT);
	for (i = 0; i < POOL_COUNT; i++) {
		objs[i] = td_pool_get(&p);
		assert_non_null(objs[i]);
		for (j = 0; j < i; j++)
			assert_ptr_not_equal(objs[i], objs[j]);
		/* Every byte of the object is usable. */
		memset(objs[i], (int)i + 1, 100);
	}
	assert_int_equal(p.nfree, 0);
	/* No object was overwritten by its neighbour. */
	for (i = 0; i < POOL_COUNT; i++) {
		const unsigned char *b = objs[i];

		for (j = 0; j < 100; j++)
			assert_int_equal(b[j], i + 1);
	}

	/* O(1) stack: the object put back is the next one handed out. */
	td_pool_put(&p, objs[3]);
	assert_int_equal(p.nfree, 1);
	assert_ptr_equal(td_pool_get(&p), objs[3]);

	for (i = 0; i < POOL_COUNT; i++)
		td_pool_put(&p, objs[i]);
	assert_int_equal(p.nfree, POOL_COUNT);
	td_pool_fini(&p);
	assert_null(p.mem);
	assert_null(p.free);
}

static void test_pool_exhaustion(void **state)
{
	struct td_pool p;
	void *a, *b, *c;

	(void)state;
	assert_int_equal(td_pool_init(&p, 2, 16, 8), 0);
	a = td_pool_get(&p);
	b = td_pool_get(&p);
	assert_non_null(a);
	assert_non_null(b);
	assert_null(td_pool_get(&p));
	assert_null(td_pool_get(&p));	/* stays empty, no underflow */
	assert_int_equal(p.nfree, 0);
	td_pool_put(&p, b);
	c = td_pool_get(&p);
	assert_ptr_equal(c, b);
	assert_null(td_pool_get(&p));
	td_pool_put(&p, a);
	td_pool_put(&p, c);
	td_pool_fini(&p);
}

static void test_pool_put_null(void **state)
{
	struct td_pool p;

	(void)state;
	assert_int_equal(td_pool_init(&p, 1, 8, 8), 0);
	td_pool_put(&p, NULL);
	assert_int_equal(p.nfree, 1);
	td_pool_fini(&p);
}

static void test_pool_alignment(void **state)
{
	static const struct {
		size_t size, align;
	} cases[] = {
		{ 1, 1 }, { 3, 2 }, { 7, 4 }, { 24, 8 }, { 100, 64 },
		{ 1, 512 }, { 513, 512 }, { 4096, 4096 }, { 4097, 4096 },
		{ 3, 8192 },
	};
	size_t c;

	(void)state;
	for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		size_t size = cases[c].size, align = cases[c].align;
		void *objs[POOL_COUNT];
		struct td_pool p;
		unsigned i, j;

		assert_int_equal(td_pool_init(&p, POOL_COUNT, size, align), 0);
		assert_true(p.size >= size);
		assert_int_equal(p.size % align, 0);
		for (i = 0; i < POOL_COUNT; i++) {
			objs[i] = td_pool_get(&p);
			assert_non_null(objs[i]);
			assert_int_equal((uintptr_t)objs[i] % align, 0);
			memset(objs[i], 0xa5, size);
		}
		/* Distinct objects never overlap. */
		for (i = 0; i < POOL_COUNT; i++)
			for (j = 0; j < POOL_COUNT; j++) {
				uintptr_t a = (uintptr_t)objs[i];
				uintptr_t b = (uintptr_t)objs[j];

				if (i != j)
					assert_true(a + size <= b ||
						    b + size <= a);
			}
		for (i = 0; i < POOL_COUNT; i++)
			td_pool_put(&p, objs[i]);
		td_pool_fini(&p);
	}
}

static void test_pool_owns(void **state)
{
	struct td_pool p, q;
	char outside[16];
	char *o;
	unsigned i;

	(void)state;
	assert_int_equal(td_pool_init(&p, 4, 32, 16), 0);
	assert_int_equal(td_pool_init(&q, 4, 32, 16), 0);
	for (i = 0; i < 4; i++) {
		o = td_pool_get(&p);
		assert_true(td_pool_owns(&p, o));
		assert_false(td_pool_owns(&q, o));
		/* Only object starts are owned, not interior pointers. */
		assert_false(td_pool_owns(&p, o + 1));
		assert_false(td_pool_owns(&p, o + 16));
	}
	assert_false(td_pool_owns(&p, NULL));
	assert_false(td_pool_owns(&p, outside));
	assert_false(td_pool_owns(&p, p.mem - 32));
	assert_false(td_pool_owns(&p, p.mem + p.size * p.count));
	/* An object of q put into p must be refused (see below: abort). */
	o = td_pool_get(&q);
	assert_false(td_pool_owns(&p, o));
	td_pool_put(&q, o);

	td_pool_fini(&p);
	td_pool_fini(&q);
	/* A finished (or never initialised) pool owns nothing. */
	assert_false(td_pool_owns(&p, outside));
	td_pool_fini(&p);	/* twice is harmless */
}

static void test_pool_invalid_args(void **state)
{
	struct td_pool p;

	(void)state;
	assert_int_equal(td_pool_init(&p, 0, 8, 8), -EINVAL);
	assert_int_equal(td_pool_init(&p, 4, 0, 8), -EINVAL);
	assert_int_equal(td_pool_init(&p, 4, 8, 0), -EINVAL);
	assert_int_equal(td_pool_init(&p, 4, 8, 3), -EINVAL);
	assert_int_equal(td_pool_init(&p, 4, 8, 24), -EINVAL);
	/* A failed init leaves an empty pool that is safe to use and fini. */
	assert_null(td_pool_get(&p));
	assert_false(td_pool_owns(&p, &p));
	td_pool_fini(&p);

	/* count * stride does not fit in size_t. */
	assert_int_equal(td_pool_init(&p, UINT32_MAX, SIZE_MAX / 2, 1),
			 -EOVERFLOW);
	assert_null(td_pool_get(&p));
	td_pool_fini(&p);
}

/*
 * ENGINE BUG (drivers/engine/td-pool.c:22-25): for size > SIZE_MAX - (align - 1),
 * "size + align - 1" wraps, stride becomes 0, the overflow check compares
 * 0 with 0 and passes, and "count > SIZE_MAX / stride" divides by zero.
 * Built with -O0 that is a SIGFPE; with -O2 gcc turns the division into
 * a multiply-overflow check, so init returns 0 with a stride of 0 and
 * every object handed out is the same zero-byte allocation.  An object
 * size that does not fit must be refused with -EOVERFLOW.  Runs in a
 * child so that a crash is reported, not fatal to the suite.
 */
static void pool_init_huge_size(void *arg)
{
	struct td_pool p;
	int rc;

	(void)arg;
	rc = td_pool_init(&p, 2, SIZE_MAX, 8);
	if (rc == -EOVERFLOW)
		_exit(0);
	fprintf(stderr, "td_pool_init(2, SIZE_MAX, 8) = %d, stride %zu\n",
		rc, p.size);
	_exit(1);
}

static void test_pool_size_overflow(void **state)
{
	int status;

	(void)state;
	status = unit_in_child(pool_init_huge_size, NULL);
	if (WIFSIGNALED(status))
		fail_msg("td_pool_init(2, SIZE_MAX, 8) died of signal %d "
			 "(%s) instead of returning -EOVERFLOW",
			 WTERMSIG(status), strsignal(WTERMSIG(status)));
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status))
		fail_msg("td_pool_init(2, SIZE_MAX, 8) did not return "
			 "-EOVERFLOW");
}

/* Returning a foreign object is an engine bug: an assert aborts. */
static void pool_put_foreign(void *arg)
{
	struct td_pool p;
	char foreign[64];

	(void)arg;
	if (td_pool_init(&p, 2, 32, 32))
		_exit(2);
	td_pool_get(&p);
	td_pool_put(&p, foreign);
	_exit(0);
}

/* Putting back more objects than were handed out, likewise. */
static void pool_put_extra(void *arg)
{
	struct td_pool p;

	(void)arg;
	if (td_pool_init(&p, 2, 32, 32))
		_exit(2);
	td_pool_put(&p, p.mem);	/* pool already full */
	_exit(0);
}

/* Putting back an object twice while others are out, likewise: the
 * pool is not full, so only the object's own state can tell. */
static void pool_put_twice(void *arg)
{
	struct td_pool p;
	void *a;

	(void)arg;
	if (td_pool_init(&p, 4, 32, 32))
		_exit(2);
	a = td_pool_get(&p);
	td_pool_get(&p);
	td_pool_put(&p, a);
	td_pool_put(&p, a);
	_exit(0);
}

/* The same object put, got again and put again is fine. */
static void pool_put_get_put(void *arg)
{
	struct td_pool p;
	void *a;

	(void)arg;
	if (td_pool_init(&p, 4, 32, 32))
		_exit(2);
	a = td_pool_get(&p);
	td_pool_put(&p, a);
	if (td_pool_get(&p) != a)
		_exit(3);
	td_pool_put(&p, a);
	td_pool_fini(&p);
	_exit(0);
}

static void test_pool_put_bad_aborts(void **state)
{
	int status;

	(void)state;
	status = unit_in_child(pool_put_foreign, NULL);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	status = unit_in_child(pool_put_extra, NULL);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	status = unit_in_child(pool_put_twice, NULL);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	status = unit_in_child(pool_put_get_put, NULL);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/*
 * A large pool (an image's worst-case buffers) costs no memory until its
 * objects are used: under mlockall(MCL_ONFAULT) a zeroed pool would be
 * resident and locked whole.  Its objects still read as zeros.
 */
static void test_pool_large_untouched(void **state)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct td_pool p;
	unsigned char *a;
	size_t i;

	(void)state;
	assert_int_equal(td_pool_init(&p, 256, 65536, 4096), 0);
	assert_true(p.mapped);
	assert_int_equal(unit_resident_pages(p.mem, p.size * p.count), 0);
	a = td_pool_get(&p);
	assert_non_null(a);
	assert_int_equal((uintptr_t)a % 4096, 0);
	for (i = 0; i < 65536; i++)
		assert_int_equal(a[i], 0);
	a[0] = 1;
	/* Only the pages of the object used (read, then written). */
	assert_true(unit_resident_pages(p.mem, p.size * p.count) <= 65536 / page);
	td_pool_put(&p, a);
	assert_ptr_equal(td_pool_get(&p), a);	/* the same one again */
	td_pool_put(&p, a);
	td_pool_fini(&p);

	/* Small pools come from the heap, zeroed. */
	assert_int_equal(td_pool_init(&p, 4, 100, 64), 0);
	assert_false(p.mapped);
	a = td_pool_get(&p);
	for (i = 0; i < 100; i++)
		assert_int_equal(a[i], 0);
	td_pool_put(&p, a);
	td_pool_fini(&p);
}

/*
 * A pool sized for a deep queue (4096 small objects: an image's metadata
 * I/O) costs nothing at set-up, bookkeeping included, and under a light
 * load only the pages of the objects that were out at once.  Every VBD
 * has several such pools: their worst case, made resident at open, was
 * most of what a VBD cost the daemon.
 */
static void test_pool_deep_untouched(void **state)
{
	struct td_pool p;
	void *objs[4];
	unsigned i, round;

	(void)state;
	assert_int_equal(td_pool_init(&p, 4096, 128, 8), 0);
	assert_true(p.mapped);
	assert_int_equal(unit_resident_pages(p.mem, p.map_len), 0);
	for (round = 0; round < 100; round++) {
		for (i = 0; i < 4; i++) {
			objs[i] = td_pool_get(&p);
			assert_non_null(objs[i]);
			memset(objs[i], 0x5a, 128);
		}
		for (i = 0; i < 4; i++)
			td_pool_put(&p, objs[i]);
	}
	assert_int_equal(p.nfree, 4096);
	/* One page of objects, one of the stack, one of the flags. */
	assert_true(unit_resident_pages(p.mem, p.map_len) <= 3);
	assert_true(unit_resident_pages(p.mem, p.size * p.count) <= 1);
	/* All of them can still be had, distinct, zeroed when fresh. */
	for (i = 0; i < 4096; i++) {
		unsigned char *o = td_pool_get(&p);

		assert_non_null(o);
		assert_int_equal(o[127], i < 4 ? 0x5a : 0);
	}
	assert_null(td_pool_get(&p));
	assert_int_equal(p.nfree, 0);
	td_pool_fini(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pool_get_put),
		cmocka_unit_test(test_pool_exhaustion),
		cmocka_unit_test(test_pool_put_null),
		cmocka_unit_test(test_pool_alignment),
		cmocka_unit_test(test_pool_owns),
		cmocka_unit_test(test_pool_invalid_args),
		cmocka_unit_test(test_pool_size_overflow),
		cmocka_unit_test(test_pool_put_bad_aborts),
		cmocka_unit_test(test_pool_large_untouched),
		cmocka_unit_test(test_pool_deep_untouched),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
