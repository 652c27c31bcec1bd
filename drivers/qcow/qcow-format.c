/* SPDX-License-Identifier: MIT */
/* qcow (version 1) on-disk format: pure (see qcow-format.h). */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "common/td-fileio.h"
#include "common/td-util.h"
#include "qcow-format.h"

bool qcow_format_probe(const uint8_t *buf, size_t len)
{
	return len >= 8 && td_get_be32(buf) == QCOW_MAGIC &&
	       td_get_be32(buf + 4) == QCOW_VERSION;
}

void qcow_header_decode(const uint8_t *buf, struct qcow_header *h)
{
	h->magic = td_get_be32(buf);
	h->version = td_get_be32(buf + 4);
	h->backing_file_offset = td_get_be64(buf + 8);
	h->backing_file_size = td_get_be32(buf + 16);
	h->mtime = td_get_be32(buf + 20);
	h->size = td_get_be64(buf + 24);
	h->cluster_bits = buf[32];
	h->l2_bits = buf[33];
	h->crypt_method = td_get_be32(buf + 36);
	h->l1_table_offset = td_get_be64(buf + 40);
}

void qcow_header_encode(const struct qcow_header *h, uint8_t *buf)
{
	memset(buf, 0, QCOW_HEADER_SIZE);
	td_put_be32(buf, h->magic);
	td_put_be32(buf + 4, h->version);
	td_put_be64(buf + 8, h->backing_file_offset);
	td_put_be32(buf + 16, h->backing_file_size);
	td_put_be32(buf + 20, h->mtime);
	td_put_be64(buf + 24, h->size);
	buf[32] = h->cluster_bits;
	buf[33] = h->l2_bits;
	td_put_be32(buf + 36, h->crypt_method);
	td_put_be64(buf + 40, h->l1_table_offset);
}

/* [off, off + len) inside a file of file_size bytes, without overflow. */
static bool inside(uint64_t off, uint64_t len, uint64_t file_size)
{
	return off <= file_size && len <= file_size - off;
}

int qcow_header_check(const struct qcow_header *h, uint64_t file_size,
		      struct qcow_geometry *g, char *err, size_t errlen)
{
	uint32_t shift;

	if (h->magic != QCOW_MAGIC)
		return td_errf(err, errlen, -EINVAL, "bad magic 0x%08x "
			       "(expected 0x%08x, \"QFI\\xfb\")", h->magic,
			       QCOW_MAGIC);
	if (h->version != QCOW_VERSION)
		return td_errf(err, errlen, -EINVAL, "version %u is not a "
			       "qcow version 1 image", h->version);
	if (h->crypt_method == QCOW_CRYPT_AES)
		return td_errf(err, errlen, -EOPNOTSUPP, "AES-encrypted "
			       "qcow images are not supported");
	if (h->crypt_method != QCOW_CRYPT_NONE)
		return td_errf(err, errlen, -EINVAL, "crypt_method %u is "
			       "unknown", h->crypt_method);
	if (h->cluster_bits < QCOW_MIN_CLUSTER_BITS ||
	    h->cluster_bits > QCOW_MAX_CLUSTER_BITS)
		return td_errf(err, errlen, -EINVAL, "cluster_bits %u is out "
			       "of range (%u to %u: 512 B to 64 KiB)",
			       h->cluster_bits, QCOW_MIN_CLUSTER_BITS,
			       QCOW_MAX_CLUSTER_BITS);
	if (h->l2_bits < QCOW_MIN_L2_BITS || h->l2_bits > QCOW_MAX_L2_BITS)
		return td_errf(err, errlen, -EINVAL, "l2_bits %u is out of "
			       "range (%u to %u)", h->l2_bits,
			       QCOW_MIN_L2_BITS, QCOW_MAX_L2_BITS);
	if (h->size < 512)
		return td_errf(err, errlen, -EINVAL, "size %" PRIu64 " is "
			       "less than one sector", h->size);
	shift = (uint32_t)h->cluster_bits + h->l2_bits;
	g->l1_size = (h->size >> shift) + !!(h->size & ((1ull << shift) - 1));
	if (g->l1_size > QCOW_MAX_L1_SIZE)
		return td_errf(err, errlen, -EINVAL, "size %" PRIu64 " needs "
			       "%" PRIu64 " L1 entries (at most %u)", h->size,
			       g->l1_size, QCOW_MAX_L1_SIZE);
	g->cluster_size = 1u << h->cluster_bits;
	g->l2_size = 1u << h->l2_bits;
	g->l2_bytes = g->l2_size * 8u;
	g->l1_bytes = g->l1_size * 8u;
	g->offset_mask = (1ull << (63 - h->cluster_bits)) - 1;
	if (h->l1_table_offset < QCOW_HEADER_SIZE)
		return td_errf(err, errlen, -EINVAL, "L1 table offset %"
			       PRIu64 " lies inside the header",
			       h->l1_table_offset);
	if (!inside(h->l1_table_offset, g->l1_bytes, file_size))
		return td_errf(err, errlen, -EINVAL, "L1 table (%" PRIu64
			       " bytes at %" PRIu64 ") ends past the end of "
			       "the file (%" PRIu64 " bytes)", g->l1_bytes,
			       h->l1_table_offset, file_size);
	if (h->backing_file_offset || h->backing_file_size) {
		if (h->backing_file_size > QCOW_MAX_BACKING_NAME)
			return td_errf(err, errlen, -EINVAL, "backing file "
				       "name of %u bytes is too long (at "
				       "most %u)", h->backing_file_size,
				       QCOW_MAX_BACKING_NAME);
		if (h->backing_file_offset < QCOW_HEADER_SIZE ||
		    !inside(h->backing_file_offset, h->backing_file_size,
			    file_size))
			return td_errf(err, errlen, -EINVAL, "backing file "
				       "name (%u bytes at %" PRIu64 ") lies "
				       "outside the file (%" PRIu64 " bytes)",
				       h->backing_file_size,
				       h->backing_file_offset, file_size);
	}
	return 0;
}

