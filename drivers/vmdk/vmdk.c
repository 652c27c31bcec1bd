/* SPDX-License-Identifier: MIT */
/*
 * vmdk: VMware virtual disks.  monolithicSparse, monolithicFlat,
 * twoGbMaxExtentSparse/Flat (a request is split at extent and grain
 * boundaries), streamOptimized (compressed grains, read-only) and child
 * disks (parentFileNameHint, a parent of any format, with the
 * CID/parentCID check for a vmdk one).
 *
 * Everything about the disk is read at open (vmdk-image.c): descriptor,
 * extents, and every grain table, kept in memory in disk format; so the
 * data path never waits for metadata.  Each extent file has its own
 * td_meta (its fd, its I/O pool, its parked requests).
 *
 * Writing a sparse extent, crash-safe order.  A write to an allocated
 * grain goes in place.  A write to an unallocated (or zeroed) grain
 * allocates a grain at the end of the extent file and:
 *   1. writes the whole grain: the request's data, zeros around it, or
 *      in a child disk (an unallocated grain, not a zeroed one) the
 *      parent's data around it, read through the chain first;
 *   2. once that is done, sets the grain table entry in memory (reads
 *      find the grain from now on: its data is there) and writes the
 *      grain table, primary and redundant copies, through the grain
 *      table's sequencer (one write of a table in flight; later entries
 *      wait for the next);
 *   3. then completes the request.
 * A crash before 2 leaves a grain nobody points at past the old end (a
 * leak; the next grain goes after it); a crash during 2 leaves the
 * primary or redundant entry of that grain set or not, each pointing at
 * complete data.
 *
 * A write into a grain table the grain directory (GD) does not have
 * (QEMU and tapfs create every table with the disk, other tools do not)
 * first allocates the table at the end of the extent file:
 *   1. writes the new table, and its redundant copy after it, all zeros
 *      (both unreferenced yet);
 *   2. then the redundant GD's entry;
 *   3. then the primary GD's entry: the commit point.  The table is
 *      the disk's, and the write goes on as any other (the grain and
 *      its entry, above).
 * Each GD's sectors are written through a sequencer of their own (one
 * write in flight; entries set meanwhile go in the next one), and an
 * entry is set in the copy being written only when its step is due.
 * A crash before 3 leaves space nobody points at, or (after 2) a table
 * in the redundant GD only: the primary GD is the one read, so the
 * table is not allocated and the next write into it allocates another
 * (tapfs-img check calls the first one a leak).  Every GD entry points
 * at a table that holds zeros or grains' complete data.  The grain data
 * and its table entry are written after 3, not with the table in 1: so
 * one path fills every entry, at the price of one more table write per
 * table allocated (2 KiB per 32 MiB).
 *
 * Durability is the client's flush: an fsync of every extent file,
 * which covers every completed write, data, tables and directories.
 * Concurrent writes to a grain (or a grain table) being allocated wait
 * for it (parked) and are dispatched again when it is in place.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>
#include <tapfs/tapdisk.h>

#include "common/td-fileio.h"
#include "common/td-meta.h"
#include "common/td-util.h"
#include "common/td-zlib.h"
#include "vmdk-image.h"

#define VMDK_MAX_IOCBS		256u
#define VMDK_MAX_IOCBS_MANY	32u	/* per extent, with many extents */
#define VMDK_MAX_PARKED		1024u
#define VMDK_ALLOCS		16u
#define VMDK_GT_ALLOCS		8u
#define VMDK_CREADS		16u
#define VMDK_FLUSHES		64u

struct vmdk_state;
struct vmdk_xstate;

/* The writes of one grain table (both copies). */
struct vmdk_gtseq {
	struct td_meta_seq	 q;
	struct vmdk_xstate	*x;
	uint64_t		 gti;
	unsigned		 pending;
	int			 err;
};

/*
 * The writes of one grain directory, primary or redundant: its sectors
 * holding entries set since the last write.  disk is the directory in
 * disk format, an entry set there only once it may reach the file.
 */
struct vmdk_gdseq {
	struct td_meta_seq	 q;
	struct vmdk_xstate	*x;
	uint64_t		 offset;	/* sector of the directory */
	uint8_t			*disk;		/* whole sectors, aligned */
	uint64_t		 lo, hi;	/* dirty entries, inclusive */
	bool			 dirty;
};

/* Per extent file. */
struct vmdk_xstate {
	struct vmdk_state	*s;
	struct vmdk_extent	*e;
	struct td_meta		 meta;
	struct vmdk_gtseq	*gts;		/* read-write sparse */
	struct vmdk_gdseq	 gd, rgd;	/* read-write sparse; rgd
						 * with a redundant GD */
	uint64_t		 next_free;	/* sector of the next grain */
	struct td_list		 wait_pool;	/* parked: no alloc/cread */
	bool			 meta_ready;
};

