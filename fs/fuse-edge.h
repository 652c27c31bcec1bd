/* SPDX-License-Identifier: MIT */
/*
 * The FUSE edge, private to its five files:
 *
 *   fuse-session.c    the session: INIT, the operations table, signals,
 *                     mount/unmount;
 *   fuse-namespace.c  the mount tree: lookup, getattr, readdir, mkdir...,
 *                     open/release, and the text of .ctl and .stats;
 *   fuse-data.c       the data path of a VBD file: a FUSE READ, WRITE,
 *                     FSYNC or FALLOCATE becomes a vbd_request, and its
 *                     completion the reply.  Owns the buffer pools.
 *   fuse-workers.c    the receive loop that reads /dev/fuse; with -o
 *                     workers=N one per loop, each on a /dev/fuse clone,
 *                     requests routed to the loop owning their VBD,
 *                     replies to the clone they came from.
 *   fuse-uring.c      -o uring: requests and replies through io_uring
 *                     ring entries instead of read()/writev().
 *
 * The session sets up the receive loops (and the ring); they hand each
 * request to libfuse, which calls the namespace, which calls the data
 * path; the data path calls back only to borrow and give back buffers
 * (a ring entry's, another loop's).  Only these files and main.c include
 * fuse_lowlevel.h.  Everything runs on the engine's loop thread; every
 * FUSE request gets exactly one reply.  With -o workers=N, fuse-workers.c
 * reads /dev/fuse on every loop and hands each request to the loop that
 * owns it (fs/workers.h).
 */
#ifndef TAPFS_FUSE_EDGE_H
#define TAPFS_FUSE_EDGE_H

#define FUSE_USE_VERSION 34

#include <stdbool.h>
#include <stddef.h>

#include <fuse_lowlevel.h>
#include <linux/fuse.h>

#include <tapfs/engine.h>

#include "intr-memo.h"
#include "tapfs.h"

/* The largest read or write the kernel sends (max_write at INIT). */
#define FUSE_MAX_IO		(1u << 20)

/*
 * The data path's state of one event loop (fuse-data.c): its pools and
 * the requests waiting for a buffer.  One per loop; only that loop's
 * thread touches it (a receive buffer from another loop's pool goes back
 * to it through fuse-workers.c).
 */
struct data_loop {
	struct fuse_state	*st;
	size_t			 recv_size;
	struct td_pool		 ctx_pool;
	struct td_pool		 small_pool;
	struct td_pool		 large_pool;
	struct td_pool		 recv_pool;
	char			*cur;		/* receive buffer in use */
	struct td_list		 waiting;	/* io_ctx without a buffer */
	struct intr_memo	 early;		/* INTERRUPTs before their
						 * request (intr-memo.h) */
};

/*
 * One mount's FUSE state.  Fields are grouped by the file that owns them;
 * the others only read them (loop 0, the main thread, is the only thread
 * that touches them; with -o workers=N each loop has its data_loop).
 */
struct fuse_uring;

struct fuse_state {
	/* fuse-session.c */
	struct tapfs		*fs;
	struct fuse_session	*se;
	struct td_event		 sigev;
	int			 sigfd;
	bool			 mounted;

	/* fuse-data.c: loop 0's */
	struct data_loop	 data;

	/* fuse-workers.c: the receive loops (one without -o workers) */
	struct fuse_mq		*mq;

	/* fuse-uring.c: NULL without -o uring */
	struct fuse_uring	*uring;

	/*
	 * fuse-namespace.c: open .ctl/.stats handles.  No RELEASE comes for
	 * those still open when the daemon stops (SIGTERM): they are freed
	 * at unmount.
	 */
	struct td_list		 ctl_handles;
};

/*
 * A VBD file's FUSE handle (fh) is its tapfs_vbd with bit 0 set; a
 * control file's is its ctl_handle (malloc'd, so bit 0 clear).  A
 * request's VBD, and so the loop that owns it, is known from its fh
 * alone (fuse-workers.c routes on it before libfuse parses the request).
 */
#define FH_VBD			1u

static inline uint64_t vbd_fh(struct tapfs_vbd *tv)
{
	return (uint64_t)(uintptr_t)tv | FH_VBD;
}

static inline struct tapfs_vbd *fh_vbd(uint64_t fh)
{
	return fh & FH_VBD ?
	       (struct tapfs_vbd *)(uintptr_t)(fh & ~(uint64_t)FH_VBD) : NULL;
}

/*
 * The /dev/fuse descriptor this thread's next reply goes to (-1: the
 * session's).  With -o workers=N a reply must go to the clone the
 * request was read from: the reader sets it before libfuse processes a
 * request, and a reply sent later (a completion) sets it from what the
 * request recorded (fuse-workers.c's writev uses it).
 */
extern __thread int fuse_reply_fd;
/* The kernel's id of the request being processed (for INTERRUPT). */
extern __thread uint64_t fuse_recv_unique;
/* The data path's state of the loop this thread runs; NULL: loop 0's. */
extern __thread struct data_loop *data_loop_here;

static inline struct tapfs *fuse_req_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* ---- fuse-namespace.c: the operations on the mount tree ------------- */

void ns_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void ns_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void ns_forget_multi(fuse_req_t req, size_t count,
		     struct fuse_forget_data *forgets);
void ns_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ns_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		int to_set, struct fuse_file_info *fi);
void ns_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		struct fuse_file_info *fi);
void ns_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
	      mode_t mode);
