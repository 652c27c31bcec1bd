/* SPDX-License-Identifier: MIT */
/*
 * tapfs engine API: event loop, timers, object pools, the libaio queue and
 * the VBD (a chain of images with a request queue).
 *
 * Everything here is single-threaded: one struct td_engine per loop
 * thread, and every object created on an engine is used only from that
 * engine's thread.  No function here allocates on the data path.
 */
#ifndef TAPFS_ENGINE_H
#define TAPFS_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tapfs/tapdisk.h>

/* ---- small intrusive list ----------------------------------------- */

struct td_list {
	struct td_list *next, *prev;
};

#define TD_LIST_INIT(l)		{ &(l), &(l) }

static inline void td_list_init(struct td_list *l)
{
	l->next = l->prev = l;
}

static inline bool td_list_empty(const struct td_list *l)
{
	return l->next == l;
}

static inline void td_list_add_tail(struct td_list *n, struct td_list *h)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static inline void td_list_add(struct td_list *n, struct td_list *h)
{
	td_list_add_tail(n, h->next);
}

static inline void td_list_del(struct td_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->next = n->prev = n;
}

/* Move every entry of from to the list head to; from is left empty. */
static inline void td_list_move(struct td_list *to, struct td_list *from)
{
	td_list_init(to);
	if (td_list_empty(from))
		return;
	*to = *from;
	to->next->prev = to;
	to->prev->next = to;
	td_list_init(from);
}

#define td_container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

/* ---- event loop ----------------------------------------------------- */

struct td_loop;
struct td_event;
typedef void (*td_event_cb_t)(struct td_event *ev, uint32_t events);

/* A file descriptor watched by the loop; storage owned by the caller. */
struct td_event {
	int		 fd;
	uint32_t	 events;	/* EPOLLIN, EPOLLOUT */
	td_event_cb_t	 cb;
	void		*arg;
};

struct td_timer;
typedef void (*td_timer_cb_t)(struct td_timer *t);

/* A one-shot timer; storage owned by the caller. */
struct td_timer {
	struct td_list	 link;
	uint64_t	 expires_ns;	/* CLOCK_MONOTONIC */
	td_timer_cb_t	 cb;
	void		*arg;
	bool		 armed;
};

/* Called once per loop iteration, before the loop sleeps. */
struct td_hook {
	struct td_list	 link;
	void		(*cb)(struct td_hook *h);
	void		*arg;
};

struct td_loop *td_loop_new(void);
void td_loop_free(struct td_loop *loop);

int  td_loop_add_event(struct td_loop *loop, struct td_event *ev);
int  td_loop_mod_event(struct td_loop *loop, struct td_event *ev,
		       uint32_t events);
void td_loop_del_event(struct td_loop *loop, struct td_event *ev);

void td_timer_init(struct td_timer *t, td_timer_cb_t cb, void *arg);
void td_timer_arm(struct td_loop *loop, struct td_timer *t, uint64_t ms);
void td_timer_cancel(struct td_timer *t);

void td_loop_add_hook(struct td_loop *loop, struct td_hook *h);
void td_loop_del_hook(struct td_hook *h);

/* Run one iteration: hooks, sleep at most timeout_ms (-1: forever),
 * dispatch events and expired timers.  Returns 0 or -errno. */
int  td_loop_run_once(struct td_loop *loop, int timeout_ms);
/* Run until td_loop_stop(). */
int  td_loop_run(struct td_loop *loop);
void td_loop_stop(struct td_loop *loop);
bool td_loop_stopped(const struct td_loop *loop);

/* CLOCK_MONOTONIC in ns.  Also remembered for td_recent_ns(). */
uint64_t td_now_ns(void);
/*
 * The value of this thread's last td_now_ns(), without reading the clock:
 * a stamp for something done in the same loop turn as a clock read (a
 * request's arrival or dispatch, an aio reap); 0 before the first.
 */
uint64_t td_recent_ns(void);

/* ---- fixed-size object pool ---------------------------------------- */

/*
 * count objects of size bytes, each aligned to align, allocated once and
 * zeroed.  get/put are O(1) and never allocate.  Pools of TD_POOL_MAP_MIN
 * bytes or more are mapped: a page of them costs memory only once an
 * object on it is used (td-pool.c), so a pool may be sized for the worst
 * case.  Smaller ones are allocated and cleared (one mapping each would
 * cost more than it saves).
 */
