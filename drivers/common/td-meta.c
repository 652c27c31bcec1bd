/* SPDX-License-Identifier: MIT */
/*
 * td-meta: metadata I/O, group-commit sequencers and parked requests for
 * the asynchronous format drivers (see td-meta.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <tapfs/log.h>

#include "td-grace.h"
#include "td-meta.h"

/* One I/O in flight: the control block and what its completion needs. */
struct meta_io {
	struct tiocb	 tiocb;
	struct td_meta	*m;
	td_meta_cb_t	 cb;		/* NULL: a request's (tiocb.treq) */
	void		*arg;
	char		*buf;
	size_t		 len;
	bool		 short_ok;	/* a short read is zeros */
	struct td_grace_epoch *ep;	/* ended on completion */
};

static void meta_barrier_issue(struct td_meta_seq *q)
{
	td_meta_seq_io(q, TD_OP_FLUSH, NULL, 0, 0);
}

static void meta_barrier_failed(struct td_meta_seq *q, int err)
{
	td_log(TD_LOG_ERR, "%s: fsync: %s", q->m->drv->name, strerror(-err));
}

int td_meta_init(struct td_meta *m, td_driver_t *drv, int fd, void *ctx,
		 td_meta_dispatch_t dispatch, unsigned nios, unsigned nreqs)
{
	m->drv = drv;
	m->fd = fd;
	m->ctx = ctx;
	m->dispatch = dispatch;
	td_meta_seq_init(&m->barrier, m, meta_barrier_issue,
			 meta_barrier_failed);
	if (td_pool_init(&m->ios, nios, sizeof(struct meta_io),
			 sizeof(void *)) ||
	    td_pool_init(&m->reqs, nreqs, sizeof(struct td_meta_req),
			 sizeof(void *))) {
		td_meta_fini(m);
		return -ENOMEM;
	}
	return 0;
}

void td_meta_fini(struct td_meta *m)
{
	td_pool_fini(&m->ios);
	td_pool_fini(&m->reqs);
}

int td_meta_refuse(td_driver_t *drv, int rc, const char *why)
{
	td_msgf(drv->error, sizeof(drv->error), "%s", why);
	return rc;
}

/* ---- I/O ------------------------------------------------------------ */

/* The result of an I/O of len bytes (0: an fsync): 0 or -errno. */
static int meta_io_result(struct meta_io *io, long res)
{
	if (res < 0)
		return (int)res;
	if ((size_t)res == io->len || !io->len)
		return 0;
	if (!io->short_ok)
		return -EIO;
	memset(io->buf + res, 0, io->len - (size_t)res);
	return 0;
}

static void meta_io_done(struct tiocb *t, long res)
{
	struct meta_io *io = td_container_of(t, struct meta_io, tiocb);
	struct td_meta *m = io->m;
	struct td_grace_epoch *ep = io->ep;
	td_meta_cb_t cb = io->cb;
	td_request_t treq = t->treq;
	void *arg = io->arg;
	int err = meta_io_result(io, res);

	/* Nothing of io is read after the put. */
	td_pool_put(&m->ios, io);
	if (ep)
		td_grace_end(ep);
	if (cb)
		cb(m->ctx, arg, err);
	else
		td_complete_request(treq, err);
}

/* A control block for an I/O, or NULL (the pool is empty). */
static struct meta_io *meta_io_get(struct td_meta *m, td_meta_cb_t cb,
				   void *arg, void *buf, size_t len,
				   struct td_grace_epoch *ep)
{
	struct meta_io *io = td_pool_get(&m->ios);

	if (!io)
		return NULL;
	memset(io, 0, sizeof(*io));
	io->m = m;
	io->cb = cb;
	io->arg = arg;
	io->buf = buf;
	io->len = len;
	io->ep = ep;
	return io;
}

