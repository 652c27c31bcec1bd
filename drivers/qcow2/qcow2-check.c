/* SPDX-License-Identifier: MIT */
/*
 * Counting every reference to every host cluster of a qcow2 image, from
 * the header and the tables, and judging the stored refcounts and the
 * copied flags against them: qcow2_image_check() reports what it finds,
 * and a read-write open of a dirty image repairs from the same counting
 * (qcow2_image_repair, qcow2-refcount.c), so what the check says an open
 * would repair is what the open repairs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-int.h"
#include "common/td-fileio.h"

/* ---- counting -------------------------------------------------------- */

/* Count one reference of a kind to bytes [off, off + len) of the file. */
static void refs_add(struct qcow2_refs *rf, uint64_t off, uint64_t len,
		     unsigned kind, const char *what)
{
	uint64_t c, first, last;

	if (!len)
		return;
	first = off >> rf->img->g.cluster_bits;
	last = (off + len - 1) >> rf->img->g.cluster_bits;
	for (c = first; c <= last; c++) {
		if (c >= rf->n) {
			td_check_emit(&rf->chk, TD_SEV_ERROR, true, "%s at %"
				      PRIu64 " lies past the end of the file",
				      what, off);
			return;
		}
		if (rf->count[c] < UINT32_MAX)
			rf->count[c]++;
		rf->kind[c] |= (uint8_t)kind;
	}
}

/* Walk one L1 table (active or a snapshot's): L2 tables and data. */
static int refs_walk_l1(struct qcow2_refs *rf, const uint64_t *l1, uint64_t n,
			bool active, uint8_t *l2buf)
{
	struct qcow2_image *img = rf->img;
	const struct qcow2_geometry *g = &img->g;
	uint64_t i, j, l2off, entries = 1ull << g->l2_bits;
	struct td_report r;
	struct qcow2_mapping m;
	char why[256];
	int ret;

	for (i = 0; i < n; i++) {
		r = td_report_err(why, sizeof(why));
		if (qcow2_l1_decode(g, l1[i], &l2off, &r)) {
			td_check_emit(&rf->chk, TD_SEV_ERROR, true, "L1 entry %"
				      PRIu64 ": %s", i, why);
			continue;
		}
		if (!l2off)
			continue;
		refs_add(rf, l2off, g->cluster_size, QCOW2_REF_L2, "L2 table");
		if (l2off + g->cluster_size > img->file_size)
			continue;
		ret = td_pread_full(img->fd, l2buf, g->cluster_size, l2off);
		if (ret)
			return ret;
		for (j = 0; j < entries; j++) {
			uint64_t e = td_get_be64(l2buf + j * g->l2_entry_size);

			r = td_report_err(why, sizeof(why));
			if (qcow2_l2_decode(g, img->h.version, e, &m, &r)) {
				td_check_emit(&rf->chk, TD_SEV_ERROR, true,
					      "L2 table at %" PRIu64 " entry %"
					      PRIu64 ": %s", l2off, j, why);
				continue;
			}
			switch (m.type) {
			case QCOW2_CLUSTER_NORMAL:
			case QCOW2_CLUSTER_ZERO_ALLOC:
				refs_add(rf, m.host_offset, g->cluster_size,
					 QCOW2_REF_DATA, "data cluster");
				if (active)
					rf->data_clusters++;
				break;
			case QCOW2_CLUSTER_COMPRESSED:
				refs_add(rf, m.host_offset, m.csize,
					 QCOW2_REF_COMPRESSED,
					 "compressed data");
				if (active)
					rf->data_clusters++;
				break;
			default:
				break;
			}
		}
	}
	return 0;
}

