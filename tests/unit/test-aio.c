/* SPDX-License-Identifier: MIT */
/*
 * The libaio queue (drivers/engine/td-aio.c): batching, merging of contiguous
 * tiocbs, splitting of a merged iocb that fails or completes short, the
 * split of each tiocb's time into waiting to be submitted and in the kernel.
 * Runs against a real file on a disk file system (see unit.h).
 */
#include <limits.h>

#include "unit.h"

#define NT		80		/* tiocbs per test */
#define PAGE		4096
#define FILE_BYTES	(1024 * 1024)
#define WAIT_MS		5000

struct aio_rec {
	long		 res;
	unsigned	 calls;
	unsigned	 seq;		/* completion order, from 1 */
	uint64_t	 done_ns;	/* td_now_ns() in the callback */
};

struct fix {
	struct td_engine *e;
	td_driver_t	 drv;		/* just enough for td_queue_tiocb */
	char		 path[256];
	int		 fd;
	unsigned	 done;
	unsigned	 seq;
	struct tiocb	 t[NT];
	struct aio_rec	 rec[NT];
	char		*buf;		/* NT pages, aligned */
	/* follow-up chain (test_callback_requeues) */
	unsigned	 chain_left;
	off_t		 chain_off;
};

static struct fix *F;	/* the running test's fixture, for callbacks */

static void rec_cb(struct tiocb *t, long res)
{
	struct aio_rec *r = t->arg;

	r->res = res;
	r->calls++;
	r->seq = ++F->seq;
	r->done_ns = td_now_ns();
	F->done++;
}

static int fix_setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->e = td_engine_new();
	assert_non_null(f->e);
	f->drv.engine = f->e;
	f->fd = unit_tmpfile(f->path, sizeof(f->path), "aio", FILE_BYTES);
	f->buf = unit_aligned((size_t)NT * PAGE);
	F = f;
	*state = f;
	return 0;
}

static int fix_teardown(void **state)
{
	struct fix *f = *state;

	td_engine_free(f->e);
	close(f->fd);
	unlink(f->path);
	free(f->buf);
	free(f);
	F = NULL;
	return 0;
}

static char *page(struct fix *f, unsigned i)
{
	return f->buf + (size_t)i * PAGE;
}

static void queue_write(struct fix *f, unsigned i, int fd, char *buf,
			size_t len, off_t off)
{
	td_prep_write(&f->t[i], fd, buf, len, off, rec_cb, &f->rec[i]);
	td_queue_tiocb(&f->drv, &f->t[i]);
}

static void queue_read(struct fix *f, unsigned i, int fd, char *buf,
		       size_t len, off_t off)
{
	td_prep_read(&f->t[i], fd, buf, len, off, rec_cb, &f->rec[i]);
	td_queue_tiocb(&f->drv, &f->t[i]);
}

static struct td_aio_stats stats(struct fix *f)
{
	struct td_aio_stats st;

	td_aio_queue_get_stats(f->e->aioq, &st);
	return st;
}

static void wait_done(struct fix *f, unsigned n)
{
	if (!unit_run_until(f->e->loop, &f->done, n, WAIT_MS))
		fail_msg("only %u of %u tiocbs completed", f->done, n);
	/* Nothing completes twice, nothing is left behind. */
	assert_int_equal(f->done, n);
	assert_int_equal(td_aio_queue_inflight(f->e->aioq), 0);
	/* Every piece the kernel took, its time there was reaped. */
	assert_int_equal(stats(f).waited, stats(f).reaped);
}

static void fill_file(struct fix *f, size_t len)
{
	char *p = malloc(len);
	size_t i;

	assert_non_null(p);
	for (i = 0; i < len; i++)
		p[i] = (char)(i * 7 + i / PAGE);
	assert_int_equal(pwrite(f->fd, p, len, 0), (ssize_t)len);
	free(p);
}

static void check_file(struct fix *f, off_t off, const char *want,
		       size_t len)
{
	char *p = malloc(len);

	assert_non_null(p);
	assert_int_equal(pread(f->fd, p, len, off), (ssize_t)len);
	assert_memory_equal(p, want, len);
	free(p);
}

/* ---- tests ---------------------------------------------------------- */