/* Something being allocated in an extent, and the writes that wait. */
struct vmdk_busy {
	struct vmdk_xstate	*x;
	uint64_t		 n;		/* grain, or grain table */
	struct td_list		 link;		/* on the state's list */
	struct td_list		 waiters;	/* writes into it */
};

/* A grain table being allocated (a write where the GD has none). */
struct vmdk_gtalloc {
	struct vmdk_busy	 b;		/* on s->gt_allocating */
	uint32_t		 host, rhost;	/* sectors; rhost 0 without
						 * a redundant GD */
	unsigned		 pending;
	int			 err;
	struct td_meta_wait	 wait;
};

/* A grain being allocated (a write to an unallocated grain). */
struct vmdk_alloc {
	struct vmdk_busy	 b;		/* on s->allocating */
	td_request_t		 treq;
	uint32_t		 host;		/* sector */
	struct td_meta_wait	 wait;
	uint8_t			*buf;		/* grain_bytes */
	unsigned		 pending;	/* parent's sectors to come */
	int			 err;
};

/* A compressed grain being read. */
struct vmdk_cread {
	struct vmdk_xstate	*x;
	td_request_t		 treq;
	uint64_t		 grain;
	uint8_t			*raw;		/* marker + data */
	uint8_t			*out;		/* the grain */
};

/* A flush: an fsync of every extent file. */
struct vmdk_flush {
	td_request_t		 treq;
	unsigned		 pending;
	int			 err;
};

struct vmdk_state {
	td_driver_t		*drv;
	struct vmdk_image	*img;
	struct vmdk_xstate	*xs;
	bool			 rdonly;
	bool			 has_parent;
	struct td_pool		 allocs;
	struct td_pool		 gtallocs;
	struct td_pool		 creads;
	struct td_pool		 flushes;
	struct td_list		 allocating;
	struct td_list		 gt_allocating;
	size_t			 alloc_hdr, cread_hdr, raw_len;
	uint32_t		 max_grain;	/* bytes, largest grain */
	void			*zs;		/* td-zlib stream */
	uint64_t		 n_alloc;
	uint64_t		 n_gt_alloc;
	uint64_t		 n_cow;		/* grains filled from the parent */
};

static void vmdk_queue_rw(td_driver_t *drv, td_request_t treq);

static void vmdk_redispatch(void *ctx, td_request_t treq)
{
	struct vmdk_state *s = ctx;

	vmdk_queue_rw(s->drv, treq);
}

/* An alloc or cread is free again: what waited for one tries again. */
static void vmdk_wake_pool_waiters(struct vmdk_state *s)
{
	unsigned i;

	for (i = 0; i < s->img->n_extents; i++) {
		struct vmdk_xstate *x = &s->xs[i];
		struct td_list l;

		if (!x->meta_ready || td_list_empty(&x->wait_pool))
			continue;
		td_list_move(&l, &x->wait_pool);
		td_meta_wake(&x->meta, &l, 0);
	}
}

static void vmdk_zero(td_request_t treq)
{
	memset(treq.buf, 0, (size_t)treq.secs << TD_SECTOR_SHIFT);
	td_complete_request(treq, 0);
}

/* ---- compressed grains ------------------------------------------------ */

static int vmdk_inflate(struct vmdk_state *s, struct vmdk_cread *c,
			size_t len)
{
	struct vmdk_extent *e = c->x->e;
	size_t gbytes = (size_t)e->h.grain_secs * VMDK_SECTOR;
	uint64_t lba;
	uint32_t size;
	char why[128];

	if (vmdk_marker_decode(c->raw, len, &lba, &size, why, sizeof(why)) ||
	    lba != c->grain * e->h.grain_secs) {
		td_log(TD_LOG_ERR, "%s: grain %" PRIu64 ": bad marker (lba %"
		       PRIu64 ")", e->path, c->grain, lba);
		return -EIO;
	}
	if (td_inflate_stream(s->zs, c->raw + VMDK_MARKER_SIZE, size, c->out,
			      gbytes)) {
		td_log(TD_LOG_ERR, "%s: grain %" PRIu64 " does not inflate "
		       "into %zu bytes", e->path, c->grain, gbytes);
		return -EIO;
	}
	return 0;
}

static void vmdk_cread_done(void *ctx, void *arg, int err)
{
	struct vmdk_state *s = ctx;
	struct vmdk_cread *c = arg;
	struct vmdk_extent *e = c->x->e;
	td_request_t treq = c->treq;
	uint64_t within = (treq.sec - e->start) % e->h.grain_secs;

	if (!err)
		err = vmdk_inflate(s, c, s->raw_len);
	if (!err)
		memcpy(treq.buf, c->out + within * VMDK_SECTOR,
		       (size_t)treq.secs << TD_SECTOR_SHIFT);
	td_pool_put(&s->creads, c);
	td_complete_request(treq, err);
	vmdk_wake_pool_waiters(s);
}

