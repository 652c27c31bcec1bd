/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the VHD format code (drivers/vhd/vhd-format.c): checksum,
 * geometry, footer/header round trips, every validation message, bitmap
 * bit order, UTF-16 and parent locators; and of the image helpers
 * (drivers/vhd/vhd-image.h: vhd-image.c, vhd-create.c, vhd-parent.c,
 * vhd-check.c) on scratch files: create, chains, the write path against a
 * model, parent validation, the check.
 */
#include <sys/stat.h>

#include "unit.h"

#include "vhd/vhd-format.h"
#include "vhd/vhd-image.h"

#define assert_contains(hay, needle)					\
	do {								\
		if (!strstr((hay), (needle)))				\
			fail_msg("\"%s\" does not contain \"%s\"",	\
				 (hay), (needle));			\
	} while (0)

static const uint8_t test_uuid[VHD_UUID_SIZE] = {
	0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
	0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
};

/* Big-endian store, to forge fields in encoded buffers. */
static void be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void be64(uint8_t *p, uint64_t v)
{
	be32(p, (uint32_t)(v >> 32));
	be32(p + 4, (uint32_t)v);
}

/* Recompute a buffer's checksum after forging a field. */
static void fix_footer_csum(uint8_t *buf)
{
	be32(buf + 64, vhd_checksum(buf, VHD_FOOTER_SIZE, 64));
}

static void fix_header_csum(uint8_t *buf)
{
	be32(buf + 36, vhd_checksum(buf, VHD_HEADER_SIZE, 36));
}

static void make_footer(uint8_t *buf, enum vhd_disk_type type,
			uint64_t size)
{
	struct vhd_footer f;

	vhd_footer_init(&f, type, size, 1000, test_uuid);
	vhd_footer_encode(&f, buf);
}

/* A decoded footer of a dynamic disk of size bytes (for header tests). */
static struct vhd_footer dyn_footer(uint64_t size)
{
	struct vhd_footer f;

	vhd_footer_init(&f, VHD_TYPE_DYNAMIC, size, 0, test_uuid);
	return f;
}

/* ---- scalars -------------------------------------------------------- */

static void test_checksum(void **state)
{
	uint8_t buf[VHD_FOOTER_SIZE] = { 0 };

	(void)state;
	assert_int_equal(vhd_checksum(buf, sizeof(buf), 64), 0xffffffffu);
	buf[0] = 1;
	buf[511] = 2;
	assert_int_equal(vhd_checksum(buf, sizeof(buf), 64), ~3u);
	/* The checksum field itself does not count. */
	memset(buf + 64, 0xff, 4);
	assert_int_equal(vhd_checksum(buf, sizeof(buf), 64), ~3u);
	buf[68] = 0xff;
	assert_int_equal(vhd_checksum(buf, sizeof(buf), 64), ~(3u + 0xff));
}

static void check_geometry(uint64_t size, unsigned c, unsigned h,
			   unsigned s)
{
	struct vhd_geometry g;

	vhd_geometry_from_size(size, &g);
	if (g.cylinders != c || g.heads != h || g.sectors != s)
		fail_msg("size %llu: got %u/%u/%u, expected %u/%u/%u",
			 (unsigned long long)size, g.cylinders, g.heads,
			 g.sectors, c, h, s);
}

static void test_geometry(void **state)
{
	struct vhd_geometry g;

	(void)state;
	check_geometry(1 << 20, 30, 4, 17);
	/* QEMU's 100M image: 1004/12/17, as qemu-img writes it. */
	check_geometry(104865792, 1004, 12, 17);
	check_geometry(20ull << 30, 41610, 16, 63);
	/* From 65535*16*63 sectors on: 255 sectors per track. */
	check_geometry(65535ull * 16 * 63 * 512, 16191, 16, 255);
	check_geometry((65535ull * 16 * 63 - 1) * 512, 65534, 16, 63);
	/* The CHS maximum, and beyond it the same maximum. */
	check_geometry(65535ull * 16 * 255 * 512, 65535, 16, 255);
	check_geometry(2000ull << 30, 65535, 16, 255);
	vhd_geometry_from_size(20ull << 30, &g);
	assert_true(vhd_geometry_sectors(&g) <= (20ull << 30) / 512);
}

/* A footer of size bytes by creator app with geometry c/h/s. */
static struct vhd_footer creator_footer(const char app[4], uint64_t size,
					uint16_t c, uint8_t h, uint8_t spt)
{
	struct vhd_footer f;

	vhd_footer_init(&f, VHD_TYPE_DYNAMIC, size, 0, test_uuid);
	memcpy(f.creator_app, app, sizeof(f.creator_app));
	f.geometry.cylinders = c;
	f.geometry.heads = h;
	f.geometry.sectors = spt;
	return f;
}

/*
 * The virtual size by creator: the geometry for "vpc " and "qemu" unless
 * it is the CHS maximum, the current size for everyone else.
 */
static void test_virtual_size(void **state)
{
	/* Virtual PC's 300 MiB disk: 609/16/63, 264 KiB less. */
	static const uint64_t mib300 = 300ull << 20, chs300 = 314302464;
	static const char *const by_size[] = {
		"tap", "win ", "qem2", "d2v ", "CTXS", "vs  ", "vbox",
		"VPC ", "vpc", "QEMU", "\xff\xff\xff\xff",
	};
	struct vhd_footer f;
	size_t i;

	(void)state;
	f = creator_footer("vpc ", mib300, 609, 16, 63);
	assert_int_equal(vhd_footer_virtual_size(&f), chs300);
	assert_true(vhd_footer_size_from_geometry(&f));
	assert_int_equal(mib300 - chs300, 264 << 10);
	f = creator_footer("qemu", mib300, 609, 16, 63);
	assert_int_equal(vhd_footer_virtual_size(&f), chs300);
	assert_true(vhd_footer_size_from_geometry(&f));
	for (i = 0; i < sizeof(by_size) / sizeof(by_size[0]); i++) {
		f = creator_footer(by_size[i], mib300, 609, 16, 63);
		if (vhd_footer_virtual_size(&f) != mib300 ||
		    vhd_footer_size_from_geometry(&f))
			fail_msg("creator \"%.4s\": virtual size %llu",
				 by_size[i], (unsigned long long)
				 vhd_footer_virtual_size(&f));
	}
	/* What tapfs writes: the current size, whatever the geometry. */
	vhd_footer_init(&f, VHD_TYPE_FIXED, mib300, 0, test_uuid);
	assert_int_equal(vhd_footer_virtual_size(&f), mib300);

	/* The CHS maximum means "larger than CHS says": current size. */
	f = creator_footer("vpc ", 200ull << 30, 65535, 16, 255);
	assert_int_equal(vhd_footer_virtual_size(&f), 200ull << 30);
	assert_false(vhd_footer_size_from_geometry(&f));
	f = creator_footer("qemu", 127ull << 30, 65535, 16, 255);
	assert_int_equal(vhd_footer_virtual_size(&f), 127ull << 30);
	/* ... compared as a product, as QEMU does. */
	f = creator_footer("qemu", 1ull << 30, 65535, 255, 16);
	assert_int_equal(vhd_footer_virtual_size(&f), 1ull << 30);
	/* One sector per track less is an ordinary geometry. */
	f = creator_footer("vpc ", 200ull << 30, 65535, 16, 254);
	assert_int_equal(vhd_footer_virtual_size(&f),
			 65535ull * 16 * 254 * 512);
	/* A geometry larger than the current size wins too (QEMU). */
	f = creator_footer("vpc ", 1 << 20, 100, 16, 63);
	assert_int_equal(vhd_footer_virtual_size(&f), 100ull * 16 * 63 * 512);
	/* And no geometry is no disk (QEMU: 0 bytes; tapfs refuses it). */
	f = creator_footer("vpc ", 1 << 20, 0, 0, 0);
	assert_int_equal(vhd_footer_virtual_size(&f), 0);
}