#define TD_POOL_MAP_MIN		(16u << 10)

struct td_pool {
	char	*mem;
	size_t	 size;		/* object stride */
	unsigned count;
	unsigned nfree;		/* on the stack, and never handed out */
	unsigned nstack;	/* free[0..nstack): objects put back */
	unsigned fresh;		/* objects fresh..count-1 never handed out */
	void	**free;		/* stack of objects put back */
	bool	*out;		/* out[i]: object i is handed out */
	bool	 mapped;	/* mem..mem+map_len: one anonymous mapping */
	size_t	 map_len;
};

int   td_pool_init(struct td_pool *p, unsigned count, size_t size,
		   size_t align);
void  td_pool_fini(struct td_pool *p);
void *td_pool_get(struct td_pool *p);		/* NULL when empty */
/* obj from this pool's get, or NULL; a foreign object or a second put
 * of one fails an assert (an engine bug). */
void  td_pool_put(struct td_pool *p, void *obj);
bool  td_pool_owns(const struct td_pool *p, const void *obj);

/* ---- libaio queue --------------------------------------------------- */

/* Largest number of tiocbs merged into one vectored iocb. */
#define TD_AIO_MAX_MERGE	32
/*
 * Merge only up to this many bytes: merging small contiguous requests
 * saves submissions, but folding large ones (1 MiB sequential reads)
 * into one iocb completes them all together and starves the pipeline.
 */
#define TD_AIO_MERGE_BYTES	(256u << 10)
/* Most iocbs in flight in one queue. */
#define TD_AIO_DEPTH		512

/*
 * Where a tiocb's time goes in the queue, summed over tiocbs (a merged
 * iocb counts once per piece): wait_ns from td_queue_tiocb() to the
 * io_submit() that took it (stamped with td_recent_ns(); a split piece
 * waits again from its split), disk_ns from that io_submit() (one clock
 * read per call) to the io_getevents() that returned its event (one
 * clock read per call that returned any).  waited counts the tiocbs in
 * wait_ns, reaped those in disk_ns.  Reap to the tiocb's callback is
 * in neither.
 */
struct td_aio_stats {
	uint64_t submitted;	/* iocbs handed to io_submit */
	uint64_t merged;	/* tiocbs folded into another */
	uint64_t batches;	/* io_submit calls */
	uint64_t completed;
	uint64_t reaps;		/* io_getevents calls that returned events */
	uint64_t waited, wait_ns;
	uint64_t reaped, disk_ns;
};

struct td_aio_queue;

struct td_aio_queue *td_aio_queue_new(struct td_loop *loop, unsigned depth);
void td_aio_queue_free(struct td_aio_queue *q);
void td_aio_queue_add(struct td_aio_queue *q, struct tiocb *t);
/* Complete t (res 0) at the loop's next turn, without the kernel. */
void td_aio_queue_complete_later(struct td_aio_queue *q, struct tiocb *t);
/* Submit everything pending now (also done before every loop sleep). */
void td_aio_queue_submit(struct td_aio_queue *q);
unsigned td_aio_queue_inflight(const struct td_aio_queue *q);
void td_aio_queue_get_stats(const struct td_aio_queue *q,
			    struct td_aio_stats *st);
/* sum += st, every counter (the queues of several loops). */
void td_aio_stats_add(struct td_aio_stats *sum,
		      const struct td_aio_stats *st);

/* ---- engine: the per-thread context -------------------------------- */

/*
 * Which image files VBDs may open.  The engine asks before it opens any
 * image of a chain: the leaf given to vbd_open() and every parent an
 * image names, at every depth (drivers that probe a parent's file first
 * ask through td_check_path()).  Returns 0 and the canonical path to open
 * in *real (malloc'd, the caller frees), or -errno (-EACCES: not allowed)
 * with a one-line reason naming path in err.
 */
typedef int (*td_path_policy_t)(void *arg, const char *path, char **real,
				char *err, size_t errlen);

struct td_lock_table;