static void vmdk_read_compressed(struct vmdk_state *s, struct vmdk_xstate *x,
				 td_request_t treq, uint64_t grain,
				 uint32_t gte)
{
	struct vmdk_cread *c = td_pool_get(&s->creads);

	if (!c) {
		td_meta_park(&x->meta, &x->wait_pool, treq);
		return;
	}
	c->x = x;
	c->treq = treq;
	c->grain = grain;
	c->raw = (uint8_t *)c + s->cread_hdr;
	c->out = c->raw + s->raw_len;
	td_meta_read_data(&x->meta, NULL, c->raw, s->raw_len,
			  (uint64_t)gte * VMDK_SECTOR, vmdk_cread_done, c);
}

/* ---- allocating grains ------------------------------------------------- */

/* What is being allocated as number n of extent x on list, or NULL. */
static struct vmdk_busy *vmdk_busy_find(struct td_list *list,
					struct vmdk_xstate *x, uint64_t n)
{
	struct td_list *l;

	for (l = list->next; l != list; l = l->next) {
		struct vmdk_busy *b = td_container_of(l, struct vmdk_busy,
						      link);

		if (b->x == x && b->n == n)
			return b;
	}
	return NULL;
}

static void vmdk_busy_start(struct vmdk_busy *b, struct td_list *list,
			    struct vmdk_xstate *x, uint64_t n)
{
	b->x = x;
	b->n = n;
	td_list_init(&b->waiters);
	td_list_add_tail(&b->link, list);
}

/* Off its list; its waiters moved to waiters (to wake once it is free). */
static void vmdk_busy_end(struct vmdk_busy *b, struct td_list *waiters)
{
	td_list_del(&b->link);
	td_list_move(waiters, &b->waiters);
}

static void vmdk_alloc_end(struct vmdk_alloc *a, int err)
{
	struct vmdk_xstate *x = a->b.x;
	struct vmdk_state *s = x->s;
	td_request_t treq = a->treq;
	struct td_list waiters;

	vmdk_busy_end(&a->b, &waiters);
	td_pool_put(&s->allocs, a);
	td_complete_request(treq, err);
	td_meta_wake(&x->meta, &waiters, 0);
	vmdk_wake_pool_waiters(s);
}

static void vmdk_gt_done(struct td_meta_wait *w, int err)
{
	vmdk_alloc_end(td_container_of(w, struct vmdk_alloc, wait), err);
}

static void vmdk_grain_written(void *ctx, void *arg, int err)
{
	struct vmdk_alloc *a = arg;
	struct vmdk_xstate *x = a->b.x;
	struct vmdk_extent *e = x->e;

	(void)ctx;
	if (err) {
		vmdk_alloc_end(a, err);
		return;
	}
	td_put_le32(e->gt + a->b.n * 4, a->host);
	x->s->n_alloc++;
	td_meta_seq_wait(&x->gts[a->b.n / e->h.gtes].q, &a->wait,
			 vmdk_gt_done);
}

static void vmdk_gt_written(void *ctx, void *arg, int err)
{
	struct vmdk_gtseq *g = arg;

	(void)ctx;
	if (err && !g->err)
		g->err = err;
	if (--g->pending)
		return;
	if (g->err)
		td_log(TD_LOG_ERR, "%s: writing grain table %" PRIu64 ": %s",
		       g->x->e->path, g->gti, strerror(-g->err));
	td_meta_seq_done(&g->q, g->err);
}

/* Write grain table gti, both copies, from memory as it is now. */
static void vmdk_gt_issue(struct td_meta_seq *q)
{
	struct vmdk_gtseq *g = td_container_of(q, struct vmdk_gtseq, q);
	struct vmdk_extent *e = g->x->e;
	size_t len = (size_t)e->h.gtes * 4;
	uint8_t *gt = e->gt + g->gti * len;

	g->err = 0;
	g->pending = e->rgd ? 2 : 1;
	if (e->rgd)
		td_meta_io(&g->x->meta, TD_OP_WRITE, gt, len,
			   (uint64_t)e->rgd[g->gti] * VMDK_SECTOR,
			   vmdk_gt_written, g);
	td_meta_io(&g->x->meta, TD_OP_WRITE, gt, len,
		   (uint64_t)e->gd[g->gti] * VMDK_SECTOR, vmdk_gt_written, g);
}

/* 1. The grain's contents are in a->buf: write it. */
static void vmdk_alloc_write_grain(struct vmdk_alloc *a)
{
	struct vmdk_extent *e = a->b.x->e;
	uint64_t within = (a->treq.sec - e->start) % e->h.grain_secs;

	memcpy(a->buf + within * VMDK_SECTOR, a->treq.buf,
	       (size_t)a->treq.secs << TD_SECTOR_SHIFT);
	td_meta_io(&a->b.x->meta, TD_OP_WRITE, a->buf,
		   (size_t)e->h.grain_secs * VMDK_SECTOR,
		   (uint64_t)a->host * VMDK_SECTOR, vmdk_grain_written, a);
}

