/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the qcow2 format code (drivers/qcow2/qcow2-format.c): header
 * round trips, every validation message, header extensions, L1/L2/
 * refcount table entries, compressed descriptors, refcounts of every
 * width, deflate, the placement of the tables, the refcount verdict; and
 * of the image helpers (drivers/qcow2/qcow2-*.c) on scratch files: create,
 * open read-write (dirty bit, refcount table growth, the repair of a
 * dirty image, the metadata map, the corrupt bit), the writer and chain
 * reads, the check.
 */
#include <sys/stat.h>

#include "unit.h"

#include "common/td-zlib.h"
#include "qcow2/qcow2-format.h"
#include "qcow2/qcow2-image.h"

#define assert_contains(hay, needle)					\
	do {								\
		if (!strstr((hay), (needle)))				\
			fail_msg("\"%s\" does not contain \"%s\"",	\
				 (hay), (needle));			\
	} while (0)

#define CS	65536u

/* One cluster of header space (malloc: its size is known to the compiler). */
static uint8_t *new_buf(void)
{
	uint8_t *b = calloc(1, CS);

	if (!b)
		abort();
	return b;
}

/* A valid v3 header (and extensions) in a zeroed first cluster. */
static void make_header(uint8_t *buf, uint32_t version, const char *backing,
			const char *fmt)
{
	struct qcow2_header h = {
		.version = version,
		.cluster_bits = 16,
		.size = 64u << 20,
		.l1_size = 1,
		.l1_table_offset = 3 * CS,
		.refcount_table_offset = CS,
		.refcount_table_clusters = 1,
		.refcount_order = 4,
		.header_length = version >= 3 ? 112 : 72,
	};
	size_t end;

	memset(buf, 0, CS);
	end = qcow2_extensions_encode(buf, CS, h.header_length, fmt,
				      version >= 3);
	assert_true(end > 0);
	if (backing) {
		h.backing_file_offset = end;
		h.backing_file_size = (uint32_t)strlen(backing);
		memcpy(buf + end, backing, strlen(backing));
	}
	qcow2_header_encode(&h, buf);
}

static int parse(const uint8_t *buf, struct qcow2_header *h,
		 struct qcow2_extensions *ext, char *err, size_t errlen)
{
	struct td_report r = td_report_err(err, errlen);

	return qcow2_header_parse(buf, CS, 4 * CS, h, ext, &r);
}

static void test_header_roundtrip(void **state)
{
	uint8_t *buf = new_buf();
	struct qcow2_extensions ext;
	struct qcow2_header h;
	char err[256], name[64];

	(void)state;
	make_header(buf, 3, "base.qcow2", "qcow2");
	assert_int_equal(parse(buf, &h, &ext, err, sizeof(err)), 0);
	assert_int_equal(h.version, 3);
	assert_int_equal(h.cluster_bits, 16);
	assert_int_equal(h.size, 64u << 20);
	assert_int_equal(h.header_length, 112);
	assert_int_equal(h.refcount_order, 4);
	assert_true(ext.has_backing_format);
	assert_string_equal(ext.backing_format, "qcow2");
	assert_true(ext.nfeatures >= 5);
	assert_string_equal(qcow2_feature_name(&ext, QCOW2_FEAT_INCOMPAT, 4,
					       name, sizeof(name)),
			    "extended L2 entries");
	assert_int_equal(qcow2_backing_name(buf, CS, &h, name, sizeof(name),
					    NULL), 0);
	assert_string_equal(name, "base.qcow2");

	make_header(buf, 2, NULL, NULL);
	assert_int_equal(parse(buf, &h, &ext, err, sizeof(err)), 0);
	assert_int_equal(h.version, 2);
	assert_int_equal(h.header_length, 72);
	assert_int_equal(h.refcount_order, 4);
	assert_int_equal(h.incompatible_features, 0);
	assert_false(ext.has_backing_format);
	free(buf);
}

struct bad_field {
	unsigned	 off;
	unsigned	 len;
	uint64_t	 value;
	int		 ret;
	const char	*msg;
};

static void put(uint8_t *p, unsigned len, uint64_t v)
{
	if (len == 8)
		td_put_be64(p, v);
	else if (len == 4)
		td_put_be32(p, (uint32_t)v);
	else
		p[0] = (uint8_t)v;
}

