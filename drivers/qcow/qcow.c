/* SPDX-License-Identifier: MIT */
/*
 * qcow: QEMU's first copy-on-write format (version 1), asynchronous.
 *
 * Metadata is read at open by qcow-image.c (header, backing name, L1
 * table, every L1 entry checked to lie inside the file).  L2 tables are
 * loaded on first use into a bounded cache (QC_L2_CACHE_BYTES, at least
 * QC_MIN_SLOTS tables), the least recently used idle one evicted.  The
 * file is opened buffered: qcow tables and compressed data sit at any
 * 8-byte or byte offset, too fine for O_DIRECT.
 *
 * Reads: a cluster is read in place; an unallocated one is forwarded to
 * the backing image (zeros past the chain); a compressed one is read and
 * inflated (raw deflate, as QEMU writes it; the last one inflated is
 * kept).
 *
 * Writes into an allocated cluster go in place.  An unallocated or a
 * compressed cluster gets a new one; qcow has no refcounts, so new
 * clusters and tables are appended at the end of the file, and a
 * replaced compressed cluster's space is left behind (as QEMU does).
 * Each step after the previous one completed:
 *   1. a cluster at the end of the file is taken (in memory);
 *   2. its data is written: the request's over the old contents (the
 *      backing image's through a forwarded read, the inflated compressed
 *      cluster, or zeros), or the request's alone when it covers the
 *      cluster;
 *   3. a barrier (fsync; group-committed with concurrent allocations);
 *   4. the L2 entry (the commit point); then the write completes.
 * A missing L2 table is allocated first the same way: the zeroed table
 * is written at the end of the file, a barrier, then its L1 entry.  A
 * crash at any point leaves at worst space at the end of the file that
 * nothing points to, never an entry pointing at data or a table not yet
 * written.  L1 and L2 writes go through group-commit sequencers
 * (td-meta.h).  Requests for a cluster being allocated wait for it.
 *
 * Flush: a barrier.  Discard: not supported (EOPNOTSUPP; qcow has no
 * zero clusters and no way to free space).  Encrypted images are refused.
 *
 * Files: this one (open, close, the driver table, dispatch),
 * qcow-cluster.c (allocation), common/td-l2.c (the L1 and L2 tables,
 * the L2 cache, dispatch to a table, compressed reads),
 * qcow-image.c (synchronous open, create, check), qcow-format.c (pure).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tapfs/log.h>
#include <tapfs/tapdisk.h>

#include "qcow-driver.h"
#include "common/td-fileio.h"

#define QC_MAX_IOCBS		4096
#define QC_MAX_PIECES		4096
#define QC_L2_CACHE_BYTES	(4u << 20)
#define QC_MIN_SLOTS		16u
#define QC_MAX_SLOTS		256u
#define QC_MAX_ALLOCS		64u
#define QC_MAX_CREADS		16u

/* One segment of a read or write, inside one cluster of ready table t. */
static void qc_dispatch_seg(struct qc_state *s, struct td_l2 *t,
			    td_request_t seg, struct td_meta_run *run)
{
	uint64_t gcl = seg.sec / s->cl_secs;
	uint32_t l2i = (uint32_t)(gcl & ((1ull << s->l2_bits) - 1));
	uint64_t in = (seg.sec % s->cl_secs) << TD_SECTOR_SHIFT;
	struct qcow_mapping m;
	struct td_l2_alloc *busy;
	char why[256];

	busy = td_l2_alloc_find(&s->tables, gcl);
	if (busy) {
		td_meta_run_flush(run);
		td_meta_park(&s->meta, &busy->waiters, seg);
		return;
	}
	if (qcow_l2_decode(&s->img->g, s->cluster_bits,
			   td_l2_entry(t, l2i), &m, why,
			   sizeof(why))) {
		td_meta_run_flush(run);
		td_log(TD_LOG_ERR, "%s: guest cluster %" PRIu64 ": %s",
		       s->drv->name, gcl, why);
		td_complete_request(seg, -EIO);
		return;
	}
	if (m.type == QCOW_CLUSTER_NORMAL && m.host_offset < s->img->meta_end) {
		td_log(TD_LOG_ERR, "%s: guest cluster %" PRIu64 ": cluster at "
		       "%" PRIu64 " overlaps the header or L1 table",
		       s->drv->name, gcl, m.host_offset);
		td_meta_run_flush(run);
		td_complete_request(seg, -EIO);
		return;
	}
	if (m.type == QCOW_CLUSTER_NORMAL) {
		td_meta_run_add(run, TD_RUN_DATA, seg, m.host_offset + in);
		return;
	}
	if (m.type == QCOW_CLUSTER_UNALLOCATED && seg.op == TD_OP_READ) {
		td_meta_run_add(run, TD_RUN_FORWARD, seg, 0);
		return;
	}
	td_meta_run_flush(run);
	switch (m.type) {
	case QCOW_CLUSTER_NORMAL:
		break;
	case QCOW_CLUSTER_UNALLOCATED:
		qc_alloc_data(s, t, l2i, gcl, &m, seg);
		break;
	case QCOW_CLUSTER_COMPRESSED:
		if (seg.op == TD_OP_READ)
			td_l2_read_compressed(&s->tables, seg,
					      m.host_offset, m.csize);
		else
			qc_alloc_data(s, t, l2i, gcl, &m, seg);
		break;
	}
}

