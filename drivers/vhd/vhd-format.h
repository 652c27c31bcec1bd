/* SPDX-License-Identifier: MIT */
/*
 * VHD on-disk format: pure code, bytes in and struct (or a reason) out.
 *
 * Nothing here does file I/O, allocates memory or keeps state, so every
 * function can be unit-tested and fuzzed on a buffer.  The layout follows
 * Microsoft's "Virtual Hard Disk Image Format Specification" (2006):
 *
 *   fixed:        [ data: current_size bytes ][ footer ]
 *   dynamic/diff: [ footer copy ][ header ][ locators ][ BAT ]
 *                 [ bitmap | block ]...[ footer ]
 *
 * All multi-byte fields are big-endian on disk.  The structs below hold
 * them in host order; vhd_*_encode / vhd_*_decode convert.
 *
 * Errors: validators return 0 or -errno (-EINVAL for a malformed image,
 * -ENOTSUP for a well-formed feature this code does not implement) and
 * describe every problem through a struct td_report: the first message
 * goes to report->err, and every message to report->fn when it is set
 * (tapfs-img check lists them all).  Messages name the field and the
 * value ("block size 3 is not a power of two").
 */
#ifndef TAPFS_VHD_FORMAT_H
#define TAPFS_VHD_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/td-util.h"

#define VHD_SECTOR_SHIFT	9
#define VHD_SECTOR_SIZE		(1u << VHD_SECTOR_SHIFT)
#define VHD_FOOTER_SIZE		512u
#define VHD_HEADER_SIZE		1024u
#define VHD_UUID_SIZE		16u

#define VHD_FOOTER_COOKIE	"conectix"
#define VHD_HEADER_COOKIE	"cxsparse"
#define VHD_COOKIE_SIZE		8u

/* Footer "file format version" and dynamic header version. */
#define VHD_FORMAT_VERSION	0x00010000u
#define VHD_HEADER_VERSION	0x00010000u
#define VHD_VERSION_MAJOR(v)	((v) >> 16)

/* Footer "features". */
#define VHD_FEATURE_TEMPORARY	0x00000001u
#define VHD_FEATURE_RESERVED	0x00000002u	/* must always be set */

/* Footer data offset of a fixed disk; header data offset (unused field). */
#define VHD_NO_OFFSET		UINT64_MAX

/* A BAT entry of a block that is not allocated. */
#define VHD_BAT_UNUSED		0xFFFFFFFFu
#define VHD_BAT_ENTRY_SIZE	4u

#define VHD_DEFAULT_BLOCK_SIZE	(2u << 20)
#define VHD_MIN_BLOCK_SIZE	VHD_SECTOR_SIZE
/* Bounds the per-block bitmap (64 KiB) and the memory one block needs. */
#define VHD_MAX_BLOCK_SIZE	(256u << 20)

/*
 * Largest virtual size: 2040 GiB, the limit of Hyper-V and QEMU (a BAT
 * entry is a 32-bit sector offset, so a dynamic file cannot pass 2 TiB).
 */
#define VHD_MAX_SIZE		(2040ull << 30)

/* VHD timestamps count seconds since 2000-01-01 00:00:00 UTC. */
#define VHD_EPOCH		946684800

/* Dynamic header: the parent name field and the locator table. */
#define VHD_PARENT_NAME_SIZE	512u
#define VHD_MAX_LOCATORS	8u
/* Largest locator payload accepted on decode (a path, 4096 UTF-16 units). */
#define VHD_MAX_LOCATOR_BYTES	8192u

/*
 * Creator application written by tapfs: "tap\0", blktap's.  QEMU sizes an
 * image from current_size (not from the CHS geometry, which rounds down)
 * for this creator, so both agree on the virtual size to the byte.
 */
