/* SPDX-License-Identifier: MIT */
/*
 * qcow2 on-disk format: pure code, bytes in and struct (or a reason) out.
 *
 * Nothing here does file I/O, allocates memory or keeps state, so every
 * function can be unit-tested and fuzzed on a buffer.  The layout follows
 * QEMU's specification (docs/interop/qcow2.txt), versions 2 and 3:
 *
 *   cluster 0:  header, header extensions, backing file name
 *   elsewhere:  L1 table (contiguous), L2 tables (one cluster each),
 *               refcount table (contiguous), refcount blocks (one cluster
 *               each), data clusters, compressed data (byte-granular),
 *               snapshot table
 *
 * Guest offset -> L1 index -> L2 table -> L2 entry -> host cluster.  Every
 * host cluster in use has a reference count, kept in refcount blocks that
 * the refcount table points to.  All multi-byte fields are big-endian on
 * disk; the structs below hold host order.
 *
 * Errors: validators return 0 or -errno (-EINVAL for a malformed image,
 * -ENOTSUP for a well-formed feature this code does not implement) and
 * describe every problem through a struct td_report: the first message
 * goes to report->err, every message to report->fn when it is set.
 * Messages name the field and the value ("cluster_bits 8 is not in
 * 9..21").
 */
#ifndef TAPFS_QCOW2_FORMAT_H
#define TAPFS_QCOW2_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/td-util.h"

#define QCOW2_MAGIC			0x514649fbu	/* "QFI\xfb" */
#define QCOW2_V2_HEADER_SIZE		72u
#define QCOW2_V3_HEADER_SIZE		104u
/* Bytes of the header this code knows (v3 plus compression_type). */
#define QCOW2_HEADER_MAX_KNOWN		112u

#define QCOW2_MIN_CLUSTER_BITS		9u	/* 512 B */
#define QCOW2_MAX_CLUSTER_BITS		21u	/* 2 MiB, QEMU's limit too */
#define QCOW2_DEFAULT_CLUSTER_BITS	16u	/* 64 KiB */
#define QCOW2_DEFAULT_REFCOUNT_ORDER	4u	/* 16-bit refcounts */
#define QCOW2_MAX_REFCOUNT_ORDER	6u	/* 64-bit refcounts */

#define QCOW2_MAX_BACKING_NAME		1023u
#define QCOW2_MAX_FORMAT_NAME		31u
/* QEMU's limits: L1 table 32 MiB, refcount table 8 MiB, 65536 snapshots. */
#define QCOW2_MAX_L1_BYTES		(32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES	(8u << 20)
#define QCOW2_MAX_SNAPSHOTS		65536u
/* Host offsets (L1, L2, refcount table entries) are below 2^56. */
#define QCOW2_MAX_HOST_OFFSET		(1ull << 56)
/* Virtual size limit: 2^61 bytes (QEMU refuses more). */
#define QCOW2_MAX_SIZE			(1ull << 61)

/* crypt_method */
enum qcow2_crypt {
	QCOW2_CRYPT_NONE	= 0,
	QCOW2_CRYPT_AES		= 1,
	QCOW2_CRYPT_LUKS	= 2,
};

/* incompatible_features bits */
#define QCOW2_INCOMPAT_DIRTY		(1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT		(1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE	(1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION	(1ull << 3)
#define QCOW2_INCOMPAT_EXTL2		(1ull << 4)
#define QCOW2_INCOMPAT_KNOWN		((uint64_t)0x1f)
/* compatible_features bits */
#define QCOW2_COMPAT_LAZY_REFCOUNTS	(1ull << 0)
/* autoclear_features bits */
#define QCOW2_AUTOCLEAR_BITMAPS		(1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW	(1ull << 1)

/* compression_type */
enum qcow2_compression {
	QCOW2_COMPRESS_ZLIB	= 0,
	QCOW2_COMPRESS_ZSTD	= 1,
};

/* Header extension types. */
enum qcow2_ext_type {
	QCOW2_EXT_END		= 0x00000000,
	QCOW2_EXT_BACKING_FMT	= 0xe2792aca,
	QCOW2_EXT_FEATURES	= 0x6803f857,
	QCOW2_EXT_BITMAPS	= 0x23852875,
	QCOW2_EXT_CRYPTO	= 0x0537be77,
	QCOW2_EXT_DATA_FILE	= 0x44415441,
};

