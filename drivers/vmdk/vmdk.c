/* SPDX-License-Identifier: MIT */
/*
 * vmdk: VMware virtual disks.  monolithicSparse, monolithicFlat,
 * twoGbMaxExtentSparse/Flat (a request is split at extent and grain
 * boundaries), streamOptimized (compressed grains, read-only) and child
 * disks (parentFileNameHint, with the CID/parentCID check).
 *
 * Everything about the disk is read at open (vmdk-image.c): descriptor,
 * extents, and every grain table, kept in memory in disk format; so the
 * data path never waits for metadata.  Each extent file has its own
 * td_meta (its fd, its I/O pool, its parked requests).
 *
 * Writing a sparse extent, crash-safe order.  A write to an allocated
 * grain goes in place.  A write to an unallocated (or zeroed) grain
 * allocates a grain at the end of the extent file and:
 *   1. writes the whole grain (the request's data, zeros around it);
 *   2. once that is done, sets the grain table entry in memory (reads
 *      find the grain from now on: its data is there) and writes the
 *      grain table, primary and redundant copies, through the grain
 *      table's sequencer (one write of a table in flight; later entries
 *      wait for the next);
 *   3. then completes the request.
 * Grain tables are all in place (tapfs creates them with the disk, as
 * QEMU does; an image with a missing one is refused for writing), so
 * the grain directories are never written.  A crash before 2 leaves a
 * grain nobody points at past the old end (a leak; the next grain goes
 * after it); a crash during 2 leaves the primary or redundant entry of
 * that grain set or not, each pointing at complete data.  Durability is
 * the client's flush: an fsync of every extent file, which covers every
 * completed write, data and table alike.
 * Concurrent writes to a grain being allocated wait for it (parked) and
 * are dispatched again when it is in the table.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>
#include <tapfs/tapdisk.h>

#include "common/td-fileio.h"
#include "common/td-meta.h"
#include "common/td-util.h"
#include "vmdk-image.h"

#define VMDK_MAX_IOCBS		256u
#define VMDK_MAX_IOCBS_MANY	32u	/* per extent, with many extents */
#define VMDK_MAX_PARKED		1024u
#define VMDK_ALLOCS		16u
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

/* Per extent file. */
struct vmdk_xstate {
	struct vmdk_state	*s;
	struct vmdk_extent	*e;
	struct td_meta		 meta;
	struct vmdk_gtseq	*gts;		/* read-write sparse */
	uint64_t		 next_free;	/* sector of the next grain */
	struct td_list		 wait_pool;	/* parked: no alloc/cread */
	bool			 meta_ready;
};

/* A grain being allocated (a write to an unallocated grain). */
struct vmdk_alloc {
	struct vmdk_xstate	*x;
	td_request_t		 treq;
	uint64_t		 grain;		/* in the extent */
	uint32_t		 host;		/* sector */
	struct td_list		 link;		/* s->allocating */
	struct td_list		 waiters;	/* writes to this grain */
	struct td_meta_wait	 wait;
	uint8_t			*buf;		/* grain_bytes */
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
	struct td_pool		 creads;
	struct td_pool		 flushes;
	struct td_list		 allocating;
	size_t			 alloc_hdr, cread_hdr, raw_len;
	uint32_t		 max_grain;	/* bytes, largest grain */
	z_stream		 zs;
	bool			 zs_ready;
	uint64_t		 n_alloc;
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
	int ret;