struct td_engine {
	struct td_loop		*loop;
	struct td_aio_queue	*aioq;
	/*
	 * Every image file this engine's VBDs hold (include/tapfs/lock.h),
	 * and its family's (td_engine_join): one table for them all.
	 */
	struct td_lock_table	*locks;
	/* The next engine of the family, a ring: e itself when alone. */
	struct td_engine	*peer;
	/* NULL (the default): every path may be opened as it is given. */
	td_path_policy_t	 path_policy;
	void			*path_policy_arg;
	/* Read-only parents open once for all chains (engine-private). */
	struct td_list		 shared_images;
	/* Drivers' settings and shared state (engine-private, below). */
	struct td_list		 options;
	struct td_list		 driver_states;
};

struct td_engine *td_engine_new(void);
/* Leaves its family too (with every loop stopped). */
void td_engine_free(struct td_engine *e);

/*
 * Make e (new, no VBD open yet) one of first's family: the engines of
 * one process, one per loop with -o workers=N.  They share one lock
 * table, so that one writer per image holds, and a refusal names the
 * holder, whichever loop each VBD is on; a driver finds the others by
 * walking e->peer (rbd: one list of cluster connections for all the
 * loops).  Called before the loops' threads start; the ring does not
 * change while they run.  What a driver shares through the ring needs a
 * lock of its own: opens and closes come from loop 0 with every other
 * loop parked (fs/workers.h), but a take-over opens the new leaf on the
 * VBD's own loop, whenever its first write comes.
 */
void td_engine_join(struct td_engine *e, struct td_engine *first);

/*
 * Ask e's path policy about path: 0 and *real (malloc'd canonical path,
 * or NULL without a policy: open path as given), or -errno and err.
 * e may be NULL (no policy).
 */
int  td_engine_check_path(struct td_engine *e, const char *path,
			  char **real, char *err, size_t errlen);

/* ---- drivers' settings and shared state ---------------------------- */

/*
 * Settings for the engine's drivers, given by its owner (the daemon's
 * mount options: ceph_conf=FILE): name=value strings a driver reads when
 * it opens an image.  set copies both (a later set replaces); 0 or
 * -ENOMEM.  td_engine_option: the value, or NULL when unset.
 */
int  td_engine_set_option(struct td_engine *e, const char *name,
			  const char *value);
const char *td_engine_option(const struct td_engine *e, const char *name);

/*
 * State a driver shares among all its images on one engine (rbd: the one
 * cluster connection), made by the driver when it first needs it and
 * kept until td_engine_free(), which calls fini(state) after every VBD
 * is closed.  get: the state set for ops, or NULL.  set: 0, -EEXIST (ops
 * has one) or -ENOMEM.
 */
typedef void (*td_driver_state_fini_t)(void *state);
void *td_engine_driver_state(const struct td_engine *e,
			     const struct tap_disk *ops);
int  td_engine_set_driver_state(struct td_engine *e,
				const struct tap_disk *ops, void *state,
				td_driver_state_fini_t fini);

/* ---- VBD ------------------------------------------------------------- */

/* Most images in one chain (leaf ... base). */
#define TD_MAX_CHAIN		256

/* Retry defaults (see struct vbd_params). */
#define VBD_RETRY_MAX		5
#define VBD_RETRY_DELAY_MS	100
#define VBD_DEADLINE_MS		30000
/* Largest request handed to the leaf driver in one piece. */
#define VBD_MAX_SEGMENT_SECS	2048	/* 1 MiB */

struct vbd_params {
	unsigned retry_max;		/* retries per request */
	unsigned retry_delay_ms;	/* first backoff, doubles */
	unsigned deadline_ms;		/* since first dispatch; then EIO */
	bool	 retry_eio;		/* treat EIO as transient too */
	uint32_t max_segment_secs;	/* split larger requests */
};

void vbd_params_default(struct vbd_params *p);

enum vbd_state {
	VBD_RUNNING,
	VBD_PAUSING,		/* new requests wait, draining */
	VBD_PAUSED,
};

/*
 * Completion latency histograms, one per operation (indexed by enum
 * td_op): bucket b counts completions of at most 2^b µs and more than
 * 2^(b-1) (bucket 0: at most 1 µs); the last bucket counts everything
 * above 2^(VBD_LAT_BUCKETS - 2) µs (about 67 s).  Updated with a shift
 * and an increment per request.
 */
