/* SPDX-License-Identifier: MIT */
/*
 * qcow2 on-disk format: decode, encode and validate the header, header
 * extensions, L1/L2/refcount table entries, refcount blocks of any width,
 * and compressed cluster descriptors.  Pure (see qcow2-format.h);
 * compressed data is inflated by common/td-zlib.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-format.h"

/* ---- feature names --------------------------------------------------- */

static const struct {
	uint8_t		 type;
	uint8_t		 bit;
	const char	*name;
} known_features[] = {
	{ QCOW2_FEAT_INCOMPAT, 0, "dirty bit" },
	{ QCOW2_FEAT_INCOMPAT, 1, "corrupt bit" },
	{ QCOW2_FEAT_INCOMPAT, 2, "external data file" },
	{ QCOW2_FEAT_INCOMPAT, 3, "compression type" },
	{ QCOW2_FEAT_INCOMPAT, 4, "extended L2 entries" },
	{ QCOW2_FEAT_COMPAT, 0, "lazy refcounts" },
	{ QCOW2_FEAT_AUTOCLEAR, 0, "bitmaps" },
	{ QCOW2_FEAT_AUTOCLEAR, 1, "raw external data" },
};

#define N_KNOWN_FEATURES (sizeof(known_features) / sizeof(known_features[0]))

const char *qcow2_feature_name(const struct qcow2_extensions *ext,
			       enum qcow2_feature_type type, unsigned bit,
			       char *buf, size_t len)
{
	unsigned i;

	if (ext) {
		for (i = 0; i < ext->nfeatures; i++) {
			if (ext->features[i].type == type &&
			    ext->features[i].bit == bit &&
			    ext->features[i].name[0]) {
				snprintf(buf, len, "%s",
					 ext->features[i].name);
				return buf;
			}
		}
	}
	for (i = 0; i < N_KNOWN_FEATURES; i++) {
		if (known_features[i].type == type &&
		    known_features[i].bit == bit) {
			snprintf(buf, len, "%s", known_features[i].name);
			return buf;
		}
	}
	snprintf(buf, len, "bit %u", bit);
	return buf;
}

/* ---- header ------------------------------------------------------------ */

static void header_decode(const uint8_t *buf, size_t len,
			  struct qcow2_header *h)
{
	memset(h, 0, sizeof(*h));
	h->version = td_get_be32(buf + QH_VERSION);
	h->backing_file_offset = td_get_be64(buf + QH_BACKING_OFFSET);
	h->backing_file_size = td_get_be32(buf + QH_BACKING_SIZE);
	h->cluster_bits = td_get_be32(buf + QH_CLUSTER_BITS);
	h->size = td_get_be64(buf + QH_SIZE);
	h->crypt_method = td_get_be32(buf + QH_CRYPT);
	h->l1_size = td_get_be32(buf + QH_L1_SIZE);
	h->l1_table_offset = td_get_be64(buf + QH_L1_OFFSET);
	h->refcount_table_offset = td_get_be64(buf + QH_REFT_OFFSET);
	h->refcount_table_clusters = td_get_be32(buf + QH_REFT_CLUSTERS);
	h->nb_snapshots = td_get_be32(buf + QH_NB_SNAPSHOTS);
	h->snapshots_offset = td_get_be64(buf + QH_SNAPSHOTS_OFFSET);
	h->refcount_order = QCOW2_DEFAULT_REFCOUNT_ORDER;
	h->header_length = QCOW2_V2_HEADER_SIZE;
	if (h->version < 3 || len < QCOW2_V3_HEADER_SIZE)
		return;
	h->incompatible_features = td_get_be64(buf + QH_INCOMPAT);
	h->compatible_features = td_get_be64(buf + QH_COMPAT);
	h->autoclear_features = td_get_be64(buf + QH_AUTOCLEAR);
	h->refcount_order = td_get_be32(buf + QH_REFCOUNT_ORDER);
	h->header_length = td_get_be32(buf + QH_HEADER_LENGTH);
	if (h->header_length > QH_COMPRESSION_TYPE &&
	    len > QH_COMPRESSION_TYPE)
		h->compression_type = buf[QH_COMPRESSION_TYPE];
}