/* Feature name table entry: type, bit, 46 bytes of name. */
#define QCOW2_FEATURE_ENTRY_SIZE	48u
#define QCOW2_FEATURE_NAME_SIZE		46u
#define QCOW2_MAX_FEATURE_NAMES		64u

enum qcow2_feature_type {
	QCOW2_FEAT_INCOMPAT	= 0,
	QCOW2_FEAT_COMPAT	= 1,
	QCOW2_FEAT_AUTOCLEAR	= 2,
};

/* L1/L2/refcount table entry fields. */
#define QCOW2_OFLAG_COPIED		(1ull << 63)
#define QCOW2_OFLAG_COMPRESSED		(1ull << 62)
#define QCOW2_OFLAG_ZERO		(1ull << 0)
#define QCOW2_OFFSET_MASK		0x00fffffffffffe00ull	/* bits 9-55 */
#define QCOW2_L1_RESERVED		0x7f000000000001ffull
#define QCOW2_L2_RESERVED		0x3f000000000001feull
#define QCOW2_REFT_RESERVED		0x00000000000001ffull
#define QCOW2_COMPRESSED_SECTOR		512u

/* Field offsets of the header. */
enum {
	QH_MAGIC		= 0,
	QH_VERSION		= 4,
	QH_BACKING_OFFSET	= 8,
	QH_BACKING_SIZE		= 16,
	QH_CLUSTER_BITS		= 20,
	QH_SIZE			= 24,
	QH_CRYPT		= 32,
	QH_L1_SIZE		= 36,
	QH_L1_OFFSET		= 40,
	QH_REFT_OFFSET		= 48,
	QH_REFT_CLUSTERS	= 56,
	QH_NB_SNAPSHOTS		= 60,
	QH_SNAPSHOTS_OFFSET	= 64,
	QH_INCOMPAT		= 72,
	QH_COMPAT		= 80,
	QH_AUTOCLEAR		= 88,
	QH_REFCOUNT_ORDER	= 96,
	QH_HEADER_LENGTH	= 100,
	QH_COMPRESSION_TYPE	= 104,
};

struct qcow2_header {
	uint32_t	version;
	uint64_t	backing_file_offset;
	uint32_t	backing_file_size;
	uint32_t	cluster_bits;
	uint64_t	size;			/* virtual, bytes */
	uint32_t	crypt_method;
	uint32_t	l1_size;		/* entries */
	uint64_t	l1_table_offset;
	uint64_t	refcount_table_offset;
	uint32_t	refcount_table_clusters;
	uint32_t	nb_snapshots;
	uint64_t	snapshots_offset;
	/* version 3; version 2 reads as 0, 0, 0, order 4, length 72 */
	uint64_t	incompatible_features;
	uint64_t	compatible_features;
	uint64_t	autoclear_features;
	uint32_t	refcount_order;
	uint32_t	header_length;
	uint8_t		compression_type;	/* 0 unless header_length > 104 */
};

struct qcow2_feature_name {
	uint8_t		type;		/* enum qcow2_feature_type */
	uint8_t		bit;
	char		name[QCOW2_FEATURE_NAME_SIZE + 1];
};

/* What the header extensions say. */
struct qcow2_extensions {
	bool		has_backing_format;
	char		backing_format[QCOW2_MAX_FORMAT_NAME + 1];
	bool		has_data_file;
	char		data_file[QCOW2_MAX_BACKING_NAME + 1];
	bool		has_bitmaps;
	bool		has_crypto;
	unsigned	nfeatures;
	struct qcow2_feature_name features[QCOW2_MAX_FEATURE_NAMES];
	uint32_t	end;		/* first byte past the extension area */
};

/* Derived geometry of a validated header. */
struct qcow2_geometry {
	uint32_t	cluster_bits;
	uint32_t	cluster_size;
	uint32_t	l2_bits;	/* log2(entries per L2 table) */
	uint32_t	l2_entry_size;	/* 8, or 16 with extended L2 */
	uint32_t	refcount_order;
	uint32_t	rb_bits;	/* log2(entries per refcount block) */
	uint32_t	csize_shift;	/* compressed descriptor: size field */
	uint64_t	csize_mask;
	uint64_t	coffset_mask;
	bool		extended_l2;
};

