/* SPDX-License-Identifier: MIT */
/* Synchronous VMDK image helpers: see vmdk-image.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/td-fileio.h"
#include "vmdk-image.h"

/* What a text descriptor starts with (the probe looks for it). */
#define VMDK_DESC_SIGNATURE	"# Disk DescriptorFile"

/* Layout of a new monolithicSparse disk, as QEMU makes it. */
#define VMDK_CREATE_DESC_SECS	20u

int vmdk_probe(const char *path, bool *is_vmdk)
{
	char buf[sizeof(VMDK_DESC_SIGNATURE) - 1];
	size_t n;
	int rc = td_read_head(path, buf, sizeof(buf), &n);

	*is_vmdk = !rc &&
		   ((n >= 4 && td_get_le32((uint8_t *)buf) == VMDK_MAGIC) ||
		    (n == sizeof(buf) &&
		     !memcmp(buf, VMDK_DESC_SIGNATURE, sizeof(buf))));
	return rc;
}

static int vmdk_file_secs(int fd, uint64_t *secs)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*secs = td_div_round_up((uint64_t)st.st_size, VMDK_SECTOR);
	return 0;
}

static void vmdk_extent_free(struct vmdk_extent *e)
{
	if (e->fd >= 0)
		close(e->fd);
	free(e->path);
	free(e->gd);
	free(e->rgd);
	free(e->gt);
}

void vmdk_image_close(struct vmdk_image *img)
{
	unsigned i;

	if (!img)
		return;
	for (i = 0; i < img->n_extents; i++)
		vmdk_extent_free(&img->extents[i]);
	free(img->extents);
	vmdk_desc_free(&img->desc);
	if (img->fd >= 0)
		close(img->fd);
	free(img->path);
	free(img);
}

/* The header of a sparse extent, from its footer for a stream image. */
static int vmdk_read_header(struct vmdk_extent *e, char *err, size_t errlen)
{
	uint8_t buf[VMDK_HEADER_SIZE];
	uint64_t foot;
	int rc;

	rc = td_pread_zero(e->fd, buf, sizeof(buf), 0);
	if (rc)
		return td_errf(err, errlen, rc, "%s: reading the header: %s",
			       e->path, strerror(-rc));
	rc = vmdk_header_decode(buf, e->file_secs, &e->h, err, errlen);
	if (rc || e->h.gd_offset != VMDK_GD_AT_END)
		return rc;
	/* A stream image: the header that counts is in the footer. */
	if (e->file_secs < VMDK_FOOTER_SIZE / VMDK_SECTOR + 1)
		return td_errf(err, errlen, -EINVAL, "%s: the footer is "
			       "missing (file of %" PRIu64 " sectors)",
			       e->path, e->file_secs);
	foot = (e->file_secs * VMDK_SECTOR) - VMDK_FOOTER_SIZE + VMDK_SECTOR;
	rc = td_pread_zero(e->fd, buf, sizeof(buf), foot);
	if (!rc)
		rc = vmdk_header_decode(buf, e->file_secs, &e->h, err, errlen);
	if (!rc && e->h.gd_offset == VMDK_GD_AT_END)
		rc = td_errf(err, errlen, -EINVAL, "the footer has no grain "
			     "directory");
	return rc;
}

