/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the vmdk format code (drivers/vmdk/vmdk-format.c): the
 * sparse extent header (round trip and every refusal), the descriptor
 * (keys, extent lines, the folder rule, overlong lines, no extent), the
 * grain marker.
 */
#include <zlib.h>

#include "unit.h"
#include "common/td-zlib.h"

#include "vmdk/vmdk-format.h"

#define assert_contains(hay, needle)					\
	do {								\
		if (!strstr((hay), (needle)))				\
			fail_msg("\"%s\" does not contain \"%s\"",	\
				 (hay), (needle));			\
	} while (0)

static struct vmdk_header good_header(void)
{
	struct vmdk_header h = {
		.version = 1, .flags = VMDK_FLAG_NL_TEST | VMDK_FLAG_RGD,
		.capacity = 131072, .grain_secs = 128, .desc_offset = 1,
		.desc_size = 20, .gtes = 512, .rgd_offset = 21,
		.gd_offset = 30, .overhead = 128,
	};
	return h;
}

static void test_header_round_trip(void **state)
{
	struct vmdk_header h = good_header(), d;
	uint8_t buf[VMDK_HEADER_SIZE];
	char err[256];

	(void)state;
	vmdk_header_encode(&h, buf);
	assert_memory_equal(buf, "KDMV", 4);
	assert_int_equal(vmdk_header_decode(buf, 1000, &d, err, sizeof(err)),
			 0);
	assert_int_equal(d.capacity, h.capacity);
	assert_int_equal(d.gd_offset, 30);
	assert_int_equal(vmdk_header_gd_entries(&d), 2);
}

static void refused(struct vmdk_header h, uint64_t file_secs, int rc,
		    const char *why)
{
	uint8_t buf[VMDK_HEADER_SIZE];
	struct vmdk_header d;
	char err[256];

	vmdk_header_encode(&h, buf);
	assert_int_equal(vmdk_header_decode(buf, file_secs, &d, err,
					    sizeof(err)), rc);
	assert_contains(err, why);
}

static void test_header_refusals(void **state)
{
	struct vmdk_header h;
	uint8_t buf[VMDK_HEADER_SIZE] = { 0 };
	struct vmdk_header d;
	char err[256];

	(void)state;
	assert_int_equal(vmdk_header_decode(buf, 1000, &d, err, sizeof(err)),
			 -EINVAL);
	assert_contains(err, "magic");
	h = good_header();
	h.version = 4;
	refused(h, 1000, -ENOTSUP, "version 4");
	h = good_header();
	h.grain_secs = 3;
	refused(h, 1000, -EINVAL, "grain size 3");
	h = good_header();
	h.capacity = 1ull << 60;
	refused(h, 1000, -EINVAL, "capacity");
	h = good_header();
	h.gtes = 0;
	refused(h, 1000, -EINVAL, "0 entries per grain table");
	h = good_header();
	h.gd_offset = 5000;
	refused(h, 1000, -EINVAL, "grain directory at sector 5000");
	h = good_header();
	h.rgd_offset = 0;
	refused(h, 1000, -EINVAL, "redundant grain directory");
	h = good_header();
	h.flags |= VMDK_FLAG_COMPRESSED | VMDK_FLAG_MARKERS;
	h.compress = 7;
	refused(h, 1000, -ENOTSUP, "compression algorithm 7");
	h.compress = VMDK_COMPRESS_DEFLATE;
	h.flags &= ~VMDK_FLAG_MARKERS;
	refused(h, 1000, -ENOTSUP, "without markers");
	h = good_header();
	h.desc_size = 1000;
	refused(h, 10000, -EINVAL, "embedded descriptor");
}

static const char desc_text[] =
	"# Disk DescriptorFile\n"
	"version=1\n"
	"CID=fffffffe\r\n"
	"parentCID=12ab\n"
	"createType=\"twoGbMaxExtentFlat\"\n"
	"parentFileNameHint=\"base.vmdk\"\n"
	"RW 4194304 FLAT \"a b-f001.vmdk\" 0\n"
	"RDONLY 100 FLAT \"sub/x.vmdk\" 7\n"
	"RW 28 ZERO\n"
	"ddb.adapterType = \"ide\"\n";

static void test_desc_parse(void **state)
{
	struct vmdk_desc d;
	char err[256];

	(void)state;
	assert_int_equal(vmdk_desc_parse(desc_text, sizeof(desc_text), &d, err,
					 sizeof(err)), 0);
	assert_int_equal(d.cid, 0xfffffffeu);
	assert_int_equal(d.parent_cid, 0x12ab);
	assert_true(d.has_parent_cid);
	assert_string_equal(d.create_type, "twoGbMaxExtentFlat");
	assert_string_equal(d.parent_hint, "base.vmdk");
	assert_int_equal(d.n_extents, 3);
	assert_string_equal(d.extents[0].name, "a b-f001.vmdk");
	assert_int_equal(d.extents[1].access, VMDK_ACCESS_RDONLY);
	assert_int_equal(d.extents[1].offset, 7);
	assert_int_equal(d.extents[2].type, VMDK_EXTENT_ZERO);
	assert_int_equal(d.capacity, 4194304 + 100 + 28);
	vmdk_desc_free(&d);
}