void ns_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void ns_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void ns_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
	      mode_t mode, dev_t rdev);
void ns_create(fuse_req_t req, fuse_ino_t parent, const char *name,
	       mode_t mode, struct fuse_file_info *fi);
void ns_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
	       fuse_ino_t newparent, const char *newname, unsigned int flags);
void ns_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
	     const char *newname);
void ns_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		const char *name);
void ns_statfs(fuse_req_t req, fuse_ino_t ino);
void ns_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ns_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
/*
 * File I/O: a VBD file's goes to the data path (data_*), a control
 * file's is answered here.
 */
void ns_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	     struct fuse_file_info *fi);
void ns_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
	      off_t off, struct fuse_file_info *fi);
void ns_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void ns_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
	      struct fuse_file_info *fi);
void ns_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
		  off_t length, struct fuse_file_info *fi);

/* Free the .ctl/.stats handles still open (at unmount). */
void ns_free_ctl_handles(struct fuse_state *st);

/* ---- fuse-data.c: the data path of a VBD file ----------------------- */

/* Allocate (at mount) or free one loop's pools; 0 or -errno. */
int  data_init(struct fuse_state *st, struct data_loop *dl);
void data_fini(struct data_loop *dl);
/*
 * Point fbuf at the receive buffer for the next request, or return false
 * when the data path cannot take one now (no free context, requests
 * waiting for buffers, no receive buffer): the session then stops reading
 * /dev/fuse, and asks again before each loop sleep.
 */
bool data_recv_buffer(struct data_loop *dl, struct fuse_buf *fbuf);
/* Whether the data path can take a request now (a context, no waiters). */
bool data_has_room(const struct data_loop *dl);
/*
 * Where a receive buffer's fuse_buf.mem points (data_recv_buffer): the
 * bytes before it are free for fuse-workers.c's hand-off header.
 */
#define DATA_RECV_HEADROOM	(4096 - sizeof(struct fuse_in_header) - \
				 sizeof(struct fuse_write_in))
/* Give a receive buffer back: to dl's pool, or to the loop it is from. */
void data_put_recv(struct data_loop *dl, char *buf);
/*
 * A FUSE INTERRUPT (the receive loop keeps them from libfuse: with -o
 * workers=N the request may be on any loop): interrupt dl's request with
 * that unique (fuse_recv_unique at its receipt), if dl has it; if not,
 * remember the unique for a while: the request may come after it.
 */
void data_interrupt(struct data_loop *dl, uint64_t unique);
/*
 * After the loop whose data path is dl processed a request: if an
 * INTERRUPT for it came first, it acts now (as if it came just after).
 */
void data_received(struct data_loop *dl, uint64_t unique);
/* The data path of this thread's loop (loop 0's before any request). */
struct data_loop *data_here(struct fuse_state *st);

/* fi->fh is the VBD's (vbd_fh); each replies exactly once, now or later. */
void data_read(fuse_req_t req, size_t size, off_t off,
	       struct fuse_file_info *fi);
void data_write(fuse_req_t req, const char *buf, size_t size, off_t off,
		struct fuse_file_info *fi);
void data_fsync(fuse_req_t req, struct fuse_file_info *fi);
/* Only FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: a discard. */
void data_fallocate(fuse_req_t req, int mode, off_t off, off_t length,
		    struct fuse_file_info *fi);

/* ---- fuse-workers.c: the receive loops ---------------------------------- */

/*
 * After fuse_session_mount: watch /dev/fuse from every loop (with -o
 * workers=N, loops past 0 on a clone each); 0 or -errno.
 */
int  fuse_workers_mount(struct fuse_state *st, char *err, size_t errlen);
/* Start the other loops, run loop 0 until the end, stop them. */
int  fuse_workers_run(struct fuse_state *st);
void fuse_workers_unmount(struct fuse_state *st);
/* Send a receive buffer of another loop's pool back to that loop. */
void fuse_workers_return_recv(struct fuse_state *st, char *buf);

/* ---- fuse-uring.c: -o uring (fs->opts.uring) ------------------------ */

/*
 * After fuse_session_mount, before the session reads /dev/fuse: the
 * ring, its fd in the loop, libfuse's replies through it; the entries
 * are registered when the INIT reply has gone.  0 or -errno (and
 * nothing left behind).
 */
int  fuse_uring_mount(struct fuse_state *st, char *err, size_t errlen);
void fuse_uring_unmount(struct fuse_state *st);
/*
 * While a ring request is being dispatched: keep its entry's payload as
 * its I/O buffer.  For a READ (*buf NULL): the payload, need bytes at
 * most, in *buf.  For a WRITE (*buf its data): only if the data is the
 * entry's payload; *buf is then where the I/O is to take it from.
 * Returns a token for fuse_uring_give_back, or NULL (no ring, too big,
 * not the entry's).  The reply may point into the buffer; the entry
 * takes no new request until the token is given back.
 */
void *fuse_uring_lend(struct fuse_state *st, size_t need, char **buf);
/*
 * The request is about to be answered while its I/O still runs in the
 * lent buffer (its VBD failed): let the answer go now, the buffer staying
 * the I/O's until it is given back.  The token stays valid.
 */
void fuse_uring_abandon(struct fuse_state *st, void *token);
void fuse_uring_give_back(struct fuse_state *st, void *token);

#endif