static void test_engine_new(void **state)
{
	struct fix *f = *state;
	struct td_aio_stats st = stats(f);

	assert_non_null(f->e->loop);
	assert_non_null(f->e->aioq);
	assert_int_equal(td_aio_queue_inflight(f->e->aioq), 0);
	assert_int_equal(st.submitted, 0);
	assert_int_equal(st.merged, 0);
	assert_int_equal(st.batches, 0);
	assert_int_equal(st.completed, 0);
	td_engine_free(NULL);
}

static void test_write_then_read(void **state)
{
	struct fix *f = *state;

	memset(page(f, 0), 'w', PAGE);
	queue_write(f, 0, f->fd, page(f, 0), PAGE, 2 * PAGE);
	/* Queued, not yet submitted: the loop's hook does that. */
	assert_int_equal(td_aio_queue_inflight(f->e->aioq), 1);
	assert_int_equal(stats(f).submitted, 0);
	wait_done(f, 1);
	assert_int_equal(f->rec[0].res, PAGE);
	assert_int_equal(f->rec[0].calls, 1);
	check_file(f, 2 * PAGE, page(f, 0), PAGE);

	/* Straight into the queue, and submitted without the loop. */
	td_prep_read(&f->t[1], f->fd, page(f, 1), PAGE, 2 * PAGE, rec_cb,
		     &f->rec[1]);
	td_aio_queue_add(f->e->aioq, &f->t[1]);
	td_aio_queue_submit(f->e->aioq);
	assert_int_equal(stats(f).submitted, 2);
	assert_int_equal(td_aio_queue_inflight(f->e->aioq), 1);
	wait_done(f, 2);
	assert_int_equal(f->rec[1].res, PAGE);
	assert_memory_equal(page(f, 1), page(f, 0), PAGE);
	assert_int_equal(stats(f).completed, 2);
	assert_int_equal(stats(f).merged, 0);

	/* A read at the end of the file completes with 0 bytes. */
	queue_read(f, 2, f->fd, page(f, 2), PAGE, FILE_BYTES);
	wait_done(f, 3);
	assert_int_equal(f->rec[2].res, 0);
}

#define NMERGE	8

/* Contiguous writes queued in one iteration go down as one iocb. */
static void test_merge_contiguous_writes(void **state)
{
	struct fix *f = *state;
	struct td_aio_stats st;
	size_t len[NMERGE];
	off_t off = 3 * 512, start = off;
	unsigned i;
	char *want;

	for (i = 0; i < NMERGE; i++) {
		len[i] = (i + 1) * 512;	/* all different */
		memset(page(f, i), 'A' + (int)i, len[i]);
		queue_write(f, i, f->fd, page(f, i), len[i], off);
		off += (off_t)len[i];
	}
	assert_int_equal(td_aio_queue_inflight(f->e->aioq), NMERGE);
	wait_done(f, NMERGE);
	st = stats(f);
	assert_true(st.merged > 0);
	assert_true(st.submitted < NMERGE);
	assert_int_equal(st.merged, NMERGE - 1);
	assert_int_equal(st.submitted, 1);
	assert_int_equal(st.batches, 1);
	assert_int_equal(st.completed, 1);
	/* Each callback got its own byte count, exactly once. */
	for (i = 0; i < NMERGE; i++) {
		assert_int_equal(f->rec[i].calls, 1);
		assert_int_equal(f->rec[i].res, (long)len[i]);
	}
	/* And the data landed where each piece said. */
	want = malloc((size_t)(off - start));
	assert_non_null(want);
	for (i = 0, off = 0; i < NMERGE; off += (off_t)len[i], i++)
		memcpy(want + off, page(f, i), len[i]);
	check_file(f, start, want, (size_t)off);
	free(want);
}

static void test_merge_contiguous_reads(void **state)
{
	struct fix *f = *state;
	struct td_aio_stats st;
	unsigned i;

	fill_file(f, NMERGE * PAGE);
	for (i = 0; i < NMERGE; i++) {
		memset(page(f, i), 0xee, PAGE);
		queue_read(f, i, f->fd, page(f, i), PAGE, (off_t)i * PAGE);
	}
	wait_done(f, NMERGE);
	st = stats(f);
	assert_int_equal(st.merged, NMERGE - 1);
	assert_int_equal(st.submitted, 1);
	for (i = 0; i < NMERGE; i++) {
		assert_int_equal(f->rec[i].calls, 1);
		assert_int_equal(f->rec[i].res, PAGE);
		check_file(f, (off_t)i * PAGE, page(f, i), PAGE);
	}
}