/* n of the parent's sectors arrived (1: the guard). */
static void vmdk_alloc_fill_put(struct vmdk_alloc *a, unsigned n, int err)
{
	if (err && !a->err)
		a->err = err;
	a->pending -= n;
	if (a->pending)
		return;
	if (a->err)
		vmdk_alloc_end(a, a->err);
	else
		vmdk_alloc_write_grain(a);
}

/* A forwarded read completes by pieces: count sectors. */
static void vmdk_alloc_parent_done(td_request_t treq, int err)
{
	vmdk_alloc_fill_put(treq.cb_data, treq.secs, err);
}

/* Read sectors [from, to) of the grain from the parent into a->buf. */
static void vmdk_alloc_read_parent(struct vmdk_alloc *a, uint64_t from,
				   uint64_t to)
{
	struct vmdk_extent *e = a->b.x->e;
	uint64_t first = a->treq.sec - (a->treq.sec - e->start) %
			 e->h.grain_secs;
	td_request_t r = {
		.op = TD_OP_READ,
		.buf = (char *)a->buf + from * VMDK_SECTOR,
		.sec = first + from,
		.secs = (uint32_t)(to - from),
		.image = a->treq.image,
		.cb = vmdk_alloc_parent_done,
		.cb_data = a,
	};

	if (from >= to)
		return;
	a->pending += r.secs;
	td_forward_request(r);
}

/*
 * A child disk's grain holds the parent's data around the write: read
 * what the write does not cover, in 4 KiB-aligned pieces (a parent
 * opened O_DIRECT on 4 KiB sectors takes no less), the part of the disk
 * this extent holds only.
 */
static void vmdk_alloc_fill(struct vmdk_alloc *a)
{
	struct vmdk_extent *e = a->b.x->e;
	uint64_t al = TD_MAX_IO_ALIGN >> TD_SECTOR_SHIFT;
	uint64_t within = (a->treq.sec - e->start) % e->h.grain_secs;
	uint64_t grain_start = a->treq.sec - e->start - within;
	uint64_t end = e->secs - grain_start < e->h.grain_secs ?
		       e->secs - grain_start : e->h.grain_secs;
	uint64_t head = td_round_up(within, al);
	uint64_t tail = td_round_down(within + a->treq.secs, al);

	a->b.x->s->n_cow++;
	a->pending = 1;
	if (head > end)
		head = end;
	if (head >= tail) {
		vmdk_alloc_read_parent(a, 0, end);
	} else {
		vmdk_alloc_read_parent(a, 0, head);
		vmdk_alloc_read_parent(a, tail, end);
	}
	vmdk_alloc_fill_put(a, 1, 0);
}

static void vmdk_write_alloc(struct vmdk_state *s, struct vmdk_xstate *x,
			     td_request_t treq, uint64_t grain,
			     bool from_parent)
{
	struct vmdk_extent *e = x->e;
	size_t gbytes = (size_t)e->h.grain_secs * VMDK_SECTOR;
	struct vmdk_alloc *a;

	if (x->next_free + e->h.grain_secs > UINT32_MAX) {
		td_complete_request(treq, -ENOSPC);	/* 32-bit offsets */
		return;
	}
	a = td_pool_get(&s->allocs);
	if (!a) {
		td_meta_park(&x->meta, &x->wait_pool, treq);
		return;
	}
	a->treq = treq;
	a->host = (uint32_t)x->next_free;
	a->buf = (uint8_t *)a + s->alloc_hdr;
	a->err = 0;
	vmdk_busy_start(&a->b, &s->allocating, x, grain);
	x->next_free += e->h.grain_secs;
	memset(a->buf, 0, gbytes);
	if (from_parent && treq.secs < e->h.grain_secs)
		vmdk_alloc_fill(a);
	else
		vmdk_alloc_write_grain(a);
}

/* ---- allocating grain tables ------------------------------------------- */

/* Write the dirty sectors of a grain directory, from memory as it is. */
static void vmdk_gd_issue(struct td_meta_seq *q)
{
	struct vmdk_gdseq *d = td_container_of(q, struct vmdk_gdseq, q);
	uint64_t lo = td_round_down(d->lo * 4, VMDK_SECTOR);
	uint64_t hi = td_round_up((d->hi + 1) * 4, VMDK_SECTOR);

	d->dirty = false;
	td_meta_seq_io(q, TD_OP_WRITE, d->disk + lo, hi - lo,
		       d->offset * VMDK_SECTOR + lo);
}

static void vmdk_gd_failed(struct td_meta_seq *q, int err)
{
	struct vmdk_gdseq *d = td_container_of(q, struct vmdk_gdseq, q);

	td_log(TD_LOG_ERR, "%s: writing the %s grain directory: %s",
	       d->x->e->path, d == &d->x->rgd ? "redundant" : "primary",
	       strerror(-err));
}