static void desc_refused(const char *text, int rc, const char *why)
{
	struct vmdk_desc d;
	char err[256];

	assert_int_equal(vmdk_desc_parse(text, strlen(text), &d, err,
					 sizeof(err)), rc);
	assert_contains(err, why);
	vmdk_desc_free(&d);
}

static void test_desc_refusals(void **state)
{
	char *longline = malloc(3000);

	(void)state;
	assert_non_null(longline);
	desc_refused("version=1\n", -EINVAL, "no extent");
	desc_refused("RW 8 FLAT \"../x\"\n", -EACCES, "outside");
	desc_refused("RW 8 FLAT \"/etc/x\"\n", -EACCES, "outside");
	desc_refused("RW 8 FLAT \"a/../../x\"\n", -EACCES, "outside");
	desc_refused("RW 8 VMFSSPARSE \"x\"\n", -ENOTSUP, "VMFSSPARSE");
	desc_refused("NOACCESS 8 FLAT \"x\"\n", -ENOTSUP, "NOACCESS");
	desc_refused("RW 0 FLAT \"x\"\n", -EINVAL, "extent size");
	desc_refused("RW 8 FLAT x\n", -EINVAL, "quoted");
	desc_refused("RW 8 SPARSE \"x\" 5\n", -EINVAL, "offset");
	desc_refused("CID=xyz\nRW 8 FLAT \"x\"\n", -EINVAL, "CID 'xyz'");
	memset(longline, 'a', 2999);
	longline[0] = '#';
	longline[2999] = '\0';
	desc_refused(longline, -EINVAL, "line 1 is longer than 1024");
	free(longline);
}

static void test_desc_format(void **state)
{
	char buf[VMDK_MAX_DESC];
	struct vmdk_desc d;
	char err[256];
	int n;

	(void)state;
	n = vmdk_desc_format(buf, sizeof(buf), 2048, "d.vmdk", 0xabc);
	assert_true(n > 0);
	assert_int_equal(vmdk_desc_parse(buf, (size_t)n, &d, err,
					 sizeof(err)), 0);
	assert_int_equal(d.cid, 0xabc);
	assert_int_equal(d.capacity, 2048);
	assert_string_equal(d.create_type, "monolithicSparse");
	vmdk_desc_free(&d);
	assert_int_equal(vmdk_desc_format(buf, 10, 2048, "d.vmdk", 1),
			 -ENOSPC);
}

static void test_marker(void **state)
{
	uint8_t buf[64] = { 0 };
	uint64_t lba;
	uint32_t size;
	char err[256];

	(void)state;
	buf[0] = 0x80;
	buf[8] = 20;
	assert_int_equal(vmdk_marker_decode(buf, sizeof(buf), &lba, &size,
					    err, sizeof(err)), 0);
	assert_int_equal(lba, 0x80);
	assert_int_equal(size, 20);
	buf[8] = 60;
	assert_int_equal(vmdk_marker_decode(buf, sizeof(buf), &lba, &size,
					    err, sizeof(err)), -EINVAL);
	assert_contains(err, "compressed grain of 60 bytes");
}

/*
 * A compressed grain is a zlib stream that may inflate short of the
 * grain (the last grain of a disk): the rest reads as zeros; a damaged
 * stream, or one that does not fit, is refused.
 */
static void test_grain_inflate(void **state)
{
	uint8_t in[8192], z[9000], out[16384];
	uLongf zlen = sizeof(z);
	void *zs = td_inflate_new_zlib();
	size_t i;

	(void)state;
	assert_non_null(zs);
	for (i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i % 253);
	assert_int_equal(compress(z, &zlen, in, sizeof(in)), Z_OK);
	memset(out, 0xaa, sizeof(out));
	assert_int_equal(td_inflate_stream(zs, z, zlen, out, sizeof(out)), 0);
	assert_memory_equal(out, in, sizeof(in));
	for (i = sizeof(in); i < sizeof(out); i++)
		assert_int_equal(out[i], 0);
	/* Larger than the grain, cut short, or garbage: refused. */
	assert_int_equal(td_inflate_stream(zs, z, zlen, out, 4096), -EINVAL);
	assert_int_equal(td_inflate_stream(zs, z, zlen / 2, out, sizeof(out)),
			 -EINVAL);
	memset(z, 0xff, 64);
	assert_int_equal(td_inflate_stream(zs, z, 64, out, sizeof(out)),
			 -EINVAL);
	td_inflate_free(zs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_round_trip),
		cmocka_unit_test(test_header_refusals),
		cmocka_unit_test(test_desc_parse),
		cmocka_unit_test(test_desc_refusals),
		cmocka_unit_test(test_desc_format),
		cmocka_unit_test(test_marker),
		cmocka_unit_test(test_grain_inflate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
