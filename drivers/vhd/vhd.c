/* SPDX-License-Identifier: MIT */
/*
 * vhd: fixed, dynamic and differencing VHD images, asynchronous.
 *
 * Metadata is parsed once at open by vhd-image.c (synchronous, before the
 * image serves I/O); the data path here is libaio on an O_DIRECT fd.
 *
 * Reads: an unallocated block is forwarded to the parent (zeros past the
 * chain).  In a dynamic disk an allocated block is read as is (its
 * unwritten sectors are holes).  In a differencing disk the block's
 * sector bitmap, loaded asynchronously on first use, splits the request
 * into runs read here and runs forwarded to the parent.
 *
 * Block allocation, one block at a time but many blocks at once, each
 * step after the previous one completed:
 *   1. a footer past the end of the new block (the file always ends with
 *      a valid footer);
 *   2. the write's data, the block's bitmap (and zeros over any gap left
 *      by aligning the block's data to 4 KiB);
 *   3. a barrier (fsync): nothing below may be durable before 2 is;
 *   4. the BAT entry: the commit point.  Then the write completes.
 * A crash at any point leaves a valid image: before 4 the new space is
 * unreferenced (a leak, which the next read-write open reclaims:
 * VHD_IMAGE_RECLAIM), after 4 the block is complete.  Footers,
 * barriers and BAT sectors are written by group-commit sequencers
 * (td-meta.h), so concurrent allocations share their metadata writes,
 * and never two writes of the same metadata are in flight (a late stale
 * copy could otherwise overwrite a newer one).  Requests for a block
 * being allocated wait for it; requests for other blocks do not.
 *
 * A write into an allocated block of a differencing disk that sets new
 * bitmap bits goes data, barrier, bitmap (per-block sequencer), then
 * completes.  Dynamic disks get an all-ones bitmap at allocation and
 * never need another bitmap write.
 *
 * Discard: a fixed disk punches a hole (reads back zeros).  Dynamic and
 * differencing disks refuse it (-EOPNOTSUPP): a sector cannot be freed
 * inside a block, and in a differencing disk freeing would expose the
 * parent's older data instead of zeros.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>

#include "common/td-fileio.h"
#include "common/td-meta.h"
#include "common/td-util.h"
#include "vhd-image.h"

#define VHD_MAX_IOCBS		2048
#define VHD_MAX_PIECES		1024
#define VHD_MAX_ALLOCS		256
#define VHD_GAP_MAX		4096u	/* data aligned to 4 KiB */

enum vhd_blk_state {
	BLK_UNLOADED,	/* allocated, bitmap not in memory */
	BLK_LOADING,
	BLK_READY,
	BLK_ALLOCATING,
};

/* In-memory state of one block, made on first use. */
struct vhd_blk {
	enum vhd_blk_state state;
	uint32_t	 block;
	uint8_t		*bitmap;	/* differencing only, aligned */
	struct td_list	 waiters;	/* td_meta_req: loading, allocating */
	struct td_meta_seq bm;		/* bitmap writes */
};

struct vhd_state;

/* One block allocation in progress. */
struct vhd_alloc {
	struct vhd_state *s;
	td_request_t	 treq;		/* the write that allocates */
	uint32_t	 block;
	struct vhd_blk	*blk;
	uint64_t	 gap_off;	/* zeros here, gap_len bytes */
	uint32_t	 gap_len;
	uint64_t	 bm_off;	/* bitmap; data follows */
	uint64_t	 end;		/* first byte after the block */
	unsigned	 pending;
	int		 err;
	struct td_meta_wait wait;
};