/* At most TD_AIO_MAX_MERGE tiocbs go into one iocb. */
static void test_merge_limit(void **state)
{
	struct fix *f = *state;
	const unsigned n = TD_AIO_MAX_MERGE + 8;
	struct td_aio_stats st;
	unsigned i;

	assert_true(n <= NT);
	for (i = 0; i < n; i++) {
		memset(page(f, i), (int)i, 512);
		queue_write(f, i, f->fd, page(f, i), 512, (off_t)i * 512);
	}
	wait_done(f, n);
	st = stats(f);
	assert_int_equal(st.submitted, 2);
	assert_int_equal(st.merged, n - 2);
	for (i = 0; i < n; i++) {
		assert_int_equal(f->rec[i].res, 512);
		check_file(f, (off_t)i * 512, page(f, i), 512);
	}
}

/*
 * Merging stops at TD_AIO_MERGE_BYTES: three contiguous 96 KiB reads make
 * one merged iocb of two and one alone.  (Folding large sequential reads
 * into one iocb halved 1 MiB sequential-read throughput.)
 */
static void test_merge_byte_limit(void **state)
{
	struct fix *f = *state;
	const size_t len = 96 << 10;
	struct td_aio_stats st;
	unsigned i;

	assert_true(3 * len <= NT * PAGE);
	assert_true(2 * len <= TD_AIO_MERGE_BYTES);
	assert_true(3 * len > TD_AIO_MERGE_BYTES);
	fill_file(f, 3 * len);
	for (i = 0; i < 3; i++)
		queue_read(f, i, f->fd, page(f, 0) + i * len, len,
			   (off_t)(i * len));
	wait_done(f, 3);
	st = stats(f);
	assert_int_equal(st.submitted, 2);
	assert_int_equal(st.merged, 1);
	for (i = 0; i < 3; i++) {
		assert_int_equal(f->rec[i].res, (long)len);
		check_file(f, (off_t)(i * len), page(f, 0) + i * len, len);
	}
}

static void test_no_merge(void **state)
{
	struct fix *f = *state;
	struct td_aio_stats st;
	int fd2;
	unsigned i;

	/* Gaps between them. */
	for (i = 0; i < 4; i++)
		queue_write(f, i, f->fd, page(f, i), PAGE,
			    (off_t)i * 2 * PAGE);
	wait_done(f, 4);
	st = stats(f);
	assert_int_equal(st.merged, 0);
	assert_int_equal(st.submitted, 4);

	/* Contiguous, but on another fd. */
	fd2 = open(f->path, O_RDWR | O_CLOEXEC);
	assert_true(fd2 >= 0);
	queue_write(f, 4, f->fd, page(f, 4), PAGE, 0);
	queue_write(f, 5, fd2, page(f, 5), PAGE, PAGE);
	wait_done(f, 6);
	/* Contiguous, but a read after a write. */
	queue_write(f, 6, f->fd, page(f, 6), PAGE, 0);
	queue_read(f, 7, f->fd, page(f, 7), PAGE, PAGE);
	wait_done(f, 8);
	/* Adjacent, but in the wrong order. */
	queue_write(f, 8, f->fd, page(f, 8), PAGE, PAGE);
	queue_write(f, 9, f->fd, page(f, 9), PAGE, 0);
	wait_done(f, 10);
	/* Contiguous, with an fsync between them. */
	queue_write(f, 10, f->fd, page(f, 10), PAGE, 0);
	td_prep_fsync(&f->t[11], f->fd, rec_cb, &f->rec[11]);
	td_queue_tiocb(&f->drv, &f->t[11]);
	queue_write(f, 12, f->fd, page(f, 12), PAGE, PAGE);
	wait_done(f, 13);

	st = stats(f);
	assert_int_equal(st.merged, 0);
	assert_int_equal(st.submitted, 13);
	for (i = 0; i < 13; i++) {
		assert_int_equal(f->rec[i].calls, 1);
		assert_int_equal(f->rec[i].res, i == 11 ? 0 : PAGE);
	}
	close(fd2);
}

/*
 * A merged read that runs past the end of the file completes short; the
 * queue splits it and every piece gets its own result.
 */