/* A table of bytes at off: aligned, not over the header, in the file. */
static int check_table(const char *what, uint64_t off, uint64_t bytes,
		       uint32_t cluster_size, uint64_t file_size,
		       struct td_report *r)
{
	if (off & (cluster_size - 1))
		return td_report(r, -EINVAL, "%s offset %" PRIu64 " is not "
				 "aligned to the cluster size %u", what,
				 off, cluster_size);
	if (!bytes)
		return 0;
	if (off == 0)
		return td_report(r, -EINVAL, "%s at offset 0 overlaps the "
				 "header", what);
	if (off >= QCOW2_MAX_HOST_OFFSET || bytes > QCOW2_MAX_HOST_OFFSET ||
	    off + bytes > QCOW2_MAX_HOST_OFFSET)
		return td_report(r, -EINVAL, "%s offset %" PRIu64 " and "
				 "size %" PRIu64 " are too large", what,
				 off, bytes);
	if (file_size && off + bytes > file_size)
		return td_report(r, -EINVAL, "%s at %" PRIu64 " (%" PRIu64
				 " bytes) passes the end of the file "
				 "(%" PRIu64 " bytes)", what, off, bytes,
				 file_size);
	return 0;
}

/* Do two byte ranges (both checked by check_table) share a cluster? */
static bool tables_overlap(uint64_t a, uint64_t alen, uint64_t b,
			   uint64_t blen, uint32_t cluster_size)
{
	if (!alen || !blen)
		return false;
	return a / cluster_size <= (b + blen - 1) / cluster_size &&
	       b / cluster_size <= (a + alen - 1) / cluster_size;
}

/* The L1 table, the refcount table and the snapshot table's start apart. */
static int check_placement(const struct qcow2_header *h, uint32_t cs,
			   bool l1_ok, bool rt_ok, bool snap_ok,
			   struct td_report *r)
{
	uint64_t l1 = (uint64_t)h->l1_size * 8;
	uint64_t rt = (uint64_t)h->refcount_table_clusters * cs;
	int ret = 0;

	if (l1_ok && rt_ok && tables_overlap(h->l1_table_offset, l1,
					     h->refcount_table_offset, rt, cs))
		ret = td_report(r, -EINVAL, "L1 table at %" PRIu64 " (%"
				PRIu64 " bytes) overlaps the refcount table "
				"at %" PRIu64 " (%" PRIu64 " bytes)",
				h->l1_table_offset, l1,
				h->refcount_table_offset, rt);
	if (!snap_ok || !h->nb_snapshots)
		return ret;
	if (l1_ok && tables_overlap(h->snapshots_offset, 1,
				    h->l1_table_offset, l1, cs))
		ret = td_first_err(ret, td_report(r, -EINVAL, "snapshot table "
			"at %" PRIu64 " overlaps the L1 table at %" PRIu64,
			h->snapshots_offset, h->l1_table_offset));
	if (rt_ok && tables_overlap(h->snapshots_offset, 1,
				    h->refcount_table_offset, rt, cs))
		ret = td_first_err(ret, td_report(r, -EINVAL, "snapshot table "
			"at %" PRIu64 " overlaps the refcount table at %" PRIu64,
			h->snapshots_offset, h->refcount_table_offset));
	return ret;
}

static int check_incompat(const struct qcow2_header *h,
			  const struct qcow2_extensions *ext,
			  struct td_report *r)
{
	uint64_t unknown = h->incompatible_features & ~QCOW2_INCOMPAT_KNOWN;
	char name[64];
	int ret = 0;
	unsigned bit;

	for (bit = 0; bit < 64; bit++) {
		if (!(unknown & (1ull << bit)))
			continue;
		ret = td_first_err(ret, td_report(r, -ENOTSUP,
			"unsupported incompatible feature: %s (bit %u)",
			qcow2_feature_name(ext, QCOW2_FEAT_INCOMPAT, bit, name,
					   sizeof(name)), bit));
	}
	if (h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) {
		if (h->compression_type == QCOW2_COMPRESS_ZLIB)
			ret = td_first_err(ret, td_report(r, -EINVAL,
				"compression type bit set but "
				"compression_type is 0 (zlib)"));
		else if (h->compression_type == QCOW2_COMPRESS_ZSTD)
			ret = td_first_err(ret, td_report(r, -ENOTSUP,
				"unsupported compression type: zstd "
				"(compression_type 1)"));
		else
			ret = td_first_err(ret, td_report(r, -ENOTSUP,
				"unsupported compression type %u",
				h->compression_type));
	} else if (h->compression_type != QCOW2_COMPRESS_ZLIB) {
		ret = td_first_err(ret, td_report(r, -EINVAL,
			"compression_type %u without the compression type "
			"bit", h->compression_type));
	}
	if ((h->incompatible_features & QCOW2_INCOMPAT_EXTL2) &&
	    h->cluster_bits < 14)
		ret = td_first_err(ret, td_report(r, -EINVAL,
			"extended L2 entries need clusters of 16 KiB or more "
			"(cluster_bits %u)", h->cluster_bits));
	return ret;
}

