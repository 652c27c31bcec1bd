/* SPDX-License-Identifier: MIT */
/*
 * Synchronous VHD image helpers (pread/pwrite on one file): what is
 * offline by nature.
 *
 * Used at open time by the asynchronous vhd driver (footer, header, BAT,
 * parent lookup and validation, reclaim) and by the offline tool
 * tapfs-img (create, info, check, the map of what an image holds).
 * Image data is read and written by the vhd driver only (vhd.c:
 * the crash-safe allocation order is written down there), by the daemon
 * and by tapfs-img alike.  These block: never call them on the engine's
 * loop for data-path I/O.
 *
 * One file per concern, this header for all: vhd-image.c (open, reclaim
 * at open, bitmaps and the map), vhd-create.c, vhd-parent.c (locators,
 * finding and validating a parent) and vhd-check.c; the on-disk
 * structures are vhd-format.[ch].
 *
 * Errors: functions return 0 (or a non-negative value where documented)
 * or -errno, and write the reason, naming the file and the value, to the
 * caller's err buffer.  Nothing here logs: the caller reports once.
 *
 * Conventions (tapfs and blktap agree; QEMU ignores parents entirely):
 *
 *  - Raw parents.  A differencing VHD whose header parent UUID is nil has
 *    a raw image as its parent (blktap's vhd_parent_raw()).  Its
 *    locators point at the raw file and its parent timestamp is the raw
 *    file's mtime.
 *  - Locators written on create: 0 W2ru (path relative to the child's
 *    directory, ".\base.vhd"), 1 W2ku (absolute path), 2 MacX
 *    ("file:///abs/base.vhd").  They sit between the header and the BAT,
 *    where QEMU, which knows nothing of locators, never allocates blocks.
 *    data_space is in sectors as the specification says; on read a value
 *    in bytes (Microsoft, blktap) is accepted too.
 *  - Parent lookup: every locator holding a relative path, resolved
 *    against the child's directory, is tried first, then the absolute
 *    ones, in table order; the first existing file wins.
 *  - Validation: the child's parent UUID must equal the parent's footer
 *    UUID (refused otherwise, naming both files).  A parent timestamp
 *    that differs from the parent's mtime is only a warning: coalescing
 *    or touching the parent changes its mtime without invalidating the
 *    child (blktap disabled this check for the same reason).
 *  - Timestamps are seconds since 2000-01-01 00:00:00 UTC.
 *
 * Reclaim (VHD_IMAGE_RECLAIM, a read-write open of a dynamic or
 * differencing image whose trailing footer is valid).  The space between
 * the end of everything the image references (vhd_data_end: header, BAT,
 * locators, allocated blocks) and the trailing footer is what a crash
 * before the BAT write of an allocation leaves (vhd.c): the new
 * block's data and bitmap, footers.  Open
 * writes a footer at that end, makes it durable (fdatasync), then
 * truncates the file to just past it: until the truncate, the old footer
 * still ends the file; after it, the new one does, so a crash at any
 * point leaves a valid image.  Unreferenced space *between* referenced
 * blocks (concurrent allocations of which a later one committed) stays:
 * only moving the blocks after it (copy, BAT rewrite) could give it back,
 * which is a compaction, not an open.  A failure before the truncate
 * leaves the image as it was (noted in ->warning); one after it fails
 * the open.
 */
#ifndef TAPFS_VHD_IMAGE_H
#define TAPFS_VHD_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/td-check.h"
#include "vhd-format.h"

/* Open flags. */
#define VHD_IMAGE_RDONLY	(1u << 0)
/*
 * Read-write open: give back the space an interrupted block allocation
 * left at the end of the file (see "Reclaim" above).  The caller must
 * hold the image's write lock: the file may be truncated.
 */
#define VHD_IMAGE_RECLAIM	(1u << 3)

/* Longest chain followed (a longer one is taken for a loop). */
#define VHD_MAX_CHAIN		256u
/*
 * Largest BAT held in memory (64M entries: 128 TiB of 2 MiB blocks):
 * open and the check refuse a larger one, create does not make one.
 */
#define VHD_MAX_BAT_BYTES	(256u << 20)

/*
 * One open VHD image.  Fields are read-only for users; the write path
 * keeps them current.
 */
struct vhd_image {
	char			*path;
	int			 fd;
	unsigned		 flags;
	uint64_t		 file_size;
	struct vhd_footer	 footer;
	uint8_t			 footer_buf[VHD_FOOTER_SIZE]; /* encoded */
	/* Offset of the trailing footer (where the next one is written). */
	uint64_t		 footer_off;
	/* The footer at the end was bad; the copy at offset 0 was used. */
	bool			 footer_from_backup;
	/* A non-fatal problem found at open ("" if none), to show once. */
	char			 warning[512];
	/* What open changed in the file ("" if nothing), to log once. */
	char			 notice[384];
	uint64_t		 reclaimed;	/* bytes given back at open */

	/* Dynamic and differencing images only. */
	struct vhd_header	 header;
	uint32_t		*bat;		/* bat_entries, host order */
	uint32_t		 bat_entries;	/* blocks in use: <= max */
	uint32_t		 spb;		/* sectors per block */
	uint32_t		 bitmap_size;	/* bytes */
	/* End of data: no block or metadata lies at or past it; in a
	 * clean image, the trailing footer's offset.  New blocks go here
	 * or later. */
	uint64_t		 next_block;
	uint8_t			*bitmap;	/* one cached block bitmap */
	uint32_t		 bitmap_block;	/* VHD_BAT_UNUSED: none */
};

