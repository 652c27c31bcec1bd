/* SPDX-License-Identifier: MIT */
/*
 * What the qcow2 driver's files share, private to drivers/qcow2/: the
 * per-image state and the functions one file calls in another.
 * qcow2.c: open, close, the driver table, request dispatch, metadata
 * overlap; qcow2-cluster.c: L1 and L2 tables, allocating and discarding
 * clusters, compressed clusters; qcow2-refcount.c: refcounts in memory
 * and the refcount commit.  The allocation order and why it is
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
#include "common/td-meta.h"
#include "common/td-zlib.h"
#include "common/td-util.h"

#define Q2_HASH_BUCKETS		1024u
/* Freed clusters remembered for reuse before scanning for free ones. */
#define Q2_FREE_STACK		4096u
/* O_DIRECT alignment of metadata and compressed reads. */
#define Q2_IO_ALIGN		4096u
#define Q2_SECS_ALIGN		(Q2_IO_ALIGN >> TD_SECTOR_SHIFT)

struct q2_state;

enum q2_l2_state {
	L2_UNLOADED,
	L2_LOADING,
	L2_READY,
	L2_ALLOCATING,
};

/* One L2 table in memory, made on first use and kept. */
struct q2_l2 {
	enum q2_l2_state state;
	uint64_t	 index;		/* L1 index */
	uint8_t		*buf;		/* disk format, aligned */
	struct td_list	 waiters;	/* td_meta_req: loading, allocating */
	struct td_meta_seq seq;		/* writes of this table */
	bool		 dirty;
	uint32_t	 lo, hi;	/* dirty entries */
};

enum q2_alloc_kind {
	A_DATA,		/* a new cluster for a write */
	A_DISCARD,	/* a cluster made unallocated or zero */
	A_L2,		/* a new L2 table */
};

/* One allocation (or discard) in progress, keyed by guest cluster. */
struct q2_alloc {
	struct q2_state	*s;
	enum q2_alloc_kind kind;
	td_request_t	 treq;		/* A_DATA, A_DISCARD */
	uint64_t	 gcl;		/* guest cluster (A_L2: L1 index) */
	struct q2_l2	*l2;
	uint32_t	 l2i;
	uint64_t	 host;		/* the new cluster */
	struct qcow2_mapping old;	/* what it replaces */
	struct td_list	 hash_link;
	struct td_list	 waiters;	/* td_meta_req for this cluster */
	struct td_meta_wait wait;
	unsigned	 pending;
	int		 err;
	uint8_t		*buf;		/* cluster_size, aligned */
};

/* A refcount block write of the commit in flight. */
struct q2_rb_write {
	uint64_t	 rbi;
	uint32_t	 off, len;	/* bytes of the block */
	bool		 was_new;	/* its table entry goes out too */
};

/* A compressed cluster being read. */
struct q2_cread {
	struct q2_state	*s;
	td_request_t	 treq;		/* the read, or unused (COW) */
	struct q2_alloc	*alloc;		/* COW of a compressed cluster */
	uint64_t	 off;		/* of the compressed data */
	uint32_t	 csize;
	uint32_t	 skip;		/* data starts at buf + skip */
	size_t		 len;		/* bytes read */
	uint8_t		*buf;
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

	uint64_t		*l1;		/* img->l1, host order */
	uint8_t			*l1_disk;	/* aligned, disk format */
	size_t			 l1_bytes;
	bool			 l1_dirty;
	uint64_t		 l1_lo, l1_hi;
	struct td_meta_seq	 l1_seq;
	struct q2_l2		**l2s;		/* per L1 entry */

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

	struct td_list		 hash[Q2_HASH_BUCKETS];
	struct td_list		 res_waiters;	/* no alloc/cread free */

	/* Allocated on first use (a VBD that never needs them, most, costs
	 * a cluster less each): */
	uint8_t			*zeros;		/* one cluster of zeros */
	void			*zs;		/* inflate stream */
	uint8_t			*zcache;	/* the last inflated cluster */
	uint64_t		 zcache_off;
	uint32_t		 zcache_csize;	/* 0: empty */

	struct td_meta		 meta;		/* I/O, barrier, parking */
	struct td_pool		 allocs;
	struct td_pool		 creads;
	size_t			 alloc_hdr;	/* buffer offset in an alloc */
	size_t			 cread_hdr;
	size_t			 cread_buf;

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
/* td_meta_seq callbacks of the L1 table's sequencer. */
void q2_l1_issue(struct td_meta_seq *q);
void q2_l1_failed(struct td_meta_seq *q, int err);
/* The allocation (or discard) of guest cluster gcl in progress, or NULL. */
struct q2_alloc *q2_alloc_find(struct q2_state *s, uint64_t gcl);
/* A write of treq into guest cluster gcl needs a new cluster. */
void q2_alloc_data(struct q2_state *s, struct q2_l2 *t, uint32_t l2i,
		   uint64_t gcl, const struct qcow2_mapping *old,
		   td_request_t treq);
/* A discard of the whole guest cluster gcl. */
void q2_discard_cluster(struct q2_state *s, struct q2_l2 *t,
			uint32_t l2i, uint64_t gcl,
			const struct qcow2_mapping *old,
			td_request_t treq);
/* The L2 table of L1 entry l1i in memory (made, not loaded), or NULL. */
struct q2_l2 *q2_l2_get(struct q2_state *s, uint64_t l1i);
/* Completion of an L2 table's load (td_meta_io). */
void q2_l2_loaded(void *ctx, void *arg, int err);
/* A new, empty L2 table for L1 entry t->index; treq waits for it. */
void q2_l2_alloc(struct q2_state *s, struct q2_l2 *t,
		 td_request_t treq);
/* A read of treq inside the compressed cluster m. */
void q2_read_compressed(struct q2_state *s, td_request_t treq,
			const struct qcow2_mapping *m);

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