/* Entry gti of directory d is now sect (0: back to unallocated). */
static void vmdk_gd_set(struct vmdk_gdseq *d, uint64_t gti, uint32_t sect)
{
	td_put_le32(d->disk + gti * 4, sect);
	if (!d->dirty || gti < d->lo)
		d->lo = gti;
	if (!d->dirty || gti > d->hi)
		d->hi = gti;
	d->dirty = true;
}

/* The table is in place (err 0) or not: its writes go again. */
static void vmdk_gtalloc_end(struct vmdk_gtalloc *g, int err)
{
	struct vmdk_xstate *x = g->b.x;
	struct vmdk_state *s = x->s;
	struct td_list waiters;

	if (err)
		td_log(TD_LOG_ERR, "%s: allocating grain table %" PRIu64
		       ": %s", x->e->path, g->b.n, strerror(-err));
	vmdk_busy_end(&g->b, &waiters);
	td_pool_put(&s->gtallocs, g);
	td_meta_wake(&x->meta, &waiters, err);
	vmdk_wake_pool_waiters(s);
}

/* 3. The primary GD entry is written: the table is the disk's. */
static void vmdk_gtalloc_gd_done(struct td_meta_wait *w, int err)
{
	struct vmdk_gtalloc *g = td_container_of(w, struct vmdk_gtalloc,
						 wait);
	struct vmdk_extent *e = g->b.x->e;

	if (err) {
		/* Not again with a later sector: the redundant one has it,
		 * which reads as a table nobody uses (the next one wins). */
		vmdk_gd_set(&g->b.x->gd, g->b.n, e->gd[g->b.n]);
		vmdk_gtalloc_end(g, err);
		return;
	}
	e->gd[g->b.n] = g->host;
	if (e->rgd)
		e->rgd[g->b.n] = g->rhost;
	g->b.x->s->n_gt_alloc++;
	vmdk_gtalloc_end(g, 0);
}

/* 2. The redundant GD entry is written (or there is none). */
static void vmdk_gtalloc_rgd_done(struct td_meta_wait *w, int err)
{
	struct vmdk_gtalloc *g = td_container_of(w, struct vmdk_gtalloc,
						 wait);

	if (err) {
		vmdk_gd_set(&g->b.x->rgd, g->b.n, g->b.x->e->rgd[g->b.n]);
		vmdk_gtalloc_end(g, err);
		return;
	}
	vmdk_gd_set(&g->b.x->gd, g->b.n, g->host);
	td_meta_seq_wait(&g->b.x->gd.q, &g->wait, vmdk_gtalloc_gd_done);
}

/* 1. The new table (both copies) is written, all zeros. */
static void vmdk_gtalloc_gt_done(void *ctx, void *arg, int err)
{
	struct vmdk_gtalloc *g = arg;

	(void)ctx;
	if (err && !g->err)
		g->err = err;
	if (--g->pending)
		return;
	if (g->err) {
		vmdk_gtalloc_end(g, g->err);
		return;
	}
	if (!g->rhost) {
		vmdk_gtalloc_rgd_done(&g->wait, 0);
		return;
	}
	vmdk_gd_set(&g->b.x->rgd, g->b.n, g->rhost);
	td_meta_seq_wait(&g->b.x->rgd.q, &g->wait, vmdk_gtalloc_rgd_done);
}

/*
 * A write into grain table gti, which the GD does not have: it waits
 * while the table is allocated at the end of the file (see the top of
 * this file), then goes again.
 */
static void vmdk_gt_alloc(struct vmdk_state *s, struct vmdk_xstate *x,
			  td_request_t treq, uint64_t gti)
{
	struct vmdk_extent *e = x->e;
	size_t len = (size_t)e->h.gtes * 4;
	uint64_t secs = td_div_round_up(len, VMDK_SECTOR);
	struct vmdk_busy *b = vmdk_busy_find(&s->gt_allocating, x, gti);
	uint8_t *gt = e->gt + gti * len;	/* zeros: not in the GD */
	struct vmdk_gtalloc *g;
	struct td_list none;

	if (b) {
		td_meta_park(&x->meta, &b->waiters, treq);
		return;
	}
	if (x->next_free + (e->rgd ? 2 : 1) * secs > UINT32_MAX) {
		td_complete_request(treq, -ENOSPC);	/* 32-bit offsets */
		return;
	}
	g = td_pool_get(&s->gtallocs);
	if (!g) {
		td_meta_park(&x->meta, &x->wait_pool, treq);
		return;
	}
	g->err = 0;
	vmdk_busy_start(&g->b, &s->gt_allocating, x, gti);
	if (!td_meta_park(&x->meta, &g->b.waiters, treq)) {
		vmdk_busy_end(&g->b, &none);
		td_pool_put(&s->gtallocs, g);
		return;
	}
	g->host = (uint32_t)x->next_free;
	x->next_free += secs;
	g->rhost = 0;
	g->pending = 1;
	if (e->rgd) {
		g->rhost = (uint32_t)x->next_free;
		x->next_free += secs;
		g->pending++;
		td_meta_io(&x->meta, TD_OP_WRITE, gt, len,
			   (uint64_t)g->rhost * VMDK_SECTOR,
			   vmdk_gtalloc_gt_done, g);
	}
	td_meta_io(&x->meta, TD_OP_WRITE, gt, len,
		   (uint64_t)g->host * VMDK_SECTOR, vmdk_gtalloc_gt_done, g);
}