struct vhd_state {
	td_driver_t		*drv;
	struct vhd_image	*img;	/* metadata, parsed at open */
	int			 fd;	/* data path, O_DIRECT if allowed */
	bool			 fixed, diff;
	uint32_t		 spb;	/* sectors per block */
	uint32_t		 bm_size;
	uint32_t		 nblocks;
	uint32_t		*bat;	/* host order (img->bat) */
	uint8_t			*bat_disk;	/* disk format, aligned */
	size_t			 bat_bytes;	/* rounded to sectors */
	uint32_t		 bat_lo, bat_hi;	/* dirty entries */
	bool			 bat_dirty;
	struct vhd_blk		**blks;
	uint64_t		 next_block;	/* where the next one goes */
	uint8_t			*footer;	/* encoded, aligned */
	uint8_t			*zeros;		/* VHD_GAP_MAX, aligned */
	uint8_t			*ones;		/* a full bitmap, aligned */

	struct td_meta		 meta;		/* I/O, barrier, parking */
	struct td_meta_seq	 footer_seq;
	uint64_t		 footer_target;	/* of the one in flight */
	struct td_meta_seq	 bat_seq;

	struct td_pool		 allocs;
};

static void vhd_dispatch(struct vhd_state *s, td_request_t treq);

static uint64_t vhd_block_data(const struct vhd_state *s, uint32_t block)
{
	return ((uint64_t)s->bat[block] << TD_SECTOR_SHIFT) + s->bm_size;
}

/* Offset of sector sec (inside an allocated block) in the file. */
static uint64_t vhd_sector_data(const struct vhd_state *s, uint64_t sec)
{
	return vhd_block_data(s, (uint32_t)(sec / s->spb)) +
	       ((sec % s->spb) << TD_SECTOR_SHIFT);
}

/* ---- sequencers: footer, BAT, bitmap ----------------------------------- */

static void vhd_footer_failed(struct td_meta_seq *q, int err)
{
	struct vhd_state *s = q->m->ctx;

	td_log(TD_LOG_ERR, "%s: writing the footer at %llu: %s",
	       s->drv->name, (unsigned long long)s->footer_target,
	       strerror(-err));
}

static void vhd_footer_issue(struct td_meta_seq *q)
{
	struct vhd_state *s = q->m->ctx;

	/* Past every block reserved so far, not only the waiters'. */
	s->footer_target = s->next_block;
	td_meta_seq_io(q, TD_OP_WRITE, s->footer, VHD_FOOTER_SIZE,
		       s->footer_target);
}

static void vhd_bat_failed(struct td_meta_seq *q, int err)
{
	struct vhd_state *s = q->m->ctx;

	td_log(TD_LOG_ERR, "%s: writing the BAT: %s", s->drv->name,
	       strerror(-err));
}

/* Write the BAT sectors holding entries changed since the last write. */
static void vhd_bat_issue(struct td_meta_seq *q)
{
	struct vhd_state *s = q->m->ctx;
	uint64_t first, last, off;

	first = ((uint64_t)s->bat_lo * 4) >> TD_SECTOR_SHIFT;
	last = ((uint64_t)s->bat_hi * 4) >> TD_SECTOR_SHIFT;
	s->bat_dirty = false;
	off = s->img->header.table_offset + (first << TD_SECTOR_SHIFT);
	td_meta_seq_io(q, TD_OP_WRITE, s->bat_disk +
		       (first << TD_SECTOR_SHIFT),
		       (size_t)(last - first + 1) << TD_SECTOR_SHIFT, off);
}

static void vhd_bat_set(struct vhd_state *s, uint32_t block, uint32_t sector)
{
	s->bat[block] = sector;
	td_put_be32(s->bat_disk + (size_t)block * 4, sector);
	if (!s->bat_dirty) {
		s->bat_lo = s->bat_hi = block;
		s->bat_dirty = true;
	} else {
		if (block < s->bat_lo)
			s->bat_lo = block;
		if (block > s->bat_hi)
			s->bat_hi = block;
	}
}

static void vhd_bitmap_issue(struct td_meta_seq *q)
{
	struct vhd_state *s = q->m->ctx;
	struct vhd_blk *b = td_container_of(q, struct vhd_blk, bm);

	td_meta_seq_io(q, TD_OP_WRITE, b->bitmap, s->bm_size,
		       (uint64_t)s->bat[b->block] << TD_SECTOR_SHIFT);
}