/* The rule applies to footers read from bytes, and to the header check. */
static void test_virtual_size_header(void **state)
{
	uint8_t buf[VHD_HEADER_SIZE], fbuf[VHD_FOOTER_SIZE];
	struct vhd_footer f, d;
	struct vhd_header h;
	char err[256];

	(void)state;
	f = creator_footer("vpc ", 300ull << 20, 609, 16, 63);
	vhd_footer_encode(&f, fbuf);
	assert_int_equal(vhd_footer_decode(fbuf, &d, err, sizeof(err)), 0);
	assert_int_equal(vhd_footer_virtual_size(&d), 314302464);

	/* 302 MiB of current size (151 blocks), 150 blocks of geometry:
	 * a BAT of 150 entries covers what is read and written. */
	f = creator_footer("vpc ", 302ull << 20, 609, 16, 63);
	vhd_header_init(&h, 300ull << 20, VHD_DEFAULT_BLOCK_SIZE, 1536);
	assert_int_equal(h.max_bat_entries, 150);
	vhd_header_encode(&h, buf);
	assert_int_equal(vhd_header_decode(buf, &h, &f, 1 << 20, err,
					   sizeof(err)), 0);
	/* A geometry past the BAT is refused, naming the virtual size. */
	f = creator_footer("qemu", 300ull << 20, 610, 16, 255);
	assert_int_equal(vhd_header_decode(buf, &h, &f, 1 << 20, err,
					   sizeof(err)), -EINVAL);
	assert_contains(err, "max table entries 150 too small: virtual size "
			"1274265600 with block size 2097152 needs 608");
}

/*
 * A block past the virtual size but inside the current size (written
 * while tapfs still sized a Virtual PC disk by its current size) is
 * allowed; past both it is not.
 */
static void test_bat_span(void **state)
{
	/* 1 MiB of 4 KiB blocks; the geometry 30/4/17 gives 255 blocks. */
	struct vhd_footer f = creator_footer("vpc ", 1 << 20, 30, 4, 17);
	struct vhd_header h;
	struct vhd_layout l;
	uint32_t bat[300];
	char err[256];
	struct td_report r = td_report_err(err, sizeof(err));

	(void)state;
	assert_int_equal(vhd_footer_virtual_size(&f), 255 * 4096);
	vhd_header_init(&h, 1 << 20, 4096, 1536);
	h.max_bat_entries = 300;
	vhd_layout_init(&l, &f, &h, 4 << 20);
	assert_int_equal(l.size, 1 << 20);
	memset(bat, 0xff, sizeof(bat));
	bat[255] = 8;
	assert_int_equal(vhd_bat_check(&l, bat, NULL, &r), 0);
	bat[256] = 32;
	assert_int_equal(vhd_bat_check(&l, bat, NULL, &r), -EINVAL);
	assert_contains(err, "BAT entry 256 lies beyond the virtual size "
			"(256 blocks)");
	/* A geometry larger than the current size widens the span. */
	f = creator_footer("vpc ", 1 << 20, 40, 4, 17);
	vhd_layout_init(&l, &f, &h, 4 << 20);
	assert_int_equal(l.size, 40 * 4 * 17 * 512);
}

/* The end of what an image references: the floor of reclaim. */
static void test_data_end(void **state)
{
	struct vhd_footer f = dyn_footer(1 << 20);
	struct vhd_header h;
	uint32_t bat[256];

	(void)state;
	/* Header at 512, BAT of 256 entries (1024 bytes) at 1536. */
	vhd_header_init(&h, 1 << 20, 4096, 1536);
	memset(bat, 0xff, sizeof(bat));
	assert_int_equal(vhd_data_end(&f, &h, bat, 256, 1 << 20), 2560);
	/* A block at sector 6: bitmap (512) and 4 KiB of data. */
	bat[3] = 6;
	assert_int_equal(vhd_data_end(&f, &h, bat, 256, 1 << 20),
			 3072 + 512 + 4096);
	/* Entries past the count given are not looked at. */
	bat[200] = 100;
	assert_int_equal(vhd_data_end(&f, &h, bat, 200, 1 << 20),
			 3072 + 512 + 4096);
	assert_int_equal(vhd_data_end(&f, &h, bat, 201, 1 << 20),
			 51200 + 512 + 4096);
	bat[200] = VHD_BAT_UNUSED;

	/* Locators count in a differencing disk only, through their
	 * reserved space for codes tapfs reads, inside the file only. */
	h.loc[0].code = VHD_PLAT_W2RU;
	h.loc[0].data_offset = 16384;
	h.loc[0].data_len = 100;
	h.loc[0].data_space = 4;		/* sectors */
	assert_int_equal(vhd_data_end(&f, &h, bat, 256, 1 << 20), 7680);
	f.type = VHD_TYPE_DIFF;
	assert_int_equal(vhd_data_end(&f, &h, bat, 256, 1 << 20),
			 16384 + 2048);
	assert_int_equal(vhd_data_end(&f, &h, bat, 256, 16384), 7680);
	h.loc[0].code = VHD_PLAT_WI2R;		/* not read: its length */
	h.loc[0].data_len = 700;
	assert_int_equal(vhd_data_end(&f, &h, bat, 256, 1 << 20),
			 16384 + 1024);
}

static void test_time(void **state)
{
	(void)state;
	assert_int_equal(vhd_time_from_unix(VHD_EPOCH), 0);
	assert_int_equal(vhd_time_from_unix(VHD_EPOCH + 86400), 86400);
	assert_int_equal(vhd_time_from_unix(0), 0);
	assert_true(vhd_time_to_unix(86400) == VHD_EPOCH + 86400);
	/* 2026-01-01 00:00:00 UTC */
	assert_int_equal(vhd_time_from_unix(1767225600), 820540800u);
}

static void test_names(void **state)
{
	char buf[16], u[40];

	(void)state;
	assert_string_equal(vhd_type_name(VHD_TYPE_FIXED), "fixed");
	assert_string_equal(vhd_type_name(VHD_TYPE_DIFF), "differencing");
	assert_string_equal(vhd_type_name(7), "unknown");
	assert_string_equal(vhd_platform_name(VHD_PLAT_W2RU, buf,
					      sizeof(buf)), "W2ru");
	assert_string_equal(vhd_platform_name(VHD_PLAT_MACX, buf,
					      sizeof(buf)), "MacX");
	assert_string_equal(vhd_platform_name(1, buf, sizeof(buf)),
			    "0x00000001");
	vhd_uuid_format(test_uuid, u);
	assert_string_equal(u, "12345678-9abc-def0-0123-456789abcdef");
	assert_false(vhd_uuid_is_nil(test_uuid));
}

/* ---- footer ---------------------------------------------------------- */