/* ---- header ---------------------------------------------------------- */

/*
 * Parse the header in buf[0..len) (the first cluster, or as much of it as
 * the file has) and validate every field that needs no other context
 * than file_size (0: unknown): magic, version, cluster size, header
 * length, the header extensions (into *ext when not NULL), virtual size
 * against the L1 size, table offsets aligned and (when file_size is
 * known) inside the file, refcount order, snapshot count, backing file
 * name inside the first cluster, encryption and incompatible feature
 * bits.  Well-formed but unsupported features (encryption, a non-zlib
 * compression type, unknown incompatible bits, named from the feature
 * name table when it has them) give -ENOTSUP.  *h is filled as far as
 * the magic allows.
 */
int qcow2_header_parse(const uint8_t *buf, size_t len, uint64_t file_size,
		       struct qcow2_header *h, struct qcow2_extensions *ext,
		       struct td_report *r);

/* Serialise h into buf (h->header_length bytes; 72 for version 2). */
void qcow2_header_encode(const struct qcow2_header *h, uint8_t *buf);

/* Geometry of a parsed header. */
void qcow2_geometry_init(struct qcow2_geometry *g,
			 const struct qcow2_header *h);

/* L1 entries needed for size bytes with the given geometry. */
uint64_t qcow2_l1_entries(const struct qcow2_geometry *g, uint64_t size);

/*
 * Parse the header extensions of the first cluster, buf[0..len): they
 * start at h->header_length.  -EINVAL for an extension running past the
 * buffer or the backing file name, a duplicate, a malformed backing
 * format or data file name.
 */
int qcow2_extensions_parse(const uint8_t *buf, size_t len,
			   const struct qcow2_header *h,
			   struct qcow2_extensions *ext,
			   struct td_report *r);

/*
 * Encode extensions into buf at off (backing format when backing_fmt is
 * set, with features a feature name table of the features this code
 * knows), then the end marker.  Returns the offset after it, or 0 if it
 * would pass len.
 */
size_t qcow2_extensions_encode(uint8_t *buf, size_t len, size_t off,
			       const char *backing_fmt, bool features);

/* The backing file name (NUL-terminated) from the first cluster. */
int qcow2_backing_name(const uint8_t *buf, size_t len,
		       const struct qcow2_header *h, char *out,
		       size_t outlen, struct td_report *r);

/* A feature's name: the table's, else a built-in one, else "bit N". */
const char *qcow2_feature_name(const struct qcow2_extensions *ext,
			       enum qcow2_feature_type type, unsigned bit,
			       char *buf, size_t len);

/*
 * Can an image with this header be written?  0, or -ENOTSUP (or -EROFS
 * for the corrupt bit) with a message naming the feature: corrupt bit,
 * external data file, extended L2 entries, a non-zlib compression type,
 * internal snapshots, a refcount order other than 0..6 with a cluster too
 * small.  Encryption never gets this far (it cannot even be read).
 */
int qcow2_header_check_writable(const struct qcow2_header *h,
				const struct qcow2_extensions *ext,
				struct td_report *r);

/* ---- L1, L2 and refcount table entries ------------------------------ */

enum qcow2_cluster_type {
	QCOW2_CLUSTER_UNALLOCATED,	/* the backing file's (or zeros) */
	QCOW2_CLUSTER_ZERO_PLAIN,	/* zeros, no host cluster */
	QCOW2_CLUSTER_ZERO_ALLOC,	/* zeros, host cluster preallocated */
	QCOW2_CLUSTER_NORMAL,		/* data at host_offset */
	QCOW2_CLUSTER_COMPRESSED,	/* deflate data at host_offset */
};

struct qcow2_mapping {
	enum qcow2_cluster_type type;
	uint64_t	host_offset;	/* cluster-aligned (compressed: any) */
	uint32_t	csize;		/* compressed: bytes from host_offset */
	bool		copied;		/* refcount is exactly one */
};

/*
 * Decode an L2 entry (the first 64 bits of an extended one; version 2
 * has no zero flag).  -EINVAL with a message for reserved bits or an
 * unaligned host offset.
 */
