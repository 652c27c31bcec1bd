/* SPDX-License-Identifier: MIT */
/*
 * The FUSE edge: libfuse's low-level API on the engine's loop.
 *
 * The FUSE device fd is one more event in the loop.  Each readiness event
 * receives up to RECV_BATCH requests; reads and writes on a VBD file
 * become vbd_requests, and their completion callbacks send the replies.
 * No thread per request, no blocking I/O on the data path.
 *
 * Buffer path.  A FUSE WRITE's payload sits FUSE_WRITE_HDR bytes after the
 * start of the request, so the receive buffer is placed that many bytes
 * before a page boundary: the payload lands page-aligned and a large
 * write goes to O_DIRECT straight from the receive buffer, which the
 * request then keeps until it completes.  Small writes are copied into a
 * small pooled buffer instead, so that receive buffers stay free.  Reads
 * and read-modify-write bounce buffers come from the small or large pool.
 * All pools are allocated at mount; when one runs dry the request waits
 * (FIFO) and the loop stops receiving until buffers come back.
 *
 * Every FUSE request gets exactly one reply.
 */
#define FUSE_USE_VERSION 34

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include <tapfs/log.h>

#include "tapfs.h"

/* libfuse reads up to FUSE_MAX_MAX_PAGES pages + one header page. */
#define LIBFUSE_MAX_PAGES	256
#define FUSE_HDR_PAGE		4096
/* fuse_in_header + fuse_write_in: where a WRITE's payload starts. */
#define FUSE_WRITE_HDR		(sizeof(struct fuse_in_header) + \
				 sizeof(struct fuse_write_in))
#define MAX_IO			(1u << 20)	/* negotiated max_write */

#define SMALL_BUF		(64u << 10)
#define NR_SMALL		256
#define NR_LARGE		24
#define NR_RECV			24
#define NR_CTX			512
#define RECV_BATCH		64

#define ATTR_TIMEOUT		1.0
#define ENTRY_TIMEOUT		0.0

enum io_kind { IO_READ, IO_WRITE, IO_FLUSH, IO_DISCARD };

/* One FUSE request on a VBD file, from receipt to reply. */
struct io_ctx {
	struct vbd_request	 vreq;
	struct fuse_state	*st;
	fuse_req_t		 req;
	struct tapfs_vbd	*tv;
	enum io_kind		 kind;
	char			*buf;		/* aligned data or bounce */
	struct td_pool		*buf_pool;	/* where buf came from */
	char			*hold;		/* receive buffer kept */
	const char		*data;		/* write payload */
	size_t			 len;		/* bytes asked for */
	size_t			 need;		/* buffer bytes needed */
	uint32_t		 head;		/* offset in the first unit */
	uint32_t		 unit;		/* the VBD's I/O alignment */
	bool			 zero_copy;
	bool			 abandoned;	/* answered; the I/O is not */
	bool			 replied;	/* the one reply is sent */
	struct td_list		 wait;
};

/* A handle on .ctl or .stats: the text as it was at open. */
struct ctl_handle {
	struct td_list		 link;		/* in fuse_state.ctl_handles */
	struct tapfs_group	*g;
	char			*text;
	size_t			 len;
};

struct fuse_state {
	struct tapfs		*fs;
	struct fuse_session	*se;
	struct td_event		 ev;
	struct td_event		 sigev;
	int			 sigfd;
	bool			 throttled;
	bool			 mounted;
	size_t			 recv_size;
	struct td_pool		 ctx_pool;
	struct td_pool		 small_pool;
	struct td_pool		 large_pool;
	struct td_pool		 recv_pool;
	char			*cur;		/* receive buffer in use */
	struct td_list		 waiting;	/* io_ctx without a buffer */
	/*
	 * Open .ctl/.stats handles.  No RELEASE comes for those still open
	 * when the daemon stops (SIGTERM): they are freed at unmount.
	 */
	struct td_list		 ctl_handles;
};

/* ---- attributes ------------------------------------------------------ */

