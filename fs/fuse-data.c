/* SPDX-License-Identifier: MIT */
/*
 * The data path of a VBD file: a FUSE READ, WRITE, FSYNC or FALLOCATE
 * becomes a vbd_request (vbd_submit), and its completion callback sends
 * the reply.  No thread per request, no blocking I/O.
 *
 * Buffer path.  A FUSE WRITE's payload sits FUSE_WRITE_HDR bytes after the
 * start of the request, so the receive buffer is placed that many bytes
 * before a page boundary: the payload lands page-aligned and a large
 * write goes to O_DIRECT straight from the receive buffer, which the
 * request then keeps until it completes.  Small writes are copied into a
 * small pooled buffer instead, so that receive buffers stay free.  Reads
 * and read-modify-write bounce buffers come from the small or large pool.
 * All pools are allocated at mount; when one runs dry the request waits
 * (FIFO) and the session stops receiving until buffers come back.
 */
#include <assert.h>
#include <errno.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <string.h>
#include <unistd.h>

#include <tapfs/log.h>

#include "fuse-edge.h"

/* libfuse reads up to FUSE_MAX_MAX_PAGES pages + one header page. */
#define LIBFUSE_MAX_PAGES	256
#define FUSE_HDR_PAGE		4096
/* fuse_in_header + fuse_write_in: where a WRITE's payload starts. */
#define FUSE_WRITE_HDR		(sizeof(struct fuse_in_header) + \
				 sizeof(struct fuse_write_in))

_Static_assert(DATA_RECV_HEADROOM == FUSE_HDR_PAGE - FUSE_WRITE_HDR,
	       "fuse-edge.h's headroom is where the receive buffer starts");

#define SMALL_BUF		(64u << 10)
#define NR_SMALL		256
#define NR_LARGE		24
#define NR_RECV			24
#define NR_CTX			512

enum io_kind { IO_READ, IO_WRITE, IO_FLUSH, IO_DISCARD };

/* One FUSE request on a VBD file, from receipt to reply. */
struct io_ctx {
	struct vbd_request	 vreq;
	struct data_loop	*dl;		/* the owner loop's */
	fuse_req_t		 req;
	int			 reply_fd;	/* fuse_reply_fd at receipt */
	uint64_t		 unique;	/* fuse_recv_unique at receipt */
	struct tapfs_vbd	*tv;
	enum io_kind		 kind;
	char			*buf;		/* aligned data or bounce */
	struct td_pool		*buf_pool;	/* where buf came from */
	void			*lent;		/* buf is a ring entry's */
	char			*hold;		/* receive buffer kept */
	const char		*data;		/* write payload */
	size_t			 len;		/* bytes asked for */
	size_t			 need;		/* buffer bytes needed */
	uint32_t		 head;		/* offset in the first unit */
	uint32_t		 unit;		/* the VBD's I/O alignment */
	bool			 zero_copy;
	bool			 abandoned;	/* answered; the I/O is not */
	bool			 replied;	/* the one reply is sent */
	uint64_t		 arrive_ns;	/* read from /dev/fuse */
	struct td_list		 wait;
};

/* ---- data path: buffers ------------------------------------------------ */

static struct td_pool *pool_for(struct data_loop *dl, size_t need)
{
	return need <= SMALL_BUF ? &dl->small_pool : &dl->large_pool;
}

static void io_start(struct io_ctx *c);

static void io_release(struct io_ctx *c)
{
	struct data_loop *dl = c->dl;

	assert(c->replied);
	if (c->buf_pool)
		td_pool_put(c->buf_pool, c->buf);
	if (c->lent)
		fuse_uring_give_back(dl->st, c->lent);
	if (c->hold)
		data_put_recv(dl, c->hold);
	td_pool_put(&dl->ctx_pool, c);

	/* Buffers came back: serve the waiters, in order. */
	while (!td_list_empty(&dl->waiting)) {
		struct io_ctx *w = td_container_of(dl->waiting.next,
						   struct io_ctx, wait);
		struct td_pool *p = pool_for(dl, w->need);

		w->buf = td_pool_get(p);
		if (!w->buf)
			break;
		w->buf_pool = p;
		td_list_del(&w->wait);
		io_start(w);
	}
	/* The session reads /dev/fuse again before the loop sleeps. */
}

/*
 * Keep the current receive buffer for this request (its payload lives
 * there); the next receive takes a fresh one.
 */
static void io_hold_recv(struct io_ctx *c)
{
	struct data_loop *dl = c->dl;

	c->hold = dl->cur;
	dl->cur = NULL;
}

