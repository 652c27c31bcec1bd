/* SPDX-License-Identifier: MIT */
/*
 * qcow (version 1) images, synchronously: open (header, backing name,
 * L1 table), create, check, probe.  For the driver's td_open and for
 * tapfs-img; never on the data path.  Errors: 0 or -errno with the
 * reason, naming the file and the value, in err; nothing logs.
 */
#ifndef TAPFS_QCOW_IMAGE_H
#define TAPFS_QCOW_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/td-check.h"
#include "qcow-format.h"

struct qcow_image {
	char			*path;
	int			 fd;		/* read-only */
	uint64_t		 file_size;
	struct qcow_header	 h;
	struct qcow_geometry	 g;
	uint64_t		*l1;		/* host order */
	/* First byte past the header, backing name and L1 table. */
	uint64_t		 meta_end;
	char			 backing[QCOW_MAX_BACKING_NAME + 1];
};

/*
 * Open and validate the image at path: its header, backing name and L1
 * table (every L2 table inside the file, past the header and L1).
 * -EOPNOTSUPP for an encrypted image.
 */
int  qcow_image_open(struct qcow_image **out, const char *path, char *err,
		     size_t errlen);
void qcow_image_close(struct qcow_image *img);

/*
 * Create an empty image of size bytes at path (must not exist), with
 * backing (a name recorded as given, resolved against path's directory
 * when read) or NULL.
 */
int  qcow_image_create(const char *path, uint64_t size, const char *backing,
		       char *err, size_t errlen);

/*
 * Check the image at path: the header, every L1 and L2 entry (inside the
 * file, clear of the header and L1 table, compressed lengths), every
 * problem to fn.  *allocated: bytes of clusters the image holds.  0 (the
 * counts in *res), or -errno when it cannot be opened at all.
 */
int  qcow_image_check(const char *path, td_check_fn *fn, void *arg,
		      struct td_check_result *res, uint64_t *allocated,
		      char *err, size_t errlen);

/* td_probe: a qcow version 1 image (magic and version)? */
int  qcow_probe(const char *path, bool *is_mine);

#endif /* TAPFS_QCOW_IMAGE_H */
