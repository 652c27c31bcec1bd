/* SPDX-License-Identifier: MIT */
/* qcow (version 1) images, synchronously (see qcow-image.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/td-fileio.h"
#include "common/td-util.h"
#include "qcow-image.h"

int qcow_probe(const char *path, bool *is_mine)
{
	uint8_t buf[8];
	size_t n;
	int rc = td_read_head(path, buf, sizeof(buf), &n);

	*is_mine = !rc && qcow_format_probe(buf, n);
	return rc;
}

void qcow_image_close(struct qcow_image *img)
{
	if (!img)
		return;
	if (img->fd >= 0)
		close(img->fd);
	free(img->l1);
	free(img->path);
	free(img);
}

/* Every L1 entry: 0, or an L2 table inside the file past the metadata. */
static int image_check_l1(struct qcow_image *img, char *err, size_t errlen)
{
	uint64_t i, l2;

	for (i = 0; i < img->g.l1_size; i++) {
		l2 = img->l1[i];
		if (!l2)
			continue;
		if (l2 < img->meta_end || l2 > img->file_size ||
		    img->g.l2_bytes > img->file_size - l2)
			return td_errf(err, errlen, -EINVAL, "%s: L1 entry %"
				       PRIu64 ": L2 table at %" PRIu64 " lies "
				       "outside the data area [%" PRIu64 ", %"
				       PRIu64 ")", img->path, i, l2,
				       img->meta_end, img->file_size);
	}
	return 0;
}

int qcow_image_open(struct qcow_image **out, const char *path, char *err,
		    size_t errlen)
{
	struct qcow_image *img = calloc(1, sizeof(*img));
	uint8_t hdr[QCOW_HEADER_SIZE];
	char why[512];
	struct stat st;
	uint64_t i;
	int rc;

	*out = NULL;
	if (!img || !(img->path = strdup(path))) {
		free(img);
		return td_errf(err, errlen, -ENOMEM, "%s: out of memory",
			       path);
	}
	img->fd = td_open_file(path, O_RDONLY | O_CLOEXEC);
	if (img->fd < 0) {
		rc = td_errf(err, errlen, -errno, "%s: %s", path,
			     strerror(errno));
		goto fail;
	}
	if (fstat(img->fd, &st) < 0) {
		rc = td_errf(err, errlen, -errno, "%s: %s", path,
			     strerror(errno));
		goto fail;
	}
	img->file_size = (uint64_t)st.st_size;
	if (img->file_size < QCOW_HEADER_SIZE) {
		rc = td_errf(err, errlen, -EINVAL, "%s: file of %" PRIu64
			     " bytes is shorter than a qcow header (%u)",
			     path, img->file_size, QCOW_HEADER_SIZE);
		goto fail;
	}
	rc = td_pread_full(img->fd, hdr, sizeof(hdr), 0);
	if (rc) {
		td_errf(err, errlen, rc, "%s: reading the header: %s", path,
			strerror(-rc));
		goto fail;
	}
	qcow_header_decode(hdr, &img->h);
	rc = qcow_header_check(&img->h, img->file_size, &img->g, why,
			       sizeof(why));
	if (rc) {
		td_errf(err, errlen, rc, "%s: %s", path, why);
		goto fail;
	}
	if (img->h.backing_file_size) {
		rc = td_pread_full(img->fd, img->backing,
				   img->h.backing_file_size,
				   img->h.backing_file_offset);
		if (rc) {
			td_errf(err, errlen, rc, "%s: reading the backing "
				"file name: %s", path, strerror(-rc));
			goto fail;
		}
		if (strlen(img->backing) != img->h.backing_file_size) {
			rc = td_errf(err, errlen, -EINVAL, "%s: backing file "
				     "name holds a NUL byte", path);
			goto fail;
		}
	}
	img->meta_end = img->h.l1_table_offset + img->g.l1_bytes;
	if (img->h.backing_file_size &&
	    img->h.backing_file_offset + img->h.backing_file_size >
	    img->meta_end)
		img->meta_end = img->h.backing_file_offset +
				img->h.backing_file_size;
	img->l1 = calloc(img->g.l1_size, sizeof(uint64_t));
	if (!img->l1) {
		rc = td_errf(err, errlen, -ENOMEM, "%s: out of memory for "
			     "%" PRIu64 " L1 entries", path, img->g.l1_size);
		goto fail;
	}
	rc = td_pread_full(img->fd, img->l1, img->g.l1_bytes,
			   img->h.l1_table_offset);
	if (rc) {
		td_errf(err, errlen, rc, "%s: reading the L1 table: %s", path,
			strerror(-rc));
		goto fail;
	}
	for (i = 0; i < img->g.l1_size; i++)
		img->l1[i] = td_get_be64((const uint8_t *)&img->l1[i]);
	rc = image_check_l1(img, err, errlen);
	if (rc)
		goto fail;
	*out = img;
	return 0;
fail:
	qcow_image_close(img);
	return rc;
}

