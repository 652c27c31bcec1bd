/* SPDX-License-Identifier: MIT */
/*
 * qcow2: QEMU's copy-on-write format, versions 2 and 3, asynchronous.
 *
 * Metadata is parsed at open by qcow2-image.c (header, extensions, L1
 * table, and for a read-write image every refcount block); L2 tables are
 * loaded asynchronously on first use and kept.  The data path is libaio
 * on an O_DIRECT fd (buffered for clusters below 4 KiB).
 *
 * Reads: a normal cluster is read in place (runs of contiguous clusters
 * in one I/O); zero clusters read as zeros; unallocated clusters are
 * forwarded to the backing image (zeros past the chain); a compressed
 * cluster is read whole and inflated (the last one inflated is kept).
 * Extended L2 entries (read-only) are mapped per subcluster.
 *
 * Writes into a normal cluster whose copied flag is set go in place.
 * Anything else (unallocated, zero, compressed, or shared: no copied
 * flag) gets a new cluster, each step after the previous completed:
 *   1. a free host cluster is taken and its refcount set to 1 in memory;
 *   2. the cluster's data is written: the request's, filled to a whole
 *      cluster from the old contents (the backing image through a
 *      forwarded read, zeros, the inflated compressed data, or the
 *      shared cluster) - or the request's alone when the rest is zeros
 *      and the new cluster is known to read as zeros already;
 *   3. the refcount commit: dirty refcount blocks written, a barrier,
 *      new refcount table entries written, a barrier;
 *   4. the L2 entry (the commit point), then the write completes;
 *   5. if an old host cluster is replaced: a barrier, then its refcount
 *      is decremented in memory (written by the next commit, the next
 *      flush, or close).
 * A crash at any point leaves clusters counted but unused at worst
 * (leaks), never a cluster in use and uncounted.  A missing L2 table is
 * allocated the same way first (zeroed table, commit, L1 entry).  A
 * refcount block that does not exist yet is placed in the range it
 * describes and counts itself.  Refcount commits, barriers, L1 and L2
 * writes go through group-commit sequencers (td-meta.h: one write of a
 * table in flight, the rest wait for the next), so concurrent
 * allocations share their metadata writes.  Requests for a cluster being allocated wait for
 * it; other clusters allocate concurrently.
 *
 * A host cluster whose refcount is to drop (step 5, discard) is handed
 * to a grace period (td-grace.c) first: it is unreferenced, punched and
 * reusable only once every data I/O that was in flight when it was freed
 * has ended, so a read or in-place write still in flight cannot meet the
 * cluster's next user.
 *
 * Discard: a whole cluster becomes unallocated (no backing file) or a
 * zero cluster (version 3 with a backing file) and its host cluster is
 * freed after a barrier (and its space punched out of the file);
 * partial clusters and version 2 images with a backing file get zeros
 * written, so discarded sectors always read back as zeros.
 *
 * Flush: a refcount commit (pending refcount blocks, then fsync).  The
 * dirty bit (version 3) is set while open read-write and cleared by a
 * clean close, after the refcount blocks are written back; an image
 * found dirty at open was repaired by qcow2_image_open() first.
 *
 * Metadata overlap: before any data is written to a host cluster (in
 * place, into a new cluster, or freeing an old one) it is looked up in
 * the image's map of metadata clusters (qcow2_image_is_meta, O(1)).  A
 * hit means a table entry points at the header, the L1 table, the
 * refcount structure or an L2 table: the request fails with EIO before
 * anything is written, the image gets the corrupt bit (version 3), the
 * reason is logged once, and every later write or discard fails with
 * EIO.  Reads and flushes go on.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <linux/falloc.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>

#include "qcow2-image.h"
#include "common/td-fileio.h"
#include "common/td-grace.h"
#include "common/td-meta.h"
#include "common/td-util.h"

#define Q2_MAX_IOCBS		4096
#define Q2_MAX_PIECES		4096
/* Bounce memory for allocations and compressed reads, and the caps. */
#define Q2_ALLOC_BUDGET		(64u << 20)
#define Q2_MAX_ALLOCS		256u
#define Q2_MIN_ALLOCS		8u
#define Q2_CREAD_BUDGET		(32u << 20)
#define Q2_MAX_CREADS		64u
#define Q2_MIN_CREADS		4u
#define Q2_HASH_BUCKETS		1024u
/* Freed clusters remembered for reuse before scanning for free ones. */
#define Q2_FREE_STACK		4096u
/* O_DIRECT alignment of metadata and compressed reads. */
#define Q2_IO_ALIGN		4096u
#define Q2_SECS_ALIGN		(Q2_IO_ALIGN >> TD_SECTOR_SHIFT)

struct q2_state;

enum q2_l2_state {
	L2_UNLOADED,
	L2_LOADING,
	L2_READY,
	L2_ALLOCATING,
};

/* One L2 table in memory, made on first use and kept. */
struct q2_l2 {
	enum q2_l2_state state;
	uint64_t	 index;		/* L1 index */
	uint8_t		*buf;		/* disk format, aligned */
	struct td_list	 waiters;	/* td_meta_req: loading, allocating */
	struct td_meta_seq seq;		/* writes of this table */
	bool		 dirty;
	uint32_t	 lo, hi;	/* dirty entries */
};

enum q2_alloc_kind {
	A_DATA,		/* a new cluster for a write */
	A_DISCARD,	/* a cluster made unallocated or zero */
	A_L2,		/* a new L2 table */
};

/* One allocation (or discard) in progress, keyed by guest cluster. */
struct q2_alloc {
	struct q2_state	*s;
	enum q2_alloc_kind kind;
	td_request_t	 treq;		/* A_DATA, A_DISCARD */
	uint64_t	 gcl;		/* guest cluster (A_L2: L1 index) */
	struct q2_l2	*l2;
	uint32_t	 l2i;
	uint64_t	 host;		/* the new cluster */
	struct qcow2_mapping old;	/* what it replaces */
	struct td_list	 hash_link;
	struct td_list	 waiters;	/* td_meta_req for this cluster */
	struct td_meta_wait wait;
	unsigned	 pending;
	int		 err;
	uint8_t		*buf;		/* cluster_size, aligned */
};

/* A refcount block write of the commit in flight. */
struct q2_rb_write {
	uint64_t	 rbi;
	uint32_t	 off, len;	/* bytes of the block */
	bool		 was_new;	/* its table entry goes out too */
};

/* A compressed cluster being read. */
struct q2_cread {
	struct q2_state	*s;
	td_request_t	 treq;		/* the read, or unused (COW) */
	struct q2_alloc	*alloc;		/* COW of a compressed cluster */
	uint64_t	 off;		/* of the compressed data */
	uint32_t	 csize;
	uint32_t	 skip;		/* data starts at buf + skip */
	size_t		 len;		/* bytes read */
	uint8_t		*buf;
};

struct q2_state {
	td_driver_t		*drv;
	struct qcow2_image	*img;
	int			 fd;
	bool			 rdonly;
	bool			 has_backing;
	bool			 meta_error;	/* leave the dirty bit set */
	bool			 corrupt;	/* writes fail: see q2_corrupt */
	uint32_t		 version;
	const struct qcow2_geometry *g;
	uint32_t		 cs;		/* cluster size */
	uint32_t		 cl_secs;	/* sectors per cluster */
	uint32_t		 io_align;	/* metadata write granularity */
	uint64_t		 vsecs;		/* virtual size, sectors */

	uint64_t		*l1;		/* img->l1, host order */
	uint8_t			*l1_disk;	/* aligned, disk format */
	size_t			 l1_bytes;
	bool			 l1_dirty;
	uint64_t		 l1_lo, l1_hi;
	struct td_meta_seq	 l1_seq;
	struct q2_l2		**l2s;		/* per L1 entry */

	/* Refcounts (read-write): img->reftable, img->refblocks. */
	uint8_t			*reftable_disk;
	size_t			 reftable_bytes;
	bool			*rb_dirty;
	uint32_t		*rb_lo, *rb_hi;	/* dirty entries of a block */
	bool			*rb_new;	/* table entry not yet written */
	uint64_t		*rb_list;	/* dirty block indexes */
	uint64_t		 rb_nlist;
	uint64_t		 free_hint;	/* scan for free clusters here */
	uint64_t		 fresh_from;	/* first cluster past the file
						 * at open: zeros until used */
	bool			 punch_ok;	/* freed clusters read zeros */
	uint64_t		*free_stack;	/* clusters freed since */
	unsigned		 free_n;
	struct td_grace		 grace;		/* freed, not yet reusable */

	/* The refcount commit in flight. */
	struct td_meta_seq	 commit_seq;
	int			 commit_phase;
	unsigned		 commit_ios;
	int			 commit_err;
	bool			 commit_table;
	uint64_t		 commit_lo, commit_hi;	/* table entries */
	struct q2_rb_write	*commit_list;	/* blocks being written */
	uint64_t		 commit_nlist;