int qcow2_header_parse(const uint8_t *buf, size_t len, uint64_t file_size,
		       struct qcow2_header *h, struct qcow2_extensions *ext,
		       struct td_report *r)
{
	struct qcow2_extensions local;
	struct qcow2_geometry g;
	bool l1_ok = false, rt_ok = false, snap_ok = false;
	uint32_t cs;
	uint64_t need;
	int ret = 0, rc;

	memset(h, 0, sizeof(*h));
	if (len < QCOW2_V2_HEADER_SIZE)
		return td_report(r, -EINVAL, "header truncated: %zu bytes, "
				 "need %u", len, QCOW2_V2_HEADER_SIZE);
	if (td_get_be32(buf) != QCOW2_MAGIC)
		return td_report(r, -EINVAL, "bad magic 0x%08x (not a "
				 "qcow2 image)", td_get_be32(buf));
	header_decode(buf, len, h);
	if (h->version == 1)
		return td_report(r, -ENOTSUP, "version 1 (qcow, not "
				 "qcow2) is not supported");
	if (h->version != 2 && h->version != 3)
		return td_report(r, -ENOTSUP, "unsupported version %u",
				 h->version);
	if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
	    h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return td_report(r, -EINVAL, "cluster_bits %u is not in "
				 "%u..%u", h->cluster_bits,
				 QCOW2_MIN_CLUSTER_BITS,
				 QCOW2_MAX_CLUSTER_BITS);
	cs = 1u << h->cluster_bits;
	if (h->version == 3) {
		if (len < QCOW2_V3_HEADER_SIZE)
			return td_report(r, -EINVAL, "version 3 header "
					 "truncated: %zu bytes", len);
		if (h->header_length < QCOW2_V3_HEADER_SIZE ||
		    h->header_length % 8 || h->header_length > cs)
			return td_report(r, -EINVAL, "header_length %u is "
					 "not a multiple of 8 in %u..%u",
					 h->header_length,
					 QCOW2_V3_HEADER_SIZE, cs);
		if (h->refcount_order > QCOW2_MAX_REFCOUNT_ORDER)
			return td_report(r, -EINVAL, "refcount_order %u is "
					 "larger than %u", h->refcount_order,
					 QCOW2_MAX_REFCOUNT_ORDER);
	}
	if (!ext)
		ext = &local;
	ret = qcow2_extensions_parse(buf, len < cs ? len : cs, h, ext, r);
	if (h->version == 3)
		ret = td_first_err(ret, check_incompat(h, ext, r));
	if (h->crypt_method == QCOW2_CRYPT_AES ||
	    h->crypt_method == QCOW2_CRYPT_LUKS)
		ret = td_first_err(ret, td_report(r, -ENOTSUP,
			"encrypted image (%s, crypt_method %u): encryption "
			"is not supported", h->crypt_method ==
			QCOW2_CRYPT_AES ? "AES" : "LUKS", h->crypt_method));
	else if (h->crypt_method != QCOW2_CRYPT_NONE)
		ret = td_first_err(ret, td_report(r, -EINVAL,
			"unknown crypt_method %u", h->crypt_method));
	if (h->size > QCOW2_MAX_SIZE)
		return td_first_err(ret, td_report(r, -EINVAL, "virtual size "
				 "%" PRIu64 " is larger than 2^61",
				 h->size));
	qcow2_geometry_init(&g, h);
	need = qcow2_l1_entries(&g, h->size);
	if (h->l1_size < need)
		ret = td_first_err(ret, td_report(r, -EINVAL, "l1_size %u is "
			"too small for the virtual size %" PRIu64 " (need %"
			PRIu64 ")", h->l1_size, h->size, need));
	if ((uint64_t)h->l1_size * 8 > QCOW2_MAX_L1_BYTES)
		ret = td_first_err(ret, td_report(r, -EINVAL, "l1_size %u is "
			"larger than %u entries", h->l1_size,
			QCOW2_MAX_L1_BYTES / 8));
	else {
		rc = check_table("L1 table", h->l1_table_offset,
				 (uint64_t)h->l1_size * 8, cs, file_size, r);
		l1_ok = rc == 0;
		ret = td_first_err(ret, rc);
	}
	if ((uint64_t)h->refcount_table_clusters * cs >
	    QCOW2_MAX_REFTABLE_BYTES)
		ret = td_first_err(ret, td_report(r, -EINVAL,
			"refcount_table_clusters %u is larger than %u bytes",
			h->refcount_table_clusters,
			QCOW2_MAX_REFTABLE_BYTES));
	else {
		rc = check_table("refcount table", h->refcount_table_offset,
				 (uint64_t)h->refcount_table_clusters * cs, cs,
				 file_size, r);
		rt_ok = rc == 0;
		ret = td_first_err(ret, rc);
	}
	if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
		ret = td_first_err(ret, td_report(r, -EINVAL, "nb_snapshots "
			"%u is larger than %u", h->nb_snapshots,
			QCOW2_MAX_SNAPSHOTS));
	else if (h->nb_snapshots) {
		rc = check_table("snapshot table", h->snapshots_offset, 1, cs,
				 file_size, r);
		snap_ok = rc == 0;
		ret = td_first_err(ret, rc);
	}
	ret = td_first_err(ret, check_placement(h, cs, l1_ok, rt_ok, snap_ok,
						 r));
	if (h->backing_file_offset) {
		if (h->backing_file_size > QCOW2_MAX_BACKING_NAME ||
		    h->backing_file_size == 0)
			ret = td_first_err(ret, td_report(r, -EINVAL,
				"backing_file_size %u is not in 1..%u",
				h->backing_file_size,
				QCOW2_MAX_BACKING_NAME));
		else if (h->backing_file_offset < h->header_length ||
			 h->backing_file_offset > cs ||
			 h->backing_file_offset + h->backing_file_size > cs)
			ret = td_first_err(ret, td_report(r, -EINVAL,
				"backing file name at %" PRIu64 " (%u bytes) "
				"is not inside the first cluster, after the "
				"header", h->backing_file_offset,
				h->backing_file_size));
	}
	return ret;
}