#define VBD_LAT_BUCKETS		28
#define VBD_LAT_OPS		4	/* TD_OP_READ ... TD_OP_DISCARD */

/*
 * The stages of a request's life in tapfs, each timed with one
 * td_now_ns() at its end: arrival (vbd_submit_at) -> dispatch to the
 * leaf's driver -> completion -> the client's reply sent (vbd_replied).
 */
enum vbd_stage {
	VBD_STAGE_QUEUE,	/* arrival to dispatch: a pause, an RMW, the
				   client's own wait for a buffer */
	VBD_STAGE_IO,		/* dispatch to completion: driver, backing
				   I/O, retries, the wake-up on completion */
	VBD_STAGE_REPLY,	/* completion to the reply sent */
	VBD_STAGE_TOTAL,	/* arrival to the reply sent */
	VBD_STAGES
};

struct vbd_stats {
	uint64_t reads, writes, flushes, discards;
	uint64_t read_bytes, write_bytes;
	uint64_t errors, retries;
	uint64_t interrupted;		/* withdrawn by vbd_cancel() */
	uint64_t read_ns, write_ns;	/* summed completion latency */
	uint64_t max_ns;		/* worst completion latency */
	uint64_t lat[VBD_LAT_OPS][VBD_LAT_BUCKETS];

	/*
	 * Where each request's time went (enum vbd_stage), summed and in
	 * histograms like lat.  The queue and io stages count every
	 * request that reached the image, when it completes (staged); the
	 * reply and total stages those whose client then reported its
	 * reply sent (vbd_replied(): replied).  Over the same requests the
	 * sums add up exactly: queue + io + reply = total.
	 */
	uint64_t staged, replied;
	uint64_t stage_ns[VBD_STAGES];
	uint64_t stage_lat[VBD_STAGES][VBD_LAT_BUCKETS];
};

/* The bucket of a latency of us microseconds. */
unsigned vbd_lat_bucket(uint64_t us);
/*
 * Estimate the latency (µs) under which permille/1000 of the completions
 * of a histogram fell, interpolating within its bucket; 0 if it is
 * empty.  In the last bucket, its lower bound.
 */
uint64_t vbd_lat_quantile(const uint64_t *hist, unsigned permille);

typedef struct td_vbd td_vbd_t;
struct vbd_request;
typedef void (*vbd_cb_t)(struct vbd_request *vreq, int err);

/*
 * A client request.  Storage is owned by the caller (a preallocated pool)
 * from vbd_submit() until cb runs; buf must stay valid that long and be
 * TD_BUF_ALIGN aligned.
 *
 * Read-modify-write: a write with rmw_len != 0 writes rmw_len bytes from
 * rmw_data at byte rmw_off of the sector range [sec, sec + secs); buf is a
 * bounce buffer of secs sectors.  Such a request runs alone on the VBD (it
 * waits for in-flight requests, later ones wait for it) so that partial-
 * sector writes never lose a neighbour's bytes.
 */
struct vbd_request {
	enum td_op	 op;
	char		*buf;
	td_sector_t	 sec;
	uint32_t	 secs;
	vbd_cb_t	 cb;
	void		*cb_data;

	const char	*rmw_data;
	uint32_t	 rmw_off;
	uint32_t	 rmw_len;

	/*
	 * A flush that passes a pause (the .ctl "flush" of a paused VBD):
	 * it changes no data, so it need not wait for resume.
	 */
	bool		 pass_pause;

	/*
	 * Optional.  The VBD failed (its watchdog found a request in the
	 * image past the deadline) while this request was in the image:
	 * answer the client now.  cb still runs if and when the image gives
	 * the request back, and the buffer stays in use until then.
	 */
	void		(*abandon)(struct vbd_request *vreq);

