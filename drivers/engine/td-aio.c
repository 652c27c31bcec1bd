/* SPDX-License-Identifier: MIT */
/*
 * The libaio queue.  Drivers queue prepared tiocbs; the queue submits them
 * in batches (when a batch is full, and before the loop sleeps), merging
 * runs of contiguous reads or writes on the same fd into one vectored
 * iocb.  Completions arrive through an eventfd watched by the loop.
 *
 * A merged iocb that fails or completes short is split again: every piece
 * is resubmitted alone, so each request gets its own precise result.
 *
 * Each tiocb's time is split (struct td_aio_stats) with one clock read
 * per io_submit() and per io_getevents() that returns events, never one
 * per tiocb: the queueing stamp reuses the caller's last clock read.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <tapfs/engine.h>
#include <tapfs/lock.h>
#include <tapfs/log.h>

#include "td-image.h"

#define TD_AIO_BATCH		64
#define TD_AIO_EAGAIN_MS	1

struct td_aio_iov {
	struct iovec iov[TD_AIO_MAX_MERGE];
};

struct td_aio_queue {
	io_context_t	 ctx;
	int		 efd;
	unsigned	 depth;
	unsigned	 inflight;	/* iocbs in the kernel */
	struct tiocb	*head, *tail;	/* pending, FIFO */
	unsigned	 npending;
	/* fsyncs of TD_OPEN_UNSAFE images, completed from the loop */
	struct tiocb	*skip_head, *skip_tail;
	unsigned	 nskipped;
	struct td_pool	 iovs;		/* one per merged iocb in flight */
	struct td_loop	*loop;
	struct td_event	 ev;
	struct td_hook	 hook;
	struct td_timer	 again;		/* io_submit said EAGAIN */
	struct td_aio_stats stats;
	struct io_event	 events[TD_AIO_BATCH];
	struct iocb	*batch[TD_AIO_BATCH];
};

/*
 * Complete t with 0 from the loop without handing it to the kernel (an
 * fsync of a TD_OPEN_UNSAFE image): not from here, as the kernel's
 * completions, but at the loop's next turn: it is woken for it.
 */