/* Internal snapshots: their table, L1 tables and what those reach. */
static int refs_walk_snapshots(struct qcow2_refs *rf, uint8_t *l2buf)
{
	struct qcow2_image *img = rf->img;
	uint64_t off = img->h.snapshots_offset, start = off, *l1;
	uint8_t e[40];
	uint32_t i;
	int ret;

	for (i = 0; i < img->h.nb_snapshots; i++) {
		uint64_t l1off, l1n;
		uint32_t idlen, namelen, extra;

		ret = td_pread_full(img->fd, e, sizeof(e), off);
		if (ret) {
			td_check_emit(&rf->chk, TD_SEV_ERROR, true, "snapshot "
				      "%u: table entry at %" PRIu64
				      " unreadable", i, off);
			break;
		}
		l1off = td_get_be64(e);
		l1n = td_get_be32(e + 8);
		idlen = (uint32_t)e[12] << 8 | e[13];
		namelen = (uint32_t)e[14] << 8 | e[15];
		extra = td_get_be32(e + 36);
		off += td_round_up(40ull + extra + idlen + namelen, 8);
		if (l1n * 8 > QCOW2_MAX_L1_BYTES ||
		    (l1off & (img->g.cluster_size - 1)) ||
		    l1off + l1n * 8 > img->file_size) {
			td_check_emit(&rf->chk, TD_SEV_ERROR, true, "snapshot "
				      "%u: L1 table at %" PRIu64 " (%" PRIu64
				      " entries) is invalid", i, l1off, l1n);
			continue;
		}
		refs_add(rf, l1off, l1n * 8, QCOW2_REF_L1,
			 "snapshot L1 table");
		l1 = calloc(l1n ? l1n : 1, 8);
		if (!l1)
			return -ENOMEM;
		ret = td_pread_full(img->fd, l1, l1n * 8, l1off);
		if (!ret) {
			qcow2_be64_array_to_host(l1, l1n);
			ret = refs_walk_l1(rf, l1, l1n, false, l2buf);
		}
		free(l1);
		if (ret)
			return ret;
	}
	refs_add(rf, start, off - start, QCOW2_REF_SNAPTABLE,
		 "snapshot table");
	return 0;
}

/*
 * Count every reference of the image into rf->count and rf->kind (rf->n
 * clusters: the file and what is counted past it).  Needs img->refblocks.
 */
static int refs_count(struct qcow2_refs *rf)
{
	struct qcow2_image *img = rf->img;
	uint64_t i;
	uint8_t *l2buf;
	int ret;

	refs_add(rf, 0, img->g.cluster_size, QCOW2_REF_HEADER, "header");
	refs_add(rf, img->h.l1_table_offset, (uint64_t)img->h.l1_size * 8,
		 QCOW2_REF_L1, "L1 table");
	refs_add(rf, img->h.refcount_table_offset,
		 (uint64_t)img->h.refcount_table_clusters << img->g.cluster_bits,
		 QCOW2_REF_REFTABLE, "refcount table");
	for (i = 0; i < img->reftable_entries; i++)
		if (img->reftable[i])
			refs_add(rf, img->reftable[i], img->g.cluster_size,
				 QCOW2_REF_REFBLOCK, "refcount block");
	l2buf = td_zalloc_aligned(img->g.cluster_size);
	if (!l2buf)
		return -ENOMEM;
	ret = refs_walk_l1(rf, img->l1, img->h.l1_size, true, l2buf);
	if (!ret && img->h.nb_snapshots)
		ret = refs_walk_snapshots(rf, l2buf);
	free(l2buf);
	return ret;
}

static int refs_init(struct qcow2_refs *rf, struct qcow2_image *img,
		     struct qcow2_check_result *res)
{
	memset(rf, 0, sizeof(*rf));
	memset(res, 0, sizeof(*res));
	rf->img = img;
	rf->res = res;
	rf->chk.res = &res->base;
	rf->chk.kept = &res->unrepairable;
	rf->chk.first = rf->first;
	rf->chk.firstlen = sizeof(rf->first);
	res->dirty = img->h.incompatible_features & QCOW2_INCOMPAT_DIRTY;
	/* The file, and any cluster counted past its end. */
	rf->n = qcow2_image_end_cluster(img);
	rf->count = calloc(rf->n ? rf->n : 1, sizeof(uint32_t));
	rf->kind = calloc(rf->n ? rf->n : 1, 1);
	return rf->count && rf->kind ? 0 : -ENOMEM;
}