static void meta_io_queue(struct meta_io *io, enum td_op op, uint64_t off)
{
	struct td_meta *m = io->m;
	struct tiocb *t = &io->tiocb;

	if (op == TD_OP_READ)
		td_prep_read(t, m->fd, io->buf, io->len, (off_t)off,
			     meta_io_done, io);
	else if (op == TD_OP_WRITE)
		td_prep_write(t, m->fd, io->buf, io->len, (off_t)off,
			      meta_io_done, io);
	else
		td_prep_fsync(t, m->fd, meta_io_done, io);
	td_queue_tiocb(m->drv, t);
}

static void meta_io_ep(struct td_meta *m, struct td_grace_epoch *ep,
		       enum td_op op, void *buf, size_t len, uint64_t off,
		       bool short_ok, td_meta_cb_t cb, void *arg)
{
	struct meta_io *io = meta_io_get(m, cb, arg, buf, len, ep);

	if (!io) {
		if (ep)
			td_grace_end(ep);
		cb(m->ctx, arg, -EBUSY);
		return;
	}
	io->short_ok = short_ok;
	meta_io_queue(io, op, off);
}

void td_meta_io(struct td_meta *m, enum td_op op, void *buf, size_t len,
		uint64_t off, td_meta_cb_t cb, void *arg)
{
	meta_io_ep(m, NULL, op, buf, len, off, false, cb, arg);
}

void td_meta_read_data(struct td_meta *m, struct td_grace_epoch *ep,
		       void *buf, size_t len, uint64_t off, td_meta_cb_t cb,
		       void *arg)
{
	meta_io_ep(m, ep, TD_OP_READ, buf, len, off, true, cb, arg);
}

void td_meta_request_io(struct td_meta *m, td_request_t treq, uint64_t off,
			struct td_grace_epoch *ep)
{
	size_t len = treq.op == TD_OP_FLUSH ? 0 :
		     (size_t)treq.secs << TD_SECTOR_SHIFT;
	struct meta_io *io = meta_io_get(m, NULL, NULL, treq.buf, len, ep);

	if (!io) {
		if (ep)
			td_grace_end(ep);
		td_complete_request(treq, -EBUSY);	/* the VBD retries */
		return;
	}
	io->short_ok = treq.op == TD_OP_READ;
	io->tiocb.treq = treq;
	meta_io_queue(io, treq.op, off);
}

/* ---- sequencers ----------------------------------------------------- */

void td_meta_seq_init(struct td_meta_seq *q, struct td_meta *m,
		      void (*issue)(struct td_meta_seq *q),
		      void (*failed)(struct td_meta_seq *q, int err))
{
	q->m = m;
	q->busy = false;
	td_list_init(&q->pending);
	td_list_init(&q->inflight);
	q->issue = issue;
	q->failed = failed;
}

static void meta_seq_kick(struct td_meta_seq *q)
{
	if (q->busy || td_list_empty(&q->pending))
		return;
	q->busy = true;
	while (!td_list_empty(&q->pending)) {
		struct td_list *n = q->pending.next;

		td_list_del(n);
		td_list_add_tail(n, &q->inflight);
	}
	q->issue(q);
}

void td_meta_seq_wait(struct td_meta_seq *q, struct td_meta_wait *w,
		      td_meta_wait_fn done)
{
	w->done = done;
	td_list_add_tail(&w->link, &q->pending);
	meta_seq_kick(q);
}

void td_meta_seq_done(struct td_meta_seq *q, int err)
{
	struct td_list covered;

	/*
	 * Off the sequencer first: a completion may wait on q again and
	 * start its next write, whose waiters this one must not complete.
	 */
	td_list_move(&covered, &q->inflight);
	q->busy = false;
	while (!td_list_empty(&covered)) {
		struct td_meta_wait *w = td_container_of(covered.next,
							 struct td_meta_wait,
							 link);

		td_list_del(&w->link);
		w->done(w, err);
	}
	meta_seq_kick(q);
}

static void meta_seq_io_done(void *ctx, void *arg, int err)
{
	struct td_meta_seq *q = arg;

	(void)ctx;
	if (err && q->failed)
		q->failed(q, err);
	td_meta_seq_done(q, err);
}