/* Load the GD, redundant GD and every GT; check every entry. */
static int vmdk_load_tables(struct vmdk_extent *e, char *err, size_t errlen)
{
	const struct vmdk_header *h = &e->h;
	uint64_t gt_bytes = (uint64_t)h->gtes * 4, i, j;
	size_t gd_bytes;
	uint8_t *raw;
	int rc;

	e->gd_entries = vmdk_header_gd_entries(h);
	if (e->gd_entries * gt_bytes > VMDK_MAX_GT_BYTES)
		return td_errf(err, errlen, -EFBIG, "%s: grain tables of %"
			       PRIu64 " bytes are more than %u MiB", e->path,
			       e->gd_entries * gt_bytes, VMDK_MAX_GT_BYTES >> 20);
	gd_bytes = (size_t)td_round_up(e->gd_entries * 4, VMDK_SECTOR);
	raw = malloc(gd_bytes);
	e->gd = calloc(e->gd_entries ? e->gd_entries : 1, 4);
	if (h->flags & VMDK_FLAG_RGD)
		e->rgd = calloc(e->gd_entries ? e->gd_entries : 1, 4);
	e->gt = td_zalloc_aligned(e->gd_entries * gt_bytes);
	if (!raw || !e->gd || !e->gt || (!e->rgd && h->flags & VMDK_FLAG_RGD)) {
		free(raw);
		return -ENOMEM;
	}
	for (j = 0; j < 2; j++) {
		uint32_t *gd = j ? e->rgd : e->gd;

		if (!gd)
			continue;
		rc = td_pread_full(e->fd, raw, gd_bytes,
				   (j ? h->rgd_offset : h->gd_offset) *
				   VMDK_SECTOR);
		if (rc) {
			free(raw);
			return td_errf(err, errlen, rc, "%s: reading the grain "
				       "directory: %s", e->path, strerror(-rc));
		}
		for (i = 0; i < e->gd_entries; i++)
			gd[i] = td_get_le32(raw + i * 4);
	}
	free(raw);
	for (i = 0; i < e->gd_entries; i++) {
		uint64_t gt = e->gd[i];

		if (!gt)
			continue;
		if (gt >= e->file_secs ||
		    td_div_round_up(gt_bytes, VMDK_SECTOR) > e->file_secs - gt)
			return td_errf(err, errlen, -EINVAL, "%s: grain table %"
				       PRIu64 " at sector %" PRIu64 " is past "
				       "the end of the file (%" PRIu64
				       " sectors)", e->path, i, gt,
				       e->file_secs);
		rc = td_pread_full(e->fd, e->gt + i * gt_bytes, gt_bytes,
				   gt * VMDK_SECTOR);
		if (rc)
			return td_errf(err, errlen, rc, "%s: reading grain "
				       "table %" PRIu64 ": %s", e->path, i,
				       strerror(-rc));
	}
	for (i = 0; i < e->gd_entries * h->gtes; i++) {
		uint32_t g = vmdk_gte(e, i);

		if (g == VMDK_GTE_UNALLOCATED ||
		    (g == VMDK_GTE_ZERO && h->flags & VMDK_FLAG_ZERO_GTE))
			continue;
		if (g >= e->file_secs || g < 1)
			return td_errf(err, errlen, -EINVAL, "%s: grain %"
				       PRIu64 " at sector %u is past the end "
				       "of the file (%" PRIu64 " sectors)",
				       e->path, i, g, e->file_secs);
	}
	return 0;
}

static int vmdk_open_sparse(struct vmdk_extent *e, unsigned flags, char *err,
			    size_t errlen)
{
	uint64_t i;
	int rc;

	rc = vmdk_read_header(e, err, errlen);
	if (rc)
		return rc;
	if (e->h.capacity < e->secs)
		return td_errf(err, errlen, -EINVAL, "%s: capacity %" PRIu64
			       " sectors is less than the descriptor's %"
			       PRIu64, e->path, e->h.capacity, e->secs);
	e->compressed = e->h.flags & VMDK_FLAG_COMPRESSED;
	rc = vmdk_load_tables(e, err, errlen);
	if (rc || !(flags & VMDK_IMAGE_RDWR))
		return rc;
	if (e->compressed)
		return td_errf(err, errlen, -EROFS, "%s: compressed grains "
			       "(streamOptimized) are read-only in tapfs: "
			       "open it ro, or convert it", e->path);
	/*
	 * A grain table missing from the primary directory is allocated by
	 * the first write into it (whatever the redundant one says: a crash
	 * between the two directory writes leaves it there only).  One in
	 * the primary directory only has no redundant copy to update.
	 */
	for (i = 0; e->rgd && i < e->gd_entries; i++)
		if (e->gd[i] && !e->rgd[i])
			return td_errf(err, errlen, -EINVAL, "%s: grain table "
				       "%" PRIu64 " (sector %u) has no "
				       "redundant copy: open it ro, or "
				       "convert it", e->path, i, e->gd[i]);
	return 0;
}