/* ---- block state -------------------------------------------------------- */

static struct vhd_blk *vhd_blk_get(struct vhd_state *s, uint32_t block)
{
	struct vhd_blk *b = s->blks[block];

	if (b)
		return b;
	/* Once per block in the image's life, not per request. */
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->state = BLK_UNLOADED;
	b->block = block;
	td_list_init(&b->waiters);
	td_meta_seq_init(&b->bm, &s->meta, vhd_bitmap_issue, NULL);
	s->blks[block] = b;
	return b;
}

static void vhd_bitmap_loaded(void *ctx, void *arg, int err)
{
	struct vhd_state *s = ctx;
	struct vhd_blk *b = arg;

	if (err) {
		td_log(TD_LOG_ERR, "%s: reading a block bitmap: %s",
		       s->drv->name, strerror(-err));
		b->state = BLK_UNLOADED;
	} else {
		b->state = BLK_READY;
	}
	td_meta_wake(&s->meta, &b->waiters, err);
}

static void vhd_bitmap_load(struct vhd_state *s, struct vhd_blk *b)
{
	if (!b->bitmap)
		b->bitmap = td_zalloc_aligned(s->bm_size);
	if (!b->bitmap) {
		td_meta_wake(&s->meta, &b->waiters, -ENOMEM);
		return;
	}
	b->state = BLK_LOADING;
	td_meta_io(&s->meta, TD_OP_READ, b->bitmap, s->bm_size,
		   (uint64_t)s->bat[b->block] << TD_SECTOR_SHIFT,
		   vhd_bitmap_loaded, b);
}

/* ---- allocation --------------------------------------------------------- */

static void vhd_alloc_finish(struct vhd_alloc *a, int err)
{
	struct vhd_state *s = a->s;
	struct vhd_blk *b = a->blk;
	td_request_t treq = a->treq;

	if (err) {
		td_log(TD_LOG_ERR, "%s: allocating block %u: %s",
		       s->drv->name, a->block, strerror(-err));
		/* A BAT write that failed leaves the entry set in memory:
		 * later writes of the block then land in its space. */
		b->state = s->bat[a->block] == VHD_BAT_UNUSED ?
			   BLK_UNLOADED : BLK_READY;
	} else {
		b->state = BLK_READY;
	}
	td_pool_put(&s->allocs, a);
	td_complete_request(treq, err);
	td_meta_wake(&s->meta, &b->waiters, 0);
}

static void vhd_alloc_bat_done(struct td_meta_wait *w, int err)
{
	vhd_alloc_finish(td_container_of(w, struct vhd_alloc, wait), err);
}

static void vhd_alloc_barrier_done(struct td_meta_wait *w, int err)
{
	struct vhd_alloc *a = td_container_of(w, struct vhd_alloc, wait);
	struct vhd_state *s = a->s;

	if (err) {
		vhd_alloc_finish(a, err);
		return;
	}
	/* 4. The BAT entry commits the block. */
	vhd_bat_set(s, a->block, (uint32_t)(a->bm_off >> TD_SECTOR_SHIFT));
	td_meta_seq_wait(&s->bat_seq, &a->wait, vhd_alloc_bat_done);
}

/* One write of step 2 is done (or, with a NULL ctx, the guard). */
static void vhd_alloc_step2_done(void *ctx, void *arg, int err)
{
	struct vhd_alloc *a = arg;

	(void)ctx;
	if (err && !a->err)
		a->err = err;
	if (--a->pending)
		return;
	if (a->err) {
		vhd_alloc_finish(a, a->err);
		return;
	}
	/* 3. Barrier. */
	td_meta_barrier(&a->s->meta, &a->wait, vhd_alloc_barrier_done);
}