#define VHD_CREATOR_APP		"tap"
/* Creators whose disks are sized by their CHS geometry (see below). */
#define VHD_CREATOR_VPC		"vpc "	/* Microsoft Virtual PC */
#define VHD_CREATOR_QEMU	"qemu"	/* qemu-img create -f vpc */
/*
 * Creator version 1.1: blktap's vhd-util looks for its private "batmap"
 * only for tap images of version 1.2 and later (1.1: when one is present),
 * and reads version 0.1 bitmaps LSB-first; 1.1 avoids both.
 */
#define VHD_CREATOR_VERSION	0x00010001u
#define VHD_CREATOR_OS		"Wi2k"

enum vhd_disk_type {
	VHD_TYPE_NONE		= 0,
	VHD_TYPE_FIXED		= 2,
	VHD_TYPE_DYNAMIC	= 3,
	VHD_TYPE_DIFF		= 4,
};

/* Parent locator platform codes (big-endian ASCII on disk). */
enum vhd_platform {
	VHD_PLAT_NONE	= 0x00000000,
	VHD_PLAT_WI2R	= 0x57693272,	/* "Wi2r" deprecated */
	VHD_PLAT_WI2K	= 0x5769326B,	/* "Wi2k" deprecated */
	VHD_PLAT_W2RU	= 0x57327275,	/* "W2ru" relative path, UTF-16LE */
	VHD_PLAT_W2KU	= 0x57326B75,	/* "W2ku" absolute path, UTF-16LE */
	VHD_PLAT_MAC	= 0x4D616320,	/* "Mac " alias blob, unsupported */
	VHD_PLAT_MACX	= 0x4D616358,	/* "MacX" file:// URL, UTF-8 */
};

struct vhd_geometry {
	uint16_t	cylinders;
	uint8_t		heads;
	uint8_t		sectors;	/* per track */
};

/* The 512-byte hard disk footer (offsets in the comments). */
struct vhd_footer {
	char			cookie[VHD_COOKIE_SIZE];	/*  0 */
	uint32_t		features;			/*  8 */
	uint32_t		version;			/* 12 */
	uint64_t		data_offset;			/* 16 */
	uint32_t		timestamp;			/* 24 */
	char			creator_app[4];			/* 28 */
	uint32_t		creator_version;		/* 32 */
	char			creator_os[4];			/* 36 */
	uint64_t		orig_size;			/* 40 */
	uint64_t		curr_size;			/* 48 */
	struct vhd_geometry	geometry;			/* 56 */
	uint32_t		type;				/* 60 */
	uint32_t		checksum;			/* 64 */
	uint8_t			uuid[VHD_UUID_SIZE];		/* 68 */
	uint8_t			saved_state;			/* 84 */
};

/* One parent locator entry (24 bytes on disk). */
struct vhd_locator {
	uint32_t	code;		/* enum vhd_platform */
	uint32_t	data_space;	/* sectors (spec) or bytes (MS tools) */
	uint32_t	data_len;	/* bytes of payload */
	uint32_t	reserved;
	uint64_t	data_offset;	/* absolute file offset */
};

/* The 1024-byte dynamic disk header. */
struct vhd_header {
	char			cookie[VHD_COOKIE_SIZE];	/*   0 */
	uint64_t		data_offset;			/*   8 */
	uint64_t		table_offset;			/*  16 */
	uint32_t		version;			/*  24 */
	uint32_t		max_bat_entries;		/*  28 */
	uint32_t		block_size;			/*  32 */
	uint32_t		checksum;			/*  36 */
	uint8_t			parent_uuid[VHD_UUID_SIZE];	/*  40 */
	uint32_t		parent_timestamp;		/*  56 */
	uint32_t		reserved;			/*  60 */
	/* 64: UTF-16BE, NUL padded */
	uint8_t			parent_name[VHD_PARENT_NAME_SIZE];
	struct vhd_locator	loc[VHD_MAX_LOCATORS];		/* 576 */
};

/* ---- scalars -------------------------------------------------------- */

/*
 * Ones' complement of the byte sum of buf[0..len), the four bytes at
 * csum_off counted as zero (the footer's field is at 64, the header's at
 * 36).
 */
uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off);

