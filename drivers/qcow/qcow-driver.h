/* SPDX-License-Identifier: MIT */
/*
 * What the qcow (v1) driver's files share, private to drivers/qcow/:
 * qcow.c (open, close, the driver table, request dispatch) and
 * qcow-cluster.c (the L2 table cache, allocating tables and clusters,
 * compressed clusters).  The allocation order: the top of qcow.c.
 * Everything runs on the engine's loop.
 */
#ifndef TAPFS_QCOW_DRIVER_H
#define TAPFS_QCOW_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include <tapfs/engine.h>

#include "common/td-meta.h"
#include "common/td-util.h"
#include "common/td-zlib.h"
#include "qcow-image.h"

struct qc_state;

enum qc_l2_state {
	L2_FREE,	/* a cache slot holding no table */
	L2_LOADING,
	L2_READY,
	L2_ALLOCATING,	/* a new table, being written and linked */
};

/* One slot of the bounded L2 cache. */
struct qc_l2 {
	enum qc_l2_state state;
	uint64_t	 l1i;
	uint8_t		*buf;		/* disk format */
	struct td_list	 waiters;	/* td_meta_req: loading, allocating */
	struct td_meta_seq seq;		/* writes of this table */
	bool		 dirty;
	uint32_t	 lo, hi;	/* dirty entries */
	unsigned	 pins;		/* allocations using it: not evicted */
	uint64_t	 used;		/* LRU tick */
};

/* An allocation in progress: a data cluster, or an L2 table. */
struct qc_alloc {
	struct qc_state	*s;
	bool		 table;		/* an L2 table for t */
	td_request_t	 treq;
	uint64_t	 gcl;		/* guest cluster */
	struct qc_l2	*t;
	uint32_t	 l2i;
	uint64_t	 host;		/* the new cluster or table */
	struct qcow_mapping old;
	struct td_list	 link;		/* s->active */
	struct td_list	 waiters;	/* requests for this cluster */
	struct td_meta_wait wait;
	unsigned	 pending;
	int		 err;
	uint8_t		*buf;		/* 2 clusters: data, compressed */
};

/* A compressed cluster being read. */
struct qc_cread {
	struct qc_state	*s;
	td_request_t	 treq;
	uint64_t	 off;
	uint32_t	 csize;
	uint8_t		*buf;		/* one cluster */
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

	uint64_t		*l1;		/* img->l1, host order */
	uint8_t			*l1_disk;
	bool			 l1_dirty;
	uint64_t		 l1_lo, l1_hi;
	struct td_meta_seq	 l1_seq;

	struct qc_l2		*slots;
	unsigned		 nslots;
	uint64_t		 tick;

	struct td_list		 active;	/* struct qc_alloc */
	struct td_list		 res_waiters;	/* no slot/alloc/cread */
	struct td_pool		 allocs;
	struct td_pool		 creads;
	size_t			 alloc_hdr, cread_hdr;

	void			*zs;
	uint8_t			*zcache;	/* last inflated cluster */
	uint64_t		 zcache_off;
	uint32_t		 zcache_csize;	/* 0: empty */

	struct td_meta		 meta;
	uint64_t		 n_alloc, n_cow, n_l2_alloc;
};

/* ---- qcow-cluster.c -------------------------------------------------- */
void qc_l1_issue(struct td_meta_seq *q);
void qc_l1_failed(struct td_meta_seq *q, int err);
/* Set up cache slot t (its buffer allocated). */
void qc_l2_init(struct qc_state *s, struct qc_l2 *t);
/* The cached table of L1 entry l1i, or NULL. */
struct qc_l2 *qc_l2_find(struct qc_state *s, uint64_t l1i);
/* A slot for L1 entry l1i (evicting the least recently used idle
 * table), or NULL when every slot is busy. */
struct qc_l2 *qc_l2_slot(struct qc_state *s, uint64_t l1i);
void qc_l2_loaded(void *ctx, void *arg, int err);
/* A new L2 table for L1 entry t->l1i; treq waits on it. */
void qc_l2_alloc(struct qc_state *s, struct qc_l2 *t, td_request_t treq);
/* The allocation of guest cluster gcl in progress, or NULL. */
struct qc_alloc *qc_alloc_find(struct qc_state *s, uint64_t gcl);
/* A write of treq inside guest cluster gcl needs a new cluster. */
void qc_alloc_data(struct qc_state *s, struct qc_l2 *t, uint32_t l2i,
		   uint64_t gcl, const struct qcow_mapping *old,
		   td_request_t treq);
/* A read of treq inside the compressed cluster m. */
void qc_read_compressed(struct qc_state *s, td_request_t treq,
			const struct qcow_mapping *m);

#endif /* TAPFS_QCOW_DRIVER_H */
