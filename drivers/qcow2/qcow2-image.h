/* SPDX-License-Identifier: MIT */
/*
 * Synchronous qcow2 image helpers (pread/pwrite on one file): open and
 * the rest in qcow2-image.c, refcounts in qcow2-refcount.c, counting
 * references and the check in qcow2-check.c, creating in qcow2-create.c.
 *
 * Used at open time by the asynchronous qcow2 driver (header, L1 table,
 * refcount structures, backing file lookup, the dirty bit) and by the
 * offline tool tapfs-img (create, info, check, the map of what an image
 * holds).  Image data is read and written by the qcow2 driver only
 * (qcow2.c), by the daemon and by tapfs-img alike.  These block:
 * never call them on the engine's loop for data-path I/O.
 *
 * Errors: functions return 0 (or a non-negative value where documented)
 * or -errno and write the reason, naming the file and the value, to the
 * caller's err buffer.  Nothing here logs.
 *
 * Opening read-write (QCOW2_IMAGE_RDWR) prepares the image for the
 * driver's allocator, in this order, each step durable before the next:
 *   1. features the driver cannot write are refused (-ENOTSUP/-EROFS,
 *      naming the feature);
 *   2. every refcount block is loaded; if the dirty bit is set (a crash
 *      while open read-write), the image is repaired: every reference is
 *      counted from the header, the L1 and L2 tables and the refcount
 *      structure (the check's own counting, qcow2_image_check) and every
 *      refcount set to its references in place (leaks lowered, clusters
 *      in use that lazy refcounts had not counted yet raised), written
 *      and synced while the dirty bit stays set; an image with any other
 *      damage (overlapping uses of a cluster, a cluster referenced twice
 *      without the refcount for it, entries past the end of the file, a
 *      copied flag the references contradict) is refused with -EUCLEAN;
 *      what was repaired is in img->warning;
 *   3. if the refcount table cannot cover the file grown by the whole
 *      virtual size and its metadata, a larger table is written past the
 *      end of the file, then the header is pointed at it, then the old
 *      table's clusters are freed (a crash leaks at most the new or the
 *      old table);
 *   4. the map of metadata clusters is made (header, L1 table, refcount
 *      table and blocks, L2 tables), refusing an image where two of them
 *      share a cluster;
 *   5. unknown autoclear bits and the bitmaps bit are cleared (bitmaps
 *      are not kept up to date) and, in version 3, the dirty bit is set.
 * The driver writes the refcount blocks it changed back itself; then
 * qcow2_image_close() syncs the file and, when the session was clean,
 * clears the dirty bit.
 */
#ifndef TAPFS_QCOW2_IMAGE_H
#define TAPFS_QCOW2_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/td-check.h"
#include "qcow2-format.h"

/* Open flags. */
#define QCOW2_IMAGE_RDWR	(1u << 0)
/* Skip the repair of a dirty image (the check does its own counting). */
#define QCOW2_IMAGE_NOSCAN	(1u << 1)

/* Longest backing chain followed (a longer one is taken for a loop). */
#define QCOW2_MAX_CHAIN		256u

struct qcow2_image {
	char			*path;
	int			 fd;
	unsigned		 flags;
	uint64_t		 file_size;
	struct qcow2_header	 h;
	struct qcow2_extensions	 ext;
	struct qcow2_geometry	 g;
	char			 backing[QCOW2_MAX_BACKING_NAME + 1];
	uint64_t		*l1;		/* l1_size entries, host order */

	/*
	 * Read-write only: the refcount structures, all in memory.  The
	 * three tables have reftable_entries entries (of 8 bytes), the
	 * table's capacity, and are td_zalloc_sparse'd: an image uses a
	 * few of them (qcow2_rt_bytes).
	 */
	uint64_t		*reftable;	/* host order */
	uint64_t		 reftable_entries;
	uint8_t			**refblocks;	/* disk format, aligned;
						 * NULL where entry is 0 */
	uint8_t			**meta;		/* metadata bitmap per
						 * refcount block's range;
						 * NULL: none there */
	/* A problem found at open that did not stop it ("" if none). */
	char			 warning[512];
};

