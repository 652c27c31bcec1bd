/* SPDX-License-Identifier: MIT */
/* td_msgf (drivers/engine/td-log.c): a cut message shows its cut. */
#include <tapfs/log.h>

#include "unit.h"

static void test_msgf_fits(void **state)
{
	char buf[16];

	(void)state;
	assert_true(td_msgf(buf, sizeof(buf), "%s %d", "abc", 42));
	assert_string_equal(buf, "abc 42");
	/* Exactly full: 15 characters and the NUL. */
	assert_true(td_msgf(buf, sizeof(buf), "%s", "123456789012345"));
	assert_string_equal(buf, "123456789012345");
}

static void test_msgf_cut(void **state)
{
	char buf[16], tiny[4], one[1] = { 'x' };

	(void)state;
	assert_false(td_msgf(buf, sizeof(buf), "%s", "1234567890123456"));
	assert_string_equal(buf, "123456789012...");
	assert_int_equal(strlen(buf), sizeof(buf) - 1);
	assert_false(td_msgf(tiny, sizeof(tiny), "%s", "abcdef"));
	assert_string_equal(tiny, "...");
	/* Too small for the mark: cut, still terminated. */
	assert_false(td_msgf(one, sizeof(one), "%s", "ab"));
	assert_int_equal(one[0], '\0');
	assert_false(td_msgf(NULL, 0, "%s", "ab"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_msgf_fits),
		cmocka_unit_test(test_msgf_cut),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