	struct td_list		 hash[Q2_HASH_BUCKETS];
	struct td_list		 res_waiters;	/* no alloc/cread free */

	uint8_t			*zeros;		/* one cluster of zeros */
	void			*zs;		/* inflate stream */
	uint8_t			*zcache;	/* the last inflated cluster */
	uint64_t		 zcache_off;
	uint32_t		 zcache_csize;	/* 0: empty */

	struct td_meta		 meta;		/* I/O, barrier, parking */
	struct td_pool		 allocs;
	struct td_pool		 creads;
	size_t			 alloc_hdr;	/* buffer offset in an alloc */
	size_t			 cread_hdr;
	size_t			 cread_buf;

	uint64_t		 n_alloc, n_cow, n_discard;
};

static void q2_dispatch(struct q2_state *s, td_request_t treq);

/* ---- small helpers ------------------------------------------------------ */

static uint64_t l2_get(const struct q2_state *s, const struct q2_l2 *t,
		       uint32_t i)
{
	return td_get_be64(t->buf + (size_t)i * s->g->l2_entry_size);
}

static uint64_t l2_bitmap(const struct q2_state *s, const struct q2_l2 *t,
			  uint32_t i)
{
	return td_get_be64(t->buf + (size_t)i * s->g->l2_entry_size + 8);
}

/* Read or write treq's sectors in place at host offset off. */
static void q2_data_io(struct q2_state *s, td_request_t treq, uint64_t off)
{
	td_meta_request_io(&s->meta, treq, off, td_grace_begin(&s->grace));
}

/* ---- metadata overlap ---------------------------------------------------- */

static int q2_corrupt(struct q2_state *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * The image's tables point where they must not (found before a write
 * landed): set the corrupt bit, say why once, and fail this and every
 * later write and discard.  Returns -EIO.
 */
static int q2_corrupt(struct q2_state *s, const char *fmt, ...)
{
	char why[384], err[512];
	va_list ap;
	int rc;

	if (s->corrupt)
		return -EIO;
	s->corrupt = true;
	s->meta_error = true;		/* the dirty bit stays too */
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	rc = qcow2_image_mark_corrupt(s->img, err, sizeof(err));
	/* .ctl shows it after the chain (tapdisk.h, td_driver.error). */
	snprintf(s->drv->error, sizeof(s->drv->error), "%s: image marked "
		 "corrupt, writes fail: %s", s->drv->name, why);
	td_log(TD_LOG_ERR, "qcow2: %s: %s: write refused, image marked "
	       "corrupt%s; writes fail with EIO from now on (open it "
	       "read-only, or repair it with 'qemu-img check -r all')",
	       s->drv->name, why, rc == -ENOTSUP ? " until closed (version "
	       "2 has no corrupt bit)" : rc ? "" : " (corrupt bit set)");
	if (rc && rc != -ENOTSUP)
		td_log(TD_LOG_ERR, "%s", err);
	return -EIO;
}

/*
 * Would data written to (or freed from) host bytes [off, off + len)
 * land on metadata?  0, or -EIO with the image marked corrupt.  One
 * bitmap lookup per cluster.
 */
static int q2_check_meta(struct q2_state *s, uint64_t off, uint64_t len,
			 uint64_t gcl, const char *what)
{
	uint64_t c, last = (off + len - 1) >> s->g->cluster_bits;
	char name[96];

	for (c = off >> s->g->cluster_bits; c <= last; c++) {
		if (!qcow2_image_is_meta(s->img, c))
			continue;
		return q2_corrupt(s, "guest cluster %" PRIu64 ": %s at %"
				  PRIu64 " is %s", gcl, what,
				  c << s->g->cluster_bits,
				  qcow2_image_meta_name(s->img, c, name,
							sizeof(name)));
	}
	return 0;
}

/* The host clusters an old mapping owns: about to be copied and freed. */
static int q2_check_meta_old(struct q2_state *s,
			     const struct qcow2_mapping *m, uint64_t gcl)
{
	uint64_t first, last;

	switch (m->type) {
	case QCOW2_CLUSTER_NORMAL:
	case QCOW2_CLUSTER_ZERO_ALLOC:
		return q2_check_meta(s, m->host_offset, s->cs, gcl,
				     "its host cluster");
	case QCOW2_CLUSTER_COMPRESSED:
		qcow2_compressed_clusters(s->g, m, &first, &last);
		return q2_check_meta(s, first << s->g->cluster_bits,
				     (last - first + 1) << s->g->cluster_bits,
				     gcl, "its compressed data");
	default:
		return 0;
	}
}

/* ---- refcounts in memory ------------------------------------------------ */

/* Entries [lo, hi] of block rbi changed. */
static void rb_mark_dirty(struct q2_state *s, uint64_t rbi, uint32_t lo,
			  uint32_t hi)
{
	if (s->rb_dirty[rbi]) {
		if (lo < s->rb_lo[rbi])
			s->rb_lo[rbi] = lo;
		if (hi > s->rb_hi[rbi])
			s->rb_hi[rbi] = hi;
		return;
	}
	s->rb_dirty[rbi] = true;
	s->rb_lo[rbi] = lo;
	s->rb_hi[rbi] = hi;
	s->rb_list[s->rb_nlist++] = rbi;
}

static uint64_t q2_refcount(struct q2_state *s, uint64_t c)
{
	return qcow2_image_refcount(s->img, c);
}

static void q2_set_refcount(struct q2_state *s, uint64_t c, uint64_t v)
{
	uint64_t rbi = c >> s->g->rb_bits;
	uint32_t i = (uint32_t)(c & ((1ull << s->g->rb_bits) - 1));

	qcow2_refcount_set(s->img->refblocks[rbi], i, s->g->refcount_order,
			   v);
	rb_mark_dirty(s, rbi, i, i);
}

/*
 * Take a free host cluster and count it (in memory).  A refcount block
 * that does not exist is made at the first free cluster of its range.
 */
static int q2_alloc_cluster(struct q2_state *s, uint64_t *off)
{
	struct qcow2_image *img = s->img;
	uint64_t c, rbi, cover = qcow2_image_ref_coverage(img);

	while (s->free_n) {
		c = s->free_stack[--s->free_n];
		if (q2_refcount(s, c))
			continue;	/* taken by the scan since */
		if (qcow2_image_is_meta(img, c))
			return q2_corrupt(s, "host cluster %" PRIu64 " is free "
					  "by its refcount but holds metadata",
					  c);
		q2_set_refcount(s, c, 1);
		*off = c << s->g->cluster_bits;
		s->n_alloc++;
		return 0;
	}
	for (c = s->free_hint; c < cover; c++) {
		rbi = c >> s->g->rb_bits;
		if (!img->refblocks[rbi]) {
			if (qcow2_image_is_meta(img, c))
				return q2_corrupt(s, "host cluster %" PRIu64
						  " has no refcount block but "
						  "holds metadata", c);
			/* Once per refcount block in the image's life. */
			img->refblocks[rbi] = td_zalloc_aligned(s->cs);
			if (!img->refblocks[rbi] ||
			    qcow2_image_meta_add(img, c)) {
				free(img->refblocks[rbi]);
				img->refblocks[rbi] = NULL;
				return -ENOMEM;
			}
			img->reftable[rbi] = c << s->g->cluster_bits;
			s->rb_new[rbi] = true;
			q2_set_refcount(s, c, 1);
			continue;
		}
		if (q2_refcount(s, c))
			continue;
		if (qcow2_image_is_meta(img, c))
			return q2_corrupt(s, "host cluster %" PRIu64 " is free "
					  "by its refcount but holds metadata",
					  c);
		q2_set_refcount(s, c, 1);
		s->free_hint = c + 1;
		*off = c << s->g->cluster_bits;
		s->n_alloc++;
		return 0;
	}
	td_log(TD_LOG_ERR, "%s: the refcount table is full (%" PRIu64
	       " clusters); reopen the image to grow it", s->drv->name,
	       cover);
	return -ENOSPC;
}

/* Drop one reference to each host cluster of [off, off + len). */
static void q2_unref(struct q2_state *s, uint64_t off, uint64_t len,
		     bool data)
{
	uint64_t c, first = off >> s->g->cluster_bits;
	uint64_t last = (off + len - 1) >> s->g->cluster_bits, v;

	s->zcache_csize = 0;
	for (c = first; c <= last; c++) {
		v = q2_refcount(s, c);
		if (!v) {
			td_log(TD_LOG_WARN, "%s: freeing cluster %" PRIu64
			       " whose refcount is already 0", s->drv->name,
			       c);
			continue;
		}
		q2_set_refcount(s, c, v - 1);
		if (v - 1)
			continue;
		if (s->free_n < Q2_FREE_STACK)
			s->free_stack[s->free_n++] = c;
		else if (c < s->free_hint)
			s->free_hint = c;
		/* Its space goes back to the file system, and it reads as
		 * zeros when reused.  Anything else than a data cluster
		 * freed past the old end of the file would not. */
		if (!data) {
			if (c >= s->fresh_from)
				s->punch_ok = false;
			continue;
		}
		if (fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)(c << s->g->cluster_bits),
			      (off_t)s->cs) < 0) {
			if (s->punch_ok && errno != EOPNOTSUPP)
				td_log(TD_LOG_WARN, "%s: punching cluster %"
				       PRIu64 ": %m", s->drv->name, c);
			s->punch_ok = false;
		}
	}
}