static void vhd_alloc_footer_done(struct td_meta_wait *w, int err)
{
	struct vhd_alloc *a = td_container_of(w, struct vhd_alloc, wait);
	struct vhd_state *s = a->s;
	uint32_t in = (uint32_t)(a->treq.sec % s->spb);

	if (err) {
		vhd_alloc_finish(a, err);
		return;
	}
	/* 2. Data, bitmap, zeros over the gap. */
	a->pending = 3 + (a->gap_len != 0);
	td_meta_io(&s->meta, TD_OP_WRITE, a->treq.buf,
		   (size_t)a->treq.secs << TD_SECTOR_SHIFT,
		   a->bm_off + s->bm_size + ((uint64_t)in << TD_SECTOR_SHIFT),
		   vhd_alloc_step2_done, a);
	td_meta_io(&s->meta, TD_OP_WRITE, s->diff ? a->blk->bitmap : s->ones,
		   s->bm_size, a->bm_off, vhd_alloc_step2_done, a);
	if (a->gap_len)
		td_meta_io(&s->meta, TD_OP_WRITE, s->zeros, a->gap_len,
			   a->gap_off, vhd_alloc_step2_done, a);
	vhd_alloc_step2_done(NULL, a, 0);
}
/* Allocate block for the write treq (which lies inside it). */
static void vhd_alloc_start(struct vhd_state *s, struct vhd_blk *b,
			    uint32_t block, td_request_t treq)
{
	struct vhd_alloc *a = td_pool_get(&s->allocs);
	uint64_t start = s->next_block, data;
	uint32_t in = (uint32_t)(treq.sec % s->spb);

	if (!a) {
		td_complete_request(treq, -EBUSY);
		return;
	}
	data = (start + s->bm_size + VHD_GAP_MAX - 1) & ~(uint64_t)
	       (VHD_GAP_MAX - 1);
	memset(a, 0, sizeof(*a));
	a->s = s;
	a->treq = treq;
	a->block = block;
	a->blk = b;
	a->bm_off = data - s->bm_size;
	a->gap_off = start;
	a->gap_len = (uint32_t)(a->bm_off - start);
	a->end = data + ((uint64_t)s->spb << TD_SECTOR_SHIFT);
	if ((a->bm_off >> TD_SECTOR_SHIFT) >= VHD_BAT_UNUSED) {
		td_pool_put(&s->allocs, a);
		td_log(TD_LOG_ERR, "%s: full: a VHD file cannot pass 2 TiB",
		       s->drv->name);
		td_complete_request(treq, -ENOSPC);
		return;
	}
	if (s->diff) {
		if (!b->bitmap)
			b->bitmap = td_zalloc_aligned(s->bm_size);
		if (!b->bitmap) {
			td_pool_put(&s->allocs, a);
			td_complete_request(treq, -ENOMEM);
			return;
		}
		memset(b->bitmap, 0, s->bm_size);
		vhd_bitmap_set_range(b->bitmap, in, treq.secs);
	}
	b->state = BLK_ALLOCATING;
	s->next_block = a->end;
	/* 1. A footer past the new block. */
	td_meta_seq_wait(&s->footer_seq, &a->wait, vhd_alloc_footer_done);
}

/* ---- writes into an allocated block of a differencing disk ------------ */

static void vhd_diff_barrier_done(struct td_meta_wait *w, int err)
{
	struct td_meta_req *r = td_meta_req_of(w);
	struct vhd_state *s = r->m->ctx;
	struct vhd_blk *b = s->blks[r->treq.sec / s->spb];

	if (err) {
		td_meta_req_complete(r, err);
		return;
	}
	/* The data is durable: now the bits may say it is here. */
	vhd_bitmap_set_range(b->bitmap, (uint32_t)(r->treq.sec % s->spb),
			     r->treq.secs);
	td_meta_seq_wait(&b->bm, &r->wait, td_meta_req_done);
}