static void test_header_errors(void **state)
{
	static const struct bad_field bad[] = {
		{ QH_MAGIC, 4, 0x514649fa, -EINVAL, "bad magic 0x514649fa" },
		{ QH_VERSION, 4, 1, -ENOTSUP, "version 1 (qcow, not qcow2)" },
		{ QH_VERSION, 4, 4, -ENOTSUP, "unsupported version 4" },
		{ QH_CLUSTER_BITS, 4, 8, -EINVAL, "cluster_bits 8 is not in" },
		{ QH_CLUSTER_BITS, 4, 22, -EINVAL, "cluster_bits 22" },
		{ QH_HEADER_LENGTH, 4, 100, -EINVAL, "header_length 100" },
		{ QH_HEADER_LENGTH, 4, 108, -EINVAL, "header_length 108" },
		{ QH_REFCOUNT_ORDER, 4, 7, -EINVAL, "refcount_order 7" },
		{ QH_SIZE, 8, 1ull << 40, -EINVAL, "l1_size 1 is too small" },
		{ QH_SIZE, 8, (1ull << 61) + 1, -EINVAL, "larger than 2^61" },
		{ QH_CRYPT, 4, 1, -ENOTSUP, "encrypted image (AES" },
		{ QH_CRYPT, 4, 2, -ENOTSUP, "encrypted image (LUKS" },
		{ QH_CRYPT, 4, 9, -EINVAL, "unknown crypt_method 9" },
		{ QH_L1_SIZE, 4, 5u << 20, -EINVAL, "l1_size 5242880 is "
		  "larger" },
		{ QH_L1_OFFSET, 8, 3 * CS + 512, -EINVAL, "L1 table offset" },
		{ QH_L1_OFFSET, 8, 0, -EINVAL, "L1 table at offset 0" },
		{ QH_L1_OFFSET, 8, 4 * CS, -EINVAL, "passes the end of the "
		  "file" },
		{ QH_REFT_OFFSET, 8, CS + 4096, -EINVAL, "refcount table "
		  "offset" },
		{ QH_REFT_CLUSTERS, 4, 200, -EINVAL, "refcount_table_clusters "
		  "200" },
		{ QH_NB_SNAPSHOTS, 4, 70000, -EINVAL, "nb_snapshots 70000" },
		{ QH_INCOMPAT, 8, 1ull << 5, -ENOTSUP, "unsupported "
		  "incompatible feature: bit 5 (bit 5)" },
		{ QH_INCOMPAT, 8, 1ull << 3, -EINVAL, "compression type bit "
		  "set but compression_type is 0" },
		{ QH_COMPRESSION_TYPE, 1, 1, -EINVAL, "compression_type 1 "
		  "without" },
		{ QH_BACKING_SIZE, 4, 2000, -EINVAL, "backing_file_size 2000" },
		{ QH_L1_OFFSET, 8, CS, -EINVAL, "L1 table at 65536 (8 bytes) "
		  "overlaps the refcount table at 65536 (65536 bytes)" },
		{ QH_REFT_OFFSET, 8, 3 * CS, -EINVAL, "L1 table at 196608 (8 "
		  "bytes) overlaps the refcount table at 196608" },
	};
	uint8_t *buf = new_buf();
	struct qcow2_header h;
	char err[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		make_header(buf, 3, "b", NULL);
		put(buf + bad[i].off, bad[i].len, bad[i].value);
		assert_int_equal(parse(buf, &h, NULL, err, sizeof(err)),
				 bad[i].ret);
		assert_contains(err, bad[i].msg);
	}
	/* zstd: the bit and the type. */
	make_header(buf, 3, NULL, NULL);
	td_put_be64(buf + QH_INCOMPAT, QCOW2_INCOMPAT_COMPRESSION);
	buf[QH_COMPRESSION_TYPE] = 1;
	assert_int_equal(parse(buf, &h, NULL, err, sizeof(err)), -ENOTSUP);
	assert_contains(err, "zstd");
	/* Extended L2 needs 16 KiB clusters. */
	make_header(buf, 3, NULL, NULL);
	td_put_be64(buf + QH_INCOMPAT, QCOW2_INCOMPAT_EXTL2);
	td_put_be32(buf + QH_CLUSTER_BITS, 12);
	td_put_be64(buf + QH_L1_OFFSET, 3 * 4096);
	td_put_be64(buf + QH_REFT_OFFSET, 4096);
	td_put_be32(buf + QH_L1_SIZE, 64);
	assert_int_equal(parse(buf, &h, NULL, err, sizeof(err)), -EINVAL);
	assert_contains(err, "extended L2 entries need clusters of 16 KiB");
	/* A snapshot table starting inside the refcount or L1 table. */
	make_header(buf, 3, NULL, NULL);
	td_put_be32(buf + QH_NB_SNAPSHOTS, 1);
	td_put_be64(buf + QH_SNAPSHOTS_OFFSET, CS);
	assert_int_equal(parse(buf, &h, NULL, err, sizeof(err)), -EINVAL);
	assert_contains(err, "snapshot table at 65536 overlaps the refcount "
			"table at 65536");
	td_put_be64(buf + QH_SNAPSHOTS_OFFSET, 3 * CS);
	assert_int_equal(parse(buf, &h, NULL, err, sizeof(err)), -EINVAL);
	assert_contains(err, "snapshot table at 196608 overlaps the L1 table");
	/* Tables side by side in one file are fine. */
	make_header(buf, 3, NULL, NULL);
	td_put_be64(buf + QH_L1_OFFSET, 2 * CS);
	assert_int_equal(parse(buf, &h, NULL, err, sizeof(err)), 0);
	/* Truncated. */
	{
		struct td_report r = td_report_err(err, sizeof(err));

		assert_int_equal(qcow2_header_parse(buf, 40, 0, &h, NULL, &r),
				 -EINVAL);
		assert_contains(err, "header truncated: 40 bytes");
	}
	free(buf);
}

static void test_feature_names(void **state)
{
	uint8_t *buf = new_buf();
	struct qcow2_header h;
	char err[256];
	uint8_t *e;

	(void)state;
	make_header(buf, 3, NULL, NULL);
	/* Retarget the first feature table entry: incompatible bit 9. */
	e = buf + 112 + 8;
	memset(e, 0, QCOW2_FEATURE_ENTRY_SIZE);
	e[0] = QCOW2_FEAT_INCOMPAT;
	e[1] = 9;
	memcpy(e + 2, "frobnication", 12);
	td_put_be64(buf + QH_INCOMPAT, 1ull << 9);
	assert_int_equal(parse(buf, &h, NULL, err, sizeof(err)), -ENOTSUP);
	assert_contains(err, "unsupported incompatible feature: frobnication "
			"(bit 9)");
	free(buf);
}