/* CHS geometry of size bytes by the specification's algorithm. */
void vhd_geometry_from_size(uint64_t size, struct vhd_geometry *g);
uint64_t vhd_geometry_sectors(const struct vhd_geometry *g);

/*
 * The geometry 65535 x 16 x 255 (compared as a product of sectors, as
 * QEMU does): "larger than CHS can say".  The algorithm above gives it to
 * every disk of 127 GiB and more.
 */
#define VHD_GEOMETRY_MAX_SECTORS	(65535ull * 16 * 255)

/* UNIX time <-> VHD time (clamped to the VHD range). */
uint32_t vhd_time_from_unix(time_t t);
time_t vhd_time_to_unix(uint32_t vt);
/* A VHD timestamp as "2026-12-03 14:44:21 UTC" (the number if it cannot). */
void vhd_time_format(uint32_t vt, char *out, size_t len);

/* "fixed", "dynamic", "differencing", or "unknown". */
const char *vhd_type_name(uint32_t type);
/* "W2ru", "MacX", ... or "none"/"unknown"; buf holds at least 16 bytes. */
const char *vhd_platform_name(uint32_t code, char *buf, size_t len);

/* "xxxxxxxx-xxxx-..." of a 16-byte uuid; out holds 37 bytes. */
void vhd_uuid_format(const uint8_t uuid[VHD_UUID_SIZE], char *out);
bool vhd_uuid_is_nil(const uint8_t uuid[VHD_UUID_SIZE]);

/* ---- footer ---------------------------------------------------------- */

/*
 * A footer for a new image: cookie, features, versions, creator, sizes,
 * geometry from size, the given type, timestamp and uuid; data_offset is
 * VHD_NO_OFFSET for fixed disks and VHD_FOOTER_SIZE otherwise.
 */
void vhd_footer_init(struct vhd_footer *f, enum vhd_disk_type type,
		     uint64_t size, uint32_t timestamp,
		     const uint8_t uuid[VHD_UUID_SIZE]);

/* Serialise f into 512 bytes, computing the checksum (stored in f too). */
void vhd_footer_encode(struct vhd_footer *f, uint8_t *buf);

/*
 * Parse 512 bytes and validate every field that needs no context:
 * cookie, checksum, format version, disk type, current size (multiple of
 * 512, at most VHD_MAX_SIZE), and the data offset of a dynamic disk.
 * *f is filled as far as the cookie allows.  Returns 0 or -errno.
 */
int vhd_footer_parse(const uint8_t *buf, struct vhd_footer *f,
		     struct td_report *r);
/* The same, keeping only the first message in err. */
int vhd_footer_decode(const uint8_t *buf, struct vhd_footer *f,
		      char *err, size_t errlen);

/*
 * The virtual size of the disk f describes, in bytes: what a virtual
 * machine sees, and the bound of every read and write.  The one place
 * this rule lives (the daemon, tapfs-img and the checks all ask here):
 *
 *  - creator "vpc " (Virtual PC) or "qemu" (qemu-img create -f vpc):
 *    cylinders * heads * sectors per track * 512, the size Virtual PC's
 *    and QEMU's emulated ATA disk has (the footer's current size is
 *    usually larger: the geometry rounds it down), unless the geometry is
 *    the maximum (VHD_GEOMETRY_MAX_SECTORS), which only says the disk is
 *    larger than CHS can express: then the current size, as QEMU does;
 *  - any other creator: the footer's current size.  "tap\0" (tapfs,
 *    blktap, XenServer), "win " (Hyper-V), "qem2" (qemu-img's
 *    force_size), "d2v " (Disk2vhd) and "CTXS" (XenConverter) are sized
 *    so by QEMU too; for creators QEMU does not list ("vs  " Virtual
 *    Server, "vbox", ...) QEMU 7.2 takes the geometry and tapfs the
 *    current size, which never hides sectors the footer declares.
 */
uint64_t vhd_footer_virtual_size(const struct vhd_footer *f);
/* Does vhd_footer_virtual_size come from the geometry (not curr_size)? */
bool vhd_footer_size_from_geometry(const struct vhd_footer *f);