static void test_split_short_read(void **state)
{
	struct fix *f = *state;
	const size_t fbytes = 2 * PAGE + PAGE / 2;
	static const long want[4] = { PAGE, PAGE, PAGE / 2, 0 };
	struct td_aio_stats st;
	unsigned i;

	assert_int_equal(ftruncate(f->fd, 0), 0);
	fill_file(f, fbytes);
	for (i = 0; i < 4; i++) {
		memset(page(f, i), 0xee, PAGE);
		queue_read(f, i, f->fd, page(f, i), PAGE, (off_t)i * PAGE);
	}
	wait_done(f, 4);
	st = stats(f);
	assert_int_equal(st.merged, 3);
	/* The merged iocb, then each piece alone. */
	assert_int_equal(st.submitted, 1 + 4);
	for (i = 0; i < 4; i++) {
		assert_int_equal(f->rec[i].calls, 1);
		assert_int_equal(f->rec[i].res, want[i]);
	}
	check_file(f, 0, page(f, 0), PAGE);
	check_file(f, PAGE, page(f, 1), PAGE);
	check_file(f, 2 * PAGE, page(f, 2), PAGE / 2);
	/* Requests are completed in order after a split. */
	for (i = 1; i < 4; i++)
		assert_true(f->rec[i].seq > f->rec[i - 1].seq);
}

/*
 * Writes on a read-only fd: io_submit refuses the merged iocb; it is split
 * and every piece fails on its own with the kernel's error.
 */
static void test_split_failed_write(void **state)
{
	struct fix *f = *state;
	struct td_aio_stats st;
	int ro;
	unsigned i;

	ro = open(f->path, O_RDONLY | O_CLOEXEC);
	assert_true(ro >= 0);
	for (i = 0; i < 4; i++)
		queue_write(f, i, ro, page(f, i), PAGE, (off_t)i * PAGE);
	wait_done(f, 4);
	st = stats(f);
	assert_int_equal(st.merged, 3);
	for (i = 0; i < 4; i++) {
		assert_int_equal(f->rec[i].calls, 1);
		assert_int_equal(f->rec[i].res, -EBADF);
	}

	/*
	 * The same behind a good read in the same batch: the read goes
	 * down, the bad iocb waits for the next submit, then fails alone.
	 */
	fill_file(f, PAGE);
	queue_read(f, 4, f->fd, page(f, 4), PAGE, 0);
	for (i = 5; i < 8; i++)
		queue_write(f, i, ro, page(f, i), PAGE, (off_t)i * PAGE);
	wait_done(f, 8);
	assert_int_equal(f->rec[4].res, PAGE);
	for (i = 5; i < 8; i++) {
		assert_int_equal(f->rec[i].calls, 1);
		assert_int_equal(f->rec[i].res, -EBADF);
	}

	/* The queue still merges afterwards. */
	for (i = 8; i < 12; i++)
		queue_write(f, i, f->fd, page(f, i), PAGE, (off_t)i * PAGE);
	wait_done(f, 12);
	assert_int_equal(stats(f).merged, st.merged + 2 + 3);
	for (i = 8; i < 12; i++)
		assert_int_equal(f->rec[i].res, PAGE);
	close(ro);
}

static void test_fsync(void **state)
{
	struct fix *f = *state;

	memset(page(f, 0), 's', PAGE);
	queue_write(f, 0, f->fd, page(f, 0), PAGE, 0);
	wait_done(f, 1);
	td_prep_fsync(&f->t[1], f->fd, rec_cb, &f->rec[1]);
	td_queue_tiocb(&f->drv, &f->t[1]);
	wait_done(f, 2);
	assert_int_equal(f->rec[1].calls, 1);
	assert_int_equal(f->rec[1].res, 0);
	assert_int_equal(stats(f).merged, 0);
}

/*
 * TD_OPEN_UNSAFE: an fsync completes from the loop, once, with 0, and
 * never reaches the kernel; reads and writes still do.
 */