/* The grace period of a freed range is over (td_grace_release_t). */
static void q2_grace_release(void *ctx, uint64_t off, uint64_t len,
			     unsigned data)
{
	q2_unref(ctx, off, len, data);
}

/*
 * Free what a replaced or discarded L2 entry pointed to, once the data
 * I/O in flight now has ended.  Without memory to wait, the cluster is
 * leaked (still counted): safe, and reported.
 */
static void q2_unref_mapping(struct q2_state *s, const struct qcow2_mapping *m)
{
	uint64_t len;
	bool data;

	switch (m->type) {
	case QCOW2_CLUSTER_NORMAL:
	case QCOW2_CLUSTER_ZERO_ALLOC:
		len = s->cs;
		data = true;
		break;
	case QCOW2_CLUSTER_COMPRESSED:
		len = m->csize;
		data = false;
		break;
	default:
		return;
	}
	if (td_grace_defer(&s->grace, m->host_offset, len, data))
		td_log(TD_LOG_WARN, "%s: out of memory: host cluster at %"
		       PRIu64 " stays allocated (a leak)", s->drv->name,
		       m->host_offset);
}

static bool q2_mapping_owns(const struct qcow2_mapping *m)
{
	return m->type == QCOW2_CLUSTER_NORMAL ||
	       m->type == QCOW2_CLUSTER_ZERO_ALLOC ||
	       m->type == QCOW2_CLUSTER_COMPRESSED;
}

/* ---- sequencers: refcount commit, L1, L2 (barrier: td-meta) ------------- */

/*
 * The refcount commit: phase 1 writes the dirty refcount blocks; phase 2
 * a barrier; phase 3 the refcount table entries of new blocks; phase 4 a
 * barrier (made durable: the blocks, the table, and every write that
 * completed before the commit started).
 */
enum {
	COMMIT_BLOCKS = 1,
	COMMIT_SYNC1,
	COMMIT_TABLE,
	COMMIT_SYNC2,
};

static void q2_commit_next(struct q2_state *s);

static void q2_commit_io_done(void *ctx, void *arg, int err)
{
	struct q2_state *s = ctx;

	(void)arg;
	if (err && !s->commit_err) {
		s->commit_err = err;
		td_log(TD_LOG_ERR, "%s: writing refcounts: %s", s->drv->name,
		       strerror(-err));
	}
	if (--s->commit_ios == 0)
		q2_commit_next(s);
}

static void q2_commit_finish(struct q2_state *s)
{
	uint64_t i;
	int err = s->commit_err;

	if (err) {
		/* Write them (whole) again next time. */
		for (i = 0; i < s->commit_nlist; i++) {
			struct q2_rb_write *w = &s->commit_list[i];

			rb_mark_dirty(s, w->rbi, 0,
				      (1u << s->g->rb_bits) - 1);
			if (w->was_new)
				s->rb_new[w->rbi] = true;
		}
		s->meta_error = true;
	}
	s->commit_phase = 0;
	td_meta_seq_done(&s->commit_seq, err);
}

/* The next phase's one I/O. */
static void q2_commit_io(struct q2_state *s, enum td_op op, void *buf,
			 size_t len, uint64_t off)
{
	s->commit_ios = 1;
	td_meta_io(&s->meta, op, buf, len, off, q2_commit_io_done, NULL);
}

static void q2_commit_next(struct q2_state *s)
{
	size_t a = s->io_align;
	uint64_t lo, hi;

	if (s->commit_err) {
		q2_commit_finish(s);
		return;
	}
	switch (s->commit_phase) {
	case COMMIT_BLOCKS:
		if (!s->commit_table) {
			/* Nothing new: on to the last sync. */
			s->commit_phase = COMMIT_TABLE;
			q2_commit_next(s);
			return;
		}
		s->commit_phase = COMMIT_SYNC1;
		q2_commit_io(s, TD_OP_FLUSH, NULL, 0, 0);
		return;
	case COMMIT_SYNC1:
		s->commit_phase = COMMIT_TABLE;
		lo = td_round_down(s->commit_lo * 8, a);
		hi = td_round_up((s->commit_hi + 1) * 8, a);
		if (hi > s->reftable_bytes)
			hi = s->reftable_bytes;
		q2_commit_io(s, TD_OP_WRITE, s->reftable_disk + lo, hi - lo,
			     s->img->h.refcount_table_offset + lo);
		return;
	case COMMIT_TABLE:
		s->commit_phase = COMMIT_SYNC2;
		q2_commit_io(s, TD_OP_FLUSH, NULL, 0, 0);
		return;
	default:
		q2_commit_finish(s);
		return;
	}
}

/* Which bytes of each dirty refcount block the commit writes. */
static void q2_commit_plan(struct q2_state *s)
{
	uint64_t i, rbi, bits = 1ull << s->g->refcount_order;

	s->commit_table = false;
	s->commit_nlist = s->rb_nlist;
	for (i = 0; i < s->commit_nlist; i++) {
		struct q2_rb_write *w = &s->commit_list[i];

		rbi = s->rb_list[i];
		w->rbi = rbi;
		w->was_new = s->rb_new[rbi];
		s->rb_dirty[rbi] = false;
		if (w->was_new) {
			/* Whole (the cluster held anything), and its table
			 * entry goes out after it is durable. */
			s->rb_new[rbi] = false;
			w->off = 0;
			w->len = s->cs;
			td_put_be64(s->reftable_disk + rbi * 8,
				    s->img->reftable[rbi]);
			if (!s->commit_table || rbi < s->commit_lo)
				s->commit_lo = rbi;
			if (!s->commit_table || rbi > s->commit_hi)
				s->commit_hi = rbi;
			s->commit_table = true;
		} else {
			w->off = (uint32_t)td_round_down(s->rb_lo[rbi] * bits /
							 8, s->io_align);
			w->len = (uint32_t)td_round_up(((s->rb_hi[rbi] + 1) *
							bits + 7) / 8,
						       s->io_align) - w->off;
			if (w->off + w->len > s->cs)
				w->len = s->cs - w->off;
		}
	}
	s->rb_nlist = 0;
}

static void q2_commit_issue(struct td_meta_seq *q)
{
	struct q2_state *s = q->m->ctx;
	uint64_t i;

	s->commit_err = 0;
	s->commit_phase = COMMIT_BLOCKS;
	q2_commit_plan(s);
	s->commit_ios = 1;
	for (i = 0; i < s->commit_nlist; i++) {
		struct q2_rb_write *w = &s->commit_list[i];

		s->commit_ios++;
		td_meta_io(&s->meta, TD_OP_WRITE,
			   s->img->refblocks[w->rbi] + w->off, w->len,
			   s->img->reftable[w->rbi] + w->off,
			   q2_commit_io_done, NULL);
	}
	q2_commit_io_done(s, NULL, 0);
}

static void q2_l1_failed(struct td_meta_seq *q, int err)
{
	struct q2_state *s = q->m->ctx;

	td_log(TD_LOG_ERR, "%s: writing the L1 table: %s", s->drv->name,
	       strerror(-err));
	s->meta_error = true;
}

static void q2_l1_issue(struct td_meta_seq *q)
{
	struct q2_state *s = q->m->ctx;
	uint64_t lo, hi;

	lo = td_round_down(s->l1_lo * 8, s->io_align);
	hi = td_round_up((s->l1_hi + 1) * 8, s->io_align);
	if (hi > s->l1_bytes)
		hi = s->l1_bytes;
	s->l1_dirty = false;
	td_meta_seq_io(q, TD_OP_WRITE, s->l1_disk + lo, hi - lo,
		       s->img->h.l1_table_offset + lo);
}

static void q2_l1_set(struct q2_state *s, uint64_t i, uint64_t entry)
{
	s->l1[i] = entry;
	td_put_be64(s->l1_disk + i * 8, entry);
	if (!s->l1_dirty || i < s->l1_lo)
		s->l1_lo = i;
	if (!s->l1_dirty || i > s->l1_hi)
		s->l1_hi = i;
	s->l1_dirty = true;
}

static void q2_l2_failed(struct td_meta_seq *q, int err)
{
	struct q2_state *s = q->m->ctx;
	struct q2_l2 *t = td_container_of(q, struct q2_l2, seq);

	td_log(TD_LOG_ERR, "%s: writing the L2 table of L1 entry %" PRIu64
	       ": %s", s->drv->name, t->index, strerror(-err));
	s->meta_error = true;
}

