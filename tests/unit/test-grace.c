/* SPDX-License-Identifier: MIT */
/*
 * td_grace (drivers/common/td-grace.c): freed space is released only after
 * every I/O that was in flight when it was freed has ended.  This is
 * what keeps a qcow2 cluster that a discard (or copy on write) frees
 * from being reused while a read or in-place write of it is in flight.
 */
#include "unit.h"
#include "common/td-grace.h"

#define MAX_REL 64

struct released {
	uint64_t	off[MAX_REL];
	uint64_t	len[MAX_REL];
	unsigned	flags[MAX_REL];
	unsigned	n;
};

static void rel(void *ctx, uint64_t off, uint64_t len, unsigned flags)
{
	struct released *r = ctx;

	assert_true(r->n < MAX_REL);
	r->off[r->n] = off;
	r->len[r->n] = len;
	r->flags[r->n] = flags;
	r->n++;
}

static void test_no_io_releases_at_once(void **state)
{
	struct released r = { .n = 0 };
	struct td_grace g;

	(void)state;
	td_grace_init(&g, rel, &r);
	assert_int_equal(td_grace_defer(&g, 4096, 512, 1), 0);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.off[0], 4096);
	assert_int_equal(r.len[0], 512);
	assert_int_equal(r.flags[0], 1);
	assert_int_equal(td_grace_pending(&g), 0);
	td_grace_fini(&g);
}

static void test_waits_for_io_in_flight(void **state)
{
	struct released r = { .n = 0 };
	struct td_grace_epoch *a;
	struct td_grace g;

	(void)state;
	td_grace_init(&g, rel, &r);
	a = td_grace_begin(&g);
	assert_int_equal(td_grace_defer(&g, 65536, 65536, 0), 0);
	assert_int_equal(r.n, 0);		/* a may still use it */
	assert_int_equal(td_grace_pending(&g), 1);
	td_grace_end(a);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.off[0], 65536);
	assert_int_equal(td_grace_pending(&g), 0);
	td_grace_fini(&g);
}

/* An I/O that began after the free does not hold it back. */
static void test_later_io_does_not_hold(void **state)
{
	struct released r = { .n = 0 };
	struct td_grace_epoch *a, *b;
	struct td_grace g;

	(void)state;
	td_grace_init(&g, rel, &r);
	a = td_grace_begin(&g);
	td_grace_defer(&g, 1, 1, 0);
	b = td_grace_begin(&g);
	assert_ptr_not_equal(a, b);
	td_grace_end(a);
	assert_int_equal(r.n, 1);		/* b is newer than the free */
	td_grace_end(b);
	assert_int_equal(r.n, 1);
	td_grace_fini(&g);
}

/* Every I/O older than a free holds it, in whichever epoch it counts. */
static void test_all_older_io_hold(void **state)
{
	struct released r = { .n = 0 };
	struct td_grace_epoch *a, *b, *c;
	struct td_grace g;

	(void)state;
	td_grace_init(&g, rel, &r);
	a = td_grace_begin(&g);
	td_grace_defer(&g, 10, 1, 0);		/* X: waits for a */
	b = td_grace_begin(&g);
	c = td_grace_begin(&g);
	td_grace_defer(&g, 20, 1, 0);		/* Y: waits for a, b, c */
	assert_int_equal(r.n, 0);
	td_grace_end(b);
	td_grace_end(c);
	assert_int_equal(r.n, 0);		/* a holds both */
	td_grace_end(a);			/* the last of them */
	assert_int_equal(r.n, 2);
	assert_int_equal(r.off[0], 10);
	assert_int_equal(r.off[1], 20);
	assert_int_equal(td_grace_pending(&g), 0);
	td_grace_fini(&g);
}

/* The stream of new I/O never stops: frees still get released. */
static void test_steady_stream(void **state)
{
	struct released r = { .n = 0 };
	struct td_grace_epoch *io[4] = { NULL };
	struct td_grace g;
	unsigned i;

	(void)state;
	td_grace_init(&g, rel, &r);
	for (i = 0; i < 40; i++) {
		/* Keep 4 I/Os in flight; free one extent per step. */
		if (io[i % 4])
			td_grace_end(io[i % 4]);
		io[i % 4] = td_grace_begin(&g);
		td_grace_defer(&g, i, 1, 0);
	}
	/* All but the last few are released while I/O goes on. */
	assert_true(r.n >= 40 - 8);
	for (i = 0; i < r.n; i++)
		assert_int_equal(r.off[i], i);	/* in the order freed */
	for (i = 0; i < 4; i++)
		td_grace_end(io[i]);
	assert_int_equal(r.n, 40);
	assert_int_equal(td_grace_pending(&g), 0);
	td_grace_fini(&g);
}

/*
 * The order of events is what keeps the extent from being reused: an
 * extent is never released while an I/O that began before its free is
 * in flight.  Random interleavings against a model.
 */
static void test_random_model(void **state)
{
	struct released r = { .n = 0 };
	struct td_grace_epoch *io[8];
	unsigned begun_at[8], freed_at[MAX_REL], step = 0, nio = 0, nfree = 0;
	struct td_grace g;
	unsigned i, j, k;

	(void)state;
	srand(42);
	td_grace_init(&g, rel, &r);
	for (k = 0; k < 2000 && nfree < MAX_REL; k++) {
		unsigned what = (unsigned)rand() % 3;

		step++;
		if (what == 0 && nio < 8) {
			io[nio] = td_grace_begin(&g);
			begun_at[nio++] = step;
		} else if (what == 1 && nio) {
			i = (unsigned)rand() % nio;
			td_grace_end(io[i]);
			io[i] = io[nio - 1];
			begun_at[i] = begun_at[nio - 1];
			nio--;
		} else if (what == 2) {
			freed_at[nfree] = step;
			assert_int_equal(td_grace_defer(&g, nfree, 1, 0), 0);
			nfree++;
		}
		/* No released extent has an older I/O still in flight. */
		for (i = 0; i < r.n; i++)
			for (j = 0; j < nio; j++)
				assert_false(begun_at[j] < freed_at[r.off[i]]);
	}
	while (nio)
		td_grace_end(io[--nio]);
	assert_int_equal(r.n, nfree);
	td_grace_fini(&g);
}

static void test_release_all(void **state)
{
	struct released r = { .n = 0 };
	struct td_grace_epoch *a, *b;
	struct td_grace g;

	(void)state;
	td_grace_init(&g, rel, &r);
	a = td_grace_begin(&g);
	td_grace_defer(&g, 1, 1, 0);
	b = td_grace_begin(&g);
	td_grace_defer(&g, 2, 1, 0);
	assert_int_equal(td_grace_pending(&g), 2);
	/* close: the I/O is gone (the driver drained it) */
	(void)a;
	(void)b;
	td_grace_release_all(&g);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.off[0], 1);		/* the older first */
	assert_int_equal(r.off[1], 2);
	assert_int_equal(td_grace_pending(&g), 0);
	td_grace_fini(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_io_releases_at_once),
		cmocka_unit_test(test_waits_for_io_in_flight),
		cmocka_unit_test(test_later_io_does_not_hold),
		cmocka_unit_test(test_all_older_io_hold),
		cmocka_unit_test(test_steady_stream),
		cmocka_unit_test(test_random_model),
		cmocka_unit_test(test_release_all),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
