/* SPDX-License-Identifier: MIT */
/*
 * The FUSE edge, private to its three files:
 *
 *   fuse-session.c    the session: INIT, the operations table, the loop
 *                     glue that reads /dev/fuse, signals, mount/unmount;
 *   fuse-namespace.c  the mount tree: lookup, getattr, readdir, mkdir...,
 *                     open/release, and the text of .ctl and .stats;
 *   fuse-data.c       the data path of a VBD file: a FUSE READ, WRITE,
 *                     FSYNC or FALLOCATE becomes a vbd_request, and its
 *                     completion the reply.  Owns the buffer pools.
 *
 * The session calls the other two, the namespace calls the data path,
 * and neither calls back.  Only these three and main.c include
 * fuse_lowlevel.h.  Everything runs on the engine's loop thread; every
 * FUSE request gets exactly one reply.
 */
#ifndef TAPFS_FUSE_EDGE_H
#define TAPFS_FUSE_EDGE_H

#define FUSE_USE_VERSION 34

#include <stdbool.h>
#include <stddef.h>

#include <fuse_lowlevel.h>

#include <tapfs/engine.h>

#include "tapfs.h"

/* The largest read or write the kernel sends (max_write at INIT). */
#define FUSE_MAX_IO		(1u << 20)

/*
 * One mount's FUSE state.  Fields are grouped by the file that owns them;
 * the others only read them (the loop thread is the only thread).
 */
struct fuse_state {
	/* fuse-session.c */
	struct tapfs		*fs;
	struct fuse_session	*se;
	struct td_event		 ev;		/* /dev/fuse */
	struct td_event		 sigev;
	int			 sigfd;
	bool			 throttled;	/* ev is not polled */
	struct td_hook		 unthrottle;	/* before each loop sleep */
	bool			 mounted;

	/* fuse-data.c */
	size_t			 recv_size;
	struct td_pool		 ctx_pool;
	struct td_pool		 small_pool;
	struct td_pool		 large_pool;
	struct td_pool		 recv_pool;
	char			*cur;		/* receive buffer in use */
	struct td_list		 waiting;	/* io_ctx without a buffer */

	/*
	 * fuse-namespace.c: open .ctl/.stats handles.  No RELEASE comes for
	 * those still open when the daemon stops (SIGTERM): they are freed
	 * at unmount.
	 */
	struct td_list		 ctl_handles;
};

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

/* Allocate (at mount) or free the pools; 0 or -errno. */
int  data_init(struct fuse_state *st);
void data_fini(struct fuse_state *st);
/*
 * Point fbuf at the receive buffer for the next request, or return false
 * when the data path cannot take one now (no free context, requests
 * waiting for buffers, no receive buffer): the session then stops reading
 * /dev/fuse, and asks again before each loop sleep.
 */
bool data_recv_buffer(struct fuse_state *st, struct fuse_buf *fbuf);

/* fi->fh is the tapfs_vbd; each replies exactly once, now or later. */
void data_read(fuse_req_t req, size_t size, off_t off,
	       struct fuse_file_info *fi);
void data_write(fuse_req_t req, const char *buf, size_t size, off_t off,
		struct fuse_file_info *fi);
void data_fsync(fuse_req_t req, struct fuse_file_info *fi);
/* Only FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: a discard. */
void data_fallocate(fuse_req_t req, int mode, off_t off, off_t length,
		    struct fuse_file_info *fi);

#endif