static void q2_l2_issue(struct td_meta_seq *q)
{
	struct q2_state *s = q->m->ctx;
	struct q2_l2 *t = td_container_of(q, struct q2_l2, seq);
	uint64_t lo, hi, esz = s->g->l2_entry_size;

	lo = td_round_down(t->lo * esz, s->io_align);
	hi = td_round_up((t->hi + 1) * esz, s->io_align);
	if (hi > s->cs)
		hi = s->cs;
	t->dirty = false;
	td_meta_seq_io(q, TD_OP_WRITE, t->buf + lo, hi - lo,
		       (s->l1[t->index] & QCOW2_OFFSET_MASK) + lo);
}

/* Set entry i of table t in memory and queue w for the write of it. */
static void q2_l2_set(struct q2_state *s, struct q2_l2 *t, uint32_t i,
		      uint64_t entry, struct td_meta_wait *w,
		      td_meta_wait_fn done)
{
	td_put_be64(t->buf + (size_t)i * s->g->l2_entry_size, entry);
	if (!t->dirty || i < t->lo)
		t->lo = i;
	if (!t->dirty || i > t->hi)
		t->hi = i;
	t->dirty = true;
	td_meta_seq_wait(&t->seq, w, done);
}

/* ---- allocations -------------------------------------------------------- */

static struct td_list *q2_bucket(struct q2_state *s, uint64_t gcl)
{
	return &s->hash[(gcl * 0x9e3779b97f4a7c15ull) >> 54 &
			(Q2_HASH_BUCKETS - 1)];
}

static struct q2_alloc *q2_alloc_find(struct q2_state *s, uint64_t gcl)
{
	struct td_list *b = q2_bucket(s, gcl), *n;

	for (n = b->next; n != b; n = n->next) {
		struct q2_alloc *a = td_container_of(n, struct q2_alloc,
						     hash_link);

		if (a->gcl == gcl && a->kind != A_L2)
			return a;
	}
	return NULL;
}

static struct q2_alloc *q2_alloc_get(struct q2_state *s,
				     enum q2_alloc_kind kind, uint64_t gcl)
{
	struct q2_alloc *a = td_pool_get(&s->allocs);

	if (!a)
		return NULL;
	memset(a, 0, s->alloc_hdr);
	a->s = s;
	a->kind = kind;
	a->gcl = gcl;
	a->buf = (uint8_t *)a + s->alloc_hdr;
	td_list_init(&a->waiters);
	td_list_init(&a->hash_link);
	if (kind != A_L2)
		td_list_add_tail(&a->hash_link, q2_bucket(s, gcl));
	return a;
}

/* The allocation is over: release it, complete its request, wake. */
static void q2_alloc_finish(struct q2_alloc *a, int err)
{
	struct q2_state *s = a->s;
	td_request_t treq = a->treq;
	struct td_list waiters;
	enum q2_alloc_kind kind = a->kind;

	if (err)
		td_log(TD_LOG_ERR, "%s: %s %" PRIu64 ": %s", s->drv->name,
		       kind == A_DISCARD ? "discarding guest cluster" :
		       kind == A_L2 ? "allocating the L2 table of L1 entry" :
		       "allocating guest cluster", a->gcl, strerror(-err));
	td_list_del(&a->hash_link);
	td_list_move(&waiters, &a->waiters);
	td_pool_put(&s->allocs, a);
	if (kind != A_L2)
		td_complete_request(treq, err);
	td_meta_wake(&s->meta, &waiters, 0);
	td_meta_wake(&s->meta, &s->res_waiters, 0);
}

/* 5. The old host cluster is unreferenced on disk: free it. */
static void q2_alloc_freed(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, wait);

	if (!err)
		q2_unref_mapping(a->s, &a->old);
	q2_alloc_finish(a, err);
}

/* 4 done: the L2 entry is written. */
static void q2_alloc_l2_done(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, wait);

	if (err || !q2_mapping_owns(&a->old)) {
		q2_alloc_finish(a, err);
		return;
	}
	td_meta_barrier(&a->s->meta, &a->wait, q2_alloc_freed);
}

/* 3 done: the new cluster is counted and its data durable. */
static void q2_alloc_committed(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, wait);
	struct q2_state *s = a->s;

	if (err) {
		q2_alloc_finish(a, err);
		return;
	}
	q2_l2_set(s, a->l2, a->l2i, a->host | QCOW2_OFLAG_COPIED, &a->wait,
		  q2_alloc_l2_done);
}

static void q2_alloc_data_done(void *ctx, void *arg, int err)
{
	struct q2_state *s = ctx;
	struct q2_alloc *a = arg;

	if (err) {
		q2_alloc_finish(a, err);
		return;
	}
	td_meta_seq_wait(&s->commit_seq, &a->wait, q2_alloc_committed);
}

/* Write the request's data alone at its place in the new cluster. */
static void q2_alloc_write_direct(struct q2_alloc *a)
{
	struct q2_state *s = a->s;
	uint64_t in = a->treq.sec - a->gcl * s->cl_secs;

	td_meta_io(&s->meta, TD_OP_WRITE, a->treq.buf,
		   (size_t)a->treq.secs << TD_SECTOR_SHIFT,
		   a->host + (in << TD_SECTOR_SHIFT), q2_alloc_data_done, a);
}

/*
 * Does the new cluster already read as zeros?  Clusters past the end of
 * the file at open were never written, or were data clusters punched out
 * when freed (unless punching ever failed).
 */
static bool q2_alloc_fresh(const struct q2_state *s, const struct q2_alloc *a)
{
	return s->punch_ok && (a->host >> s->g->cluster_bits) >= s->fresh_from;
}

/* 2. The whole cluster's data, from the bounce buffer or the request. */
static void q2_alloc_write_data(struct q2_alloc *a)
{
	struct q2_state *s = a->s;
	uint64_t first = a->gcl * s->cl_secs;

	if (a->treq.sec == first && (a->treq.secs == s->cl_secs ||
				     first + a->treq.secs == s->vsecs)) {
		q2_alloc_write_direct(a);
		return;
	}
	if (a->treq.op == TD_OP_WRITE)
		memcpy(a->buf + ((a->treq.sec - first) << TD_SECTOR_SHIFT),
		       a->treq.buf, (size_t)a->treq.secs << TD_SECTOR_SHIFT);
	else
		memset(a->buf + ((a->treq.sec - first) << TD_SECTOR_SHIFT), 0,
		       (size_t)a->treq.secs << TD_SECTOR_SHIFT);
	td_meta_io(&s->meta, TD_OP_WRITE, a->buf, s->cs, a->host,
		   q2_alloc_data_done, a);
}

/* n units of the old contents arrived (sectors from the backing image,
 * 1 for a read of this file or the guard). */
static void q2_alloc_fill_put(struct q2_alloc *a, unsigned n, int err)
{
	if (err && !a->err)
		a->err = err;
	a->pending -= n;
	if (a->pending)
		return;
	if (a->err) {
		q2_alloc_finish(a, a->err);
		return;
	}
	q2_alloc_write_data(a);
}

static void q2_alloc_fill_done(struct q2_alloc *a, int err)
{
	q2_alloc_fill_put(a, 1, err);
}

/* Completion of a forwarded read comes by pieces: count sectors. */
static void q2_alloc_parent_done(td_request_t treq, int err)
{
	q2_alloc_fill_put(treq.cb_data, treq.secs, err);
}

static void q2_alloc_own_read_done(void *ctx, void *arg, int err)
{
	(void)ctx;
	q2_alloc_fill_done(arg, err);
}

/* Read sectors [from, to) of the cluster from the backing image. */
static void q2_alloc_read_parent(struct q2_alloc *a, uint64_t from,
				 uint64_t to)
{
	struct q2_state *s = a->s;
	uint64_t first = a->gcl * s->cl_secs;
	td_request_t r = {
		.op = TD_OP_READ,
		.buf = (char *)a->buf + (from << TD_SECTOR_SHIFT),
		.sec = first + from,
		.secs = (uint32_t)(to - from),
		.image = a->treq.image,
		.cb = q2_alloc_parent_done,
		.cb_data = a,
	};

	if (from >= to)
		return;
	a->pending += r.secs;
	td_forward_request(r);
}

static void q2_cread_start(struct q2_state *s, struct q2_cread *c);