/* Bytes of a table of entries entries of 8 bytes (at least one). */
static inline size_t qcow2_rt_bytes(uint64_t entries)
{
	return (size_t)(entries ? entries : 1) * sizeof(uint64_t);
}

int qcow2_image_open(struct qcow2_image **out, const char *path,
		     unsigned flags, char *err, size_t errlen);
/* The same on an open fd, which the image takes over (closed on error). */
int qcow2_image_open_fd(struct qcow2_image **out, int fd, const char *name,
			unsigned flags, char *err, size_t errlen);
/*
 * Read-write: fsync and, when clean, clear the dirty bit this open set.
 * Then free; NULL is a no-op.
 */
int qcow2_image_close(struct qcow2_image *img, bool clean);

/* Is the file at path a qcow2 image (its magic)?  The driver's td_probe. */
int qcow2_probe(const char *path, bool *is_qcow2);

static inline uint64_t qcow2_image_size(const struct qcow2_image *img)
{
	return img->h.size;
}

/* ---- refcounts (read-write images) ---------------------------------- */

/* Refcount of host cluster c (0 past the table). */
uint64_t qcow2_image_refcount(const struct qcow2_image *img, uint64_t c);

/* Clusters the refcount table can describe. */
static inline uint64_t qcow2_image_ref_coverage(const struct qcow2_image *img)
{
	return img->reftable_entries << img->g.rb_bits;
}

/* ---- metadata map (read-write images) ------------------------------- */

/*
 * Host clusters holding the image's own metadata: the header, the L1
 * table, the refcount table and blocks, the L2 tables.  Made at a
 * read-write open; the driver adds the L2 tables and refcount blocks it
 * makes.  A write of data into one of them is corruption (a table entry
 * pointing where it must not): the driver refuses it.
 */
static inline bool qcow2_image_is_meta(const struct qcow2_image *img,
				       uint64_t c)
{
	uint64_t i = c >> img->g.rb_bits;
	uint64_t j = c & ((1ull << img->g.rb_bits) - 1);

	return img->meta && i < img->reftable_entries && img->meta[i] &&
	       (img->meta[i][j >> 3] >> (j & 7) & 1);
}

/*
 * Host cluster c now holds metadata (a new L2 table or refcount block):
 * 0, -ENOMEM, or -ERANGE past what the refcount table covers.
 */
int qcow2_image_meta_add(struct qcow2_image *img, uint64_t c);

/*
 * Which metadata host cluster c holds, for a message ("the refcount
 * table", "the L2 table of L1 entry 3"); looks through the tables, so
 * only for errors.
 */
const char *qcow2_image_meta_name(const struct qcow2_image *img, uint64_t c,
				  char *buf, size_t len);

/*
 * Set the corrupt bit (version 3 incompatible bit 1) in the header and
 * sync: QEMU and tapfs then open the image read-only until 'qemu-img
 * check -r all' repairs it.  -ENOTSUP for version 2, which has no such
 * bit.  Blocks (a header write and an fdatasync).
 */
int qcow2_image_mark_corrupt(struct qcow2_image *img, char *err,
			     size_t errlen);

/* ---- backing file ------------------------------------------------------ */

/*
 * The backing file's path (relative names resolved against the image's
 * directory, malloc'd) and the tapfs driver for it: "qcow2", "aio" (raw)
 * or "vhd", from the backing format extension or, without one, the
 * driver whose probe claims it (td_probe_driver).  A backing name of a
 * remote driver ("rbd:POOL/IMAGE@SNAP", td_remote_parent) is that
 * driver's argument, unresolved, and its driver.
 * TD_NO_PARENT-like: returns 1 when there is no backing file.
 */
int qcow2_image_backing(const struct qcow2_image *img, char **path,
			const char **driver, char *err, size_t errlen);

