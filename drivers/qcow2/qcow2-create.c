/* SPDX-License-Identifier: MIT */
/*
 * Creating an empty qcow2 image (qcow2_image_create, see qcow2-image.h):
 * header, refcount table, refcount blocks, L1 table, in one go.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tapfs/tapdisk.h>

#include "qcow2-int.h"
#include "common/td-fileio.h"

/* Header length this code writes for version 3 (QEMU's too). */
#define QCOW2_NEW_HEADER_LENGTH	112u

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
	if (p->size > QCOW2_MAX_SIZE || p->size % TD_SECTOR_SIZE)
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
	uint8_t *blk = td_zalloc_aligned(cs);
	uint8_t *tab = td_zalloc_aligned(rtc * cs);
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
		bpath = td_path_resolve(path, q.backing);
		if (!bpath)
			return td_errf(err, errlen, -ENOMEM, "out of memory");
		ret = td_image_size(drv, bpath, &q.size, err, errlen);
		free(bpath);
		if (ret)
			return ret;
		q.size = td_round_up(q.size, TD_SECTOR_SIZE);
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
	buf = td_zalloc_aligned(cs > TD_BUF_ALIGN ? cs : TD_BUF_ALIGN);
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
