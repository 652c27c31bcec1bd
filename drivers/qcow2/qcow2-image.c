/* SPDX-License-Identifier: MIT */
/*
 * Synchronous qcow2 image code: open (and prepare for writing), close,
 * the dirty and corrupt bits, the map of metadata clusters, the backing
 * file and the mapping of guest sectors (see qcow2-image.h).  Reference
 * counts are qcow2-refcount.c, counting and judging references
 * qcow2-check.c, creating an image qcow2-create.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tapfs/tapdisk.h>

#include "qcow2-int.h"
#include "common/td-fileio.h"

/* ---- reading the header and the L1 table ----------------------------- */

int qcow2_probe(const char *path, bool *is_qcow2)
{
	uint8_t magic[4];
	size_t n;
	int rc = td_read_head(path, magic, sizeof(magic), &n);

	*is_qcow2 = !rc && n == 4 && td_get_be32(magic) == QCOW2_MAGIC;
	return rc;
}

static void image_free(struct qcow2_image *img)
{
	uint64_t i;

	if (!img)
		return;
	if (img->refblocks) {
		for (i = 0; i < img->reftable_entries; i++)
			qcow2_refblock_free(img, img->refblocks[i]);
		td_free_sparse(img->refblocks,
			       qcow2_rt_bytes(img->reftable_entries));
	}
	if (img->meta) {
		for (i = 0; i < img->reftable_entries; i++)
			free(img->meta[i]);
		td_free_sparse(img->meta, qcow2_rt_bytes(img->reftable_entries));
	}
	td_free_sparse(img->reftable, qcow2_rt_bytes(img->reftable_entries));
	free(img->l1);
	if (img->fd >= 0)
		close(img->fd);
	free(img->path);
	free(img);
}

/*
 * The header and what follows it in the first cluster (extensions, the
 * backing file's name), parsed into img; the cluster is not kept.
 */
