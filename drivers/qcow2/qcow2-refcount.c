/* SPDX-License-Identifier: MIT */
/*
 * qcow2 reference counts.  The image side (synchronous, at open): the
 * refcount table and blocks loaded into memory, the repair of a dirty
 * image from the check's counting (qcow2-check.c), and growing the
 * refcount table before the driver allocates.  The driver's side (on
 * the engine's loop): taking a free cluster and counting it, dropping
 * references once their grace period is over, and the refcount commit
 * that makes counts durable before an L2 entry points at a cluster (the
 * order of an allocation: the top of qcow2.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>

#include "qcow2-driver.h"
#include "qcow2-int.h"
#include "common/td-fileio.h"

/* ---- the refcount structure in memory -------------------------------- */

/*
 * Load the refcount table and every refcount block.  The table is read
 * into a buffer released at once and only its used entries are copied:
 * pages of the sparse table that hold none stay untouched.
 */
int qcow2_image_load_refcounts(struct qcow2_image *img, char *err,
			       size_t errlen)
{
	struct td_report r;
	uint64_t bytes = (uint64_t)img->h.refcount_table_clusters <<
			 img->g.cluster_bits, i, off;
	uint8_t *raw, *block = NULL;
	char why[256];
	int ret;

	img->reftable_entries = bytes / 8;
	img->reftable = td_zalloc_sparse(qcow2_rt_bytes(img->reftable_entries));
	img->refblocks = td_zalloc_sparse(qcow2_rt_bytes(
						img->reftable_entries));
	if (!img->reftable || !img->refblocks)
		return -ENOMEM;
	if (!bytes)
		return 0;
	raw = td_zalloc_sparse(bytes);
	block = td_zalloc_sparse(img->g.cluster_size);
	if (!raw || !block) {
		ret = -ENOMEM;
		goto out;
	}
	ret = td_pread_full(img->fd, raw, bytes, img->h.refcount_table_offset);
	if (ret) {
		ret = td_errf(err, errlen, ret, "%s: reading the refcount "
			      "table: %s", img->path, strerror(-ret));
		goto out;
	}
	for (i = 0; i < img->reftable_entries; i++) {
		r = td_report_err(why, sizeof(why));
		if (qcow2_reftable_decode(&img->g, td_get_be64(raw + i * 8),
					  &off, &r)) {
			ret = td_errf(err, errlen, -EINVAL, "qcow2: %s: "
				      "refcount table entry %" PRIu64 ": %s",
				      img->path, i, why);
			goto out;
		}
		if (!off)
			continue;
		img->reftable[i] = off;
		if (off + img->g.cluster_size > img->file_size) {
			ret = td_errf(err, errlen, -EINVAL, "qcow2: %s: "
				      "refcount block %" PRIu64 " at %" PRIu64
				      " is past the end of the file",
				      img->path, i, off);
			goto out;
		}
		img->refblocks[i] = qcow2_refblock_new(img);
		if (!img->refblocks[i]) {
			ret = -ENOMEM;
			goto out;
		}
		ret = td_pread_full(img->fd, block, img->g.cluster_size, off);
		if (ret) {
			ret = td_errf(err, errlen, ret, "%s: reading refcount "
				      "block %" PRIu64 ": %s", img->path, i,
				      strerror(-ret));
			goto out;
		}
		td_copy_sparse(img->refblocks[i], block, img->g.cluster_size);
	}
out:
	td_free_sparse(block, img->g.cluster_size);
	td_free_sparse(raw, bytes);
	return ret;
}

uint64_t qcow2_image_refcount(const struct qcow2_image *img, uint64_t c)
{
	uint64_t i = c >> img->g.rb_bits;

	if (i >= img->reftable_entries || !img->refblocks[i])
		return 0;
	return qcow2_refcount_get(img->refblocks[i],
				  c & ((1ull << img->g.rb_bits) - 1),
				  img->g.refcount_order);
}

static void image_set_refcount(struct qcow2_image *img, uint64_t c,
			       uint64_t v)
{
	uint64_t i = c >> img->g.rb_bits;

	qcow2_refcount_set(img->refblocks[i],
			   c & ((1ull << img->g.rb_bits) - 1),
			   img->g.refcount_order, v);
}

/* First cluster past everything counted or in the file. */
uint64_t qcow2_image_end_cluster(const struct qcow2_image *img)
{
	uint64_t end = td_div_round_up(img->file_size, img->g.cluster_size);
	uint64_t i, j, per = 1ull << img->g.rb_bits;

	for (i = img->reftable_entries; i-- > 0;) {
		if (!img->refblocks[i])
			continue;
		for (j = per; j-- > 0;) {
			if (qcow2_refcount_get(img->refblocks[i], j,
					       img->g.refcount_order)) {
				if (i * per + j + 1 > end)
					end = i * per + j + 1;
				return end;
			}
		}
	}
	return end;
}

/* ---- preparing for writes: repair, growth ---------------------------- */