/* ---- dynamic header ------------------------------------------------- */

/*
 * A header for a new dynamic/differencing disk of size bytes: cookie,
 * data offset VHD_NO_OFFSET, table_offset, version, block size and
 * max_bat_entries = ceil(size / block_size).  Parent fields zero.
 */
void vhd_header_init(struct vhd_header *h, uint64_t size,
		     uint32_t block_size, uint64_t table_offset);

void vhd_header_encode(struct vhd_header *h, uint8_t *buf);

/*
 * Parse 1024 bytes and validate them against the footer f (current size,
 * disk type) and the file: file_size bytes, the trailing footer at
 * footer_off.  Checks cookie, checksum, version, block size (power of two,
 * 512 B to 256 MiB), max_bat_entries against virtual size / block size,
 * the BAT inside the file before the footer, and for differencing disks
 * each parent locator's payload inside the file.
 */
int vhd_header_parse(const uint8_t *buf, struct vhd_header *h,
		     const struct vhd_footer *f, uint64_t footer_off,
		     struct td_report *r);
int vhd_header_decode(const uint8_t *buf, struct vhd_header *h,
		      const struct vhd_footer *f, uint64_t footer_off,
		      char *err, size_t errlen);

/* Blocks needed for size bytes (the minimum max_bat_entries). */
uint64_t vhd_blocks_for_size(uint64_t size, uint32_t block_size);

/* Bytes of the BAT on disk: entries * 4 rounded up to a sector. */
uint64_t vhd_bat_bytes(uint32_t entries);

/* ---- BAT -------------------------------------------------------------- */

void vhd_bat_decode(const uint8_t *buf, uint32_t entries, uint32_t *bat);
void vhd_bat_encode(const uint32_t *bat, uint32_t entries, uint8_t *buf);

/* A metadata range of the file, named in overlap messages. */
struct vhd_extent {
	uint64_t	 off;
	uint64_t	 len;
	const char	*what;
};

/*
 * Everything vhd_bat_check needs to place blocks in the file.  meta[]
 * lists the metadata ranges (footer copy, header, BAT, locators).
 */
struct vhd_layout {
	/* Bytes the BAT maps: the larger of the virtual size and the
	 * footer's current size (a block past the virtual size is harmless:
	 * written while the size was read from the current size). */
	uint64_t		 size;
	uint64_t		 footer_off;	/* trailing footer */
	uint32_t		 block_size;
	uint32_t		 bitmap_size;
	uint32_t		 entries;
	unsigned		 nmeta;
	struct vhd_extent	 meta[3 + VHD_MAX_LOCATORS];
};

/* Fill l from a validated footer, header and trailing footer offset. */
void vhd_layout_init(struct vhd_layout *l, const struct vhd_footer *f,
		     const struct vhd_header *h, uint64_t footer_off);

/*
 * Check every allocated entry: its bitmap and the part of its block that
 * holds sectors below l->size lie before the trailing footer, outside
 * the metadata, and no two blocks overlap.  Entries past the blocks
 * l->size needs must be unused.  scratch holds entries uint64_t (used to
 * sort); NULL skips the block-vs-block overlap test.
 */
int vhd_bat_check(const struct vhd_layout *l, const uint32_t *bat,
		  uint64_t *scratch, struct td_report *r);

/*
 * End of everything a dynamic or differencing image references, rounded
 * up to a sector: the dynamic header, the BAT (whole sectors), in a
 * differencing disk every parent locator that starts before footer_off
 * (through its reserved data space, for the codes tapfs reads), and every
 * allocated entry of bat[0..entries) (its bitmap and a whole block).
 * Nothing the image uses lies at or past it.  In a clean image it is the
 * trailing footer's offset; space between it and the footer is
 * referenced by nothing (left by an interrupted block allocation).
 */
uint64_t vhd_data_end(const struct vhd_footer *f, const struct vhd_header *h,
		      const uint32_t *bat, uint32_t entries,
		      uint64_t footer_off);