/* 2 (before): fill the bounce buffer with what the cluster held. */
static void q2_alloc_fill(struct q2_alloc *a)
{
	struct q2_state *s = a->s;
	uint64_t first = a->gcl * s->cl_secs, in = a->treq.sec - first;
	uint64_t end = s->vsecs - first < s->cl_secs ? s->vsecs - first :
		       s->cl_secs, head, tail;
	struct q2_cread *c;

	if (a->treq.sec == first && (a->treq.secs == s->cl_secs ||
				     first + a->treq.secs == s->vsecs) &&
	    a->treq.op == TD_OP_WRITE) {
		q2_alloc_write_data(a);
		return;
	}
	/* Zeros around the data, in a cluster that holds zeros already. */
	if (a->treq.op == TD_OP_WRITE && q2_alloc_fresh(s, a) &&
	    (a->old.type == QCOW2_CLUSTER_ZERO_PLAIN ||
	     a->old.type == QCOW2_CLUSTER_ZERO_ALLOC ||
	     (a->old.type == QCOW2_CLUSTER_UNALLOCATED && !s->has_backing))) {
		q2_alloc_write_direct(a);
		return;
	}
	memset(a->buf, 0, s->cs);
	a->pending = 1;
	switch (a->old.type) {
	case QCOW2_CLUSTER_UNALLOCATED:
		if (!s->has_backing)
			break;
		/* 4 KiB-aligned pieces (O_DIRECT parents); the sectors the
		 * write covers are overwritten afterwards. */
		head = td_round_up(in, Q2_SECS_ALIGN);
		tail = td_round_down(in + a->treq.secs, Q2_SECS_ALIGN);
		if (head > end)
			head = end;
		if (head >= tail) {
			q2_alloc_read_parent(a, 0, end);
			break;
		}
		q2_alloc_read_parent(a, 0, head);
		q2_alloc_read_parent(a, tail, end);
		break;
	case QCOW2_CLUSTER_NORMAL:
		s->n_cow++;
		a->pending++;
		td_meta_read_data(&s->meta, td_grace_begin(&s->grace), a->buf,
				  s->cs, a->old.host_offset,
				  q2_alloc_own_read_done, a);
		break;
	case QCOW2_CLUSTER_COMPRESSED:
		s->n_cow++;
		c = td_pool_get(&s->creads);
		if (!c) {
			a->err = -EBUSY;	/* retried by the engine */
			break;
		}
		memset(c, 0, s->cread_hdr);
		c->s = s;
		c->alloc = a;
		c->off = a->old.host_offset;
		c->csize = a->old.csize;
		c->buf = (uint8_t *)c + s->cread_hdr;
		a->pending++;
		q2_cread_start(s, c);
		break;
	default:
		break;		/* zero clusters: zeros */
	}
	q2_alloc_fill_done(a, 0);
}

/* A write (or zeroing) of treq, inside guest cluster gcl, needs a new
 * cluster; old is what the entry held. */
static void q2_alloc_data(struct q2_state *s, struct q2_l2 *t, uint32_t l2i,
			  uint64_t gcl, const struct qcow2_mapping *old,
			  td_request_t treq)
{
	struct q2_alloc *a;
	int err;

	if (q2_check_meta_old(s, old, gcl)) {
		td_complete_request(treq, -EIO);
		return;
	}
	a = q2_alloc_get(s, A_DATA, gcl);
	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	a->treq = treq;
	a->l2 = t;
	a->l2i = l2i;
	a->old = *old;
	/* 1. A free cluster, counted in memory. */
	err = q2_alloc_cluster(s, &a->host);
	if (err) {
		q2_alloc_finish(a, err);
		return;
	}
	q2_alloc_fill(a);
}

/* A discard of the whole guest cluster gcl: the entry, then the free. */
static void q2_discard_cluster(struct q2_state *s, struct q2_l2 *t,
			       uint32_t l2i, uint64_t gcl,
			       const struct qcow2_mapping *old,
			       td_request_t treq)
{
	struct q2_alloc *a;

	if (q2_check_meta_old(s, old, gcl)) {
		td_complete_request(treq, -EIO);
		return;
	}
	a = q2_alloc_get(s, A_DISCARD, gcl);
	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	s->n_discard++;
	a->treq = treq;
	a->l2 = t;
	a->l2i = l2i;
	a->old = *old;
	q2_l2_set(s, t, l2i, s->has_backing ? QCOW2_OFLAG_ZERO : 0, &a->wait,
		  q2_alloc_l2_done);
}

/* ---- L2 tables: load and allocate --------------------------------------- */

static struct q2_l2 *q2_l2_get(struct q2_state *s, uint64_t l1i)
{
	struct q2_l2 *t = s->l2s[l1i];

	if (t)
		return t;
	/* Once per L2 table in the image's life, not per request. */
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->buf = td_zalloc_aligned(s->cs);
	if (!t->buf) {
		free(t);
		return NULL;
	}
	t->index = l1i;
	t->state = L2_UNLOADED;
	td_list_init(&t->waiters);
	td_meta_seq_init(&t->seq, &s->meta, q2_l2_issue, q2_l2_failed);
	s->l2s[l1i] = t;
	return t;
}

static void q2_l2_loaded(void *ctx, void *arg, int err)
{
	struct q2_state *s = ctx;
	struct q2_l2 *t = arg;

	if (err)
		td_log(TD_LOG_ERR, "%s: reading the L2 table of L1 entry %"
		       PRIu64 ": %s", s->drv->name, t->index, strerror(-err));
	t->state = err ? L2_UNLOADED : L2_READY;
	td_meta_wake(&s->meta, &t->waiters, err);
}

static void q2_l2_alloc_l1_done(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, wait);
	struct q2_state *s = a->s;
	struct q2_l2 *t = a->l2;

	if (err) {
		/* The entry stays in memory: the table is usable. */
		td_log(TD_LOG_ERR, "%s: L1 entry %" PRIu64 " not written",
		       s->drv->name, t->index);
	}
	t->state = L2_READY;
	td_meta_wake(&s->meta, &t->waiters, 0);
	q2_alloc_finish(a, err);
}

static void q2_l2_alloc_committed(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, wait);
	struct q2_state *s = a->s;
	struct q2_l2 *t = a->l2;

	if (err) {
		t->state = L2_UNLOADED;
		td_meta_wake(&s->meta, &t->waiters, err);
		q2_alloc_finish(a, err);
		return;
	}
	q2_l1_set(s, t->index, a->host | QCOW2_OFLAG_COPIED);
	td_meta_seq_wait(&s->l1_seq, &a->wait, q2_l2_alloc_l1_done);
}

static void q2_l2_alloc_written(void *ctx, void *arg, int err)
{
	struct q2_state *s = ctx;
	struct q2_alloc *a = arg;

	if (err) {
		a->l2->state = L2_UNLOADED;
		td_meta_wake(&s->meta, &a->l2->waiters, err);
		q2_alloc_finish(a, err);
		return;
	}
	td_meta_seq_wait(&s->commit_seq, &a->wait, q2_l2_alloc_committed);
}

/* A new, empty L2 table for L1 entry t->index; treq waits for it. */
static void q2_l2_alloc(struct q2_state *s, struct q2_l2 *t,
			td_request_t treq)
{
	struct q2_alloc *a = q2_alloc_get(s, A_L2, t->index);
	int err;

	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	a->l2 = t;
	err = q2_alloc_cluster(s, &a->host);
	/* An L2 table is metadata from now on. */
	if (!err && qcow2_image_meta_add(s->img,
					 a->host >> s->g->cluster_bits)) {
		q2_set_refcount(s, a->host >> s->g->cluster_bits, 0);
		err = -ENOMEM;
	}
	if (err) {
		q2_alloc_finish(a, err);
		td_complete_request(treq, err);
		return;
	}
	t->state = L2_ALLOCATING;
	td_meta_park(&s->meta, &t->waiters, treq);
	memset(t->buf, 0, s->cs);
	td_meta_io(&s->meta, TD_OP_WRITE, t->buf, s->cs, a->host,
		   q2_l2_alloc_written, a);
}

/* ---- compressed clusters ------------------------------------------------ */

static void q2_cread_put(struct q2_state *s, struct q2_cread *c)
{
	td_pool_put(&s->creads, c);
}

/* Inflate into the cache (unless it is there already). */
static int q2_inflate_cached(struct q2_state *s, uint64_t off, uint32_t csize,
			     const uint8_t *data)
{
	if (s->zcache_csize == csize && s->zcache_off == off)
		return 0;
	s->zcache_csize = 0;
	if (qcow2_inflate(s->zs, data, csize, s->zcache, s->cs)) {
		td_log(TD_LOG_ERR, "%s: compressed cluster at %" PRIu64
		       " (%u bytes) does not inflate", s->drv->name, off,
		       csize);
		return -EIO;
	}
	s->zcache_off = off;
	s->zcache_csize = csize;
	return 0;
}

static void q2_cread_copy_out(struct q2_state *s, td_request_t treq)
{
	uint64_t in = (treq.sec % s->cl_secs) << TD_SECTOR_SHIFT;

	memcpy(treq.buf, s->zcache + in, (size_t)treq.secs << TD_SECTOR_SHIFT);
}

static void q2_cread_done(void *ctx, void *arg, int err)
{
	struct q2_state *s = ctx;
	struct q2_cread *c = arg;
	struct q2_alloc *a = c->alloc;
	td_request_t treq = c->treq;

	if (!err)
		err = q2_inflate_cached(s, c->off, c->csize, c->buf + c->skip);
	q2_cread_put(s, c);
	if (a) {
		if (!err)
			memcpy(a->buf, s->zcache, s->cs);
		q2_alloc_fill_done(a, err);
	} else {
		if (!err)
			q2_cread_copy_out(s, treq);
		td_complete_request(treq, err);
	}
	td_meta_wake(&s->meta, &s->res_waiters, 0);
}