/*
 * A dirty image (a crash while open read-write): count every reference
 * and refuse the image if anything but refcounts is wrong; else set each
 * refcount to its references in place: leaks lowered, clusters in use
 * that a lazy-refcounts writer had not counted yet raised.  Each write
 * moves refcounts to their true values and the dirty bit stays set until
 * a clean close, so a crash during the repair leaves an image the next
 * open repairs again.
 */
int qcow2_image_repair(struct qcow2_image *img, char *err, size_t errlen)
{
	struct qcow2_check_result res;
	uint64_t c, i, per = 1ull << img->g.rb_bits, want;
	bool *touched = NULL;
	struct qcow2_refs rf;
	int ret;

	ret = qcow2_refs_run(&rf, img, &res, NULL, NULL);
	if (ret) {
		qcow2_refs_fini(&rf);
		return td_errf(err, errlen, ret, "%s: scanning the tables: %s",
			    img->path, strerror(-ret));
	}
	if (res.unrepairable) {
		td_errf(err, errlen, -EUCLEAN, "qcow2: %s: dirty image with "
		     "damage a repair of refcounts does not fix: %s%s; "
		     "repair it with 'qemu-img check -r all'", img->path,
		     rf.first, res.unrepairable > 1 ? " (and more)" : "");
		qcow2_refs_fini(&rf);
		return -EUCLEAN;
	}
	if (!res.repair_lower && !res.repair_raise) {
		qcow2_refs_fini(&rf);
		snprintf(img->warning, sizeof(img->warning), "qcow2: %s: the "
			 "dirty bit was set (not closed cleanly); refcounts "
			 "checked: nothing to repair", img->path);
		return 0;
	}
	/* Bitmap clusters count as leaks: their bit goes first, so that
	 * no reader ever follows bitmaps into freed clusters. */
	if (img->h.autoclear_features && res.repair_lower) {
		img->h.autoclear_features = 0;
		ret = qcow2_image_write_features(img, err, errlen);
		if (ret)
			goto out;
	}
	touched = calloc(img->reftable_entries ? img->reftable_entries : 1,
			 sizeof(bool));
	if (!touched) {
		ret = td_errf(err, errlen, -ENOMEM, "%s: out of memory",
			   img->path);
		goto out;
	}
	for (c = 0; c < rf.n; c++) {
		want = rf.count[c];
		if (qcow2_image_refcount(img, c) == want)
			continue;
		image_set_refcount(img, c, want);
		touched[c / per] = true;
	}
	for (i = 0; i < img->reftable_entries; i++) {
		if (!touched[i])
			continue;
		ret = td_pwrite_full(img->fd, img->refblocks[i],
				     img->g.cluster_size, img->reftable[i]);
		if (ret) {
			td_errf(err, errlen, ret, "%s: repairing refcount "
			     "block %" PRIu64 ": %s", img->path, i,
			     strerror(-ret));
			goto out;
		}
	}
	ret = qcow2_image_sync(img, err, errlen);
	if (ret)
		goto out;
	snprintf(img->warning, sizeof(img->warning), "qcow2: %s: the dirty "
		 "bit was set (not closed cleanly); repaired: %u leaked "
		 "cluster%s freed, %u cluster%s in use counted (refcount "
		 "raised%s)", img->path, res.repair_lower,
		 res.repair_lower == 1 ? "" : "s", res.repair_raise,
		 res.repair_raise == 1 ? "" : "s",
		 img->h.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS ?
		 ": lazy refcounts" : "");
out:
	free(touched);
	qcow2_refs_fini(&rf);
	return ret;
}

/*
 * Grow the refcount table to cover target clusters: a new table and the
 * refcount blocks it needs for itself past the end, then the header
 * switch, then the old table's clusters freed.
 */
