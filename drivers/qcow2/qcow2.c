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
 *
 * Files: this one (open, close, the driver table, request dispatch,
 * metadata overlap), qcow2-cluster.c (allocating and discarding
 * clusters), common/td-l2.c (the L1 and L2 tables, dispatch to a table,
 * allocation records, compressed reads), qcow2-refcount.c (the
 * refcounts in memory and their commit); qcow2-driver.h is what they
 * share.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>

#include "qcow2-driver.h"
#include "common/td-fileio.h"

#define Q2_MAX_IOCBS		4096
#define Q2_MAX_PIECES		4096
/* Bounce memory for allocations and compressed reads, and the caps. */
#define Q2_ALLOC_BUDGET		(64u << 20)
#define Q2_MAX_ALLOCS		256u
#define Q2_MIN_ALLOCS		8u
#define Q2_CREAD_BUDGET		(32u << 20)
#define Q2_MAX_CREADS		64u
#define Q2_MIN_CREADS		4u

/* ---- small helpers --------------------------------------------------- */

/* The subcluster bitmap of extended L2 entry i. */
static uint64_t l2_bitmap(const struct q2_state *s, const struct td_l2 *t,
			  uint32_t i)
{
	return td_get_be64(t->buf + (size_t)i * s->g->l2_entry_size + 8);
}

/* Read or write treq's sectors in place at host offset off. */
static void q2_data_io(struct q2_state *s, td_request_t treq, uint64_t off)
{
	td_meta_request_io(&s->meta, treq, off, td_grace_begin(&s->grace));
}

/* ---- metadata overlap ------------------------------------------------ */

/*
 * The image's tables point where they must not (found before a write
 * landed): set the corrupt bit, say why once, and fail this and every
 * later write and discard.  Returns -EIO.
 */