int qcow_image_create(const char *path, uint64_t size, const char *backing,
		      char *err, size_t errlen)
{
	uint32_t blen = backing ? (uint32_t)strnlen(backing,
					QCOW_MAX_BACKING_NAME + 1) : 0;
	struct qcow_header h;
	struct qcow_geometry g;
	uint8_t hdr[QCOW_HEADER_SIZE];
	char why[256];
	int fd, rc;

	rc = qcow_format_create_header(size, blen, &h, &g, why, sizeof(why));
	if (rc)
		return td_errf(err, errlen, rc, "%s: %s", path, why);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return td_errf(err, errlen, -errno, "cannot create %s: %s",
			       path, strerror(errno));
	qcow_header_encode(&h, hdr);
	rc = td_pwrite_full(fd, hdr, sizeof(hdr), 0);
	if (!rc && blen)
		rc = td_pwrite_full(fd, backing, blen, QCOW_HEADER_SIZE);
	/* The L1 table reads as zeros: the file ends past it. */
	if (!rc && ftruncate(fd, (off_t)td_round_up(h.l1_table_offset +
						     g.l1_bytes, 512)) < 0)
		rc = -errno;
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	close(fd);
	if (rc) {
		unlink(path);
		return td_errf(err, errlen, rc, "cannot create %s: %s", path,
			       strerror(-rc));
	}
	return 0;
}

/* Check one L2 table's entries (the table read into t). */
static void check_l2(struct qcow_image *img, struct td_check *c,
		     uint64_t l1i, const uint8_t *t, uint64_t *allocated)
{
	struct qcow_mapping m;
	char why[256];
	uint32_t i;

	for (i = 0; i < img->g.l2_size; i++) {
		uint64_t e = td_get_be64(t + (size_t)i * 8);
		uint64_t gcl = (l1i << img->h.l2_bits) + i;
		uint64_t len;

		if (qcow_l2_decode(&img->g, img->h.cluster_bits, e, &m, why,
				   sizeof(why))) {
			td_check_emit(c, TD_SEV_ERROR, false, "guest cluster %"
				      PRIu64 ": %s", gcl, why);
			continue;
		}
		if (m.type == QCOW_CLUSTER_UNALLOCATED)
			continue;
		if (gcl << img->h.cluster_bits >= img->h.size) {
			td_check_emit(c, TD_SEV_WARNING, false, "guest cluster "
				      "%" PRIu64 " lies past the virtual size "
				      "but is allocated", gcl);
		}
		len = m.type == QCOW_CLUSTER_COMPRESSED ? m.csize :
		      img->g.cluster_size;
		if (m.host_offset < img->meta_end) {
			td_check_emit(c, TD_SEV_ERROR, false, "guest cluster %"
				      PRIu64 ": %s at %" PRIu64 " overlaps "
				      "the header or L1 table (which end at %"
				      PRIu64 ")", gcl,
				      m.type == QCOW_CLUSTER_COMPRESSED ?
				      "compressed data" : "cluster",
				      m.host_offset, img->meta_end);
			continue;
		}
		/* A last data cluster may end short: it reads zeros. */
		if (m.host_offset >= img->file_size ||
		    (m.type == QCOW_CLUSTER_COMPRESSED &&
		     len > img->file_size - m.host_offset)) {
			td_check_emit(c, TD_SEV_ERROR, false, "guest cluster %"
				      PRIu64 ": %s at %" PRIu64 " (%" PRIu64
				      " bytes) lies past the end of the file "
				      "(%" PRIu64 " bytes)", gcl,
				      m.type == QCOW_CLUSTER_COMPRESSED ?
				      "compressed data" : "cluster",
				      m.host_offset, len, img->file_size);
			continue;
		}
		*allocated += img->g.cluster_size;
	}
}

int qcow_image_check(const char *path, td_check_fn *fn, void *arg,
		     struct td_check_result *res, uint64_t *allocated,
		     char *err, size_t errlen)
{
	struct td_check c = { .fn = fn, .arg = arg, .res = res };
	struct qcow_image *img;
	uint8_t *t;
	uint64_t i;
	int rc;

	memset(res, 0, sizeof(*res));
	*allocated = 0;
	rc = qcow_image_open(&img, path, err, errlen);
	if (rc == -EINVAL) {
		/* A damaged header or L1 table: a problem of the image. */
		td_check_emit(&c, TD_SEV_ERROR, false, "%s", err);
		return 0;
	}
	if (rc)
		return rc;
	t = malloc(img->g.l2_bytes);
	if (!t) {
		qcow_image_close(img);
		return td_errf(err, errlen, -ENOMEM, "%s: out of memory",
			       path);
	}
	for (i = 0; i < img->g.l1_size; i++) {
		if (!img->l1[i])
			continue;
		rc = td_pread_full(img->fd, t, img->g.l2_bytes, img->l1[i]);
		if (rc) {
			td_check_emit(&c, TD_SEV_ERROR, false, "L1 entry %"
				      PRIu64 ": reading the L2 table at %"
				      PRIu64 ": %s", i, img->l1[i],
				      strerror(-rc));
			continue;
		}
		check_l2(img, &c, i, t, allocated);
	}
	free(t);
	qcow_image_close(img);
	return 0;
}
