/* SPDX-License-Identifier: MIT */
/*
 * td_meta (drivers/common/td-meta.c): group-commit sequencers and parked
 * requests, the machinery under the vhd and qcow drivers' crash-safe
 * ordering; splitting requests and runs of segments.  A waiter must only ever be completed by a write that began
 * after it asked: otherwise a driver would go on (commit a block, free
 * a cluster) before its metadata is on disk.
 */
#include "unit.h"
#include "common/td-meta.h"

/* A sequencer whose "write" is whatever the test says. */
struct fake_seq {
	struct td_meta_seq q;
	unsigned	 issued;	/* writes started */
};

static void fake_issue(struct td_meta_seq *q)
{
	td_container_of(q, struct fake_seq, q)->issued++;
}

struct waiter {
	struct td_meta_wait w;
	int		 err;
	unsigned	 done;		/* times completed */
	/* Ask again, from the completion (as a woken request would). */
	struct td_meta_seq *requeue;
	struct waiter	*next;
};

static void waiter_done(struct td_meta_wait *w, int err)
{
	struct waiter *x = td_container_of(w, struct waiter, w);

	x->err = err;
	x->done++;
	if (x->requeue)
		td_meta_seq_wait(x->requeue, &x->next->w, waiter_done);
}

static void fake_init(struct fake_seq *f)
{
	memset(f, 0, sizeof(*f));
	td_meta_seq_init(&f->q, NULL, fake_issue, NULL);
}

static void test_group_commit(void **state)
{
	struct waiter a = { 0 }, b = { 0 }, c = { 0 };
	struct fake_seq f;

	(void)state;
	fake_init(&f);
	td_meta_seq_wait(&f.q, &a.w, waiter_done);
	assert_int_equal(f.issued, 1);		/* a's write starts */
	td_meta_seq_wait(&f.q, &b.w, waiter_done);
	td_meta_seq_wait(&f.q, &c.w, waiter_done);
	assert_int_equal(f.issued, 1);		/* one write in flight */
	td_meta_seq_done(&f.q, 0);
	assert_int_equal(a.done, 1);
	assert_int_equal(b.done + c.done, 0);	/* not covered by it */
	assert_int_equal(f.issued, 2);		/* one write for b and c */
	td_meta_seq_done(&f.q, -EIO);
	assert_int_equal(b.done, 1);
	assert_int_equal(c.done, 1);
	assert_int_equal(b.err, -EIO);
	assert_int_equal(c.err, -EIO);
	assert_int_equal(f.issued, 2);		/* nothing left to write */
	assert_false(f.q.busy);
}

/*
 * A completion that asks the same sequencer again (a parked discard
 * woken by the allocation it waited for, setting an entry of the same
 * L2 table) gets the next write, not the one that just ended.
 */
static void test_requeue_from_completion(void **state)
{
	struct waiter a = { 0 }, b = { 0 };
	struct fake_seq f;

	(void)state;
	fake_init(&f);
	a.requeue = &f.q;
	a.next = &b;
	td_meta_seq_wait(&f.q, &a.w, waiter_done);
	td_meta_seq_done(&f.q, 0);
	assert_int_equal(a.done, 1);
	assert_int_equal(f.issued, 2);		/* b's own write */
	assert_int_equal(b.done, 0);		/* ... still in flight */
	td_meta_seq_done(&f.q, 0);
	assert_int_equal(b.done, 1);
	assert_int_equal(b.err, 0);
	assert_false(f.q.busy);
}

/* ---- parked requests --------------------------------------------------- */

struct log {
	uint64_t	 sec[16];
	int		 err[16];
	unsigned	 n;
};

static struct log completed, dispatched;

static void on_complete(td_request_t treq, int err)
{
	assert_true(completed.n < 16);
	completed.sec[completed.n] = treq.sec;
	completed.err[completed.n++] = err;
}