/*
 * Open and validate the VHD at path: trailing footer (or, for a dynamic
 * disk, the backup at offset 0 if the trailing one is bad, noted in
 * ->warning), dynamic header, BAT (every entry inside the file, no
 * overlaps); with VHD_IMAGE_RECLAIM, reclaim leaked space at the end
 * (described in ->notice, counted in ->reclaimed).  *out is owned by the
 * caller (vhd_image_close).
 */
int vhd_image_open(struct vhd_image **out, const char *path,
		   unsigned flags, char *err, size_t errlen);
/* The same on an open fd, which the image takes over (closed on error). */
int vhd_image_open_fd(struct vhd_image **out, int fd, const char *name,
		      unsigned flags, char *err, size_t errlen);
/* fsync if writable, then free; NULL is a no-op.  0 or -errno. */
int vhd_image_close(struct vhd_image *img);

/* The virtual size (vhd_footer_virtual_size): reads and writes stop here. */
static inline uint64_t vhd_image_size(const struct vhd_image *img)
{
	return vhd_footer_virtual_size(&img->footer);
}

static inline bool vhd_image_sparse(const struct vhd_image *img)
{
	return img->footer.type != VHD_TYPE_FIXED;
}

/* Is the file at path a VHD (a "conectix" footer at its end or start)? */
int vhd_probe(const char *path, bool *is_vhd);

/* ---- reading: vhd-image.c -------------------------------------------- */

/* Block's sector bitmap (cached, valid until the next call); -EINVAL if
 * the block is not allocated. */
int vhd_image_read_bitmap(struct vhd_image *img, uint32_t block,
			  const uint8_t **map);

enum vhd_map {
	VHD_MAP_DATA,		/* present here, at *off in the file */
	VHD_MAP_ZERO,		/* reads as zeros */
	VHD_MAP_PARENT,		/* not here: the parent's */
};

/*
 * Where virtual sector sec lives: returns an enum vhd_map (>= 0) and the
 * number of sectors (<= max, >= 1) that share it in *run, or -errno.
 * Sectors past the virtual size are VHD_MAP_ZERO.  In a dynamic disk a
 * clear bitmap bit reads as zeros, as the specification says (QEMU
 * ignores the bitmap and reads the block).
 */
int vhd_image_map(struct vhd_image *img, uint64_t sec, uint32_t max,
		  uint32_t *run, uint64_t *off);

/* Sectors present in this image (set bitmap bits within the virtual
 * size; every sector of a fixed disk) and allocated blocks. */
int vhd_image_allocated(struct vhd_image *img, uint64_t *sectors,
			uint32_t *blocks);

/* ---- creating: vhd-create.c ----------------------------------------- */

struct vhd_create_params {
	enum vhd_disk_type	 type;
	uint64_t		 size;		/* bytes; 0: the parent's */
	uint32_t		 block_size;	/* 0: 2 MiB */
	const char		*parent;	/* differencing only */
	bool			 parent_raw;	/* parent is a raw image */
};

/*
 * Create a new image at path (which must not exist); on failure nothing
 * is left behind.  Fixed disks are sparse.  A differencing disk records
 * the parent's UUID (nil for a raw parent), its mtime, its file name and
 * the three locators described above.
 */
int vhd_image_create(const char *path, const struct vhd_create_params *p,
		     char *err, size_t errlen);

/* ---- parents: vhd-parent.c ------------------------------------------ */

/* Differencing image whose parent is a raw file (nil parent UUID). */
bool vhd_image_parent_is_raw(const struct vhd_image *img);

/* Decode parent locator i (a supported code) from the file. */
int vhd_image_read_locator(struct vhd_image *img, unsigned i, char *path,
			   size_t pathlen, char *err, size_t errlen);

/*
 * Find the parent of a differencing image through its locators (see the
 * order above).  *path is malloc'd (canonical, absolute).  -ENOENT with
 * every path tried listed in err.
 */
int vhd_image_find_parent(struct vhd_image *img, char **path, char *err,
			  size_t errlen);

/*
 * May a candidate parent path be looked at?  0, or -errno with the reason
 * (naming path) in why.  -EACCES and -EINVAL are refusals, anything else
 * means "not there".
 */
typedef int (*vhd_path_check_t)(void *arg, const char *path, char *why,
				size_t whylen);

/*
 * vhd_image_find_parent, asking check(arg, ...) about every candidate
 * before touching it (a daemon must not stat a path in its own mount).
 * A refused candidate is skipped; when no candidate is left and one was
 * refused, that refusal is the error, with its reason in err.
 */
int vhd_image_find_parent_checked(struct vhd_image *img,
				  vhd_path_check_t check, void *arg,
				  char **path, char *err, size_t errlen);

/*
 * Is parent_path (opened as parent, NULL when raw) the image child was
 * made on?  0, or -EINVAL with both files named in err.  A timestamp
 * mismatch is not an error: it is described in warn ("" otherwise).
 */
int vhd_image_validate_parent(struct vhd_image *child,
			      struct vhd_image *parent,
			      const char *parent_path, char *warn,
			      size_t warnlen, char *err, size_t errlen);

/* ---- consistency check: vhd-check.c ----------------------------------- */

/*
 * Check the file at path, reporting every problem, one line each:
 * footer and header checksums and fields, the backup footer matches the
 * trailing one, the footer is at the end of the file, BAT entries inside
 * the file and not overlapping each other or metadata, bitmap bits past
 * the virtual size, unreferenced space, parent locators, and for a
 * differencing image that the parent is found and its UUID matches.
 * Every problem goes to fn (may be NULL) as an error or a warning.
 * Returns 0 once checked (counts in *res), or -errno when the file cannot
 * be read at all (reason in err).
 */
int vhd_image_check(const char *path, td_check_fn *fn, void *arg,
		    struct td_check_result *res, char *err, size_t errlen);

#endif
