/* SPDX-License-Identifier: MIT */
/*
 * VHD on-disk format: encode, decode and validate footers, dynamic
 * headers, BATs, sector bitmaps and parent locators.  Pure: no I/O, no
 * allocation, no state (see vhd-format.h).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vhd-format.h"

/* Field offsets of the footer and header (Microsoft's specification). */
enum {
	FTR_COOKIE	= 0,
	FTR_FEATURES	= 8,
	FTR_VERSION	= 12,
	FTR_DATA_OFF	= 16,
	FTR_TIMESTAMP	= 24,
	FTR_CRTR_APP	= 28,
	FTR_CRTR_VER	= 32,
	FTR_CRTR_OS	= 36,
	FTR_ORIG_SIZE	= 40,
	FTR_CURR_SIZE	= 48,
	FTR_GEOMETRY	= 56,
	FTR_TYPE	= 60,
	FTR_CHECKSUM	= 64,
	FTR_UUID	= 68,
	FTR_SAVED	= 84,

	HDR_COOKIE	= 0,
	HDR_DATA_OFF	= 8,
	HDR_TABLE_OFF	= 16,
	HDR_VERSION	= 24,
	HDR_MAX_BAT	= 28,
	HDR_BLOCK_SIZE	= 32,
	HDR_CHECKSUM	= 36,
	HDR_PRT_UUID	= 40,
	HDR_PRT_TS	= 56,
	HDR_RESERVED	= 60,
	HDR_PRT_NAME	= 64,
	HDR_LOCATORS	= 576,
	HDR_LOC_SIZE	= 24,
};

/* CHS limits of the geometry algorithm. */
#define CHS_MAX_CYLINDERS	65535u
#define CHS_MAX_HEADS		16u
#define CHS_MAX_SPT		255u

#define MACX_PREFIX		"file://"
#define MACX_LOCALHOST		"localhost"

/* A cookie for a message: printable ASCII kept, the rest as \xNN. */
static const char *cookie_str(const char *c, char *out, size_t outlen)
{
	size_t i, n = 0;

	out[0] = '\0';
	for (i = 0; i < VHD_COOKIE_SIZE && n + 5 < outlen; i++) {
		unsigned char ch = (unsigned char)c[i];

		if (isprint(ch) && ch != '"' && ch != '\\')
			out[n++] = (char)ch;
		else
			n += (size_t)snprintf(out + n, outlen - n, "\\x%02x",
					      ch);
	}
	out[n] = '\0';
	return out;
}

/* ---- scalars -------------------------------------------------------- */

uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
	uint32_t sum = 0;
	size_t i;

	for (i = 0; i < len; i++) {
		if (i >= csum_off && i < csum_off + 4)
			continue;
		sum += buf[i];
	}
	return ~sum;
}

void vhd_geometry_from_size(uint64_t size, struct vhd_geometry *g)
{
	uint64_t total = size >> VHD_SECTOR_SHIFT;
	uint64_t max = (uint64_t)CHS_MAX_CYLINDERS * CHS_MAX_HEADS *
		       CHS_MAX_SPT;
	uint64_t cth, heads, spt;

	if (total > max)
		total = max;
	if (total >= (uint64_t)CHS_MAX_CYLINDERS * CHS_MAX_HEADS * 63) {
		spt = CHS_MAX_SPT;
		heads = CHS_MAX_HEADS;
		cth = total / spt;
	} else {
		spt = 17;
		cth = total / spt;
		heads = (cth + 1023) / 1024;
		if (heads < 4)
			heads = 4;
		if (cth >= heads * 1024 || heads > CHS_MAX_HEADS) {
			spt = 31;
			heads = CHS_MAX_HEADS;
			cth = total / spt;
		}
		if (cth >= heads * 1024) {
			spt = 63;
			heads = CHS_MAX_HEADS;
			cth = total / spt;
		}
	}
	g->cylinders = (uint16_t)(cth / heads);
	g->heads = (uint8_t)heads;
	g->sectors = (uint8_t)spt;
}

uint64_t vhd_geometry_sectors(const struct vhd_geometry *g)
{
	return (uint64_t)g->cylinders * g->heads * g->sectors;
}

uint32_t vhd_time_from_unix(time_t t)
{
	if (t <= VHD_EPOCH)
		return 0;
	if ((uint64_t)(t - VHD_EPOCH) > UINT32_MAX)
		return UINT32_MAX;
	return (uint32_t)(t - VHD_EPOCH);
}

time_t vhd_time_to_unix(uint32_t vt)
{
	return (time_t)VHD_EPOCH + (time_t)vt;
}