	/* engine-private */
	struct td_list	 link;
	struct td_list	 active;	/* in vbd->active while dispatched */
	bool		 abandoned;
	td_vbd_t	*vbd;
	int		 error;		/* first error of this attempt */
	uint32_t	 units_done;	/* sectors (flush: 1) completed */
	bool		 dispatching;	/* still handing pieces out */
	bool		 rmw_reading;	/* RMW: reading the old sectors */
	unsigned	 retries;
	uint64_t	 arrive_ns;	/* vbd_submit_at */
	uint64_t	 start_ns;	/* first dispatch */
	uint64_t	 done_ns;	/* completion; 0: not (yet) done */
	uint64_t	 deadline_ns;
	struct td_timer	 retry_timer;
};

/*
 * Open a VBD on "driver:path".  The leaf opens read-write unless
 * TD_OPEN_RDONLY; parents always read-only.  Returns 0 and *out, or
 * -errno with the reason (naming the file) in err.
 */
int  vbd_open(struct td_engine *e, const char *spec, td_flag_t flags,
	      const struct vbd_params *params, td_vbd_t **out,
	      char *err, size_t errlen);
/*
 * The same with the leaf's driver given directly (parents without a
 * drivertype use the leaf's driver): for tests and embedders.
 */
int  vbd_open_ops(struct td_engine *e, const struct tap_disk *ops,
		  const char *path, td_flag_t flags,
		  const struct vbd_params *params, td_vbd_t **out,
		  char *err, size_t errlen);
/*
 * Every image a VBD opens is locked (include/tapfs/lock.h): read-write for
 * a writable leaf, read-only for the rest.  An image another VBD of the
 * engine, another process or another host holds in a way that conflicts
 * makes vbd_open() fail with -EBUSY, the holder named in err.
 *
 * A VBD's name, as other VBDs' refusals give it ("g1/a holds ..."):
 * "the VBD of PATH" until set.
 */
#define TD_VBD_NAME_MAX		512
void vbd_set_name(td_vbd_t *vbd, const char *name);

/*
 * Close a drained VBD (state paused or idle). Returns first close error.
 * A failed VBD closes even with requests stuck in its image: it is freed
 * (its images closed, their locks released) when the last one returns.
 */
int  vbd_close(td_vbd_t *vbd);

/*
 * The watchdog.  A request still in the image VBD_WATCHDOG_GRACE_MS after
 * its deadline (deadline_ms after its first dispatch) means the storage
 * stopped answering (a hung NFS server, a dead disk): the VBD fails.
 * Queued and new requests then get -EIO at once, requests in the image are
 * abandoned (see vbd_request.abandon), retries stop, a pause waiting for
 * them gets -EIO.  Other VBDs are not affected.
 */
#define VBD_WATCHDOG_GRACE_MS	1000
bool vbd_failed(const td_vbd_t *vbd);
/* Why the VBD failed, in words naming the image; "" while it has not. */
const char *vbd_fail_reason(const td_vbd_t *vbd);

/*
 * Replace a paused, drained VBD's chain by the one spec opens (same
 * virtual size): live snapshot.  On failure the old chain stays.
 */
int  vbd_reopen(td_vbd_t *vbd, const char *spec, char *err, size_t errlen);

void vbd_submit(td_vbd_t *vbd, struct vbd_request *vreq);
/*
 * vbd_submit() of a request that arrived at arrived_ns (td_now_ns() when
 * the client's request was read): its queue stage starts there rather
 * than at this call.
 */
void vbd_submit_at(td_vbd_t *vbd, struct vbd_request *vreq,
		   uint64_t arrived_ns);
/*
 * The client has sent vreq's reply: account its reply and total stages
 * (enum vbd_stage).  Call from vreq's callback, or later while vreq is
 * untouched and the VBD open; a request that never reached the image
 * (refused, withdrawn) is ignored.
 */
void vbd_replied(td_vbd_t *vbd, struct vbd_request *vreq);
/*
 * Withdraw a request that has not been handed to a driver yet (it waits
 * on a paused VBD, or behind a read-modify-write): its callback runs now
 * with -EINTR and 0 is returned.  A request already dispatched is not
 * touched (its buffer is in use) and completes normally: -EBUSY.
 */
int  vbd_cancel(td_vbd_t *vbd, struct vbd_request *vreq);

/*
 * Pause: new requests wait; cb(arg, 0) runs once nothing is in flight:
 * at once if idle, else from the loop after the last completion (never
 * inside a driver's completion, so cb may close or reopen the images).
 * Only one pause waiter at a time: -EBUSY otherwise.
 */