/* ---- requests ---------------------------------------------------------- */

/* One piece of a request: inside one extent and one grain. */
static void vmdk_queue_piece(struct vmdk_state *s, struct vmdk_xstate *x,
			     td_request_t treq)
{
	struct vmdk_extent *e = x->e;
	uint64_t rel = treq.sec - e->start, grain, within;
	uint32_t gte;
	bool zero_gte;

	if (e->type == VMDK_EXTENT_ZERO) {
		vmdk_zero(treq);	/* writes never get here: ro */
		return;
	}
	if (e->type == VMDK_EXTENT_FLAT) {
		td_meta_request_io(&x->meta, treq,
				   (e->offset + rel) * VMDK_SECTOR, NULL);
		return;
	}
	grain = rel / e->h.grain_secs;
	within = rel % e->h.grain_secs;
	gte = vmdk_gte(e, grain);
	zero_gte = gte == VMDK_GTE_ZERO &&
		   (e->h.flags & VMDK_FLAG_ZERO_GTE);
	if (treq.op == TD_OP_WRITE) {
		struct vmdk_busy *b;

		if (!e->gd[grain / e->h.gtes]) {
			vmdk_gt_alloc(s, x, treq, grain / e->h.gtes);
			return;
		}
		b = vmdk_busy_find(&s->allocating, x, grain);
		if (b)
			td_meta_park(&x->meta, &b->waiters, treq);
		else if (gte > VMDK_GTE_ZERO || (gte && !zero_gte))
			td_meta_request_io(&x->meta, treq,
					   ((uint64_t)gte + within) *
					   VMDK_SECTOR, NULL);
		else
			vmdk_write_alloc(s, x, treq, grain, s->has_parent &&
					 gte == VMDK_GTE_UNALLOCATED);
		return;
	}
	if (gte == VMDK_GTE_UNALLOCATED)
		td_forward_request(treq);
	else if (zero_gte)
		vmdk_zero(treq);
	else if (e->compressed)
		vmdk_read_compressed(s, x, treq, grain, gte);
	else
		td_meta_request_io(&x->meta, treq,
				   ((uint64_t)gte + within) * VMDK_SECTOR,
				   NULL);
}

static void vmdk_queue_rw(td_driver_t *drv, td_request_t treq)
{
	struct vmdk_state *s = drv->data;

	while (treq.secs) {
		struct vmdk_extent *e = vmdk_image_extent(s->img, treq.sec);
		struct vmdk_xstate *x = &s->xs[e - s->img->extents];
		uint64_t left = e->start + e->secs - treq.sec;
		td_request_t piece = treq;

		if (e->type == VMDK_EXTENT_SPARSE) {
			uint64_t g = e->h.grain_secs;
			uint64_t in = g - (treq.sec - e->start) % g;

			if (in < left)
				left = in;
		}
		piece.secs = left < treq.secs ? (uint32_t)left : treq.secs;
		treq.buf += (size_t)piece.secs << TD_SECTOR_SHIFT;
		treq.sec += piece.secs;
		treq.secs -= piece.secs;
		vmdk_queue_piece(s, x, piece);
	}
}

static void vmdk_flush_done(void *ctx, void *arg, int err)
{
	struct vmdk_state *s = ctx;
	struct vmdk_flush *f = arg;
	td_request_t treq;

	if (err && !f->err)
		f->err = err;
	if (--f->pending)
		return;
	treq = f->treq;
	err = f->err;
	td_pool_put(&s->flushes, f);
	td_complete_request(treq, err);
}

static void vmdk_queue_flush(td_driver_t *drv, td_request_t treq)
{
	struct vmdk_state *s = drv->data;
	struct vmdk_flush *f = td_pool_get(&s->flushes);
	unsigned i;

	if (!f) {
		td_complete_request(treq, -EBUSY);
		return;
	}
	f->treq = treq;
	f->err = 0;
	f->pending = 1;
	for (i = 0; i < s->img->n_extents; i++) {
		if (!s->xs[i].meta_ready)
			continue;
		f->pending++;
		td_meta_io(&s->xs[i].meta, TD_OP_FLUSH, NULL, 0, 0,
			   vmdk_flush_done, f);
	}
	vmdk_flush_done(s, f, 0);
}