void vhd_time_format(uint32_t vt, char *out, size_t len)
{
	time_t t = vhd_time_to_unix(vt);
	struct tm tm;

	if (!gmtime_r(&t, &tm) ||
	    !strftime(out, len, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(out, len, "%" PRIu32, vt);
}

const char *vhd_type_name(uint32_t type)
{
	switch (type) {
	case VHD_TYPE_FIXED:
		return "fixed";
	case VHD_TYPE_DYNAMIC:
		return "dynamic";
	case VHD_TYPE_DIFF:
		return "differencing";
	default:
		return "unknown";
	}
}

const char *vhd_platform_name(uint32_t code, char *buf, size_t len)
{
	unsigned i;

	if (code == VHD_PLAT_NONE)
		return "none";
	for (i = 0; i < 4; i++) {
		unsigned char c = (unsigned char)(code >> (24 - 8 * i));

		if (!isprint(c)) {
			snprintf(buf, len, "0x%08" PRIx32, code);
			return buf;
		}
	}
	snprintf(buf, len, "%c%c%c%c", (char)(code >> 24),
		 (char)(code >> 16), (char)(code >> 8), (char)code);
	return buf;
}

void vhd_uuid_format(const uint8_t uuid[VHD_UUID_SIZE], char *out)
{
	static const char hex[] = "0123456789abcdef";
	unsigned i, n = 0;

	for (i = 0; i < VHD_UUID_SIZE; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[n++] = '-';
		out[n++] = hex[uuid[i] >> 4];
		out[n++] = hex[uuid[i] & 15];
	}
	out[n] = '\0';
}

bool vhd_uuid_is_nil(const uint8_t uuid[VHD_UUID_SIZE])
{
	unsigned i;

	for (i = 0; i < VHD_UUID_SIZE; i++)
		if (uuid[i])
			return false;
	return true;
}

uint64_t vhd_blocks_for_size(uint64_t size, uint32_t block_size)
{
	return size / block_size + (size % block_size != 0);
}

uint64_t vhd_bat_bytes(uint32_t entries)
{
	uint64_t b = (uint64_t)entries * VHD_BAT_ENTRY_SIZE;

	return (b + VHD_SECTOR_SIZE - 1) & ~(uint64_t)(VHD_SECTOR_SIZE - 1);
}

uint32_t vhd_bitmap_size(uint32_t block_size)
{
	uint32_t bytes = (block_size >> VHD_SECTOR_SHIFT) / 8;

	if (bytes == 0)
		bytes = 1;
	return (bytes + VHD_SECTOR_SIZE - 1) & ~(VHD_SECTOR_SIZE - 1);
}

/* ---- footer ---------------------------------------------------------- */

void vhd_footer_init(struct vhd_footer *f, enum vhd_disk_type type,
		     uint64_t size, uint32_t timestamp,
		     const uint8_t uuid[VHD_UUID_SIZE])
{
	memset(f, 0, sizeof(*f));
	memcpy(f->cookie, VHD_FOOTER_COOKIE, VHD_COOKIE_SIZE);
	f->features = VHD_FEATURE_RESERVED;
	f->version = VHD_FORMAT_VERSION;
	f->data_offset = type == VHD_TYPE_FIXED ? VHD_NO_OFFSET :
						  VHD_FOOTER_SIZE;
	f->timestamp = timestamp;
	memcpy(f->creator_app, VHD_CREATOR_APP, sizeof(f->creator_app));
	f->creator_version = VHD_CREATOR_VERSION;
	memcpy(f->creator_os, VHD_CREATOR_OS, sizeof(f->creator_os));
	f->orig_size = size;
	f->curr_size = size;
	vhd_geometry_from_size(size, &f->geometry);
	f->type = type;
	memcpy(f->uuid, uuid, VHD_UUID_SIZE);
}

void vhd_footer_encode(struct vhd_footer *f, uint8_t *buf)
{
	memset(buf, 0, VHD_FOOTER_SIZE);
	memcpy(buf + FTR_COOKIE, f->cookie, VHD_COOKIE_SIZE);
	td_put_be32(buf + FTR_FEATURES, f->features);
	td_put_be32(buf + FTR_VERSION, f->version);
	td_put_be64(buf + FTR_DATA_OFF, f->data_offset);
	td_put_be32(buf + FTR_TIMESTAMP, f->timestamp);
	memcpy(buf + FTR_CRTR_APP, f->creator_app, 4);
	td_put_be32(buf + FTR_CRTR_VER, f->creator_version);
	memcpy(buf + FTR_CRTR_OS, f->creator_os, 4);
	td_put_be64(buf + FTR_ORIG_SIZE, f->orig_size);
	td_put_be64(buf + FTR_CURR_SIZE, f->curr_size);
	td_put_be16(buf + FTR_GEOMETRY, f->geometry.cylinders);
	buf[FTR_GEOMETRY + 2] = f->geometry.heads;
	buf[FTR_GEOMETRY + 3] = f->geometry.sectors;
	td_put_be32(buf + FTR_TYPE, f->type);
	memcpy(buf + FTR_UUID, f->uuid, VHD_UUID_SIZE);
	buf[FTR_SAVED] = f->saved_state;
	f->checksum = vhd_checksum(buf, VHD_FOOTER_SIZE, FTR_CHECKSUM);
	td_put_be32(buf + FTR_CHECKSUM, f->checksum);
}

int vhd_footer_parse(const uint8_t *buf, struct vhd_footer *f,
		     struct td_report *r)
{
	char cs[40];
	uint32_t sum;
	int ret = 0;

	memset(f, 0, sizeof(*f));
	memcpy(f->cookie, buf + FTR_COOKIE, VHD_COOKIE_SIZE);
	if (memcmp(f->cookie, VHD_FOOTER_COOKIE, VHD_COOKIE_SIZE))
		return td_report(r, -EINVAL,
				 "bad footer cookie \"%s\" (expected \"%s\")",
				 cookie_str(f->cookie, cs, sizeof(cs)),
				 VHD_FOOTER_COOKIE);

	f->features = td_get_be32(buf + FTR_FEATURES);
	f->version = td_get_be32(buf + FTR_VERSION);
	f->data_offset = td_get_be64(buf + FTR_DATA_OFF);
	f->timestamp = td_get_be32(buf + FTR_TIMESTAMP);
	memcpy(f->creator_app, buf + FTR_CRTR_APP, 4);
	f->creator_version = td_get_be32(buf + FTR_CRTR_VER);
	memcpy(f->creator_os, buf + FTR_CRTR_OS, 4);
	f->orig_size = td_get_be64(buf + FTR_ORIG_SIZE);
	f->curr_size = td_get_be64(buf + FTR_CURR_SIZE);
	f->geometry.cylinders = td_get_be16(buf + FTR_GEOMETRY);
	f->geometry.heads = buf[FTR_GEOMETRY + 2];
	f->geometry.sectors = buf[FTR_GEOMETRY + 3];
	f->type = td_get_be32(buf + FTR_TYPE);
	f->checksum = td_get_be32(buf + FTR_CHECKSUM);
	memcpy(f->uuid, buf + FTR_UUID, VHD_UUID_SIZE);
	f->saved_state = buf[FTR_SAVED];

	sum = vhd_checksum(buf, VHD_FOOTER_SIZE, FTR_CHECKSUM);
	if (sum != f->checksum)
		ret = td_first_err(ret, td_report(r, -EINVAL,
			"bad footer checksum: expected 0x%08" PRIx32
			", found 0x%08" PRIx32, sum, f->checksum));
	if (VHD_VERSION_MAJOR(f->version) != VHD_VERSION_MAJOR(
						VHD_FORMAT_VERSION))
		ret = td_first_err(ret, td_report(r, -ENOTSUP,
			"unsupported footer format version 0x%08" PRIx32
			" (expected 0x%08x)", f->version, VHD_FORMAT_VERSION));
	switch (f->type) {
	case VHD_TYPE_FIXED:
	case VHD_TYPE_DYNAMIC:
	case VHD_TYPE_DIFF:
		break;
	default:
		ret = td_first_err(ret, td_report(r, -ENOTSUP,
			"unsupported disk type %" PRIu32
			" (expected 2 fixed, 3 dynamic or 4 differencing)",
			f->type));
	}
	if (f->curr_size % VHD_SECTOR_SIZE)
		ret = td_first_err(ret, td_report(r, -EINVAL,
			"current size %" PRIu64
			" is not a multiple of 512", f->curr_size));
	if (f->curr_size > VHD_MAX_SIZE)
		ret = td_first_err(ret, td_report(r, -EFBIG,
			"current size %" PRIu64 " exceeds the VHD maximum of "
			"%llu bytes (2040 GiB)", f->curr_size, VHD_MAX_SIZE));
	if ((f->type == VHD_TYPE_DYNAMIC || f->type == VHD_TYPE_DIFF) &&
	    (f->data_offset == VHD_NO_OFFSET ||
	     f->data_offset < VHD_FOOTER_SIZE))
		ret = td_first_err(ret, td_report(r, -EINVAL,
			"data offset 0x%" PRIx64 " of a %s disk does not "
			"point to a dynamic header", f->data_offset,
			vhd_type_name(f->type)));
	return ret;
}

int vhd_footer_decode(const uint8_t *buf, struct vhd_footer *f,
		      char *err, size_t errlen)
{
	struct td_report r = td_report_err(err, errlen);

	return vhd_footer_parse(buf, f, &r);
}

bool vhd_footer_size_from_geometry(const struct vhd_footer *f)
{
	if (memcmp(f->creator_app, VHD_CREATOR_VPC, sizeof(f->creator_app)) &&
	    memcmp(f->creator_app, VHD_CREATOR_QEMU, sizeof(f->creator_app)))
		return false;
	return vhd_geometry_sectors(&f->geometry) != VHD_GEOMETRY_MAX_SECTORS;
}

uint64_t vhd_footer_virtual_size(const struct vhd_footer *f)
{
	if (vhd_footer_size_from_geometry(f))
		return vhd_geometry_sectors(&f->geometry) << VHD_SECTOR_SHIFT;
	return f->curr_size;
}

/* ---- dynamic header ------------------------------------------------- */

void vhd_header_init(struct vhd_header *h, uint64_t size,
		     uint32_t block_size, uint64_t table_offset)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->cookie, VHD_HEADER_COOKIE, VHD_COOKIE_SIZE);
	h->data_offset = VHD_NO_OFFSET;
	h->table_offset = table_offset;
	h->version = VHD_HEADER_VERSION;
	h->block_size = block_size;
	h->max_bat_entries = (uint32_t)vhd_blocks_for_size(size, block_size);
}