/* A table's request, split by cluster: one run across the clusters. */
struct qc_table_req {
	struct qc_state		*s;
	struct td_l2		*t;
	struct td_meta_run	 run;
};

static void qc_table_seg(void *arg, td_request_t seg)
{
	struct qc_table_req *r = arg;

	qc_dispatch_seg(r->s, r->t, seg, &r->run);
}

/* td_l2_ops.table: treq lies inside the range of ready table t. */
static void qc_table(void *ctx, struct td_l2 *t, td_request_t treq)
{
	struct qc_state *s = ctx;
	struct qc_table_req r = {
		.s = s, .t = t, .run = { .m = &s->meta },
	};

	td_meta_split(treq, s->cl_secs, qc_table_seg, &r);
	td_meta_run_flush(&r.run);
}

/* td_l2_ops.unmapped: a read goes to the backing image. */
static bool qc_unmapped(void *ctx, td_request_t treq)
{
	(void)ctx;
	if (treq.op != TD_OP_READ)
		return false;
	td_forward_request(treq);
	return true;
}

static const struct td_l2_ops qc_l2_ops = {
	.table		= qc_table,
	.unmapped	= qc_unmapped,
	.alloc		= qc_l2_alloc,
	.written	= qc_alloc_written,
};

/* td_meta_dispatch_t: a parked request's turn again. */
static void qc_redispatch(void *ctx, td_request_t treq)
{
	struct qc_state *s = ctx;

	td_l2_dispatch(&s->tables, treq);
}

static void qc_queue_rw(td_driver_t *drv, td_request_t treq)
{
	qc_redispatch(drv->data, treq);
}

static void qc_queue_flush(td_driver_t *drv, td_request_t treq)
{
	struct qc_state *s = drv->data;

	if (s->rdonly)
		td_complete_request(treq, 0);
	else
		td_meta_req_wait(&s->meta, &s->meta.barrier, treq);
}

/* ---- open / close ---------------------------------------------------- */

static void qc_free_state(struct qc_state *s)
{
	td_l2_fini(&s->tables);
	td_meta_fini(&s->meta);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	qcow_image_close(s->img);
	s->img = NULL;
}

/* L2 tables cached: QC_L2_CACHE_BYTES of them, within the bounds. */
static unsigned qc_nslots(uint32_t l2_bytes)
{
	unsigned n = QC_L2_CACHE_BYTES / l2_bytes;

	return n < QC_MIN_SLOTS ? QC_MIN_SLOTS : n > QC_MAX_SLOTS ?
	       QC_MAX_SLOTS : n;
}

static int qc_open(td_driver_t *drv, const char *path, td_flag_t flags)
{
	struct qc_state *s = drv->data;
	char err[TD_ERROR_MAX];
	int rc;

	s->drv = drv;
	s->fd = -1;
	s->rdonly = flags & TD_OPEN_RDONLY;
	rc = qcow_image_open(&s->img, path, err, sizeof(err));
	if (rc)
		return td_meta_refuse(drv, rc, err);
	s->fd = td_open_file(path, (s->rdonly ? O_RDONLY : O_RDWR) |
			     O_CLOEXEC);
	if (s->fd < 0) {
		rc = -errno;	/* the errno says it all (tapdisk.h) */
		goto fail;
	}
	s->cs = s->img->g.cluster_size;
	s->cl_secs = s->cs >> TD_SECTOR_SHIFT;
	s->cluster_bits = s->img->h.cluster_bits;
	s->l2_bits = s->img->h.l2_bits;
	s->vsecs = s->img->h.size >> TD_SECTOR_SHIFT;
	s->has_backing = s->img->backing[0] != '\0';
	s->next_free = td_round_up(s->img->file_size, s->cs);
	rc = -ENOMEM;
	td_list_init(&s->res_waiters);
	if (td_l2_init(&s->tables, &s->meta, s->img->l1, &(struct td_l2_params){
			.l1_size = s->img->g.l1_size,
			.l1_offset = s->img->h.l1_table_offset,
			.offset_mask = UINT64_MAX,
			.table_bytes = s->img->g.l2_bytes,
			.entry_size = 8,
			.align = 1,
			.span_secs = (uint64_t)s->cl_secs << s->l2_bits,
			.cl_secs = s->cl_secs,
			.vsecs = s->vsecs,
			.nslots = qc_nslots(s->img->g.l2_bytes),
			.res_waiters = &s->res_waiters,
			.nallocs = QC_MAX_ALLOCS,
			.alloc_size = sizeof(struct qc_alloc),
			.alloc_buf = 2u * s->cs,
			.ncreads = QC_MAX_CREADS,
			.cread_buf = s->cs,
			.cread_align = 1,
			.ops = &qc_l2_ops,
		}))
		goto fail;
	if (td_meta_init(&s->meta, drv, s->fd, s, qc_redispatch, QC_MAX_IOCBS,
			 QC_MAX_PIECES))
		goto fail;
	drv->info.size = s->vsecs;
	drv->info.sector_size = TD_SECTOR_SIZE;
	drv->info.io_align = 0;
	return 0;
fail:
	qc_free_state(s);
	return rc;
}