static struct tapfs *req_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static int node_attr(struct tapfs *fs, struct tapfs_node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = 4096;
	st->st_atime = st->st_mtime = st->st_ctime = n->ctime;
	switch (n->kind) {
	case TAPFS_ROOT:
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2 + tapfs_group_count(fs);
		break;
	case TAPFS_GROUP:
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		break;
	case TAPFS_CTL:
		st->st_mode = S_IFREG | 0600;
		st->st_nlink = 1;
		break;
	case TAPFS_STATS:
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		break;
	case TAPFS_VBD: {
		struct tapfs_vbd *tv = n->obj;

		if (!tv || !tv->vbd)
			return -ENOENT;
		st->st_mode = S_IFREG | (tv->readonly ? 0400 : 0600);
		st->st_nlink = 1;
		st->st_size = (off_t)vbd_size(tv->vbd);
		st->st_blocks = st->st_size / 512;
		/*
		 * The preferred I/O size cp, cmp and dd's peers use: a disk's
		 * (the largest request), not a page (4 KiB reads ran at a
		 * tenth of the speed).  FUSE uses it for stat(2) only.
		 */
		st->st_blksize = MAX_IO;
		break;
	}
	}
	return 0;
}

static struct tapfs_node *live_node(struct tapfs *fs, fuse_ino_t ino)
{
	struct tapfs_node *n = tapfs_node_get(fs, ino);

	return n && !n->dead ? n : NULL;
}

static void reply_entry(fuse_req_t req, struct tapfs *fs,
			struct tapfs_node *n)
{
	struct fuse_entry_param e;
	int err;

	memset(&e, 0, sizeof(e));
	err = node_attr(fs, n, &e.attr);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	e.ino = n->ino;
	e.generation = 1;
	e.attr_timeout = ATTR_TIMEOUT;
	e.entry_timeout = ENTRY_TIMEOUT;
	if (fuse_reply_entry(req, &e) == 0)
		n->nlookup++;
}

/* ---- namespace operations ----------------------------------------------- */

static void tapfs_ll_init(void *userdata, struct fuse_conn_info *conn)
{
	struct tapfs *fs = userdata;

	conn->max_write = MAX_IO;
	conn->max_readahead = 0;
	conn->max_background = fs->opts.max_background;
	conn->congestion_threshold = fs->opts.max_background * 3 / 4;
	conn->want |= FUSE_CAP_ASYNC_DIO;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
			FUSE_CAP_SPLICE_MOVE | FUSE_CAP_WRITEBACK_CACHE |
			FUSE_CAP_AUTO_INVAL_DATA);
}

static void tapfs_ll_lookup(fuse_req_t req, fuse_ino_t parent,
			    const char *name)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *p = live_node(fs, parent);
	struct tapfs_group *g;
	struct tapfs_vbd *tv;

	if (!p) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (p->kind == TAPFS_ROOT) {
		g = tapfs_group_find(fs, name);
		if (!g) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		reply_entry(req, fs, g->node);
		return;
	}
	if (p->kind != TAPFS_GROUP) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	g = p->obj;
	if (!strcmp(name, ".ctl")) {
		reply_entry(req, fs, g->ctl);
		return;
	}
	if (!strcmp(name, ".stats")) {
		reply_entry(req, fs, g->stats);
		return;
	}
	tv = tapfs_vbd_find(g, name);
	if (!tv || !tv->vbd) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	reply_entry(req, fs, tv->node);
}

static void tapfs_ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *n = tapfs_node_get(fs, ino);

	if (n && ino != TAPFS_ROOT_INO)
		tapfs_node_forget(fs, n, nlookup);
	fuse_reply_none(req);
}

static void tapfs_ll_forget_multi(fuse_req_t req, size_t count,
				  struct fuse_forget_data *forgets)
{
	struct tapfs *fs = req_fs(req);
	size_t i;

	for (i = 0; i < count; i++) {
		struct tapfs_node *n = tapfs_node_get(fs, forgets[i].ino);

		if (n && forgets[i].ino != TAPFS_ROOT_INO)
			tapfs_node_forget(fs, n, forgets[i].nlookup);
	}
	fuse_reply_none(req);
}

static void tapfs_ll_getattr(fuse_req_t req, fuse_ino_t ino,
			     struct fuse_file_info *fi)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *n = live_node(fs, ino);
	struct stat st;
	int err;

	(void)fi;
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	err = node_attr(fs, n, &st);
	if (err)
		fuse_reply_err(req, -err);
	else
		fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

/*
 * A VBD's size is its image's: truncate to another size is refused, and
 * O_TRUNC is ignored as on a block device.  Times are not stored.
 */