void vhd_header_encode(struct vhd_header *h, uint8_t *buf)
{
	unsigned i;

	memset(buf, 0, VHD_HEADER_SIZE);
	memcpy(buf + HDR_COOKIE, h->cookie, VHD_COOKIE_SIZE);
	td_put_be64(buf + HDR_DATA_OFF, h->data_offset);
	td_put_be64(buf + HDR_TABLE_OFF, h->table_offset);
	td_put_be32(buf + HDR_VERSION, h->version);
	td_put_be32(buf + HDR_MAX_BAT, h->max_bat_entries);
	td_put_be32(buf + HDR_BLOCK_SIZE, h->block_size);
	memcpy(buf + HDR_PRT_UUID, h->parent_uuid, VHD_UUID_SIZE);
	td_put_be32(buf + HDR_PRT_TS, h->parent_timestamp);
	td_put_be32(buf + HDR_RESERVED, h->reserved);
	memcpy(buf + HDR_PRT_NAME, h->parent_name, VHD_PARENT_NAME_SIZE);
	for (i = 0; i < VHD_MAX_LOCATORS; i++) {
		uint8_t *p = buf + HDR_LOCATORS + i * HDR_LOC_SIZE;

		td_put_be32(p, h->loc[i].code);
		td_put_be32(p + 4, h->loc[i].data_space);
		td_put_be32(p + 8, h->loc[i].data_len);
		td_put_be32(p + 12, h->loc[i].reserved);
		td_put_be64(p + 16, h->loc[i].data_offset);
	}
	h->checksum = vhd_checksum(buf, VHD_HEADER_SIZE, HDR_CHECKSUM);
	td_put_be32(buf + HDR_CHECKSUM, h->checksum);
}