/* Get c->buf, or queue c until one is free.  c->need is set. */
static void io_get_buffer(struct io_ctx *c)
{
	struct data_loop *dl = c->dl;
	struct td_pool *p = pool_for(dl, c->need);

	c->buf = td_list_empty(&dl->waiting) ? td_pool_get(p) : NULL;
	if (c->buf) {
		c->buf_pool = p;
		io_start(c);
		return;
	}
	if (c->data && !c->hold && !c->lent)
		io_hold_recv(c);	/* the payload must outlive this call */
	td_list_add_tail(&c->wait, &dl->waiting);
}

/* ---- data path: completion and submission ------------------------------ */

static void io_done(struct vbd_request *vreq, int err)
{
	struct io_ctx *c = td_container_of(vreq, struct io_ctx, vreq);

	if (c->abandoned) {
		/* Answered when the VBD failed; now the buffer is free. */
		io_release(c);
		return;
	}
	assert(!c->replied);
	c->replied = true;
	fuse_reply_fd = c->reply_fd;
	if (err) {
		fuse_reply_err(c->req, -err);
	} else {
		switch (c->kind) {
		case IO_READ:
			fuse_reply_buf(c->req, c->buf + c->head, c->len);
			break;
		case IO_WRITE:
			fuse_reply_write(c->req, c->len);
			break;
		case IO_FLUSH:
		case IO_DISCARD:
			fuse_reply_err(c->req, 0);
			break;
		}
	}
	vbd_replied(vreq->vbd, vreq);	/* the reply stage ends here */
	io_release(c);
}

/*
 * The kernel's INTERRUPT for c's request (its client got a signal: a
 * killed or timed-out reader of a paused VBD).  A request not yet handed
 * to a driver - waiting for a buffer, or queued on a paused VBD or behind
 * a read-modify-write - is answered EINTR now and forgotten; one in
 * flight completes normally (its buffer is in use).  Runs on the loop.
 */
static void io_interrupt(struct io_ctx *c)
{
	if (c->abandoned)
		return;
	if (!td_list_empty(&c->wait)) {
		td_list_del(&c->wait);
		assert(!c->replied);
		c->replied = true;
		fuse_reply_fd = c->reply_fd;
		fuse_reply_err(c->req, EINTR);
		io_release(c);
		return;
	}
	if (c->vreq.vbd)
		vbd_cancel(c->vreq.vbd, &c->vreq);	/* io_done: EINTR */
}

struct data_loop *data_here(struct fuse_state *st)
{
	return data_loop_here ? data_loop_here : &st->data;
}

/* Interrupt dl's request with that unique: false if dl has none. */
static bool data_interrupt_found(struct data_loop *dl, uint64_t unique)
{
	struct td_pool *p = &dl->ctx_pool;
	unsigned i;

	/* Contexts past fresh were never used. */
	for (i = 0; i < p->fresh; i++) {
		struct io_ctx *c = (struct io_ctx *)(p->mem + i * p->size);

		if (p->out[i] && c->unique == unique && !c->replied) {
			io_interrupt(c);
			return true;
		}
	}
	return false;
}

void data_interrupt(struct data_loop *dl, uint64_t unique)
{
	if (!data_interrupt_found(dl, unique))
		intr_memo_add(&dl->early, unique, td_now_ns());
}

void data_received(struct data_loop *dl, uint64_t unique)
{
	if (intr_memo_empty(&dl->early))
		return;
	if (intr_memo_take(&dl->early, unique, td_now_ns()))
		data_interrupt_found(dl, unique);
}

/*
 * The VBD failed with c's request stuck in the image: the client gets
 * EIO now (and can close the file, so the VBD can be closed); c and its
 * buffers stay reserved until the image gives the request back.
 */
static void io_abandon(struct vbd_request *vreq)
{
	struct io_ctx *c = td_container_of(vreq, struct io_ctx, vreq);

	assert(!c->replied);
	c->replied = true;
	c->abandoned = true;
	if (c->lent)
		fuse_uring_abandon(c->dl->st, c->lent);
	fuse_reply_fd = c->reply_fd;
	fuse_reply_err(c->req, EIO);
}

static void io_start(struct io_ctx *c)
{
	struct vbd_request *v = &c->vreq;

	v->buf = c->buf;
	v->cb = io_done;
	v->abandon = io_abandon;
	v->rmw_len = 0;
	if (c->kind == IO_WRITE && !c->zero_copy) {
		if (c->head || c->len & (c->unit - 1)) {
			v->rmw_data = c->data;
			v->rmw_off = c->head;
			v->rmw_len = (uint32_t)c->len;
		} else {
			memcpy(c->buf, c->data, c->len);
		}
	}
	vbd_submit_at(c->tv->vbd, v, c->arrive_ns);
}

