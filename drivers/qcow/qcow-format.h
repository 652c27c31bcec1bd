/* SPDX-License-Identifier: MIT */
/*
 * qcow (version 1, QEMU's first copy-on-write format) on disk: the
 * header and the L2 table entries.  Pure: bytes in, a struct or an error
 * (naming the field and the value) out; no I/O, no allocation, so it is
 * unit-tested and fuzzed alone.
 *
 * Layout (big-endian): a 48-byte header, the backing file's name
 * (backing_file_offset, backing_file_size bytes, no NUL), the L1 table
 * (l1_size 64-bit offsets of L2 tables, 0: none), L2 tables of
 * 1 << l2_bits 64-bit entries, and clusters of 1 << cluster_bits bytes.
 * An L2 entry is 0 (unallocated: the backing file, else zeros), the
 * offset of a cluster, or with bit 63 set a compressed cluster: the
 * bits below 63 - cluster_bits give the byte offset of its raw deflate
 * data, the cluster_bits bits above them its length in bytes.  There
 * are no refcounts: new tables and clusters are appended at the end of
 * the file.
 */
#ifndef TAPFS_QCOW_FORMAT_H
#define TAPFS_QCOW_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QCOW_MAGIC		0x514649fbu	/* "QFI\xfb" */
#define QCOW_VERSION		1u
#define QCOW_HEADER_SIZE	48u

#define QCOW_CRYPT_NONE		0u
#define QCOW_CRYPT_AES		1u

/* What QEMU accepts: 512 B to 64 KiB clusters and L2 tables. */
#define QCOW_MIN_CLUSTER_BITS	9u
#define QCOW_MAX_CLUSTER_BITS	16u
#define QCOW_MIN_L2_BITS	6u
#define QCOW_MAX_L2_BITS	13u
/* QEMU refuses longer backing names. */
#define QCOW_MAX_BACKING_NAME	1023u
/* L1 entries at most (QEMU: INT_MAX / 8 bytes; ours: 256 MiB of L1). */
#define QCOW_MAX_L1_SIZE	(32u << 20)

/* New images (qcow_format_create_header): 4 KiB clusters and tables. */
#define QCOW_DEFAULT_CLUSTER_BITS 12u
#define QCOW_DEFAULT_L2_BITS	9u

#define QCOW_OFLAG_COMPRESSED	(1ull << 63)

struct qcow_header {
	uint32_t	magic;
	uint32_t	version;
	uint64_t	backing_file_offset;
	uint32_t	backing_file_size;
	uint32_t	mtime;
	uint64_t	size;		/* virtual size, bytes */
	uint8_t		cluster_bits;
	uint8_t		l2_bits;
	uint32_t	crypt_method;
	uint64_t	l1_table_offset;
};

/* What the header implies. */
struct qcow_geometry {
	uint32_t	cluster_size;
	uint32_t	l2_size;	/* entries */
	uint32_t	l2_bytes;	/* bytes of one L2 table */
	uint64_t	l1_size;	/* entries */
	uint64_t	l1_bytes;
	uint64_t	offset_mask;	/* of a compressed entry's offset */
};

enum qcow_cluster_type {
	QCOW_CLUSTER_UNALLOCATED,
	QCOW_CLUSTER_NORMAL,
	QCOW_CLUSTER_COMPRESSED,
};

struct qcow_mapping {
	enum qcow_cluster_type type;
	uint64_t	host_offset;	/* of the cluster, or compressed data */
	uint32_t	csize;		/* compressed bytes */
};

/* Is buf (len bytes: the start of a file) a qcow version 1 image? */
bool qcow_format_probe(const uint8_t *buf, size_t len);

/* Decode the 48-byte header; no checks. */
void qcow_header_decode(const uint8_t *buf, struct qcow_header *h);
/* Encode it into 48 bytes. */
void qcow_header_encode(const struct qcow_header *h, uint8_t *buf);

/*
 * Validate a decoded header and compute its geometry.  file_size: the
 * image file's size in bytes (the tables and the backing name must lie
 * inside it).  0, or -EINVAL (bad magic or version, values out of range,
 * tables past the end of the file) / -EOPNOTSUPP (encrypted) with the
 * reason in err.
 */
int qcow_header_check(const struct qcow_header *h, uint64_t file_size,
		      struct qcow_geometry *g, char *err, size_t errlen);

/*
 * Decode an L2 entry.  0, or -EINVAL with the reason in err (a
 * compressed entry whose length is 0).
 */
int qcow_l2_decode(const struct qcow_geometry *g, uint8_t cluster_bits,
		   uint64_t entry, struct qcow_mapping *m, char *err,
		   size_t errlen);

/*
 * The header of a new image of size bytes (a backing name of backing_len
 * bytes, 0 for none): the name follows the header, the L1 table the name
 * (8-byte aligned).  0 with *h and *g, or -EINVAL with the reason.
 */
int qcow_format_create_header(uint64_t size, uint32_t backing_len,
			      struct qcow_header *h,
			      struct qcow_geometry *g, char *err,
			      size_t errlen);

#endif /* TAPFS_QCOW_FORMAT_H */