uint64_t vhd_locator_space(const struct vhd_locator *loc)
{
	if (loc->data_space < VHD_SECTOR_SIZE)
		return (uint64_t)loc->data_space << VHD_SECTOR_SHIFT;
	if (loc->data_space % VHD_SECTOR_SIZE == 0)
		return loc->data_space;
	return 0;
}

bool vhd_locator_supported(uint32_t code)
{
	return code == VHD_PLAT_W2RU || code == VHD_PLAT_W2KU ||
	       code == VHD_PLAT_MACX;
}

static int header_check_block_size(const struct vhd_header *h,
				   struct td_report *r)
{
	uint32_t bs = h->block_size;

	if (bs == 0)
		return td_report(r, -EINVAL, "block size 0");
	if (bs & (bs - 1))
		return td_report(r, -EINVAL,
				 "block size %" PRIu32
				 " is not a power of two", bs);
	if (bs < VHD_MIN_BLOCK_SIZE)
		return td_report(r, -EINVAL,
				 "block size %" PRIu32
				 " is smaller than one sector (512)", bs);
	if (bs > VHD_MAX_BLOCK_SIZE)
		return td_report(r, -ENOTSUP,
				 "block size %" PRIu32 " is larger than the "
				 "%u bytes (256 MiB) supported", bs,
				 VHD_MAX_BLOCK_SIZE);
	return 0;
}

static int header_check_locators(const struct vhd_header *h,
				 uint64_t footer_off, struct td_report *r)
{
	char name[16];
	unsigned i;
	int ret = 0;

	for (i = 0; i < VHD_MAX_LOCATORS; i++) {
		const struct vhd_locator *l = &h->loc[i];
		const char *pn = vhd_platform_name(l->code, name,
						   sizeof(name));
		uint64_t space = vhd_locator_space(l);

		if (!vhd_locator_supported(l->code))
			continue;
		if (space == 0) {
			ret = td_first_err(ret, td_report(r, -EINVAL,
				"parent locator %u (%s): data space %" PRIu32
				" is neither sectors nor a multiple of 512 "
				"bytes", i, pn, l->data_space));
			continue;
		}
		if (l->data_len > space)
			ret = td_first_err(ret, td_report(r, -EINVAL,
				"parent locator %u (%s): data length %" PRIu32
				" exceeds its data space of %" PRIu64 " bytes",
				i, pn, l->data_len, space));
		if (l->data_len > VHD_MAX_LOCATOR_BYTES)
			ret = td_first_err(ret, td_report(r, -EINVAL,
				"parent locator %u (%s): data length %" PRIu32
				" is longer than the %u bytes accepted", i, pn,
				l->data_len, VHD_MAX_LOCATOR_BYTES));
		if (l->data_offset < VHD_FOOTER_SIZE ||
		    l->data_offset > footer_off ||
		    l->data_len > footer_off - l->data_offset)
			ret = td_first_err(ret, td_report(r, -EINVAL,
				"parent locator %u (%s): data at offset 0x%"
				PRIx64 " (%" PRIu32 " bytes) lies outside the "
				"file (footer at 0x%" PRIx64 ")", i, pn,
				l->data_offset, l->data_len, footer_off));
	}
	return ret;
}

int vhd_header_parse(const uint8_t *buf, struct vhd_header *h,
		     const struct vhd_footer *f, uint64_t footer_off,
		     struct td_report *r)
{
	uint64_t bat_len, need;
	char cs[40];
	uint32_t sum;
	unsigned i;
	int ret = 0, bs_err;

	memset(h, 0, sizeof(*h));
	memcpy(h->cookie, buf + HDR_COOKIE, VHD_COOKIE_SIZE);
	if (memcmp(h->cookie, VHD_HEADER_COOKIE, VHD_COOKIE_SIZE))
		return td_report(r, -EINVAL,
			"bad dynamic header cookie \"%s\" at offset 0x%" PRIx64
			" (expected \"%s\")",
			cookie_str(h->cookie, cs, sizeof(cs)), f->data_offset,
			VHD_HEADER_COOKIE);

	h->data_offset = td_get_be64(buf + HDR_DATA_OFF);
	h->table_offset = td_get_be64(buf + HDR_TABLE_OFF);
	h->version = td_get_be32(buf + HDR_VERSION);
	h->max_bat_entries = td_get_be32(buf + HDR_MAX_BAT);
	h->block_size = td_get_be32(buf + HDR_BLOCK_SIZE);
	h->checksum = td_get_be32(buf + HDR_CHECKSUM);
	memcpy(h->parent_uuid, buf + HDR_PRT_UUID, VHD_UUID_SIZE);
	h->parent_timestamp = td_get_be32(buf + HDR_PRT_TS);
	h->reserved = td_get_be32(buf + HDR_RESERVED);
	memcpy(h->parent_name, buf + HDR_PRT_NAME, VHD_PARENT_NAME_SIZE);
	for (i = 0; i < VHD_MAX_LOCATORS; i++) {
		const uint8_t *p = buf + HDR_LOCATORS + i * HDR_LOC_SIZE;

		h->loc[i].code = td_get_be32(p);
		h->loc[i].data_space = td_get_be32(p + 4);
		h->loc[i].data_len = td_get_be32(p + 8);
		h->loc[i].reserved = td_get_be32(p + 12);
		h->loc[i].data_offset = td_get_be64(p + 16);
	}

