/* SPDX-License-Identifier: MIT */
/* Unit tests of the pure qcow (v1) format code: header, L2 entries. */
#include <errno.h>
#include <string.h>

#include "unit.h"

#include "common/td-util.h"
#include "qcow/qcow-format.h"

static void make_header(uint8_t *b, uint64_t size)
{
	struct qcow_header h;
	struct qcow_geometry g;
	char err[256];

	assert_int_equal(qcow_format_create_header(size, 0, &h, &g, err,
						   sizeof(err)), 0);
	qcow_header_encode(&h, b);
}

static void test_qcow_header_roundtrip(void **state)
{
	uint8_t b[QCOW_HEADER_SIZE];
	struct qcow_header h;
	struct qcow_geometry g;
	char err[256];

	(void)state;
	make_header(b, 64ull << 20);
	assert_true(qcow_format_probe(b, sizeof(b)));
	assert_false(qcow_format_probe(b, 4));
	qcow_header_decode(b, &h);
	assert_int_equal(h.size, 64ull << 20);
	assert_int_equal(h.cluster_bits, QCOW_DEFAULT_CLUSTER_BITS);
	assert_int_equal(h.l1_table_offset, QCOW_HEADER_SIZE);
	assert_int_equal(qcow_header_check(&h, 4096, &g, err, sizeof(err)),
			 0);
	/* 64 MiB / (4 KiB * 512 entries) */
	assert_int_equal(g.l1_size, 32);
	assert_int_equal(g.l2_bytes, 4096);
}

static void test_qcow_header_refused(void **state)
{
	uint8_t b[QCOW_HEADER_SIZE];
	struct qcow_header h;
	struct qcow_geometry g;
	char err[256];

	(void)state;
	make_header(b, 64ull << 20);
	qcow_header_decode(b, &h);
	h.crypt_method = QCOW_CRYPT_AES;
	assert_int_equal(qcow_header_check(&h, 4096, &g, err, sizeof(err)),
			 -EOPNOTSUPP);
	assert_non_null(strstr(err, "AES-encrypted qcow images are not "
				    "supported"));
	qcow_header_decode(b, &h);
	h.version = 2;
	assert_int_equal(qcow_header_check(&h, 4096, &g, err, sizeof(err)),
			 -EINVAL);
	qcow_header_decode(b, &h);
	h.cluster_bits = 17;
	assert_int_equal(qcow_header_check(&h, 4096, &g, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "cluster_bits 17"));
	qcow_header_decode(b, &h);
	assert_int_equal(qcow_header_check(&h, 100, &g, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "past the end of the file"));
	qcow_header_decode(b, &h);
	h.size = 1ull << 62;
	assert_int_equal(qcow_header_check(&h, UINT64_MAX, &g, err,
					   sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "L1 entries"));
	qcow_header_decode(b, &h);
	h.backing_file_offset = 4000;
	h.backing_file_size = 200;
	assert_int_equal(qcow_header_check(&h, 4096, &g, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "backing file name"));
}

static void test_qcow_l2_entries(void **state)
{
	uint8_t b[QCOW_HEADER_SIZE];
	struct qcow_header h;
	struct qcow_geometry g;
	struct qcow_mapping m;
	char err[256];
	uint64_t e;

	(void)state;
	make_header(b, 64ull << 20);
	qcow_header_decode(b, &h);
	assert_int_equal(qcow_header_check(&h, 4096, &g, err, sizeof(err)),
			 0);
	assert_int_equal(qcow_l2_decode(&g, h.cluster_bits, 0, &m, err,
					sizeof(err)), 0);
	assert_int_equal(m.type, QCOW_CLUSTER_UNALLOCATED);
	assert_int_equal(qcow_l2_decode(&g, h.cluster_bits, 0x5000, &m, err,
					sizeof(err)), 0);
	assert_int_equal(m.type, QCOW_CLUSTER_NORMAL);
	assert_int_equal(m.host_offset, 0x5000);
	/* 1234 bytes at 0x12345 (QEMU: size above 63 - cluster_bits). */
	e = QCOW_OFLAG_COMPRESSED | (1234ull << (63 - 12)) | 0x12345;
	assert_int_equal(qcow_l2_decode(&g, h.cluster_bits, e, &m, err,
					sizeof(err)), 0);
	assert_int_equal(m.type, QCOW_CLUSTER_COMPRESSED);
	assert_int_equal(m.host_offset, 0x12345);
	assert_int_equal(m.csize, 1234);
	assert_int_equal(qcow_l2_decode(&g, h.cluster_bits,
					QCOW_OFLAG_COMPRESSED | 0x10, &m, err,
					sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "length 0"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qcow_header_roundtrip),
		cmocka_unit_test(test_qcow_header_refused),
		cmocka_unit_test(test_qcow_l2_entries),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