static void tapfs_ll_setattr(fuse_req_t req, fuse_ino_t ino,
			     struct stat *attr, int to_set,
			     struct fuse_file_info *fi)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *n = live_node(fs, ino);
	struct stat st;
	int err;

	(void)fi;
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	err = node_attr(fs, n, &st);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
		      FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && n->kind == TAPFS_VBD &&
	    ((struct tapfs_vbd *)n->obj)->readonly) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && n->kind == TAPFS_VBD &&
	    attr->st_size != st.st_size) {
		td_log(TD_LOG_INFO, "refused truncate of a VBD to %lld bytes",
		       (long long)attr->st_size);
		fuse_reply_err(req, EINVAL);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && n->kind == TAPFS_STATS) {
		fuse_reply_err(req, EACCES);
		return;
	}
	fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void tapfs_ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			     off_t off, struct fuse_file_info *fi)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *n = live_node(fs, ino);
	struct td_list *pos, *head;
	char *buf;
	size_t used = 0;
	off_t idx = 0;

	(void)fi;
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n->kind != TAPFS_ROOT && n->kind != TAPFS_GROUP) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}

#define ADD_ENTRY(name_, ino_, mode_)					\
	do {								\
		struct stat st_ = { .st_ino = (ino_), .st_mode = (mode_) };\
		size_t sz_;						\
		idx++;							\
		if (idx <= off)						\
			break;						\
		sz_ = fuse_add_direntry(req, buf + used, size - used,	\
					(name_), &st_, idx);		\
		if (sz_ > size - used)					\
			goto full;					\
		used += sz_;						\
	} while (0)

	ADD_ENTRY(".", n->ino, S_IFDIR);
	ADD_ENTRY("..", TAPFS_ROOT_INO, S_IFDIR);
	if (n->kind == TAPFS_ROOT) {
		head = &fs->groups;
		for (pos = head->next; pos != head; pos = pos->next) {
			struct tapfs_group *g = td_container_of(pos,
						struct tapfs_group, link);
			ADD_ENTRY(g->name, g->node->ino, S_IFDIR);
		}
	} else {
		struct tapfs_group *g = n->obj;

		ADD_ENTRY(".ctl", g->ctl->ino, S_IFREG);
		ADD_ENTRY(".stats", g->stats->ino, S_IFREG);
		head = &g->vbds;
		for (pos = head->next; pos != head; pos = pos->next) {
			struct tapfs_vbd *tv = td_container_of(pos,
						struct tapfs_vbd, link);
			if (tv->vbd)
				ADD_ENTRY(tv->name, tv->node->ino, S_IFREG);
		}
	}
#undef ADD_ENTRY
full:
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void tapfs_ll_mkdir(fuse_req_t req, fuse_ino_t parent,
			   const char *name, mode_t mode)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *p = live_node(fs, parent);
	struct tapfs_group *g;
	char err[256];
	int rc;

	(void)mode;
	if (!p || p->kind != TAPFS_ROOT) {
		fuse_reply_err(req, p ? EPERM : ENOENT);
		return;
	}
	rc = tapfs_group_add(fs, name, &g, err, sizeof(err));
	if (rc) {
		td_log(TD_LOG_INFO, "mkdir %s: %s", name, err);
		fuse_reply_err(req, -rc);
		return;
	}
	rc = tapfs_store_save(fs, err, sizeof(err));
	if (rc) {
		tapfs_group_remove(fs, g, err, sizeof(err));
		fuse_reply_err(req, -rc);
		return;
	}
	reply_entry(req, fs, g->node);
}

static void tapfs_ll_rmdir(fuse_req_t req, fuse_ino_t parent,
			   const char *name)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *p = live_node(fs, parent);
	struct tapfs_group *g;
	char err[256];
	int rc;

	if (!p || p->kind != TAPFS_ROOT) {
		fuse_reply_err(req, p ? ENOTDIR : ENOENT);
		return;
	}
	g = tapfs_group_find(fs, name);
	if (!g) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	rc = tapfs_group_remove(fs, g, err, sizeof(err));
	if (!rc)
		rc = tapfs_store_save(fs, err, sizeof(err));
	if (rc)
		td_log(TD_LOG_INFO, "rmdir %s: %s", name, err);
	fuse_reply_err(req, -rc);
}

/* VBDs come and go through .ctl; nothing else creates files here. */
static void tapfs_ll_unlink(fuse_req_t req, fuse_ino_t parent,
			    const char *name)
{
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM);
}