void qcow2_header_encode(const struct qcow2_header *h, uint8_t *buf)
{
	size_t len = h->version >= 3 ? h->header_length : QCOW2_V2_HEADER_SIZE;

	memset(buf, 0, len);
	td_put_be32(buf + QH_MAGIC, QCOW2_MAGIC);
	td_put_be32(buf + QH_VERSION, h->version);
	td_put_be64(buf + QH_BACKING_OFFSET, h->backing_file_offset);
	td_put_be32(buf + QH_BACKING_SIZE, h->backing_file_size);
	td_put_be32(buf + QH_CLUSTER_BITS, h->cluster_bits);
	td_put_be64(buf + QH_SIZE, h->size);
	td_put_be32(buf + QH_CRYPT, h->crypt_method);
	td_put_be32(buf + QH_L1_SIZE, h->l1_size);
	td_put_be64(buf + QH_L1_OFFSET, h->l1_table_offset);
	td_put_be64(buf + QH_REFT_OFFSET, h->refcount_table_offset);
	td_put_be32(buf + QH_REFT_CLUSTERS, h->refcount_table_clusters);
	td_put_be32(buf + QH_NB_SNAPSHOTS, h->nb_snapshots);
	td_put_be64(buf + QH_SNAPSHOTS_OFFSET, h->snapshots_offset);
	if (h->version < 3)
		return;
	td_put_be64(buf + QH_INCOMPAT, h->incompatible_features);
	td_put_be64(buf + QH_COMPAT, h->compatible_features);
	td_put_be64(buf + QH_AUTOCLEAR, h->autoclear_features);
	td_put_be32(buf + QH_REFCOUNT_ORDER, h->refcount_order);
	td_put_be32(buf + QH_HEADER_LENGTH, h->header_length);
	if (h->header_length > QH_COMPRESSION_TYPE)
		buf[QH_COMPRESSION_TYPE] = h->compression_type;
}