static void q2_cread_start(struct q2_state *s, struct q2_cread *c)
{
	uint64_t start = td_round_down(c->off, Q2_IO_ALIGN);
	uint64_t end = td_round_up(c->off + c->csize, Q2_IO_ALIGN);

	if (s->zcache_csize == c->csize && s->zcache_off == c->off) {
		q2_cread_done(s, c, 0);
		return;
	}
	c->skip = (uint32_t)(c->off - start);
	c->len = end - start;
	if (c->len > s->cread_buf) {
		td_log(TD_LOG_ERR, "%s: compressed cluster at %" PRIu64
		       " claims %u bytes", s->drv->name, c->off, c->csize);
		q2_cread_done(s, c, -EIO);
		return;
	}
	td_meta_read_data(&s->meta, td_grace_begin(&s->grace), c->buf, c->len,
			  start, q2_cread_done, c);
}

static void q2_read_compressed(struct q2_state *s, td_request_t treq,
			       const struct qcow2_mapping *m)
{
	struct q2_cread *c;

	if (s->zcache_csize == m->csize && s->zcache_off == m->host_offset) {
		q2_cread_copy_out(s, treq);
		td_complete_request(treq, 0);
		return;
	}
	c = td_pool_get(&s->creads);
	if (!c) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	memset(c, 0, s->cread_hdr);
	c->s = s;
	c->treq = treq;
	c->off = m->host_offset;
	c->csize = m->csize;
	c->buf = (uint8_t *)c + s->cread_hdr;
	q2_cread_start(s, c);
}

/* ---- dispatch ----------------------------------------------------------- */

enum run_kind {
	RUN_NONE,
	RUN_DATA,	/* host I/O at host */
	RUN_ZERO,
	RUN_FORWARD,
};

/* Consecutive segments handled alike, issued as one piece. */
struct q2_run {
	enum run_kind	 kind;
	td_request_t	 treq;
	uint64_t	 host;
};

static void run_flush(struct q2_state *s, struct q2_run *r)
{
	switch (r->kind) {
	case RUN_DATA:
		q2_data_io(s, r->treq, r->host);
		break;
	case RUN_ZERO:
		memset(r->treq.buf, 0, (size_t)r->treq.secs << TD_SECTOR_SHIFT);
		td_complete_request(r->treq, 0);
		break;
	case RUN_FORWARD:
		td_forward_request(r->treq);
		break;
	default:
		break;
	}
	r->kind = RUN_NONE;
}

static void run_add(struct q2_state *s, struct q2_run *r, enum run_kind k,
		    td_request_t seg, uint64_t host)
{
	if (r->kind == k && r->treq.sec + r->treq.secs == seg.sec &&
	    (k != RUN_DATA || r->host + ((uint64_t)r->treq.secs <<
					 TD_SECTOR_SHIFT) == host)) {
		r->treq.secs += seg.secs;
		return;
	}
	run_flush(s, r);
	r->kind = k;
	r->treq = seg;
	r->host = host;
}

/* Mapping of a segment (within one cluster or subcluster). */
static int q2_segment_map(struct q2_state *s, struct q2_l2 *t, uint32_t l2i,
			  uint64_t in_bytes, struct qcow2_mapping *m)
{
	char why[256];
	struct td_report r = td_report_err(why, sizeof(why));
	int st;

	if (qcow2_l2_decode(s->g, s->version, l2_get(s, t, l2i), m, &r)) {
		td_log(TD_LOG_ERR, "%s: guest cluster %" PRIu64 ": %s",
		       s->drv->name, (t->index << s->g->l2_bits) + l2i, why);
		return -EIO;
	}
	if (!s->g->extended_l2 || m->type == QCOW2_CLUSTER_COMPRESSED)
		return 0;
	st = qcow2_subcluster_state(l2_bitmap(s, t, l2i),
				    (unsigned)(in_bytes /
					       (s->cs / QCOW2_SUBCLUSTERS)));
	if (st < 0 || (st == QCOW2_CLUSTER_NORMAL && !m->host_offset)) {
		td_log(TD_LOG_ERR, "%s: guest cluster %" PRIu64 ": bad "
		       "subcluster bitmap", s->drv->name,
		       (t->index << s->g->l2_bits) + l2i);
		return -EIO;
	}
	m->type = (enum qcow2_cluster_type)st;
	return 0;
}

/* Reads a zero-reading segment of the cluster would return, without I/O. */
static bool q2_reads_zero(const struct q2_state *s,
			  const struct qcow2_mapping *m)
{
	return m->type == QCOW2_CLUSTER_ZERO_PLAIN ||
	       m->type == QCOW2_CLUSTER_ZERO_ALLOC ||
	       (m->type == QCOW2_CLUSTER_UNALLOCATED && !s->has_backing);
}

/* One segment of a write or discard (inside one cluster). */
static void q2_dispatch_write_seg(struct q2_state *s, struct q2_l2 *t,
				  uint32_t l2i, uint64_t gcl,
				  const struct qcow2_mapping *m,
				  td_request_t seg, struct q2_run *run)
{
	uint64_t first = gcl * s->cl_secs;
	bool whole = seg.sec == first && (seg.secs == s->cl_secs ||
					  first + seg.secs == s->vsecs);

	if (s->corrupt) {
		/* Found by an earlier segment, or while this one waited. */
		run_flush(s, run);
		td_complete_request(seg, -EIO);
		return;
	}
	if (seg.op == TD_OP_DISCARD) {
		run_flush(s, run);
		if (q2_reads_zero(s, m) && (m->type != QCOW2_CLUSTER_ZERO_ALLOC ||
					    !whole)) {
			td_complete_request(seg, 0);
			return;
		}
		if (whole && (s->version >= 3 || !s->has_backing)) {
			q2_discard_cluster(s, t, l2i, gcl, m, seg);
			return;
		}
		/* Zeros written where an entry cannot say "zeros". */
		seg.op = TD_OP_WRITE;
		seg.buf = (char *)s->zeros;
		if (m->type == QCOW2_CLUSTER_NORMAL && m->copied) {
			if (q2_check_meta(s, m->host_offset, s->cs, gcl,
					  "its host cluster"))
				td_complete_request(seg, -EIO);
			else
				q2_data_io(s, seg, m->host_offset +
					   ((seg.sec - first) <<
					    TD_SECTOR_SHIFT));
			return;
		}
		q2_alloc_data(s, t, l2i, gcl, m, seg);
		return;
	}
	if (m->type == QCOW2_CLUSTER_NORMAL && m->copied) {
		if (q2_check_meta(s, m->host_offset, s->cs, gcl,
				  "its host cluster")) {
			run_flush(s, run);
			td_complete_request(seg, -EIO);
			return;
		}
		run_add(s, run, RUN_DATA, seg, m->host_offset +
			((seg.sec - first) << TD_SECTOR_SHIFT));
		return;
	}
	run_flush(s, run);
	q2_alloc_data(s, t, l2i, gcl, m, seg);
}

/* treq lies inside the range of ready L2 table t. */
static void q2_dispatch_table(struct q2_state *s, struct q2_l2 *t,
			      td_request_t treq)
{
	uint32_t seg_secs = s->g->extended_l2 ? s->cl_secs / QCOW2_SUBCLUSTERS :
			    s->cl_secs;
	struct q2_run run = { .kind = RUN_NONE };
	struct qcow2_mapping m;
	struct q2_alloc *busy;
	uint32_t done = 0;

	if (!seg_secs)
		seg_secs = 1;
	while (done < treq.secs) {
		td_request_t seg = treq;
		uint64_t sec = treq.sec + done, gcl = sec / s->cl_secs;
		uint32_t l2i = (uint32_t)(gcl & ((1ull << s->g->l2_bits) - 1));
		uint32_t n = seg_secs - (uint32_t)(sec % seg_secs);

		if (treq.op != TD_OP_READ)
			n = s->cl_secs - (uint32_t)(sec % s->cl_secs);
		if (n > treq.secs - done)
			n = treq.secs - done;
		seg.sec = sec;
		seg.secs = n;
		if (seg.buf)
			seg.buf = treq.buf + ((size_t)done << TD_SECTOR_SHIFT);
		done += n;
		busy = q2_alloc_find(s, gcl);
		if (busy) {
			run_flush(s, &run);
			td_meta_park(&s->meta, &busy->waiters, seg);
			continue;
		}
		if (q2_segment_map(s, t, l2i, (sec % s->cl_secs) <<
				   TD_SECTOR_SHIFT, &m)) {
			run_flush(s, &run);
			td_complete_request(seg, -EIO);
			continue;
		}
		if (treq.op != TD_OP_READ) {
			q2_dispatch_write_seg(s, t, l2i, gcl, &m, seg, &run);
			continue;
		}
		switch (m.type) {
		case QCOW2_CLUSTER_NORMAL:
			run_add(s, &run, RUN_DATA, seg, m.host_offset +
				((sec % s->cl_secs) << TD_SECTOR_SHIFT));
			break;
		case QCOW2_CLUSTER_ZERO_PLAIN:
		case QCOW2_CLUSTER_ZERO_ALLOC:
			run_add(s, &run, RUN_ZERO, seg, 0);
			break;
		case QCOW2_CLUSTER_UNALLOCATED:
			run_add(s, &run, RUN_FORWARD, seg, 0);
			break;
		case QCOW2_CLUSTER_COMPRESSED:
			run_flush(s, &run);
			q2_read_compressed(s, seg, &m);
			break;
		}
	}
	run_flush(s, &run);
}