	sum = vhd_checksum(buf, VHD_HEADER_SIZE, HDR_CHECKSUM);
	if (sum != h->checksum)
		ret = td_first_err(ret, td_report(r, -EINVAL,
			"bad dynamic header checksum: expected 0x%08" PRIx32
			", found 0x%08" PRIx32, sum, h->checksum));
	if (VHD_VERSION_MAJOR(h->version) != VHD_VERSION_MAJOR(
						VHD_HEADER_VERSION))
		ret = td_first_err(ret, td_report(r, -ENOTSUP,
			"unsupported dynamic header version 0x%08" PRIx32
			" (expected 0x%08x)", h->version, VHD_HEADER_VERSION));

	bs_err = header_check_block_size(h, r);
	ret = td_first_err(ret, bs_err);
	if (!bs_err) {
		uint64_t size = vhd_footer_virtual_size(f);

		need = vhd_blocks_for_size(size, h->block_size);
		if (h->max_bat_entries < need)
			ret = td_first_err(ret, td_report(r, -EINVAL,
				"max table entries %" PRIu32 " too small: "
				"virtual size %" PRIu64 " with block size %"
				PRIu32 " needs %" PRIu64, h->max_bat_entries,
				size, h->block_size, need));
	}

	bat_len = (uint64_t)h->max_bat_entries * VHD_BAT_ENTRY_SIZE;
	if (h->table_offset > footer_off ||
	    bat_len > footer_off - h->table_offset)
		ret = td_first_err(ret, td_report(r, -EINVAL,
			"BAT at offset 0x%" PRIx64 " (%" PRIu32 " entries, %"
			PRIu64 " bytes) runs past the end of the file "
			"(footer at 0x%" PRIx64 ")", h->table_offset,
			h->max_bat_entries, bat_len, footer_off));
	else if (h->table_offset < VHD_FOOTER_SIZE)
		ret = td_first_err(ret, td_report(r, -EINVAL,
			"BAT at offset 0x%" PRIx64 " overlaps the footer copy "
			"at offset 0", h->table_offset));
	else if (h->table_offset < f->data_offset + VHD_HEADER_SIZE &&
		 f->data_offset < h->table_offset + bat_len)
		ret = td_first_err(ret, td_report(r, -EINVAL,
			"BAT at offset 0x%" PRIx64 " overlaps the dynamic "
			"header at 0x%" PRIx64, h->table_offset,
			f->data_offset));

	if (f->type == VHD_TYPE_DIFF)
		ret = td_first_err(ret, header_check_locators(h, footer_off,
							      r));
	return ret;
}

int vhd_header_decode(const uint8_t *buf, struct vhd_header *h,
		      const struct vhd_footer *f, uint64_t footer_off,
		      char *err, size_t errlen)
{
	struct td_report r = td_report_err(err, errlen);

	return vhd_header_parse(buf, h, f, footer_off, &r);
}

/* ---- BAT -------------------------------------------------------------- */

void vhd_bat_decode(const uint8_t *buf, uint32_t entries, uint32_t *bat)
{
	uint32_t i;

	for (i = 0; i < entries; i++)
		bat[i] = td_get_be32(buf + (size_t)i * VHD_BAT_ENTRY_SIZE);
}

void vhd_bat_encode(const uint32_t *bat, uint32_t entries, uint8_t *buf)
{
	uint32_t i;

	for (i = 0; i < entries; i++)
		td_put_be32(buf + (size_t)i * VHD_BAT_ENTRY_SIZE, bat[i]);
}