static void vhd_diff_write_done(void *ctx, void *arg, int err)
{
	struct vhd_state *s = ctx;
	struct td_meta_req *r = arg;

	if (err) {
		td_meta_req_complete(r, err);
		return;
	}
	td_meta_barrier(&s->meta, &r->wait, vhd_diff_barrier_done);
}

/* A write into an allocated block that sets new bitmap bits. */
static void vhd_diff_write(struct vhd_state *s, td_request_t treq)
{
	struct td_meta_req *r = td_meta_req_get(&s->meta, treq);

	if (!r)
		return;
	td_meta_io(&s->meta, TD_OP_WRITE, treq.buf,
		   (size_t)treq.secs << TD_SECTOR_SHIFT,
		   vhd_sector_data(s, treq.sec), vhd_diff_write_done, r);
}

/* ---- dispatch ------------------------------------------------------------ */

/* A read of ready block b of a differencing disk: runs by bitmap. */
static void vhd_diff_read(struct vhd_state *s, struct vhd_blk *b,
			  td_request_t treq)
{
	uint32_t in = (uint32_t)(treq.sec % s->spb), done = 0;

	while (done < treq.secs) {
		td_request_t piece = treq;
		bool here;
		uint32_t n = vhd_bitmap_run(b->bitmap, in + done,
					    treq.secs - done, &here);

		piece.sec = treq.sec + done;
		piece.secs = n;
		piece.buf = treq.buf + ((size_t)done << TD_SECTOR_SHIFT);
		done += n;
		if (here)
			td_meta_request_io(&s->meta, piece,
					   vhd_sector_data(s, piece.sec),
					   NULL);
		else
			td_forward_request(piece);
	}
}

/* treq lies inside one block of a dynamic or differencing disk. */
static void vhd_dispatch_block(void *ctx, td_request_t treq)
{
	struct vhd_state *s = ctx;
	uint32_t block = (uint32_t)(treq.sec / s->spb);
	uint32_t in = (uint32_t)(treq.sec % s->spb);
	struct vhd_blk *b = s->blks[block];

	if (b && (b->state == BLK_ALLOCATING || b->state == BLK_LOADING)) {
		td_meta_park(&s->meta, &b->waiters, treq);
		return;
	}
	if (s->bat[block] == VHD_BAT_UNUSED) {
		if (treq.op == TD_OP_READ) {
			td_forward_request(treq);
			return;
		}
		b = vhd_blk_get(s, block);
		if (!b) {
			td_complete_request(treq, -ENOMEM);
			return;
		}
		vhd_alloc_start(s, b, block, treq);
		return;
	}
	if (!s->diff) {
		td_meta_request_io(&s->meta, treq,
				   vhd_sector_data(s, treq.sec), NULL);
		return;
	}
	if (!b)
		b = vhd_blk_get(s, block);
	if (!b) {
		td_complete_request(treq, -ENOMEM);
		return;
	}
	if (b->state == BLK_UNLOADED) {
		if (td_meta_park(&s->meta, &b->waiters, treq))
			vhd_bitmap_load(s, b);
		return;
	}
	if (treq.op == TD_OP_READ) {
		vhd_diff_read(s, b, treq);
		return;
	}
	if (vhd_bitmap_count(b->bitmap, in, treq.secs) == treq.secs) {
		td_meta_request_io(&s->meta, treq,
				   vhd_sector_data(s, treq.sec), NULL);
		return;
	}
	vhd_diff_write(s, treq);
}

/* Split treq at block boundaries. */
static void vhd_dispatch(struct vhd_state *s, td_request_t treq)
{
	if (s->fixed) {
		td_meta_request_io(&s->meta, treq, treq.sec << TD_SECTOR_SHIFT,
				   NULL);
		return;
	}
	td_meta_split(treq, s->spb, vhd_dispatch_block, s);
}

/* td_meta_dispatch_t: a parked request's turn again. */
static void vhd_redispatch(void *ctx, td_request_t treq)
{
	vhd_dispatch(ctx, treq);
}

static void vhd_queue_rw(td_driver_t *drv, td_request_t treq)
{
	vhd_dispatch(drv->data, treq);
}