/* treq lies inside the range of one L1 entry. */
static void q2_dispatch_l1(struct q2_state *s, td_request_t treq)
{
	uint64_t l1i = (treq.sec / s->cl_secs) >> s->g->l2_bits;
	struct q2_l2 *t = l1i < s->img->h.l1_size ? s->l2s[l1i] : NULL;

	if (l1i >= s->img->h.l1_size) {
		td_complete_request(treq, -EIO);
		return;
	}
	if (t && (t->state == L2_LOADING || t->state == L2_ALLOCATING)) {
		td_meta_park(&s->meta, &t->waiters, treq);
		return;
	}
	if (!(s->l1[l1i] & QCOW2_OFFSET_MASK)) {
		if (treq.op == TD_OP_READ ||
		    (treq.op == TD_OP_DISCARD && !s->has_backing)) {
			if (treq.op == TD_OP_READ)
				td_forward_request(treq);
			else
				td_complete_request(treq, 0);
			return;
		}
		t = q2_l2_get(s, l1i);
		if (!t) {
			td_complete_request(treq, -ENOMEM);
			return;
		}
		q2_l2_alloc(s, t, treq);
		return;
	}
	if (!t)
		t = q2_l2_get(s, l1i);
	if (!t) {
		td_complete_request(treq, -ENOMEM);
		return;
	}
	if (t->state == L2_UNLOADED) {
		t->state = L2_LOADING;
		td_meta_park(&s->meta, &t->waiters, treq);
		td_meta_io(&s->meta, TD_OP_READ, t->buf, s->cs,
			   s->l1[l1i] & QCOW2_OFFSET_MASK, q2_l2_loaded, t);
		return;
	}
	q2_dispatch_table(s, t, treq);
}

/* Split treq at L1 entry boundaries. */
static void q2_dispatch(struct q2_state *s, td_request_t treq)
{
	uint64_t span = (uint64_t)s->cl_secs << s->g->l2_bits;
	uint32_t done = 0;

	while (done < treq.secs) {
		td_request_t piece = treq;
		uint64_t sec = treq.sec + done;
		uint64_t n = span - sec % span;

		if (n > treq.secs - done)
			n = treq.secs - done;
		piece.sec = sec;
		piece.secs = (uint32_t)n;
		if (piece.buf)
			piece.buf = treq.buf +
				    ((size_t)done << TD_SECTOR_SHIFT);
		done += (uint32_t)n;
		q2_dispatch_l1(s, piece);
	}
}

/* td_meta_dispatch_t: a parked request's turn again. */
static void q2_redispatch(void *ctx, td_request_t treq)
{
	q2_dispatch(ctx, treq);
}

static void q2_queue_rw(td_driver_t *drv, td_request_t treq)
{
	struct q2_state *s = drv->data;

	if (s->corrupt && treq.op != TD_OP_READ) {
		td_complete_request(treq, -EIO);
		return;
	}
	q2_dispatch(s, treq);
}

static void q2_queue_discard(td_driver_t *drv, td_request_t treq)
{
	q2_queue_rw(drv, treq);
}

/* Flush: a refcount commit, which ends with an fsync. */
static void q2_queue_flush(td_driver_t *drv, td_request_t treq)
{
	struct q2_state *s = drv->data;
	struct td_meta_req *r;

	if (s->rdonly) {
		td_complete_request(treq, 0);
		return;
	}
	r = td_meta_req_get(&s->meta, treq);
	if (r)
		td_meta_seq_wait(&s->commit_seq, &r->wait, td_meta_req_done);
}

/* ---- open / close ------------------------------------------------------- */

