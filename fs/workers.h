/* SPDX-License-Identifier: MIT */
/*
 * Multi-queue workers (-o workers=N): N event loops, one per thread, each
 * with its own engine (epoll loop, aio context, shared parents; the lock
 * table is one for all, td_engine_join).  Loop 0 is the main thread; it
 * owns the namespace (fs/tree.c), the control plane (fs/control.c) and
 * the FUSE session.  Every VBD is owned by exactly one loop, chosen when
 * it is opened (the one owning the fewest, workers_pick), and only that
 * loop's thread touches its state, with one exception:
 *
 *   the control plane.  Loop 0 runs .ctl commands, renders .stats and
 *   opens and closes VBDs with every other loop parked (workers_quiesce):
 *   a parked worker sits in its queue handler, between two events, until
 *   released, so loop 0 may touch any engine and any VBD meanwhile.
 *   What such a call starts (a pause that drains, a flush) completes on
 *   the VBD's owner, which hands the rest back to loop 0 with
 *   workers_call_main().
 *
 * Loops talk through one lock-free multi-producer, single-consumer queue
 * each (struct workers_msg, intrusive: the message lives in what it
 * carries) and an eventfd that is written only when a queue goes from
 * empty to not empty.
 *
 * With workers=1 (the default) none of this exists: fs->workers is NULL
 * and every function here is a no-op or runs its argument at once.
 * No libfuse here: the FUSE side is fs/fuse-workers.c.
 */
#ifndef TAPFS_WORKERS_H
#define TAPFS_WORKERS_H

#include <stdbool.h>
#include <stddef.h>

#include <tapfs/engine.h>

struct tapfs;

/* Most loops (-o workers=N): threads beyond the CPUs only cost. */
#define WORKERS_MAX		64

/* A message to a loop; storage owned by the sender until fn runs. */
struct workers_msg {
	struct workers_msg	*next;
	/* Runs on the receiving loop's thread. */
	void			(*fn)(struct workers_msg *m);
};

/*
 * Make the engines of loops 1..n-1 (fs->engine is loop 0's) with
 * new_engine(fs) (path policy and drivers' options set); the threads
 * start with workers_start().  n == 1: nothing, fs->workers stays NULL.
 */
int  workers_new(struct tapfs *fs, unsigned n,
		 struct td_engine *(*new_engine)(struct tapfs *fs),
		 char *err, size_t errlen);
/* After the threads are joined (workers_stop): free the engines. */
void workers_free(struct tapfs *fs);

unsigned workers_count(const struct tapfs *fs);	/* 1 without workers */
struct td_engine *workers_engine(struct tapfs *fs, unsigned loop);
/* The engine a new VBD is opened on, and its owner loop in *owner. */
struct td_engine *workers_pick(struct tapfs *fs, unsigned *owner);

/* The loop this thread runs (0: the main thread). */
unsigned workers_self(void);

/* Start loops 1..n-1, each running its engine's loop; 0 or -errno. */
int  workers_start(struct tapfs *fs);
/* Stop and join them (from loop 0); what they own stays, unrun. */
void workers_stop(struct tapfs *fs);
/*
 * After workers_stop: run loop k once on this thread as if it were k's
 * (the final drain at unmount).
 */
int  workers_run_once(struct tapfs *fs, unsigned loop, int timeout_ms);

/*
 * After workers_stop: run what was posted to the loops until no queue
 * holds anything (a call to loop 0, a buffer going home).
 */
void workers_flush(struct tapfs *fs);

/* Hand m to loop's thread (any thread may call; never blocks). */
void workers_post(struct tapfs *fs, unsigned loop, struct workers_msg *m);

/*
 * From loop 0: park every other loop (nested calls count), and let them
 * go again.  No-ops without workers.
 */
void workers_quiesce(struct tapfs *fs);
void workers_release(struct tapfs *fs);

/*
 * Run fn(obj, arg, err) on loop 0 with the other loops parked: at once
 * when called on loop 0 (or without workers: at once, nothing parked),
 * else later, from loop 0's queue.  For the engine's callbacks to the
 * control plane, which come on the VBD's owner loop.
 *
 * The caller gives the storage the call travels in (c, used only when it
 * is posted, until fn has run): it was set aside when the command
 * started, so a callback can never fail, nor wait for memory.
 */
typedef void (*workers_main_fn)(void *obj, void *arg, int err);

struct workers_call {
	struct workers_msg	 msg;
	struct tapfs		*fs;
	workers_main_fn		 fn;
	void			*obj, *arg;
	int			 err;
};

void workers_on_main(struct tapfs *fs, struct workers_call *c,
		     workers_main_fn fn, void *obj, void *arg, int err);

/* A worker thread ends its loop and tells loop 0 (/dev/fuse is gone). */
void workers_stop_all(struct tapfs *fs);

#endif