void td_meta_seq_io(struct td_meta_seq *q, enum td_op op, void *buf,
		    size_t len, uint64_t off)
{
	td_meta_io(q->m, op, buf, len, off, meta_seq_io_done, q);
}

/* ---- requests waiting for metadata ---------------------------------- */

struct td_meta_req *td_meta_req_get(struct td_meta *m, td_request_t treq)
{
	struct td_meta_req *r = td_pool_get(&m->reqs);

	if (!r) {
		td_complete_request(treq, -EBUSY);
		return NULL;
	}
	memset(r, 0, sizeof(*r));
	r->m = m;
	r->treq = treq;
	return r;
}

void td_meta_req_complete(struct td_meta_req *r, int err)
{
	td_request_t treq = r->treq;

	td_pool_put(&r->m->reqs, r);
	td_complete_request(treq, err);
}

void td_meta_req_done(struct td_meta_wait *w, int err)
{
	td_meta_req_complete(td_meta_req_of(w), err);
}

void td_meta_req_wait(struct td_meta *m, struct td_meta_seq *q,
		      td_request_t treq)
{
	struct td_meta_req *r = td_meta_req_get(m, treq);

	if (r)
		td_meta_seq_wait(q, &r->wait, td_meta_req_done);
}

bool td_meta_park(struct td_meta *m, struct td_list *list,
		  td_request_t treq)
{
	struct td_meta_req *r = td_meta_req_get(m, treq);

	if (!r)
		return false;
	td_list_add_tail(&r->wait.link, list);
	return true;
}

void td_meta_wake(struct td_meta *m, struct td_list *list, int err)
{
	struct td_list todo;

	td_list_move(&todo, list);
	while (!td_list_empty(&todo)) {
		struct td_meta_req *r = td_container_of(todo.next,
							struct td_meta_req,
							wait.link);
		td_request_t treq = r->treq;

		td_list_del(&r->wait.link);
		td_pool_put(&m->reqs, r);
		if (err)
			td_complete_request(treq, err);
		else
			m->dispatch(m->ctx, treq);
	}
}

/* ---- splitting requests, runs of segments --------------------------- */

void td_meta_split(td_request_t treq, uint64_t span,
		   void (*fn)(void *ctx, td_request_t piece), void *ctx)
{
	uint32_t done = 0;

	while (done < treq.secs) {
		td_request_t piece = treq;
		uint64_t sec = treq.sec + done;
		uint64_t n = span - sec % span;

		if (n > treq.secs - done)
			n = treq.secs - done;
		piece.sec = sec;
		piece.secs = (uint32_t)n;
		if (piece.buf)		/* a discard has none */
			piece.buf = treq.buf +
				    ((size_t)done << TD_SECTOR_SHIFT);
		done += (uint32_t)n;
		fn(ctx, piece);
	}
}

void td_meta_run_flush(struct td_meta_run *r)
{
	switch (r->kind) {
	case TD_RUN_DATA:
		td_meta_request_io(r->m, r->treq, r->host, r->grace ?
				   td_grace_begin(r->grace) : NULL);
		break;
	case TD_RUN_ZERO:
		memset(r->treq.buf, 0, (size_t)r->treq.secs << TD_SECTOR_SHIFT);
		td_complete_request(r->treq, 0);
		break;
	case TD_RUN_FORWARD:
		td_forward_request(r->treq);
		break;
	case TD_RUN_NONE:
		break;
	}
	r->kind = TD_RUN_NONE;
}

void td_meta_run_add(struct td_meta_run *r, enum td_meta_run_kind kind,
		     td_request_t seg, uint64_t host)
{
	if (r->kind == kind && r->treq.sec + r->treq.secs == seg.sec &&
	    (kind != TD_RUN_DATA || r->host + ((uint64_t)r->treq.secs <<
					       TD_SECTOR_SHIFT) == host)) {
		r->treq.secs += seg.secs;
		return;
	}
	td_meta_run_flush(r);
	r->kind = kind;
	r->treq = seg;
	r->host = host;
}
