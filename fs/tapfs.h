/* SPDX-License-Identifier: MIT */
/*
 * The tapfs namespace: groups (directories) holding VBDs (files) plus the
 * .ctl and .stats control files, the store that keeps them across mounts,
 * and the daemon object that ties them to the engine.
 *
 * Single-threaded: everything here runs on the engine's loop thread (with
 * -o workers=N, on loop 0 while the other loops are parked: fs/workers.h).
 */
#ifndef TAPFS_FS_H
#define TAPFS_FS_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <tapfs/engine.h>

#include "ctl.h"
#include "path-policy.h"

#define TAPFS_ROOT_INO		1
#define TAPFS_DEFAULT_STORE	"/var/lib/tapfs"
#define TAPFS_SPEC_MAX		(CTL_PATH_MAX + 64)
#define TAPFS_STATUS_MAX	512
/* Most -o allow_path directories. */
#define TAPFS_ALLOW_MAX		64
/* Most drivers' settings (-o ceph_conf=...) handed to the engine. */
#define TAPFS_DRIVER_OPTS_MAX	8

enum tapfs_kind {
	TAPFS_ROOT,
	TAPFS_GROUP,
	TAPFS_CTL,
	TAPFS_STATS,
	TAPFS_VBD,
};

/*
 * An inode.  Numbers are never reused; a removed node stays (dead) until
 * the kernel forgets it.
 */
struct tapfs_node {
	enum tapfs_kind	 kind;
	uint64_t	 ino;
	uint64_t	 nlookup;	/* kernel references */
	bool		 dead;
	time_t		 ctime;
	void		*obj;		/* group or tapfs_vbd; NULL for root */
};

struct tapfs_group;

struct tapfs_vbd {
	struct td_list		 link;		/* in group->vbds */
	struct tapfs_group	*group;
	struct tapfs_node	*node;
	char			 name[CTL_NAME_MAX + 1];
	char			 format[32];	/* what the user said: raw... */
	char			 spec[TAPFS_SPEC_MAX];	/* driver:path */
	bool			 readonly;
	/* Opened (or listed) in standby: waits to take its image over. */
	bool			 standby;
	bool			 persistent;	/* recorded in the manifest */
	td_vbd_t		*vbd;		/* NULL: failed to open */
	char			 error[256];	/* why vbd is NULL */
	unsigned		 open_count;	/* FUSE file handles */
	/* The loop that owns vbd (fs/workers.h); fixed at open. */
	unsigned		 owner;
};

struct tapfs_group {
	struct td_list		 link;		/* in tapfs->groups */
	struct tapfs_node	*node, *ctl, *stats;
	char			 name[CTL_NAME_MAX + 1];
	struct td_list		 vbds;
	char			 status[TAPFS_STATUS_MAX];	/* last .ctl */
	unsigned		 busy;		/* async commands running */
};

struct tapfs_opts {
	const char	*mountpoint;
	const char	*store;
	const char	*pidfile;
	bool		 foreground;
	bool		 debug;
	bool		 allow_other;
	unsigned	 max_background;
	unsigned	 workers;	/* event loops, 1: no threads */
	bool		 uring;		/* FUSE over io_uring (fuse-uring.c) */
	struct vbd_params params;
	/* Where images may be, besides the store (-o allow_path). */
	const char	*allow_path[TAPFS_ALLOW_MAX];
	unsigned	 nallow_path;
	/* Drivers' settings (rbd: ceph_conf, ceph_id, ceph_pool). */
	struct {
		const char *name, *value;
	}		 driver_opts[TAPFS_DRIVER_OPTS_MAX];
	unsigned	 ndriver_opts;
};

struct tapfs {
	struct tapfs_opts	 opts;
	char			*mountpoint;	/* canonical */
	char			*store;		/* canonical */
	struct path_policy	 paths;		/* images may be opened here */
	int			 lock_fd;
	struct td_engine	*engine;
	struct td_list		 groups;
	struct tapfs_node	*root;

	struct tapfs_node	**nodes;	/* by ino; NULL once freed */
	uint64_t		 nnodes;	/* next ino */
	uint64_t		 nodes_cap;