static void vhd_queue_flush(td_driver_t *drv, td_request_t treq)
{
	struct vhd_state *s = drv->data;

	td_meta_request_io(&s->meta, treq, 0, NULL);
}

static void vhd_queue_discard(td_driver_t *drv, td_request_t treq)
{
	struct vhd_state *s = drv->data;
	int err = 0;

	if (!s->fixed) {
		td_complete_request(treq, -EOPNOTSUPP);
		return;
	}
	if (fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(treq.sec << TD_SECTOR_SHIFT),
		      (off_t)treq.secs << TD_SECTOR_SHIFT) < 0)
		err = -errno;
	td_complete_request(treq, err);
}

/* ---- open / close --------------------------------------------------- */

static void vhd_free_state(struct vhd_state *s)
{
	uint32_t i;

	if (s->blks) {
		for (i = 0; i < s->nblocks; i++) {
			if (s->blks[i])
				free(s->blks[i]->bitmap);
			free(s->blks[i]);
		}
		free(s->blks);
	}
	free(s->bat_disk);
	free(s->footer);
	free(s->zeros);
	free(s->ones);
	td_meta_fini(&s->meta);
	td_pool_fini(&s->allocs);
	if (s->fd >= 0)
		close(s->fd);
	vhd_image_close(s->img);
	s->img = NULL;
	s->fd = -1;
}