void vhd_layout_init(struct vhd_layout *l, const struct vhd_footer *f,
		     const struct vhd_header *h, uint64_t footer_off)
{
	static const char *const locname[VHD_MAX_LOCATORS] = {
		"parent locator 0", "parent locator 1", "parent locator 2",
		"parent locator 3", "parent locator 4", "parent locator 5",
		"parent locator 6", "parent locator 7",
	};
	unsigned i;

	memset(l, 0, sizeof(*l));
	l->size = vhd_footer_virtual_size(f);
	if (f->curr_size > l->size)
		l->size = f->curr_size;
	l->footer_off = footer_off;
	l->block_size = h->block_size;
	l->bitmap_size = vhd_bitmap_size(h->block_size);
	l->entries = h->max_bat_entries;
	l->meta[l->nmeta++] = (struct vhd_extent){
		0, VHD_FOOTER_SIZE, "footer copy" };
	l->meta[l->nmeta++] = (struct vhd_extent){
		f->data_offset, VHD_HEADER_SIZE, "dynamic header" };
	l->meta[l->nmeta++] = (struct vhd_extent){
		h->table_offset,
		(uint64_t)h->max_bat_entries * VHD_BAT_ENTRY_SIZE, "BAT" };
	if (f->type != VHD_TYPE_DIFF)
		return;
	for (i = 0; i < VHD_MAX_LOCATORS; i++) {
		if (!vhd_locator_supported(h->loc[i].code) ||
		    !h->loc[i].data_len)
			continue;
		l->meta[l->nmeta++] = (struct vhd_extent){
			h->loc[i].data_offset, h->loc[i].data_len,
			locname[i] };
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Bytes of block i's extent in the file that must exist: bitmap + data. */
static uint64_t block_extent(const struct vhd_layout *l, uint32_t i)
{
	uint64_t start = (uint64_t)i * l->block_size;
	uint64_t data = l->block_size;

	if (start < l->size && l->size - start < data)
		data = l->size - start;
	return l->bitmap_size + data;
}

static int bat_check_overlaps(const struct vhd_layout *l,
			      const uint32_t *bat, uint64_t *scratch,
			      struct td_report *r)
{
	uint64_t n = 0, k, prev_end = 0;
	uint32_t i, prev = 0;
	int ret = 0;

	for (i = 0; i < l->entries; i++)
		if (bat[i] != VHD_BAT_UNUSED)
			scratch[n++] = (uint64_t)bat[i] << 32 | i;
	qsort(scratch, n, sizeof(*scratch), cmp_u64);
	for (k = 0; k < n; k++) {
		uint64_t off = (scratch[k] >> 32) << VHD_SECTOR_SHIFT;
		uint32_t idx = (uint32_t)scratch[k];

		if (k && off < prev_end)
			ret = td_first_err(ret, td_report(r, -EINVAL,
				"BAT entries %" PRIu32 " and %" PRIu32
				" overlap: blocks at 0x%" PRIx64 " and 0x%"
				PRIx64, prev, idx,
				((uint64_t)bat[prev]) << VHD_SECTOR_SHIFT,
				off));
		if (!k || off + block_extent(l, idx) > prev_end) {
			prev_end = off + block_extent(l, idx);
			prev = idx;
		}
	}
	return ret;
}

int vhd_bat_check(const struct vhd_layout *l, const uint32_t *bat,
		  uint64_t *scratch, struct td_report *r)
{
	uint64_t need = vhd_blocks_for_size(l->size, l->block_size);
	uint32_t i;
	unsigned m;
	int ret = 0;

	for (i = 0; i < l->entries; i++) {
		uint64_t off, end;

		if (bat[i] == VHD_BAT_UNUSED)
			continue;
		if (i >= need) {
			ret = td_first_err(ret, td_report(r, -EINVAL,
				"BAT entry %" PRIu32 " lies beyond the virtual "
				"size (%" PRIu64 " blocks) but is allocated at "
				"sector 0x%" PRIx32, i, need, bat[i]));
			continue;
		}
		off = (uint64_t)bat[i] << VHD_SECTOR_SHIFT;
		end = off + block_extent(l, i);
		if (end > l->footer_off) {
			ret = td_first_err(ret, td_report(r, -EINVAL,
				"BAT entry %" PRIu32 " points past the end of "
				"the file: block at 0x%" PRIx64 "-0x%" PRIx64
				", data ends at 0x%" PRIx64, i, off, end,
				l->footer_off));
			continue;
		}
		for (m = 0; m < l->nmeta; m++) {
			const struct vhd_extent *e = &l->meta[m];

			if (off < e->off + e->len && e->off < end)
				ret = td_first_err(ret, td_report(r, -EINVAL,
					"BAT entry %" PRIu32 ": block at 0x%"
					PRIx64 "-0x%" PRIx64 " overlaps the %s "
					"at 0x%" PRIx64 "-0x%" PRIx64, i, off,
					end, e->what, e->off,
					e->off + e->len));
		}
	}
	if (scratch)
		ret = td_first_err(ret, bat_check_overlaps(l, bat, scratch, r));
	return ret;
}

uint64_t vhd_data_end(const struct vhd_footer *f, const struct vhd_header *h,
		      const uint32_t *bat, uint32_t entries,
		      uint64_t footer_off)
{
	uint64_t end = f->data_offset + VHD_HEADER_SIZE, e;
	uint32_t bsize = vhd_bitmap_size(h->block_size), i;
	unsigned k;

	e = h->table_offset + vhd_bat_bytes(h->max_bat_entries);
	if (e > end)
		end = e;
	for (k = 0; k < VHD_MAX_LOCATORS && f->type == VHD_TYPE_DIFF; k++) {
		const struct vhd_locator *loc = &h->loc[k];
		uint64_t len = loc->data_len;

		if (loc->code == VHD_PLAT_NONE || !len ||
		    loc->data_offset >= footer_off)
			continue;
		if (vhd_locator_supported(loc->code) &&
		    vhd_locator_space(loc) > len)
			len = vhd_locator_space(loc);
		if (loc->data_offset + len > end)
			end = loc->data_offset + len;
	}
	for (i = 0; i < entries; i++) {
		if (bat[i] == VHD_BAT_UNUSED)
			continue;
		e = ((uint64_t)bat[i] << VHD_SECTOR_SHIFT) + bsize +
		    h->block_size;
		if (e > end)
			end = e;
	}
	return (end + VHD_SECTOR_SIZE - 1) & ~(uint64_t)(VHD_SECTOR_SIZE - 1);
}

/* ---- sector bitmaps ------------------------------------------------- */

void vhd_bitmap_set_range(uint8_t *map, uint32_t first, uint32_t count)
{
	uint32_t s = first, end = first + count;

	while (s < end && (s & 7))
		vhd_bitmap_set(map, s++);
	while (s + 8 <= end) {
		map[s >> 3] = 0xff;
		s += 8;
	}
	while (s < end)
		vhd_bitmap_set(map, s++);
}

uint32_t vhd_bitmap_run(const uint8_t *map, uint32_t first, uint32_t limit,
			bool *present)
{
	bool bit = vhd_bitmap_test(map, first);
	uint8_t whole = bit ? 0xff : 0x00;
	uint32_t s = first + 1, end = first + limit;

	*present = bit;
	while (s < end) {
		if (!(s & 7) && s + 8 <= end && map[s >> 3] == whole) {
			s += 8;
			continue;
		}
		if (vhd_bitmap_test(map, s) != bit)
			break;
		s++;
	}
	return s - first;
}

uint32_t vhd_bitmap_count(const uint8_t *map, uint32_t first,
			  uint32_t count)
{
	uint32_t s = first, end = first + count, n = 0;

	while (s < end) {
		if (!(s & 7) && s + 8 <= end) {
			n += (uint32_t)__builtin_popcount(map[s >> 3]);
			s += 8;
			continue;
		}
		n += vhd_bitmap_test(map, s);
		s++;
	}
	return n;
}

/* ---- UTF-16 --------------------------------------------------------- */

/* Decode one UTF-8 sequence at *p; -EILSEQ if invalid. */
static int utf8_next(const unsigned char **p, uint32_t *cp)
{
	const unsigned char *s = *p;
	uint32_t c = s[0], min;
	unsigned n, i;

	if (c < 0x80) {
		n = 0;
		min = 0;
	} else if ((c & 0xe0) == 0xc0) {
		n = 1;
		c &= 0x1f;
		min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		n = 2;
		c &= 0x0f;
		min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		n = 3;
		c &= 0x07;
		min = 0x10000;
	} else {
		return -EILSEQ;
	}
	for (i = 1; i <= n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return -EILSEQ;
		c = c << 6 | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return -EILSEQ;
	*cp = c;
	*p = s + n + 1;
	return 0;
}

static void put_u16(uint8_t *p, uint16_t v, bool be)
{
	p[be ? 0 : 1] = (uint8_t)(v >> 8);
	p[be ? 1 : 0] = (uint8_t)v;
}

static uint16_t get_u16(const uint8_t *p, bool be)
{
	return be ? (uint16_t)(p[0] << 8 | p[1]) :
		    (uint16_t)(p[1] << 8 | p[0]);
}

int vhd_utf8_to_utf16(const char *s, bool big_endian, uint8_t *out,
		      size_t outlen, size_t *len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = 0;
	uint32_t c;
	int err;

	while (*p) {
		err = utf8_next(&p, &c);
		if (err)
			return err;
		if (c >= 0x10000) {
			if (n + 4 > outlen)
				return -ENAMETOOLONG;
			c -= 0x10000;
			put_u16(out + n, (uint16_t)(0xd800 | c >> 10),
				big_endian);
			put_u16(out + n + 2, (uint16_t)(0xdc00 | (c & 0x3ff)),
				big_endian);
			n += 4;
		} else {
			if (n + 2 > outlen)
				return -ENAMETOOLONG;
			put_u16(out + n, (uint16_t)c, big_endian);
			n += 2;
		}
	}
	*len = n;
	return 0;
}

static int utf8_put(char *out, size_t outlen, size_t *n, uint32_t c)
{
	unsigned char b[4];
	size_t k;

	if (c < 0x80) {
		b[0] = (unsigned char)c;
		k = 1;
	} else if (c < 0x800) {
		b[0] = (unsigned char)(0xc0 | c >> 6);
		b[1] = (unsigned char)(0x80 | (c & 0x3f));
		k = 2;
	} else if (c < 0x10000) {
		b[0] = (unsigned char)(0xe0 | c >> 12);
		b[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
		b[2] = (unsigned char)(0x80 | (c & 0x3f));
		k = 3;
	} else {
		b[0] = (unsigned char)(0xf0 | c >> 18);
		b[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3f));
		b[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
		b[3] = (unsigned char)(0x80 | (c & 0x3f));
		k = 4;
	}
	if (*n + k + 1 > outlen)
		return -ENAMETOOLONG;
	memcpy(out + *n, b, k);
	*n += k;
	return 0;
}

int vhd_utf16_to_utf8(const uint8_t *in, size_t len, bool big_endian,
		      char *out, size_t outlen)
{
	size_t i, n = 0;
	int err;

	if (outlen == 0)
		return -ENAMETOOLONG;
	out[0] = '\0';
	if (len & 1)
		return -EILSEQ;
	for (i = 0; i < len; i += 2) {
		uint32_t c = get_u16(in + i, big_endian);

		if (c == 0)
			break;
		if (c >= 0xdc00 && c <= 0xdfff)
			return -EILSEQ;
		if (c >= 0xd800 && c <= 0xdbff) {
			uint32_t lo;

			if (i + 4 > len)
				return -EILSEQ;
			lo = get_u16(in + i + 2, big_endian);
			if (lo < 0xdc00 || lo > 0xdfff)
				return -EILSEQ;
			c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
			i += 2;
		}
		err = utf8_put(out, outlen, &n, c);
		if (err)
			return err;
	}
	out[n] = '\0';
	return 0;
}

int vhd_parent_name_set(struct vhd_header *h, const char *name)
{
	size_t len;

	memset(h->parent_name, 0, sizeof(h->parent_name));
	return vhd_utf8_to_utf16(name, true, h->parent_name,
				 sizeof(h->parent_name), &len);
}

int vhd_parent_name_get(const struct vhd_header *h, char *out,
			size_t outlen)
{
	return vhd_utf16_to_utf8(h->parent_name, sizeof(h->parent_name),
				 true, out, outlen);
}

/* ---- parent locators ------------------------------------------------ */

/* Characters a file URL path keeps as they are (RFC 3986 pchar + '/'). */
static bool url_plain(unsigned char c)
{
	return isalnum(c) || strchr("-._~!$&'()*+,;=:@/", c);
}

static int macx_encode(const char *path, uint8_t *out, size_t outlen,
		       size_t *len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(MACX_PREFIX);
	const unsigned char *p;

	if (n > outlen)
		return -ENAMETOOLONG;
	memcpy(out, MACX_PREFIX, n);
	for (p = (const unsigned char *)path; *p; p++) {
		if (url_plain(*p)) {
			if (n + 1 > outlen)
				return -ENAMETOOLONG;
			out[n++] = *p;
			continue;
		}
		if (n + 3 > outlen)
			return -ENAMETOOLONG;
		out[n++] = '%';
		out[n++] = (uint8_t)hex[*p >> 4];
		out[n++] = (uint8_t)hex[*p & 15];
	}
	*len = n;
	return 0;
}

static int w2_encode(uint32_t code, const char *path, uint8_t *out,
		     size_t outlen, size_t *len)
{
	char tmp[4096 + 4];
	size_t n, i;

	if (code == VHD_PLAT_W2RU && strncmp(path, "./", 2) &&
	    strncmp(path, "../", 3))
		n = (size_t)snprintf(tmp, sizeof(tmp), "./%s", path);
	else
		n = (size_t)snprintf(tmp, sizeof(tmp), "%s", path);
	if (n >= sizeof(tmp))
		return -ENAMETOOLONG;
	for (i = 0; i < n; i++)
		if (tmp[i] == '/')
			tmp[i] = '\\';
	return vhd_utf8_to_utf16(tmp, false, out, outlen, len);
}

int vhd_locator_encode(uint32_t code, const char *path, uint8_t *out,
		       size_t outlen, size_t *len)
{
	bool absolute = path[0] == '/';

	if (!path[0] || strchr(path, '\\'))
		return -EINVAL;
	switch (code) {
	case VHD_PLAT_W2RU:
		if (absolute)
			return -EINVAL;
		return w2_encode(code, path, out, outlen, len);
	case VHD_PLAT_W2KU:
		if (!absolute)
			return -EINVAL;
		return w2_encode(code, path, out, outlen, len);
	case VHD_PLAT_MACX:
		if (!absolute)
			return -EINVAL;
		return macx_encode(path, out, outlen, len);
	default:
		return -EINVAL;
	}
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (unsigned char)tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static int macx_decode(const uint8_t *data, size_t len, char *path,
		       size_t pathlen, char *err, size_t errlen)
{
	size_t plen = strlen(MACX_PREFIX), i, n = 0;

	if (len < plen || memcmp(data, MACX_PREFIX, plen)) {
		snprintf(err, errlen, "MacX locator does not start with "
			 "\"%s\"", MACX_PREFIX);
		return -EINVAL;
	}
	i = plen;
	if (len - i >= strlen(MACX_LOCALHOST) + 1 &&
	    !memcmp(data + i, MACX_LOCALHOST, strlen(MACX_LOCALHOST)) &&
	    data[i + strlen(MACX_LOCALHOST)] == '/')
		i += strlen(MACX_LOCALHOST);
	for (; i < len; i++) {
		int c = data[i];

		if (c == '%') {
			int hi = i + 2 < len ? hexval(data[i + 1]) : -1;
			int lo = i + 2 < len ? hexval(data[i + 2]) : -1;

			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				snprintf(err, errlen, "MacX locator: bad "
					 "escape at byte %zu", i);
				return -EINVAL;
			}
			c = hi << 4 | lo;
			i += 2;
		} else if (c == 0) {
			snprintf(err, errlen, "MacX locator: NUL at byte %zu",
				 i);
			return -EINVAL;
		}
		if (n + 1 >= pathlen) {
			snprintf(err, errlen, "MacX locator: path too long");
			return -ENAMETOOLONG;
		}
		path[n++] = (char)c;
	}
	path[n] = '\0';
	return 0;
}

int vhd_locator_decode(uint32_t code, const uint8_t *data, size_t len,
		       char *path, size_t pathlen, char *err, size_t errlen)
{
	char name[16];
	size_t i;
	int ret;

	if (pathlen)
		path[0] = '\0';
	if (errlen)
		err[0] = '\0';
	switch (code) {
	case VHD_PLAT_W2RU:
	case VHD_PLAT_W2KU:
		ret = vhd_utf16_to_utf8(data, len & ~(size_t)1, false, path,
					pathlen);
		if (ret) {
			snprintf(err, errlen, "%s locator is not valid "
				 "UTF-16LE", vhd_platform_name(code, name,
							       sizeof(name)));
			return ret;
		}
		for (i = 0; path[i]; i++)
			if (path[i] == '\\')
				path[i] = '/';
		if (isalpha((unsigned char)path[0]) && path[1] == ':')
			memmove(path, path + 2, strlen(path + 2) + 1);
		break;
	case VHD_PLAT_MACX:
		while (len && data[len - 1] == 0)
			len--;
		ret = macx_decode(data, len, path, pathlen, err, errlen);
		if (ret)
			return ret;
		break;
	default:
		snprintf(err, errlen, "parent locator platform %s is not "
			 "supported", vhd_platform_name(code, name,
							sizeof(name)));
		return -ENOTSUP;
	}
	if (!path[0]) {
		snprintf(err, errlen, "%s locator holds an empty path",
			 vhd_platform_name(code, name, sizeof(name)));
		return -EINVAL;
	}
	return 0;
}