static void q2_free_state(struct q2_state *s)
{
	uint64_t i;

	if (s->l2s && s->img) {
		for (i = 0; i < s->img->h.l1_size; i++) {
			if (s->l2s[i])
				free(s->l2s[i]->buf);
			free(s->l2s[i]);
		}
	}
	free(s->l2s);
	free(s->l1_disk);
	free(s->reftable_disk);
	free(s->rb_dirty);
	free(s->rb_lo);
	free(s->rb_hi);
	free(s->rb_new);
	free(s->rb_list);
	free(s->commit_list);
	td_grace_fini(&s->grace);
	free(s->free_stack);
	free(s->zeros);
	free(s->zcache);
	qcow2_inflate_free(s->zs);
	td_meta_fini(&s->meta);
	td_pool_fini(&s->allocs);
	td_pool_fini(&s->creads);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

static unsigned clamp_count(size_t budget, size_t each, unsigned lo,
			    unsigned hi)
{
	size_t n = budget / each;

	return n < lo ? lo : n > hi ? hi : (unsigned)n;
}

static int q2_open_rw_state(struct q2_state *s)
{
	struct qcow2_image *img = s->img;
	uint64_t n = img->reftable_entries, i;

	s->reftable_bytes = (size_t)img->h.refcount_table_clusters * s->cs;
	s->reftable_disk = td_zalloc_aligned(s->reftable_bytes);
	s->rb_dirty = calloc(n ? n : 1, sizeof(bool));
	s->rb_lo = calloc(n ? n : 1, sizeof(uint32_t));
	s->rb_hi = calloc(n ? n : 1, sizeof(uint32_t));
	s->rb_new = calloc(n ? n : 1, sizeof(bool));
	s->rb_list = calloc(n ? n : 1, sizeof(uint64_t));
	s->commit_list = calloc(n ? n : 1, sizeof(*s->commit_list));
	s->free_stack = calloc(Q2_FREE_STACK, sizeof(uint64_t));
	if (!s->reftable_disk || !s->rb_dirty || !s->rb_new || !s->rb_list ||
	    !s->commit_list || !s->free_stack || !s->rb_lo || !s->rb_hi)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		td_put_be64(s->reftable_disk + i * 8, img->reftable[i]);
	s->free_hint = 0;
	s->fresh_from = (img->file_size + s->cs - 1) >> s->g->cluster_bits;
	s->punch_ok = true;
	return 0;
}

static int q2_open(td_driver_t *drv, const char *path, td_flag_t flags)
{
	struct q2_state *s = drv->data;
	bool rdonly = flags & TD_OPEN_RDONLY;
	char err[1024];
	size_t each;
	uint64_t i;
	uint32_t align = 0;
	bool direct = false;
	int rc, oflags;

	s->drv = drv;
	s->fd = -1;
	td_grace_init(&s->grace, q2_grace_release, s);
	rc = qcow2_image_open(&s->img, path, rdonly ? 0 : QCOW2_IMAGE_RDWR,
			      err, sizeof(err));
	if (rc) {
		s->img = NULL;
		return td_meta_refuse(drv, rc, err);
	}
	if (s->img->warning[0])
		td_log(TD_LOG_WARN, "%s", s->img->warning);
	s->rdonly = rdonly;
	s->g = &s->img->g;
	s->cs = s->g->cluster_size;
	s->cl_secs = s->cs >> TD_SECTOR_SHIFT;
	s->io_align = s->cs < Q2_IO_ALIGN ? s->cs : Q2_IO_ALIGN;
	s->version = s->img->h.version;
	s->has_backing = s->img->backing[0] != '\0';
	s->vsecs = qcow2_image_size(s->img) >> TD_SECTOR_SHIFT;
	s->l1 = s->img->l1;
	oflags = (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	/*
	 * O_DIRECT needs 4 KiB-aligned clusters on 4Kn disks, and metadata
	 * I/O is only 4 KiB aligned: buffered below or beyond that.
	 */
	if (s->cs >= Q2_IO_ALIGN) {
		rc = td_open_direct(path, oflags, Q2_IO_ALIGN, &direct,
				    &align);
	} else {
		rc = td_open_file(path, oflags);
		if (rc < 0)
			rc = -errno;
	}
	if (rc < 0) {
		td_log(TD_LOG_ERR, "%s: %s", path, strerror(-rc));
		goto fail;
	}
	s->fd = rc;
	rc = -ENOMEM;
	s->l1_bytes = td_round_up((uint64_t)s->img->h.l1_size * 8,
				  s->io_align);
	s->l1_disk = td_zalloc_aligned(s->l1_bytes);
	s->l2s = calloc(s->img->h.l1_size ? s->img->h.l1_size : 1,
			sizeof(*s->l2s));
	s->zeros = td_zalloc_aligned(s->cs);
	s->zcache = td_zalloc_aligned(s->cs);
	s->zs = qcow2_inflate_new();
	if (!s->l1_disk || !s->l2s || !s->zeros || !s->zcache || !s->zs)
		goto fail;
	for (i = 0; i < s->img->h.l1_size; i++)
		td_put_be64(s->l1_disk + i * 8, s->l1[i]);
	if (!rdonly && q2_open_rw_state(s))
		goto fail;
	s->alloc_hdr = td_round_up(sizeof(struct q2_alloc), TD_BUF_ALIGN);
	s->cread_hdr = td_round_up(sizeof(struct q2_cread), TD_BUF_ALIGN);
	s->cread_buf = td_round_up(2 * (size_t)s->cs +
				   QCOW2_COMPRESSED_SECTOR, Q2_IO_ALIGN) +
		       2 * Q2_IO_ALIGN;
	each = s->alloc_hdr + s->cs;
	if (td_meta_init(&s->meta, drv, s->fd, s, q2_redispatch, Q2_MAX_IOCBS,
			 Q2_MAX_PIECES) ||
	    td_pool_init(&s->allocs, clamp_count(Q2_ALLOC_BUDGET, each,
						 Q2_MIN_ALLOCS, Q2_MAX_ALLOCS),
			 each, TD_BUF_ALIGN) ||
	    td_pool_init(&s->creads, clamp_count(Q2_CREAD_BUDGET,
						 s->cread_hdr + s->cread_buf,
						 Q2_MIN_CREADS, Q2_MAX_CREADS),
			 s->cread_hdr + s->cread_buf, TD_BUF_ALIGN))
		goto fail;
	for (i = 0; i < Q2_HASH_BUCKETS; i++)
		td_list_init(&s->hash[i]);
	td_list_init(&s->res_waiters);
	td_meta_seq_init(&s->l1_seq, &s->meta, q2_l1_issue, q2_l1_failed);
	td_meta_seq_init(&s->commit_seq, &s->meta, q2_commit_issue, NULL);
	drv->info.size = s->vsecs;
	drv->info.sector_size = TD_SECTOR_SIZE;
	/*
	 * On a 4Kn device O_DIRECT data I/O must be 4 KiB aligned too:
	 * clusters are (4 KiB at least here), so the VBD widens requests.
	 */
	if (direct && align > TD_SECTOR_SIZE)
		drv->info.io_align = align;
	return 0;
fail:
	q2_free_state(s);
	qcow2_image_close(s->img, false);
	s->img = NULL;
	return rc;
}

/* Write back refcount blocks changed since the last commit (close). */
static int q2_close_write_refcounts(struct q2_state *s)
{
	uint64_t i, rbi;
	bool table = false;
	ssize_t n;

	for (i = 0; i < s->rb_nlist; i++) {
		rbi = s->rb_list[i];
		n = pwrite(s->fd, s->img->refblocks[rbi], s->cs,
			   (off_t)s->img->reftable[rbi]);
		if (n != (ssize_t)s->cs)
			return n < 0 ? -errno : -EIO;
	}
	if (fdatasync(s->fd) < 0)
		return -errno;
	for (i = 0; i < s->rb_nlist; i++) {
		rbi = s->rb_list[i];
		if (!s->rb_new[rbi])
			continue;
		td_put_be64(s->reftable_disk + rbi * 8,
			    s->img->reftable[rbi]);
		s->rb_new[rbi] = false;
		table = true;
	}
	if (table) {
		n = pwrite(s->fd, s->reftable_disk, s->reftable_bytes,
			   (off_t)s->img->h.refcount_table_offset);
		if (n != (ssize_t)s->reftable_bytes)
			return n < 0 ? -errno : -EIO;
	}
	s->rb_nlist = 0;
	return 0;
}

static int q2_close(td_driver_t *drv)
{
	struct q2_state *s = drv->data;
	int err = 0, r;

	if (!s->rdonly) {
		/* No I/O is in flight: every freed cluster is free now. */
		td_grace_release_all(&s->grace);
		err = q2_close_write_refcounts(s);
		if (err) {
			td_log(TD_LOG_ERR, "%s: writing refcounts on close: %s",
			       drv->name, strerror(-err));
			s->meta_error = true;
		}
	}
	q2_free_state(s);
	r = qcow2_image_close(s->img, !s->meta_error);
	if (r && !err) {
		td_log(TD_LOG_ERR, "%s: closing: %s", drv->name, strerror(-r));
		err = r;
	}
	s->img = NULL;
	return err;
}

static int q2_get_parent_id(td_driver_t *drv, td_disk_id_t *id)
{
	struct q2_state *s = drv->data;
	const char *driver;
	char err[1024];
	char *path;
	int rc;

	/* Without a backing format the file is probed (opened): ask first. */
	if (s->img->backing[0] && !s->img->ext.has_backing_format) {
		path = qcow2_path_resolve(s->img->path, s->img->backing);
		if (!path)
			return -ENOMEM;
		rc = td_check_path(drv, path);
		free(path);
		if (rc) {
			char why[sizeof(drv->error)];

			snprintf(why, sizeof(why), "%s", drv->error);
			snprintf(drv->error, sizeof(drv->error), "%s: backing "
				 "file %s", drv->name, why);
			return rc;
		}
	}
	rc = qcow2_image_backing(s->img, &path, &driver, err, sizeof(err));
	if (rc == 1)
		return TD_NO_PARENT;
	if (rc)
		return td_meta_refuse(drv, rc, err);
	id->name = path;
	id->drivertype = strdup(driver);
	if (!id->drivertype) {
		free(path);
		id->name = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* qcow2 records a backing file by name only: any image of it is right. */
static int q2_validate_parent(td_driver_t *drv, td_driver_t *parent,
			      td_flag_t flags)
{
	(void)drv;
	(void)parent;
	(void)flags;
	return 0;
}

static void q2_debug(td_driver_t *drv, FILE *out)
{
	struct q2_state *s = drv->data;

	fprintf(out, "qcow2:%s v%u, %u-byte clusters, %llu bytes, %llu "
		"clusters allocated, %llu copied on write, %llu discarded, "
		"%u/%u iocbs free\n", drv->name, s->version, s->cs,
		(unsigned long long)(s->vsecs << TD_SECTOR_SHIFT),
		(unsigned long long)s->n_alloc, (unsigned long long)s->n_cow,
		(unsigned long long)s->n_discard, s->meta.ios.nfree,
		s->meta.ios.count);
}

static int q2_create(const char *path, uint64_t size, td_flag_t flags)
{
	struct qcow2_create_params p = { .size = size };
	char err[512];
	int rc;

	(void)flags;
	rc = qcow2_image_create(path, &p, err, sizeof(err));
	if (rc)
		td_log(TD_LOG_ERR, "%s", err);
	return rc;
}

/* The backing name to record: relative when both share a directory. */
static const char *q2_backing_name(const char *path, const char *parent,
				   char *buf, size_t len)
{
	char *a = strdup(path), *b = strdup(parent);
	const char *name = parent;

	if (a && b && !strcmp(dirname(a), dirname(b))) {
		const char *slash = strrchr(parent, '/');

		snprintf(buf, len, "%s", slash ? slash + 1 : parent);
		name = buf;
	}
	free(a);
	free(b);
	return name;
}

static int q2_create_child(const char *path, const char *parent,
			   const char *parent_driver, char *err,
			   size_t errlen)
{
	char name[QCOW2_MAX_BACKING_NAME + 1];
	struct qcow2_create_params p = {
		.backing = q2_backing_name(path, parent, name, sizeof(name)),
		.backing_fmt = qcow2_format_for_driver(parent_driver),
	};
	int rc;

	rc = td_image_size(parent_driver, parent, &p.size, err, errlen);
	if (rc)
		return rc;
	p.size = td_round_up(p.size, TD_SECTOR_SIZE);
	return qcow2_image_create(path, &p, err, errlen);
}

const struct tap_disk tapdisk_qcow2 = {
	TD_DISK_VERSION,
	.name			= "qcow2",
	.description		= "qcow2 (QEMU) v2/v3: backing files, compression",
	.private_data_size	= sizeof(struct q2_state),
	.td_open		= q2_open,
	.td_close		= q2_close,
	.td_get_parent_id	= q2_get_parent_id,
	.td_validate_parent	= q2_validate_parent,
	.td_queue_read		= q2_queue_rw,
	.td_queue_write		= q2_queue_rw,
	.td_debug		= q2_debug,
	.td_queue_flush		= q2_queue_flush,
	.td_queue_discard	= q2_queue_discard,
	.td_create		= q2_create,
	.td_create_child	= q2_create_child,
	.td_probe		= qcow2_probe,
};