/* ---- sector bitmaps ------------------------------------------------- */

/*
 * A block's bitmap has one bit per sector, set when the sector is present
 * in this image, most significant bit first within each byte (sector 0 is
 * 0x80 of byte 0).  Its size is rounded up to a whole sector.
 */
uint32_t vhd_bitmap_size(uint32_t block_size);

static inline bool vhd_bitmap_test(const uint8_t *map, uint32_t sec)
{
	return map[sec >> 3] & (0x80u >> (sec & 7));
}

static inline void vhd_bitmap_set(uint8_t *map, uint32_t sec)
{
	map[sec >> 3] |= (uint8_t)(0x80u >> (sec & 7));
}

static inline void vhd_bitmap_clear(uint8_t *map, uint32_t sec)
{
	map[sec >> 3] &= (uint8_t)~(0x80u >> (sec & 7));
}

void vhd_bitmap_set_range(uint8_t *map, uint32_t first, uint32_t count);

/*
 * Length of the run of sectors starting at first that share first's bit,
 * at most limit sectors; *present gets that bit.
 */
uint32_t vhd_bitmap_run(const uint8_t *map, uint32_t first, uint32_t limit,
			bool *present);

/* Sectors set among [first, first + count). */
uint32_t vhd_bitmap_count(const uint8_t *map, uint32_t first,
			  uint32_t count);

/* ---- text: UTF-16 and parent locators ------------------------------ */

/*
 * UTF-8 -> UTF-16 (big- or little-endian), no terminator.  Writes *len
 * bytes to out.  -EILSEQ for invalid UTF-8, -ENAMETOOLONG if out is too
 * small.
 */
int vhd_utf8_to_utf16(const char *s, bool big_endian, uint8_t *out,
		      size_t outlen, size_t *len);
/*
 * UTF-16 -> NUL-terminated UTF-8, stopping at the first NUL unit.
 * -EILSEQ for unpaired surrogates or an odd length, -ENAMETOOLONG.
 */
int vhd_utf16_to_utf8(const uint8_t *in, size_t len, bool big_endian,
		      char *out, size_t outlen);

/* The header's parent unicode name (UTF-16BE, NUL padded). */
int vhd_parent_name_set(struct vhd_header *h, const char *name);
int vhd_parent_name_get(const struct vhd_header *h, char *out,
			size_t outlen);

/*
 * Bytes reserved for a locator's payload.  data_space is specified in
 * sectors, but Microsoft tools (and blktap) store bytes: a value below
 * 512 is taken as sectors, a multiple of 512 as bytes, anything else is
 * invalid (0 returned).
 */
uint64_t vhd_locator_space(const struct vhd_locator *loc);

/* A locator code this code reads and writes: W2ru, W2ku or MacX. */
bool vhd_locator_supported(uint32_t code);

/*
 * Encode a POSIX path as a locator payload:
 *   W2ru  relative path, ".\" prefixed, '\' separators, UTF-16LE
 *   W2ku  absolute path, '\' separators, UTF-16LE (no drive letter)
 *   MacX  "file://" URL of the absolute path, percent-encoded, UTF-8
 * Writes *len bytes to out.  -EINVAL if the path does not fit the code
 * (relative for W2ku/MacX, absolute for W2ru, a '\' in a name).
 */
int vhd_locator_encode(uint32_t code, const char *path, uint8_t *out,
		       size_t outlen, size_t *len);

/*
 * Decode a locator payload to a POSIX path: '\' becomes '/', a drive
 * letter ("C:") is dropped, "file://" and "file://localhost" are stripped
 * and %XX decoded; ".\x" gives "./x".  A relative result is relative to
 * the child's directory.  -EINVAL (with a reason in err) for an
 * unsupported code or a malformed payload.
 */
int vhd_locator_decode(uint32_t code, const uint8_t *data, size_t len,
		       char *path, size_t pathlen, char *err, size_t errlen);

#endif