static void on_dispatch(void *ctx, td_request_t treq)
{
	(void)ctx;
	assert_true(dispatched.n < 16);
	dispatched.sec[dispatched.n++] = treq.sec;
}

static td_request_t req(uint64_t sec)
{
	td_request_t r = { .op = TD_OP_READ, .sec = sec, .secs = 1,
			   .cb = on_complete };

	return r;
}

static struct td_driver unit_drv = { .name = (char *)"unit" };

/* m set up on no file, with nreqs request records; the logs emptied. */
static void meta_setup(struct td_meta *m, unsigned nreqs)
{
	memset(&completed, 0, sizeof(completed));
	memset(&dispatched, 0, sizeof(dispatched));
	memset(m, 0, sizeof(*m));
	assert_int_equal(td_meta_init(m, &unit_drv, -1, NULL, on_dispatch, 1,
				      nreqs), 0);
}

static void test_park_and_wake(void **state)
{
	struct td_list list;
	struct td_meta m;

	(void)state;
	meta_setup(&m, 2);
	td_list_init(&list);
	assert_true(td_meta_park(&m, &list, req(1)));
	assert_true(td_meta_park(&m, &list, req(2)));
	/* No room: completed at once with -EBUSY (the VBD retries). */
	assert_false(td_meta_park(&m, &list, req(3)));
	assert_int_equal(completed.n, 1);
	assert_int_equal(completed.sec[0], 3);
	assert_int_equal(completed.err[0], -EBUSY);
	td_meta_wake(&m, &list, 0);
	assert_int_equal(dispatched.n, 2);	/* in order */
	assert_int_equal(dispatched.sec[0], 1);
	assert_int_equal(dispatched.sec[1], 2);
	assert_true(td_list_empty(&list));
	assert_int_equal(m.reqs.nfree, 2);	/* given back */
	/* With an error, the parked requests complete with it. */
	assert_true(td_meta_park(&m, &list, req(4)));
	td_meta_wake(&m, &list, -ENOMEM);
	assert_int_equal(completed.n, 2);
	assert_int_equal(completed.sec[1], 4);
	assert_int_equal(completed.err[1], -ENOMEM);
	assert_int_equal(dispatched.n, 2);
	td_meta_fini(&m);
}

/* A request waiting on a sequencer completes with the write's result. */
static void test_request_waits_for_write(void **state)
{
	struct td_meta_req *r;
	struct fake_seq f;
	struct td_meta m;

	(void)state;
	meta_setup(&m, 1);
	fake_init(&f);
	r = td_meta_req_get(&m, req(7));
	assert_non_null(r);
	assert_null(td_meta_req_get(&m, req(8)));	/* -EBUSY */
	td_meta_seq_wait(&f.q, &r->wait, td_meta_req_done);
	assert_int_equal(completed.n, 1);
	assert_int_equal(completed.err[0], -EBUSY);
	td_meta_seq_done(&f.q, 0);
	assert_int_equal(completed.n, 2);
	assert_int_equal(completed.sec[1], 7);
	assert_int_equal(completed.err[1], 0);
	assert_int_equal(m.reqs.nfree, 1);
	td_meta_fini(&m);
}

/* A flush waiting on a sequencer (td_meta_req_wait) completes with it. */
static void test_flush_waits_for_write(void **state)
{
	struct fake_seq f;
	struct td_meta m;

	(void)state;
	meta_setup(&m, 1);
	fake_init(&f);
	td_meta_req_wait(&m, &f.q, req(5));
	assert_int_equal(f.issued, 1);
	assert_int_equal(completed.n, 0);	/* not before the write */
	td_meta_seq_done(&f.q, -EIO);
	assert_int_equal(completed.n, 1);
	assert_int_equal(completed.sec[0], 5);
	assert_int_equal(completed.err[0], -EIO);
	td_meta_fini(&m);
}

/* ---- splitting requests, runs ----------------------------------------- */

static struct {
	td_request_t	 piece[8];
	unsigned	 n;
} pieces;