static void test_extensions(void **state)
{
	uint8_t *buf = new_buf();
	struct qcow2_extensions ext;
	struct qcow2_header h;
	struct td_report r;
	char err[256];

	(void)state;
	make_header(buf, 3, NULL, "raw");
	assert_int_equal(parse(buf, &h, &ext, err, sizeof(err)), 0);
	/* A second backing format extension after the end marker is not
	 * read; one before it is a duplicate. */
	memmove(buf + 112 + 16, buf + 112, 1024);
	memcpy(buf + 112, buf + 112 + 16, 16);
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_extensions_parse(buf, CS, &h, &ext, &r),
			 -EINVAL);
	assert_contains(err, "backing format extension twice");
	/* Running past the area. */
	make_header(buf, 3, NULL, NULL);
	td_put_be32(buf + 112, QCOW2_EXT_BACKING_FMT);
	td_put_be32(buf + 116, 70000);
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_extensions_parse(buf, CS, &h, &ext, &r),
			 -EINVAL);
	assert_contains(err, "length 70000 passes the end");
	/* A NUL inside a string extension. */
	td_put_be32(buf + 116, 4);
	memcpy(buf + 120, "ra\0w", 4);
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_extensions_parse(buf, CS, &h, &ext, &r),
			 -EINVAL);
	assert_contains(err, "NUL at byte 2");
	/* An unknown extension is skipped. */
	td_put_be32(buf + 112, 0x12345678);
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_extensions_parse(buf, CS, &h, &ext, &r), 0);
	free(buf);
}

static void test_l2_entries(void **state)
{
	struct qcow2_header h = { .version = 3, .cluster_bits = 16,
				  .refcount_order = 4 };
	struct qcow2_geometry g;
	struct qcow2_mapping m;
	struct td_report r;
	uint64_t first, last, off;
	char err[256];

	(void)state;
	qcow2_geometry_init(&g, &h);
	assert_int_equal(g.l2_bits, 13);
	assert_int_equal(g.rb_bits, 15);
	assert_int_equal(g.csize_shift, 54);

	assert_int_equal(qcow2_l2_decode(&g, 3, 0, &m, NULL), 0);
	assert_int_equal(m.type, QCOW2_CLUSTER_UNALLOCATED);
	assert_int_equal(qcow2_l2_decode(&g, 3, QCOW2_OFLAG_COPIED | 5 * CS,
					 &m, NULL), 0);
	assert_int_equal(m.type, QCOW2_CLUSTER_NORMAL);
	assert_int_equal(m.host_offset, 5 * CS);
	assert_true(m.copied);
	assert_int_equal(qcow2_l2_decode(&g, 3, 1, &m, NULL), 0);
	assert_int_equal(m.type, QCOW2_CLUSTER_ZERO_PLAIN);
	assert_int_equal(qcow2_l2_decode(&g, 3, 7 * CS | 1, &m, NULL), 0);
	assert_int_equal(m.type, QCOW2_CLUSTER_ZERO_ALLOC);

	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_l2_decode(&g, 2, 1, &m, &r), -EINVAL);
	assert_contains(err, "zero flag in a version 2 image");
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_l2_decode(&g, 3, 5 * CS + 512, &m, &r),
			 -EINVAL);
	assert_contains(err, "host offset 328192 is not cluster-aligned");
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_l2_decode(&g, 3, 5 * CS | 2, &m, &r), -EINVAL);
	assert_contains(err, "reserved bits set");
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_l2_decode(&g, 3, QCOW2_OFLAG_COPIED, &m, &r),
			 -EINVAL);

	/* Compressed: 3 more sectors after the one holding offset. */
	off = 9 * CS + 1000;
	assert_int_equal(qcow2_l2_decode(&g, 3, QCOW2_OFLAG_COMPRESSED |
					 (3ull << 54) | off, &m, NULL), 0);
	assert_int_equal(m.type, QCOW2_CLUSTER_COMPRESSED);
	assert_int_equal(m.host_offset, off);
	assert_int_equal(m.csize, 4 * 512 - (1000 % 512));
	qcow2_compressed_clusters(&g, &m, &first, &last);
	assert_int_equal(first, 9);
	assert_int_equal(last, 9);
	off = 10 * CS - 100;
	assert_int_equal(qcow2_l2_decode(&g, 3, QCOW2_OFLAG_COMPRESSED |
					 (1ull << 54) | off, &m, NULL), 0);
	qcow2_compressed_clusters(&g, &m, &first, &last);
	assert_int_equal(first, 9);
	assert_int_equal(last, 10);
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_l2_decode(&g, 3, QCOW2_OFLAG_COMPRESSED | 100,
					 &m, &r), -EINVAL);
	assert_contains(err, "header cluster");

	/* L1 and refcount table entries. */
	assert_int_equal(qcow2_l1_decode(&g, QCOW2_OFLAG_COPIED | 4 * CS,
					 &off, NULL), 0);
	assert_int_equal(off, 4 * CS);
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_l1_decode(&g, 4 * CS + 4096, &off, &r),
			 -EINVAL);
	assert_contains(err, "not cluster-aligned");
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_l1_decode(&g, (1ull << 60) | 4 * CS, &off, &r),
			 -EINVAL);
	assert_contains(err, "reserved bits set");
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_reftable_decode(&g, 4 * CS + 1, &off, &r),
			 -EINVAL);

	/* Extended L2 subclusters. */
	assert_int_equal(qcow2_subcluster_state(1ull << 3, 3),
			 QCOW2_CLUSTER_NORMAL);
	assert_int_equal(qcow2_subcluster_state(1ull << 35, 3),
			 QCOW2_CLUSTER_ZERO_PLAIN);
	assert_int_equal(qcow2_subcluster_state(0, 3),
			 QCOW2_CLUSTER_UNALLOCATED);
	assert_int_equal(qcow2_subcluster_state((1ull << 35) | 8, 3),
			 -EINVAL);
}