/* ---- open and close ------------------------------------------------------ */

static int vmdk_check_extent_path(void *arg, const char *path, char *err,
				  size_t errlen)
{
	td_driver_t *drv = arg;
	int rc = td_check_path(drv, path);

	if (rc)
		td_errf(err, errlen, rc, "extent %s: %s", path,
			drv->error[0] ? drv->error : strerror(-rc));
	drv->error[0] = '\0';
	return rc;
}

static void vmdk_free_state(struct vmdk_state *s)
{
	unsigned i;

	if (s->xs) {
		for (i = 0; i < s->img->n_extents; i++) {
			td_meta_fini(&s->xs[i].meta);
			free(s->xs[i].gts);
			free(s->xs[i].gd.disk);
			free(s->xs[i].rgd.disk);
		}
		free(s->xs);
		s->xs = NULL;
	}
	td_pool_fini(&s->allocs);
	td_pool_fini(&s->gtallocs);
	td_pool_fini(&s->creads);
	td_pool_fini(&s->flushes);
	td_inflate_free(s->zs);
	s->zs = NULL;
	vmdk_image_close(s->img);
	s->img = NULL;
}

/* The writes of directory d, at sector offset, holding entries. */
static int vmdk_gdseq_init(struct vmdk_xstate *x, struct vmdk_gdseq *d,
			   const uint32_t *entries, uint64_t offset)
{
	uint64_t n = x->e->gd_entries, j;

	d->x = x;
	d->offset = offset;
	d->disk = td_zalloc_aligned(td_round_up(n * 4, VMDK_SECTOR));
	if (!d->disk)
		return -ENOMEM;
	for (j = 0; j < n; j++)
		td_put_le32(d->disk + j * 4, entries[j]);
	td_meta_seq_init(&d->q, &x->meta, vmdk_gd_issue, vmdk_gd_failed);
	return 0;
}

static int vmdk_open_extent_state(struct vmdk_state *s, unsigned i)
{
	struct vmdk_xstate *x = &s->xs[i];
	struct vmdk_extent *e = &s->img->extents[i];
	unsigned nios = s->img->n_extents > 4 ? VMDK_MAX_IOCBS_MANY :
			VMDK_MAX_IOCBS;
	uint64_t j;

	x->s = s;
	x->e = e;
	x->next_free = e->file_secs;
	td_list_init(&x->wait_pool);
	if (e->type == VMDK_EXTENT_ZERO)
		return 0;
	if (td_meta_init(&x->meta, s->drv, e->fd, s, vmdk_redispatch, nios,
			 VMDK_MAX_PARKED))
		return -ENOMEM;
	x->meta_ready = true;
	if (e->type == VMDK_EXTENT_SPARSE && e->h.grain_secs * VMDK_SECTOR >
	    s->max_grain)
		s->max_grain = (uint32_t)(e->h.grain_secs * VMDK_SECTOR);
	if (s->rdonly || e->type != VMDK_EXTENT_SPARSE)
		return 0;
	x->gts = calloc(e->gd_entries ? e->gd_entries : 1, sizeof(*x->gts));
	if (!x->gts)
		return -ENOMEM;
	for (j = 0; j < e->gd_entries; j++) {
		x->gts[j].x = x;
		x->gts[j].gti = j;
		td_meta_seq_init(&x->gts[j].q, &x->meta, vmdk_gt_issue, NULL);
	}
	if (vmdk_gdseq_init(x, &x->gd, e->gd, e->h.gd_offset) ||
	    (e->rgd && vmdk_gdseq_init(x, &x->rgd, e->rgd, e->h.rgd_offset)))
		return -ENOMEM;
	return 0;
}