static int vmdk_open_extent(struct vmdk_image *img, struct vmdk_extent *e,
			    const struct vmdk_extent_desc *d, unsigned flags,
			    vmdk_path_check_fn *check, void *arg, char *err,
			    size_t errlen)
{
	int oflags = (flags & VMDK_IMAGE_RDWR ? O_RDWR : O_RDONLY) |
		     O_CLOEXEC;
	int rc;

	e->type = d->type;
	e->access = d->access;
	e->secs = d->secs;
	e->offset = d->offset;
	if (flags & VMDK_IMAGE_RDWR &&
	    (d->access != VMDK_ACCESS_RW || d->type == VMDK_EXTENT_ZERO))
		return td_errf(err, errlen, -EROFS, "%s: a read-only or zero "
			       "extent cannot be opened for writing",
			       img->path);
	if (d->type == VMDK_EXTENT_ZERO)
		return 0;
	e->path = td_path_resolve(img->path, d->name);
	if (!e->path)
		return -ENOMEM;
	if (strcmp(e->path, img->path)) {
		if (check) {
			rc = check(arg, e->path, err, errlen);
			if (rc)
				return rc;
		}
		e->fd = td_open_file(e->path, oflags);
	} else {
		e->fd = dup(img->fd);
	}
	if (e->fd < 0)
		return td_errf(err, errlen, -errno, "%s: extent %s: %s",
			       img->path, e->path, strerror(errno));
	rc = vmdk_file_secs(e->fd, &e->file_secs);
	if (rc)
		return rc;
	if (d->type == VMDK_EXTENT_FLAT)
		return 0;
	return vmdk_open_sparse(e, flags, err, errlen);
}

/* The one extent of an embedded descriptor is the file itself. */
static void vmdk_self_name(struct vmdk_image *img)
{
	const char *slash = strrchr(img->path, '/');

	snprintf(img->desc.extents[0].name, sizeof(img->desc.extents[0].name),
		 "%s", slash ? slash + 1 : img->path);
}

/* The descriptor: embedded in a sparse extent, or the text file. */
static int vmdk_read_desc(struct vmdk_image *img, char *err, size_t errlen)
{
	uint8_t hbuf[VMDK_HEADER_SIZE];
	struct vmdk_header h;
	uint64_t secs = 0, off, len, embedded_secs = 0;
	char *text;
	int rc;

	rc = vmdk_file_secs(img->fd, &secs);
	if (rc)
		return rc;
	rc = td_pread_zero(img->fd, hbuf, sizeof(hbuf), 0);
	if (rc)
		return rc;
	if (td_get_le32(hbuf) == VMDK_MAGIC) {
		img->embedded = true;
		rc = vmdk_header_decode(hbuf, secs, &h, err, errlen);
		if (rc)
			return rc;
		if (!h.desc_offset) {
			/* A lone sparse extent: the disk is just it. */
			img->desc.n_extents = 1;
			img->desc.parent_cid = VMDK_NO_PARENT_CID;
			img->desc.extents = calloc(1,
						   sizeof(*img->desc.extents));
			if (!img->desc.extents)
				return -ENOMEM;
			img->desc.extents[0].secs = h.capacity;
			img->desc.capacity = h.capacity;
			vmdk_self_name(img);
			return 0;
		}
		off = h.desc_offset * VMDK_SECTOR;
		len = h.desc_size * VMDK_SECTOR;
		embedded_secs = h.capacity;
	} else {
		if (secs * VMDK_SECTOR > VMDK_MAX_DESC)
			return td_errf(err, errlen, -EINVAL, "neither a sparse "
				       "extent nor a descriptor (larger than "
				       "%u bytes)", VMDK_MAX_DESC);
		off = 0;
		len = secs * VMDK_SECTOR;
	}
	text = calloc(1, len + 1);
	if (!text)
		return -ENOMEM;
	rc = td_pread_zero(img->fd, text, len, off);
	if (!rc)
		rc = vmdk_desc_parse(text, len, &img->desc, err, errlen);
	free(text);
	if (rc || !img->embedded)
		return rc;
	/*
	 * An embedded descriptor describes the file it is in, whatever
	 * name its extent line gives (a copied or renamed image): the disk
	 * is this one sparse extent, as QEMU reads it.
	 */
	img->desc.n_extents = 1;
	img->desc.capacity = embedded_secs;
	img->desc.extents[0].type = VMDK_EXTENT_SPARSE;
	img->desc.extents[0].secs = embedded_secs;
	img->desc.extents[0].offset = 0;
	vmdk_self_name(img);
	return 0;
}