void qcow2_geometry_init(struct qcow2_geometry *g,
			 const struct qcow2_header *h)
{
	memset(g, 0, sizeof(*g));
	g->cluster_bits = h->cluster_bits;
	g->cluster_size = 1u << h->cluster_bits;
	g->extended_l2 = h->version >= 3 &&
			 (h->incompatible_features & QCOW2_INCOMPAT_EXTL2);
	g->l2_entry_size = g->extended_l2 ? 16 : 8;
	g->l2_bits = h->cluster_bits - (g->extended_l2 ? 4 : 3);
	g->refcount_order = h->refcount_order;
	g->rb_bits = h->cluster_bits + 3 - h->refcount_order;
	g->csize_shift = 62 - (h->cluster_bits - 8);
	g->csize_mask = (1ull << (h->cluster_bits - 8)) - 1;
	g->coffset_mask = (1ull << g->csize_shift) - 1;
}

uint64_t qcow2_l1_entries(const struct qcow2_geometry *g, uint64_t size)
{
	uint32_t shift = g->cluster_bits + g->l2_bits;

	return (size >> shift) + ((size & ((1ull << shift) - 1)) != 0);
}

/* ---- header extensions ------------------------------------------------- */

static int ext_string(const uint8_t *data, uint32_t len, char *out,
		      size_t outlen, const char *what,
		      struct td_report *r)
{
	uint32_t i;

	if (len == 0 || len >= outlen)
		return td_report(r, -EINVAL, "%s extension: length %u is "
				 "not in 1..%zu", what, len, outlen - 1);
	for (i = 0; i < len; i++)
		if (data[i] == '\0')
			return td_report(r, -EINVAL, "%s extension: NUL "
					 "at byte %u", what, i);
	memcpy(out, data, len);
	out[len] = '\0';
	return 0;
}

static void ext_features(const uint8_t *data, uint32_t len,
			 struct qcow2_extensions *ext)
{
	uint32_t i, n = len / QCOW2_FEATURE_ENTRY_SIZE;

	for (i = 0; i < n && ext->nfeatures < QCOW2_MAX_FEATURE_NAMES; i++) {
		const uint8_t *e = data + i * QCOW2_FEATURE_ENTRY_SIZE;
		struct qcow2_feature_name *f =
			&ext->features[ext->nfeatures++];
		size_t k;

		f->type = e[0];
		f->bit = e[1];
		memcpy(f->name, e + 2, QCOW2_FEATURE_NAME_SIZE);
		f->name[QCOW2_FEATURE_NAME_SIZE] = '\0';
		for (k = 0; f->name[k]; k++)
			if (!isprint((unsigned char)f->name[k]))
				f->name[k] = '?';
	}
}

int qcow2_extensions_parse(const uint8_t *buf, size_t len,
			   const struct qcow2_header *h,
			   struct qcow2_extensions *ext,
			   struct td_report *r)
{
	uint64_t off = h->version >= 3 ? h->header_length :
		       QCOW2_V2_HEADER_SIZE;
	uint64_t limit = len;
	uint32_t seen_fmt = 0, seen_feat = 0, seen_data = 0;
	int ret = 0, rc;

	memset(ext, 0, sizeof(*ext));
	if (h->backing_file_offset && h->backing_file_offset < limit)
		limit = h->backing_file_offset;
	while (off + 8 <= limit) {
		uint32_t type = td_get_be32(buf + off);
		uint32_t elen = td_get_be32(buf + off + 4);
		const uint8_t *data = buf + off + 8;

		if (type == QCOW2_EXT_END)
			break;
		if ((uint64_t)elen > limit - off - 8)
			return td_report(r, -EINVAL, "header extension "
					 "0x%08x at %" PRIu64 ": length %u "
					 "passes the end of the header area "
					 "(%" PRIu64 ")", type, off, elen,
					 limit);
		switch (type) {
		case QCOW2_EXT_BACKING_FMT:
			if (seen_fmt++)
				return td_report(r, -EINVAL, "backing "
						 "format extension twice");
			rc = ext_string(data, elen, ext->backing_format,
					sizeof(ext->backing_format),
					"backing format", r);
			ext->has_backing_format = rc == 0;
			ret = td_first_err(ret, rc);
			break;
		case QCOW2_EXT_FEATURES:
			if (seen_feat++)
				return td_report(r, -EINVAL, "feature name "
						 "table twice");
			ext_features(data, elen, ext);
			break;
		case QCOW2_EXT_DATA_FILE:
			if (seen_data++)
				return td_report(r, -EINVAL, "external data "
						 "file extension twice");
			rc = ext_string(data, elen, ext->data_file,
					sizeof(ext->data_file),
					"external data file", r);
			ext->has_data_file = rc == 0;
			ret = td_first_err(ret, rc);
			break;
		case QCOW2_EXT_BITMAPS:
			ext->has_bitmaps = true;
			break;
		case QCOW2_EXT_CRYPTO:
			ext->has_crypto = true;
			break;
		default:
			break;		/* unknown: safe to ignore */
		}
		off += 8 + td_round_up(elen, 8);
	}
	ext->end = (uint32_t)(off < limit ? off : limit);
	return ret;
}