static int vhd_open_fd(struct vhd_state *s, const char *path,
		       td_flag_t flags)
{
	int oflags = (flags & TD_OPEN_RDONLY ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	uint32_t align;
	bool direct;

	/* Block data and bitmaps sit at 512-byte offsets. */
	s->fd = td_open_direct(path, oflags, flags, TD_SECTOR_SIZE, &direct,
			       &align);
	if (s->fd >= 0 && !direct && align)
		td_log(TD_LOG_INFO, "%s: the device needs %u-byte aligned "
		       "direct I/O; VHD uses buffered I/O there", path, align);
	if (s->fd < 0) {
		int rc = s->fd;

		s->fd = -1;
		return rc;
	}
	return 0;
}

static int vhd_open(td_driver_t *drv, const char *path, td_flag_t flags)
{
	struct vhd_state *s = drv->data;
	char err[512];
	uint32_t i;
	int rc;

	s->drv = drv;
	s->fd = -1;
	/* The engine holds the image's write lock (td-vbd.c) before a
	 * read-write open: reclaiming leaked space is safe. */
	rc = vhd_image_open(&s->img, path, flags & TD_OPEN_RDONLY ?
			    VHD_IMAGE_RDONLY : VHD_IMAGE_RECLAIM, err,
			    sizeof(err));
	if (rc) {
		s->img = NULL;
		return td_meta_refuse(drv, rc, err);
	}
	if (s->img->warning[0])
		td_log(TD_LOG_WARN, "%s", s->img->warning);
	if (s->img->notice[0])
		td_log(TD_LOG_INFO, "%s", s->img->notice);
	rc = vhd_open_fd(s, path, flags);
	if (rc)
		goto fail;	/* the errno says it all (tapdisk.h) */
	s->fixed = s->img->footer.type == VHD_TYPE_FIXED;
	s->diff = s->img->footer.type == VHD_TYPE_DIFF;
	rc = -ENOMEM;
	s->footer = td_zalloc_aligned(VHD_FOOTER_SIZE);
	if (!s->footer ||
	    td_meta_init(&s->meta, drv, s->fd, s, vhd_redispatch,
			 VHD_MAX_IOCBS, VHD_MAX_PIECES))
		goto fail;
	memcpy(s->footer, s->img->footer_buf, VHD_FOOTER_SIZE);
	if (!s->fixed) {
		s->spb = s->img->spb;
		s->bm_size = s->img->bitmap_size;
		s->nblocks = s->img->bat_entries;
		s->bat = s->img->bat;
		s->next_block = s->img->next_block;
		if (s->img->header.table_offset & (TD_SECTOR_SIZE - 1)) {
			td_msgf(drv->error, sizeof(drv->error), "%s: BAT "
				"offset %llu is not sector-aligned", path,
				(unsigned long long)
				s->img->header.table_offset);
			rc = -EINVAL;
			goto fail;
		}
		s->bat_bytes = ((size_t)s->nblocks * 4 + TD_SECTOR_SIZE - 1) &
			       ~(size_t)(TD_SECTOR_SIZE - 1);
		s->bat_disk = td_zalloc_aligned(s->bat_bytes);
		s->blks = calloc(s->nblocks ? s->nblocks : 1,
				 sizeof(*s->blks));
		s->zeros = td_zalloc_aligned(VHD_GAP_MAX);
		s->ones = td_zalloc_aligned(s->bm_size);
		if (!s->bat_disk || !s->blks || !s->zeros || !s->ones)
			goto fail;
		memset(s->ones, 0xff, s->bm_size);
		memset(s->bat_disk, 0xff, s->bat_bytes);
		for (i = 0; i < s->nblocks; i++)
			td_put_be32(s->bat_disk + (size_t)i * 4, s->bat[i]);
		if (td_pool_init(&s->allocs, VHD_MAX_ALLOCS,
				 sizeof(struct vhd_alloc), sizeof(void *)))
			goto fail;
	}
	td_meta_seq_init(&s->footer_seq, &s->meta, vhd_footer_issue,
			 vhd_footer_failed);
	td_meta_seq_init(&s->bat_seq, &s->meta, vhd_bat_issue, vhd_bat_failed);
	drv->info.size = vhd_image_size(s->img) >> TD_SECTOR_SHIFT;
	drv->info.sector_size = TD_SECTOR_SIZE;
	return 0;
fail:
	vhd_free_state(s);
	return rc;
}

static int vhd_close(td_driver_t *drv)
{
	struct vhd_state *s = drv->data;
	int err = 0;

	if (!(drv->flags & TD_OPEN_RDONLY) && fsync(s->fd) < 0) {
		err = -errno;
		td_log(TD_LOG_ERR, "%s: fsync on close: %m", drv->name);
	}
	vhd_free_state(s);
	return err;
}

/* The engine's path policy, asked before a locator's path is looked at. */
static int vhd_check_locator(void *arg, const char *path, char *why,
			     size_t whylen)
{
	td_driver_t *drv = arg;
	int rc = td_check_path(drv, path);

	if (rc)
		td_msgf(why, whylen, "%s", drv->error);
	return rc;
}

static int vhd_get_parent_id(td_driver_t *drv, td_disk_id_t *id)
{
	struct vhd_state *s = drv->data;
	char err[1024];
	char *path;
	int rc;

	if (!s->diff)
		return TD_NO_PARENT;
	rc = vhd_image_find_parent_checked(s->img, vhd_check_locator, drv,
					   &path, err, sizeof(err));
	if (rc)
		return td_meta_refuse(drv, rc, err);
	return td_parent_id_set(id, path, vhd_image_parent_is_raw(s->img) ?
				"aio" : "vhd");
}

extern const struct tap_disk tapdisk_vhd;

/*
 * The VHD parent was opened by its own driver, whose state is its own:
 * read its identity from its file, as any reader of the image would.
 */
static int vhd_parent_image(td_driver_t *drv, td_driver_t *parent,
			    struct vhd_image **out, char *err, size_t errlen)
{
	struct stat st;
	int fd, rc;

	*out = NULL;
	rc = td_check_path(drv, parent->name);
	if (rc)
		return td_errf(err, errlen, rc, "%s", drv->error);
	/* Not blocking on a FIFO swapped in since the engine's open. */
	fd = td_open_file(parent->name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return td_errf(err, errlen, -errno, "parent %s of %s: %s",
			       parent->name, drv->name, strerror(errno));
	if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) ||
				    S_ISBLK(st.st_mode))) {
		close(fd);
		return td_errf(err, errlen, -EINVAL, "parent %s of %s: not a "
			       "regular file or block device", parent->name,
			       drv->name);
	}
	return vhd_image_open_fd(out, fd, parent->name, VHD_IMAGE_RDONLY, err,
				 errlen);
}

