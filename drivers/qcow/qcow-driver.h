/* SPDX-License-Identifier: MIT */
/*
 * What the qcow (v1) driver's files share, private to drivers/qcow/:
 * qcow.c (open, close, the driver table, request dispatch) and
 * qcow-cluster.c (allocating tables and clusters); the tables and
 * compressed reads: common/td-l2.c.  The allocation
 * order: the top of qcow.c.  Everything runs on the engine's loop.
 */
#ifndef TAPFS_QCOW_DRIVER_H
#define TAPFS_QCOW_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include <tapfs/engine.h>

#include "common/td-l2.h"
#include "common/td-meta.h"
#include "common/td-util.h"
#include "common/td-zlib.h"
#include "qcow-image.h"

struct qc_state;

/* An allocation in progress: a data cluster, or an L2 table. */
struct qc_alloc {
	struct td_l2_alloc r;		/* buf: 2 clusters, data, compressed */
	struct qcow_mapping old;
};

struct qc_state {
	td_driver_t		*drv;
	struct qcow_image	*img;
	int			 fd;
	bool			 rdonly;
	bool			 has_backing;
	uint32_t		 cs;		/* cluster size */
	uint32_t		 cl_secs;
	uint8_t			 cluster_bits, l2_bits;
	uint64_t		 vsecs;
	uint64_t		 next_free;	/* end of file, cluster aligned */

	/* L1 and L2 tables (a bounded cache of L2 tables). */
	struct td_l2_tables	 tables;

	struct td_list		 res_waiters;	/* no slot/alloc/cread */


	struct td_meta		 meta;
	uint64_t		 n_alloc, n_cow, n_l2_alloc;
};

/* ---- qcow-cluster.c -------------------------------------------------- */
/* td_l2_ops.alloc: a new L2 table for L1 entry t->index. */
void qc_l2_alloc(void *ctx, struct td_l2 *t, td_request_t treq);
/* td_l2_ops.written: the new cluster's data is written. */
void qc_alloc_written(void *ctx, void *arg, int err);
/* A write of treq inside guest cluster gcl needs a new cluster. */
void qc_alloc_data(struct qc_state *s, struct td_l2 *t, uint32_t l2i,
		   uint64_t gcl, const struct qcow_mapping *old,
		   td_request_t treq);

#endif /* TAPFS_QCOW_DRIVER_H */