static size_t ext_put(uint8_t *buf, size_t len, size_t off, uint32_t type,
		      const void *data, uint32_t dlen)
{
	size_t need = 8 + td_round_up(dlen, 8);

	if (off + need > len)
		return 0;
	memset(buf + off, 0, need);
	td_put_be32(buf + off, type);
	td_put_be32(buf + off + 4, dlen);
	if (dlen)
		memcpy(buf + off + 8, data, dlen);
	return off + need;
}

size_t qcow2_extensions_encode(uint8_t *buf, size_t len, size_t off,
			       const char *backing_fmt, bool features)
{
	uint8_t table[N_KNOWN_FEATURES * QCOW2_FEATURE_ENTRY_SIZE];
	size_t i;

	if (backing_fmt) {
		off = ext_put(buf, len, off, QCOW2_EXT_BACKING_FMT,
			      backing_fmt, (uint32_t)strlen(backing_fmt));
		if (!off)
			return 0;
	}
	if (!features)
		return ext_put(buf, len, off, QCOW2_EXT_END, NULL, 0);
	memset(table, 0, sizeof(table));
	for (i = 0; i < N_KNOWN_FEATURES; i++) {
		uint8_t *e = table + i * QCOW2_FEATURE_ENTRY_SIZE;

		e[0] = known_features[i].type;
		e[1] = known_features[i].bit;
		memcpy(e + 2, known_features[i].name,
		       strlen(known_features[i].name));
	}
	off = ext_put(buf, len, off, QCOW2_EXT_FEATURES, table,
		      (uint32_t)sizeof(table));
	if (!off)
		return 0;
	return ext_put(buf, len, off, QCOW2_EXT_END, NULL, 0);
}

int qcow2_backing_name(const uint8_t *buf, size_t len,
		       const struct qcow2_header *h, char *out,
		       size_t outlen, struct td_report *r)
{
	uint32_t i, n = h->backing_file_size;

	out[0] = '\0';
	if (!h->backing_file_offset)
		return 0;
	if (h->backing_file_offset > len || n > len - h->backing_file_offset)
		return td_report(r, -EINVAL, "backing file name at %"
				 PRIu64 " (%u bytes) is outside the first "
				 "cluster", h->backing_file_offset, n);
	if (n == 0 || n >= outlen)
		return td_report(r, -EINVAL, "backing_file_size %u is not "
				 "in 1..%zu", n, outlen - 1);
	for (i = 0; i < n; i++)
		if (buf[h->backing_file_offset + i] == '\0')
			return td_report(r, -EINVAL, "backing file name "
					 "has a NUL at byte %u", i);
	memcpy(out, buf + h->backing_file_offset, n);
	out[n] = '\0';
	return 0;
}

int qcow2_header_check_writable(const struct qcow2_header *h,
				const struct qcow2_extensions *ext,
				struct td_report *r)
{
	uint64_t f = h->incompatible_features;

	(void)ext;
	if (f & QCOW2_INCOMPAT_CORRUPT)
		return td_report(r, -EROFS, "the image is marked corrupt "
				 "(corrupt bit): read-only until "
				 "'qemu-img check -r all' repairs it");
	if (f & QCOW2_INCOMPAT_DATA_FILE)
		return td_report(r, -ENOTSUP, "external data file: "
				 "writing is not supported (open it "
				 "read-only)");
	if (f & QCOW2_INCOMPAT_EXTL2)
		return td_report(r, -ENOTSUP, "extended L2 entries: "
				 "writing is not supported (open it "
				 "read-only)");
	if (f & QCOW2_INCOMPAT_COMPRESSION)
		return td_report(r, -ENOTSUP, "compression type %u: "
				 "writing is not supported",
				 h->compression_type);
	if (f & ~QCOW2_INCOMPAT_KNOWN)
		return td_report(r, -ENOTSUP, "unknown incompatible "
				 "features 0x%" PRIx64, f &
				 ~QCOW2_INCOMPAT_KNOWN);
	if (h->nb_snapshots)
		return td_report(r, -ENOTSUP, "internal snapshots (%u): "
				 "writing is not supported (open it "
				 "read-only, or 'qemu-img snapshot -d')",
				 h->nb_snapshots);
	return 0;
}

