/* SPDX-License-Identifier: MIT */
/*
 * td-meta: the machinery an asynchronous format driver (vhd, qcow2)
 * needs around its metadata, written once.  The format's own logic -
 * what is written, in which order, what it maps - stays in the driver.
 *
 *  - The driver's own I/O (td_meta_io): reads, writes and fsyncs of
 *    metadata, and of data the driver moves itself, each from a pool of
 *    control blocks, with a callback that gets the driver's context.
 *  - A request's I/O (td_meta_request_io): read, write or fsync one
 *    (sub-)request in place and complete it with the result.
 *  - Group-commit sequencers (struct td_meta_seq): one write of a piece
 *    of metadata in flight at a time; everything that asked for it
 *    meanwhile waits, and the next write covers all of it.  So
 *    concurrent updates share their writes, and never two writes of the
 *    same metadata are in flight (a late stale copy could otherwise land
 *    over a newer one).  The barrier (fsync) is one of them.
 *  - Parked requests (td_meta_park/td_meta_wake): a request that waits
 *    for metadata (a table being loaded, a block being allocated) is
 *    kept on a list and dispatched again, through the driver's dispatch
 *    callback, once it is there.
 *
 * Everything runs on the engine's loop thread.  Nothing here allocates
 * after td_meta_init: when a pool is empty the request is completed with
 * -EBUSY (the VBD retries it) or the callback gets -EBUSY.
 */
#ifndef TAPFS_TD_META_H
#define TAPFS_TD_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tapfs/engine.h>

struct td_grace_epoch;
struct td_meta;

/* Something waiting for a sequencer (or for a barrier). */
struct td_meta_wait {
	struct td_list	 link;
	/* err: 0 once the write covering this waiter is done, or -errno. */
	void		(*done)(struct td_meta_wait *w, int err);
};

typedef void (*td_meta_wait_fn)(struct td_meta_wait *w, int err);

/* A group-commit sequencer: one write in flight, the rest wait. */
struct td_meta_seq {
	struct td_meta	*m;
	bool		 busy;
	struct td_list	 pending;	/* for the next write */
	struct td_list	 inflight;	/* covered by the one in flight */
	/*
	 * Start the one write that covers everything on inflight, from the
	 * state in memory now; its completion must call td_meta_seq_done
	 * (td_meta_seq_io does).
	 */
	void		(*issue)(struct td_meta_seq *q);
	/* Optional: the write failed (log it, note it), before the waiters
	 * see err. */
	void		(*failed)(struct td_meta_seq *q, int err);
};

/*
 * Completion of the driver's own I/O: ctx is the driver's (td_meta_init),
 * arg the caller's, err 0 or -errno (-EIO for a short count).
 */
typedef void (*td_meta_cb_t)(void *ctx, void *arg, int err);

/* Dispatch a parked request again (the driver's queue function). */
typedef void (*td_meta_dispatch_t)(void *ctx, td_request_t treq);

/* A request waiting for metadata: parked, or on a sequencer. */
struct td_meta_req {
	td_request_t	 treq;
	struct td_meta_wait wait;
	struct td_meta	*m;
};

/* Per open image; embedded in the driver's state. */
struct td_meta {
	td_driver_t		*drv;
	int			 fd;
	void			*ctx;		/* for the callbacks */
	td_meta_dispatch_t	 dispatch;
	struct td_pool		 ios;		/* in-flight I/O */
	struct td_pool		 reqs;		/* struct td_meta_req */
	struct td_meta_seq	 barrier;	/* fsyncs of fd */
};

/*
 * Set up m for drv's file fd: nios I/Os in flight at most, nreqs
 * requests parked or waiting.  0 or -ENOMEM.  td_meta_fini undoes it
 * (also after a failed or no td_meta_init, on zeroed memory).
 */
int  td_meta_init(struct td_meta *m, td_driver_t *drv, int fd, void *ctx,
		  td_meta_dispatch_t dispatch, unsigned nios, unsigned nreqs);
void td_meta_fini(struct td_meta *m);

/*
 * The image is refused (td_open, td_get_parent_id, td_validate_parent):
 * why, naming the file and the value, goes to drv->error, which the
 * engine hands to its caller, who logs or shows it once.  Returns rc.
 */
int  td_meta_refuse(td_driver_t *drv, int rc, const char *why);

/* ---- the driver's own I/O --------------------------------------------- */

/*
 * Queue one read or write of len bytes at off, or an fsync (TD_OP_FLUSH,
 * buf NULL, len 0); cb(ctx, arg, err) when it is done.  A short count is
 * -EIO.  Without a free control block, cb gets -EBUSY at once.
 */