static void tapfs_ll_mknod(fuse_req_t req, fuse_ino_t parent,
			   const char *name, mode_t mode, dev_t rdev)
{
	(void)parent;
	(void)name;
	(void)mode;
	(void)rdev;
	fuse_reply_err(req, EPERM);
}

static void tapfs_ll_create(fuse_req_t req, fuse_ino_t parent,
			    const char *name, mode_t mode,
			    struct fuse_file_info *fi)
{
	(void)parent;
	(void)name;
	(void)mode;
	(void)fi;
	fuse_reply_err(req, EPERM);
}

static void tapfs_ll_rename(fuse_req_t req, fuse_ino_t parent,
			    const char *name, fuse_ino_t newparent,
			    const char *newname, unsigned int flags)
{
	(void)parent;
	(void)name;
	(void)newparent;
	(void)newname;
	(void)flags;
	fuse_reply_err(req, EPERM);
}

static void tapfs_ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
			  const char *newname)
{
	(void)ino;
	(void)newparent;
	(void)newname;
	fuse_reply_err(req, EPERM);
}

static void tapfs_ll_symlink(fuse_req_t req, const char *link,
			     fuse_ino_t parent, const char *name)
{
	(void)link;
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM);
}

static void tapfs_ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct tapfs *fs = req_fs(req);
	struct statvfs sv;

	(void)ino;
	if (statvfs(fs->store, &sv) < 0)
		memset(&sv, 0, sizeof(sv));
	sv.f_namemax = CTL_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

/* ---- open / release ---------------------------------------------------- */

/*
 * libfuse 3.14 cannot ask for FOPEN_PARALLEL_DIRECT_WRITES, without which
 * the kernel serialises direct writes to one file; the open reply is a
 * plain struct fuse_open_out, so send it ourselves.
 */
static int reply_open_vbd(fuse_req_t req, uint64_t fh)
{
	struct fuse_open_out out;

	memset(&out, 0, sizeof(out));
	out.fh = fh;
	out.open_flags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
	return fuse_reply_buf(req, (const char *)&out, sizeof(out));
}

static void tapfs_ll_open(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *n = live_node(fs, ino);
	int acc = fi->flags & O_ACCMODE;
	struct ctl_handle *h;

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	switch (n->kind) {
	case TAPFS_VBD: {
		struct tapfs_vbd *tv = n->obj;

		if (!tv->vbd) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		if (acc != O_RDONLY && tv->readonly) {
			fuse_reply_err(req, EROFS);
			return;
		}
		tv->open_count++;
		if (reply_open_vbd(req, (uintptr_t)tv) == -ENOENT)
			tv->open_count--;	/* the open was interrupted */
		return;
	}
	case TAPFS_CTL:
	case TAPFS_STATS:
		if (n->kind == TAPFS_STATS && acc != O_RDONLY) {
			fuse_reply_err(req, EACCES);
			return;
		}
		h = calloc(1, sizeof(*h));
		if (!h) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		h->g = n->obj;
		h->g->busy++;
		td_list_add_tail(&h->link, &fs->fuse->ctl_handles);
		h->text = n->kind == TAPFS_CTL ?
			  control_render_ctl(fs, h->g, &h->len) :
			  control_render_stats(fs, h->g, &h->len);
		fi->fh = (uintptr_t)h;
		fi->direct_io = 1;
		fi->nonseekable = 0;
		if (fuse_reply_open(req, fi) == -ENOENT) {
			/* libfuse called release for us */
		}
		return;
	default:
		fuse_reply_err(req, EISDIR);
	}
}

static void ctl_handle_free(struct ctl_handle *h)
{
	td_list_del(&h->link);
	h->g->busy--;
	free(h->text);
	free(h);
}

static void tapfs_ll_release(fuse_req_t req, fuse_ino_t ino,
			     struct fuse_file_info *fi)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *n = tapfs_node_get(fs, ino);

	if (n && n->kind == TAPFS_VBD) {
		struct tapfs_vbd *tv = (struct tapfs_vbd *)(uintptr_t)fi->fh;

		if (tv && tv->open_count)
			tv->open_count--;
	} else if (n && (n->kind == TAPFS_CTL || n->kind == TAPFS_STATS)) {
		struct ctl_handle *h = (struct ctl_handle *)(uintptr_t)fi->fh;

		if (h)
			ctl_handle_free(h);
	}
	fuse_reply_err(req, 0);
}