static struct io_ctx *io_new(fuse_req_t req, struct fuse_file_info *fi,
			     enum io_kind kind)
{
	struct data_loop *dl = data_here(fuse_req_fs(req)->fuse);
	struct tapfs_vbd *tv = fh_vbd(fi->fh);
	struct io_ctx *c;

	if (!tv || !tv->vbd) {
		fuse_reply_err(req, EBADF);
		return NULL;
	}
	/* The receive loop only reads a request when a context is free. */
	c = td_pool_get(&dl->ctx_pool);
	if (!c) {
		td_log(TD_LOG_ERR, "request context pool empty");
		fuse_reply_err(req, EAGAIN);
		return NULL;
	}
	memset(c, 0, sizeof(*c));
	c->dl = dl;
	c->req = req;
	c->reply_fd = fuse_reply_fd;
	c->unique = fuse_recv_unique;
	c->tv = tv;
	c->kind = kind;
	/* The queue stage (vbd_stats) includes a wait for a buffer. */
	c->arrive_ns = td_now_ns();
	td_list_init(&c->wait);
	td_list_init(&c->vreq.link);
	/* An INTERRUPT that overtook c acts once c is placed: data_received */
	return c;
}

/* Clamp [off, off+size) to the VBD; returns the byte count (0: EOF). */
static size_t io_clamp(struct tapfs_vbd *tv, off_t off, size_t size)
{
	uint64_t vsize = vbd_size(tv->vbd);

	if (off < 0 || (uint64_t)off >= vsize)
		return 0;
	if (size > vsize - (uint64_t)off)
		size = (size_t)(vsize - (uint64_t)off);
	return size;
}

/*
 * The sectors of [off, off+len), widened to the VBD's I/O alignment (a
 * sector, or 4 KiB on a 4Kn store): the part outside the client's range
 * is read (and for a write, written back) around it.
 */
static void io_set_range(struct io_ctx *c, off_t off, size_t len)
{
	/* A discard is exact (sectors): widened, it would drop neighbours. */
	uint64_t unit = c->kind == IO_DISCARD ? TD_SECTOR_SIZE :
			vbd_io_align(c->tv->vbd);
	uint64_t first = (uint64_t)off & ~(unit - 1);
	uint64_t end = ((uint64_t)off + len + unit - 1) & ~(unit - 1);

	c->len = len;
	c->unit = (uint32_t)unit;
	c->head = (uint32_t)((uint64_t)off - first);
	c->vreq.sec = first >> TD_SECTOR_SHIFT;
	c->vreq.secs = (uint32_t)((end - first) >> TD_SECTOR_SHIFT);
	c->need = (size_t)c->vreq.secs << TD_SECTOR_SHIFT;
}

void data_read(fuse_req_t req, size_t size, off_t off,
	       struct fuse_file_info *fi)
{
	struct tapfs_vbd *tv = fh_vbd(fi->fh);
	struct io_ctx *c;

	if (tv && tv->vbd && !io_clamp(tv, off, size)) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	c = io_new(req, fi, IO_READ);
	if (!c)
		return;
	io_set_range(c, off, io_clamp(tv, off, size));
	c->vreq.op = TD_OP_READ;
	/* -o uring: read into the ring entry the reply goes out in. */
	if (!c->head && (c->lent = fuse_uring_lend(c->dl->st, c->need,
						   &c->buf))) {
		io_start(c);
		return;
	}
	io_get_buffer(c);
}

static bool in_recv_buffer(struct data_loop *dl, const char *p, size_t len)
{
	return dl->cur && p >= dl->cur &&
	       p + len <= dl->cur + dl->recv_pool.size;
}

void data_write(fuse_req_t req, const char *buf, size_t size, off_t off,
		struct fuse_file_info *fi)
{
	struct tapfs_vbd *tv = fh_vbd(fi->fh);
	struct data_loop *dl;
	struct io_ctx *c;
	char *entry = (char *)buf;
	size_t len;

