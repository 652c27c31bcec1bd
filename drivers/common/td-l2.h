/* SPDX-License-Identifier: MIT */
/*
 * td-l2: the two-level cluster tables of the qcow formats (qcow version
 * 1, qcow2), written once.
 *
 *  - The L1 table in memory (host order, the image's array) and in disk
 *    format, and its group-commit writes of the dirty entries.
 *  - L2 tables, loaded on first use: every table kept once loaded (one
 *    per L1 entry), or a bounded cache of slots that evicts the least
 *    recently used idle table.  Writes of a table's dirty entries go
 *    through its sequencer (td-meta.h).
 *  - The dispatch of a request: split at L1 entry boundaries, each
 *    piece parked while its table loads or is allocated, loaded, or
 *    handed to the driver with its ready table.
 *  - Allocations in progress (struct td_l2_alloc): the record, found by
 *    guest cluster, the requests waiting for it, the copy-on-write fill
 *    of the new cluster's old contents and the write of its data.
 *  - Compressed reads and the last inflated compressed cluster (struct
 *    td_zcache).
 *
 * What the formats disagree on is a parameter (the entry and table
 * sizes, the write granularity, which bits of an L1 entry give the
 * table's offset, the cache's bound, the alignment of compressed reads)
 * or stays in the driver: decoding an entry, what an unmapped range
 * means, where a new table or cluster goes (qcow appends it to the
 * file, qcow2 counts it in its refcounts), the order of an allocation's
 * steps after its data is written, discard.
 *
 * Everything runs on the engine's loop thread; the callbacks get the
 * driver's context, td_meta's ctx.
 */
#ifndef TAPFS_TD_L2_H
#define TAPFS_TD_L2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tapfs/engine.h>

#include "td-grace.h"
#include "td-meta.h"
#include "td-util.h"

struct td_l2_tables;

enum td_l2_state {
	TD_L2_EMPTY,		/* no table: not loaded, or a free slot */
	TD_L2_LOADING,
	TD_L2_READY,
	TD_L2_ALLOCATING,	/* a new table, being written and linked */
};

/* One L2 table in memory. */
struct td_l2 {
	struct td_l2_tables *tb;
	enum td_l2_state state;
	uint64_t	 index;		/* its L1 entry */
	uint8_t		*buf;		/* disk format, aligned */
	struct td_list	 waiters;	/* td_meta_req: loading, allocating */
	struct td_meta_seq seq;		/* writes of this table */
	bool		 dirty;
	uint32_t	 lo, hi;	/* dirty entries */
	unsigned	 pins;		/* users: not evicted (bounded cache) */
	uint64_t	 used;		/* LRU tick (bounded cache) */
};

/* What the driver decides (ctx: td_meta's). */
struct td_l2_ops {
	/* treq lies inside the range of ready table t. */
	void (*table)(void *ctx, struct td_l2 *t, td_request_t treq);
	/*
	 * treq lies inside the range of an L1 entry without a table: true
	 * if it was handled (forwarded, completed), false if it needs one.
	 */
	bool (*unmapped)(void *ctx, td_request_t treq);
	/* Allocate a table for t (state TD_L2_EMPTY); treq waits for it. */
	void (*alloc)(void *ctx, struct td_l2 *t, td_request_t treq);
	/* td_l2_alloc_write is done (arg: the struct td_l2_alloc). */
	td_meta_cb_t written;
};

/* ---- filling a new cluster from its old contents ----------------------- */

/*
 * The old contents of a cluster being copied on write arrive from
 * several reads at once (the backing image's, by pieces; this file's);
 * done(f, err) runs once all have, err the first error or 0.  Start with
 * pending = 1, a guard put after everything is issued.
 */
struct td_l2_fill {
	unsigned	 pending;
	int		 err;
	void		(*done)(struct td_l2_fill *f, int err);
};

/* n units arrived (sectors of a read of the backing image, or 1). */
void td_l2_fill_put(struct td_l2_fill *f, unsigned n, int err);
/* Read secs sectors at sec from below image (the parent) into buf. */
void td_l2_fill_parent(struct td_l2_fill *f, td_image_t *image, char *buf,
		       uint64_t sec, uint32_t secs);

/*
 * An allocation in progress: a data cluster, a discard, or a new table.
 * The first member of the driver's record (td_l2_params.alloc_size);
 * from td_l2_alloc_get to td_l2_alloc_finish, requests for its guest
 * cluster wait on it and its table stays cached.
 */
enum td_l2_alloc_kind {
	TD_L2_ALLOC_DATA,	/* a new cluster for a write */
	TD_L2_ALLOC_DISCARD,	/* a cluster made unallocated or zero */
	TD_L2_ALLOC_TABLE,	/* a new L2 table */
};

