/* SPDX-License-Identifier: MIT */
/*
 * Memory helpers of drivers/common/td-util.c: sparse tables cost the
 * pages written, not their bound; a sparse copy writes only the pages
 * that hold something.
 */
#include "unit.h"
#include "common/td-util.h"

#define TABLE_BYTES	(64u << 10)	/* a qcow2 refcount table cluster */

static void test_zalloc_sparse(void **state)
{
	uint8_t *t;
	size_t i;

	(void)state;
	t = td_zalloc_sparse(TABLE_BYTES);
	assert_non_null(t);
	assert_int_equal((uintptr_t)t % TD_BUF_ALIGN, 0);
	assert_int_equal(unit_resident_pages(t, TABLE_BYTES), 0);
	t[8] = 1;
	assert_int_equal(unit_resident_pages(t, TABLE_BYTES), 1);
	/* (mincore counts pages read, mapped to the zero page, as well.) */
	for (i = 0; i < TABLE_BYTES; i++)
		assert_int_equal(t[i], i == 8);
	td_free_sparse(t, TABLE_BYTES);

	/* Under a page: from the heap, aligned and zeroed all the same. */
	t = td_zalloc_sparse(100);
	assert_non_null(t);
	assert_int_equal((uintptr_t)t % TD_BUF_ALIGN, 0);
	assert_true(td_all_zero(t, 100));
	td_free_sparse(t, 100);
	td_free_sparse(NULL, TABLE_BYTES);
}

static void test_copy_sparse(void **state)
{
	uint8_t *src = unit_aligned(TABLE_BYTES), *dst;

	(void)state;
	src[5] = 0x11;				/* page 0 */
	src[3 * TD_BUF_ALIGN + 100] = 0x22;	/* page 3 */
	src[TABLE_BYTES - 1] = 0x33;		/* the last page */
	dst = td_zalloc_sparse(TABLE_BYTES);
	assert_non_null(dst);
	td_copy_sparse(dst, src, TABLE_BYTES);
	assert_int_equal(unit_resident_pages(dst, TABLE_BYTES), 3);
	assert_memory_equal(dst, src, TABLE_BYTES);
	td_free_sparse(dst, TABLE_BYTES);
	free(src);
}

static void test_all_zero(void **state)
{
	uint8_t b[64] = { 0 };

	(void)state;
	assert_true(td_all_zero(b, sizeof(b)));
	assert_true(td_all_zero(b, 0));
	b[63] = 1;
	assert_false(td_all_zero(b, sizeof(b)));
	assert_true(td_all_zero(b, 63));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_zalloc_sparse),
		cmocka_unit_test(test_copy_sparse),
		cmocka_unit_test(test_all_zero),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
