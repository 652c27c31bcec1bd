/* SPDX-License-Identifier: MIT */
/*
 * What the synchronous qcow2 image files share, private to drivers/qcow2/:
 * qcow2-image.c (open, close, metadata map, backing file, mapping),
 * qcow2-refcount.c (the refcount structure, repair, growth),
 * qcow2-check.c (counting and judging references) and qcow2-create.c.
 * The public contract is qcow2-image.h.  Errors as there: 0 or -errno,
 * the reason in err; nothing logs.
 */
#ifndef TAPFS_QCOW2_INT_H
#define TAPFS_QCOW2_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow2-image.h"
#include "common/td-util.h"

/*
 * A refcount block in memory: a cluster, sparse (td_zalloc_sparse), so
 * that the part of it no cluster of the file reaches (most of the last
 * block, all of a small image's only one) costs nothing.
 */
static inline uint8_t *qcow2_refblock_new(const struct qcow2_image *img)
{
	return td_zalloc_sparse(img->g.cluster_size);
}

static inline void qcow2_refblock_free(const struct qcow2_image *img,
				       uint8_t *b)
{
	td_free_sparse(b, img->g.cluster_size);
}

/* n big-endian 64-bit table entries, in place, to host order. */
static inline void qcow2_be64_array_to_host(uint64_t *t, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		t[i] = td_get_be64((const uint8_t *)&t[i]);
}

/* ---- qcow2-image.c --------------------------------------------------- */

/* fdatasync the image's file. */
int qcow2_image_sync(struct qcow2_image *img, char *err, size_t errlen);
/* Write the header's feature fields from img->h, then sync. */
int qcow2_image_write_features(struct qcow2_image *img, char *err,
			       size_t errlen);

/* ---- qcow2-refcount.c ------------------------------------------------ */

/* Load the refcount table and every refcount block into img. */
int qcow2_image_load_refcounts(struct qcow2_image *img, char *err,
			       size_t errlen);
/* First cluster past everything counted or in the file. */
uint64_t qcow2_image_end_cluster(const struct qcow2_image *img);
/* A dirty image: set every refcount to its references, or refuse. */
int qcow2_image_repair(struct qcow2_image *img, char *err, size_t errlen);
/* Grow the refcount table to cover target clusters (crash-safe). */
int qcow2_image_grow_reftable(struct qcow2_image *img, uint64_t target,
			      char *err, size_t errlen);

/* ---- qcow2-check.c --------------------------------------------------- */

/*
 * Every reference to every host cluster, counted from the header and the
 * tables, with the kinds of use (QCOW2_REF_*).  qcow2_image_check()
 * reports what it finds; a read-write open of a dirty image repairs
 * from it (qcow2_image_repair): both judge the image with the same
 * code, so what the check says an open would repair is what the open
 * repairs.
 */
struct qcow2_refs {
	struct qcow2_image	*img;
	uint32_t		*count;		/* per host cluster */
	uint8_t			*kind;		/* per host cluster */
	uint64_t		 n;		/* clusters counted */
	/* Problems; an error the repair at open does not fix is emitted
	 * with keep: counted in res->unrepairable, the first in first. */
	struct td_check		 chk;
	struct qcow2_check_result *res;
	uint64_t		 data_clusters;
	char			 first[384];	/* first unrepairable problem */
};

/*
 * Count and judge img (its refcount blocks loaded) into rf, counts in
 * *res, every problem to fn (may be NULL).  0 or -errno; rf is set up
 * either way: qcow2_refs_fini() it.
 */
int qcow2_refs_run(struct qcow2_refs *rf, struct qcow2_image *img,
		   struct qcow2_check_result *res, td_check_fn *fn,
		   void *arg);
void qcow2_refs_fini(struct qcow2_refs *rf);

#endif