static void test_fsync_unsafe(void **state)
{
	struct fix *f = *state;
	struct td_aio_stats before;

	f->drv.flags = TD_OPEN_UNSAFE;
	memset(page(f, 0), 'u', PAGE);
	queue_write(f, 0, f->fd, page(f, 0), PAGE, 0);
	wait_done(f, 1);
	before = stats(f);
	td_prep_fsync(&f->t[1], f->fd, rec_cb, &f->rec[1]);
	td_queue_tiocb(&f->drv, &f->t[1]);
	/* Not inside td_queue_tiocb: the driver may hold state there. */
	assert_int_equal(f->rec[1].calls, 0);
	assert_int_equal(td_aio_queue_inflight(f->e->aioq), 1);
	wait_done(f, 2);
	assert_int_equal(f->rec[1].calls, 1);
	assert_int_equal(f->rec[1].res, 0);
	assert_int_equal(stats(f).submitted, before.submitted);
	check_file(f, 0, page(f, 0), PAGE);
}

/*
 * Reads at offsets near the top of off_t (a driver's offset from a
 * corrupt table): no merge, no overflow computing where they end; the
 * kernel reads nothing for any (fuzz-qcow found this with UBSan).
 */
static void test_huge_offsets(void **state)
{
	struct fix *f = *state;
	long long top = LLONG_MAX - PAGE + 1;

	queue_read(f, 0, f->fd, page(f, 0), PAGE, top - PAGE);
	queue_read(f, 1, f->fd, page(f, 1), PAGE, top);
	queue_read(f, 2, f->fd, page(f, 2), PAGE, LLONG_MAX - 1);
	wait_done(f, 3);
	assert_true(f->rec[0].res <= 0);
	assert_true(f->rec[1].res <= 0);
	assert_true(f->rec[2].res <= 0);
	assert_int_equal(stats(f).merged, 0);
}

/* A full batch is submitted at once, without waiting for the loop. */
static void test_full_batch_submits(void **state)
{
	struct fix *f = *state;
	const unsigned n = 70;
	struct td_aio_stats st;
	unsigned i;

	assert_true(n <= NT);
	for (i = 0; i < n; i++) {
		queue_read(f, i, f->fd, page(f, i), 512,
			   (off_t)i * 2 * 512);	/* gaps: no merging */
		st = stats(f);
		if (i < 63)
			assert_int_equal(st.submitted, 0);
	}
	st = stats(f);
	assert_int_equal(st.batches, 1);
	assert_int_equal(st.submitted, 64);
	assert_int_equal(td_aio_queue_inflight(f->e->aioq), n);
	wait_done(f, n);
	st = stats(f);
	assert_int_equal(st.submitted, n);
	assert_int_equal(st.completed, n);
	for (i = 0; i < n; i++)
		assert_int_equal(f->rec[i].res, 512);
}

/* A callback may queue the next tiocb (as a driver's completion does). */
static void chain_cb(struct tiocb *t, long res)
{
	struct fix *f = F;
	unsigned i = (unsigned)(t - f->t);

	rec_cb(t, res);
	if (f->chain_left) {
		f->chain_left--;
		f->chain_off += PAGE;
		memset(page(f, i + 1), 'a' + (int)i, PAGE);
		td_prep_write(&f->t[i + 1], f->fd, page(f, i + 1), PAGE,
			      f->chain_off, chain_cb, &f->rec[i + 1]);
		td_queue_tiocb(&f->drv, &f->t[i + 1]);
	}
}

static void test_callback_requeues(void **state)
{
	struct fix *f = *state;
	unsigned i;

	f->chain_left = 9;
	memset(page(f, 0), 'z', PAGE);
	td_prep_write(&f->t[0], f->fd, page(f, 0), PAGE, 0, chain_cb,
		      &f->rec[0]);
	td_queue_tiocb(&f->drv, &f->t[0]);
	wait_done(f, 10);
	for (i = 0; i < 10; i++) {
		assert_int_equal(f->rec[i].res, PAGE);
		assert_int_equal(f->rec[i].seq, i + 1);
		check_file(f, (off_t)i * PAGE, page(f, i), PAGE);
	}
}

