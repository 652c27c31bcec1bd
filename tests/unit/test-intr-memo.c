/* SPDX-License-Identifier: MIT */
/*
 * The memo of INTERRUPTs that came before their request (fs/intr-memo.c):
 * a remembered unique is found once by its request, expires after the
 * TTL, and a full memo gives up its oldest entry.
 */
#include "unit.h"

#include "intr-memo.h"

#define SEC	1000000000ull

static void test_empty(void **state)
{
	struct intr_memo m = { 0 };

	(void)state;
	assert_true(intr_memo_empty(&m));
	assert_false(intr_memo_take(&m, 42, 1));
	assert_true(intr_memo_empty(&m));
}

/* The request after its INTERRUPT takes it, once; others do not. */
static void test_taken_once(void **state)
{
	struct intr_memo m = { 0 };

	(void)state;
	intr_memo_add(&m, 42, 100);
	intr_memo_add(&m, 44, 100);
	assert_false(intr_memo_empty(&m));
	assert_false(intr_memo_take(&m, 43, 200));
	assert_int_equal(m.n, 2);
	assert_true(intr_memo_take(&m, 42, 200));
	assert_false(intr_memo_take(&m, 42, 300));
	assert_true(intr_memo_take(&m, 44, 300));
	assert_true(intr_memo_empty(&m));
}

/* An INTERRUPT whose request was answered before it only expires. */
static void test_expiry(void **state)
{
	struct intr_memo m = { 0 };

	(void)state;
	intr_memo_add(&m, 7, 5 * SEC);
	intr_memo_add(&m, 9, 5 * SEC + SEC / 2);
	/* At the TTL exactly, still there. */
	assert_true(intr_memo_take(&m, 7, 5 * SEC + INTR_MEMO_TTL_NS));
	/* Past it: gone, and the memo is empty again (the fast path). */
	assert_false(intr_memo_take(&m, 9, 5 * SEC + SEC / 2 +
				    INTR_MEMO_TTL_NS + 1));
	assert_true(intr_memo_empty(&m));
	/* An add drops the expired too. */
	intr_memo_add(&m, 1, 10 * SEC);
	intr_memo_add(&m, 2, 12 * SEC);
	assert_int_equal(m.n, 1);
	assert_false(intr_memo_take(&m, 1, 12 * SEC));
	assert_true(intr_memo_take(&m, 2, 12 * SEC));
}

/* Full: the oldest goes, the newest INTR_MEMO_MAX stay. */
static void test_full(void **state)
{
	struct intr_memo m = { 0 };
	uint64_t u;

	(void)state;
	for (u = 1; u <= INTR_MEMO_MAX + 3; u++)
		intr_memo_add(&m, u, 1000 + u);
	assert_int_equal(m.n, INTR_MEMO_MAX);
	for (u = 1; u <= 3; u++)
		assert_false(intr_memo_take(&m, u, 2000));
	/* Taken in any order, each once. */
	for (u = INTR_MEMO_MAX + 3; u > 3; u--)
		assert_true(intr_memo_take(&m, u, 2000));
	assert_true(intr_memo_empty(&m));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_taken_once),
		cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_full),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