/* qemu's format name for a tapfs driver ("aio" -> "raw", "vhd" -> "vpc"). */
const char *qcow2_format_for_driver(const char *driver);

/* ---- mapping ----------------------------------------------------------- */

/* Read the L2 table of L1 entry i into buf (one cluster). */
int qcow2_image_read_l2(struct qcow2_image *img, uint64_t i, uint8_t *buf);

enum qcow2_map {
	QCOW2_MAP_DATA,		/* at *off in this file */
	QCOW2_MAP_ZERO,		/* reads as zeros */
	QCOW2_MAP_BACKING,	/* the backing file's */
	QCOW2_MAP_COMPRESSED,	/* compressed cluster: *off, *csize */
};

struct qcow2_map_ctx {
	uint8_t		*l2;		/* one cached L2 table */
	uint64_t	 l2_index;	/* UINT64_MAX: none */
};

/*
 * Where virtual sector sec lives: an enum qcow2_map (>= 0), the sectors
 * (1..max) that share it in *run, the host offset in *off (compressed:
 * of the data, with its length in *csize), or -errno with err set.
 * Extended L2 entries are mapped per subcluster.
 */
int qcow2_image_map(struct qcow2_image *img, struct qcow2_map_ctx *ctx,
		    uint64_t sec, uint32_t max, uint32_t *run, uint64_t *off,
		    uint32_t *csize, char *err, size_t errlen);
void qcow2_map_ctx_fini(struct qcow2_map_ctx *ctx);

/* Bytes of clusters holding data (normal and compressed) and the count. */
int qcow2_image_allocated(struct qcow2_image *img, uint64_t *bytes,
			  uint64_t *clusters, char *err, size_t errlen);

/* ---- creating ------------------------------------------------------- */

struct qcow2_create_params {
	uint64_t	 size;		/* bytes; 0: the backing file's */
	uint32_t	 cluster_bits;	/* 0: 16 (64 KiB) */
	uint32_t	 version;	/* 0: 3 ("compat=1.1"), or 2 */
	uint32_t	 refcount_order;/* 0: 4 (16 bits); version 3 only */
	const char	*backing;	/* as recorded; NULL: none */
	const char	*backing_fmt;	/* qemu's name: qcow2, raw, vpc */
};

/*
 * Create an empty image at path (which must not exist): header, refcount
 * table, one refcount block, L1 table.  A relative backing name is
 * resolved against path's directory to find its size.  On failure
 * nothing is left behind.
 */
int qcow2_image_create(const char *path, const struct qcow2_create_params *p,
		       char *err, size_t errlen);

/* ---- consistency check ---------------------------------------------- */

struct qcow2_check_result {
	/*
	 * Errors (corruption: a cluster in use undercounted, bad
	 * metadata, overlaps), leaks (clusters counted but unused:
	 * harmless) and warnings (worth saying, not a problem).
	 */
	struct td_check_result base;
	uint64_t	allocated_clusters;	/* data clusters */
	/*
	 * What a read-write open does (the same code judges): a dirty
	 * image is repaired, lowering repair_lower refcounts (the leaks)
	 * and raising repair_raise (clusters in use, counted too low),
	 * unless unrepairable errors make it refuse the image.  A clean
	 * image is not scanned at open.
	 */
	bool		dirty;
	unsigned	unrepairable;
	unsigned	repair_lower;
	unsigned	repair_raise;
};

/*
 * Check the image at path: header, every L1/L2 entry, the refcount table
 * and blocks; count every reference (header, tables, data, compressed
 * data, snapshot tables) and compare with the stored refcounts; check
 * the kinds of use of every cluster (metadata overlapping anything, data
 * in an L2 table) and the copied flags.  Returns 0 once checked (counts
 * in *res), or -errno when the file cannot be read at all (reason in
 * err).
 */
int qcow2_image_check(const char *path, td_check_fn *fn, void *arg,
		      struct qcow2_check_result *res, char *err,
		      size_t errlen);

#endif
