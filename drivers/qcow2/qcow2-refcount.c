/* SPDX-License-Identifier: MIT */
/*
 * qcow2 reference counts.  The image side (synchronous, at open): the
 * refcount table and blocks loaded into memory, the repair of a dirty
 * image from the check's counting (qcow2-check.c), and growing the
 * refcount table before the driver allocates.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow2-int.h"
#include "common/td-fileio.h"

/* ---- the refcount structure in memory ------------------------------- */

/* Load the refcount table and every refcount block. */
int qcow2_image_load_refcounts(struct qcow2_image *img, char *err,
			       size_t errlen)
{
	struct td_report r;
	uint64_t bytes = (uint64_t)img->h.refcount_table_clusters <<
			 img->g.cluster_bits, i, off;
	char why[256];
	int ret;

	img->reftable_entries = bytes / 8;
	img->reftable = calloc(img->reftable_entries ? img->reftable_entries :
			       1, sizeof(uint64_t));
	img->refblocks = calloc(img->reftable_entries ? img->reftable_entries :
				1, sizeof(uint8_t *));
	if (!img->reftable || !img->refblocks)
		return -ENOMEM;
	if (!bytes)
		return 0;
	ret = td_pread_full(img->fd, img->reftable, bytes,
			 img->h.refcount_table_offset);
	if (ret)
		return td_errf(err, errlen, ret, "%s: reading the refcount "
			    "table: %s", img->path, strerror(-ret));
	qcow2_be64_array_to_host(img->reftable, img->reftable_entries);
	for (i = 0; i < img->reftable_entries; i++) {
		r = td_report_err(why, sizeof(why));
		if (qcow2_reftable_decode(&img->g, img->reftable[i], &off,
					  &r))
			return td_errf(err, errlen, -EINVAL, "qcow2: %s: refcount "
				    "table entry %" PRIu64 ": %s", img->path,
				    i, why);
		img->reftable[i] = off;
		if (!off)
			continue;
		if (off + img->g.cluster_size > img->file_size)
			return td_errf(err, errlen, -EINVAL, "qcow2: %s: refcount "
				    "block %" PRIu64 " at %" PRIu64 " is past "
				    "the end of the file", img->path, i, off);
		img->refblocks[i] = td_zalloc_aligned(img->g.cluster_size);
		if (!img->refblocks[i])
			return -ENOMEM;
		ret = td_pread_full(img->fd, img->refblocks[i],
				 img->g.cluster_size, off);
		if (ret)
			return td_errf(err, errlen, ret, "%s: reading refcount "
				    "block %" PRIu64 ": %s", img->path, i,
				    strerror(-ret));
	}
	return 0;
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

/* ---- preparing for writes: repair, growth ------------------------------ */

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
	table = calloc(entries, sizeof(uint64_t));
	blocks = calloc(entries, sizeof(uint8_t *));
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
		blocks[i] = td_zalloc_aligned(cs);
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
	memcpy(img->hdr_buf + QH_REFT_OFFSET, hdr, sizeof(hdr));
	free(img->reftable);
	free(img->refblocks);
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
			free(blocks[i]);
		for (i = 0; i < img->reftable_entries && i < entries; i++)
			if (blocks[i] != img->refblocks[i])
				free(blocks[i]);
	}
	free(blocks);
	free(table);
	return ret;
}