static int vmdk_open(td_driver_t *drv, const char *path, td_flag_t flags)
{
	struct vmdk_state *s = drv->data;
	bool compressed = false;
	char err[1024];
	unsigned i;
	int rc;

	s->drv = drv;
	s->rdonly = flags & TD_OPEN_RDONLY;
	td_list_init(&s->allocating);
	td_list_init(&s->gt_allocating);
	rc = vmdk_image_open(&s->img, path, s->rdonly ? 0 : VMDK_IMAGE_RDWR,
			     vmdk_check_extent_path, drv, err, sizeof(err));
	if (rc)
		return td_meta_refuse(drv, rc, err);
	s->has_parent = s->img->desc.parent_hint[0] != '\0';
	rc = -ENOMEM;
	s->xs = calloc(s->img->n_extents, sizeof(*s->xs));
	if (!s->xs)
		goto fail;
	for (i = 0; i < s->img->n_extents; i++) {
		if (vmdk_open_extent_state(s, i))
			goto fail;
		compressed |= s->img->extents[i].compressed;
	}
	if (!s->max_grain)
		s->max_grain = VMDK_SECTOR;
	s->alloc_hdr = td_round_up(sizeof(struct vmdk_alloc), TD_BUF_ALIGN);
	s->cread_hdr = td_round_up(sizeof(struct vmdk_cread), TD_BUF_ALIGN);
	/* A compressed grain is at most a little larger than the grain. */
	s->raw_len = td_round_up(2 * (size_t)s->max_grain + VMDK_SECTOR,
				 TD_BUF_ALIGN);
	if (td_pool_init(&s->flushes, VMDK_FLUSHES, sizeof(struct vmdk_flush),
			 sizeof(void *)))
		goto fail;
	if (!s->rdonly &&
	    (td_pool_init(&s->allocs, VMDK_ALLOCS,
			  s->alloc_hdr + s->max_grain, TD_BUF_ALIGN) ||
	     td_pool_init(&s->gtallocs, VMDK_GT_ALLOCS,
			  sizeof(struct vmdk_gtalloc), sizeof(void *))))
		goto fail;
	if (compressed) {
		if (td_pool_init(&s->creads, VMDK_CREADS, s->cread_hdr +
				 s->raw_len + s->max_grain, TD_BUF_ALIGN) ||
		    !(s->zs = td_inflate_new_zlib()))
			goto fail;
	}
	drv->info.size = s->img->capacity;
	drv->info.sector_size = TD_SECTOR_SIZE;
	drv->info.io_align = 0;
	return 0;
fail:
	vmdk_free_state(s);
	return rc;
}

static int vmdk_close(td_driver_t *drv)
{
	struct vmdk_state *s = drv->data;

	vmdk_free_state(s);
	return 0;
}

/* ---- parents --------------------------------------------------------------- */

static int vmdk_get_parent_id(td_driver_t *drv, td_disk_id_t *id)
{
	struct vmdk_state *s = drv->data;
	char *path;
	int rc;

	rc = vmdk_image_parent(s->img, &path);
	if (rc == 1)
		return TD_NO_PARENT;
	if (rc)
		return rc;
	return td_parent_probe(drv, path, "parent", id);
}

extern const struct tap_disk tapdisk_vmdk;

/*
 * A vmdk parent must carry the CID its child recorded as parentCID: read
 * from the parent's descriptor (its driver's state is its own).
 */
static int vmdk_validate_parent(td_driver_t *drv, td_driver_t *parent,
				td_flag_t flags)
{
	struct vmdk_state *s = drv->data;
	char why[sizeof(drv->error)];
	uint32_t cid;
	int rc;

	(void)flags;
	if (parent->ops != &tapdisk_vmdk || !s->img->desc.has_parent_cid)
		return 0;
	why[0] = '\0';
	rc = vmdk_image_cid(parent->name, &cid, why, sizeof(why));
	if (rc) {
		td_msgf(drv->error, sizeof(drv->error), "%s: the CID of its "
			"parent: %s", drv->name, why[0] ? why : strerror(-rc));
		return rc;
	}
	if (cid == s->img->desc.parent_cid)
		return 0;
	td_msgf(drv->error, sizeof(drv->error), "%s: parentCID %08x does "
		"not match CID %08x of its parent %s", drv->name,
		s->img->desc.parent_cid, cid, parent->name);
	return -EINVAL;
}

static void vmdk_debug(td_driver_t *drv, FILE *out)
{
	struct vmdk_state *s = drv->data;

	fprintf(out, "vmdk:%s %s, %u extent(s), %llu bytes, %llu grains "
		"(%llu filled from the parent) and %llu grain tables "
		"allocated here\n", drv->name,
		s->img->desc.create_type[0] ? s->img->desc.create_type :
		"sparse extent", s->img->n_extents,
		(unsigned long long)(s->img->capacity << TD_SECTOR_SHIFT),
		(unsigned long long)s->n_alloc, (unsigned long long)s->n_cow,
		(unsigned long long)s->n_gt_alloc);
}

static int vmdk_create(const char *path, uint64_t size, td_flag_t flags)
{
	char err[512];
	int rc;

	(void)flags;
	rc = vmdk_image_create(path, size, err, sizeof(err));
	if (rc)
		td_log(TD_LOG_ERR, "%s", err);
	return rc;
}

const struct tap_disk tapdisk_vmdk = {
	TD_DISK_VERSION,
	.name			= "vmdk",
	.description		= "VMware vmdk: sparse, flat, split, "
				  "streamOptimized (read-only)",
	.private_data_size	= sizeof(struct vmdk_state),
	.td_open		= vmdk_open,
	.td_close		= vmdk_close,
	.td_get_parent_id	= vmdk_get_parent_id,
	.td_validate_parent	= vmdk_validate_parent,
	.td_queue_read		= vmdk_queue_rw,
	.td_queue_write		= vmdk_queue_rw,
	.td_queue_flush		= vmdk_queue_flush,
	.td_debug		= vmdk_debug,
	.td_create		= vmdk_create,
	.td_probe		= vmdk_probe,
};