int qcow2_image_grow_reftable(struct qcow2_image *img, uint64_t target,
			      char *err, size_t errlen)
{
	const struct qcow2_geometry *g = &img->g;
	uint64_t per = 1ull << g->rb_bits, cs = g->cluster_size;
	uint64_t entries = td_div_round_up(target, per), bytes, nt, t0;
	uint64_t nb = 0, prev;
	uint64_t old_off = img->h.refcount_table_offset;
	uint64_t old_cl = img->h.refcount_table_clusters, i, c, k, end;
	uint64_t *table = NULL;
	uint8_t **blocks = NULL, hdr[12];
	int ret;

	bytes = td_round_up(entries * 8, cs);
	if (bytes > QCOW2_MAX_REFTABLE_BYTES)
		bytes = QCOW2_MAX_REFTABLE_BYTES / cs * cs;
	entries = bytes / 8;
	if (entries <= img->reftable_entries)
		return 0;
	nt = bytes / cs;
	t0 = qcow2_image_end_cluster(img);
	/* Refcount blocks the new clusters need, themselves included. */
	do {
		prev = nb;
		nb = 0;
		end = t0 + nt + prev;
		for (i = t0 / per; i <= (end - 1) / per; i++)
			if (i >= img->reftable_entries || !img->refblocks[i])
				nb++;
	} while (nb != prev);
	if ((t0 + nt + nb) > entries * per)
		return td_errf(err, errlen, -ENOSPC, "qcow2: %s: the refcount "
			    "table cannot grow further", img->path);
	table = td_zalloc_sparse(qcow2_rt_bytes(entries));
	blocks = td_zalloc_sparse(qcow2_rt_bytes(entries));
	if (!table || !blocks) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(table, img->reftable, img->reftable_entries * 8);
	memcpy(blocks, img->refblocks, img->reftable_entries * sizeof(*blocks));
	k = t0 + nt;
	for (i = t0 / per; i <= (t0 + nt + nb - 1) / per; i++) {
		if (blocks[i])
			continue;
		blocks[i] = qcow2_refblock_new(img);
		if (!blocks[i]) {
			ret = -ENOMEM;
			goto out;
		}
		table[i] = k++ * cs;
	}
	for (c = t0; c < t0 + nt + nb; c++)
		qcow2_refcount_set(blocks[c / per], c % per,
				   g->refcount_order, 1);
	/* 1. Blocks (new and changed) and the new table, durable. */
	for (i = t0 / per; i <= (t0 + nt + nb - 1) / per; i++) {
		ret = td_pwrite_full(img->fd, blocks[i], cs, table[i]);
		if (ret)
			goto io;
	}
	for (i = 0; i < entries; i++)
		td_put_be64((uint8_t *)&table[i], table[i]);
	ret = td_pwrite_full(img->fd, table, bytes, t0 * cs);
	qcow2_be64_array_to_host(table, entries);
	if (ret)
		goto io;
	if ((ret = qcow2_image_sync(img, err, errlen)))
		goto out;
	/* 2. The header points at it. */
	td_put_be64(hdr, t0 * cs);
	td_put_be32(hdr + 8, (uint32_t)nt);
	ret = td_pwrite_full(img->fd, hdr, sizeof(hdr), QH_REFT_OFFSET);
	if (ret)
		goto io;
	if ((ret = qcow2_image_sync(img, err, errlen)))
		goto out;
	td_free_sparse(img->reftable, qcow2_rt_bytes(img->reftable_entries));
	td_free_sparse(img->refblocks, qcow2_rt_bytes(img->reftable_entries));
	img->reftable = table;
	img->refblocks = blocks;
	img->reftable_entries = entries;
	table = NULL;
	blocks = NULL;
	img->h.refcount_table_offset = t0 * cs;
	img->h.refcount_table_clusters = (uint32_t)nt;
	if ((t0 + nt + nb) * cs > img->file_size)
		img->file_size = (t0 + nt + nb) * cs;
	/* 3. The old table's clusters are free (a crash here leaks them). */
	for (c = old_off / cs; c < old_off / cs + old_cl; c++) {
		uint64_t v = qcow2_image_refcount(img, c);

		if (v)
			image_set_refcount(img, c, v - 1);
	}
	for (i = (old_off / cs) / per; old_cl &&
	     i <= (old_off / cs + old_cl - 1) / per; i++) {
		ret = td_pwrite_full(img->fd, img->refblocks[i], cs,
				  img->reftable[i]);
		if (ret)
			goto io;
	}
	ret = qcow2_image_sync(img, err, errlen);
	goto out;
io:
	td_errf(err, errlen, ret, "%s: growing the refcount table: %s",
	     img->path, strerror(-ret));
out:
	if (blocks) {
		for (i = img->reftable_entries; i < entries; i++)
			qcow2_refblock_free(img, blocks[i]);
		for (i = 0; i < img->reftable_entries && i < entries; i++)
			if (blocks[i] != img->refblocks[i])
				qcow2_refblock_free(img, blocks[i]);
	}
	td_free_sparse(blocks, qcow2_rt_bytes(entries));
	td_free_sparse(table, qcow2_rt_bytes(entries));
	return ret;
}

/* ---- the driver: refcounts in memory --------------------------------- */

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

void q2_set_refcount(struct q2_state *s, uint64_t c, uint64_t v)
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
int q2_alloc_cluster(struct q2_state *s, uint64_t *off)
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
			img->refblocks[rbi] = qcow2_refblock_new(img);
			if (!img->refblocks[rbi] ||
			    qcow2_image_meta_add(img, c)) {
				qcow2_refblock_free(img, img->refblocks[rbi]);
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

	s->tables.zc.csize = 0;
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
void q2_grace_release(void *ctx, uint64_t off, uint64_t len,
		      unsigned data)
{
	q2_unref(ctx, off, len, data);
}

/*
 * Free what a replaced or discarded L2 entry pointed to, once the data
 * I/O in flight now has ended.  Without memory to wait, the cluster is
 * leaked (still counted): safe, and reported.
 */
void q2_unref_mapping(struct q2_state *s, const struct qcow2_mapping *m)
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

bool q2_mapping_owns(const struct qcow2_mapping *m)
{
	return m->type == QCOW2_CLUSTER_NORMAL ||
	       m->type == QCOW2_CLUSTER_ZERO_ALLOC ||
	       m->type == QCOW2_CLUSTER_COMPRESSED;
}

/* ---- the driver: the refcount commit (barrier: td-meta) -------------- */

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

void q2_commit_issue(struct td_meta_seq *q)
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

/* Write back refcount blocks changed since the last commit (close). */
int q2_close_write_refcounts(struct q2_state *s)
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