static void on_piece(void *ctx, td_request_t piece)
{
	(void)ctx;
	assert_true(pieces.n < 8);
	pieces.piece[pieces.n++] = piece;
}

/* Pieces end at multiples of the span; each buffer follows its sectors. */
static void test_split(void **state)
{
	static char buf[20 << TD_SECTOR_SHIFT];
	td_request_t t = { .op = TD_OP_WRITE, .buf = buf, .sec = 6,
			   .secs = 20 };

	(void)state;
	memset(&pieces, 0, sizeof(pieces));
	td_meta_split(t, 8, on_piece, NULL);
	assert_int_equal(pieces.n, 4);
	assert_int_equal(pieces.piece[0].sec, 6);
	assert_int_equal(pieces.piece[0].secs, 2);
	assert_ptr_equal(pieces.piece[0].buf, buf);
	assert_int_equal(pieces.piece[1].sec, 8);
	assert_int_equal(pieces.piece[1].secs, 8);
	assert_ptr_equal(pieces.piece[1].buf, buf + (2 << TD_SECTOR_SHIFT));
	assert_int_equal(pieces.piece[2].sec, 16);
	assert_int_equal(pieces.piece[2].secs, 8);
	assert_ptr_equal(pieces.piece[2].buf, buf + (10 << TD_SECTOR_SHIFT));
	assert_int_equal(pieces.piece[3].sec, 24);
	assert_int_equal(pieces.piece[3].secs, 2);
	assert_ptr_equal(pieces.piece[3].buf, buf + (18 << TD_SECTOR_SHIFT));
	/* A discard has no buffer, and its pieces none either. */
	memset(&pieces, 0, sizeof(pieces));
	t.op = TD_OP_DISCARD;
	t.buf = NULL;
	td_meta_split(t, 16, on_piece, NULL);
	assert_int_equal(pieces.n, 2);
	assert_null(pieces.piece[1].buf);
	assert_int_equal(pieces.piece[1].sec, 16);
}

/* Segments join a run only when they follow it, on disk too. */
static void test_runs(void **state)
{
	static char buf[4 << TD_SECTOR_SHIFT];
	struct td_meta_run r = { .kind = TD_RUN_NONE };
	td_request_t a = req(10), b = req(11), c = req(12);

	(void)state;
	memset(&completed, 0, sizeof(completed));
	memset(buf, 0x5a, sizeof(buf));
	a.buf = buf;
	b.buf = buf + TD_SECTOR_SIZE;
	c.buf = buf + 2 * TD_SECTOR_SIZE;
	td_meta_run_add(&r, TD_RUN_DATA, a, 4096);
	td_meta_run_add(&r, TD_RUN_DATA, b, 4096 + TD_SECTOR_SIZE);
	assert_int_equal(r.treq.secs, 2);	/* consecutive: joined */
	r.kind = TD_RUN_NONE;			/* (not issued: no engine) */
	td_meta_run_add(&r, TD_RUN_ZERO, a, 0);
	td_meta_run_add(&r, TD_RUN_ZERO, b, 0);
	assert_int_equal(completed.n, 0);
	td_meta_run_add(&r, TD_RUN_ZERO, c, 0);
	td_meta_run_flush(&r);
	/* One completion for the three sectors, zeroed. */
	assert_int_equal(completed.n, 1);
	assert_int_equal(completed.sec[0], 10);
	assert_int_equal(buf[0], 0);
	assert_int_equal(buf[3 * TD_SECTOR_SIZE - 1], 0);
	assert_int_equal(buf[3 * TD_SECTOR_SIZE], 0x5a);
	assert_int_equal(r.kind, TD_RUN_NONE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_group_commit),
		cmocka_unit_test(test_requeue_from_completion),
		cmocka_unit_test(test_park_and_wake),
		cmocka_unit_test(test_request_waits_for_write),
		cmocka_unit_test(test_flush_waits_for_write),
		cmocka_unit_test(test_split),
		cmocka_unit_test(test_runs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