void qcow2_refs_fini(struct qcow2_refs *rf)
{
	free(rf->count);
	free(rf->kind);
}

/* ---- judging --------------------------------------------------------- */

/* References to cluster c: its refcount once repaired. */
static uint64_t refs_after(const struct qcow2_refs *rf, uint64_t c)
{
	return c < rf->n ? rf->count[c] : 0;
}

/* Does a refcount block hold cluster c's refcount? */
static bool image_has_refblock(const struct qcow2_image *img, uint64_t c)
{
	uint64_t i = c >> img->g.rb_bits;

	return i < img->reftable_entries && img->refblocks[i];
}

/*
 * The copied flag of one L1 or L2 entry against the refcount.  A flag
 * that disagrees only with the stored refcount is right once the
 * refcount is repaired; one that disagrees with the references is not.
 */
static void refs_judge_copied(struct qcow2_refs *rf, bool copied, uint64_t c,
			      const char *what, uint64_t index)
{
	uint64_t stored = qcow2_image_refcount(rf->img, c);
	uint64_t after = refs_after(rf, c);

	if ((after == 1) != copied)
		td_check_emit(&rf->chk, TD_SEV_ERROR, true, "%s %" PRIu64 ": "
			      "copied flag %s but %" PRIu64 " references "
			      "(refcount %" PRIu64 ")", what, index,
			      copied ? "set" : "clear", after, stored);
	else if ((stored == 1) != copied)
		td_check_emit(&rf->chk, TD_SEV_ERROR, false, "%s %" PRIu64 ": "
			      "copied flag %s but refcount %" PRIu64, what,
			      index, copied ? "set" : "clear", stored);
}

/* Copied flags of the active tables. */
static int refs_judge_copied_all(struct qcow2_refs *rf)
{
	struct qcow2_image *img = rf->img;
	const struct qcow2_geometry *g = &img->g;
	uint64_t i, j, l2off, entries = 1ull << g->l2_bits;
	struct qcow2_mapping m;
	uint8_t *l2 = td_zalloc_aligned(g->cluster_size);

	if (!l2)
		return -ENOMEM;
	for (i = 0; i < img->h.l1_size; i++) {
		if (qcow2_l1_decode(g, img->l1[i], &l2off, NULL) || !l2off)
			continue;
		refs_judge_copied(rf, img->l1[i] & QCOW2_OFLAG_COPIED,
				  l2off >> g->cluster_bits, "L1 entry", i);
		if (l2off + g->cluster_size > img->file_size ||
		    td_pread_full(img->fd, l2, g->cluster_size, l2off))
			continue;
		for (j = 0; j < entries; j++) {
			uint64_t e = td_get_be64(l2 + j * g->l2_entry_size);

			if (qcow2_l2_decode(g, img->h.version, e, &m, NULL))
				continue;
			if (m.type != QCOW2_CLUSTER_NORMAL &&
			    m.type != QCOW2_CLUSTER_ZERO_ALLOC)
				continue;
			refs_judge_copied(rf, m.copied, m.host_offset >>
					  g->cluster_bits, "guest cluster",
					  (i << g->l2_bits) + j);
		}
	}
	free(l2);
	return 0;
}

/*
 * Judge every cluster's refcount against its references, and the copied
 * flags; count in rf->res what the repair would lower and raise.
 */