/* ---- data path: buffers ------------------------------------------------ */

static struct td_pool *pool_for(struct fuse_state *st, size_t need)
{
	return need <= SMALL_BUF ? &st->small_pool : &st->large_pool;
}

static void io_start(struct io_ctx *c);
static void fuse_state_unthrottle(struct fuse_state *st);

static void io_release(struct io_ctx *c)
{
	struct fuse_state *st = c->st;

	assert(c->replied);
	if (c->buf_pool)
		td_pool_put(c->buf_pool, c->buf);
	if (c->hold)
		td_pool_put(&st->recv_pool, c->hold);
	td_pool_put(&st->ctx_pool, c);

	/* Buffers came back: serve the waiters, in order. */
	while (!td_list_empty(&st->waiting)) {
		struct io_ctx *w = td_container_of(st->waiting.next,
						   struct io_ctx, wait);
		struct td_pool *p = pool_for(st, w->need);

		w->buf = td_pool_get(p);
		if (!w->buf)
			break;
		w->buf_pool = p;
		td_list_del(&w->wait);
		io_start(w);
	}
	fuse_state_unthrottle(st);
}

/*
 * Keep the current receive buffer for this request (its payload lives
 * there); the next receive takes a fresh one.
 */
static void io_hold_recv(struct io_ctx *c)
{
	struct fuse_state *st = c->st;

	c->hold = st->cur;
	st->cur = NULL;
}

/* Get c->buf, or queue c until one is free.  c->need is set. */
static void io_get_buffer(struct io_ctx *c)
{
	struct fuse_state *st = c->st;
	struct td_pool *p = pool_for(st, c->need);

	c->buf = td_list_empty(&st->waiting) ? td_pool_get(p) : NULL;
	if (c->buf) {
		c->buf_pool = p;
		io_start(c);
		return;
	}
	if (c->data && !c->hold)
		io_hold_recv(c);	/* the payload must outlive this call */
	td_list_add_tail(&c->wait, &st->waiting);
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
	io_release(c);
}

/*
 * The kernel's INTERRUPT for c's request (its client got a signal: a
 * killed or timed-out reader of a paused VBD).  A request not yet handed
 * to a driver - waiting for a buffer, or queued on a paused VBD or behind
 * a read-modify-write - is answered EINTR now and forgotten; one in
 * flight completes normally (its buffer is in use).  Runs on the loop.
 */
static void io_interrupt(fuse_req_t req, void *data)
{
	struct io_ctx *c = data;

	(void)req;
	if (c->abandoned)
		return;
	if (!td_list_empty(&c->wait)) {
		td_list_del(&c->wait);
		assert(!c->replied);
		c->replied = true;
		fuse_reply_err(c->req, EINTR);
		io_release(c);
		return;
	}
	if (c->vreq.vbd)
		vbd_cancel(c->vreq.vbd, &c->vreq);	/* io_done: EINTR */
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
	vbd_submit(c->tv->vbd, v);
}

static struct io_ctx *io_new(fuse_req_t req, struct fuse_file_info *fi,
			     enum io_kind kind)
{
	struct tapfs *fs = req_fs(req);
	struct fuse_state *st = fs->fuse;
	struct tapfs_vbd *tv = (struct tapfs_vbd *)(uintptr_t)fi->fh;
	struct io_ctx *c;