static int vhd_validate_parent(td_driver_t *drv, td_driver_t *parent,
			       td_flag_t flags)
{
	struct vhd_state *s = drv->data;
	struct vhd_image *pimg = NULL;
	char warn[512], err[1024];
	int rc;

	(void)flags;
	if (parent->ops == &tapdisk_vhd) {
		rc = vhd_parent_image(drv, parent, &pimg, err, sizeof(err));
		if (rc)
			return td_meta_refuse(drv, rc, err);
	} else if (!vhd_image_parent_is_raw(s->img)) {
		td_msgf(err, sizeof(err), "%s: parent %s is not a VHD, but %s "
			"records a VHD parent", drv->name, parent->name,
			drv->name);
		return td_meta_refuse(drv, -EINVAL, err);
	}
	rc = vhd_image_validate_parent(s->img, pimg, parent->name, warn,
				       sizeof(warn), err, sizeof(err));
	vhd_image_close(pimg);
	if (rc)
		return td_meta_refuse(drv, rc, err);
	if (warn[0])
		td_log(TD_LOG_WARN, "%s", warn);
	return 0;
}

static void vhd_debug(td_driver_t *drv, FILE *out)
{
	struct vhd_state *s = drv->data;

	fprintf(out, "vhd:%s %s, %llu bytes, next block at %llu, "
		"%u/%u iocbs free\n", drv->name,
		vhd_type_name(s->img->footer.type),
		(unsigned long long)vhd_image_size(s->img),
		(unsigned long long)s->next_block, s->meta.ios.nfree,
		s->meta.ios.count);
}

static int vhd_create(const char *path, uint64_t size, td_flag_t flags)
{
	struct vhd_create_params p = {
		.type = VHD_TYPE_DYNAMIC,
		.size = size,
	};
	char err[512];
	int rc;

	(void)flags;
	rc = vhd_image_create(path, &p, err, sizeof(err));
	if (rc)
		td_log(TD_LOG_ERR, "%s", err);
	return rc;
}

static int vhd_create_child(const char *path, const char *parent,
			    const char *parent_driver, char *err,
			    size_t errlen)
{
	struct vhd_create_params p = {
		.type = VHD_TYPE_DIFF,
		.parent = parent,
		.parent_raw = strcmp(parent_driver, "vhd") != 0,
	};

	/* A VHD names its parent's file, not its format: a parent that is
	 * not a VHD is opened raw, so only a raw image may be one. */
	if (p.parent_raw && strcmp(parent_driver, "aio") &&
	    strcmp(parent_driver, "sync"))
		return td_errf(err, errlen, -EOPNOTSUPP, "%s: a VHD child "
			       "can have a VHD or raw parent, not a %s image",
			       parent, parent_driver);
	return vhd_image_create(path, &p, err, errlen);
}

const struct tap_disk tapdisk_vhd = {
	TD_DISK_VERSION,
	.name			= "vhd",
	.description		= "VHD: fixed, dynamic, differencing",
	.private_data_size	= sizeof(struct vhd_state),
	.td_open		= vhd_open,
	.td_close		= vhd_close,
	.td_get_parent_id	= vhd_get_parent_id,
	.td_validate_parent	= vhd_validate_parent,
	.td_queue_read		= vhd_queue_rw,
	.td_queue_write		= vhd_queue_rw,
	.td_debug		= vhd_debug,
	.td_queue_flush		= vhd_queue_flush,
	.td_queue_discard	= vhd_queue_discard,
	.td_create		= vhd_create,
	.td_create_child	= vhd_create_child,
	.td_probe		= vhd_probe,
};