static int refs_judge(struct qcow2_refs *rf)
{
	struct qcow2_image *img = rf->img;
	uint32_t order = img->g.refcount_order;
	struct qcow2_check_result *res = rf->res;
	uint64_t c, stored, off;
	enum qcow2_verdict v;
	char kinds[96];

	for (c = 0; c < rf->n; c++) {
		stored = qcow2_image_refcount(img, c);
		v = qcow2_refcount_verdict(stored, rf->count[c], rf->kind[c],
					   order);
		if (v == QCOW2_RC_OK)
			continue;
		off = c << img->g.cluster_bits;
		qcow2_ref_kinds_name(rf->kind[c], kinds, sizeof(kinds));
		switch (v) {
		case QCOW2_RC_OK:
			break;
		case QCOW2_RC_LEAK:
			td_check_emit(&rf->chk, TD_SEV_LEAK, false, "cluster %"
				      PRIu64 " (offset %" PRIu64 "): refcount %"
				      PRIu64 " but %u references (leaked)", c,
				      off, stored, rf->count[c]);
			res->repair_lower++;
			break;
		case QCOW2_RC_LOW:
			if (!image_has_refblock(img, c)) {
				td_check_emit(&rf->chk, TD_SEV_ERROR, true,
					      "cluster %" PRIu64 " (offset %"
					      PRIu64 "): %s in use but no "
					      "refcount block counts it", c,
					      off, kinds);
				break;
			}
			td_check_emit(&rf->chk, TD_SEV_ERROR, false, "cluster %"
				      PRIu64 " (offset %" PRIu64 "): refcount %"
				      PRIu64 " but %u references", c, off,
				      stored, rf->count[c]);
			res->repair_raise++;
			break;
		case QCOW2_RC_OVERLAP:
			td_check_emit(&rf->chk, TD_SEV_ERROR, true, "cluster %"
				      PRIu64 " (offset %" PRIu64 "): used as "
				      "%s at once (%u references, refcount %"
				      PRIu64 ")", c, off, kinds, rf->count[c],
				      stored);
			break;
		case QCOW2_RC_SHARED:
			td_check_emit(&rf->chk, TD_SEV_ERROR, true, "cluster %"
				      PRIu64 " (offset %" PRIu64 "): refcount %"
				      PRIu64 " but %u references (one %s "
				      "referenced %u times)", c, off, stored,
				      rf->count[c], kinds, rf->count[c]);
			break;
		case QCOW2_RC_OVERFLOW:
			td_check_emit(&rf->chk, TD_SEV_ERROR, true, "cluster %"
				      PRIu64 " (offset %" PRIu64 "): %u "
				      "references do not fit in %u-bit "
				      "refcounts", c, off, rf->count[c],
				      1u << order);
			break;
		}
	}
	return refs_judge_copied_all(rf);
}

/* Count and judge the image (refcount blocks loaded); rf is set up. */
int qcow2_refs_run(struct qcow2_refs *rf, struct qcow2_image *img,
		   struct qcow2_check_result *res, td_check_fn *fn,
		   void *arg)
{
	int ret = refs_init(rf, img, res);

	if (ret)
		return ret;
	rf->chk.fn = fn;
	rf->chk.arg = arg;
	if (res->dirty)
		td_check_emit(&rf->chk, TD_SEV_WARNING, false, "the dirty bit "
			      "is set: the image was not closed cleanly");
	if (img->ext.has_bitmaps)
		td_check_emit(&rf->chk, TD_SEV_WARNING, false, "persistent "
			      "bitmaps are not checked: their clusters count "
			      "as leaks");
	ret = refs_count(rf);
	if (!ret)
		ret = refs_judge(rf);
	res->allocated_clusters = rf->data_clusters;
	return ret;
}

/* ---- consistency check ----------------------------------------------- */

int qcow2_image_check(const char *path, td_check_fn *fn, void *arg,
		      struct qcow2_check_result *res, char *err,
		      size_t errlen)
{
	struct qcow2_image *img;
	struct qcow2_refs rf;
	int ret;

	memset(res, 0, sizeof(*res));
	ret = qcow2_image_open(&img, path, 0, err, errlen);
	if (ret)
		return ret;
	ret = qcow2_image_load_refcounts(img, err, errlen);
	if (ret) {
		qcow2_image_close(img, false);
		return ret;
	}
	ret = qcow2_refs_run(&rf, img, res, fn, arg);
	qcow2_refs_fini(&rf);
	qcow2_image_close(img, false);
	if (ret)
		return td_errf(err, errlen, ret, "%s: %s", path, strerror(-ret));
	return 0;
}