/* The disk at path with its descriptor read, no extent opened yet. */
static int vmdk_open_desc(struct vmdk_image **out, const char *path,
			  int oflags, char *err, size_t errlen)
{
	struct vmdk_image *img = calloc(1, sizeof(*img));
	char why[512];
	int rc;

	*out = NULL;
	if (!img)
		return -ENOMEM;
	img->path = strdup(path);
	img->fd = td_open_file(path, oflags | O_CLOEXEC);
	if (!img->path || img->fd < 0) {
		rc = img->path ? -errno : -ENOMEM;
		goto fail;
	}
	why[0] = '\0';
	rc = vmdk_read_desc(img, why, sizeof(why));
	if (rc) {
		td_errf(err, errlen, rc, "%s: %s", path, why[0] ? why :
			strerror(-rc));
		goto fail;
	}
	*out = img;
	return 0;
fail:
	vmdk_image_close(img);
	return rc;
}

int vmdk_image_open(struct vmdk_image **out, const char *path,
		    unsigned flags, vmdk_path_check_fn *check, void *arg,
		    char *err, size_t errlen)
{
	struct vmdk_image *img;
	unsigned i;
	int rc;

	*out = NULL;
	rc = vmdk_open_desc(&img, path, flags & VMDK_IMAGE_RDWR ? O_RDWR :
			    O_RDONLY, err, errlen);
	if (rc)
		return rc;
	img->extents = calloc(img->desc.n_extents, sizeof(*img->extents));
	if (!img->extents) {
		rc = -ENOMEM;
		goto fail;
	}
	for (i = 0; i < img->desc.n_extents; i++)
		img->extents[i].fd = -1;
	img->n_extents = img->desc.n_extents;
	for (i = 0; i < img->n_extents; i++) {
		img->extents[i].start = img->capacity;
		rc = vmdk_open_extent(img, &img->extents[i],
				      &img->desc.extents[i], flags, check, arg,
				      err, errlen);
		if (rc)
			goto fail;
		img->capacity += img->extents[i].secs;
	}
	*out = img;
	return 0;
fail:
	vmdk_image_close(img);
	return rc;
}

int vmdk_image_cid(const char *path, uint32_t *cid, char *err,
		   size_t errlen)
{
	struct vmdk_image *img;
	int rc = vmdk_open_desc(&img, path, O_RDONLY, err, errlen);

	if (rc)
		return rc;
	*cid = img->desc.cid;
	vmdk_image_close(img);
	return 0;
}

struct vmdk_extent *vmdk_image_extent(struct vmdk_image *img, uint64_t sec)
{
	unsigned lo = 0, hi = img->n_extents;

	while (hi - lo > 1) {
		unsigned mid = lo + (hi - lo) / 2;

		if (img->extents[mid].start <= sec)
			lo = mid;
		else
			hi = mid;
	}
	return &img->extents[lo];
}