static void test_refcounts(void **state)
{
	uint8_t block[512];
	uint32_t order;
	uint64_t i, n, max;

	(void)state;
	for (order = 0; order <= 6; order++) {
		n = 512 * 8 >> order;
		max = qcow2_refcount_max(order);
		memset(block, 0, sizeof(block));
		for (i = 0; i < n; i += 3)
			qcow2_refcount_set(block, i, order, (i * 7 + 1) & max);
		for (i = 0; i < n; i++)
			assert_int_equal(qcow2_refcount_get(block, i, order),
					 i % 3 ? 0 : (i * 7 + 1) & max);
	}
	/* Bit order: entry 0 is the low bits; 16-bit entries big-endian. */
	memset(block, 0, sizeof(block));
	qcow2_refcount_set(block, 0, 0, 1);
	assert_int_equal(block[0], 1);
	qcow2_refcount_set(block, 1, 2, 3);
	assert_int_equal(block[0], 0x31);
	memset(block, 0, sizeof(block));
	qcow2_refcount_set(block, 1, 4, 0x0102);
	assert_int_equal(block[2], 1);
	assert_int_equal(block[3], 2);
	assert_int_equal(qcow2_refcount_max(6), UINT64_MAX);
}

static void test_refcount_verdict(void **state)
{
	const unsigned d = QCOW2_REF_DATA, l2 = QCOW2_REF_L2;
	const unsigned z = QCOW2_REF_COMPRESSED, rt = QCOW2_REF_REFTABLE;
	char buf[96];

	(void)state;
	/* Stored refcount against references, one kind of use. */
	assert_int_equal(qcow2_refcount_verdict(0, 0, 0, 4), QCOW2_RC_OK);
	assert_int_equal(qcow2_refcount_verdict(1, 1, d, 4), QCOW2_RC_OK);
	assert_int_equal(qcow2_refcount_verdict(1, 0, 0, 4), QCOW2_RC_LEAK);
	assert_int_equal(qcow2_refcount_verdict(3, 1, d, 4), QCOW2_RC_LEAK);
	assert_int_equal(qcow2_refcount_verdict(0, 1, d, 4), QCOW2_RC_LOW);
	assert_int_equal(qcow2_refcount_verdict(0, 1, rt, 4), QCOW2_RC_LOW);
	assert_int_equal(qcow2_refcount_verdict(0, 1, l2, 4), QCOW2_RC_LOW);
	/* Compressed data shares host clusters: raised like one owner. */
	assert_int_equal(qcow2_refcount_verdict(1, 3, z, 4), QCOW2_RC_LOW);
	assert_int_equal(qcow2_refcount_verdict(3, 3, z, 4), QCOW2_RC_OK);
	/* Data or L2 tables shared with their refcount (snapshots)... */
	assert_int_equal(qcow2_refcount_verdict(2, 2, d, 4), QCOW2_RC_OK);
	assert_int_equal(qcow2_refcount_verdict(2, 2, l2, 4), QCOW2_RC_OK);
	/* ...but without it no crash explains them. */
	assert_int_equal(qcow2_refcount_verdict(1, 2, d, 4),
			 QCOW2_RC_SHARED);
	assert_int_equal(qcow2_refcount_verdict(0, 2, l2, 4),
			 QCOW2_RC_SHARED);
	/* Metadata with anything else, or two kinds of use: whatever the
	 * refcount says. */
	assert_int_equal(qcow2_refcount_verdict(2, 2, rt | d, 4),
			 QCOW2_RC_OVERLAP);
	assert_int_equal(qcow2_refcount_verdict(1, 2, rt | d, 4),
			 QCOW2_RC_OVERLAP);
	assert_int_equal(qcow2_refcount_verdict(2, 2, rt, 4),
			 QCOW2_RC_OVERLAP);
	assert_int_equal(qcow2_refcount_verdict(2, 2, QCOW2_REF_L1 |
						QCOW2_REF_REFBLOCK, 4),
			 QCOW2_RC_OVERLAP);
	assert_int_equal(qcow2_refcount_verdict(2, 2, l2 | d, 4),
			 QCOW2_RC_OVERLAP);
	assert_int_equal(qcow2_refcount_verdict(2, 2, d | z, 4),
			 QCOW2_RC_OVERLAP);
	/* References the width cannot hold. */
	assert_int_equal(qcow2_refcount_verdict(1, 2, z, 0),
			 QCOW2_RC_OVERFLOW);
	assert_int_equal(qcow2_refcount_verdict(1, 4, z, 1),
			 QCOW2_RC_OVERFLOW);
	assert_int_equal(qcow2_refcount_verdict(0, 3, z, 1), QCOW2_RC_LOW);

	assert_string_equal(qcow2_ref_kinds_name(0, buf, sizeof(buf)),
			    "nothing");
	assert_string_equal(qcow2_ref_kinds_name(d, buf, sizeof(buf)),
			    "data cluster");
	assert_string_equal(qcow2_ref_kinds_name(rt | d, buf, sizeof(buf)),
			    "refcount table and data cluster");
	assert_string_equal(qcow2_ref_kinds_name(QCOW2_REF_HEADER | l2 | z,
						 buf, sizeof(buf)),
			    "header, L2 table and compressed data");
	/* Cut short, still terminated. */
	assert_string_equal(qcow2_ref_kinds_name(rt | d, buf, 9),
			    "refcount");
}