	if (!tv || !tv->vbd) {
		fuse_reply_err(req, EBADF);
		return NULL;
	}
	/* The receive loop only reads a request when a context is free. */
	c = td_pool_get(&st->ctx_pool);
	if (!c) {
		td_log(TD_LOG_ERR, "request context pool empty");
		fuse_reply_err(req, EAGAIN);
		return NULL;
	}
	memset(c, 0, sizeof(*c));
	c->st = st;
	c->req = req;
	c->tv = tv;
	c->kind = kind;
	td_list_init(&c->wait);
	td_list_init(&c->vreq.link);
	/* Calls io_interrupt() at once if the INTERRUPT came first. */
	fuse_req_interrupt_func(req, io_interrupt, c);
	if (fuse_req_interrupted(req)) {
		fuse_reply_err(req, EINTR);
		td_pool_put(&st->ctx_pool, c);
		return NULL;
	}
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

static void vbd_read(fuse_req_t req, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct tapfs_vbd *tv = (struct tapfs_vbd *)(uintptr_t)fi->fh;
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
	io_get_buffer(c);
}

static bool in_recv_buffer(struct fuse_state *st, const char *p, size_t len)
{
	return st->cur && p >= st->cur &&
	       p + len <= st->cur + st->recv_pool.size;
}

static void vbd_write(fuse_req_t req, const char *buf, size_t size,
		      off_t off, struct fuse_file_info *fi)
{
	struct tapfs_vbd *tv = (struct tapfs_vbd *)(uintptr_t)fi->fh;
	struct fuse_state *st;
	struct io_ctx *c;
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
	st = c->st;
	io_set_range(c, off, len);
	c->vreq.op = TD_OP_WRITE;
	c->data = buf;
	if (!c->head && !(len & (c->unit - 1)) &&
	    !((uintptr_t)buf & (TD_BUF_ALIGN - 1)) &&
	    in_recv_buffer(st, buf, len) &&
	    (len > SMALL_BUF || !st->small_pool.nfree)) {
		/* Large and aligned: O_DIRECT from the receive buffer. */
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
	if (c->head || (len & (c->unit - 1)))
		io_hold_recv(c);
	io_get_buffer(c);
}

static void vbd_fsync(fuse_req_t req, struct fuse_file_info *fi)
{
	struct io_ctx *c = io_new(req, fi, IO_FLUSH);

	if (!c)
		return;
	c->vreq.op = TD_OP_FLUSH;
	io_start(c);
}

static void vbd_fallocate(fuse_req_t req, int mode, off_t off, off_t length,
			  struct fuse_file_info *fi)
{
	struct tapfs_vbd *tv = (struct tapfs_vbd *)(uintptr_t)fi->fh;
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

/* ---- read / write / fsync dispatch ------------------------------------- */

static void tapfs_ll_read(fuse_req_t req, fuse_ino_t ino, size_t size,
			  off_t off, struct fuse_file_info *fi)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *n = tapfs_node_get(fs, ino);
	struct ctl_handle *h;

	if (n && n->kind == TAPFS_VBD) {
		vbd_read(req, size, off, fi);
		return;
	}
	h = (struct ctl_handle *)(uintptr_t)fi->fh;
	if (!n || !h || !h->text) {
		fuse_reply_err(req, h && !h->text ? ENOMEM : EBADF);
		return;
	}
	if (off < 0 || (size_t)off >= h->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > h->len - (size_t)off)
		size = h->len - (size_t)off;
	fuse_reply_buf(req, h->text + off, size);
}

struct ctl_write {
	fuse_req_t	req;
	size_t		size;
};

static void ctl_write_done(void *arg, int err)
{
	struct ctl_write *w = arg;

	if (err)
		fuse_reply_err(w->req, -err);
	else
		fuse_reply_write(w->req, w->size);
	free(w);
}

static void tapfs_ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
			   size_t size, off_t off, struct fuse_file_info *fi)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *n = tapfs_node_get(fs, ino);
	struct ctl_handle *h;
	struct ctl_write *w;
	int rc;

	if (n && n->kind == TAPFS_VBD) {
		vbd_write(req, buf, size, off, fi);
		return;
	}
	h = (struct ctl_handle *)(uintptr_t)fi->fh;
	if (!n || n->kind != TAPFS_CTL || !h) {
		fuse_reply_err(req, EBADF);
		return;
	}
	w = malloc(sizeof(*w));
	if (!w) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	w->req = req;
	w->size = size;
	rc = control_exec(fs, h->g, buf, size, ctl_write_done, w);
	if (rc != -EINPROGRESS)
		ctl_write_done(w, rc);
}

static void tapfs_ll_flush(fuse_req_t req, fuse_ino_t ino,
			   struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);		/* close(): nothing cached here */
}

static void tapfs_ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
			   struct fuse_file_info *fi)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *n = tapfs_node_get(fs, ino);

	(void)datasync;
	if (n && n->kind == TAPFS_VBD)
		vbd_fsync(req, fi);
	else
		fuse_reply_err(req, 0);
}

static void tapfs_ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
			       off_t off, off_t length,
			       struct fuse_file_info *fi)
{
	struct tapfs *fs = req_fs(req);
	struct tapfs_node *n = tapfs_node_get(fs, ino);