int vmdk_image_parent(const struct vmdk_image *img, char **path)
{
	if (!img->desc.parent_hint[0])
		return 1;
	*path = td_path_resolve(img->path, img->desc.parent_hint);
	return *path ? 0 : -ENOMEM;
}

uint64_t vmdk_image_allocated(const struct vmdk_image *img)
{
	uint64_t n = 0, i;
	unsigned x;

	for (x = 0; x < img->n_extents; x++) {
		const struct vmdk_extent *e = &img->extents[x];

		if (e->type != VMDK_EXTENT_SPARSE)
			continue;
		for (i = 0; i < e->gd_entries * e->h.gtes; i++)
			n += vmdk_gte(e, i) > VMDK_GTE_ZERO;
	}
	return n;
}

/* ---- create ---------------------------------------------------------- */

/*
 * Header, descriptor, redundant GD and GTs, GD and GTs, then the file
 * grown to the first grain: every grain table is in place, so a write
 * only ever fills grain table entries.
 */
int vmdk_image_create(const char *path, uint64_t size, char *err,
		      size_t errlen)
{
	struct vmdk_header h = {
		.version = 1,
		.flags = VMDK_FLAG_NL_TEST | VMDK_FLAG_RGD,
		.capacity = size / VMDK_SECTOR,
		.grain_secs = VMDK_DEFAULT_GRAIN_SECS,
		.desc_offset = 1,
		.desc_size = VMDK_CREATE_DESC_SECS,
		.gtes = VMDK_DEFAULT_GTES,
	};
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	uint64_t n, gd_secs, gt_secs, i, j;
	size_t tables;
	uint8_t *buf = NULL;
	int fd, rc;

	if (size % VMDK_SECTOR || h.capacity > VMDK_MAX_CAPACITY)
		return td_errf(err, errlen, -EINVAL, "%s: size %" PRIu64 " is "
			       "not a multiple of 512 up to 64 TiB", path,
			       size);
	n = vmdk_header_gd_entries(&h);
	gd_secs = td_div_round_up(n * 4, VMDK_SECTOR);
	gt_secs = td_div_round_up((uint64_t)h.gtes * 4, VMDK_SECTOR);
	h.rgd_offset = h.desc_offset + h.desc_size;
	h.gd_offset = h.rgd_offset + gd_secs + n * gt_secs;
	h.overhead = td_round_up(h.gd_offset + gd_secs + n * gt_secs,
				 h.grain_secs);
	tables = (size_t)(h.overhead * VMDK_SECTOR);
	buf = td_zalloc_aligned(tables);
	if (!buf)
		return -ENOMEM;
	vmdk_header_encode(&h, buf);
	rc = vmdk_desc_format((char *)buf + h.desc_offset * VMDK_SECTOR,
			      h.desc_size * VMDK_SECTOR, h.capacity, base,
			      (uint32_t)time(NULL) ^ (uint32_t)getpid());
	if (rc < 0) {
		free(buf);
		return td_errf(err, errlen, rc, "%s: the descriptor does not "
			       "fit (name too long)", path);
	}
	for (j = 0; j < 2; j++) {
		uint64_t gd = j ? h.gd_offset : h.rgd_offset;

		for (i = 0; i < n; i++)
			td_put_le32(buf + gd * VMDK_SECTOR + i * 4,
				    (uint32_t)(gd + gd_secs + i * gt_secs));
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		free(buf);
		return td_errf(err, errlen, rc, "%s: %s", path, strerror(-rc));
	}
	rc = td_pwrite_full(fd, buf, tables, 0);
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	close(fd);
	free(buf);
	if (rc) {
		unlink(path);
		return td_errf(err, errlen, rc, "%s: %s", path, strerror(-rc));
	}
	return 0;
}

/* ---- check ----------------------------------------------------------- */

