/* SPDX-License-Identifier: MIT */
/*
 * Synchronous VMDK image helpers: open a disk (its descriptor, every
 * extent file, every sparse extent's header, grain directories and
 * grain tables, all loaded into memory), create a monolithicSparse
 * disk, probe, check.  Used at open time by the vmdk driver (vmdk.c)
 * and by tapfs-img; they block: never on the data path.
 *
 * Errors: 0 or -errno, the reason (naming the file and the value) in
 * the caller's err.  Nothing here logs.
 */
#ifndef TAPFS_VMDK_IMAGE_H
#define TAPFS_VMDK_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/td-check.h"
#include "common/td-util.h"
#include "vmdk-format.h"

/* Grain tables kept in memory, at most (all of them are, from open). */
#define VMDK_MAX_GT_BYTES	(512u << 20)

/* Open flags. */
#define VMDK_IMAGE_RDWR		(1u << 0)

struct vmdk_extent {
	enum vmdk_extent_type	 type;
	enum vmdk_access	 access;
	uint64_t		 start;		/* first virtual sector */
	uint64_t		 secs;
	char			*path;		/* NULL for ZERO */
	int			 fd;		/* -1 for ZERO */
	uint64_t		 file_secs;	/* size at open, rounded up */
	uint64_t		 offset;	/* FLAT: first sector */

	/* SPARSE */
	struct vmdk_header	 h;
	uint64_t		 gd_entries;
	uint32_t		*gd;		/* host order */
	uint32_t		*rgd;		/* NULL without RGD */
	uint8_t			*gt;		/* every GT, disk format
						 * (little-endian), aligned */
	bool			 compressed;
};

static inline uint32_t vmdk_gte(const struct vmdk_extent *e, uint64_t grain)
{
	return td_get_le32(e->gt + grain * 4);
}

/*
 * Before an extent file other than the descriptor is opened: may it be?
 * 0, or -errno with the reason in err (the engine's path policy).
 */
typedef int vmdk_path_check_fn(void *arg, const char *path, char *err,
			       size_t errlen);

struct vmdk_image {
	char			*path;
	int			 fd;		/* the descriptor's file */
	bool			 embedded;	/* descriptor in a sparse
						 * extent (or none) */
	struct vmdk_desc	 desc;
	unsigned		 n_extents;
	struct vmdk_extent	*extents;
	uint64_t		 capacity;	/* sectors */
};

/*
 * Open the disk at path (descriptor file or sparse extent), its extent
 * files beside it (asking check first, if given).  RDWR refuses what
 * tapfs cannot write (-EROFS: compressed grains, read-only or zero
 * extents; -EINVAL: a grain table without its redundant copy).
 */
int vmdk_image_open(struct vmdk_image **out, const char *path,
		    unsigned flags, vmdk_path_check_fn *check, void *arg,
		    char *err, size_t errlen);
void vmdk_image_close(struct vmdk_image *img);

/*
 * The CID of the disk at path, from its descriptor alone (embedded or
 * not; no extent opened): 0 or -errno with the reason in err.
 */
int vmdk_image_cid(const char *path, uint32_t *cid, char *err,
		   size_t errlen);

/* The extent holding virtual sector sec. */
struct vmdk_extent *vmdk_image_extent(struct vmdk_image *img, uint64_t sec);

/*
 * The parent named by parentFileNameHint, resolved against the
 * descriptor's folder (malloc'd in *path), or 1 without one.
 */
int vmdk_image_parent(const struct vmdk_image *img, char **path);

/* Is the file at path a VMDK (sparse magic or a text descriptor)? */
int vmdk_probe(const char *path, bool *is_vmdk);

/* Create an empty monolithicSparse disk of size bytes at path. */
int vmdk_image_create(const char *path, uint64_t size, char *err,
		      size_t errlen);

/* Grains allocated in all the sparse extents. */
uint64_t vmdk_image_allocated(const struct vmdk_image *img);

/*
 * Check the disk at path: grain tables that point into metadata or past
 * the end of their file, grains used twice, redundant tables that
 * differ from the primary ones.  0 once checked, -errno (err) when the
 * image cannot be opened at all.
 */
int vmdk_image_check(const char *path, struct td_check *c, char *err,
		     size_t errlen);

#endif /* TAPFS_VMDK_IMAGE_H */