static int image_read_header(struct qcow2_image *img, char *err,
			     size_t errlen)
{
	uint8_t first[QCOW2_V3_HEADER_SIZE], *buf;
	struct td_report r = td_report_err(NULL, 0);
	char why[512];
	uint32_t bits, cs;
	size_t len;
	int ret;

	memset(first, 0, sizeof(first));
	ret = td_pread_zero(img->fd, first, sizeof(first), 0);
	if (ret)
		return td_errf(err, errlen, ret, "%s: reading the header: %s",
			    img->path, strerror(-ret));
	bits = td_get_be32(first + QH_CLUSTER_BITS);
	cs = bits >= QCOW2_MIN_CLUSTER_BITS && bits <= QCOW2_MAX_CLUSTER_BITS ?
	     1u << bits : TD_BUF_ALIGN;
	/*
	 * The parsers look at the part of the first cluster the file holds;
	 * a short file (a crafted one) does not get a 2 MiB buffer.
	 */
	len = img->file_size < cs ? (size_t)img->file_size : cs;
	buf = td_zalloc_aligned(td_round_up(len > TD_BUF_ALIGN ? len :
					    TD_BUF_ALIGN, TD_BUF_ALIGN));
	if (!buf)
		return -ENOMEM;
	ret = td_pread_zero(img->fd, buf, len, 0);
	if (ret) {
		ret = td_errf(err, errlen, ret, "%s: reading the header: %s",
			      img->path, strerror(-ret));
		goto out;
	}
	r = td_report_err(why, sizeof(why));
	ret = qcow2_header_parse(buf, len, img->file_size, &img->h, &img->ext,
				 &r);
	if (ret) {
		ret = td_errf(err, errlen, ret, "qcow2: %s: %s", img->path, why);
		goto out;
	}
	qcow2_geometry_init(&img->g, &img->h);
	ret = qcow2_backing_name(buf, len, &img->h, img->backing,
				 sizeof(img->backing), &r);
	if (ret) {
		ret = td_errf(err, errlen, ret, "qcow2: %s: %s", img->path, why);
		goto out;
	}
	if (img->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE)
		ret = td_errf(err, errlen, -ENOTSUP, "qcow2: %s: external data "
			      "file%s%s: not supported", img->path,
			      img->ext.has_data_file ? " " : "",
			      img->ext.has_data_file ? img->ext.data_file : "");
out:
	free(buf);
	return ret;
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
	qcow2_be64_array_to_host(img->l1, n);
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

/* ---- syncing, the feature bits --------------------------------------- */

int qcow2_image_sync(struct qcow2_image *img, char *err, size_t errlen)
{
	if (fdatasync(img->fd) < 0)
		return td_errf(err, errlen, -errno, "%s: fdatasync: %m",
			    img->path);
	return 0;
}

/* Write the feature fields (incompatible, compatible, autoclear). */
int qcow2_image_write_features(struct qcow2_image *img, char *err,
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
	return qcow2_image_sync(img, err, errlen);
}

/* ---- metadata map ---------------------------------------------------- */

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

	img->meta = td_zalloc_sparse(qcow2_rt_bytes(img->reftable_entries));
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

/* ---- open and close -------------------------------------------------- */

int qcow2_image_mark_corrupt(struct qcow2_image *img, char *err,
			     size_t errlen)
{
	if (img->h.version < 3)
		return td_errf(err, errlen, -ENOTSUP, "qcow2: %s: a version 2 "
			    "image has no corrupt bit", img->path);
	img->h.incompatible_features |= QCOW2_INCOMPAT_CORRUPT;
	return qcow2_image_write_features(img, err, errlen);
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
	ret = qcow2_image_load_refcounts(img, err, errlen);
	if (ret)
		return ret;
	if ((img->h.incompatible_features & QCOW2_INCOMPAT_DIRTY) &&
	    !(img->flags & QCOW2_IMAGE_NOSCAN)) {
		ret = qcow2_image_repair(img, err, errlen);
		if (ret)
			return ret;
	}
	/* Room for the file, the whole disk and its L2 tables, twice the
	 * refcount blocks that needs, and some slack. */
	target = td_div_round_up(img->file_size, cs) +
		 td_div_round_up(img->h.size, cs) + img->h.l1_size;
	target += 2 * td_div_round_up(target, 1ull << img->g.rb_bits) + 64;
	if (qcow2_image_ref_coverage(img) < target) {
		ret = qcow2_image_grow_reftable(img, target + target / 4, err,
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
	return qcow2_image_write_features(img, err, errlen);
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
		ret = qcow2_image_sync(img, err, sizeof(err));
		if (!ret && clean && (img->h.incompatible_features &
				      QCOW2_INCOMPAT_DIRTY)) {
			img->h.incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
			ret = qcow2_image_write_features(img, err, sizeof(err));
		}
	}
	image_free(img);
	return ret;
}

/* ---- backing file ---------------------------------------------------- */

/*
 * A backing file's format as qcow2 records it (QEMU's names) and the
 * driver that opens it.  The first entry of a driver is what it writes.
 */
static const struct {
	const char *format, *driver;
} backing_formats[] = {
	{ "qcow2", "qcow2" },
	{ "raw", "aio" },
	{ "file", "aio" },
	{ "vpc", "vhd" },
	{ "vmdk", "vmdk" },
	{ "qcow", "qcow" },
};

const char *qcow2_format_for_driver(const char *driver)
{
	size_t i;

	for (i = 0; i < sizeof(backing_formats) / sizeof(backing_formats[0]);
	     i++)
		if (!strcmp(driver, backing_formats[i].driver))
			return backing_formats[i].format;
	return "raw";
}

static const char *driver_for_format(const char *fmt)
{
	size_t i;

	for (i = 0; i < sizeof(backing_formats) / sizeof(backing_formats[0]);
	     i++)
		if (!strcmp(fmt, backing_formats[i].format))
			return backing_formats[i].driver;
	return NULL;
}

int qcow2_image_backing(const struct qcow2_image *img, char **path,
			const char **driver, char *err, size_t errlen)
{
	const struct tap_disk *remote;
	const char *arg;
	char *p;
	int ret;

	*path = NULL;
	*driver = NULL;
	if (!img->backing[0])
		return 1;
	if ((remote = td_remote_parent(img->backing, &arg))) {
		/* QEMU records such a parent as raw (-F raw), or not. */
		if (img->ext.has_backing_format &&
		    strcmp(img->ext.backing_format, "raw"))
			return td_errf(err, errlen, -ENOTSUP, "qcow2: %s: "
				       "backing %s has format '%s': a %s "
				       "image is raw", img->path, img->backing,
				       img->ext.backing_format, remote->name);
		*path = strdup(arg);
		if (!*path)
			return td_errf(err, errlen, -ENOMEM, "out of memory");
		*driver = remote->name;
		return 0;
	}
	p = td_path_resolve(img->path, img->backing);
	if (!p)
		return td_errf(err, errlen, -ENOMEM, "out of memory");
	if (img->ext.has_backing_format) {
		*driver = driver_for_format(img->ext.backing_format);
		if (!*driver) {
			free(p);
			return td_errf(err, errlen, -ENOTSUP, "qcow2: %s: backing "
				    "format '%s' is not supported (qcow2, "
				    "raw, vpc, vmdk, qcow)", img->path,
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

/* ---- mapping --------------------------------------------------------- */

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
	uint64_t vaddr = sec << TD_SECTOR_SHIFT, ext, noff = 0, got;
	uint64_t size_secs = img->h.size >> TD_SECTOR_SHIFT;
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
	got = ext >> TD_SECTOR_SHIFT;
	if (type == QCOW2_MAP_COMPRESSED) {
		*run = got < max ? (uint32_t)got : max;
		return type;
	}
	while (got < max) {
		t = map_one(img, ctx, vaddr + (got << TD_SECTOR_SHIFT), &noff,
			    &ncs, &ext, err, errlen);
		if (t < 0 || t != type ||
		    (t == QCOW2_MAP_DATA &&
		     noff != *off + (got << TD_SECTOR_SHIFT)))
			break;
		got += ext >> TD_SECTOR_SHIFT;
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