int qcow2_l2_decode(const struct qcow2_geometry *g, uint32_t version,
		    uint64_t entry, struct qcow2_mapping *m,
		    struct td_report *r);

/* Host offset of the L2 table an L1 entry points to (0: none). */
int qcow2_l1_decode(const struct qcow2_geometry *g, uint64_t entry,
		    uint64_t *l2_offset, struct td_report *r);

/* Offset of the refcount block a refcount table entry points to. */
int qcow2_reftable_decode(const struct qcow2_geometry *g, uint64_t entry,
			  uint64_t *rb_offset, struct td_report *r);

/*
 * Host clusters a compressed cluster's data touches: [*first, *last]
 * (cluster indexes), as QEMU counts their references.
 */
void qcow2_compressed_clusters(const struct qcow2_geometry *g,
			       const struct qcow2_mapping *m,
			       uint64_t *first, uint64_t *last);

/*
 * Extended L2: state of subcluster sc (0..31) from the allocation bitmap
 * (the entry's second 64 bits).  Returns QCOW2_CLUSTER_NORMAL,
 * _ZERO_PLAIN or _UNALLOCATED, or -EINVAL for a subcluster marked both
 * allocated and zero.
 */
int qcow2_subcluster_state(uint64_t bitmap, unsigned sc);
#define QCOW2_SUBCLUSTERS	32u

/* ---- references and refcounts (check, repair at open) -------------- */

/*
 * What references one host cluster, ORed over its references: the
 * check counts every reference to every cluster and keeps their kinds.
 */
#define QCOW2_REF_HEADER	(1u << 0)
#define QCOW2_REF_L1		(1u << 1)	/* active or snapshot L1 table */
#define QCOW2_REF_REFTABLE	(1u << 2)
#define QCOW2_REF_REFBLOCK	(1u << 3)
#define QCOW2_REF_SNAPTABLE	(1u << 4)
#define QCOW2_REF_L2		(1u << 5)
#define QCOW2_REF_DATA		(1u << 6)	/* normal, preallocated zero */
#define QCOW2_REF_COMPRESSED	(1u << 7)
/* Kinds a cluster holds alone, once: never shared, even by snapshots. */
#define QCOW2_REF_SOLE		(QCOW2_REF_HEADER | QCOW2_REF_L1 | \
				 QCOW2_REF_REFTABLE | QCOW2_REF_REFBLOCK | \
				 QCOW2_REF_SNAPTABLE)

enum qcow2_verdict {
	QCOW2_RC_OK,		/* refcount == references */
	QCOW2_RC_LEAK,		/* refcount > references: lower it */
	QCOW2_RC_LOW,		/* refcount < references of one owner (or of
				 * compressed data only): raise it; what a
				 * crash with lazy refcounts leaves */
	QCOW2_RC_OVERLAP,	/* metadata and something else, or two kinds
				 * of use, in one cluster */
	QCOW2_RC_SHARED,	/* several references, refcount too low: no
				 * crash leaves that */
	QCOW2_RC_OVERFLOW,	/* more references than the width holds */
};

/*
 * Judge one host cluster: its stored refcount, the references counted
 * to it and their kinds (QCOW2_REF_*), for refcounts of 2^order bits.
 * LEAK and LOW are what the repair at open fixes (by setting the
 * refcount to refs); the others are corruption it refuses.
 */
enum qcow2_verdict qcow2_refcount_verdict(uint64_t stored, uint64_t refs,
					  unsigned kinds, uint32_t order);

/* "refcount table and data cluster": the kinds named, for messages. */
const char *qcow2_ref_kinds_name(unsigned kinds, char *buf, size_t len);

/* ---- refcount blocks -------------------------------------------------- */

/* Entry i of a refcount block of 2^order-bit entries. */
uint64_t qcow2_refcount_get(const uint8_t *block, uint64_t i,
			    uint32_t order);
void qcow2_refcount_set(uint8_t *block, uint64_t i, uint32_t order,
			uint64_t value);

static inline uint64_t qcow2_refcount_max(uint32_t order)
{
	return order >= 6 ? UINT64_MAX : (1ull << (1u << order)) - 1;
}

#endif