struct td_l2_alloc {
	struct td_l2_tables *tb;
	enum td_l2_alloc_kind kind;
	td_request_t	 treq;		/* data, discard */
	uint64_t	 gcl;		/* guest cluster (a table: L1 index) */
	struct td_l2	*t;		/* pinned */
	uint32_t	 l2i;
	uint64_t	 host;		/* the new cluster or table */
	struct td_list	 link;		/* tb->hash */
	struct td_list	 waiters;	/* td_meta_req for this cluster */
	struct td_meta_wait wait;
	struct td_l2_fill fill;		/* the old contents */
	uint8_t		*buf;		/* alloc_buf bytes, aligned */
};

/* The last inflated compressed cluster (td_zcache_*, below). */
struct td_zcache {
	void		*zs;		/* inflate stream */
	uint8_t		*buf;		/* one cluster */
	uint32_t	 size;		/* cluster size */
	uint64_t	 off;		/* of the compressed data held */
	uint32_t	 csize;		/* 0: empty */
};

/* A compressed cluster being read: for a read, or a copy on write. */
struct td_l2_cread {
	struct td_l2_tables *tb;
	td_request_t	 treq;		/* the read (alloc NULL) */
	struct td_l2_alloc *alloc;	/* copy on write into alloc->buf */
	uint64_t	 off;		/* of the compressed data */
	uint32_t	 csize;
	uint32_t	 skip;		/* data starts at buf + skip */
	size_t		 len;		/* bytes read */
	uint8_t		*buf;		/* cread_buf bytes */
};

struct td_l2_params {
	uint64_t	 l1_size;	/* entries */
	uint64_t	 l1_offset;	/* of the L1 table in the file */
	uint64_t	 offset_mask;	/* of an L1 entry: the table's offset */
	uint32_t	 table_bytes;	/* of one L2 table */
	uint32_t	 entry_size;	/* bytes of an L2 entry */
	uint32_t	 align;		/* writes are whole units of it (1) */
	uint64_t	 span_secs;	/* sectors an L1 entry maps */
	uint32_t	 cl_secs;	/* sectors of a cluster */
	uint64_t	 vsecs;		/* virtual size, sectors */
	/* 0: every table kept once loaded.  Else a cache of nslots. */
	unsigned	 nslots;
	/*
	 * Requests waiting for a resource (a cache slot, an allocation
	 * record, the driver's own): woken when one may be free.
	 */
	struct td_list	*res_waiters;
	/* Allocation records: nallocs of the driver's alloc_size bytes,
	 * which begin with a struct td_l2_alloc, and alloc_buf bytes of
	 * bounce buffer each. */
	unsigned	 nallocs;
	size_t		 alloc_size;
	size_t		 alloc_buf;
	/* Compressed reads: ncreads of cread_buf bytes, whole units of
	 * cread_align (1: exact) read; data reads hold an epoch of grace
	 * (or NULL). */
	unsigned	 ncreads;
	size_t		 cread_buf;
	uint32_t	 cread_align;
	struct td_grace	*grace;
	const struct td_l2_ops *ops;
};

#define TD_L2_HASH_BUCKETS	1024u

struct td_l2_tables {
	struct td_meta	*m;
	struct td_l2_params p;
	uint64_t	*l1;		/* host order: the image's */
	uint8_t		*l1_disk;	/* disk format, aligned */
	size_t		 l1_bytes;	/* of l1_disk: whole units of align */
	bool		 l1_dirty;
	uint64_t	 l1_lo, l1_hi;	/* dirty entries */
	struct td_meta_seq l1_seq;
	bool		 write_failed;	/* an L1 or L2 write failed */
	struct td_l2	*slots;		/* nslots: the bounded cache */
	struct td_l2	**tables;	/* else per L1 entry, made on use */
	uint64_t	 tick;
	struct td_pool	 allocs;	/* struct td_l2_alloc */
	size_t		 alloc_hdr;	/* bounce buffer offset */
	/* Allocations in progress, by guest cluster. */
	struct td_list	 hash[TD_L2_HASH_BUCKETS];	struct td_pool	 creads;	/* struct td_l2_cread */
	size_t		 cread_hdr;
	struct td_zcache zc;		/* the last inflated cluster */
};

/*
 * Set up tb for the tables of the image whose L1 table (host order) is
 * l1, its I/O through m.  0 or -ENOMEM; td_l2_fini undoes it (also after
 * a failed or no td_l2_init, on zeroed memory).
 */
int  td_l2_init(struct td_l2_tables *tb, struct td_meta *m, uint64_t *l1,
		const struct td_l2_params *p);
void td_l2_fini(struct td_l2_tables *tb);

/* Set L1 entry i in memory (written by td_l2_link or the next write). */
void td_l1_set(struct td_l2_tables *tb, uint64_t i, uint64_t entry);

/* Entry i of table t, host order. */
static inline uint64_t td_l2_entry(const struct td_l2 *t, uint32_t i)
{
	return td_get_be64(t->buf + (size_t)i * t->tb->p.entry_size);
}

/* Set entry i of table t in memory and queue w for the write of it. */
void td_l2_set(struct td_l2 *t, uint32_t i, uint64_t entry,
	       struct td_meta_wait *w, td_meta_wait_fn done);

