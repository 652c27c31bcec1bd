/* SPDX-License-Identifier: MIT */
/*
 * Synchronous qcow2 image helpers: open (and prepare for writing), the
 * backing file, mapping, create, a front-to-back writer, chains and the
 * consistency check (see qcow2-image.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tapfs/tapdisk.h>

#include "qcow2-image.h"
#include "common/td-fileio.h"

#define SECTOR_SHIFT		9
#define SECTOR_SIZE		512u
#define BUF_ALIGN		4096u
/* Header length this code writes for version 3 (QEMU's too). */
#define QCOW2_NEW_HEADER_LENGTH	112u

static void be64_array_to_host(uint64_t *t, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		t[i] = td_get_be64((const uint8_t *)&t[i]);
}

/* ---- open ------------------------------------------------------------ */

int qcow2_probe(const char *path, bool *is_qcow2)
{
	uint8_t magic[4];
	int fd = td_open_file(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	*is_qcow2 = false;
	if (fd < 0)
		return -errno;
	n = pread(fd, magic, sizeof(magic), 0);
	close(fd);
	if (n < 0)
		return -errno;
	*is_qcow2 = n == 4 && td_get_be32(magic) == QCOW2_MAGIC;
	return 0;
}

static void image_free(struct qcow2_image *img)
{
	uint64_t i;

	if (!img)
		return;
	if (img->refblocks) {
		for (i = 0; i < img->reftable_entries; i++)
			free(img->refblocks[i]);
		free(img->refblocks);
	}
	if (img->meta) {
		for (i = 0; i < img->reftable_entries; i++)
			free(img->meta[i]);
		free(img->meta);
	}
	free(img->reftable);
	free(img->l1);
	free(img->hdr_buf);
	if (img->fd >= 0)
		close(img->fd);
	free(img->path);
	free(img);
}

static int image_read_header(struct qcow2_image *img, char *err,
			     size_t errlen)
{
	uint8_t first[QCOW2_V3_HEADER_SIZE];
	struct td_report r = td_report_err(NULL, 0);
	char why[512];
	uint32_t bits, cs;
	int ret;

	memset(first, 0, sizeof(first));
	ret = td_pread_zero(img->fd, first, sizeof(first), 0);
	if (ret)
		return td_errf(err, errlen, ret, "%s: reading the header: %s",
			    img->path, strerror(-ret));
	bits = td_get_be32(first + QH_CLUSTER_BITS);
	cs = bits >= QCOW2_MIN_CLUSTER_BITS && bits <= QCOW2_MAX_CLUSTER_BITS ?
	     1u << bits : BUF_ALIGN;
	/*
	 * The parsers look at the part of the first cluster the file holds;
	 * a short file (a crafted one) does not get a 2 MiB buffer.
	 */
	img->hdr_len = img->file_size < cs ? (size_t)img->file_size : cs;
	img->hdr_buf = td_zalloc_aligned(td_round_up(img->hdr_len > BUF_ALIGN ?
						     img->hdr_len : BUF_ALIGN,
						     BUF_ALIGN));
	if (!img->hdr_buf)
		return -ENOMEM;
	ret = td_pread_zero(img->fd, img->hdr_buf, img->hdr_len, 0);
	if (ret)
		return td_errf(err, errlen, ret, "%s: reading the header: %s",
			    img->path, strerror(-ret));
	r = td_report_err(why, sizeof(why));
	ret = qcow2_header_parse(img->hdr_buf, img->hdr_len, img->file_size,
				 &img->h, &img->ext, &r);
	if (ret)
		return td_errf(err, errlen, ret, "qcow2: %s: %s", img->path, why);
	qcow2_geometry_init(&img->g, &img->h);
	ret = qcow2_backing_name(img->hdr_buf, img->hdr_len, &img->h,
				 img->backing, sizeof(img->backing), &r);
	if (ret)
		return td_errf(err, errlen, ret, "qcow2: %s: %s", img->path, why);
	if (img->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE)
		return td_errf(err, errlen, -ENOTSUP, "qcow2: %s: external data "
			    "file%s%s: not supported", img->path,
			    img->ext.has_data_file ? " " : "",
			    img->ext.has_data_file ? img->ext.data_file : "");
	return 0;
}

static int image_read_l1(struct qcow2_image *img, char *err, size_t errlen)
{
	struct td_report r;
	char why[256];
	uint64_t n = img->h.l1_size, i, l2;
	int ret;

	img->l1 = calloc(n ? n : 1, sizeof(uint64_t));
	if (!img->l1)
		return -ENOMEM;
	if (!n)
		return 0;
	ret = td_pread_full(img->fd, img->l1, n * 8, img->h.l1_table_offset);
	if (ret)
		return td_errf(err, errlen, ret, "%s: reading the L1 table: %s",
			    img->path, strerror(-ret));
	be64_array_to_host(img->l1, n);
	for (i = 0; i < n; i++) {
		r = td_report_err(why, sizeof(why));
		if (qcow2_l1_decode(&img->g, img->l1[i], &l2, &r))
			return td_errf(err, errlen, -EINVAL, "qcow2: %s: L1 "
				    "entry %" PRIu64 ": %s", img->path, i, why);
		if (l2 && l2 + img->g.cluster_size > img->file_size)
			return td_errf(err, errlen, -EINVAL, "qcow2: %s: L1 "
				    "entry %" PRIu64 ": L2 table at %" PRIu64
				    " is past the end of the file (%" PRIu64
				    " bytes)", img->path, i, l2,
				    img->file_size);
	}
	return 0;
}

/* Load the refcount table and every refcount block. */
static int image_load_refcounts(struct qcow2_image *img, char *err,
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
	be64_array_to_host(img->reftable, img->reftable_entries);
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

/* ---- reference counting (check, and repair at open) ------------------ */

/*
 * Every reference to every host cluster, counted from the header and the
 * tables, with the kinds of use (QCOW2_REF_*).  qcow2_image_check()
 * reports what it finds; a read-write open of a dirty image repairs
 * from it (image_repair): both judge the image with refs_judge(), so
 * what the check says an open would repair is what the open repairs.
 */
struct refs {
	struct qcow2_image	*img;
	uint32_t		*count;		/* per host cluster */
	uint8_t			*kind;		/* per host cluster */
	uint64_t		 n;		/* clusters counted */
	qcow2_check_fn		*fn;
	void			*arg;
	struct qcow2_check_result *res;
	uint64_t		 data_clusters;
	char			 first[384];	/* first unrepairable problem */
};

static void refs_report(struct refs *rf, enum qcow2_severity sev,
			bool repairable, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/*
 * One problem: counted by severity; an error the repair at open does not
 * fix is counted in unrepairable too, the first one kept for the refusal.
 */
static void refs_report(struct refs *rf, enum qcow2_severity sev,
			bool repairable, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (sev == QCOW2_SEV_ERROR)
		rf->res->errors++;
	else if (sev == QCOW2_SEV_LEAK)
		rf->res->leaks++;
	else
		rf->res->warnings++;
	if (sev == QCOW2_SEV_ERROR && !repairable &&
	    !rf->res->unrepairable++)
		snprintf(rf->first, sizeof(rf->first), "%s", msg);
	if (rf->fn)
		rf->fn(rf->arg, sev, msg);
}

/* Count one reference of a kind to bytes [off, off + len) of the file. */
static void refs_add(struct refs *rf, uint64_t off, uint64_t len,
		     unsigned kind, const char *what)
{
	uint64_t c, first, last;

	if (!len)
		return;
	first = off >> rf->img->g.cluster_bits;
	last = (off + len - 1) >> rf->img->g.cluster_bits;
	for (c = first; c <= last; c++) {
		if (c >= rf->n) {
			refs_report(rf, QCOW2_SEV_ERROR, false, "%s at %" PRIu64
				    " lies past the end of the file", what,
				    off);
			return;
		}
		if (rf->count[c] < UINT32_MAX)
			rf->count[c]++;
		rf->kind[c] |= (uint8_t)kind;
	}
}

/* Walk one L1 table (active or a snapshot's): L2 tables and data. */
static int refs_walk_l1(struct refs *rf, const uint64_t *l1, uint64_t n,
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
			refs_report(rf, QCOW2_SEV_ERROR, false, "L1 entry %"
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
				refs_report(rf, QCOW2_SEV_ERROR, false, "L2 "
					    "table at %" PRIu64 " entry %"
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
static int refs_walk_snapshots(struct refs *rf, uint8_t *l2buf)
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
			refs_report(rf, QCOW2_SEV_ERROR, false, "snapshot %u: "
				    "table entry at %" PRIu64 " unreadable",
				    i, off);
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
			refs_report(rf, QCOW2_SEV_ERROR, false, "snapshot %u: "
				    "L1 table at %" PRIu64 " (%" PRIu64
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
			be64_array_to_host(l1, l1n);
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
static int refs_count(struct refs *rf)
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

static uint64_t image_end_cluster(const struct qcow2_image *img);

static int refs_init(struct refs *rf, struct qcow2_image *img,
		     struct qcow2_check_result *res)
{
	memset(rf, 0, sizeof(*rf));
	memset(res, 0, sizeof(*res));
	rf->img = img;
	rf->res = res;
	res->dirty = img->h.incompatible_features & QCOW2_INCOMPAT_DIRTY;
	/* The file, and any cluster counted past its end. */
	rf->n = image_end_cluster(img);
	rf->count = calloc(rf->n ? rf->n : 1, sizeof(uint32_t));
	rf->kind = calloc(rf->n ? rf->n : 1, 1);
	return rf->count && rf->kind ? 0 : -ENOMEM;
}

static void refs_fini(struct refs *rf)
{
	free(rf->count);
	free(rf->kind);
}

/* References to cluster c: its refcount once repaired. */
static uint64_t refs_after(const struct refs *rf, uint64_t c)
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
static void refs_judge_copied(struct refs *rf, bool copied, uint64_t c,
			      const char *what, uint64_t index)
{
	uint64_t stored = qcow2_image_refcount(rf->img, c);
	uint64_t after = refs_after(rf, c);

	if ((after == 1) != copied)
		refs_report(rf, QCOW2_SEV_ERROR, false, "%s %" PRIu64
			    ": copied flag %s but %" PRIu64 " references "
			    "(refcount %" PRIu64 ")", what, index,
			    copied ? "set" : "clear", after, stored);
	else if ((stored == 1) != copied)
		refs_report(rf, QCOW2_SEV_ERROR, true, "%s %" PRIu64
			    ": copied flag %s but refcount %" PRIu64, what,
			    index, copied ? "set" : "clear", stored);
}

/* Copied flags of the active tables. */
static int refs_judge_copied_all(struct refs *rf)
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
static int refs_judge(struct refs *rf)
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
			refs_report(rf, QCOW2_SEV_LEAK, true, "cluster %"
				    PRIu64 " (offset %" PRIu64 "): refcount %"
				    PRIu64 " but %u references (leaked)", c,
				    off, stored, rf->count[c]);
			res->repair_lower++;
			break;
		case QCOW2_RC_LOW:
			if (!image_has_refblock(img, c)) {
				refs_report(rf, QCOW2_SEV_ERROR, false,
					    "cluster %" PRIu64 " (offset %"
					    PRIu64 "): %s in use but no "
					    "refcount block counts it", c, off,
					    kinds);
				break;
			}
			refs_report(rf, QCOW2_SEV_ERROR, true, "cluster %"
				    PRIu64 " (offset %" PRIu64 "): refcount %"
				    PRIu64 " but %u references", c, off,
				    stored, rf->count[c]);
			res->repair_raise++;
			break;
		case QCOW2_RC_OVERLAP:
			refs_report(rf, QCOW2_SEV_ERROR, false, "cluster %"
				    PRIu64 " (offset %" PRIu64 "): used as %s "
				    "at once (%u references, refcount %"
				    PRIu64 ")", c, off, kinds, rf->count[c],
				    stored);
			break;
		case QCOW2_RC_SHARED:
			refs_report(rf, QCOW2_SEV_ERROR, false, "cluster %"
				    PRIu64 " (offset %" PRIu64 "): refcount %"
				    PRIu64 " but %u references (one %s "
				    "referenced %u times)", c, off, stored,
				    rf->count[c], kinds, rf->count[c]);
			break;
		case QCOW2_RC_OVERFLOW:
			refs_report(rf, QCOW2_SEV_ERROR, false, "cluster %"
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
static int refs_run(struct refs *rf, struct qcow2_image *img,
		    struct qcow2_check_result *res, qcow2_check_fn *fn,
		    void *arg)
{
	int ret = refs_init(rf, img, res);

	if (ret)
		return ret;
	rf->fn = fn;
	rf->arg = arg;
	if (res->dirty)
		refs_report(rf, QCOW2_SEV_WARNING, true, "the dirty bit is "
			    "set: the image was not closed cleanly");
	if (img->ext.has_bitmaps)
		refs_report(rf, QCOW2_SEV_WARNING, true, "persistent bitmaps "
			    "are not checked: their clusters count as leaks");
	ret = refs_count(rf);
	if (!ret)
		ret = refs_judge(rf);
	res->allocated_clusters = rf->data_clusters;
	return ret;
}


/* ---- preparing for writes ---------------------------------------------- */

/* First cluster past everything counted or in the file. */
static uint64_t image_end_cluster(const struct qcow2_image *img)
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

static int image_sync(struct qcow2_image *img, char *err, size_t errlen)
{
	if (fdatasync(img->fd) < 0)
		return td_errf(err, errlen, -errno, "%s: fdatasync: %m",
			    img->path);
	return 0;
}

/*
 * Grow the refcount table to cover target clusters: a new table and the
 * refcount blocks it needs for itself past the end, then the header
 * switch, then the old table's clusters freed.
 */
static int image_grow_reftable(struct qcow2_image *img, uint64_t target,
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
	t0 = image_end_cluster(img);
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
	be64_array_to_host(table, entries);
	if (ret)
		goto io;
	if ((ret = image_sync(img, err, errlen)))
		goto out;
	/* 2. The header points at it. */
	td_put_be64(hdr, t0 * cs);
	td_put_be32(hdr + 8, (uint32_t)nt);
	ret = td_pwrite_full(img->fd, hdr, sizeof(hdr), QH_REFT_OFFSET);
	if (ret)
		goto io;
	if ((ret = image_sync(img, err, errlen)))
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
	ret = image_sync(img, err, errlen);
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

/* Write the feature fields (incompatible, compatible, autoclear). */
static int image_write_features(struct qcow2_image *img, char *err,
				size_t errlen)
{
	uint8_t f[24];
	int ret;

	td_put_be64(f, img->h.incompatible_features);
	td_put_be64(f + 8, img->h.compatible_features);
	td_put_be64(f + 16, img->h.autoclear_features);
	ret = td_pwrite_full(img->fd, f, sizeof(f), QH_INCOMPAT);
	if (ret)
		return td_errf(err, errlen, ret, "%s: writing the header: %s",
			    img->path, strerror(-ret));
	memcpy(img->hdr_buf + QH_INCOMPAT, f, sizeof(f));
	return image_sync(img, err, errlen);
}

/*
 * A dirty image (a crash while open read-write): count every reference
 * and refuse the image if anything but refcounts is wrong; else set each
 * refcount to its references in place: leaks lowered, clusters in use
 * that a lazy-refcounts writer had not counted yet raised.  Each write
 * moves refcounts to their true values and the dirty bit stays set until
 * a clean close, so a crash during the repair leaves an image the next
 * open repairs again.
 */
static int image_repair(struct qcow2_image *img, char *err, size_t errlen)
{
	struct qcow2_check_result res;
	uint64_t c, i, per = 1ull << img->g.rb_bits, want;
	bool *touched = NULL;
	struct refs rf;
	int ret;

	ret = refs_run(&rf, img, &res, NULL, NULL);
	if (ret) {
		refs_fini(&rf);
		return td_errf(err, errlen, ret, "%s: scanning the tables: %s",
			    img->path, strerror(-ret));
	}
	if (res.unrepairable) {
		td_errf(err, errlen, -EUCLEAN, "qcow2: %s: dirty image with "
		     "damage a repair of refcounts does not fix: %s%s; "
		     "repair it with 'qemu-img check -r all'", img->path,
		     rf.first, res.unrepairable > 1 ? " (and more)" : "");
		refs_fini(&rf);
		return -EUCLEAN;
	}
	if (!res.repair_lower && !res.repair_raise) {
		refs_fini(&rf);
		snprintf(img->warning, sizeof(img->warning), "qcow2: %s: the "
			 "dirty bit was set (not closed cleanly); refcounts "
			 "checked: nothing to repair", img->path);
		return 0;
	}
	/* Bitmap clusters count as leaks: their bit goes first, so that
	 * no reader ever follows bitmaps into freed clusters. */
	if (img->h.autoclear_features && res.repair_lower) {
		img->h.autoclear_features = 0;
		ret = image_write_features(img, err, errlen);
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
	ret = image_sync(img, err, errlen);
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
	refs_fini(&rf);
	return ret;
}

/* ---- metadata map ------------------------------------------------------- */

int qcow2_image_meta_add(struct qcow2_image *img, uint64_t c)
{
	uint64_t i = c >> img->g.rb_bits;
	uint64_t j = c & ((1ull << img->g.rb_bits) - 1);

	if (i >= img->reftable_entries)
		return -ERANGE;
	if (!img->meta[i]) {
		img->meta[i] = calloc(((1ull << img->g.rb_bits) + 7) / 8, 1);
		if (!img->meta[i])
			return -ENOMEM;
	}
	img->meta[i][j >> 3] |= (uint8_t)(1u << (j & 7));
	return 0;
}

const char *qcow2_image_meta_name(const struct qcow2_image *img, uint64_t c,
				  char *buf, size_t len)
{
	uint32_t bits = img->g.cluster_bits;
	uint64_t l1 = img->h.l1_table_offset >> bits;
	uint64_t l1n = td_div_round_up((uint64_t)img->h.l1_size * 8,
				       img->g.cluster_size);
	uint64_t rt = img->h.refcount_table_offset >> bits, i;

	if (c == 0)
		snprintf(buf, len, "the header");
	else if (c >= l1 && c < l1 + l1n)
		snprintf(buf, len, "the L1 table");
	else if (c >= rt && c < rt + img->h.refcount_table_clusters)
		snprintf(buf, len, "the refcount table");
	else {
		snprintf(buf, len, "metadata");
		for (i = 0; i < img->reftable_entries; i++) {
			if (img->reftable[i] && img->reftable[i] >> bits == c) {
				snprintf(buf, len, "refcount block %" PRIu64,
					 i);
				return buf;
			}
		}
		for (i = 0; i < img->h.l1_size; i++) {
			if ((img->l1[i] & QCOW2_OFFSET_MASK) >> bits == c &&
			    (img->l1[i] & QCOW2_OFFSET_MASK)) {
				snprintf(buf, len, "the L2 table of L1 entry %"
					 PRIu64, i);
				return buf;
			}
		}
	}
	return buf;
}

/* Mark [off, off + bytes) as metadata; name says what, in a refusal. */
static int meta_add_range(struct qcow2_image *img, uint64_t off,
			  uint64_t bytes, const char *name, char *err,
			  size_t errlen)
{
	uint64_t c, first = off >> img->g.cluster_bits;
	uint64_t last = bytes ? (off + bytes - 1) >> img->g.cluster_bits : 0;
	char other[96];
	int ret;

	if (!bytes)
		return 0;
	for (c = first; c <= last; c++) {
		if (qcow2_image_is_meta(img, c))
			return td_errf(err, errlen, -EINVAL, "qcow2: %s: %s at "
				    "%" PRIu64 " overlaps %s", img->path,
				    name, off, qcow2_image_meta_name(img, c,
				    other, sizeof(other)));
		ret = qcow2_image_meta_add(img, c);
		if (ret == -ERANGE)
			return td_errf(err, errlen, -EINVAL, "qcow2: %s: %s at "
				    "%" PRIu64 " lies past what the refcount "
				    "table covers", img->path, name, off);
		if (ret)
			return td_errf(err, errlen, ret, "%s: out of memory",
				    img->path);
	}
	return 0;
}

/*
 * The metadata map of a read-write image, from the header, the L1 table
 * and the refcount table: the cheap placement check of every table too
 * (a table sharing a cluster with another is refused, naming both).
 */
static int image_build_meta(struct qcow2_image *img, char *err,
			    size_t errlen)
{
	uint64_t i, l2;
	char name[64];
	int ret;

	img->meta = calloc(img->reftable_entries ? img->reftable_entries : 1,
			   sizeof(uint8_t *));
	if (!img->meta)
		return td_errf(err, errlen, -ENOMEM, "%s: out of memory",
			    img->path);
	ret = meta_add_range(img, 0, img->g.cluster_size, "the header", err,
			     errlen);
	if (!ret)
		ret = meta_add_range(img, img->h.l1_table_offset,
				     (uint64_t)img->h.l1_size * 8,
				     "the L1 table", err, errlen);
	if (!ret)
		ret = meta_add_range(img, img->h.refcount_table_offset,
				     (uint64_t)img->h.refcount_table_clusters <<
				     img->g.cluster_bits, "the refcount table",
				     err, errlen);
	for (i = 0; !ret && i < img->reftable_entries; i++) {
		if (!img->reftable[i])
			continue;
		snprintf(name, sizeof(name), "refcount block %" PRIu64, i);
		ret = meta_add_range(img, img->reftable[i],
				     img->g.cluster_size, name, err, errlen);
	}
	for (i = 0; !ret && i < img->h.l1_size; i++) {
		l2 = img->l1[i] & QCOW2_OFFSET_MASK;
		if (!l2)
			continue;
		snprintf(name, sizeof(name), "the L2 table of L1 entry %"
			 PRIu64, i);
		ret = meta_add_range(img, l2, img->g.cluster_size, name, err,
				     errlen);
	}
	return ret;
}

int qcow2_image_mark_corrupt(struct qcow2_image *img, char *err,
			     size_t errlen)
{
	if (img->h.version < 3)
		return td_errf(err, errlen, -ENOTSUP, "qcow2: %s: a version 2 "
			    "image has no corrupt bit", img->path);
	img->h.incompatible_features |= QCOW2_INCOMPAT_CORRUPT;
	return image_write_features(img, err, errlen);
}

static int image_prepare_write(struct qcow2_image *img, char *err,
			       size_t errlen)
{
	struct td_report r;
	char why[256];
	uint64_t cs = img->g.cluster_size, target;
	int ret;

	r = td_report_err(why, sizeof(why));
	ret = qcow2_header_check_writable(&img->h, &img->ext, &r);
	if (ret)
		return td_errf(err, errlen, ret, "qcow2: %s: cannot open "
			    "read-write: %s", img->path, why);
	ret = image_load_refcounts(img, err, errlen);
	if (ret)
		return ret;
	if ((img->h.incompatible_features & QCOW2_INCOMPAT_DIRTY) &&
	    !(img->flags & QCOW2_IMAGE_NOSCAN)) {
		ret = image_repair(img, err, errlen);
		if (ret)
			return ret;
	}
	/* Room for the file, the whole disk and its L2 tables, twice the
	 * refcount blocks that needs, and some slack. */
	target = td_div_round_up(img->file_size, cs) +
		 td_div_round_up(img->h.size, cs) + img->h.l1_size;
	target += 2 * td_div_round_up(target, 1ull << img->g.rb_bits) + 64;
	if (qcow2_image_ref_coverage(img) < target) {
		ret = image_grow_reftable(img, target + target / 4, err,
					  errlen);
		if (ret)
			return ret;
	}
	ret = image_build_meta(img, err, errlen);
	if (ret)
		return ret;
	if (img->h.version < 3)
		return 0;
	img->h.incompatible_features |= QCOW2_INCOMPAT_DIRTY;
	img->h.autoclear_features = 0;
	return image_write_features(img, err, errlen);
}

int qcow2_image_open_fd(struct qcow2_image **out, int fd, const char *name,
			unsigned flags, char *err, size_t errlen)
{
	struct qcow2_image *img = calloc(1, sizeof(*img));
	struct stat st;
	int ret;

	*out = NULL;
	if (!img) {
		close(fd);
		return -ENOMEM;
	}
	img->fd = fd;
	img->flags = flags;
	img->path = strdup(name);
	if (!img->path) {
		ret = -ENOMEM;
		goto fail;
	}
	if (fstat(fd, &st) < 0) {
		ret = td_errf(err, errlen, -errno, "%s: %m", name);
		goto fail;
	}
	img->file_size = (uint64_t)st.st_size;
	ret = image_read_header(img, err, errlen);
	if (!ret)
		ret = image_read_l1(img, err, errlen);
	if (!ret && (flags & QCOW2_IMAGE_RDWR))
		ret = image_prepare_write(img, err, errlen);
	if (ret)
		goto fail;
	*out = img;
	return 0;
fail:
	if (ret == -ENOMEM)
		td_errf(err, errlen, ret, "%s: out of memory", name);
	image_free(img);
	return ret;
}

int qcow2_image_open(struct qcow2_image **out, const char *path,
		     unsigned flags, char *err, size_t errlen)
{
	int fd = td_open_file(path, ((flags & QCOW2_IMAGE_RDWR) ? O_RDWR :
				     O_RDONLY) | O_CLOEXEC);

	*out = NULL;
	if (fd < 0)
		return td_errf(err, errlen, -errno, "%s: %m", path);
	return qcow2_image_open_fd(out, fd, path, flags, err, errlen);
}

int qcow2_image_close(struct qcow2_image *img, bool clean)
{
	char err[256];
	int ret = 0;

	if (!img)
		return 0;
	if (img->flags & QCOW2_IMAGE_RDWR) {
		ret = image_sync(img, err, sizeof(err));
		if (!ret && clean && (img->h.incompatible_features &
				      QCOW2_INCOMPAT_DIRTY)) {
			img->h.incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
			ret = image_write_features(img, err, sizeof(err));
		}
	}
	image_free(img);
	return ret;
}

/* ---- backing file ---------------------------------------------------- */

const char *qcow2_format_for_driver(const char *driver)
{
	if (!strcmp(driver, "qcow2"))
		return "qcow2";
	if (!strcmp(driver, "vhd"))
		return "vpc";
	return "raw";
}

static const char *driver_for_format(const char *fmt)
{
	if (!strcmp(fmt, "qcow2"))
		return "qcow2";
	if (!strcmp(fmt, "raw") || !strcmp(fmt, "file"))
		return "aio";
	if (!strcmp(fmt, "vpc"))
		return "vhd";
	return NULL;
}

char *qcow2_path_resolve(const char *base, const char *path)
{
	char *copy, *dir, *out;

	if (path[0] == '/')
		return strdup(path);
	copy = strdup(base);
	if (!copy)
		return NULL;
	dir = dirname(copy);
	if (asprintf(&out, "%s/%s", dir, path) < 0)
		out = NULL;
	free(copy);
	return out;
}

int qcow2_image_backing(const struct qcow2_image *img, char **path,
			const char **driver, char *err, size_t errlen)
{
	char *p;
	int ret;

	*path = NULL;
	*driver = NULL;
	if (!img->backing[0])
		return 1;
	p = qcow2_path_resolve(img->path, img->backing);
	if (!p)
		return td_errf(err, errlen, -ENOMEM, "out of memory");
	if (img->ext.has_backing_format) {
		*driver = driver_for_format(img->ext.backing_format);
		if (!*driver) {
			free(p);
			return td_errf(err, errlen, -ENOTSUP, "qcow2: %s: backing "
				    "format '%s' is not supported (qcow2, "
				    "raw, vpc)", img->path,
				    img->ext.backing_format);
		}
		*path = p;
		return 0;
	}
	/* No format recorded: whichever driver claims the file (raw if
	 * none does). */
	ret = td_probe_driver(p, driver);
	if (ret) {
		td_errf(err, errlen, ret, "qcow2: %s: backing file %s: %s",
		     img->path, p, strerror(-ret));
		free(p);
		return ret;
	}
	*path = p;
	return 0;
}

/* ---- mapping ------------------------------------------------------------ */

int qcow2_image_read_l2(struct qcow2_image *img, uint64_t i, uint8_t *buf)
{
	uint64_t off = img->l1[i] & QCOW2_OFFSET_MASK;

	return td_pread_full(img->fd, buf, img->g.cluster_size, off);
}

void qcow2_map_ctx_fini(struct qcow2_map_ctx *ctx)
{
	free(ctx->l2);
	ctx->l2 = NULL;
	ctx->l2_index = UINT64_MAX;
}

/* Map one cluster (or subcluster): type, host offset of sec, extent. */
static int map_one(struct qcow2_image *img, struct qcow2_map_ctx *ctx,
		   uint64_t vaddr, uint64_t *off, uint32_t *csize,
		   uint64_t *extent, char *err, size_t errlen)
{
	const struct qcow2_geometry *g = &img->g;
	uint64_t cl = vaddr >> g->cluster_bits, l1i = cl >> g->l2_bits;
	uint64_t l2i = cl & ((1ull << g->l2_bits) - 1), e, bm = 0;
	uint64_t in = vaddr & (g->cluster_size - 1);
	struct qcow2_mapping m;
	struct td_report r;
	char why[256];
	int ret, st;

	*extent = g->cluster_size - in;
	if (l1i >= img->h.l1_size || !(img->l1[l1i] & QCOW2_OFFSET_MASK))
		return QCOW2_MAP_BACKING;
	if (!ctx->l2) {
		ctx->l2 = td_zalloc_aligned(g->cluster_size);
		ctx->l2_index = UINT64_MAX;
		if (!ctx->l2)
			return -ENOMEM;
	}
	if (ctx->l2_index != l1i) {
		ret = qcow2_image_read_l2(img, l1i, ctx->l2);
		if (ret) {
			ctx->l2_index = UINT64_MAX;
			return td_errf(err, errlen, ret, "%s: reading the L2 "
				    "table of L1 entry %" PRIu64 ": %s",
				    img->path, l1i, strerror(-ret));
		}
		ctx->l2_index = l1i;
	}
	e = td_get_be64(ctx->l2 + l2i * g->l2_entry_size);
	if (g->extended_l2)
		bm = td_get_be64(ctx->l2 + l2i * g->l2_entry_size + 8);
	r = td_report_err(why, sizeof(why));
	if (qcow2_l2_decode(g, img->h.version, e, &m, &r))
		return td_errf(err, errlen, -EINVAL, "qcow2: %s: guest cluster %"
			    PRIu64 ": %s", img->path, cl, why);
	if (m.type == QCOW2_CLUSTER_COMPRESSED) {
		*off = m.host_offset;
		*csize = m.csize;
		return QCOW2_MAP_COMPRESSED;
	}
	if (g->extended_l2) {
		uint64_t scs = g->cluster_size / QCOW2_SUBCLUSTERS;

		st = qcow2_subcluster_state(bm, (unsigned)(in / scs));
		if (st < 0)
			return td_errf(err, errlen, -EINVAL, "qcow2: %s: guest "
				    "cluster %" PRIu64 ": subcluster both "
				    "allocated and zero", img->path, cl);
		*extent = scs - in % scs;
		if (st == QCOW2_CLUSTER_NORMAL && !m.host_offset)
			return td_errf(err, errlen, -EINVAL, "qcow2: %s: guest "
				    "cluster %" PRIu64 ": allocated subcluster "
				    "without a host cluster", img->path, cl);
		m.type = (enum qcow2_cluster_type)st;
	}
	switch (m.type) {
	case QCOW2_CLUSTER_NORMAL:
		*off = m.host_offset + in;
		return QCOW2_MAP_DATA;
	case QCOW2_CLUSTER_ZERO_PLAIN:
	case QCOW2_CLUSTER_ZERO_ALLOC:
		return QCOW2_MAP_ZERO;
	default:
		return QCOW2_MAP_BACKING;
	}
}

int qcow2_image_map(struct qcow2_image *img, struct qcow2_map_ctx *ctx,
		    uint64_t sec, uint32_t max, uint32_t *run, uint64_t *off,
		    uint32_t *csize, char *err, size_t errlen)
{
	uint64_t vaddr = sec << SECTOR_SHIFT, ext, noff = 0, got;
	uint64_t size_secs = img->h.size >> SECTOR_SHIFT;
	uint32_t ncs;
	int type, t;

	*off = 0;
	*csize = 0;
	if (sec >= size_secs) {
		*run = max;
		return QCOW2_MAP_ZERO;
	}
	if (max > size_secs - sec)
		max = (uint32_t)(size_secs - sec);
	type = map_one(img, ctx, vaddr, off, csize, &ext, err, errlen);
	if (type < 0)
		return type;
	got = ext >> SECTOR_SHIFT;
	if (type == QCOW2_MAP_COMPRESSED) {
		*run = got < max ? (uint32_t)got : max;
		return type;
	}
	while (got < max) {
		t = map_one(img, ctx, vaddr + (got << SECTOR_SHIFT), &noff,
			    &ncs, &ext, err, errlen);
		if (t < 0 || t != type ||
		    (t == QCOW2_MAP_DATA &&
		     noff != *off + (got << SECTOR_SHIFT)))
			break;
		got += ext >> SECTOR_SHIFT;
	}
	*run = got < max ? (uint32_t)got : max;
	return type;
}

int qcow2_image_allocated(struct qcow2_image *img, uint64_t *bytes,
			  uint64_t *clusters, char *err, size_t errlen)
{
	const struct qcow2_geometry *g = &img->g;
	uint64_t i, j, entries = 1ull << g->l2_bits;
	struct qcow2_mapping m;
	uint8_t *l2 = td_zalloc_aligned(g->cluster_size);
	int ret = 0;

	*bytes = 0;
	*clusters = 0;
	if (!l2)
		return -ENOMEM;
	for (i = 0; i < img->h.l1_size; i++) {
		if (!(img->l1[i] & QCOW2_OFFSET_MASK))
			continue;
		ret = qcow2_image_read_l2(img, i, l2);
		if (ret) {
			td_errf(err, errlen, ret, "%s: reading an L2 table: %s",
			     img->path, strerror(-ret));
			break;
		}
		for (j = 0; j < entries; j++) {
			uint64_t e = td_get_be64(l2 + j * g->l2_entry_size);

			if (qcow2_l2_decode(g, img->h.version, e, &m, NULL))
				continue;
			if (m.type == QCOW2_CLUSTER_NORMAL) {
				*bytes += g->cluster_size;
				(*clusters)++;
			} else if (m.type == QCOW2_CLUSTER_COMPRESSED) {
				*bytes += m.csize;
				(*clusters)++;
			}
		}
	}
	free(l2);
	return ret;
}

/* ---- creating --------------------------------------------------------- */

static int create_check(const struct qcow2_create_params *p,
			struct qcow2_header *h, char *err, size_t errlen)
{
	memset(h, 0, sizeof(*h));
	h->version = p->version ? p->version : 3;
	h->cluster_bits = p->cluster_bits ? p->cluster_bits :
			  QCOW2_DEFAULT_CLUSTER_BITS;
	h->refcount_order = p->version == 2 || !p->refcount_order ?
			    QCOW2_DEFAULT_REFCOUNT_ORDER : p->refcount_order;
	if (p->version == 2 && p->refcount_order &&
	    p->refcount_order != QCOW2_DEFAULT_REFCOUNT_ORDER)
		return td_errf(err, errlen, -EINVAL, "version 2 images have "
			    "16-bit refcounts only");
	if (h->version != 2 && h->version != 3)
		return td_errf(err, errlen, -EINVAL, "version %u: qcow2 is 2 or "
			    "3", h->version);
	if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
	    h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return td_errf(err, errlen, -EINVAL, "cluster size %u: must be "
			    "a power of two from 512 B to 2 MiB",
			    1u << (h->cluster_bits & 31));
	if (h->refcount_order > QCOW2_MAX_REFCOUNT_ORDER)
		return td_errf(err, errlen, -EINVAL, "refcount order %u: must be "
			    "0..6", h->refcount_order);
	if (p->size > QCOW2_MAX_SIZE || p->size % SECTOR_SIZE)
		return td_errf(err, errlen, -EINVAL, "size %" PRIu64 ": must be "
			    "a multiple of 512 below 2^61", p->size);
	if (p->backing && (!p->backing[0] ||
			   strlen(p->backing) > QCOW2_MAX_BACKING_NAME))
		return td_errf(err, errlen, -EINVAL, "backing file name of %zu "
			    "bytes: must be 1..%u", strlen(p->backing),
			    QCOW2_MAX_BACKING_NAME);
	if (p->backing_fmt && strlen(p->backing_fmt) > QCOW2_MAX_FORMAT_NAME)
		return td_errf(err, errlen, -EINVAL, "backing format '%s' too "
			    "long", p->backing_fmt);
	h->header_length = h->version >= 3 ? QCOW2_NEW_HEADER_LENGTH :
			   QCOW2_V2_HEADER_SIZE;
	return 0;
}

/* Build the first cluster: header, extensions, backing name. */
static int create_header_cluster(struct qcow2_header *h,
				 const struct qcow2_create_params *p,
				 uint8_t *buf, size_t cs, char *err,
				 size_t errlen)
{
	size_t end, blen = p->backing ? strlen(p->backing) : 0;
	int features;

	for (features = h->version >= 3; features >= 0; features--) {
		memset(buf, 0, cs);
		end = qcow2_extensions_encode(buf, cs, h->header_length,
					      p->backing ? p->backing_fmt :
					      NULL, features);
		if (end && end + blen <= cs)
			break;
	}
	if (features < 0)
		return td_errf(err, errlen, -ENAMETOOLONG, "the backing file "
			    "name does not fit in a %zu-byte cluster", cs);
	if (blen) {
		h->backing_file_offset = end;
		h->backing_file_size = (uint32_t)blen;
		memcpy(buf + end, p->backing, blen);
	}
	qcow2_header_encode(h, buf);
	return 0;
}

/*
 * Refcount blocks and table clusters for a file whose first used
 * clusters number n plus the table and blocks themselves.
 */
static void refcount_layout(const struct qcow2_geometry *g, uint64_t n,
			    uint64_t *rtc, uint64_t *nb)
{
	uint64_t per = 1ull << g->rb_bits, b = 1, t = 1, pb, pt;

	do {
		pb = b;
		pt = t;
		b = td_div_round_up(n + t + b, per);
		t = td_div_round_up(b * 8, g->cluster_size);
	} while (b != pb || t != pt);
	*rtc = t;
	*nb = b;
}

/* Write refcount blocks giving clusters [0, used) refcount 1, and the
 * table, at cluster rt (table) and rt + rtc (blocks). */
static int write_refcounts(int fd, const struct qcow2_geometry *g,
			   uint64_t used, uint64_t rt, uint64_t rtc,
			   uint64_t nb)
{
	uint64_t per = 1ull << g->rb_bits, cs = g->cluster_size, i, j;
	uint8_t *blk = td_zalloc_aligned(cs), *tab = td_zalloc_aligned(rtc * cs);
	int ret = 0;

	if (!blk || !tab) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < nb && !ret; i++) {
		memset(blk, 0, cs);
		for (j = 0; j < per && i * per + j < used; j++)
			qcow2_refcount_set(blk, j, g->refcount_order, 1);
		ret = td_pwrite_full(fd, blk, cs, (rt + rtc + i) * cs);
		td_put_be64(tab + i * 8, (rt + rtc + i) * cs);
	}
	if (!ret)
		ret = td_pwrite_full(fd, tab, rtc * cs, rt * cs);
out:
	free(blk);
	free(tab);
	return ret;
}

int qcow2_image_create(const char *path, const struct qcow2_create_params *p,
		       char *err, size_t errlen)
{
	struct qcow2_create_params q = *p;
	struct qcow2_header h;
	struct qcow2_geometry g;
	uint64_t cs, l1c, rtc, nb, used;
	uint8_t *buf = NULL;
	char *bpath = NULL;
	int fd, ret;

	if (q.backing && !q.size) {
		const char *drv = "aio";

		if (q.backing_fmt && !strcmp(q.backing_fmt, "qcow2"))
			drv = "qcow2";
		else if (q.backing_fmt && !strcmp(q.backing_fmt, "vpc"))
			drv = "vhd";
		bpath = qcow2_path_resolve(path, q.backing);
		if (!bpath)
			return td_errf(err, errlen, -ENOMEM, "out of memory");
		ret = td_image_size(drv, bpath, &q.size, err, errlen);
		free(bpath);
		if (ret)
			return ret;
		q.size = td_round_up(q.size, SECTOR_SIZE);
	}
	ret = create_check(&q, &h, err, errlen);
	if (ret)
		return ret;
	h.size = q.size;
	qcow2_geometry_init(&g, &h);
	cs = g.cluster_size;
	h.l1_size = (uint32_t)qcow2_l1_entries(&g, q.size);
	if ((uint64_t)h.l1_size * 8 > QCOW2_MAX_L1_BYTES)
		return td_errf(err, errlen, -EFBIG, "size %" PRIu64 " needs an "
			    "L1 table larger than 32 MiB: use larger "
			    "clusters", q.size);
	l1c = td_div_round_up((uint64_t)h.l1_size * 8, cs);
	/* header | refcount table | refcount blocks | L1 table */
	refcount_layout(&g, 1 + l1c, &rtc, &nb);
	used = 1 + rtc + nb + l1c;
	h.refcount_table_offset = cs;
	h.refcount_table_clusters = (uint32_t)rtc;
	h.l1_table_offset = (1 + rtc + nb) * cs;
	buf = td_zalloc_aligned(cs > BUF_ALIGN ? cs : BUF_ALIGN);
	if (!buf)
		return td_errf(err, errlen, -ENOMEM, "out of memory");
	ret = create_header_cluster(&h, &q, buf, cs, err, errlen);
	if (ret) {
		free(buf);
		return ret;
	}
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		free(buf);
		return td_errf(err, errlen, ret, "%s: %s", path, strerror(-ret));
	}
	ret = td_pwrite_full(fd, buf, cs, 0);
	if (!ret)
		ret = write_refcounts(fd, &g, used, 1, rtc, nb);
	if (!ret && ftruncate(fd, (off_t)(used * cs)) < 0)
		ret = -errno;
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	free(buf);
	if (ret) {
		unlink(path);
		return td_errf(err, errlen, ret, "%s: %s", path, strerror(-ret));
	}
	return 0;
}

/* ---- consistency check ------------------------------------------------- */

int qcow2_image_check(const char *path, qcow2_check_fn *fn, void *arg,
		      struct qcow2_check_result *res, char *err,
		      size_t errlen)
{
	struct qcow2_image *img;
	struct refs rf;
	int ret;

	memset(res, 0, sizeof(*res));
	ret = qcow2_image_open(&img, path, 0, err, errlen);
	if (ret)
		return ret;
	ret = image_load_refcounts(img, err, errlen);
	if (ret) {
		qcow2_image_close(img, false);
		return ret;
	}
	ret = refs_run(&rf, img, res, fn, arg);
	refs_fini(&rf);
	qcow2_image_close(img, false);
	if (ret)
		return td_errf(err, errlen, ret, "%s: %s", path, strerror(-ret));
	return 0;
}