static void test_deflate(void **state)
{
	uint8_t in[CS], out[2 * CS], back[CS];
	size_t len = sizeof(out);
	void *zs = td_inflate_new();
	size_t i;

	(void)state;
	assert_non_null(zs);
	for (i = 0; i < CS; i++)
		in[i] = (uint8_t)(i % 251 < 40 ? i : 0);
	assert_int_equal(td_deflate(in, CS, out, &len), 0);
	assert_true(len < CS);
	/* Padding after the data, as in the last compressed sector. */
	memset(out + len, 0xee, 600);
	assert_int_equal(td_inflate(zs, out, len + 600, back, CS), 0);
	assert_memory_equal(in, back, CS);
	/* Too short or garbage: refused. */
	assert_int_equal(td_inflate(zs, out, len / 2, back, CS), -EINVAL);
	memset(out, 0xff, 64);
	assert_int_equal(td_inflate(zs, out, 64, back, CS), -EINVAL);
	td_inflate_free(zs);
}

static void test_writable(void **state)
{
	struct qcow2_header h = { .version = 3 };
	struct td_report r;
	char err[256];

	(void)state;
	assert_int_equal(qcow2_header_check_writable(&h, NULL, NULL), 0);
	h.incompatible_features = QCOW2_INCOMPAT_CORRUPT;
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_header_check_writable(&h, NULL, &r), -EROFS);
	assert_contains(err, "corrupt bit");
	h.incompatible_features = QCOW2_INCOMPAT_EXTL2;
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_header_check_writable(&h, NULL, &r), -ENOTSUP);
	assert_contains(err, "extended L2 entries");
	h.incompatible_features = QCOW2_INCOMPAT_DATA_FILE;
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_header_check_writable(&h, NULL, &r), -ENOTSUP);
	assert_contains(err, "external data file");
	h.incompatible_features = 0;
	h.nb_snapshots = 2;
	r = td_report_err(err, sizeof(err));
	assert_int_equal(qcow2_header_check_writable(&h, NULL, &r), -ENOTSUP);
	assert_contains(err, "internal snapshots (2)");
}

/* ---- image helpers ----------------------------------------------------- */

static void scratch_path(char *path, size_t len, const char *tag)
{
	int fd = unit_tmpfile(path, len, tag, 0);

	close(fd);
	unlink(path);
}

static unsigned check_errors(const char *path, unsigned *leaks)
{
	struct qcow2_check_result res;
	char err[512];

	assert_int_equal(qcow2_image_check(path, NULL, NULL, &res, err,
					   sizeof(err)), 0);
	if (leaks)
		*leaks = res.base.leaks;
	return res.base.errors;
}

static uint64_t header_incompat(const char *path)
{
	uint8_t b[8];
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, b, 8, QH_INCOMPAT), 8);
	close(fd);
	return td_get_be64(b);
}

static void test_create_open(void **state)
{
	static const struct qcow2_create_params params[] = {
		{ .size = 64u << 20 },
		{ .size = 64u << 20, .version = 2 },
		{ .size = 8u << 20, .cluster_bits = 9 },
		{ .size = 16u << 20, .cluster_bits = 21, .refcount_order = 6 },
		{ .size = 1ull << 40, .cluster_bits = 12,
		  .refcount_order = 1 },
	};
	struct qcow2_image *img;
	char path[256], err[512];
	unsigned leaks;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
		scratch_path(path, sizeof(path), "q2create");
		assert_int_equal(qcow2_image_create(path, &params[i], err,
						    sizeof(err)), 0);
		assert_int_equal(qcow2_image_create(path, &params[i], err,
						    sizeof(err)), -EEXIST);
		assert_int_equal(check_errors(path, &leaks), 0);
		assert_int_equal(leaks, 0);
		assert_int_equal(qcow2_image_open(&img, path, 0, err,
						  sizeof(err)), 0);
		assert_int_equal(qcow2_image_size(img), params[i].size);
		qcow2_image_close(img, false);
		/* Read-write: the table grows to cover the disk, the dirty
		 * bit is set (v3) until a clean close. */
		assert_int_equal(qcow2_image_open(&img, path, QCOW2_IMAGE_RDWR,
						  err, sizeof(err)), 0);
		assert_true(qcow2_image_ref_coverage(img) >
			    params[i].size >> img->g.cluster_bits);
		assert_int_equal(header_incompat(path) & QCOW2_INCOMPAT_DIRTY,
				 img->h.version >= 3);
		assert_int_equal(qcow2_image_close(img, true), 0);
		assert_int_equal(header_incompat(path), 0);
		assert_int_equal(check_errors(path, &leaks), 0);
		assert_int_equal(leaks, 0);	/* the old table freed */
		unlink(path);
	}
}

/*
 * A fresh 8 MiB image (header 0, refcount table 1, refcount block 2, L1
 * table 3) given an L2 table at cluster 4 for guest clusters 0 and 1 at
 * data clusters 5 and 6, all counted: a clean image with data.
 */
#define RB_OFF		(2 * CS)

static void put_refcount(int fd, uint64_t c, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };

	assert_int_equal(pwrite(fd, b, 2, RB_OFF + 2 * c), 2);
}

static uint16_t get_refcount(const char *path, uint64_t c)
{
	uint8_t b[2];
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, b, 2, RB_OFF + 2 * c), 2);
	close(fd);
	return (uint16_t)(b[0] << 8 | b[1]);
}

static void put_be64_at(int fd, uint64_t off, uint64_t v)
{
	uint8_t b[8];

	td_put_be64(b, v);
	assert_int_equal(pwrite(fd, b, 8, (off_t)off), 8);
}