void td_aio_queue_complete_later(struct td_aio_queue *q, struct tiocb *t)
{
	uint64_t one = 1;

	t->next = NULL;
	if (q->skip_tail)
		q->skip_tail->next = t;
	else
		q->skip_head = t;
	q->skip_tail = t;
	q->nskipped++;
	if (write(q->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		td_log(TD_LOG_ERR, "aio eventfd write: %m");
}

/* Complete the skipped fsyncs queued so far (not those they queue). */
static void td_aio_complete_skipped(struct td_aio_queue *q)
{
	struct tiocb *t = q->skip_head;

	q->skip_head = q->skip_tail = NULL;
	while (t) {
		struct tiocb *n = t->next;

		q->nskipped--;
		t->next = NULL;
		t->cb(t, 0);
		t = n;
	}
}

static bool tiocb_is_rw(const struct tiocb *t)
{
	return t->iocb.aio_lio_opcode == IO_CMD_PREAD ||
	       t->iocb.aio_lio_opcode == IO_CMD_PWRITE;
}

/* Byte length of a tiocb that is still plain (not vectored). */
static size_t tiocb_len(const struct tiocb *t)
{
	return t->iocb.u.c.nbytes;
}

static void td_aio_push_front(struct td_aio_queue *q, struct tiocb *t)
{
	t->next = q->head;
	q->head = t;
	if (!q->tail)
		q->tail = t;
	q->npending++;
}

static struct tiocb *td_aio_pop(struct td_aio_queue *q)
{
	struct tiocb *t = q->head;

	if (!t)
		return NULL;
	q->head = t->next;
	if (!q->head)
		q->tail = NULL;
	t->next = NULL;
	assert(q->npending > 0);
	q->npending--;
	return t;
}

void td_aio_queue_add(struct td_aio_queue *q, struct tiocb *t)
{
	t->next = NULL;
	t->stamp_ns = td_recent_ns();
	io_set_eventfd(&t->iocb, q->efd);
	t->iocb.data = t;
	if (q->tail)
		q->tail->next = t;
	else
		q->head = t;
	q->tail = t;
	q->npending++;
	if (q->npending >= TD_AIO_BATCH)
		td_aio_queue_submit(q);
}

/*
 * Fold the pending tiocbs that continue head (same fd and direction,
 * contiguous offsets) into one vectored iocb.
 */
static void td_aio_merge(struct td_aio_queue *q, struct tiocb *head)
{
	struct tiocb *last = head, *n;
	struct td_aio_iov *v;
	size_t bytes;
	long long end;
	unsigned i;
	short op;

	if (head->nomerge || !tiocb_is_rw(head))
		return;
	/* An offset a driver got from a corrupt table may be near the top:
	 * no end to merge at (the kernel refuses the I/O itself). */
	if (head->iocb.u.c.offset < 0 || head->iocb.u.c.offset >
	    LLONG_MAX - (long long)tiocb_len(head) - TD_AIO_MERGE_BYTES)
		return;
	n = q->head;
	end = head->iocb.u.c.offset + (long long)tiocb_len(head);
	bytes = tiocb_len(head);
	if (!n || n->nomerge || n->iocb.aio_fildes != head->iocb.aio_fildes ||
	    n->iocb.aio_lio_opcode != head->iocb.aio_lio_opcode ||
	    n->iocb.u.c.offset != end ||
	    bytes + tiocb_len(n) > TD_AIO_MERGE_BYTES)
		return;
	v = td_pool_get(&q->iovs);
	if (!v)
		return;
	op = head->iocb.aio_lio_opcode;
	v->iov[0].iov_base = head->iocb.u.c.buf;
	v->iov[0].iov_len = tiocb_len(head);
	i = 1;
	while ((n = q->head) && i < TD_AIO_MAX_MERGE && !n->nomerge &&
	       n->iocb.aio_fildes == head->iocb.aio_fildes &&
	       n->iocb.aio_lio_opcode == op && n->iocb.u.c.offset == end &&
	       bytes + tiocb_len(n) <= TD_AIO_MERGE_BYTES) {
		td_aio_pop(q);
		bytes += tiocb_len(n);
		v->iov[i].iov_base = n->iocb.u.c.buf;
		v->iov[i].iov_len = tiocb_len(n);
		end += (long long)tiocb_len(n);
		last->merged = n;
		last = n;
		i++;
	}
	head->merge_count = i;
	q->stats.merged += i - 1;
	if (op == IO_CMD_PREAD)
		io_prep_preadv(&head->iocb, head->iocb.aio_fildes, v->iov,
			       (int)i, head->iocb.u.c.offset);
	else
		io_prep_pwritev(&head->iocb, head->iocb.aio_fildes, v->iov,
				(int)i, head->iocb.u.c.offset);
	io_set_eventfd(&head->iocb, q->efd);
	head->iocb.data = head;
}

/* Turn a merged head back into a plain iocb for its first piece. */
static void td_aio_unmerge_head(struct td_aio_queue *q, struct tiocb *head)
{
	struct td_aio_iov *v = (struct td_aio_iov *)head->iocb.u.c.buf;
	short op = head->iocb.aio_lio_opcode == IO_CMD_PREADV ?
		   IO_CMD_PREAD : IO_CMD_PWRITE;
	long long off = head->iocb.u.c.offset;
	int fd = head->iocb.aio_fildes;

	if (op == IO_CMD_PREAD)
		io_prep_pread(&head->iocb, fd, v->iov[0].iov_base,
			      v->iov[0].iov_len, off);
	else
		io_prep_pwrite(&head->iocb, fd, v->iov[0].iov_base,
			       v->iov[0].iov_len, off);
	io_set_eventfd(&head->iocb, q->efd);
	head->iocb.data = head;
	td_pool_put(&q->iovs, v);
}

/*
 * Requeue every piece of a failed merged iocb, alone, at the front; each
 * waits again from now (the reap's clock read).
 */
static void td_aio_split(struct td_aio_queue *q, struct tiocb *head)
{
	uint64_t now = td_recent_ns();
	struct tiocb *pieces[TD_AIO_MAX_MERGE];
	struct tiocb *t;
	unsigned n = 0;

	td_aio_unmerge_head(q, head);
	for (t = head; t; t = t->merged)
		pieces[n++] = t;
	while (n--) {
		t = pieces[n];
		t->merged = NULL;
		t->merge_count = 1;
		t->nomerge = true;
		t->stamp_ns = now;
		td_aio_push_front(q, t);
	}
}

static void td_aio_complete(struct td_aio_queue *q, struct tiocb *t, long res)
{
	struct tiocb *n;
	size_t total = 0;

	if (t->merge_count <= 1) {
		t->cb(t, res);
		return;
	}
	for (n = t; n; n = n->merged)
		total += n == t ?
			 ((struct td_aio_iov *)t->iocb.u.c.buf)->iov[0].iov_len :
			 tiocb_len(n);
	if (res < 0 || (size_t)res != total) {
		td_aio_split(q, t);
		return;
	}
	td_aio_unmerge_head(q, t);
	while (t) {
		n = t->merged;
		t->merged = NULL;
		t->merge_count = 1;
		t->cb(t, (long)tiocb_len(t));
		t = n;
	}
}

/* Pieces of a tiocb handed to the kernel: itself and those merged in. */
static unsigned tiocb_pieces(const struct tiocb *t)
{
	return t->merge_count > 1 ? t->merge_count : 1;
}

/* The kernel took t at now: its pieces' wait ends, its disk time starts. */
static void td_aio_account_submit(struct td_aio_queue *q, struct tiocb *t,
				  uint64_t now)
{
	struct tiocb *p;

	for (p = t; p; p = p->merged)
		q->stats.wait_ns += now - p->stamp_ns;
	q->stats.waited += tiocb_pieces(t);
	t->stamp_ns = now;
}

void td_aio_queue_submit(struct td_aio_queue *q)
{
	while (q->head && q->inflight < q->depth) {
		unsigned room = q->depth - q->inflight, n = 0, i;
		uint64_t now;
		int rc;

		if (room > TD_AIO_BATCH)
			room = TD_AIO_BATCH;
		while (n < room && q->head) {
			struct tiocb *t = td_aio_pop(q);

			if (t->merge_count <= 1)
				td_aio_merge(q, t);
			q->batch[n++] = &t->iocb;
		}
		now = td_now_ns();
		rc = io_submit(q->ctx, (long)n, q->batch);
		if (rc < 0 && rc != -EAGAIN) {
			/* The first iocb is bad; fail it, retry the rest. */
			struct tiocb *bad = q->batch[0]->data;

			for (i = n; i-- > 1;)
				td_aio_push_front(q, q->batch[i]->data);
			td_aio_complete(q, bad, rc);
			continue;
		}
		if (rc < 0)
			rc = 0;
		q->stats.batches++;
		q->stats.submitted += (unsigned)rc;
		assert((unsigned)rc <= n);
		q->inflight += (unsigned)rc;
		assert(q->inflight <= q->depth);
		for (i = 0; i < (unsigned)rc; i++)
			td_aio_account_submit(q, q->batch[i]->data, now);
		for (i = n; i-- > (unsigned)rc;)
			td_aio_push_front(q, q->batch[i]->data);
		if ((unsigned)rc < n) {
			/* Kernel ring full: wait for completions or a tick. */
			if (!q->inflight)
				td_timer_arm(q->loop, &q->again,
					     TD_AIO_EAGAIN_MS);
			break;
		}
	}
}

static void td_aio_reap(struct td_aio_queue *q)
{
	struct timespec zero = { 0, 0 };
	uint64_t now;
	int n, i;

	do {
		n = io_getevents(q->ctx, 0, TD_AIO_BATCH, q->events, &zero);
		if (n < 0) {
			if (n == -EINTR)
				continue;
			td_log(TD_LOG_ERR, "io_getevents: %s", strerror(-n));
			return;
		}
		assert((unsigned)n <= q->inflight);
		if (!n)
			break;
		now = td_now_ns();
		q->inflight -= (unsigned)n;
		q->stats.completed += (unsigned)n;
		q->stats.reaps++;
		for (i = 0; i < n; i++) {
			struct tiocb *t = q->events[i].data;
			unsigned pieces = tiocb_pieces(t);

			q->stats.disk_ns += (now - t->stamp_ns) * pieces;
			q->stats.reaped += pieces;
			td_aio_complete(q, t, (long)q->events[i].res);
		}
	} while (n == TD_AIO_BATCH);
}

static void td_aio_event(struct td_event *ev, uint32_t events)
{
	struct td_aio_queue *q = ev->arg;
	uint64_t count;

	(void)events;
	if (read(q->efd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		td_log(TD_LOG_ERR, "aio eventfd read: %m");
	td_aio_reap(q);
	td_aio_complete_skipped(q);
	td_aio_queue_submit(q);
}

static void td_aio_hook(struct td_hook *h)
{
	td_aio_queue_submit(h->arg);
}

static void td_aio_again(struct td_timer *t)
{
	td_aio_queue_submit(t->arg);
}

struct td_aio_queue *td_aio_queue_new(struct td_loop *loop, unsigned depth)
{
	struct td_aio_queue *q = calloc(1, sizeof(*q));
	int err;

	if (!q)
		return NULL;
	q->depth = depth ? depth : TD_AIO_DEPTH;
	q->loop = loop;
	q->efd = -1;
	err = io_setup((int)q->depth, &q->ctx);
	if (err) {
		td_log(TD_LOG_ERR, "io_setup(%u): %s (see "
		       "/proc/sys/fs/aio-max-nr)", q->depth, strerror(-err));
		goto fail;
	}
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd < 0) {
		td_log(TD_LOG_ERR, "eventfd: %m");
		goto fail;
	}
	if (td_pool_init(&q->iovs, q->depth, sizeof(struct td_aio_iov), 64))
		goto fail;
	q->ev.fd = q->efd;
	q->ev.events = EPOLLIN;
	q->ev.cb = td_aio_event;
	q->ev.arg = q;
	err = td_loop_add_event(loop, &q->ev);
	if (err) {
		td_log(TD_LOG_ERR, "aio eventfd: %s", strerror(-err));
		goto fail;
	}
	q->hook.cb = td_aio_hook;
	q->hook.arg = q;
	td_loop_add_hook(loop, &q->hook);
	td_timer_init(&q->again, td_aio_again, q);
	return q;
fail:
	td_pool_fini(&q->iovs);
	if (q->efd >= 0)
		close(q->efd);
	if (q->ctx)
		io_destroy(q->ctx);
	free(q);
	return NULL;
}

void td_aio_queue_free(struct td_aio_queue *q)
{
	if (!q)
		return;
	td_timer_cancel(&q->again);
	td_loop_del_hook(&q->hook);
	td_loop_del_event(q->loop, &q->ev);
	io_destroy(q->ctx);
	close(q->efd);
	td_pool_fini(&q->iovs);
	free(q);
}

unsigned td_aio_queue_inflight(const struct td_aio_queue *q)
{
	return q->inflight + q->npending + q->nskipped;
}

void td_aio_queue_get_stats(const struct td_aio_queue *q,
			    struct td_aio_stats *st)
{
	*st = q->stats;
}

void td_aio_stats_add(struct td_aio_stats *sum,
		      const struct td_aio_stats *st)
{
	sum->submitted += st->submitted;
	sum->merged += st->merged;
	sum->batches += st->batches;
	sum->completed += st->completed;
	sum->reaps += st->reaps;
	sum->waited += st->waited;
	sum->wait_ns += st->wait_ns;
	sum->reaped += st->reaped;
	sum->disk_ns += st->disk_ns;
}

struct td_engine *td_engine_new(void)
{
	struct td_engine *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->loop = td_loop_new();
	if (!e->loop)
		goto fail;
	e->aioq = td_aio_queue_new(e->loop, TD_AIO_DEPTH);
	if (!e->aioq)
		goto fail;
	e->locks = td_lock_table_new();
	if (!e->locks)
		goto fail;
	td_list_init(&e->shared_images);
	td_list_init(&e->options);
	td_list_init(&e->driver_states);
	e->peer = e;
	return e;
fail:
	td_engine_free(e);
	return NULL;
}

void td_engine_join(struct td_engine *e, struct td_engine *first)
{
	td_lock_table_free(e->locks);
	e->locks = td_lock_table_get(first->locks);
	e->peer = first->peer;
	first->peer = e;
}

void td_engine_free(struct td_engine *e)
{
	struct td_engine *p;

	if (!e)
		return;
	td_engine_drivers_fini(e);
	if (e->peer) {
		for (p = e; p->peer != e; p = p->peer)
			;
		p->peer = e->peer;
	}
	td_lock_table_free(e->locks);
	td_aio_queue_free(e->aioq);
	td_loop_free(e->loop);
	free(e);
}