int q2_corrupt(struct q2_state *s, const char *fmt, ...)
{
	char why[384], err[512];
	va_list ap;
	int rc;

	if (s->corrupt)
		return -EIO;
	s->corrupt = true;
	s->meta_error = true;		/* the dirty bit stays too */
	va_start(ap, fmt);
	td_vmsgf(why, sizeof(why), fmt, ap);
	va_end(ap);
	rc = qcow2_image_mark_corrupt(s->img, err, sizeof(err));
	/* .ctl shows it after the chain (tapdisk.h, td_driver.error). */
	td_msgf(s->drv->error, sizeof(s->drv->error), "%s: image marked "
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
int q2_check_meta_old(struct q2_state *s,
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

/* ---- dispatch -------------------------------------------------------- */

/* Mapping of a segment (within one cluster or subcluster). */
static int q2_segment_map(struct q2_state *s, struct td_l2 *t, uint32_t l2i,
			  uint64_t in_bytes, struct qcow2_mapping *m)
{
	char why[256];
	struct td_report r = td_report_err(why, sizeof(why));
	int st;

	if (qcow2_l2_decode(s->g, s->version, td_l2_entry(t, l2i), m, &r)) {
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
static void q2_dispatch_write_seg(struct q2_state *s, struct td_l2 *t,
				  uint32_t l2i, uint64_t gcl,
				  const struct qcow2_mapping *m,
				  td_request_t seg, struct td_meta_run *run)
{
	uint64_t first = gcl * s->cl_secs;
	bool whole = td_l2_covers(&s->tables, seg, gcl);

	if (s->corrupt) {
		/* Found by an earlier segment, or while this one waited. */
		td_meta_run_flush(run);
		td_complete_request(seg, -EIO);
		return;
	}
	if (seg.op == TD_OP_DISCARD) {
		td_meta_run_flush(run);
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
		if (!s->zeros && !(s->zeros = td_zalloc_aligned(s->cs))) {
			td_log(TD_LOG_ERR, "%s: no memory for a cluster of "
			       "zeros", s->drv->name);
			td_complete_request(seg, -ENOMEM);
			return;
		}
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
			td_meta_run_flush(run);
			td_complete_request(seg, -EIO);
			return;
		}
		td_meta_run_add(run, TD_RUN_DATA, seg, m->host_offset +
			((seg.sec - first) << TD_SECTOR_SHIFT));
		return;
	}
	td_meta_run_flush(run);
	q2_alloc_data(s, t, l2i, gcl, m, seg);
}

/* treq lies inside the range of ready L2 table t. */
static void q2_dispatch_table(struct q2_state *s, struct td_l2 *t,
			      td_request_t treq)
{
	uint32_t seg_secs = s->g->extended_l2 ? s->cl_secs / QCOW2_SUBCLUSTERS :
			    s->cl_secs;
	struct td_meta_run run = { .m = &s->meta, .grace = &s->grace };
	struct qcow2_mapping m;
	struct td_l2_alloc *busy;
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
		busy = td_l2_alloc_find(&s->tables, gcl);
		if (busy) {
			td_meta_run_flush(&run);
			td_meta_park(&s->meta, &busy->waiters, seg);
			continue;
		}
		if (q2_segment_map(s, t, l2i, (sec % s->cl_secs) <<
				   TD_SECTOR_SHIFT, &m)) {
			td_meta_run_flush(&run);
			td_complete_request(seg, -EIO);
			continue;
		}
		if (treq.op != TD_OP_READ) {
			q2_dispatch_write_seg(s, t, l2i, gcl, &m, seg, &run);
			continue;
		}
		switch (m.type) {
		case QCOW2_CLUSTER_NORMAL:
			td_meta_run_add(&run, TD_RUN_DATA, seg, m.host_offset +
				((sec % s->cl_secs) << TD_SECTOR_SHIFT));
			break;
		case QCOW2_CLUSTER_ZERO_PLAIN:
		case QCOW2_CLUSTER_ZERO_ALLOC:
			td_meta_run_add(&run, TD_RUN_ZERO, seg, 0);
			break;
		case QCOW2_CLUSTER_UNALLOCATED:
			td_meta_run_add(&run, TD_RUN_FORWARD, seg, 0);
			break;
		case QCOW2_CLUSTER_COMPRESSED:
			td_meta_run_flush(&run);
			td_l2_read_compressed(&s->tables, seg,
					      m.host_offset, m.csize);
			break;
		}
	}
	td_meta_run_flush(&run);
}

/* td_l2_ops.unmapped: a read goes to the backing image; a discard
 * without one has nothing to do. */
static bool q2_unmapped(void *ctx, td_request_t treq)
{
	struct q2_state *s = ctx;

	if (treq.op == TD_OP_READ) {
		td_forward_request(treq);
		return true;
	}
	if (treq.op == TD_OP_DISCARD && !s->has_backing) {
		td_complete_request(treq, 0);
		return true;
	}
	return false;
}

static void q2_table(void *ctx, struct td_l2 *t, td_request_t treq)
{
	q2_dispatch_table(ctx, t, treq);
}

static const struct td_l2_ops q2_l2_ops = {
	.table		= q2_table,
	.unmapped	= q2_unmapped,
	.alloc		= q2_l2_alloc,
	.written	= q2_alloc_written,
};

/* td_meta_dispatch_t: a parked request's turn again. */
static void q2_redispatch(void *ctx, td_request_t treq)
{
	struct q2_state *s = ctx;

	td_l2_dispatch(&s->tables, treq);
}

static void q2_queue_rw(td_driver_t *drv, td_request_t treq)
{
	struct q2_state *s = drv->data;

	if (s->corrupt && treq.op != TD_OP_READ) {
		td_complete_request(treq, -EIO);
		return;
	}
	td_l2_dispatch(&s->tables, treq);
}

static void q2_queue_discard(td_driver_t *drv, td_request_t treq)
{
	q2_queue_rw(drv, treq);
}

/* Flush: a refcount commit, which ends with an fsync. */
static void q2_queue_flush(td_driver_t *drv, td_request_t treq)
{
	struct q2_state *s = drv->data;

	if (s->rdonly)
		td_complete_request(treq, 0);
	else
		td_meta_req_wait(&s->meta, &s->commit_seq, treq);
}

/* ---- open / close ---------------------------------------------------- */

static void q2_free_state(struct q2_state *s)
{
	td_l2_fini(&s->tables);
	td_free_sparse(s->reftable_disk, s->reftable_bytes);
	td_free_sparse(s->rb_dirty, s->rb_entries * sizeof(*s->rb_dirty));
	td_free_sparse(s->rb_lo, s->rb_entries * sizeof(*s->rb_lo));
	td_free_sparse(s->rb_hi, s->rb_entries * sizeof(*s->rb_hi));
	td_free_sparse(s->rb_new, s->rb_entries * sizeof(*s->rb_new));
	td_free_sparse(s->rb_list, s->rb_entries * sizeof(*s->rb_list));
	td_free_sparse(s->commit_list,
		       s->rb_entries * sizeof(*s->commit_list));
	td_grace_fini(&s->grace);
	td_free_sparse(s->free_stack, Q2_FREE_STACK * sizeof(*s->free_stack));
	free(s->zeros);
	td_meta_fini(&s->meta);
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

/*
 * The per-refcount-block state is sized for the refcount table's capacity
 * (8192 blocks in one 64 KiB cluster) of which an image uses a few: sparse
 * tables, so that each read-write VBD costs the pages of the blocks it
 * uses, not the table's bound (docs/qcow2.md, "Limits").
 */
static int q2_open_rw_state(struct q2_state *s)
{
	struct qcow2_image *img = s->img;
	uint64_t n = img->reftable_entries, i;

	s->rb_entries = n ? n : 1;
	s->reftable_bytes = (size_t)img->h.refcount_table_clusters * s->cs;
	s->reftable_disk = td_zalloc_sparse(s->reftable_bytes);
	s->rb_dirty = td_zalloc_sparse(s->rb_entries * sizeof(*s->rb_dirty));
	s->rb_lo = td_zalloc_sparse(s->rb_entries * sizeof(*s->rb_lo));
	s->rb_hi = td_zalloc_sparse(s->rb_entries * sizeof(*s->rb_hi));
	s->rb_new = td_zalloc_sparse(s->rb_entries * sizeof(*s->rb_new));
	s->rb_list = td_zalloc_sparse(s->rb_entries * sizeof(*s->rb_list));
	s->commit_list = td_zalloc_sparse(s->rb_entries *
					  sizeof(*s->commit_list));
	s->free_stack = td_zalloc_sparse(Q2_FREE_STACK *
					 sizeof(*s->free_stack));
	if (!s->reftable_disk || !s->rb_dirty || !s->rb_new || !s->rb_list ||
	    !s->commit_list || !s->free_stack || !s->rb_lo || !s->rb_hi)
		return -ENOMEM;
	/* Zero entries are zeros already: their pages stay untouched. */
	for (i = 0; i < n; i++)
		if (img->reftable[i])
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
	size_t each, cread_buf, cread_each;
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
	oflags = (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	/*
	 * O_DIRECT needs 4 KiB-aligned clusters on 4Kn disks, and metadata
	 * I/O is only 4 KiB aligned: buffered below or beyond that.
	 */
	if (s->cs >= Q2_IO_ALIGN) {
		rc = td_open_direct(path, oflags, flags, Q2_IO_ALIGN, &direct,
				    &align);
	} else {
		rc = td_open_file(path, oflags);
		if (rc < 0)
			rc = -errno;
	}
	if (rc < 0)
		goto fail;	/* the errno says it all (tapdisk.h) */
	s->fd = rc;
	rc = -ENOMEM;
	td_list_init(&s->res_waiters);
	/* An allocation record and its bounce cluster. */
	each = td_round_up(sizeof(struct q2_alloc), TD_BUF_ALIGN) + s->cs;
	/* A compressed cluster: at most 2 clusters, 4 KiB-aligned reads. */
	cread_buf = td_round_up(2 * (size_t)s->cs + QCOW2_COMPRESSED_SECTOR,
				Q2_IO_ALIGN) + 2 * Q2_IO_ALIGN;
	cread_each = td_round_up(sizeof(struct td_l2_cread), TD_BUF_ALIGN) +
		     cread_buf;
	if (td_l2_init(&s->tables, &s->meta, s->img->l1, &(struct td_l2_params){
			.l1_size = s->img->h.l1_size,
			.l1_offset = s->img->h.l1_table_offset,
			.offset_mask = QCOW2_OFFSET_MASK,
			.table_bytes = s->cs,
			.entry_size = s->g->l2_entry_size,
			.align = s->io_align,
			.span_secs = (uint64_t)s->cl_secs << s->g->l2_bits,
			.cl_secs = s->cl_secs,
			.vsecs = s->vsecs,
			.res_waiters = &s->res_waiters,
			.nallocs = clamp_count(Q2_ALLOC_BUDGET, each,
					       Q2_MIN_ALLOCS, Q2_MAX_ALLOCS),
			.alloc_size = sizeof(struct q2_alloc),
			.alloc_buf = s->cs,
			.ncreads = clamp_count(Q2_CREAD_BUDGET, cread_each,
					       Q2_MIN_CREADS, Q2_MAX_CREADS),
			.cread_buf = cread_buf,
			.cread_align = Q2_IO_ALIGN,
			.grace = &s->grace,
			.ops = &q2_l2_ops,
		}))
		goto fail;
	if (!rdonly && q2_open_rw_state(s))
		goto fail;
	if (td_meta_init(&s->meta, drv, s->fd, s, q2_redispatch, Q2_MAX_IOCBS,
			 Q2_MAX_PIECES))
		goto fail;
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
	/* A table write failed: the dirty bit stays set. */
	if (s->tables.write_failed)
		s->meta_error = true;
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
	if (s->img->backing[0] && !s->img->ext.has_backing_format &&
	    !td_remote_parent(s->img->backing, &driver)) {
		path = td_path_resolve(s->img->path, s->img->backing);
		if (!path)
			return -ENOMEM;
		rc = td_parent_check_path(drv, path, "backing file");
		free(path);
		if (rc)
			return rc;
	}
	rc = qcow2_image_backing(s->img, &path, &driver, err, sizeof(err));
	if (rc == 1)
		return TD_NO_PARENT;
	if (rc)
		return td_meta_refuse(drv, rc, err);
	return td_parent_id_set(id, path, driver);
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

static int q2_create_child(const char *path, const char *parent,
			   const char *parent_driver, char *err,
			   size_t errlen)
{
	char name[QCOW2_MAX_BACKING_NAME + 1];
	struct qcow2_create_params p = {
		.backing = td_path_backing_name(path, parent, name, sizeof(name)),
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
	/* A backing file is recorded by name only. */
	.td_validate_parent	= td_parent_any,
	.td_queue_read		= q2_queue_rw,
	.td_queue_write		= q2_queue_rw,
	.td_debug		= q2_debug,
	.td_queue_flush		= q2_queue_flush,
	.td_queue_discard	= q2_queue_discard,
	.td_create		= q2_create,
	.td_create_child	= q2_create_child,
	.td_probe		= qcow2_probe,
};