/* ---- table entries ---------------------------------------------------- */

int qcow2_l2_decode(const struct qcow2_geometry *g, uint32_t version,
		    uint64_t entry, struct qcow2_mapping *m,
		    struct td_report *r)
{
	memset(m, 0, sizeof(*m));
	if (entry & QCOW2_OFLAG_COMPRESSED) {
		uint64_t nsec = ((entry >> g->csize_shift) & g->csize_mask) +
				1;

		if (entry & QCOW2_OFLAG_COPIED)
			return td_report(r, -EINVAL, "L2 entry 0x%016"
					 PRIx64 ": compressed with the "
					 "copied flag", entry);
		m->type = QCOW2_CLUSTER_COMPRESSED;
		m->host_offset = entry & g->coffset_mask;
		m->csize = (uint32_t)(nsec * QCOW2_COMPRESSED_SECTOR -
				      (m->host_offset &
				       (QCOW2_COMPRESSED_SECTOR - 1)));
		if (m->host_offset >= QCOW2_MAX_HOST_OFFSET ||
		    m->host_offset < g->cluster_size)
			return td_report(r, -EINVAL, "L2 entry 0x%016"
					 PRIx64 ": compressed data at %"
					 PRIu64 " is in the header cluster "
					 "or too far", entry,
					 m->host_offset);
		return 0;
	}
	m->copied = entry & QCOW2_OFLAG_COPIED;
	m->host_offset = entry & QCOW2_OFFSET_MASK;
	if (entry & QCOW2_L2_RESERVED)
		return td_report(r, -EINVAL, "L2 entry 0x%016" PRIx64
				 ": reserved bits set", entry);
	if (m->host_offset & (g->cluster_size - 1))
		return td_report(r, -EINVAL, "L2 entry 0x%016" PRIx64
				 ": host offset %" PRIu64 " is not "
				 "cluster-aligned", entry,
				 m->host_offset);
	if ((entry & QCOW2_OFLAG_ZERO) && !g->extended_l2) {
		if (version < 3)
			return td_report(r, -EINVAL, "L2 entry 0x%016"
					 PRIx64 ": zero flag in a version 2 "
					 "image", entry);
		m->type = m->host_offset ? QCOW2_CLUSTER_ZERO_ALLOC :
			  QCOW2_CLUSTER_ZERO_PLAIN;
		return 0;
	}
	if (entry & QCOW2_OFLAG_ZERO)
		return td_report(r, -EINVAL, "L2 entry 0x%016" PRIx64
				 ": zero flag with extended L2 entries",
				 entry);
	if (!m->host_offset) {
		if (m->copied)
			return td_report(r, -EINVAL, "L2 entry 0x%016"
					 PRIx64 ": host offset 0 with the "
					 "copied flag", entry);
		m->type = QCOW2_CLUSTER_UNALLOCATED;
		return 0;
	}
	m->type = QCOW2_CLUSTER_NORMAL;
	return 0;
}

int qcow2_l1_decode(const struct qcow2_geometry *g, uint64_t entry,
		    uint64_t *l2_offset, struct td_report *r)
{
	*l2_offset = entry & QCOW2_OFFSET_MASK;
	if (entry & QCOW2_L1_RESERVED)
		return td_report(r, -EINVAL, "L1 entry 0x%016" PRIx64
				 ": reserved bits set", entry);
	if (*l2_offset & (g->cluster_size - 1))
		return td_report(r, -EINVAL, "L1 entry 0x%016" PRIx64
				 ": L2 table offset %" PRIu64 " is not "
				 "cluster-aligned", entry, *l2_offset);
	if (!*l2_offset && (entry & QCOW2_OFLAG_COPIED))
		return td_report(r, -EINVAL, "L1 entry 0x%016" PRIx64
				 ": offset 0 with the copied flag", entry);
	return 0;
}