/* Returns an O_RDWR fd on it, for the test's damage. */
static int make_data_image(char *path, size_t len, const char *tag,
			   uint32_t version)
{
	struct qcow2_create_params p = { .size = 8u << 20,
					 .version = version };
	uint8_t *data = unit_aligned(CS);
	char err[512];
	int fd;

	scratch_path(path, len, tag);
	assert_int_equal(qcow2_image_create(path, &p, err, sizeof(err)), 0);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	memset(data, 0x5a, CS);
	assert_int_equal(pwrite(fd, data, CS, 5 * CS), CS);
	assert_int_equal(pwrite(fd, data, CS, 6 * CS), CS);
	memset(data, 0, CS);
	assert_int_equal(pwrite(fd, data, CS, 4 * CS), CS);
	put_be64_at(fd, 4 * CS, 5 * CS | QCOW2_OFLAG_COPIED);
	put_be64_at(fd, 4 * CS + 8, 6 * CS | QCOW2_OFLAG_COPIED);
	put_be64_at(fd, 3 * CS, 4 * CS | QCOW2_OFLAG_COPIED);
	put_refcount(fd, 4, 1);
	put_refcount(fd, 5, 1);
	put_refcount(fd, 6, 1);
	free(data);
	return fd;
}

static void set_dirty(int fd)
{
	uint8_t b[8];

	assert_int_equal(pread(fd, b, 8, QH_INCOMPAT), 8);
	td_put_be64(b, td_get_be64(b) | QCOW2_INCOMPAT_DIRTY);
	assert_int_equal(pwrite(fd, b, 8, QH_INCOMPAT), 8);
}

static void check_result(const char *path, struct qcow2_check_result *res)
{
	char err[512];

	assert_int_equal(qcow2_image_check(path, NULL, NULL, res, err,
					   sizeof(err)), 0);
}

/* Open read-write and close clean: 0, or the open's error in err. */
static int open_rw(const char *path, char *warning, char *err, size_t errlen)
{
	struct qcow2_image *img;
	int ret = qcow2_image_open(&img, path, QCOW2_IMAGE_RDWR, err, errlen);

	if (ret)
		return ret;
	snprintf(warning, 512, "%s", img->warning);
	assert_int_equal(qcow2_image_close(img, true), 0);
	return 0;
}

static void test_dirty_repair_leaks(void **state)
{
	struct qcow2_check_result res;
	char path[256], err[512], warn[512];
	int fd;

	(void)state;
	fd = make_data_image(path, sizeof(path), "q2leak", 0);
	close(fd);
	check_result(path, &res);
	assert_int_equal(res.base.errors + res.base.leaks, 0);
	/* A crash left clusters 7 and 9 counted, and 6 counted twice. */
	fd = open(path, O_RDWR);
	put_refcount(fd, 7, 1);
	put_refcount(fd, 9, 1);
	put_refcount(fd, 6, 2);
	close(fd);
	/* Clean: the check sees the leaks (and 6's copied flag at odds
	 * with its refcount), open does not scan. */
	check_result(path, &res);
	assert_int_equal(res.base.leaks, 3);
	assert_int_equal(res.base.errors, 1);
	assert_false(res.dirty);
	assert_int_equal(open_rw(path, warn, err, sizeof(err)), 0);
	assert_string_equal(warn, "");
	assert_int_equal(get_refcount(path, 7), 1);
	/* Dirty: the check says what open repairs, and open repairs it. */
	fd = open(path, O_RDWR);
	set_dirty(fd);
	close(fd);
	check_result(path, &res);
	assert_true(res.dirty);
	assert_int_equal(res.base.leaks, 3);
	assert_int_equal(res.base.errors, 1);
	assert_int_equal(res.repair_lower, 3);
	assert_int_equal(res.repair_raise, 0);
	assert_int_equal(res.unrepairable, 0);
	assert_int_equal(open_rw(path, warn, err, sizeof(err)), 0);
	assert_contains(warn, path);
	assert_contains(warn, "repaired: 3 leaked clusters freed, 0 clusters "
			"in use counted");
	assert_int_equal(get_refcount(path, 7), 0);
	assert_int_equal(get_refcount(path, 9), 0);
	assert_int_equal(get_refcount(path, 6), 1);
	assert_int_equal(header_incompat(path), 0);
	check_result(path, &res);
	assert_int_equal(res.base.errors + res.base.leaks, 0);
	/* Dirty with nothing to repair. */
	fd = open(path, O_RDWR);
	set_dirty(fd);
	close(fd);
	assert_int_equal(open_rw(path, warn, err, sizeof(err)), 0);
	assert_contains(warn, "nothing to repair");
	unlink(path);
}

static void test_dirty_repair_lazy(void **state)
{
	struct qcow2_check_result res;
	char path[256], err[512], warn[512];
	uint8_t b[8];
	int fd;

	(void)state;
	/* Lazy refcounts: the L2 table, a data cluster and the L1 table's
	 * own cluster never counted, and a freed cluster still counted. */
	fd = make_data_image(path, sizeof(path), "q2lazy", 0);
	put_refcount(fd, 3, 0);
	put_refcount(fd, 4, 0);
	put_refcount(fd, 6, 0);
	put_refcount(fd, 8, 1);
	td_put_be64(b, QCOW2_COMPAT_LAZY_REFCOUNTS);
	assert_int_equal(pwrite(fd, b, 8, QH_COMPAT), 8);
	set_dirty(fd);
	close(fd);
	check_result(path, &res);
	assert_true(res.dirty);
	assert_int_equal(res.repair_raise, 3);
	assert_int_equal(res.repair_lower, 1);
	assert_int_equal(res.unrepairable, 0);
	/* The stored refcounts are wrong until then: errors. */
	assert_true(res.base.errors >= 3);
	assert_int_equal(open_rw(path, warn, err, sizeof(err)), 0);
	assert_contains(warn, "repaired: 1 leaked cluster freed, 3 clusters "
			"in use counted (refcount raised: lazy refcounts)");
	assert_int_equal(get_refcount(path, 3), 1);
	assert_int_equal(get_refcount(path, 4), 1);
	assert_int_equal(get_refcount(path, 6), 1);
	assert_int_equal(get_refcount(path, 8), 0);
	check_result(path, &res);
	assert_int_equal(res.base.errors + res.base.leaks, 0);
	unlink(path);
}