	time_t			 start_time;
	uid_t			 uid;
	gid_t			 gid;
	struct fuse_state	*fuse;		/* fs/fuse-edge.h */
	struct tapfs_workers	*workers;	/* NULL: one loop */
};

/* ---- fs/tree.c: nodes, groups, VBDs, the store ------------------------ */

struct tapfs *tapfs_new(const struct tapfs_opts *opts, char *err,
			size_t errlen);
void tapfs_free(struct tapfs *fs);

struct tapfs_node *tapfs_node_get(struct tapfs *fs, uint64_t ino);
void tapfs_node_forget(struct tapfs *fs, struct tapfs_node *n, uint64_t nl);

struct tapfs_group *tapfs_group_find(struct tapfs *fs, const char *name);
int  tapfs_group_add(struct tapfs *fs, const char *name,
		     struct tapfs_group **out, char *err, size_t errlen);
int  tapfs_group_remove(struct tapfs *fs, struct tapfs_group *g,
			char *err, size_t errlen);
unsigned tapfs_group_count(const struct tapfs *fs);

struct tapfs_vbd *tapfs_vbd_find(struct tapfs_group *g, const char *name);
/*
 * The open VBDs (a chain, not a broken manifest line) each loop owns,
 * into owned[0..workers_count-1]; returns them all.  Loop 0, or the
 * other loops parked.
 */
unsigned tapfs_vbds_per_loop(const struct tapfs *fs, unsigned *owned);
/*
 * Open spec as VBD name in g (not yet in the manifest).  flags: more
 * open flags: TD_OPEN_STANDBY (waiting to take the image over from
 * another host, vbd_activate; recorded), TD_OPEN_STEAL (this open only,
 * never recorded).
 */
int  tapfs_vbd_add(struct tapfs *fs, struct tapfs_group *g, const char *name,
		   const char *format, const char *spec, bool readonly,
		   td_flag_t flags, bool persistent, struct tapfs_vbd **out,
		   char *err, size_t errlen);
/* Close and forget a VBD (must have no open handles and no I/O). */
int  tapfs_vbd_remove(struct tapfs *fs, struct tapfs_vbd *tv);

/* Load the manifest (opening every VBD), or save it atomically. */
int  tapfs_store_load(struct tapfs *fs, char *err, size_t errlen);
int  tapfs_store_save(struct tapfs *fs, char *err, size_t errlen);
/* Close every VBD (flushing) at unmount; returns the first error. */
int  tapfs_close_all(struct tapfs *fs);

/* Lexically normalise path (absolute); false if it lies in the mount. */
bool tapfs_path_outside_mount(const struct tapfs *fs, const char *path);

/* ---- fs/control.c: .ctl commands and the text of .ctl/.stats --------- */

typedef void (*control_done_cb_t)(void *arg, int err);

/*
 * Run one .ctl command written to group g.  Returns 0 or -errno when done
 * at once, or -EINPROGRESS when done(arg, err) will be called later.  The
 * group's status line says what happened either way.
 */
int control_exec(struct tapfs *fs, struct tapfs_group *g, const char *buf,
		 size_t len, control_done_cb_t done, void *arg);

/* Render .ctl or .stats into a malloc'd string. */
char *control_render_ctl(struct tapfs *fs, struct tapfs_group *g,
			 size_t *len);
char *control_render_stats(struct tapfs *fs, struct tapfs_group *g,
			   size_t *len);

/* ---- fs/fuse-session.c: the FUSE edge -------------------------------- */

/* -o uring: 0 if this kernel takes FUSE over io_uring, else -EOPNOTSUPP
 * and why in err (fs/fuse-uring.c). */
int  fuse_uring_check(char *err, size_t errlen);
/* Create the session and mount; 0 or -errno with the reason in err. */
int  tapfs_fuse_mount(struct tapfs *fs, char *err, size_t errlen);
/* Run the loop until unmounted or asked to stop. */
int  tapfs_fuse_run(struct tapfs *fs);
void tapfs_fuse_request_exit(struct tapfs *fs);
/* Unmount (if still mounted) and destroy the session. */
void tapfs_fuse_unmount(struct tapfs *fs);

#endif