	if (vmdk_marker_decode(c->raw, len, &lba, &size, why, sizeof(why)) ||
	    lba != c->grain * e->h.grain_secs) {
		td_log(TD_LOG_ERR, "%s: grain %" PRIu64 ": bad marker (lba %"
		       PRIu64 ")", e->path, c->grain, lba);
		return -EIO;
	}
	inflateReset(&s->zs);
	s->zs.next_in = c->raw + VMDK_MARKER_SIZE;
	s->zs.avail_in = size;
	s->zs.next_out = c->out;
	s->zs.avail_out = (uInt)gbytes;
	ret = inflate(&s->zs, Z_FINISH);
	if (ret != Z_STREAM_END) {
		td_log(TD_LOG_ERR, "%s: grain %" PRIu64 " does not inflate "
		       "(zlib %d)", e->path, c->grain, ret);
		return -EIO;
	}
	memset(c->out + (gbytes - s->zs.avail_out), 0, s->zs.avail_out);
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

static struct vmdk_alloc *vmdk_alloc_find(struct vmdk_state *s,
					  struct vmdk_xstate *x,
					  uint64_t grain)
{
	struct td_list *l;

	for (l = s->allocating.next; l != &s->allocating; l = l->next) {
		struct vmdk_alloc *a = td_container_of(l, struct vmdk_alloc,
						       link);

		if (a->x == x && a->grain == grain)
			return a;
	}
	return NULL;
}

static void vmdk_alloc_end(struct vmdk_alloc *a, int err)
{
	struct vmdk_xstate *x = a->x;
	struct vmdk_state *s = x->s;
	td_request_t treq = a->treq;
	struct td_list waiters;

	td_list_del(&a->link);
	td_list_move(&waiters, &a->waiters);
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
	struct vmdk_xstate *x = a->x;
	struct vmdk_extent *e = x->e;

	(void)ctx;
	if (err) {
		vmdk_alloc_end(a, err);
		return;
	}
	td_put_le32(e->gt + a->grain * 4, a->host);
	x->s->n_alloc++;
	td_meta_seq_wait(&x->gts[a->grain / e->h.gtes].q, &a->wait,
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

static void vmdk_write_alloc(struct vmdk_state *s, struct vmdk_xstate *x,
			     td_request_t treq, uint64_t grain)
{
	struct vmdk_extent *e = x->e;
	size_t gbytes = (size_t)e->h.grain_secs * VMDK_SECTOR;
	uint64_t within = (treq.sec - e->start) % e->h.grain_secs;
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
	a->x = x;
	a->treq = treq;
	a->grain = grain;
	a->host = (uint32_t)x->next_free;
	a->buf = (uint8_t *)a + s->alloc_hdr;
	td_list_init(&a->waiters);
	td_list_add_tail(&a->link, &s->allocating);
	x->next_free += e->h.grain_secs;
	memset(a->buf, 0, gbytes);
	memcpy(a->buf + within * VMDK_SECTOR, treq.buf,
	       (size_t)treq.secs << TD_SECTOR_SHIFT);
	td_meta_io(&x->meta, TD_OP_WRITE, a->buf, gbytes,
		   (uint64_t)a->host * VMDK_SECTOR, vmdk_grain_written, a);
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
		struct vmdk_alloc *a = vmdk_alloc_find(s, x, grain);

		if (a)
			td_meta_park(&x->meta, &a->waiters, treq);
		else if (gte > VMDK_GTE_ZERO || (gte && !zero_gte))
			td_meta_request_io(&x->meta, treq,
					   ((uint64_t)gte + within) *
					   VMDK_SECTOR, NULL);
		else
			vmdk_write_alloc(s, x, treq, grain);
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
		}
		free(s->xs);
		s->xs = NULL;
	}
	td_pool_fini(&s->allocs);
	td_pool_fini(&s->creads);
	td_pool_fini(&s->flushes);
	if (s->zs_ready)
		inflateEnd(&s->zs);
	s->zs_ready = false;
	vmdk_image_close(s->img);
	s->img = NULL;
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
	rc = vmdk_image_open(&s->img, path, s->rdonly ? 0 : VMDK_IMAGE_RDWR,
			     vmdk_check_extent_path, drv, err, sizeof(err));
	if (rc)
		return td_meta_refuse(drv, rc, err);
	s->has_parent = s->img->desc.parent_hint[0] != '\0';
	if (s->has_parent && !s->rdonly) {
		td_msgf(drv->error, sizeof(drv->error), "%s: writing a vmdk "
			"child disk (parentFileNameHint) is not supported: "
			"open it ro", path);
		rc = -ENOTSUP;
		goto fail;
	}
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
	    td_pool_init(&s->allocs, VMDK_ALLOCS,
			 s->alloc_hdr + s->max_grain, TD_BUF_ALIGN))
		goto fail;
	if (compressed) {
		if (td_pool_init(&s->creads, VMDK_CREADS, s->cread_hdr +
				 s->raw_len + s->max_grain, TD_BUF_ALIGN) ||
		    inflateInit(&s->zs) != Z_OK)
			goto fail;
		s->zs_ready = true;
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

/* A vmdk parent must carry the CID its child recorded as parentCID. */
static int vmdk_validate_parent(td_driver_t *drv, td_driver_t *parent,
				td_flag_t flags)
{
	struct vmdk_state *s = drv->data, *p;

	(void)flags;
	if (parent->ops != &tapdisk_vmdk || !s->img->desc.has_parent_cid)
		return 0;
	p = parent->data;
	if (p->img->desc.cid == s->img->desc.parent_cid)
		return 0;
	td_msgf(drv->error, sizeof(drv->error), "%s: parentCID %08x does "
		"not match CID %08x of its parent %s", drv->name,
		s->img->desc.parent_cid, p->img->desc.cid, parent->name);
	return -EINVAL;
}

static void vmdk_debug(td_driver_t *drv, FILE *out)
{
	struct vmdk_state *s = drv->data;

	fprintf(out, "vmdk:%s %s, %u extent(s), %llu bytes, %llu grains "
		"allocated here\n", drv->name,
		s->img->desc.create_type[0] ? s->img->desc.create_type :
		"sparse extent", s->img->n_extents,
		(unsigned long long)(s->img->capacity << TD_SECTOR_SHIFT),
		(unsigned long long)s->n_alloc);
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