/* Damage open must refuse, dirty; the file is left as it was. */
struct damage {
	const char	*what;
	void		(*apply)(int fd);
	const char	*msg;
};

static void dmg_shared(int fd)
{
	/* Guest cluster 1 points at guest cluster 0's data cluster. */
	put_be64_at(fd, 4 * CS + 8, 5 * CS | QCOW2_OFLAG_COPIED);
	put_refcount(fd, 6, 0);
}

static void dmg_reftable(int fd)
{
	/* Guest cluster 1 points at the refcount table. */
	put_be64_at(fd, 4 * CS + 8, 1 * CS | QCOW2_OFLAG_COPIED);
	put_refcount(fd, 6, 0);
}

static void dmg_past_end(int fd)
{
	put_be64_at(fd, 4 * CS + 8, 100 * CS | QCOW2_OFLAG_COPIED);
	put_refcount(fd, 6, 0);
}

static void dmg_copied(int fd)
{
	/* Guest cluster 1: shared by its refcount, but the copied flag. */
	put_be64_at(fd, 4 * CS + 8, 5 * CS | QCOW2_OFLAG_COPIED);
	put_refcount(fd, 5, 2);
	put_refcount(fd, 6, 0);
}

static void dmg_no_block(int fd)
{
	/* No refcount block: nothing counts the clusters in use. */
	put_be64_at(fd, 1 * CS, 0);
}

static void test_dirty_refused(void **state)
{
	static const struct damage dmg[] = {
		{ "shared", dmg_shared, "cluster 5 (offset 327680): refcount "
		  "1 but 2 references (one data cluster referenced 2 times)" },
		{ "reftable", dmg_reftable, "cluster 1 (offset 65536): used "
		  "as refcount table and data cluster at once" },
		{ "past end", dmg_past_end, "data cluster at 6553600 lies past "
		  "the end of the file" },
		{ "copied", dmg_copied, "guest cluster 0: copied flag set but "
		  "2 references" },
		{ "no block", dmg_no_block, "cluster 0 (offset 0): header in "
		  "use but no refcount block counts it" },
	};
	struct qcow2_check_result res;
	char path[256], err[512], warn[512];
	uint8_t *before = unit_aligned(8 * CS), *after = unit_aligned(8 * CS);
	struct qcow2_image *img;
	size_t i;
	int fd;

	(void)state;
	for (i = 0; i < sizeof(dmg) / sizeof(dmg[0]); i++) {
		fd = make_data_image(path, sizeof(path), "q2bad", 0);
		dmg[i].apply(fd);
		set_dirty(fd);
		close(fd);
		check_result(path, &res);
		if (!res.unrepairable)
			fail_msg("%s: no unrepairable error", dmg[i].what);
		fd = open(path, O_RDONLY);
		assert_int_equal(pread(fd, before, 8 * CS, 0), 7 * CS);
		assert_int_equal(open_rw(path, warn, err, sizeof(err)),
				 -EUCLEAN);
		assert_contains(err, path);
		assert_contains(err, dmg[i].msg);
		assert_contains(err, "qemu-img check -r all");
		assert_int_equal(pread(fd, after, 8 * CS, 0), 7 * CS);
		assert_memory_equal(before, after, 7 * CS);
		close(fd);
		/* Read-only, it still opens. */
		assert_int_equal(qcow2_image_open(&img, path, 0, err,
						  sizeof(err)), 0);
		qcow2_image_close(img, false);
		unlink(path);
	}
	free(before);
	free(after);
}