int qcow2_reftable_decode(const struct qcow2_geometry *g, uint64_t entry,
			  uint64_t *rb_offset, struct td_report *r)
{
	*rb_offset = entry & ~QCOW2_REFT_RESERVED;
	if (entry & QCOW2_REFT_RESERVED)
		return td_report(r, -EINVAL, "refcount table entry 0x%016"
				 PRIx64 ": reserved bits set", entry);
	if (*rb_offset & (g->cluster_size - 1))
		return td_report(r, -EINVAL, "refcount table entry 0x%016"
				 PRIx64 ": refcount block offset is not "
				 "cluster-aligned", entry);
	if (*rb_offset >= QCOW2_MAX_HOST_OFFSET)
		return td_report(r, -EINVAL, "refcount table entry 0x%016"
				 PRIx64 ": offset too large", entry);
	return 0;
}

void qcow2_compressed_clusters(const struct qcow2_geometry *g,
			       const struct qcow2_mapping *m,
			       uint64_t *first, uint64_t *last)
{
	uint64_t end = m->host_offset + m->csize;

	*first = m->host_offset >> g->cluster_bits;
	*last = (end - 1) >> g->cluster_bits;
}

int qcow2_subcluster_state(uint64_t bitmap, unsigned sc)
{
	bool alloc = bitmap & (1ull << sc);
	bool zero = bitmap & (1ull << (sc + QCOW2_SUBCLUSTERS));

	if (alloc && zero)
		return -EINVAL;
	if (alloc)
		return QCOW2_CLUSTER_NORMAL;
	return zero ? QCOW2_CLUSTER_ZERO_PLAIN : QCOW2_CLUSTER_UNALLOCATED;
}

/* ---- references and refcounts ------------------------------------------- */

enum qcow2_verdict qcow2_refcount_verdict(uint64_t stored, uint64_t refs,
					  unsigned kinds, uint32_t order)
{
	unsigned uses = kinds & ~QCOW2_REF_SOLE;

	/* Metadata is referenced once, by its own kind alone; a cluster is
	 * an L2 table, data or compressed data, never two of them. */
	if ((kinds & QCOW2_REF_SOLE) && refs > 1)
		return QCOW2_RC_OVERLAP;
	if (uses & (uses - 1))
		return QCOW2_RC_OVERLAP;
	if (refs > qcow2_refcount_max(order))
		return QCOW2_RC_OVERFLOW;
	if (stored == refs)
		return QCOW2_RC_OK;
	if (stored > refs)
		return QCOW2_RC_LEAK;
	/* Compressed clusters share host clusters by design; anything else
	 * with several references had them counted (snapshots). */
	if (refs > 1 && kinds != QCOW2_REF_COMPRESSED)
		return QCOW2_RC_SHARED;
	return QCOW2_RC_LOW;
}

const char *qcow2_ref_kinds_name(unsigned kinds, char *buf, size_t len)
{
	static const char *const names[] = {
		"header", "L1 table", "refcount table", "refcount block",
		"snapshot table", "L2 table", "data cluster",
		"compressed data",
	};
	size_t n = 0, i, left = 0, k;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (kinds & (1u << i))
			left++;
	if (len)
		buf[0] = '\0';
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!(kinds & (1u << i)))
			continue;
		left--;
		k = (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s",
				     names[i], !left ? "" : left == 1 ?
				     " and " : ", ");
		n += k;
		if (n >= len)
			break;
	}
	if (!kinds)
		snprintf(buf, len, "nothing");
	return buf;
}

/* ---- refcount blocks ---------------------------------------------------- */

uint64_t qcow2_refcount_get(const uint8_t *block, uint64_t i, uint32_t order)
{
	uint64_t v = 0;
	uint32_t bytes, k;

	if (order < 3) {
		uint32_t bits = 1u << order;
		uint32_t per = 8u >> order;
		uint32_t shift = (uint32_t)(i % per) * bits;

		return (block[i / per] >> shift) & ((1u << bits) - 1);
	}
	bytes = 1u << (order - 3);
	for (k = 0; k < bytes; k++)
		v = v << 8 | block[i * bytes + k];
	return v;
}

void qcow2_refcount_set(uint8_t *block, uint64_t i, uint32_t order,
			uint64_t value)
{
	uint32_t bytes, k;

	if (order < 3) {
		uint32_t bits = 1u << order;
		uint32_t per = 8u >> order;
		uint32_t shift = (uint32_t)(i % per) * bits;
		uint32_t mask = ((1u << bits) - 1) << shift;

		block[i / per] = (uint8_t)((block[i / per] & ~mask) |
					   ((value << shift) & mask));
		return;
	}
	bytes = 1u << (order - 3);
	for (k = bytes; k-- > 0;) {
		block[i * bytes + k] = (uint8_t)value;
		value >>= 8;
	}
}