void td_meta_io(struct td_meta *m, enum td_op op, void *buf, size_t len,
		uint64_t off, td_meta_cb_t cb, void *arg);
/*
 * A read of data: past the end of the file it reads zeros.  ep (or NULL)
 * is a grace epoch (td-grace.h) the read holds; it is ended before cb
 * runs.
 */
void td_meta_read_data(struct td_meta *m, struct td_grace_epoch *ep,
		       void *buf, size_t len, uint64_t off, td_meta_cb_t cb,
		       void *arg);

/*
 * Read or write treq's sectors at file offset off (a flush: fsync the
 * file), then complete treq: a short read is filled with zeros, a short
 * write is -EIO.  ep (or NULL) is ended first.
 */
void td_meta_request_io(struct td_meta *m, td_request_t treq, uint64_t off,
			struct td_grace_epoch *ep);

/* ---- sequencers --------------------------------------------------------- */

void td_meta_seq_init(struct td_meta_seq *q, struct td_meta *m,
		      void (*issue)(struct td_meta_seq *q),
		      void (*failed)(struct td_meta_seq *q, int err));
/*
 * w waits for the next write of q: done(w, err) once a write that began
 * after this call is done.  Starts that write if none is in flight.
 */
void td_meta_seq_wait(struct td_meta_seq *q, struct td_meta_wait *w,
		      td_meta_wait_fn done);
/* The write in flight is done: its waiters complete, the next starts. */
void td_meta_seq_done(struct td_meta_seq *q, int err);
/* For an issue callback: the write as one td_meta_io (or an fsync). */
void td_meta_seq_io(struct td_meta_seq *q, enum td_op op, void *buf,
		    size_t len, uint64_t off);

/* w waits for an fsync of the file that begins after this call. */
static inline void td_meta_barrier(struct td_meta *m, struct td_meta_wait *w,
				   td_meta_wait_fn done)
{
	td_meta_seq_wait(&m->barrier, w, done);
}

/* ---- requests waiting for metadata ------------------------------------- */

/*
 * A td_meta_req for treq, or NULL with treq completed with -EBUSY (the
 * VBD retries it).
 */
struct td_meta_req *td_meta_req_get(struct td_meta *m, td_request_t treq);
/* Release r and complete its request with err. */
void td_meta_req_complete(struct td_meta_req *r, int err);
/* A td_meta_wait_fn: the request waiting in w completes with err. */
void td_meta_req_done(struct td_meta_wait *w, int err);
/*
 * treq (a flush) completes once a write of q that begins after this call
 * is done: m->barrier (an fsync), or a commit that ends with one.
 */
void td_meta_req_wait(struct td_meta *m, struct td_meta_seq *q,
		      td_request_t treq);

static inline struct td_meta_req *td_meta_req_of(struct td_meta_wait *w)
{
	return td_container_of(w, struct td_meta_req, wait);
}

/*
 * Park treq on list until td_meta_wake(list).  false, with treq completed
 * with -EBUSY, if there is no room.
 */
bool td_meta_park(struct td_meta *m, struct td_list *list,
		  td_request_t treq);
/*
 * Take every request parked on list (which may be a list on the stack,
 * moved off memory about to be released: td_list_move) and dispatch it
 * again, or complete it with err when err is not 0.
 */
void td_meta_wake(struct td_meta *m, struct td_list *list, int err);

/* ---- splitting requests, runs of segments ----------------------------- */

/*
 * Cut treq at multiples of span sectors (a block, an L1 entry's range, a
 * cluster) and call fn(ctx, piece) for each piece, in order.
 */
void td_meta_split(td_request_t treq, uint64_t span,
		   void (*fn)(void *ctx, td_request_t piece), void *ctx);

enum td_meta_run_kind {
	TD_RUN_NONE,
	TD_RUN_DATA,		/* in place, at consecutive host offsets */
	TD_RUN_ZERO,		/* a read of zeros */
	TD_RUN_FORWARD,		/* to the parent image */
};

/*
 * Consecutive segments of a request handled alike, issued as one piece:
 * small clusters would otherwise cost one I/O each.  Start one with
 * { .m = m, .grace = grace (or NULL) }; add segments in order; flush it
 * before handling a segment another way, and at the end.
 */
struct td_meta_run {
	struct td_meta		*m;
	struct td_grace		*grace;	/* data I/O holds an epoch of it */
	enum td_meta_run_kind	 kind;
	td_request_t		 treq;
	uint64_t		 host;	/* TD_RUN_DATA: of treq.sec */
};

void td_meta_run_add(struct td_meta_run *r, enum td_meta_run_kind kind,
		     td_request_t seg, uint64_t host);
void td_meta_run_flush(struct td_meta_run *r);

#endif /* TAPFS_TD_META_H */