typedef void (*vbd_notify_cb_t)(td_vbd_t *vbd, void *arg, int err);
int  vbd_pause(td_vbd_t *vbd, vbd_notify_cb_t cb, void *arg);
/*
 * Resume a paused or pausing VBD and dispatch what waited.  During a
 * vbd_release(), which pauses the VBD itself, it takes effect when the
 * release is done.
 */
void vbd_resume(td_vbd_t *vbd);

/*
 * Handing a VBD over to another host (docs/locking.md).  A VBD opened
 * with TD_OPEN_STANDBY holds its images for reading only, with a lock
 * that lets one writer in; requests wait (as when paused) until the VBD
 * takes the image over: at the first write, or at vbd_activate().  The
 * writer it takes over from gives the image up with vbd_release(), and
 * refuses writes (-EROFS) from then on while reads go on.
 */
enum vbd_hold {
	VBD_HOLD_ACTIVE,	/* the writer (or a read-only VBD) */
	VBD_HOLD_STANDBY,	/* waits to take the image over */
	VBD_HOLD_RELEASED,	/* gave it up: reads only */
};
enum vbd_hold vbd_hold(const td_vbd_t *vbd);
/*
 * Take the image over: open the leaf read-write (its lock, or the
 * driver's own, as vbd_open does) and switch to it, re-reading what the
 * old holder changed.  While someone else holds the image the attempt is
 * repeated (retry_delay_ms, doubling to VBD_TAKEOVER_MAX_DELAY_MS) until
 * deadline_ms: then the waiting requests get -EIO, cb gets -ETIMEDOUT,
 * the VBD stays as it was and vbd_takeover_error() says why.  cb (may
 * be NULL) runs from the loop once active, or with the error.  A VBD
 * active already: cb(0) at once.  -EBUSY while a take-over with a
 * callback runs, -EROFS for a read-only VBD.
 */
#define VBD_TAKEOVER_MAX_DELAY_MS	1000
int  vbd_activate(td_vbd_t *vbd, vbd_notify_cb_t cb, void *arg);
/*
 * Give the image up: new requests wait, those in flight drain, a flush,
 * then the leaf reopens read-only with a standby lock (the read-write
 * one closed, its lock released) and the VBD resumes unless it was
 * paused.  cb(vbd, arg, 0) from the loop when done, or with -errno (the
 * VBD stays the writer; why in err of vbd_takeover_error()).  -EROFS for
 * a read-only VBD, -EINVAL in standby, -EBUSY while a pause runs.
 */
int  vbd_release(td_vbd_t *vbd, vbd_notify_cb_t cb, void *arg);
/* The last take-over's or release's failure, in words; "" if none. */
const char *vbd_takeover_error(const td_vbd_t *vbd);

enum vbd_state vbd_state(const td_vbd_t *vbd);
unsigned vbd_inflight(const td_vbd_t *vbd);	/* dispatched, not done */
unsigned vbd_queued(const td_vbd_t *vbd);	/* waiting for dispatch */
uint64_t vbd_size(const td_vbd_t *vbd);		/* bytes */
/*
 * Bytes that reads' and writes' sec and secs must be multiples of (the
 * largest io_align of the chain; TD_SECTOR_SIZE usually); others fail
 * with -EINVAL.  A VBD's size is a multiple of it (vbd_open refuses
 * others).
 */
uint32_t vbd_io_align(const td_vbd_t *vbd);
bool     vbd_readonly(const td_vbd_t *vbd);
const struct vbd_stats *vbd_get_stats(const td_vbd_t *vbd);
/* Zero the counters and histograms (not the gauges: inflight, queued). */
void vbd_reset_stats(td_vbd_t *vbd);

/* Chain walk: leaf is depth 0. NULL past the base. */
td_driver_t *vbd_image(const td_vbd_t *vbd, unsigned depth);
/*
 * How many chains hold the image at depth: a read-only parent that
 * several VBDs stand on is opened once and shared (1: this chain only).
 */
unsigned vbd_image_users(const td_vbd_t *vbd, unsigned depth);
unsigned vbd_chain_length(const td_vbd_t *vbd);

#endif