/* A v3 image whose first L1 entry points at its refcount table. */
static void test_meta_map(void **state)
{
	struct qcow2_image *img;
	char path[256], err[512], name[96];
	int fd;

	(void)state;
	fd = make_data_image(path, sizeof(path), "q2meta", 0);
	close(fd);
	assert_int_equal(qcow2_image_open(&img, path, QCOW2_IMAGE_RDWR, err,
					  sizeof(err)), 0);
	assert_true(qcow2_image_is_meta(img, 0));
	assert_true(qcow2_image_is_meta(img, 1));	/* refcount table */
	assert_true(qcow2_image_is_meta(img, 2));	/* refcount block */
	assert_true(qcow2_image_is_meta(img, 3));	/* L1 table */
	assert_true(qcow2_image_is_meta(img, 4));	/* L2 table */
	assert_false(qcow2_image_is_meta(img, 5));	/* data */
	assert_false(qcow2_image_is_meta(img, 7));
	assert_false(qcow2_image_is_meta(img, 1ull << 40));
	assert_string_equal(qcow2_image_meta_name(img, 1, name, sizeof(name)),
			    "the refcount table");
	assert_string_equal(qcow2_image_meta_name(img, 2, name, sizeof(name)),
			    "refcount block 0");
	assert_string_equal(qcow2_image_meta_name(img, 4, name, sizeof(name)),
			    "the L2 table of L1 entry 0");
	assert_int_equal(qcow2_image_meta_add(img, 7), 0);
	assert_true(qcow2_image_is_meta(img, 7));
	assert_int_equal(qcow2_image_meta_add(img, 1ull << 40), -ERANGE);
	/* The corrupt bit, durable, and it survives a clean close. */
	assert_int_equal(qcow2_image_mark_corrupt(img, err, sizeof(err)), 0);
	assert_true(header_incompat(path) & QCOW2_INCOMPAT_CORRUPT);
	assert_int_equal(qcow2_image_close(img, true), 0);
	assert_int_equal(header_incompat(path), QCOW2_INCOMPAT_CORRUPT);
	assert_int_equal(qcow2_image_open(&img, path, QCOW2_IMAGE_RDWR, err,
					  sizeof(err)), -EROFS);
	unlink(path);

	/* An L2 table placed on the refcount table: refused at open. */
	fd = make_data_image(path, sizeof(path), "q2meta", 0);
	put_be64_at(fd, 3 * CS, 1 * CS | QCOW2_OFLAG_COPIED);
	close(fd);
	assert_int_equal(qcow2_image_open(&img, path, QCOW2_IMAGE_RDWR, err,
					  sizeof(err)), -EINVAL);
	assert_contains(err, "the L2 table of L1 entry 0 at 65536 overlaps "
			"the refcount table");
	assert_int_equal(qcow2_image_open(&img, path, 0, err, sizeof(err)), 0);
	qcow2_image_close(img, false);
	unlink(path);

	/* Version 2 has no corrupt bit. */
	fd = make_data_image(path, sizeof(path), "q2meta", 2);
	close(fd);
	assert_int_equal(qcow2_image_open(&img, path, QCOW2_IMAGE_RDWR, err,
					  sizeof(err)), 0);
	assert_int_equal(qcow2_image_mark_corrupt(img, err, sizeof(err)),
			 -ENOTSUP);
	assert_contains(err, "version 2");
	qcow2_image_close(img, true);
	unlink(path);
}

/*
 * Written through the qcow2 driver (a VBD, as the daemon and tapfs-img
 * write), one cluster in three left unwritten: the check is clean, only
 * the written clusters are allocated, and a child reads it all back
 * through the chain.
 */
static void test_driver_chain(void **state)
{
	struct qcow2_create_params p = { .size = (3u << 20) + 4096,
					 .cluster_bits = 12 };
	struct qcow2_create_params child = { .backing = NULL };
	char path[256], cpath[256], spec[300], err[512];
	uint8_t *data = unit_aligned(p.size), *back = unit_aligned(p.size);
	uint64_t i, bytes, clusters, written = 0;
	struct qcow2_image *img;
	struct unit_vbd u;

	(void)state;
	for (i = 0; i < p.size; i++)
		data[i] = (i / 4096) % 3 == 1 ? 0 : (uint8_t)(i * 13 + i / 997);
	scratch_path(path, sizeof(path), "q2writer");
	assert_int_equal(qcow2_image_create(path, &p, err, sizeof(err)), 0);
	snprintf(spec, sizeof(spec), "qcow2:%s", path);
	assert_int_equal(unit_vbd_open(&u, spec, 0), 0);
	for (i = 0; i * 4096 < p.size; i++) {
		if (i % 3 == 1)
			continue;
		assert_int_equal(unit_vbd_io(&u, TD_OP_WRITE, i * 8, 8,
					     data + i * 4096), 0);
		written++;
	}
	assert_int_equal(unit_vbd_io(&u, TD_OP_FLUSH, 0, 0, NULL), 0);
	unit_vbd_close(&u);
	assert_int_equal(check_errors(path, NULL), 0);
	assert_int_equal(qcow2_image_open(&img, path, 0, err, sizeof(err)),
			 0);
	assert_int_equal(qcow2_image_allocated(img, &bytes, &clusters, err,
					       sizeof(err)), 0);
	assert_int_equal(clusters, written);
	assert_int_equal(bytes, written * 4096);
	qcow2_image_close(img, false);

	/* A child on it: reads through the chain. */
	scratch_path(cpath, sizeof(cpath), "q2child");
	child.backing = path;
	child.backing_fmt = "qcow2";
	assert_int_equal(qcow2_image_create(cpath, &child, err, sizeof(err)),
			 0);
	snprintf(spec, sizeof(spec), "qcow2:%s", cpath);
	assert_int_equal(unit_vbd_open(&u, spec, TD_OPEN_RDONLY), 0);
	assert_int_equal(vbd_chain_length(u.v), 2);
	assert_int_equal(vbd_size(u.v), p.size);
	assert_int_equal(unit_vbd_io(&u, TD_OP_READ, 0,
				     (uint32_t)(p.size >> 9), back), 0);
	assert_memory_equal(data, back, p.size);
	unit_vbd_close(&u);
	unlink(cpath);
	unlink(path);
	free(data);
	free(back);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_roundtrip),
		cmocka_unit_test(test_header_errors),
		cmocka_unit_test(test_feature_names),
		cmocka_unit_test(test_extensions),
		cmocka_unit_test(test_l2_entries),
		cmocka_unit_test(test_refcounts),
		cmocka_unit_test(test_deflate),
		cmocka_unit_test(test_writable),
		cmocka_unit_test(test_create_open),
		cmocka_unit_test(test_refcount_verdict),
		cmocka_unit_test(test_dirty_repair_leaks),
		cmocka_unit_test(test_dirty_repair_lazy),
		cmocka_unit_test(test_dirty_refused),
		cmocka_unit_test(test_meta_map),
		cmocka_unit_test(test_driver_chain),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