static int vmdk_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static void vmdk_check_extent(struct vmdk_extent *e, struct td_check *c)
{
	uint64_t n = e->gd_entries * e->h.gtes, i, used = 0;
	uint32_t *grains = malloc((n ? n : 1) * sizeof(*grains));
	uint8_t *rgt;
	size_t gt_bytes = (size_t)e->h.gtes * 4;

	if (!grains) {
		td_check_emit(c, TD_SEV_ERROR, false, "%s: out of memory",
			      e->path);
		return;
	}
	for (i = 0; i < n; i++) {
		uint32_t g = vmdk_gte(e, i);

		if (g <= VMDK_GTE_ZERO)
			continue;
		if (!e->compressed && g < e->h.overhead)
			td_check_emit(c, TD_SEV_ERROR, false, "%s: grain %"
				      PRIu64 " at sector %u lies in the "
				      "metadata (first grain at %" PRIu64 ")",
				      e->path, i, g, e->h.overhead);
		else if (!e->compressed &&
			 g + e->h.grain_secs > e->file_secs)
			td_check_emit(c, TD_SEV_ERROR, false, "%s: grain %"
				      PRIu64 " at sector %u ends past the end "
				      "of the file", e->path, i, g);
		grains[used++] = g;
	}
	qsort(grains, used, sizeof(*grains), vmdk_cmp_u32);
	for (i = 1; i < used; i++)
		if (grains[i] == grains[i - 1])
			td_check_emit(c, TD_SEV_ERROR, false, "%s: sector %u "
				      "holds two grains", e->path, grains[i]);
	free(grains);
	if (!e->rgd)
		return;
	rgt = td_zalloc_aligned(gt_bytes);
	for (i = 0; rgt && i < e->gd_entries; i++) {
		if (e->rgd[i] && !e->gd[i]) {
			/* A crash between the two directory writes. */
			td_check_emit(c, TD_SEV_LEAK, false, "%s: grain table "
				      "%" PRIu64 " is in the redundant grain "
				      "directory only (sector %u unused)",
				      e->path, i, e->rgd[i]);
			continue;
		}
		if (!e->rgd[i] != !e->gd[i]) {
			td_check_emit(c, TD_SEV_ERROR, false, "%s: grain table "
				      "%" PRIu64 " is in the primary grain "
				      "directory only", e->path, i);
			continue;
		}
		if (!e->rgd[i])
			continue;
		if (e->rgd[i] >= e->file_secs ||
		    td_pread_full(e->fd, rgt, gt_bytes,
				  (uint64_t)e->rgd[i] * VMDK_SECTOR)) {
			td_check_emit(c, TD_SEV_ERROR, false, "%s: redundant "
				      "grain table %" PRIu64 " cannot be read",
				      e->path, i);
			continue;
		}
		if (memcmp(rgt, e->gt + i * gt_bytes, gt_bytes))
			td_check_emit(c, TD_SEV_ERROR, false, "%s: redundant "
				      "grain table %" PRIu64 " differs from "
				      "the primary one", e->path, i);
	}
	free(rgt);
}

int vmdk_image_check(const char *path, struct td_check *c, char *err,
		     size_t errlen)
{
	struct vmdk_image *img;
	unsigned i;
	int rc;

	rc = vmdk_image_open(&img, path, 0, NULL, NULL, err, errlen);
	if (rc)
		return rc;
	for (i = 0; i < img->n_extents; i++) {
		struct vmdk_extent *e = &img->extents[i];

		if (e->type == VMDK_EXTENT_SPARSE) {
			if (e->h.unclean)
				td_check_emit(c, TD_SEV_WARNING, false, "%s: "
					      "marked as not shut down "
					      "cleanly", e->path);
			vmdk_check_extent(e, c);
		} else if (e->type == VMDK_EXTENT_FLAT &&
			   e->file_secs < e->offset + e->secs) {
			td_check_emit(c, TD_SEV_WARNING, false, "%s: flat "
				      "extent file shorter than the descriptor "
				      "says (%" PRIu64 " of %" PRIu64
				      " sectors)", e->path, e->file_secs,
				      e->offset + e->secs);
		}
	}
	vmdk_image_close(img);
	return 0;
}
