/* SPDX-License-Identifier: MIT */
/*
 * The VMDK on-disk format, pure: bytes in, a struct or an error out (the
 * reason, naming the field and the value, in err).  No I/O, so the unit
 * tests and the fuzzer run it directly.
 *
 * A VMDK disk is a text descriptor (a file of its own, or embedded in a
 * hosted sparse extent) listing extents; each extent is a flat file (the
 * data as is, from an offset) or a hosted sparse extent: a header
 * ("KDMV", little-endian), a grain directory (GD) of 32-bit sector
 * offsets of grain tables (GT), each GT numGTEsPerGT 32-bit sector
 * offsets of grains (0: unallocated, 1: zeroed when the header says so).
 * A redundant GD and its GTs mirror the primary ones.  streamOptimized
 * extents hold zlib-compressed grains, each after a 12-byte marker
 * (lba, size), and may keep the real header in a footer.
 * Reference: VMware Virtual Disk Format 1.1.
 */
#ifndef TAPFS_VMDK_FORMAT_H
#define TAPFS_VMDK_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VMDK_MAGIC		0x564d444bu	/* "KDMV" read little-endian */
#define VMDK_HEADER_SIZE	512u
#define VMDK_SECTOR		512u

/* Header flags. */
#define VMDK_FLAG_NL_TEST	(1u << 0)
#define VMDK_FLAG_RGD		(1u << 1)	/* redundant GD/GTs present */
#define VMDK_FLAG_ZERO_GTE	(1u << 2)	/* GTE 1 means a zeroed grain */
#define VMDK_FLAG_COMPRESSED	(1u << 16)
#define VMDK_FLAG_MARKERS	(1u << 17)

#define VMDK_COMPRESS_NONE	0u
#define VMDK_COMPRESS_DEFLATE	1u

/* The header's gdOffset when the GD is described by the footer. */
#define VMDK_GD_AT_END		UINT64_MAX

/* GTE values with a meaning of their own. */
#define VMDK_GTE_UNALLOCATED	0u
#define VMDK_GTE_ZERO		1u

/* Limits: beyond them an image is refused as damaged or absurd. */
#define VMDK_MAX_CAPACITY	(64ull << 40 >> 9)	/* sectors: 64 TiB */
#define VMDK_MAX_GRAIN_SECS	2048u			/* 1 MiB grains */
#define VMDK_MAX_GTES		512u
#define VMDK_MAX_DESC		(64u << 10)		/* descriptor bytes */
#define VMDK_MAX_LINE		1024u			/* descriptor line */
#define VMDK_MAX_EXTENTS	1024u
#define VMDK_MAX_NAME		1024u

/* Grains of a new image (tapfs create), as QEMU and VMware make them. */
#define VMDK_DEFAULT_GRAIN_SECS	128u
#define VMDK_DEFAULT_GTES	512u

/* A grain marker: lba, size of the compressed data, then the data. */
#define VMDK_MARKER_SIZE	12u
/* Marker types, for size 0 markers (metadata of stream images). */
#define VMDK_MARKER_EOS		0u
#define VMDK_MARKER_GT		1u
#define VMDK_MARKER_GD		2u
#define VMDK_MARKER_FOOTER	3u

/* The footer of a stream image: marker, header copy, end-of-stream. */
#define VMDK_FOOTER_SIZE	1536u

struct vmdk_header {
	uint32_t	version;
	uint32_t	flags;
	uint64_t	capacity;	/* sectors */
	uint64_t	grain_secs;
	uint64_t	desc_offset;	/* sectors; 0: no embedded descriptor */
	uint64_t	desc_size;	/* sectors */
	uint32_t	gtes;		/* entries per grain table */
	uint64_t	rgd_offset;	/* sectors */
	uint64_t	gd_offset;	/* sectors, or VMDK_GD_AT_END */
	uint64_t	overhead;	/* sectors before the first grain */
	bool		unclean;
	uint16_t	compress;
};

/* Derived geometry of a valid header. */
static inline uint64_t vmdk_header_grains(const struct vmdk_header *h)
{
	return (h->capacity + h->grain_secs - 1) / h->grain_secs;
}

static inline uint64_t vmdk_header_gd_entries(const struct vmdk_header *h)
{
	return (vmdk_header_grains(h) + h->gtes - 1) / h->gtes;
}

/*
 * Decode and check a sparse extent header (VMDK_HEADER_SIZE bytes).
 * file_secs is the extent file's size in sectors: the GD and the
 * descriptor must lie inside it (a footer header of a stream image is
 * decoded with its gd_offset checked by the caller).  0 or -EINVAL with
 * err naming the field and the value; -ENOTSUP for a feature refused.
 */
int vmdk_header_decode(const uint8_t *buf, uint64_t file_secs,
		       struct vmdk_header *h, char *err, size_t errlen);
/* Encode h (magic included) into buf[VMDK_HEADER_SIZE]. */
void vmdk_header_encode(const struct vmdk_header *h, uint8_t *buf);

/* ---- descriptor ----------------------------------------------------- */

enum vmdk_extent_type {
	VMDK_EXTENT_SPARSE,
	VMDK_EXTENT_FLAT,
	VMDK_EXTENT_ZERO,
};

enum vmdk_access {
	VMDK_ACCESS_RW,
	VMDK_ACCESS_RDONLY,
};

struct vmdk_extent_desc {
	enum vmdk_access	access;
	enum vmdk_extent_type	type;
	uint64_t		secs;
	uint64_t		offset;		/* sectors (flat extents) */
	char			name[VMDK_MAX_NAME + 1];
};

struct vmdk_desc {
	uint32_t		 cid;
	uint32_t		 parent_cid;	/* 0xffffffff: no parent */
	bool			 has_parent_cid;
	char			 create_type[64];
	char			 parent_hint[VMDK_MAX_NAME + 1];	/* "" */
	unsigned		 n_extents;
	struct vmdk_extent_desc	*extents;	/* malloc'd */
	uint64_t		 capacity;	/* sectors, all extents */
};

#define VMDK_NO_PARENT_CID	0xffffffffu

/*
 * Parse a text descriptor of len bytes (it may end at a NUL before len:
 * an embedded one is padded with them).  0, -EINVAL with err naming the
 * line and what is wrong, -ENOTSUP for an extent type or access refused,
 * -ENOMEM.  vmdk_desc_free releases d (also after a failure).
 */
int vmdk_desc_parse(const char *text, size_t len, struct vmdk_desc *d,
		    char *err, size_t errlen);
void vmdk_desc_free(struct vmdk_desc *d);

/*
 * Is an extent file name one that stays in the descriptor's folder?  No
 * absolute path, no ".." component, not empty.
 */
bool vmdk_extent_name_ok(const char *name);

/*
 * Write a monolithicSparse descriptor for a disk of capacity sectors
 * whose one extent is the file named name, with cid.  Returns the
 * length, or -ENOSPC if it does not fit in len.
 */
int vmdk_desc_format(char *buf, size_t len, uint64_t capacity,
		     const char *name, uint32_t cid);

/* ---- grain markers ---------------------------------------------------- */

/*
 * The marker at the start of a compressed grain read into buf[len]:
 * its lba and the compressed bytes that follow it (which must fit in
 * len).  0 or -EINVAL with err set.
 */
int vmdk_marker_decode(const uint8_t *buf, size_t len, uint64_t *lba,
		       uint32_t *size, char *err, size_t errlen);

#endif /* TAPFS_VMDK_FORMAT_H */