	if (!tv || !tv->vbd) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (tv->readonly) {
		fuse_reply_err(req, EROFS);
		return;
	}
	len = io_clamp(tv, off, size);
	if (!len) {
		fuse_reply_err(req, size ? ENOSPC : 0);
		return;
	}
	c = io_new(req, fi, IO_WRITE);
	if (!c)
		return;
	dl = c->dl;
	io_set_range(c, off, len);
	c->vreq.op = TD_OP_WRITE;
	/*
	 * -o uring: the payload stays in its ring entry until the entry is
	 * given back, which costs nothing (the entry waits for the reply
	 * anyway): every aligned write goes to the disk from there.
	 */
	c->lent = fuse_uring_lend(dl->st, len, &entry);
	if (c->lent)
		buf = entry;
	c->data = buf;
	if (!c->head && !(len & (c->unit - 1)) &&
	    !((uintptr_t)buf & (TD_BUF_ALIGN - 1)) &&
	    (c->lent || (in_recv_buffer(dl, buf, len) &&
	     (len > SMALL_BUF || !dl->small_pool.nfree)))) {
		/* Aligned: O_DIRECT from the ring entry or receive buffer. */
		if (!c->lent)
			io_hold_recv(c);
		c->zero_copy = true;
		c->buf = (char *)buf;
		io_start(c);
		return;
	}
	/*
	 * A partial-sector write copies its payload only after reading the
	 * old sectors: keep the receive buffer it lives in until then.
	 */
	if (!c->lent && (c->head || (len & (c->unit - 1))))
		io_hold_recv(c);
	io_get_buffer(c);
}

void data_fsync(fuse_req_t req, struct fuse_file_info *fi)
{
	struct io_ctx *c = io_new(req, fi, IO_FLUSH);

	if (!c)
		return;
	c->vreq.op = TD_OP_FLUSH;
	io_start(c);
}

void data_fallocate(fuse_req_t req, int mode, off_t off, off_t length,
		    struct fuse_file_info *fi)
{
	struct tapfs_vbd *tv = fh_vbd(fi->fh);
	struct io_ctx *c;
	size_t len;

	if (mode != (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (!tv || !tv->vbd) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (off < 0 || length <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* A VBD discards whole sectors. */
	if ((off | length) & (TD_SECTOR_SIZE - 1)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	len = io_clamp(tv, off, (size_t)length);
	if (!len) {
		fuse_reply_err(req, 0);
		return;
	}
	c = io_new(req, fi, IO_DISCARD);
	if (!c)
		return;
	io_set_range(c, off, len);
	c->vreq.op = TD_OP_DISCARD;
	io_start(c);
}

/* ---- pools and receive buffers ---------------------------------------- */

bool data_has_room(const struct data_loop *dl)
{
	return dl->ctx_pool.nfree && td_list_empty(&dl->waiting);
}

bool data_recv_buffer(struct data_loop *dl, struct fuse_buf *fbuf)
{
	if (!data_has_room(dl))
		return false;
	if (!dl->cur)
		dl->cur = td_pool_get(&dl->recv_pool);
	if (!dl->cur)
		return false;
	memset(fbuf, 0, sizeof(*fbuf));
	/* Place the buffer so a WRITE payload is page-aligned. */
	fbuf->mem = dl->cur + FUSE_HDR_PAGE - FUSE_WRITE_HDR;
	fbuf->size = dl->recv_size;
	return true;
}

void data_put_recv(struct data_loop *dl, char *buf)
{
	if (td_pool_owns(&dl->recv_pool, buf))
		td_pool_put(&dl->recv_pool, buf);
	else
		fuse_workers_return_recv(dl->st, buf);
}

int data_init(struct fuse_state *st, struct data_loop *dl)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	int rc;

	dl->st = st;
	td_list_init(&dl->waiting);
	dl->early.n = 0;
	dl->recv_size = LIBFUSE_MAX_PAGES * page + FUSE_HDR_PAGE;
	rc = td_pool_init(&dl->ctx_pool, NR_CTX, sizeof(struct io_ctx), 64);
	if (!rc)
		rc = td_pool_init(&dl->small_pool, NR_SMALL, SMALL_BUF,
				  TD_BUF_ALIGN);
	/* Bounce for a 1 MiB write at an odd offset: two more units. */
	if (!rc)
		rc = td_pool_init(&dl->large_pool, NR_LARGE,
				  FUSE_MAX_IO + 2 * TD_MAX_IO_ALIGN,
				  TD_BUF_ALIGN);
	if (!rc)
		rc = td_pool_init(&dl->recv_pool, NR_RECV,
				  FUSE_HDR_PAGE + dl->recv_size,
				  TD_BUF_ALIGN);
	return rc;
}

void data_fini(struct data_loop *dl)
{
	td_pool_fini(&dl->ctx_pool);
	td_pool_fini(&dl->small_pool);
	td_pool_fini(&dl->large_pool);
	td_pool_fini(&dl->recv_pool);
}
