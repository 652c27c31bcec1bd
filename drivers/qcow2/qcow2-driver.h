/* SPDX-License-Identifier: MIT */
/*
 * What the qcow2 driver's files share, private to drivers/qcow2/: the
 * per-image state and the functions one file calls in another.
 * qcow2.c: open, close, the driver table, request dispatch, metadata
 * overlap; qcow2-cluster.c: allocating and discarding clusters (the
 * tables, compressed reads: common/td-l2.c); qcow2-refcount.c:
 * refcounts in memory and the refcount commit.  The allocation order and why it is
 * crash-safe: the top of qcow2.c.  Everything runs on the engine's loop.
 */
#ifndef TAPFS_QCOW2_DRIVER_H
#define TAPFS_QCOW2_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tapfs/engine.h>

#include "qcow2-image.h"
#include "common/td-grace.h"
#include "common/td-l2.h"
#include "common/td-meta.h"
#include "common/td-zlib.h"
#include "common/td-util.h"

/* Freed clusters remembered for reuse before scanning for free ones. */
#define Q2_FREE_STACK		4096u
/* O_DIRECT alignment of metadata and compressed reads. */
#define Q2_IO_ALIGN		4096u
#define Q2_SECS_ALIGN		(Q2_IO_ALIGN >> TD_SECTOR_SHIFT)

struct q2_state;

/* One allocation (or discard) in progress, keyed by guest cluster. */
struct q2_alloc {
	struct td_l2_alloc r;		/* buf: cluster_size */
	struct qcow2_mapping old;	/* what it replaces */
};

/* A refcount block write of the commit in flight. */
struct q2_rb_write {
	uint64_t	 rbi;
	uint32_t	 off, len;	/* bytes of the block */
	bool		 was_new;	/* its table entry goes out too */
};

struct q2_state {
	td_driver_t		*drv;
	struct qcow2_image	*img;
	int			 fd;
	bool			 rdonly;
	bool			 has_backing;
	bool			 meta_error;	/* leave the dirty bit set */
	bool			 corrupt;	/* writes fail: see q2_corrupt */
	uint32_t		 version;
	const struct qcow2_geometry *g;
	uint32_t		 cs;		/* cluster size */
	uint32_t		 cl_secs;	/* sectors per cluster */
	uint32_t		 io_align;	/* metadata write granularity */
	uint64_t		 vsecs;		/* virtual size, sectors */

	/* L1 and L2 tables (every L2 table kept once loaded). */
	struct td_l2_tables	 tables;

	/* Refcounts (read-write): img->reftable, img->refblocks. */
	uint8_t			*reftable_disk;	/* these: td_zalloc_sparse */
	size_t			 reftable_bytes;
	uint64_t		 rb_entries;	/* of each rb_ table */
	bool			*rb_dirty;
	uint32_t		*rb_lo, *rb_hi;	/* dirty entries of a block */
	bool			*rb_new;	/* table entry not yet written */
	uint64_t		*rb_list;	/* dirty block indexes */
	uint64_t		 rb_nlist;
	uint64_t		 free_hint;	/* scan for free clusters here */
	uint64_t		 fresh_from;	/* first cluster past the file
						 * at open: zeros until used */
	bool			 punch_ok;	/* freed clusters read zeros */
	uint64_t		*free_stack;	/* clusters freed since */
	unsigned		 free_n;
	struct td_grace		 grace;		/* freed, not yet reusable */

	/* The refcount commit in flight. */
	struct td_meta_seq	 commit_seq;
	int			 commit_phase;
	unsigned		 commit_ios;
	int			 commit_err;
	bool			 commit_table;
	uint64_t		 commit_lo, commit_hi;	/* table entries */
	struct q2_rb_write	*commit_list;	/* blocks being written */
	uint64_t		 commit_nlist;

	struct td_list		 res_waiters;	/* no alloc/cread free */

	/* Allocated on first use (a VBD that never needs them, most, costs
	 * a cluster less each): */
	uint8_t			*zeros;		/* one cluster of zeros */

	struct td_meta		 meta;		/* I/O, barrier, parking */

	uint64_t		 n_alloc, n_cow, n_discard;
};

/* ---- qcow2.c --------------------------------------------------------- */
/* The tables point where they must not: mark corrupt, fail writes; -EIO. */
int q2_corrupt(struct q2_state *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Would freeing what mapping m owns free metadata?  0, or -EIO (q2_corrupt). */
int q2_check_meta_old(struct q2_state *s,
		      const struct qcow2_mapping *m, uint64_t gcl);

/* ---- qcow2-cluster.c ------------------------------------------------- */
/* td_l2_ops.written: the new cluster's data is written. */
void q2_alloc_written(void *ctx, void *arg, int err);
/* A write of treq into guest cluster gcl needs a new cluster. */
void q2_alloc_data(struct q2_state *s, struct td_l2 *t, uint32_t l2i,
		   uint64_t gcl, const struct qcow2_mapping *old,
		   td_request_t treq);
/* A discard of the whole guest cluster gcl. */
void q2_discard_cluster(struct q2_state *s, struct td_l2 *t,
			uint32_t l2i, uint64_t gcl,
			const struct qcow2_mapping *old,
			td_request_t treq);
/* td_l2_ops.alloc: a new, empty L2 table for L1 entry t->index. */
void q2_l2_alloc(void *ctx, struct td_l2 *t, td_request_t treq);

/* ---- qcow2-refcount.c ------------------------------------------------ */
/* Set host cluster c's refcount in memory; written by the next commit. */
void q2_set_refcount(struct q2_state *s, uint64_t c, uint64_t v);
/* Take a free host cluster and count it (in memory). */
int q2_alloc_cluster(struct q2_state *s, uint64_t *off);
/* Free what a replaced or discarded entry pointed to, after a grace period. */
void q2_unref_mapping(struct q2_state *s, const struct qcow2_mapping *m);
/* Does mapping m own host clusters (normal, zero-allocated, compressed)? */
bool q2_mapping_owns(const struct qcow2_mapping *m);
/* td_grace_release_t: a freed range's grace period is over. */
void q2_grace_release(void *ctx, uint64_t off, uint64_t len,
		      unsigned data);
/* The refcount commit's sequencer (td_meta_seq issue callback). */
void q2_commit_issue(struct td_meta_seq *q);
/* Write back refcount blocks changed since the last commit (close). */
int q2_close_write_refcounts(struct q2_state *s);

#endif