static int qc_close(td_driver_t *drv)
{
	struct qc_state *s = drv->data;
	struct stat st;
	int err = 0;

	/* A last cluster written short: the file ends where it does. */
	if (!s->rdonly && fstat(s->fd, &st) == 0 &&
	    (uint64_t)st.st_size < s->next_free &&
	    s->next_free > td_round_up(s->img->file_size, s->cs) &&
	    (ftruncate(s->fd, (off_t)s->next_free) < 0 || fsync(s->fd) < 0)) {
		err = -errno;
		td_log(TD_LOG_ERR, "%s: extending to %" PRIu64 " bytes: %s",
		       drv->name, s->next_free, strerror(errno));
	}
	qc_free_state(s);
	return err;
}

/* qcow records no backing format: the file is probed (opened). */
static int qc_get_parent_id(td_driver_t *drv, td_disk_id_t *id)
{
	struct qc_state *s = drv->data;
	char *path;

	if (!s->has_backing)
		return TD_NO_PARENT;
	path = td_path_resolve(s->img->path, s->img->backing);
	if (!path)
		return -ENOMEM;
	return td_parent_probe(drv, path, "backing file", id);
}

static void qc_debug(td_driver_t *drv, FILE *out)
{
	struct qc_state *s = drv->data;

	fprintf(out, "qcow:%s %u-byte clusters, %llu bytes, %llu clusters "
		"allocated, %llu copied on write, %llu L2 tables allocated, "
		"%u L2 tables cached at most\n", drv->name, s->cs,
		(unsigned long long)(s->vsecs << TD_SECTOR_SHIFT),
		(unsigned long long)s->n_alloc, (unsigned long long)s->n_cow,
		(unsigned long long)s->n_l2_alloc, s->tables.p.nslots);
}

/* td_create has no error channel: the reason is logged here, once. */
static int qc_create(const char *path, uint64_t size, td_flag_t flags)
{
	char err[512];
	int rc;

	(void)flags;
	rc = qcow_image_create(path, size, NULL, err, sizeof(err));
	if (rc)
		td_log(TD_LOG_ERR, "%s", err);
	return rc;
}

static int qc_create_child(const char *path, const char *parent,
			   const char *parent_driver, char *err,
			   size_t errlen)
{
	char name[QCOW_MAX_BACKING_NAME + 1];
	uint64_t size;
	int rc;

	rc = td_image_size(parent_driver, parent, &size, err, errlen);
	if (rc)
		return rc;
	return qcow_image_create(path, td_round_up(size, TD_SECTOR_SIZE),
				 td_path_backing_name(path, parent, name,
						      sizeof(name)),
				 err, errlen);
}

const struct tap_disk tapdisk_qcow = {
	TD_DISK_VERSION,
	.name			= "qcow",
	.description		= "qcow (QEMU) v1: backing files, compression",
	.private_data_size	= sizeof(struct qc_state),
	.td_open		= qc_open,
	.td_close		= qc_close,
	.td_get_parent_id	= qc_get_parent_id,
	/* A backing file is recorded by name only. */
	.td_validate_parent	= td_parent_any,
	.td_queue_read		= qc_queue_rw,
	.td_queue_write		= qc_queue_rw,
	.td_debug		= qc_debug,
	.td_queue_flush		= qc_queue_flush,
	.td_create		= qc_create,
	.td_create_child	= qc_create_child,
	.td_probe		= qcow_probe,
};