int qcow_l2_decode(const struct qcow_geometry *g, uint8_t cluster_bits,
		   uint64_t entry, struct qcow_mapping *m, char *err,
		   size_t errlen)
{
	memset(m, 0, sizeof(*m));
	if (!entry) {
		m->type = QCOW_CLUSTER_UNALLOCATED;
		return 0;
	}
	if (!(entry & QCOW_OFLAG_COMPRESSED)) {
		m->type = QCOW_CLUSTER_NORMAL;
		m->host_offset = entry;
		return 0;
	}
	m->type = QCOW_CLUSTER_COMPRESSED;
	m->host_offset = entry & g->offset_mask;
	m->csize = (uint32_t)((entry >> (63 - cluster_bits)) &
			      (g->cluster_size - 1));
	if (!m->csize)
		return td_errf(err, errlen, -EINVAL, "compressed cluster at %"
			       PRIu64 " has length 0 (entry 0x%016" PRIx64 ")",
			       m->host_offset, entry);
	return 0;
}

int qcow_format_create_header(uint64_t size, uint32_t backing_len,
			      struct qcow_header *h,
			      struct qcow_geometry *g, char *err,
			      size_t errlen)
{
	uint64_t hdr = QCOW_HEADER_SIZE + backing_len;

	memset(h, 0, sizeof(*h));
	if (backing_len > QCOW_MAX_BACKING_NAME)
		return td_errf(err, errlen, -EINVAL, "backing file name of %u "
			       "bytes is too long (at most %u)", backing_len,
			       QCOW_MAX_BACKING_NAME);
	h->magic = QCOW_MAGIC;
	h->version = QCOW_VERSION;
	if (backing_len) {
		h->backing_file_offset = QCOW_HEADER_SIZE;
		h->backing_file_size = backing_len;
	}
	h->size = size;
	h->cluster_bits = QCOW_DEFAULT_CLUSTER_BITS;
	h->l2_bits = QCOW_DEFAULT_L2_BITS;
	h->l1_table_offset = td_round_up(hdr, 8);
	/* The L1 table is written as whole sectors, as QEMU does. */
	return qcow_header_check(h, UINT64_MAX, g, err, errlen);
}