static void test_footer_round_trip(void **state)
{
	uint8_t buf[VHD_FOOTER_SIZE];
	struct vhd_footer a, b;
	char err[256];

	(void)state;
	vhd_footer_init(&a, VHD_TYPE_DYNAMIC, 100 << 20, 12345, test_uuid);
	vhd_footer_encode(&a, buf);
	assert_memory_equal(buf, "conectix", 8);
	/* Big-endian fields at the specification's offsets. */
	assert_memory_equal(buf + 12, "\x00\x01\x00\x00", 4);
	assert_memory_equal(buf + 16, "\0\0\0\0\0\0\x02\x00", 8);
	assert_memory_equal(buf + 28, "tap\0", 4);
	assert_memory_equal(buf + 48, "\0\0\0\0\x06\x40\0\0", 8);
	assert_memory_equal(buf + 60, "\0\0\0\x03", 4);
	assert_memory_equal(buf + 68, test_uuid, 16);

	assert_int_equal(vhd_footer_decode(buf, &b, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_memory_equal(b.cookie, a.cookie, 8);
	assert_int_equal(b.features, VHD_FEATURE_RESERVED);
	assert_int_equal(b.version, VHD_FORMAT_VERSION);
	assert_int_equal(b.data_offset, 512);
	assert_int_equal(b.timestamp, 12345);
	assert_int_equal(b.creator_version, VHD_CREATOR_VERSION);
	assert_int_equal(b.orig_size, 100 << 20);
	assert_int_equal(b.curr_size, 100 << 20);
	assert_int_equal(b.geometry.cylinders, a.geometry.cylinders);
	assert_int_equal(b.geometry.heads, a.geometry.heads);
	assert_int_equal(b.geometry.sectors, a.geometry.sectors);
	assert_int_equal(b.type, VHD_TYPE_DYNAMIC);
	assert_int_equal(b.checksum, a.checksum);
	assert_memory_equal(b.uuid, test_uuid, 16);

	vhd_footer_init(&a, VHD_TYPE_FIXED, 1 << 20, 0, test_uuid);
	vhd_footer_encode(&a, buf);
	assert_int_equal(vhd_footer_decode(buf, &b, err, sizeof(err)), 0);
	assert_true(b.data_offset == VHD_NO_OFFSET);
}

/* Decode buf, expecting ret and a message containing want. */
static void footer_expect(const uint8_t *buf, int ret, const char *want)
{
	struct vhd_footer f;
	char err[256];

	assert_int_equal(vhd_footer_decode(buf, &f, err, sizeof(err)), ret);
	assert_contains(err, want);
}

static void test_footer_errors(void **state)
{
	uint8_t buf[VHD_FOOTER_SIZE];
	char want[128];
	uint32_t sum;

	(void)state;
	make_footer(buf, VHD_TYPE_DYNAMIC, 1 << 20);
	memcpy(buf, "conectiX", 8);
	footer_expect(buf, -EINVAL,
		      "bad footer cookie \"conectiX\" (expected \"conectix\")");
	memset(buf, 0, 8);
	footer_expect(buf, -EINVAL, "bad footer cookie \"\\x00\\x00");

	make_footer(buf, VHD_TYPE_DYNAMIC, 1 << 20);
	buf[100] ^= 1;
	sum = vhd_checksum(buf, VHD_FOOTER_SIZE, 64);
	snprintf(want, sizeof(want), "bad footer checksum: expected 0x%08x, "
		 "found 0x%08x", sum, sum + 1);
	footer_expect(buf, -EINVAL, want);

	make_footer(buf, VHD_TYPE_DYNAMIC, 1 << 20);
	be32(buf + 12, 0x00020000);
	fix_footer_csum(buf);
	footer_expect(buf, -ENOTSUP, "unsupported footer format version "
		      "0x00020000 (expected 0x00010000)");

	make_footer(buf, VHD_TYPE_DYNAMIC, 1 << 20);
	be32(buf + 60, 5);
	fix_footer_csum(buf);
	footer_expect(buf, -ENOTSUP, "unsupported disk type 5");
	be32(buf + 60, 0);
	fix_footer_csum(buf);
	footer_expect(buf, -ENOTSUP, "unsupported disk type 0");

	make_footer(buf, VHD_TYPE_FIXED, 1 << 20);
	be64(buf + 48, 1000);
	fix_footer_csum(buf);
	footer_expect(buf, -EINVAL, "current size 1000 is not a multiple of "
		      "512");

	make_footer(buf, VHD_TYPE_FIXED, 1 << 20);
	be64(buf + 48, VHD_MAX_SIZE + 512);
	fix_footer_csum(buf);
	footer_expect(buf, -EFBIG, "exceeds the VHD maximum");

	make_footer(buf, VHD_TYPE_DYNAMIC, 1 << 20);
	be64(buf + 16, VHD_NO_OFFSET);
	fix_footer_csum(buf);
	footer_expect(buf, -EINVAL, "data offset 0xffffffffffffffff of a "
		      "dynamic disk does not point to a dynamic header");
}

static void collect(void *arg, const char *msg)
{
	char *all = arg;

	strcat(all, msg);
	strcat(all, "\n");
}

static void test_footer_all_problems(void **state)
{
	uint8_t buf[VHD_FOOTER_SIZE];
	char all[2048] = "", first[256];
	struct td_report r = td_report_err(first, sizeof(first));
	struct vhd_footer f;

	(void)state;
	r.fn = collect;
	r.arg = all;
	make_footer(buf, VHD_TYPE_DYNAMIC, 1 << 20);
	be32(buf + 60, 9);
	be64(buf + 48, 777);
	/* checksum now wrong too: three problems, the first one kept */
	assert_int_equal(vhd_footer_parse(buf, &f, &r), -EINVAL);
	assert_int_equal(r.count, 3);
	assert_contains(first, "bad footer checksum");
	assert_contains(all, "unsupported disk type 9");
	assert_contains(all, "current size 777");
}

/* ---- header ---------------------------------------------------------- */

/* A valid 1 MiB dynamic header with 4 KiB blocks, BAT at 1536. */
static void make_header(uint8_t *buf, struct vhd_header *h)
{
	vhd_header_init(h, 1 << 20, 4096, 1536);
	vhd_header_encode(h, buf);
}

static void header_expect(const uint8_t *buf, const struct vhd_footer *f,
			  uint64_t footer_off, int ret, const char *want)
{
	struct vhd_header h;
	char err[256];

	assert_int_equal(vhd_header_decode(buf, &h, f, footer_off, err,
					   sizeof(err)), ret);
	assert_contains(err, want);
}

static void test_header_round_trip(void **state)
{
	struct vhd_footer f = dyn_footer(1 << 20);
	uint8_t buf[VHD_HEADER_SIZE];
	struct vhd_header a, b;
	char err[256], name[64];

	(void)state;
	make_header(buf, &a);
	assert_memory_equal(buf, "cxsparse", 8);
	assert_memory_equal(buf + 8, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
	assert_memory_equal(buf + 24, "\x00\x01\x00\x00", 4);
	assert_memory_equal(buf + 28, "\0\0\x01\0", 4);		/* 256 */
	assert_memory_equal(buf + 32, "\0\0\x10\0", 4);		/* 4096 */
	assert_int_equal(vhd_header_decode(buf, &b, &f, 1 << 20, err,
					   sizeof(err)), 0);
	assert_int_equal(b.table_offset, 1536);
	assert_int_equal(b.max_bat_entries, 256);
	assert_int_equal(b.block_size, 4096);
	assert_int_equal(b.checksum, a.checksum);

	/* Differencing fields and a locator survive the trip. */
	f.type = VHD_TYPE_DIFF;
	memcpy(a.parent_uuid, test_uuid, 16);
	a.parent_timestamp = 777;
	assert_int_equal(vhd_parent_name_set(&a, "base.vhd"), 0);
	a.loc[0] = (struct vhd_locator){ VHD_PLAT_W2RU, 1, 20, 0, 4096 };
	vhd_header_encode(&a, buf);
	assert_memory_equal(buf + 64, "\0b\0a\0s\0e", 8);	/* UTF-16BE */
	assert_memory_equal(buf + 576, "W2ru", 4);
	assert_int_equal(vhd_header_decode(buf, &b, &f, 1 << 20, err,
					   sizeof(err)), 0);
	assert_memory_equal(b.parent_uuid, test_uuid, 16);
	assert_int_equal(b.parent_timestamp, 777);
	assert_int_equal(b.loc[0].code, VHD_PLAT_W2RU);
	assert_int_equal(b.loc[0].data_space, 1);
	assert_int_equal(b.loc[0].data_len, 20);
	assert_int_equal(b.loc[0].data_offset, 4096);
	assert_int_equal(vhd_parent_name_get(&b, name, sizeof(name)), 0);
	assert_string_equal(name, "base.vhd");
}

static void test_header_errors(void **state)
{
	struct vhd_footer f = dyn_footer(1 << 20);
	uint8_t buf[VHD_HEADER_SIZE];
	struct vhd_header h;
	uint32_t sum;
	char want[128];

	(void)state;
	make_header(buf, &h);
	memcpy(buf, "cxspars\x01", 8);
	header_expect(buf, &f, 1 << 20, -EINVAL, "bad dynamic header cookie "
		      "\"cxspars\\x01\" at offset 0x200 (expected \"cxsparse\")");

	make_header(buf, &h);
	buf[900] = 7;
	sum = vhd_checksum(buf, VHD_HEADER_SIZE, 36);
	snprintf(want, sizeof(want), "bad dynamic header checksum: expected "
		 "0x%08x, found 0x%08x", sum, sum + 7);
	header_expect(buf, &f, 1 << 20, -EINVAL, want);

	make_header(buf, &h);
	be32(buf + 24, 0x00030000);
	fix_header_csum(buf);
	header_expect(buf, &f, 1 << 20, -ENOTSUP, "unsupported dynamic "
		      "header version 0x00030000");

	make_header(buf, &h);
	be32(buf + 32, 0);
	fix_header_csum(buf);
	header_expect(buf, &f, 1 << 20, -EINVAL, "block size 0");
	be32(buf + 32, 3000);
	fix_header_csum(buf);
	header_expect(buf, &f, 1 << 20, -EINVAL,
		      "block size 3000 is not a power of two");
	be32(buf + 32, 256);
	fix_header_csum(buf);
	header_expect(buf, &f, 1 << 20, -EINVAL,
		      "block size 256 is smaller than one sector (512)");
	be32(buf + 32, 512u << 20);
	fix_header_csum(buf);
	header_expect(buf, &f, 1 << 20, -ENOTSUP,
		      "block size 536870912 is larger than the 268435456 "
		      "bytes (256 MiB) supported");

	make_header(buf, &h);
	be32(buf + 28, 255);
	fix_header_csum(buf);
	header_expect(buf, &f, 1 << 20, -EINVAL, "max table entries 255 too "
		      "small: virtual size 1048576 with block size 4096 "
		      "needs 256");

	/* BAT of 256 entries (1024 bytes) at 1536 needs the footer >= 2560 */
	make_header(buf, &h);
	header_expect(buf, &f, 2048, -EINVAL, "BAT at offset 0x600 (256 "
		      "entries, 1024 bytes) runs past the end of the file "
		      "(footer at 0x800)");
	be64(buf + 16, 1ull << 40);
	fix_header_csum(buf);
	header_expect(buf, &f, 1 << 20, -EINVAL, "runs past the end of the "
		      "file");
	be64(buf + 16, 256);
	fix_header_csum(buf);
	header_expect(buf, &f, 1 << 20, -EINVAL, "overlaps the footer copy");
	be64(buf + 16, 1024);
	fix_header_csum(buf);
	header_expect(buf, &f, 1 << 20, -EINVAL,
		      "BAT at offset 0x400 overlaps the dynamic header at 0x200");
}

static void test_header_locator_errors(void **state)
{
	struct vhd_footer f = dyn_footer(1 << 20);
	uint8_t buf[VHD_HEADER_SIZE];
	struct vhd_header h;

	(void)state;
	f.type = VHD_TYPE_DIFF;
	vhd_header_init(&h, 1 << 20, 4096, 1536);
	h.loc[1] = (struct vhd_locator){ VHD_PLAT_W2KU, 1, 20, 0, 1 << 20 };
	vhd_header_encode(&h, buf);
	header_expect(buf, &f, 1 << 20, -EINVAL, "parent locator 1 (W2ku): "
		      "data at offset 0x100000 (20 bytes) lies outside the file");
	h.loc[1] = (struct vhd_locator){ VHD_PLAT_W2KU, 1, 600, 0, 4096 };
	vhd_header_encode(&h, buf);
	header_expect(buf, &f, 1 << 20, -EINVAL, "parent locator 1 (W2ku): "
		      "data length 600 exceeds its data space of 512 bytes");
	h.loc[1] = (struct vhd_locator){ VHD_PLAT_MACX, 700, 20, 0, 4096 };
	vhd_header_encode(&h, buf);
	header_expect(buf, &f, 1 << 20, -EINVAL, "parent locator 1 (MacX): "
		      "data space 700 is neither sectors nor a multiple of 512");
	/* Unknown or deprecated codes are ignored, not refused. */
	h.loc[1] = (struct vhd_locator){ VHD_PLAT_WI2K, 700, 20, 0, 1 << 30 };
	vhd_header_encode(&h, buf);
	header_expect(buf, &f, 1 << 20, 0, "");
}

/* ---- BAT -------------------------------------------------------------- */

/*
 * 1 MiB disk, 4 KiB blocks (bitmap 512): 256 entries at 1536, footer at
 * 64 KiB.  Blocks are 4608 bytes.
 */
static void bat_layout(struct vhd_layout *l)
{
	struct vhd_footer f = dyn_footer(1 << 20);
	struct vhd_header h;

	vhd_header_init(&h, 1 << 20, 4096, 1536);
	vhd_layout_init(l, &f, &h, 64 << 10);
}

static void bat_expect(const uint32_t *bat, int ret, const char *want)
{
	struct vhd_layout l;
	uint64_t scratch[256];
	char err[256];
	struct td_report r = td_report_err(err, sizeof(err));

	bat_layout(&l);
	assert_int_equal(vhd_bat_check(&l, bat, scratch, &r), ret);
	assert_contains(err, want);
}

static void test_bat(void **state)
{
	uint32_t bat[256];
	uint8_t raw[1024];
	uint32_t back[256];

	(void)state;
	memset(bat, 0xff, sizeof(bat));
	bat[0] = 2560 / 512;
	bat[1] = (2560 + 4608) / 512;
	bat_expect(bat, 0, "");

	vhd_bat_encode(bat, 256, raw);
	assert_memory_equal(raw, "\0\0\0\x05\0\0\0\x0e\xff\xff\xff\xff", 12);
	vhd_bat_decode(raw, 256, back);
	assert_memory_equal(back, bat, sizeof(bat));

	bat[5] = 0x00ffffff;
	bat_expect(bat, -EINVAL, "BAT entry 5 points past the end of the "
		   "file: block at 0x1fffffe00-0x200001000, data ends at "
		   "0x10000");
	bat[5] = VHD_BAT_UNUSED;
	bat[6] = 1536 / 512;
	bat_expect(bat, -EINVAL, "BAT entry 6: block at 0x600-0x1800 "
		   "overlaps the BAT at 0x600-0xa00");
	bat[6] = 0;
	bat_expect(bat, -EINVAL, "overlaps the footer copy at 0x0-0x200");
	bat[6] = 2560 / 512 + 1;
	bat_expect(bat, -EINVAL, "BAT entries 0 and 6 overlap: blocks at "
		   "0xa00 and 0xc00");
}

static void test_bat_beyond_size(void **state)
{
	struct vhd_footer f = dyn_footer(1 << 20);
	struct vhd_header h;
	struct vhd_layout l;
	uint32_t bat[300];
	uint64_t scratch[300];
	char err[256];
	struct td_report r = td_report_err(err, sizeof(err));

	(void)state;
	vhd_header_init(&h, 1 << 20, 4096, 1536);
	h.max_bat_entries = 300;
	vhd_layout_init(&l, &f, &h, 64 << 10);
	memset(bat, 0xff, sizeof(bat));
	bat[299] = 6;
	assert_int_equal(vhd_bat_check(&l, bat, scratch, &r), -EINVAL);
	assert_contains(err, "BAT entry 299 lies beyond the virtual size "
			"(256 blocks) but is allocated at sector 0x6");
}

/* ---- bitmaps ---------------------------------------------------------- */

static void test_bitmap(void **state)
{
	uint8_t map[512] = { 0 };
	bool present;

	(void)state;
	assert_int_equal(vhd_bitmap_size(2u << 20), 512);
	assert_int_equal(vhd_bitmap_size(512), 512);
	assert_int_equal(vhd_bitmap_size(4u << 20), 1024);
	assert_int_equal(vhd_bitmap_size(256u << 20), 65536);

	/* Most significant bit first. */
	vhd_bitmap_set(map, 0);
	assert_int_equal(map[0], 0x80);
	vhd_bitmap_set(map, 7);
	assert_int_equal(map[0], 0x81);
	vhd_bitmap_set(map, 8);
	assert_int_equal(map[1], 0x80);
	assert_true(vhd_bitmap_test(map, 7));
	assert_false(vhd_bitmap_test(map, 6));
	vhd_bitmap_clear(map, 7);
	assert_int_equal(map[0], 0x80);

	memset(map, 0, sizeof(map));
	vhd_bitmap_set_range(map, 5, 20);	/* 5..24 */
	assert_int_equal(map[0], 0x07);
	assert_int_equal(map[1], 0xff);
	assert_int_equal(map[2], 0xff);
	assert_int_equal(map[3], 0x80);
	assert_int_equal(vhd_bitmap_count(map, 0, 4096), 20);
	assert_int_equal(vhd_bitmap_count(map, 10, 10), 10);

	assert_int_equal(vhd_bitmap_run(map, 0, 4096, &present), 5);
	assert_false(present);
	assert_int_equal(vhd_bitmap_run(map, 5, 4096, &present), 20);
	assert_true(present);
	assert_int_equal(vhd_bitmap_run(map, 6, 3, &present), 3);
	assert_int_equal(vhd_bitmap_run(map, 25, 4096 - 25, &present),
			 4096 - 25);
	assert_false(present);
}

/* ---- UTF-16 --------------------------------------------------------- */

static void test_utf16(void **state)
{
	uint8_t out[64];
	char back[64];
	size_t len;

	(void)state;
	assert_int_equal(vhd_utf8_to_utf16("ab", true, out, sizeof(out),
					   &len), 0);
	assert_int_equal(len, 4);
	assert_memory_equal(out, "\0a\0b", 4);
	assert_int_equal(vhd_utf8_to_utf16("ab", false, out, sizeof(out),
					   &len), 0);
	assert_memory_equal(out, "a\0b\0", 4);

	/* e-acute and U+1F600 (a surrogate pair) */
	assert_int_equal(vhd_utf8_to_utf16("\xc3\xa9\xf0\x9f\x98\x80", true,
					   out, sizeof(out), &len), 0);
	assert_int_equal(len, 6);
	assert_memory_equal(out, "\x00\xe9\xd8\x3d\xde\x00", 6);
	assert_int_equal(vhd_utf16_to_utf8(out, len, true, back,
					   sizeof(back)), 0);
	assert_string_equal(back, "\xc3\xa9\xf0\x9f\x98\x80");

	/* invalid UTF-8: lone continuation, overlong, a surrogate */
	assert_int_equal(vhd_utf8_to_utf16("\x80", true, out, sizeof(out),
					   &len), -EILSEQ);
	assert_int_equal(vhd_utf8_to_utf16("\xc0\xaf", true, out, sizeof(out),
					   &len), -EILSEQ);
	assert_int_equal(vhd_utf8_to_utf16("\xed\xa0\x80", true, out,
					   sizeof(out), &len), -EILSEQ);
	assert_int_equal(vhd_utf8_to_utf16("abc", true, out, 4, &len),
			 -ENAMETOOLONG);

	/* unpaired surrogates, odd length */
	assert_int_equal(vhd_utf16_to_utf8((const uint8_t *)"\xdc\x00", 2,
					   true, back, sizeof(back)), -EILSEQ);
	assert_int_equal(vhd_utf16_to_utf8((const uint8_t *)"\xd8\x3d\0a", 4,
					   true, back, sizeof(back)), -EILSEQ);
	assert_int_equal(vhd_utf16_to_utf8((const uint8_t *)"\0a\0", 3, true,
					   back, sizeof(back)), -EILSEQ);
	/* stops at the first NUL unit */
	assert_int_equal(vhd_utf16_to_utf8((const uint8_t *)"\0a\0\0\0b", 6,
					   true, back, sizeof(back)), 0);
	assert_string_equal(back, "a");
	assert_int_equal(vhd_utf16_to_utf8((const uint8_t *)"\0a\0b", 4, true,
					   back, 2), -ENAMETOOLONG);
}

static void test_parent_name(void **state)
{
	struct vhd_header h;
	char name[600], big[300];

	(void)state;
	memset(&h, 0, sizeof(h));
	assert_int_equal(vhd_parent_name_set(&h, "disk \xc3\xa9.vhd"), 0);
	assert_memory_equal(h.parent_name, "\0d\0i\0s\0k\0 \0\xe9\0.", 14);
	assert_int_equal(vhd_parent_name_get(&h, name, sizeof(name)), 0);
	assert_string_equal(name, "disk \xc3\xa9.vhd");
	/* 256 UTF-16 units fit, 257 do not */
	memset(big, 'x', 256);
	big[256] = '\0';
	assert_int_equal(vhd_parent_name_set(&h, big), 0);
	big[256] = 'x';
	big[257] = '\0';
	assert_int_equal(vhd_parent_name_set(&h, big), -ENAMETOOLONG);
}

/* ---- parent locators ------------------------------------------------ */

static void locator_round_trip(uint32_t code, const char *path,
			       const char *encoded, size_t enclen,
			       const char *decoded)
{
	uint8_t out[VHD_MAX_LOCATOR_BYTES];
	char back[4096], err[256];
	size_t len;

	assert_int_equal(vhd_locator_encode(code, path, out, sizeof(out),
					    &len), 0);
	assert_int_equal(len, enclen);
	assert_memory_equal(out, encoded, enclen);
	assert_int_equal(vhd_locator_decode(code, out, len, back,
					    sizeof(back), err, sizeof(err)), 0);
	assert_string_equal(back, decoded);
}

static void decode_expect(uint32_t code, const char *data, size_t len,
			  int ret, const char *want)
{
	char back[256], err[256];

	assert_int_equal(vhd_locator_decode(code, (const uint8_t *)data, len,
					    back, sizeof(back), err,
					    sizeof(err)), ret);
	if (ret)
		assert_contains(err, want);
	else
		assert_string_equal(back, want);
}

static void test_locators(void **state)
{
	uint8_t out[64];
	size_t len;

	(void)state;
	/* W2ru: ".\" prefixed, backslashes, UTF-16LE */
	locator_round_trip(VHD_PLAT_W2RU, "base.vhd",
			   ".\0\\\0b\0a\0s\0e\0.\0v\0h\0d\0", 20, "./base.vhd");
	locator_round_trip(VHD_PLAT_W2RU, "./b.vhd", ".\0\\\0b\0.\0v\0h\0d\0",
			   14, "./b.vhd");
	locator_round_trip(VHD_PLAT_W2RU, "../x/b", ".\0.\0\\\0x\0\\\0b\0",
			   12, "../x/b");
	/* W2ku: absolute */
	locator_round_trip(VHD_PLAT_W2KU, "/s/a.vhd",
			   "\\\0s\0\\\0a\0.\0v\0h\0d\0", 16, "/s/a.vhd");
	/* MacX: file URL, escaped */
	locator_round_trip(VHD_PLAT_MACX, "/srv/a b%.vhd",
			   "file:///srv/a%20b%25.vhd", 24, "/srv/a b%.vhd");

	/* what does not fit a code */
	assert_int_equal(vhd_locator_encode(VHD_PLAT_W2RU, "/abs", out,
					    sizeof(out), &len), -EINVAL);
	assert_int_equal(vhd_locator_encode(VHD_PLAT_W2KU, "rel", out,
					    sizeof(out), &len), -EINVAL);
	assert_int_equal(vhd_locator_encode(VHD_PLAT_MACX, "rel", out,
					    sizeof(out), &len), -EINVAL);
	assert_int_equal(vhd_locator_encode(VHD_PLAT_W2KU, "/a\\b", out,
					    sizeof(out), &len), -EINVAL);
	assert_int_equal(vhd_locator_encode(VHD_PLAT_MAC, "/a", out,
					    sizeof(out), &len), -EINVAL);
	assert_int_equal(vhd_locator_encode(VHD_PLAT_W2KU, "/aaaaaaaa", out,
					    8, &len), -ENAMETOOLONG);

	/* what other writers produce */
	decode_expect(VHD_PLAT_W2KU, "C\0:\0\\\0x\0.\0v\0h\0d\0\0\0", 18, 0,
		      "/x.vhd");
	decode_expect(VHD_PLAT_MACX, "file://./base.vhd", 17, 0,
		      "./base.vhd");
	decode_expect(VHD_PLAT_MACX, "file://localhost/a.vhd\0\0", 24, 0,
		      "/a.vhd");
	decode_expect(VHD_PLAT_MACX, "http://x", 8, -EINVAL,
		      "MacX locator does not start with \"file://\"");
	decode_expect(VHD_PLAT_MACX, "file:///a%2", 11, -EINVAL,
		      "bad escape at byte 9");
	decode_expect(VHD_PLAT_MACX, "file:///a%00", 12, -EINVAL,
		      "bad escape");
	decode_expect(VHD_PLAT_W2RU, "\0\xdc", 2, -EILSEQ,
		      "W2ru locator is not valid UTF-16LE");
	decode_expect(VHD_PLAT_W2RU, "\0\0", 2, -EINVAL,
		      "W2ru locator holds an empty path");
	decode_expect(VHD_PLAT_MAC, "x", 1, -ENOTSUP,
		      "parent locator platform Mac  is not supported");
}

static void test_locator_space(void **state)
{
	struct vhd_locator l = { .code = VHD_PLAT_W2RU };

	(void)state;
	l.data_space = 1;		/* sectors, as specified */
	assert_int_equal(vhd_locator_space(&l), 512);
	l.data_space = 511;
	assert_int_equal(vhd_locator_space(&l), 511 * 512);
	l.data_space = 512;		/* bytes, as Microsoft and blktap */
	assert_int_equal(vhd_locator_space(&l), 512);
	l.data_space = 1024;
	assert_int_equal(vhd_locator_space(&l), 1024);
	l.data_space = 1000;
	assert_int_equal(vhd_locator_space(&l), 0);
}

/* ---- image helpers on scratch files ---------------------------------- */

struct scratch {
	char	dir[256];
};

static int scratch_setup(void **state)
{
	struct scratch *s = calloc(1, sizeof(*s));

	assert_non_null(s);
	snprintf(s->dir, sizeof(s->dir), "%s/tapfs-unit-vhd.XXXXXX",
		 unit_tmpdir());
	assert_non_null(mkdtemp(s->dir));
	*state = s;
	return 0;
}

static int scratch_teardown(void **state)
{
	struct scratch *s = *state;
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", s->dir);
	free(s);
	return 0;
}

static void spath(const struct scratch *s, const char *name, char *out,
		  size_t len)
{
	snprintf(out, len, "%s/%s", s->dir, name);
}

static void check_clean(const char *path, unsigned max_warnings)
{
	struct td_check_result res;
	char err[256];

	assert_int_equal(vhd_image_check(path, NULL, NULL, &res, err,
					 sizeof(err)), 0);
	if (res.errors || res.warnings > max_warnings)
		fail_msg("%s: %u errors, %u warnings", path, res.errors,
			 res.warnings);
}

static void create_vhd(const char *path, enum vhd_disk_type type,
		       uint64_t size, uint32_t bs, const char *parent,
		       bool raw)
{
	struct vhd_create_params p = {
		.type = type, .size = size, .block_size = bs,
		.parent = parent, .parent_raw = raw,
	};
	char err[512];

	if (vhd_image_create(path, &p, err, sizeof(err)))
		fail_msg("%s", err);
}

/* Fill buf with a pattern identifying (image, sector). */
static void pattern(uint8_t *buf, uint32_t secs, uint64_t sec, int tag)
{
	uint32_t i;

	for (i = 0; i < secs * 512; i++)
		buf[i] = (uint8_t)(tag * 31 + (sec + i / 512) * 7 + i);
}

/*
 * base (dynamic, 4 KiB blocks) <- mid <- top (differencing), each
 * written with partial, unaligned ranges through the vhd driver (a VBD,
 * as the daemon writes); a model of what every sector holds is compared
 * with reads through the chain, and the bitmaps record only what was
 * written.
 */
static void test_image_chain_model(void **state)
{
	struct scratch *s = *state;
	enum { SIZE = 256 << 10, SECS = SIZE / 512 };
	static const struct { int img; uint64_t sec; uint32_t n; } w[] = {
		{ 0, 0, 3 }, { 0, 7, 20 }, { 0, 100, 1 }, { 0, 500, 12 },
		{ 1, 2, 4 }, { 1, 8, 8 }, { 1, 30, 70 }, { 1, 511, 1 },
		{ 2, 1, 1 }, { 2, 9, 2 }, { 2, 64, 200 }, { 2, 300, 5 },
	};
	char path[3][300], spec[320], err[512];
	struct vhd_image *img;
	struct unit_vbd u;
	uint8_t *model, *buf, *got;
	unsigned i, k;

	spath(s, "base.vhd", path[0], sizeof(path[0]));
	spath(s, "mid.vhd", path[1], sizeof(path[1]));
	spath(s, "top.vhd", path[2], sizeof(path[2]));
	model = calloc(1, SIZE);
	buf = malloc(SIZE);
	got = malloc(SIZE);
	assert_true(model && buf && got);

	create_vhd(path[0], VHD_TYPE_DYNAMIC, SIZE, 4096, NULL, false);
	for (k = 0; k < 3; k++) {
		if (k)
			create_vhd(path[k], VHD_TYPE_DIFF, 0, 4096,
				   path[k - 1], false);
		unit_fmt(spec, "vhd:%s", path[k]);
		assert_int_equal(unit_vbd_open(&u, spec, 0), 0);
		for (i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
			if (w[i].img != (int)k)
				continue;
			pattern(buf, w[i].n, w[i].sec, (int)k + 1);
			assert_int_equal(unit_vbd_io(&u, TD_OP_WRITE, w[i].sec,
						     w[i].n, buf), 0);
			memcpy(model + w[i].sec * 512, buf, w[i].n * 512);
		}
		/* A rewrite inside an allocated block keeps its neighbours. */
		if (k == 2) {
			pattern(buf, 1, 10, 9);
			assert_int_equal(unit_vbd_io(&u, TD_OP_WRITE, 10, 1,
						     buf), 0);
			memcpy(model + 10 * 512, buf, 512);
		}
		assert_int_equal(unit_vbd_io(&u, TD_OP_WRITE, SECS, 1, buf),
				 -ENOSPC);
		assert_int_equal(unit_vbd_io(&u, TD_OP_FLUSH, 0, 0, NULL), 0);
		unit_vbd_close(&u);
		check_clean(path[k], 0);
	}

	snprintf(spec, sizeof(spec), "vhd:%s", path[2]);
	assert_int_equal(unit_vbd_open(&u, spec, TD_OPEN_RDONLY), 0);
	assert_int_equal(vbd_chain_length(u.v), 3);
	assert_int_equal(unit_vbd_io(&u, TD_OP_READ, 0, SECS, got), 0);
	assert_memory_equal(got, model, SIZE);
	/* Unaligned reads across blocks and images. */
	assert_int_equal(unit_vbd_io(&u, TD_OP_READ, 5, 37, got), 0);
	assert_memory_equal(got, model + 5 * 512, 37 * 512);
	unit_vbd_close(&u);

	/* The bitmap records only what was written. */
	assert_int_equal(vhd_image_open(&img, path[2], VHD_IMAGE_RDONLY, err,
					sizeof(err)), 0);
	{
		uint64_t secs;
		uint32_t blocks;

		assert_int_equal(vhd_image_allocated(img, &secs, &blocks), 0);
		assert_int_equal(secs, 1 + 2 + 200 + 5);
		assert_int_equal(blocks, 1 + 1 + 25 + 2);
	}
	vhd_image_close(img);
	free(model);
	free(buf);
	free(got);
}

/* A raw parent: nil parent UUID, reads fall through to the file. */
static void test_image_raw_parent(void **state)
{
	struct scratch *s = *state;
	char raw[300], child[300], spec[320], err[512];
	struct vhd_image *img;
	struct unit_vbd u;
	uint8_t buf[4096], got[8192];
	int fd;

	spath(s, "base.raw", raw, sizeof(raw));
	spath(s, "child.vhd", child, sizeof(child));
	fd = open(raw, O_CREAT | O_WRONLY | O_EXCL, 0644);
	assert_true(fd >= 0);
	pattern(buf, 8, 0, 5);
	assert_int_equal(pwrite(fd, buf, sizeof(buf), 0), sizeof(buf));
	assert_int_equal(ftruncate(fd, 64 << 10), 0);
	close(fd);

	create_vhd(child, VHD_TYPE_DIFF, 0, 0, raw, true);
	assert_int_equal(vhd_image_open(&img, child, 0, err, sizeof(err)), 0);
	assert_true(vhd_image_parent_is_raw(img));
	assert_int_equal(vhd_image_size(img), 64 << 10);
	vhd_image_close(img);
	snprintf(spec, sizeof(spec), "vhd:%s", child);
	memset(buf, 0xee, 512);
	assert_int_equal(unit_image_write(spec, 3, 1, buf), 0);

	assert_int_equal(unit_vbd_open(&u, spec, TD_OPEN_RDONLY), 0);
	assert_int_equal(vbd_chain_length(u.v), 2);
	assert_string_equal(vbd_image(u.v, 1)->ops->name, "aio");
	assert_int_equal(unit_vbd_io(&u, TD_OP_READ, 0, 16, got), 0);
	pattern(buf, 8, 0, 5);
	assert_memory_equal(got, buf, 3 * 512);
	assert_int_equal(got[3 * 512], 0xee);
	assert_memory_equal(got + 4 * 512, buf + 4 * 512, 4 * 512);
	unit_vbd_close(&u);
	check_clean(child, 0);
}

/* A swapped parent is refused naming both files; a missing one too. */
static void test_image_parent_errors(void **state)
{
	struct scratch *s = *state;
	char a[300], b[300], child[300], moved[300], spec[320];
	struct unit_vbd u;

	spath(s, "a.vhd", a, sizeof(a));
	spath(s, "b.vhd", b, sizeof(b));
	spath(s, "child.vhd", child, sizeof(child));
	spath(s, "sub", moved, sizeof(moved));
	create_vhd(a, VHD_TYPE_DYNAMIC, 1 << 20, 0, NULL, false);
	create_vhd(b, VHD_TYPE_DYNAMIC, 1 << 20, 0, NULL, false);
	create_vhd(child, VHD_TYPE_DIFF, 0, 0, a, false);

	assert_int_equal(rename(b, a), 0);
	snprintf(spec, sizeof(spec), "vhd:%s", child);
	assert_int_equal(unit_vbd_open(&u, spec, TD_OPEN_RDONLY), -EINVAL);
	assert_contains(u.err, "parent UUID mismatch: ");
	assert_contains(u.err, child);
	assert_contains(u.err, a);

	assert_int_equal(unlink(a), 0);
	assert_int_equal(unit_vbd_open(&u, spec, TD_OPEN_RDONLY), -ENOENT);
	assert_contains(u.err, "parent not found; tried ");
	assert_contains(u.err, "/a.vhd (W2ru): No such file or directory");

	/* The relative locator wins when the pair moves together. */
	create_vhd(a, VHD_TYPE_DYNAMIC, 1 << 20, 0, NULL, false);
	unlink(child);
	create_vhd(child, VHD_TYPE_DIFF, 0, 0, a, false);
	assert_int_equal(mkdir(moved, 0755), 0);
	unit_fmt(b, "%s/a.vhd", moved);
	assert_int_equal(rename(a, b), 0);
	unit_fmt(a, "%s/child.vhd", moved);
	assert_int_equal(rename(child, a), 0);
	snprintf(spec, sizeof(spec), "vhd:%s", a);
	assert_int_equal(unit_vbd_open(&u, spec, TD_OPEN_RDONLY), 0);
	assert_int_equal(vbd_chain_length(u.v), 2);
	assert_contains(vbd_image(u.v, 1)->name, "/sub/a.vhd");
	unit_vbd_close(&u);
}

/* A corrupt trailing footer: open uses the backup, check reports it. */
static void test_image_backup_footer(void **state)
{
	struct scratch *s = *state;
	char p[300], err[512];
	struct td_check_result res;
	struct vhd_image *img;
	struct stat st;
	uint8_t byte = 0x5a;
	int fd;

	spath(s, "bk.vhd", p, sizeof(p));
	create_vhd(p, VHD_TYPE_DYNAMIC, 1 << 20, 0, NULL, false);
	assert_int_equal(stat(p, &st), 0);
	fd = open(p, O_WRONLY);
	assert_int_equal(pwrite(fd, &byte, 1, st.st_size - 512 + 40), 1);
	close(fd);

	assert_int_equal(vhd_image_open(&img, p, VHD_IMAGE_RDONLY, err,
					sizeof(err)), 0);
	assert_true(img->footer_from_backup);
	assert_contains(img->warning, "footer at the end of the file is "
			"invalid (bad footer checksum");
	assert_contains(img->warning, "using the backup copy at offset 0");
	vhd_image_close(img);

	assert_int_equal(vhd_image_check(p, NULL, NULL, &res, err,
					 sizeof(err)), 0);
	assert_int_equal(res.errors, 1);
}

static void collect_check(void *arg, enum td_severity sev, const char *m)
{
	char *all = arg;

	strcat(all, sev == TD_SEV_WARNING ? "warning: " : "error: ");
	strcat(all, m);
	strcat(all, "\n");
}

/* Bits past the virtual size: a warning, unless the bitmap is all ones. */
static void test_image_check_bitmap_tail(void **state)
{
	struct scratch *s = *state;
	char p[300], spec[320], err[512], all[4096] = "";
	struct td_check_result res;
	struct vhd_image *img;
	uint8_t buf[512] = { 1 }, map[512];
	uint64_t bm_off;
	int fd;

	spath(s, "tail.vhd", p, sizeof(p));
	/* 10 KiB with 4 KiB blocks: the last block holds 4 of 8 sectors. */
	create_vhd(p, VHD_TYPE_DYNAMIC, 10 << 10, 4096, NULL, false);
	snprintf(spec, sizeof(spec), "vhd:%s", p);
	assert_int_equal(unit_image_write(spec, 19, 1, buf), 0);
	assert_int_equal(vhd_image_open(&img, p, VHD_IMAGE_RDONLY, err,
					sizeof(err)), 0);
	bm_off = (uint64_t)img->bat[2] << 9;
	assert_int_equal(vhd_image_close(img), 0);
	check_clean(p, 0);

	fd = open(p, O_RDWR);
	assert_int_equal(pread(fd, map, sizeof(map), (off_t)bm_off), 512);
	/* The driver fills a new block: every sector present, all ones. */
	assert_int_equal(map[0], 0xff);
	memset(map, 0, sizeof(map));
	map[0] = 0x10 | 0x01;		/* sector 3, and 7: past the end */
	assert_int_equal(pwrite(fd, map, sizeof(map), (off_t)bm_off), 512);
	assert_int_equal(vhd_image_check(p, collect_check, all, &res, err,
					 sizeof(err)), 0);
	assert_int_equal(res.errors, 0);
	assert_contains(all, "warning: block 2: sector bitmap marks 1 sectors "
			"beyond the virtual size as present");
	memset(map, 0xff, sizeof(map));
	assert_int_equal(pwrite(fd, map, sizeof(map), (off_t)bm_off), 512);
	close(fd);
	check_clean(p, 0);
}

/* Patch the creator of path's footers (both, if there are two). */
static void set_creator(const char *path, const char app[4])
{
	uint8_t buf[VHD_FOOTER_SIZE];
	off_t offs[2];
	struct stat st;
	int fd, i;

	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	offs[0] = 0;
	offs[1] = st.st_size - VHD_FOOTER_SIZE;
	for (i = 0; i < 2; i++) {
		assert_int_equal(pread(fd, buf, sizeof(buf), offs[i]),
				 sizeof(buf));
		if (memcmp(buf, VHD_FOOTER_COOKIE, VHD_COOKIE_SIZE))
			continue;
		memcpy(buf + 28, app, 4);
		fix_footer_csum(buf);
		assert_int_equal(pwrite(fd, buf, sizeof(buf), offs[i]),
				 sizeof(buf));
	}
	close(fd);
}

/* A Virtual PC disk of 300 MiB is 609/16/63 sectors, for writes too. */
static void test_image_geometry_size(void **state)
{
	static const enum vhd_disk_type types[] = {
		VHD_TYPE_DYNAMIC, VHD_TYPE_FIXED,
	};
	struct scratch *s = *state;
	const uint64_t chs = 609ull * 16 * 63;
	uint8_t buf[1024] = { 0x5a, 0x5a };
	struct vhd_image *img;
	char p[300], spec[320], err[512];
	struct unit_vbd u;
	uint64_t off;
	uint32_t run;
	unsigned i;

	for (i = 0; i < 2; i++) {
		spath(s, i ? "vpc-fixed.vhd" : "vpc-dyn.vhd", p, sizeof(p));
		create_vhd(p, types[i], 300ull << 20, 0, NULL, false);
		set_creator(p, "vpc ");
		snprintf(spec, sizeof(spec), "vhd:%s", p);
		assert_int_equal(unit_vbd_open(&u, spec, 0), 0);
		assert_int_equal(vbd_size(u.v), chs * 512);
		assert_int_equal(unit_vbd_io(&u, TD_OP_WRITE, chs - 1, 1, buf),
				 0);
		assert_int_equal(unit_vbd_io(&u, TD_OP_WRITE, chs - 1, 2, buf),
				 -ENOSPC);
		assert_int_equal(unit_vbd_io(&u, TD_OP_WRITE, chs, 1, buf),
				 -ENOSPC);
		assert_int_equal(unit_vbd_io(&u, TD_OP_FLUSH, 0, 0, NULL), 0);
		unit_vbd_close(&u);
		assert_int_equal(vhd_image_open(&img, p, VHD_IMAGE_RDONLY, err,
						sizeof(err)), 0);
		assert_int_equal(vhd_image_size(img), chs * 512);
		assert_int_equal(img->footer.curr_size, 300ull << 20);
		assert_int_equal(vhd_image_map(img, chs, 8, &run, &off),
				 VHD_MAP_ZERO);
		assert_int_equal(vhd_image_map(img, chs - 1, 8, &run, &off),
				 VHD_MAP_DATA);
		assert_int_equal(run, 1);
		assert_int_equal(vhd_image_close(img), 0);
		/* The 264 KiB between the sizes is data, not a gap. */
		check_clean(p, 0);
	}
}

/* A clean 8 MiB dynamic disk with block 1 written: path, its size. */
static off_t reclaim_image(const char *path, uint8_t *data)
{
	struct stat st;
	char spec[320];

	create_vhd(path, VHD_TYPE_DYNAMIC, 8 << 20, 0, NULL, false);
	snprintf(spec, sizeof(spec), "vhd:%s", path);
	pattern(data, 16, 4096, 1);
	assert_int_equal(unit_image_write(spec, 4096, 16, data), 0);
	check_clean(path, 0);
	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

/*
 * What a crash before the BAT write leaves: past the old footer, a new
 * block (its data aligned to 4 KiB, as the allocator places it) and a
 * footer after it.  mid_reclaim: also the footer copy reclaim writes at
 * the data end before it truncates (a crash in between).  Returns the
 * new file size.
 */
static off_t leak_block(const char *path, off_t size, bool mid_reclaim)
{
	uint8_t footer[VHD_FOOTER_SIZE], junk[4096];
	off_t block = (size + 4096) / 4096 * 4096 - 512, end;
	int fd, i;

	memset(junk, 0xa5, sizeof(junk));
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, footer, sizeof(footer),
			       size - VHD_FOOTER_SIZE), sizeof(footer));
	for (i = 0; i < (512 + (2 << 20)) / 4096; i++)
		assert_int_equal(pwrite(fd, junk, sizeof(junk),
					block + (off_t)i * 4096),
				 sizeof(junk));
	end = block + 512 + (2 << 20);
	assert_int_equal(pwrite(fd, footer, sizeof(footer), end),
			 sizeof(footer));
	if (mid_reclaim)
		assert_int_equal(pwrite(fd, footer, sizeof(footer),
					size - VHD_FOOTER_SIZE),
				 sizeof(footer));
	close(fd);
	return end + VHD_FOOTER_SIZE;
}

static off_t file_size_of(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

/* Block 1 of path reads back as reclaim_image wrote it. */
static void reclaim_data_intact(const char *path, const uint8_t *data)
{
	uint8_t got[16 * 512];
	struct unit_vbd u;
	char spec[320];

	snprintf(spec, sizeof(spec), "vhd:%s", path);
	assert_int_equal(unit_vbd_open(&u, spec, TD_OPEN_RDONLY), 0);
	assert_int_equal(unit_vbd_io(&u, TD_OP_READ, 4096, 16, got), 0);
	assert_memory_equal(got, data, sizeof(got));
	unit_vbd_close(&u);
}

/* Leaked space at the end goes at a read-write open with RECLAIM. */
static void test_image_reclaim(void **state)
{
	struct scratch *s = *state;
	char p[300], spec[320], err[512], all[4096] = "";
	struct td_check_result res;
	uint8_t data[16 * 512], buf[512] = { 7 };
	struct vhd_image *img;
	off_t clean, leaky;
	int mid;

	for (mid = 0; mid < 2; mid++) {
		spath(s, mid ? "mid.vhd" : "leak.vhd", p, sizeof(p));
		clean = reclaim_image(p, data);
		leaky = leak_block(p, clean, mid);
		all[0] = '\0';
		assert_int_equal(vhd_image_check(p, collect_check, all, &res,
						 err, sizeof(err)), 0);
		assert_int_equal(res.errors, 0);
		assert_int_equal(res.warnings, 1);
		assert_contains(all, "before the footer are not used by any "
				"block");

		/* Without the flag, or read-only: the file is left alone. */
		assert_int_equal(vhd_image_open(&img, p, 0, err, sizeof(err)),
				 0);
		assert_int_equal(img->reclaimed, 0);
		assert_int_equal(vhd_image_close(img), 0);
		assert_int_equal(vhd_image_open(&img, p, VHD_IMAGE_RDONLY |
						VHD_IMAGE_RECLAIM, err,
						sizeof(err)), 0);
		assert_int_equal(img->reclaimed, 0);
		vhd_image_close(img);
		assert_int_equal(file_size_of(p), leaky);

		assert_int_equal(vhd_image_open(&img, p, VHD_IMAGE_RECLAIM,
						err, sizeof(err)), 0);
		assert_int_equal(img->reclaimed, leaky - clean);
		assert_int_equal(img->file_size, clean);
		assert_int_equal(img->footer_off, clean - VHD_FOOTER_SIZE);
		assert_contains(img->notice, "reclaimed");
		assert_string_equal(img->warning, "");
		assert_int_equal(vhd_image_close(img), 0);
		assert_int_equal(file_size_of(p), clean);
		check_clean(p, 0);
		reclaim_data_intact(p, data);

		/* Nothing more to give back; allocation goes on after it. */
		assert_int_equal(vhd_image_open(&img, p, VHD_IMAGE_RECLAIM,
						err, sizeof(err)), 0);
		assert_int_equal(img->reclaimed, 0);
		assert_string_equal(img->notice, "");
		assert_int_equal(vhd_image_close(img), 0);
		snprintf(spec, sizeof(spec), "vhd:%s", p);
		assert_int_equal(unit_image_write(spec, 0, 1, buf), 0);
		check_clean(p, 0);
		reclaim_data_intact(p, data);
	}
}

/* When reclaim cannot write, the image stays as it was: a warning. */
static void test_image_reclaim_fails(void **state)
{
	struct scratch *s = *state;
	uint8_t data[16 * 512], byte = 0x5a;
	struct vhd_image *img;
	char p[300], err[512];
	off_t clean, leaky;
	int fd;

	spath(s, "ro.vhd", p, sizeof(p));
	clean = reclaim_image(p, data);
	leaky = leak_block(p, clean, false);
	fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(vhd_image_open_fd(&img, fd, p, VHD_IMAGE_RECLAIM,
					   err, sizeof(err)), 0);
	assert_int_equal(img->reclaimed, 0);
	assert_int_equal(img->file_size, leaky);
	assert_contains(img->warning, "could not be reclaimed: Bad file "
			"descriptor");
	vhd_image_close(img);
	assert_int_equal(file_size_of(p), leaky);
	reclaim_data_intact(p, data);

	/* No trailing footer to trust (the backup is used): no reclaim. */
	fd = open(p, O_WRONLY);
	assert_int_equal(pwrite(fd, &byte, 1, leaky - VHD_FOOTER_SIZE + 40),
			 1);
	close(fd);
	assert_int_equal(vhd_image_open(&img, p, VHD_IMAGE_RECLAIM, err,
					sizeof(err)), 0);
	assert_true(img->footer_from_backup);
	assert_int_equal(img->reclaimed, 0);
	assert_int_equal(vhd_image_close(img), 0);
	assert_int_equal(file_size_of(p), leaky);
}

static void test_image_create_errors(void **state)
{
	struct scratch *s = *state;
	struct vhd_create_params p = { .type = VHD_TYPE_DYNAMIC };
	char path[300], err[512];

	spath(s, "e.vhd", path, sizeof(path));
	p.size = 1000;
	assert_int_equal(vhd_image_create(path, &p, err, sizeof(err)),
			 -EINVAL);
	assert_contains(err, "size 1000 is not a multiple of 512");
	p.size = 1 << 20;
	p.block_size = 3000;
	assert_int_equal(vhd_image_create(path, &p, err, sizeof(err)),
			 -EINVAL);
	assert_contains(err, "block size 3000 is not a power of two");
	p.block_size = 0;
	p.size = VHD_MAX_SIZE + 512;
	assert_int_equal(vhd_image_create(path, &p, err, sizeof(err)),
			 -EFBIG);
	p.size = 1 << 20;
	assert_int_equal(vhd_image_create(path, &p, err, sizeof(err)), 0);
	assert_int_equal(vhd_image_create(path, &p, err, sizeof(err)),
			 -EEXIST);
	assert_contains(err, "File exists");
	/* failure leaves nothing behind */
	spath(s, "f.vhd", path, sizeof(path));
	p.size = 0;
	assert_int_equal(vhd_image_create(path, &p, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(access(path, F_OK), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_checksum),
		cmocka_unit_test(test_geometry),
		cmocka_unit_test(test_virtual_size),
		cmocka_unit_test(test_virtual_size_header),
		cmocka_unit_test(test_bat_span),
		cmocka_unit_test(test_data_end),
		cmocka_unit_test(test_time),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_footer_round_trip),
		cmocka_unit_test(test_footer_errors),
		cmocka_unit_test(test_footer_all_problems),
		cmocka_unit_test(test_header_round_trip),
		cmocka_unit_test(test_header_errors),
		cmocka_unit_test(test_header_locator_errors),
		cmocka_unit_test(test_bat),
		cmocka_unit_test(test_bat_beyond_size),
		cmocka_unit_test(test_bitmap),
		cmocka_unit_test(test_utf16),
		cmocka_unit_test(test_parent_name),
		cmocka_unit_test(test_locators),
		cmocka_unit_test(test_locator_space),
		cmocka_unit_test_setup_teardown(test_image_chain_model,
						scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_image_raw_parent,
						scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_image_parent_errors,
						scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_image_backup_footer,
						scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_image_check_bitmap_tail,
						scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_image_geometry_size,
						scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_image_reclaim,
						scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_image_reclaim_fails,
						scratch_setup,
						scratch_teardown),
		cmocka_unit_test_setup_teardown(test_image_create_errors,
						scratch_setup,
						scratch_teardown),
	};

	return cmocka_run_group_tests_name("vhd-format", tests, NULL, NULL);
}