	if (n && n->kind == TAPFS_VBD)
		vbd_fallocate(req, mode, off, length, fi);
	else
		fuse_reply_err(req, EOPNOTSUPP);
}

static const struct fuse_lowlevel_ops tapfs_ll_ops = {
	.init		= tapfs_ll_init,
	.lookup		= tapfs_ll_lookup,
	.forget		= tapfs_ll_forget,
	.forget_multi	= tapfs_ll_forget_multi,
	.getattr	= tapfs_ll_getattr,
	.setattr	= tapfs_ll_setattr,
	.readdir	= tapfs_ll_readdir,
	.mkdir		= tapfs_ll_mkdir,
	.rmdir		= tapfs_ll_rmdir,
	.unlink		= tapfs_ll_unlink,
	.mknod		= tapfs_ll_mknod,
	.create		= tapfs_ll_create,
	.rename		= tapfs_ll_rename,
	.link		= tapfs_ll_link,
	.symlink	= tapfs_ll_symlink,
	.statfs		= tapfs_ll_statfs,
	.open		= tapfs_ll_open,
	.release	= tapfs_ll_release,
	.read		= tapfs_ll_read,
	.write		= tapfs_ll_write,
	.flush		= tapfs_ll_flush,
	.fsync		= tapfs_ll_fsync,
	.fallocate	= tapfs_ll_fallocate,
};

/* ---- the receive loop --------------------------------------------------- */

static bool fuse_state_can_receive(struct fuse_state *st)
{
	if (!st->ctx_pool.nfree || !td_list_empty(&st->waiting))
		return false;
	if (!st->cur)
		st->cur = td_pool_get(&st->recv_pool);
	return st->cur != NULL;
}

static void fuse_state_throttle(struct fuse_state *st, bool on)
{
	struct td_loop *loop = st->fs->engine->loop;

	if (st->throttled == on)
		return;
	st->throttled = on;
	td_loop_mod_event(loop, &st->ev, on ? 0 : EPOLLIN);
}

static void fuse_state_unthrottle(struct fuse_state *st)
{
	if (st->throttled && fuse_state_can_receive(st))
		fuse_state_throttle(st, false);
}

static void fuse_receive(struct td_event *ev, uint32_t events)
{
	struct fuse_state *st = ev->arg;
	struct fuse_buf fbuf;
	unsigned i;
	int res;

	(void)events;
	for (i = 0; i < RECV_BATCH; i++) {
		if (!fuse_state_can_receive(st)) {
			fuse_state_throttle(st, true);
			return;
		}
		memset(&fbuf, 0, sizeof(fbuf));
		/* Place the buffer so a WRITE payload is page-aligned. */
		fbuf.mem = st->cur + FUSE_HDR_PAGE - FUSE_WRITE_HDR;
		fbuf.size = st->recv_size;
		res = fuse_session_receive_buf(st->se, &fbuf);
		if (res == -EINTR)
			continue;
		if (res == -EAGAIN)
			return;
		if (res <= 0 || fuse_session_exited(st->se)) {
			if (res < 0)
				td_log(TD_LOG_ERR, "reading /dev/fuse: %s",
				       strerror(-res));
			td_loop_stop(st->fs->engine->loop);
			return;
		}
		fuse_session_process_buf(st->se, &fbuf);
	}
}

static void fuse_signal(struct td_event *ev, uint32_t events)
{
	struct fuse_state *st = ev->arg;
	struct signalfd_siginfo si;

	(void)events;
	if (read(st->sigfd, &si, sizeof(si)) != sizeof(si))
		return;
	td_log(TD_LOG_INFO, "signal %u: unmounting %s", si.ssi_signo,
	       st->fs->mountpoint);
	fuse_session_exit(st->se);
	td_loop_stop(st->fs->engine->loop);
}

static void fuse_state_free(struct fuse_state *st)
{
	if (!st)
		return;
	td_pool_fini(&st->ctx_pool);
	td_pool_fini(&st->small_pool);
	td_pool_fini(&st->large_pool);
	td_pool_fini(&st->recv_pool);
	if (st->sigfd >= 0)
		close(st->sigfd);
	free(st);
}