/* The same merging with O_DIRECT, as the aio driver uses it. */
static void test_merge_odirect(void **state)
{
	struct fix *f = *state;
	int fd;
	unsigned i;

	fd = open(f->path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (fd < 0 && errno == EINVAL) {
		print_message("%s: no O_DIRECT here\n", unit_tmpdir());
		skip();
	}
	assert_true(fd >= 0);
	for (i = 0; i < 4; i++) {
		memset(page(f, i), 'd' + (int)i, PAGE);
		queue_write(f, i, fd, page(f, i), PAGE, (off_t)(i + 1) * PAGE);
	}
	wait_done(f, 4);
	for (i = 4; i < 8; i++)
		queue_read(f, i, fd, page(f, i), PAGE, (off_t)(i - 3) * PAGE);
	wait_done(f, 8);
	assert_int_equal(stats(f).merged, 6);
	for (i = 0; i < 8; i++)
		assert_int_equal(f->rec[i].res, PAGE);
	for (i = 0; i < 4; i++)
		assert_memory_equal(page(f, i), page(f, i + 4), PAGE);
	close(fd);
}

#define HOLD_US		2000	/* queued this long before the submit */
#define NSPLIT		6	/* tiocbs: 3 alone, then 3 contiguous */

/*
 * Each tiocb's wait (queue to io_submit) and disk time (io_submit to its
 * event reaped) fit in its own life (queue to callback), and the wait
 * holds the time it sat queued: with a real aio queue on a real file.
 */
static void test_time_split(void **state)
{
	struct fix *f = *state;
	struct td_aio_stats st;
	uint64_t t0, t1, life = 0;
	unsigned i;

	fill_file(f, FILE_BYTES);
	t0 = td_now_ns();
	for (i = 0; i < NSPLIT; i++) {
		off_t off = i < NSPLIT / 2 ? (off_t)(2 * i + 1) * PAGE :
			    (off_t)(16 + i) * PAGE;

		queue_read(f, i, f->fd, page(f, i), PAGE, off);
	}
	usleep(HOLD_US);
	td_aio_queue_submit(f->e->aioq);
	t1 = td_now_ns();
	st = stats(f);
	assert_int_equal(st.waited, NSPLIT);
	assert_int_equal(st.merged, NSPLIT / 2 - 1);
	assert_int_equal(st.submitted, NSPLIT - (NSPLIT / 2 - 1));
	assert_int_equal(st.batches, 1);
	/* Each waited from its queueing (t0's clock read) to the submit. */
	assert_true(st.wait_ns >= (uint64_t)NSPLIT * HOLD_US * 1000);
	assert_true(st.wait_ns <= (uint64_t)NSPLIT * (t1 - t0));
	wait_done(f, NSPLIT);
	st = stats(f);
	assert_int_equal(st.reaped, NSPLIT);
	assert_true(st.reaps >= 1 && st.reaps <= NSPLIT);
	assert_true(st.disk_ns > 0);
	for (i = 0; i < NSPLIT; i++) {
		assert_int_equal(f->rec[i].res, PAGE);
		assert_true(f->rec[i].done_ns >= t1);
		life += f->rec[i].done_ns - t0;
	}
	assert_true(st.wait_ns + st.disk_ns <= life);
}

/*
 * td_aio_stats_add sums every counter: a field added to the struct and
 * not to the sum fails here.  The struct is all uint64_t counters.
 */
static void test_stats_add(void **state)
{
	enum { N = sizeof(struct td_aio_stats) / sizeof(uint64_t) };
	uint64_t a[N], b[N];
	struct td_aio_stats sum, st;
	unsigned i;

	(void)state;
	_Static_assert(sizeof(struct td_aio_stats) % sizeof(uint64_t) == 0,
		       "td_aio_stats is uint64_t counters");
	for (i = 0; i < N; i++) {
		a[i] = 1000 + i;
		b[i] = (uint64_t)1 << (i + 20);
	}
	memcpy(&sum, a, sizeof(sum));
	memcpy(&st, b, sizeof(st));
	td_aio_stats_add(&sum, &st);
	memcpy(a, &sum, sizeof(sum));
	for (i = 0; i < N; i++)
		assert_int_equal(a[i], 1000 + i + ((uint64_t)1 << (i + 20)));
}

#define T(fn)	cmocka_unit_test_setup_teardown(fn, fix_setup, fix_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_engine_new),
		T(test_write_then_read),
		T(test_merge_contiguous_writes),
		T(test_merge_contiguous_reads),
		T(test_merge_limit),
		T(test_merge_byte_limit),
		T(test_no_merge),
		T(test_split_short_read),
		T(test_split_failed_write),
		T(test_fsync),
		T(test_fsync_unsafe),
		T(test_huge_offsets),
		T(test_full_batch_submits),
		T(test_callback_requeues),
		T(test_merge_odirect),
		T(test_time_split),
		cmocka_unit_test(test_stats_add),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