/*
 * Dispatch treq (a read, write or discard): through ops, once the table
 * of each L1 entry it touches is ready.  Also a driver's
 * td_meta_dispatch_t for requests parked here.
 */
void td_l2_dispatch(struct td_l2_tables *tb, td_request_t treq);

/*
 * Allocating a table (ops->alloc), in the driver's order:
 * td_l2_write_new writes t zeroed at host (treq waits for it), cb(ctx,
 * arg, err) then; td_l2_link sets its L1 entry and waits w for the
 * write of it; td_l2_ready(t, err) ends it (the waiters dispatched, or
 * completed with err and t empty again).
 */
void td_l2_write_new(struct td_l2 *t, td_request_t treq, uint64_t host,
		     td_meta_cb_t cb, void *arg);
void td_l2_link(struct td_l2 *t, uint64_t entry, struct td_meta_wait *w,
		td_meta_wait_fn done);
void td_l2_ready(struct td_l2 *t, int err);

/* Does treq cover guest cluster gcl whole (or all of a last one)? */
static inline bool td_l2_covers(const struct td_l2_tables *tb,
				td_request_t treq, uint64_t gcl)
{
	uint64_t first = gcl * tb->p.cl_secs;

	return treq.sec == first && (treq.secs == tb->p.cl_secs ||
				     first + treq.secs == tb->p.vsecs);
}

/*
 * Copy on write into a's new cluster (a->host).  td_l2_alloc_fill
 * starts counting the old contents' reads into a->buf (a->fill; the
 * driver issues them, then puts the guard); once all are in (or one
 * failed: td_l2_alloc_finish), td_l2_alloc_write.  That writes the
 * request alone if it covers the cluster, else the bounce buffer with
 * the request's data (zeros for a discard) over the old contents;
 * ops->written(ctx, a, err) then.  td_l2_alloc_write_direct writes the
 * request's data alone at its place (the rest reads as zeros already).
 */
void td_l2_alloc_fill(struct td_l2_alloc *a);
void td_l2_alloc_write(struct td_l2_alloc *a);
void td_l2_alloc_write_direct(struct td_l2_alloc *a);

/*
 * A record for an allocation of kind for guest cluster gcl (a table: t's
 * L1 index) in table t, or NULL if none is free (wait on res_waiters).
 */
struct td_l2_alloc *td_l2_alloc_get(struct td_l2_tables *tb,
				    enum td_l2_alloc_kind kind,
				    struct td_l2 *t, uint64_t gcl);
/* The data or discard allocation of guest cluster gcl, or NULL. */
struct td_l2_alloc *td_l2_alloc_find(struct td_l2_tables *tb, uint64_t gcl);
/*
 * The allocation is over (err logged): its request completes with err,
 * the requests waiting for it and for a resource are dispatched again.
 */
void td_l2_alloc_finish(struct td_l2_alloc *a, int err);

/* ---- compressed clusters ----------------------------------------------- */

/*
 * Read treq inside the compressed cluster of csize bytes at off: from
 * the last inflated cluster, or read and inflated (waiting on
 * res_waiters for a record).
 */
void td_l2_read_compressed(struct td_l2_tables *tb, td_request_t treq,
			   uint64_t off, uint32_t csize);
/*
 * Copy on write of a compressed cluster: its data inflated into a->buf,
 * counted in a->fill.  0, or -EBUSY without a free record.
 */
int  td_l2_alloc_read_compressed(struct td_l2_alloc *a, uint64_t off,
				 uint32_t csize);

/* ---- the last inflated compressed cluster ------------------------------ */


/*
 * Always 0: the cluster buffer and the inflate stream are made by the
 * first td_zcache_fill (-ENOMEM there), as most images hold no
 * compressed cluster.  td_zcache_fini frees them (also on zeroed memory).
 */
int  td_zcache_init(struct td_zcache *z, uint32_t cluster_size);
void td_zcache_fini(struct td_zcache *z);

static inline bool td_zcache_holds(const struct td_zcache *z, uint64_t off,
				   uint32_t csize)
{
	return z->csize == csize && z->off == off;
}

/*
 * Hold the cluster whose compressed data (csize bytes at file offset
 * off) is data, unless it is held already.  0, or -EIO, logged naming
 * the image (name), if it does not inflate.
 */
/*
 * Inflate csize bytes of data (the compressed cluster at off) into out,
 * one cluster, with the cache's stream (made here the first time): 0,
 * -ENOMEM or -EIO, logged naming the image.  td_zcache_fill keeps the
 * result; this leaves the cache as it was.
 */
int  td_zcache_inflate(struct td_zcache *z, const char *name, uint64_t off,
		       uint32_t csize, const uint8_t *data, uint8_t *out);
int  td_zcache_fill(struct td_zcache *z, const char *name, uint64_t off,
		    uint32_t csize, const uint8_t *data);

/* Copy treq's sectors (inside the cluster held) into its buffer. */
void td_zcache_copy_out(const struct td_zcache *z, td_request_t treq);

#endif /* TAPFS_TD_L2_H */