static int fuse_state_pools(struct fuse_state *st)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	int rc;

	st->recv_size = LIBFUSE_MAX_PAGES * page + FUSE_HDR_PAGE;
	rc = td_pool_init(&st->ctx_pool, NR_CTX, sizeof(struct io_ctx), 64);
	if (!rc)
		rc = td_pool_init(&st->small_pool, NR_SMALL, SMALL_BUF,
				  TD_BUF_ALIGN);
	/* Bounce for a 1 MiB write at an odd offset: two more units. */
	if (!rc)
		rc = td_pool_init(&st->large_pool, NR_LARGE,
				  MAX_IO + 2 * TD_MAX_IO_ALIGN, TD_BUF_ALIGN);
	if (!rc)
		rc = td_pool_init(&st->recv_pool, NR_RECV,
				  FUSE_HDR_PAGE + st->recv_size,
				  TD_BUF_ALIGN);
	return rc;
}

int tapfs_fuse_mount(struct tapfs *fs, char *err, size_t errlen)
{
	char *argv[8];
	int argc = 0;
	struct fuse_args args;
	struct fuse_state *st;
	sigset_t mask;
	int rc;

	st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	st->fs = fs;
	st->sigfd = -1;
	td_list_init(&st->waiting);
	td_list_init(&st->ctl_handles);
	rc = fuse_state_pools(st);
	if (rc) {
		snprintf(err, errlen, "cannot allocate I/O buffers: %s",
			 strerror(-rc));
		goto fail;
	}

	argv[argc++] = (char *)"tapfs";
	argv[argc++] = (char *)"-o";
	argv[argc++] = fs->opts.allow_other ?
		       (char *)"fsname=tapfs,subtype=tapfs,allow_other,"
			       "default_permissions" :
		       (char *)"fsname=tapfs,subtype=tapfs,"
			       "default_permissions";
	if (fs->opts.debug)
		argv[argc++] = (char *)"-d";
	args = (struct fuse_args)FUSE_ARGS_INIT(argc, argv);
	st->se = fuse_session_new(&args, &tapfs_ll_ops, sizeof(tapfs_ll_ops),
				  fs);
	fuse_opt_free_args(&args);
	if (!st->se) {
		snprintf(err, errlen, "cannot create the FUSE session");
		rc = -EINVAL;
		goto fail;
	}
	if (fuse_session_mount(st->se, fs->mountpoint)) {
		snprintf(err, errlen, "cannot mount on %s (is /dev/fuse "
			 "there, and are you root?)", fs->mountpoint);
		rc = -EPERM;
		goto fail;
	}
	st->mounted = true;
	fs->fuse = st;

	st->ev.fd = fuse_session_fd(st->se);
	fcntl(st->ev.fd, F_SETFL, fcntl(st->ev.fd, F_GETFL) | O_NONBLOCK);
	st->ev.events = EPOLLIN;
	st->ev.cb = fuse_receive;
	st->ev.arg = st;
	rc = td_loop_add_event(fs->engine->loop, &st->ev);
	if (rc) {
		snprintf(err, errlen, "epoll: %s", strerror(-rc));
		goto fail_unmount;
	}

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	st->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (st->sigfd >= 0) {
		st->sigev.fd = st->sigfd;
		st->sigev.events = EPOLLIN;
		st->sigev.cb = fuse_signal;
		st->sigev.arg = st;
		td_loop_add_event(fs->engine->loop, &st->sigev);
	}
	return 0;

fail_unmount:
	fuse_session_unmount(st->se);
fail:
	if (st->se)
		fuse_session_destroy(st->se);
	fs->fuse = NULL;
	fuse_state_free(st);
	return rc ? rc : -EIO;
}

int tapfs_fuse_run(struct tapfs *fs)
{
	return td_loop_run(fs->engine->loop);
}

void tapfs_fuse_request_exit(struct tapfs *fs)
{
	if (fs->fuse)
		fuse_session_exit(fs->fuse->se);
	td_loop_stop(fs->engine->loop);
}

void tapfs_fuse_unmount(struct tapfs *fs)
{
	struct fuse_state *st = fs->fuse;

	if (!st)
		return;
	td_loop_del_event(fs->engine->loop, &st->ev);
	if (st->sigfd >= 0)
		td_loop_del_event(fs->engine->loop, &st->sigev);
	if (st->mounted)
		fuse_session_unmount(st->se);
	fuse_session_destroy(st->se);
	while (!td_list_empty(&st->ctl_handles))
		ctl_handle_free(td_container_of(st->ctl_handles.next,
						struct ctl_handle, link));
	fs->fuse = NULL;
	fuse_state_free(st);
}
