/* SPDX-License-Identifier: MIT */
/*
 * .ctl commands turned into engine calls, and the text of .ctl and
 * .stats.  Parsing lives in ctl.c; the FUSE edge in fuse-*.c.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tapfs/lock.h>
#include <tapfs/log.h>

#include "tapfs.h"
#include "workers.h"

/* One VBD of a snapshot command. */
struct snap_target {
	struct tapfs_vbd	*tv;
	bool			 was_paused;
	bool			 done;		/* switched to the child */
	bool			 remote;	/* a snapshot in place (rbd) */
	char			 child[CTL_PATH_MAX];	/* or the snapshot */
	char			 old_spec[TAPFS_SPEC_MAX];
	char			 old_format[32];
};

struct control_op;

/*
 * What one VBD's part of a command needs until it calls back: set aside
 * when the command starts, so that the callback, on the VBD's owner loop,
 * reaches loop 0 without allocating (fs/workers.h).
 */
struct control_slot {
	struct control_op	*op;
	struct vbd_request	 req;		/* flush */
	struct workers_call	 call;
};

/* An asynchronous command: pause, flush, snapshot, release or resume. */
struct control_op {
	struct tapfs		*fs;
	struct tapfs_group	*g;
	enum ctl_verb		 verb;
	control_done_cb_t	 done;
	void			*arg;
	unsigned		 pending;	/* VBDs not yet done, +1 bias */
	int			 err;
	char			 what[TAPFS_STATUS_MAX / 2];
	/* Runs once every VBD is paused (snapshot), before finishing. */
	void			(*then)(struct control_op *op);
	struct snap_target	*targets;
	unsigned		 ntargets;
	/* One per VBD the command waits for (control_slot). */
	unsigned		 nslots, nused;
	struct control_slot	 slots[];
};

static const char *errname(int err)
{
	const char *n = strerrorname_np(err);

	return n ? n : "EIO";
}

/* Record the outcome of a command in the group's status line. */
static int control_status(struct tapfs_group *g, int err, const char *fmt,
			  ...) __attribute__((format(printf, 3, 4)));

static int control_status(struct tapfs_group *g, int err, const char *fmt,
			  ...)
{
	char msg[TAPFS_STATUS_MAX - 32];
	va_list ap;

	if (!err) {
		snprintf(g->status, sizeof(g->status), "ok");
		return 0;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(g->status, sizeof(g->status), "error: %s: %s",
		 errname(-err), msg);
	td_log(TD_LOG_INFO, "%s/.ctl: %s", g->name, g->status);
	return err;
}

/* The VBDs a command names: one, or (name "") every open one. */
static int control_targets(struct tapfs_group *g, const char *name,
			   struct tapfs_vbd **one)
{
	struct tapfs_vbd *tv;

	*one = NULL;
	if (!name[0])
		return 0;
	tv = tapfs_vbd_find(g, name);
	if (!tv)
		return control_status(g, -ENOENT, "no VBD '%s' in group '%s'",
				      name, g->name);
	if (!tv->vbd)
		return control_status(g, -EIO, "VBD '%s' failed to open: %s",
				      name, tv->error);
	if (vbd_failed(tv->vbd))
		return control_status(g, -EIO, "VBD '%s' failed: %s (close "
				      "it)", name, vbd_fail_reason(tv->vbd));
	*one = tv;
	return 0;
}

/* The VBDs a command without a name (or with one) acts on: live ones. */
#define for_each_target(g, one, tv, pos)				\
	for (pos = (g)->vbds.next; pos != &(g)->vbds; pos = pos->next)	\
		if ((tv = td_container_of(pos, struct tapfs_vbd, link)),	\
		    tv->vbd && !vbd_failed(tv->vbd) &&			\
		    (!(one) || tv == (one)))

static int control_op_finish(struct control_op *op)
{
	struct tapfs_group *g = op->g;
	int err = op->err;

	if (op->then)
		op->then(op);
	err = op->err;
	g->busy--;
	if (err)
		control_status(g, err, "%s", op->what);
	else
		control_status(g, 0, NULL);
	free(op->targets);
	free(op);
	return err;
}

/* One VBD of an async command is done. */
static void control_op_put(struct control_op *op, int err, const char *who)
{
	if (err && !op->err) {
		op->err = err;
		snprintf(op->what, sizeof(op->what), "%s %s: %s",
			 ctl_verb_name(op->verb), who,
			 err == -ECANCELED ? "resumed before it was paused" :
			 strerror(-err));
	}
	if (--op->pending)
		return;
	{
		control_done_cb_t done = op->done;
		void *arg = op->arg;

		err = control_op_finish(op);
		done(arg, err);
	}
}

/*
 * The engine calls back on the VBD's owner loop; the command goes on on
 * loop 0 with the other loops parked (fs/workers.h).
 */
static void control_put_main(void *vbd, void *arg, int err)
{
	(void)vbd;
	control_op_put(arg, err, "VBD");
}

static void control_paused(td_vbd_t *vbd, void *arg, int err)
{
	struct control_slot *s = arg;

	workers_on_main(s->op->fs, &s->call, control_put_main, vbd, s->op,
			err);
}

static void control_flushed(struct vbd_request *vreq, int err)
{
	struct control_slot *s = vreq->cb_data;

	/* No reply of its own: its stages end here (op frees vreq). */
	vbd_replied(vreq->vbd, vreq);
	workers_on_main(s->op->fs, &s->call, control_put_main, vreq->vbd,
			s->op, err);
}

/* How many VBDs a command acts on: the slots it sets aside. */
static unsigned control_count(struct tapfs_group *g,
			      struct tapfs_vbd *one)
{
	struct tapfs_vbd *tv;
	struct td_list *pos;
	unsigned n = 0;

	for_each_target(g, one, tv, pos)
		n++;
	return n;
}

/* nslots: at most how many VBDs the command waits for. */
static struct control_op *control_op_new(struct tapfs *fs,
					 struct tapfs_group *g,
					 enum ctl_verb verb, unsigned nslots,
					 control_done_cb_t done, void *arg)
{
	struct control_op *op = calloc(1, sizeof(*op) +
				       nslots * sizeof(op->slots[0]));

	if (!op)
		return NULL;
	op->fs = fs;
	op->g = g;
	op->verb = verb;
	op->done = done;
	op->arg = arg;
	op->pending = 1;	/* dropped once every VBD was started */
	op->nslots = nslots;
	g->busy++;
	return op;
}

/* One more VBD to wait for: its slot, the callback's argument. */
static struct control_slot *control_op_wait(struct control_op *op)
{
	struct control_slot *s = &op->slots[op->nused++];

	/* Counted on loop 0 with every other loop parked: cannot grow. */
	assert(op->nused <= op->nslots);
	s->op = op;
	op->pending++;
	return s;
}

/* Drop the bias: finished at once, or still running. */
static int control_op_started(struct control_op *op)
{
	if (--op->pending)
		return -EINPROGRESS;
	return control_op_finish(op);
}

static int control_pause(struct tapfs *fs, struct tapfs_group *g,
			 struct tapfs_vbd *one, control_done_cb_t done,
			 void *arg)
{
	struct control_op *op;
	struct tapfs_vbd *tv;
	struct td_list *pos;

	for_each_target(g, one, tv, pos)
		if (vbd_state(tv->vbd) == VBD_PAUSING)
			return control_status(g, -EBUSY, "a pause of '%s' is "
					      "already in progress", tv->name);
	op = control_op_new(fs, g, CTL_PAUSE, control_count(g, one), done,
			    arg);
	if (!op)
		return control_status(g, -ENOMEM, "out of memory");
	for_each_target(g, one, tv, pos)
		vbd_pause(tv->vbd, control_paused, control_op_wait(op));
	return control_op_started(op);
}

static int control_flush(struct tapfs *fs, struct tapfs_group *g,
			 struct tapfs_vbd *one, control_done_cb_t done,
			 void *arg)
{
	struct control_op *op;
	struct tapfs_vbd *tv;
	struct td_list *pos;

	for_each_target(g, one, tv, pos)
		if (vbd_state(tv->vbd) == VBD_PAUSING)
			return control_status(g, -EBUSY, "'%s' is being "
					      "paused; try again", tv->name);
	op = control_op_new(fs, g, CTL_FLUSH, control_count(g, one), done,
			    arg);
	if (!op)
		return control_status(g, -ENOMEM, "out of memory");
	for_each_target(g, one, tv, pos) {
		struct control_slot *s = control_op_wait(op);

		s->req.op = TD_OP_FLUSH;
		s->req.pass_pause = true;
		s->req.cb = control_flushed;
		s->req.cb_data = s;
		vbd_submit(tv->vbd, &s->req);
	}
	return control_op_started(op);
}

static int control_save(struct tapfs *fs, struct tapfs_group *g);

/* Who holds path (one table for every loop): 0 and who, or -ENOENT. */
static int control_lock_describe(struct tapfs *fs, const char *path,
				 char *who, size_t len)
{
	if (td_lock_describe(fs->engine->locks, path, who, len) || !who[0])
		return -ENOENT;
	return 0;
}

/* Undo a switch to a snapshot child: back to the old leaf. */
static void snap_rollback(struct snap_target *t)
{
	char err[256];
	int rc;

	if (!t->done)
		return;
	if (t->remote) {
		rc = td_drv_unsnapshot_remote(vbd_image(t->tv->vbd, 0),
					      t->child, err, sizeof(err));
		if (rc)
			td_log(TD_LOG_ERR, "%s: %s", t->tv->name, err);
		t->done = false;
		return;
	}
	rc = vbd_reopen(t->tv->vbd, t->old_spec, err, sizeof(err));
	if (rc) {
		/* The child stays: it holds the writes made since. */
		td_log(TD_LOG_ERR, "%s: cannot go back to %s: %s",
		       t->tv->name, t->old_spec, err);
		return;
	}
	snprintf(t->tv->spec, sizeof(t->tv->spec), "%s", t->old_spec);
	snprintf(t->tv->format, sizeof(t->tv->format), "%s", t->old_format);
	unlink(t->child);
	t->done = false;
}

/*
 * The drivers that may make a snapshot child of leaf, in the order they
 * are tried: the leaf's own when it can (a qcow2 child for a qcow2 leaf),
 * then the one create makes images with by default (VHD: it records its
 * parent's file but not its format, so it takes VHD and raw parents),
 * then qcow2, which records the parent's format and so stands on any
 * image tapfs reads (a vmdk leaf).  A driver that refuses the parent
 * (EOPNOTSUPP) passes to the next.  Returns how many were stored in d.
 */
#define SNAP_DRIVERS_MAX	3
static unsigned snap_drivers(td_driver_t *leaf,
			     const struct tap_disk *d[SNAP_DRIVERS_MAX])
{
	const struct tap_disk *c[SNAP_DRIVERS_MAX] = {
		leaf->ops, td_driver_find(CTL_DEFAULT_FORMAT),
		td_driver_find("qcow2"),
	};
	unsigned i, j, n = 0;

	for (i = 0; i < SNAP_DRIVERS_MAX; i++) {
		if (!c[i] || !td_disk_can_create_child(c[i]))
			continue;
		for (j = 0; j < n && d[j] != c[i]; j++)
			;
		if (j == n)
			d[n++] = c[i];
	}
	return n;
}

/*
 * Make a child of t's leaf in the store and switch the VBD to it; or,
 * for a remote image (rbd), have its driver snapshot it in place.
 */
static int snap_one(struct tapfs *fs, struct snap_target *t, char *err,
		    size_t errlen)
{
	td_driver_t *leaf = vbd_image(t->tv->vbd, 0);
	const struct tap_disk *drivers[SNAP_DRIVERS_MAX], *cd = NULL;
	char spec[TAPFS_SPEC_MAX], parent[CTL_PATH_MAX];
	unsigned i, n, nd;
	int rc;

	if (td_disk_flags(leaf->ops) & TD_DISK_REMOTE) {
		rc = td_drv_snapshot_remote(leaf, t->child, sizeof(t->child),
					    err, errlen);
		if (rc)
			return rc;
		t->remote = t->done = true;
		td_log(TD_LOG_INFO, "%s/%s: snapshot: %s", t->tv->group->name,
		       t->tv->name, t->child);
		return 0;
	}
	/* The leaf is freed by vbd_reopen(): keep its name. */
	snprintf(parent, sizeof(parent), "%s", leaf->name);
	nd = snap_drivers(leaf, drivers);
	rc = -EOPNOTSUPP;
	for (i = 0; i < nd && rc == -EOPNOTSUPP; i++) {
		cd = drivers[i];
		rc = -EEXIST;
		for (n = 1; rc == -EEXIST && n < 100000; n++) {
			snprintf(t->child, sizeof(t->child), "%s/%s/%s.%u.%s",
				 fs->store, t->tv->group->name, t->tv->name,
				 n, cd->name);
			rc = td_drv_create_child(cd, t->child, parent,
						 leaf->ops->name, err, errlen);
		}
	}
	if (rc)
		return rc;
	snprintf(t->old_spec, sizeof(t->old_spec), "%s", t->tv->spec);
	snprintf(t->old_format, sizeof(t->old_format), "%s", t->tv->format);
	snprintf(spec, sizeof(spec), "%s:%s", cd->name, t->child);
	rc = vbd_reopen(t->tv->vbd, spec, err, errlen);
	if (rc) {
		unlink(t->child);
		return rc;
	}
	snprintf(t->tv->spec, sizeof(t->tv->spec), "%s", spec);
	snprintf(t->tv->format, sizeof(t->tv->format), "%s", cd->name);
	t->done = true;
	td_log(TD_LOG_INFO, "%s/%s: snapshot: %s on top of %s",
	       t->tv->group->name, t->tv->name, t->child, parent);
	return 0;
}

/* Every target is paused: snapshot them all, or none. */
static void control_snapshot_paused(struct control_op *op)
{
	char err[TAPFS_STATUS_MAX / 2];
	unsigned i, j;
	int rc = op->err;

	for (i = 0; i < op->ntargets && !rc; i++) {
		rc = snap_one(op->fs, &op->targets[i], err, sizeof(err));
		if (rc)
			td_msgf(op->what, sizeof(op->what), "snapshot of "
				"'%s' failed: %s", op->targets[i].tv->name,
				err);
	}
	if (!rc && control_save(op->fs, op->g)) {
		rc = -EIO;
		td_msgf(op->what, sizeof(op->what), "%s", op->g->status);
	}
	if (rc && !op->err) {
		for (j = 0; j < op->ntargets; j++)
			snap_rollback(&op->targets[j]);
		op->err = rc;
	}
	for (i = 0; i < op->ntargets; i++)
		if (!op->targets[i].was_paused)
			vbd_resume(op->targets[i].tv->vbd);
}

static int control_snapshot(struct tapfs *fs, struct tapfs_group *g,
			    struct tapfs_vbd *one, control_done_cb_t done,
			    void *arg)
{
	struct control_op *op;
	struct tapfs_vbd *tv;
	struct td_list *pos;
	unsigned n = 0;

	for_each_target(g, one, tv, pos) {
		td_driver_t *leaf = vbd_image(tv->vbd, 0);
		const struct tap_disk *drivers[SNAP_DRIVERS_MAX];

		if (vbd_state(tv->vbd) == VBD_PAUSING)
			return control_status(g, -EBUSY, "a pause of '%s' is "
					      "in progress", tv->name);
		if (tv->readonly)
			return control_status(g, -EINVAL, "'%s' is read-only:"
					      " nothing to snapshot",
					      tv->name);
		if (td_disk_flags(leaf->ops) & TD_DISK_REMOTE) {
			/* Snapshotted in place: no child, no filter. */
			if (!td_disk_can_snapshot_remote(leaf->ops))
				return control_status(g, -ENOTSUP, "'%s' is a "
						      "%s image, which cannot "
						      "be snapshotted",
						      tv->name,
						      leaf->ops->name);
			n++;
			continue;
		}
		if (td_disk_flags(leaf->ops) & TD_DISK_NO_FILE)
			return control_status(g, -EINVAL, "'%s' is a %s "
					      "disk: it has no image to keep",
					      tv->name, leaf->ops->name);
		if (td_disk_flags(leaf->ops) & TD_DISK_FILTER)
			return control_status(g, -EINVAL, "'%s' has a %s "
					      "filter on top: close and open "
					      "it without to snapshot",
					      tv->name, leaf->ops->name);
		if (!snap_drivers(leaf, drivers))
			return control_status(g, -ENOTSUP, "no driver can "
					      "make a snapshot child of '%s'",
					      tv->name);
		n++;
	}
	if (!n)
		return control_status(g, -ENOENT, "no VBD to snapshot in "
				      "group '%s'", g->name);
	op = control_op_new(fs, g, CTL_SNAPSHOT, n, done, arg);
	if (!op || !(op->targets = calloc(n, sizeof(*op->targets)))) {
		free(op);
		if (op)
			g->busy--;
		return control_status(g, -ENOMEM, "out of memory");
	}
	op->then = control_snapshot_paused;
	/* Every VBD pauses before any is snapshotted: one instant. */
	for_each_target(g, one, tv, pos) {
		struct snap_target *t = &op->targets[op->ntargets++];

		t->tv = tv;
		t->was_paused = vbd_state(tv->vbd) == VBD_PAUSED;
		vbd_pause(tv->vbd, control_paused, control_op_wait(op));
	}
	return control_op_started(op);
}

static int control_save(struct tapfs *fs, struct tapfs_group *g)
{
	char err[TAPFS_STATUS_MAX / 2];
	int rc = tapfs_store_save(fs, err, sizeof(err));

	if (rc)
		control_status(g, rc, "cannot save the manifest: %s", err);
	return rc;
}

/*
 * create takes a driver that makes image files, one that makes images
 * elsewhere (rbd: in a Ceph pool), or one whose argument is not a file
 * (ram: its size), which it just opens.
 */
static bool control_can_create(const struct tap_disk *ops)
{
	if (td_disk_flags(ops) & TD_DISK_REMOTE)
		return td_disk_can_create_remote(ops);
	return td_disk_can_create(ops) ||
	       (td_disk_flags(ops) & TD_DISK_NO_FILE);
}

/*
 * Does a VBD of this driver outlive the mount (kept in the manifest)?
 * Image files and remote images do; a disk that is no file (ram) does
 * not, unless it is a filter over one.
 */
static bool control_lasting(const struct tap_disk *ops)
{
	td_flag_t f = td_disk_flags(ops);

	return !(f & TD_DISK_NO_FILE) || (f & (TD_DISK_FILTER |
					       TD_DISK_REMOTE));
}

/*
 * The driver a format word names ("raw" is the aio driver's alias), from
 * the one driver table.  create needs one that can make images.
 */
static const struct tap_disk *control_driver(const char *format,
					     bool creating)
{
	const struct tap_disk *ops = td_driver_find(format);

	if (ops && creating && !control_can_create(ops))
		return NULL;
	return ops;
}

/* "raw vhd ram": the formats create or open takes, for messages. */
static void control_formats(char *buf, size_t len, bool creating)
{
	const struct tap_disk *const *d;
	size_t used = 0;

	buf[0] = '\0';
	if (creating)
		used += (size_t)snprintf(buf, len, "raw");
	for (d = td_driver_list(); *d && used < len; d++) {
		if (creating && !control_can_create(*d))
			continue;
		used += (size_t)snprintf(buf + used, len - used, "%s%s",
					 used ? " " : "", (*d)->name);
	}
}

/*
 * Undo a create whose VBD did not come up: the image file, or the remote
 * image ops made at target.
 */
static void control_uncreate(struct tapfs *fs, const struct tap_disk *ops,
			     const char *created)
{
	char err[256];

	if (!created)
		return;
	if (!(td_disk_flags(ops) & TD_DISK_REMOTE)) {
		unlink(created);
		return;
	}
	if (td_drv_remove_remote(ops, fs->engine, created, err, sizeof(err)))
		td_log(TD_LOG_ERR, "%s", err);
}

static int control_add(struct tapfs *fs, struct tapfs_group *g,
		       const struct ctl_command *cmd,
		       const struct tap_disk *ops, const char *spec,
		       bool persistent, const char *created)
{
	char err[TAPFS_STATUS_MAX - 64];	/* may name three paths */
	struct tapfs_vbd *tv;
	int rc;

	rc = tapfs_vbd_add(fs, g, cmd->name, cmd->format, spec,
			   cmd->readonly, (cmd->standby ? TD_OPEN_STANDBY : 0) |
			   (cmd->steal ? TD_OPEN_STEAL : 0), persistent, &tv,
			   err, sizeof(err));
	if (rc) {
		control_uncreate(fs, ops, created);
		return control_status(g, rc, "%s", err);
	}
	if (persistent && control_save(fs, g)) {
		rc = -EIO;
		tapfs_vbd_remove(fs, tv);
		control_uncreate(fs, ops, created);
		return rc;
	}
	td_log(TD_LOG_INFO, "%s/%s: %s %s (%llu bytes)", g->name, cmd->name,
	       ctl_verb_name(cmd->verb), spec,
	       (unsigned long long)vbd_size(tv->vbd));
	return control_status(g, 0, NULL);
}

/*
 * create of a remote image (rbd): the driver makes GROUP.NAME where its
 * settings say (the pool of -o ceph_pool) and names it for open.
 */
static int control_create_remote(struct tapfs *fs, struct tapfs_group *g,
				 const struct ctl_command *cmd,
				 const struct tap_disk *ops)
{
	char name[2 * CTL_NAME_MAX + 2], target[CTL_PATH_MAX];
	char spec[TAPFS_SPEC_MAX], err[TAPFS_STATUS_MAX / 2];
	int rc;

	snprintf(name, sizeof(name), "%s.%s", g->name, cmd->name);
	rc = td_drv_create_remote(ops, fs->engine, name, cmd->size, target,
				  sizeof(target), err, sizeof(err));
	if (rc)
		return control_status(g, rc, "%s", err);
	snprintf(spec, sizeof(spec), "%s:%s", ops->name, target);
	return control_add(fs, g, cmd, ops, spec, true, target);
}

static int control_create(struct tapfs *fs, struct tapfs_group *g,
			  const struct ctl_command *cmd)
{
	const struct tap_disk *ops = control_driver(cmd->format, true);
	char path[CTL_PATH_MAX], spec[TAPFS_SPEC_MAX], formats[128];
	int rc;

	if (!ops) {
		control_formats(formats, sizeof(formats), true);
		return control_status(g, -EINVAL, "unknown format '%s' "
				      "(create takes: %s)", cmd->format,
				      formats);
	}
	if (tapfs_vbd_find(g, cmd->name))
		return control_status(g, -EEXIST, "VBD '%s' exists in group "
				      "'%s'", cmd->name, g->name);
	if (td_disk_flags(ops) & TD_DISK_REMOTE)
		return control_create_remote(fs, g, cmd, ops);
	if (!td_disk_can_create(ops)) {	/* ram: nothing to create */
		snprintf(spec, sizeof(spec), "%s:%llu", ops->name,
			 (unsigned long long)cmd->size);
		return control_add(fs, g, cmd, ops, spec, false, NULL);
	}
	/* NAME.FORMAT, or NAME alone where the suffix would not fit. */
	if (strlen(cmd->name) + 1 + strlen(cmd->format) <= NAME_MAX)
		snprintf(path, sizeof(path), "%s/%s/%s.%s", fs->store,
			 g->name, cmd->name, cmd->format);
	else
		snprintf(path, sizeof(path), "%s/%s/%s", fs->store, g->name,
			 cmd->name);
	rc = td_drv_create(ops, path, cmd->size, 0);
	if (rc == -EEXIST) {
		char who[256];

		/* Someone's disk: say whose, not how to open it again. */
		if (!control_lock_describe(fs, path, who, sizeof(who)))
			return control_status(g, -EBUSY, "image %s already "
					      "exists and is in use %s", path,
					      who);
		return control_status(g, rc, "image %s already exists "
				      "(use: open %s %s:%s)", path, cmd->name,
				      cmd->format, path);
	}
	if (rc)
		return control_status(g, rc, "cannot create %s: %s", path,
				      strerror(-rc));
	snprintf(spec, sizeof(spec), "%s:%s", ops->name, path);
	return control_add(fs, g, cmd, ops, spec, true, path);
}

static int control_open(struct tapfs *fs, struct tapfs_group *g,
			const struct ctl_command *cmd)
{
	const struct tap_disk *ops = control_driver(cmd->format, false);
	char spec[TAPFS_SPEC_MAX], formats[128];
	td_flag_t flags;

	if (!ops) {
		control_formats(formats, sizeof(formats), false);
		return control_status(g, -EINVAL, "unknown format '%s' "
				      "(open takes: raw %s)", cmd->format,
				      formats);
	}
	if (tapfs_vbd_find(g, cmd->name))
		return control_status(g, -EEXIST, "VBD '%s' exists in group "
				      "'%s'", cmd->name, g->name);
	/*
	 * An image file is judged here first, for a plain message.  A
	 * filter's argument is its own syntax, parsed by the filter; the
	 * engine's path policy judges what it stands on, as its parent.
	 */
	flags = td_disk_flags(ops);
	if (!(flags & (TD_DISK_NO_FILE | TD_DISK_FILTER))) {
		if (cmd->path[0] != '/')
			return control_status(g, -EINVAL, "image path '%s' "
					      "must be absolute", cmd->path);
		if (!tapfs_path_outside_mount(fs, cmd->path))
			return control_status(g, -EINVAL, "image %s lies "
					      "inside this tapfs mount",
					      cmd->path);
	}
	snprintf(spec, sizeof(spec), "%s:%s", ops->name, cmd->path);
	/* Kept in the manifest: all but a disk that is no file (ram). */
	return control_add(fs, g, cmd, ops, spec, control_lasting(ops),
			   NULL);
}

static int control_close(struct tapfs *fs, struct tapfs_group *g,
			 const struct ctl_command *cmd)
{
	struct tapfs_vbd *tv = tapfs_vbd_find(g, cmd->name);
	bool persistent;
	int rc;

	if (!tv)
		return control_status(g, -ENOENT, "no VBD '%s' in group '%s'",
				      cmd->name, g->name);
	if (tv->open_count)
		return control_status(g, -EBUSY, "'%s' is open (%u handles);"
				      " detach its users first", tv->name,
				      tv->open_count);
	/* A failed VBD closes with I/O stuck in its image (vbd_close). */
	if (tv->vbd && !vbd_failed(tv->vbd) &&
	    (vbd_inflight(tv->vbd) || vbd_queued(tv->vbd)))
		return control_status(g, -EBUSY, "'%s' has I/O in flight",
				      tv->name);
	persistent = tv->persistent;
	rc = tapfs_vbd_remove(fs, tv);
	if (rc == -EBUSY)
		return control_status(g, rc, "'%s' is busy", cmd->name);
	if (persistent && control_save(fs, g))
		return -EIO;
	if (rc)
		return control_status(g, rc, "'%s' closed, but flushing it "
				      "failed: %s", cmd->name, strerror(-rc));
	td_log(TD_LOG_INFO, "%s/%s: closed", g->name, cmd->name);
	return control_status(g, 0, NULL);
}

/*
 * "fault NAME SETTINGS": the settings, as written, go to the images of
 * the chain from the leaf down; the first that takes settings parses
 * them (td_control).
 */
static int control_fault(struct tapfs_group *g, const struct ctl_command *cmd)
{
	struct tapfs_vbd *one;
	char err[TAPFS_STATUS_MAX / 2];
	unsigned i;
	int rc;

	rc = control_targets(g, cmd->name, &one);
	if (rc)
		return rc;
	for (i = 0; i < vbd_chain_length(one->vbd); i++) {
		rc = td_drv_control(vbd_image(one->vbd, i), cmd->path, err,
				    sizeof(err));
		if (rc == -ENOTSUP)
			continue;
		if (rc)
			return control_status(g, rc, "%s", err);
		return control_status(g, 0, NULL);
	}
	return control_status(g, -EINVAL, "'%s' has no fault filter: no "
			      "image of its chain takes settings",
			      one->name);
}

/* ---- handing a VBD over: release, and resume of one in standby ---- */

/* A release or take-over is done: the engine's words on failure. */
static void control_handed_over_main(void *vbd, void *arg, int err)
{
	struct control_op *op = arg;

	if (err && !op->err) {
		op->err = err;
		td_msgf(op->what, sizeof(op->what), "%s: %s",
			ctl_verb_name(op->verb), vbd_takeover_error(vbd));
	}
	control_op_put(op, err, "VBD");
}

static void control_handed_over(td_vbd_t *vbd, void *arg, int err)
{
	struct control_slot *s = arg;

	workers_on_main(s->op->fs, &s->call, control_handed_over_main, vbd,
			s->op, err);
}

/* The manifest says which VBDs come back in standby (tree.c). */
static void control_handover_save(struct control_op *op)
{
	if (op->err || !control_save(op->fs, op->g))
		return;
	op->err = -EIO;
	td_msgf(op->what, sizeof(op->what), "%s", op->g->status);
}

/*
 * "release NAME": drain, flush, give the write lock up; reads go on.
 * Answered when done (or failed: the VBD stays the writer).
 */
static int control_release(struct tapfs *fs, struct tapfs_group *g,
			   struct tapfs_vbd *tv, control_done_cb_t done,
			   void *arg)
{
	struct control_op *op;
	int rc;

	if (tv->readonly)
		return control_status(g, -EROFS, "'%s' is read-only: it "
				      "holds no write lock", tv->name);
	if (vbd_hold(tv->vbd) == VBD_HOLD_STANDBY)
		return control_status(g, -EINVAL, "'%s' is in standby: it "
				      "holds no write lock", tv->name);
	op = control_op_new(fs, g, CTL_RELEASE, 1, done, arg);
	if (!op)
		return control_status(g, -ENOMEM, "out of memory");
	op->then = control_handover_save;
	rc = vbd_release(tv->vbd, control_handed_over, control_op_wait(op));
	if (rc) {
		op->pending--;
		op->err = rc;
		td_msgf(op->what, sizeof(op->what), "'%s' is being %s; try "
			"again", tv->name, rc == -EBUSY ? "paused or released" :
			"taken over");
	}
	return control_op_started(op);
}

/*
 * "resume [NAME]": resume, and take the image over where the VBD is in
 * standby (or, named, released): answered once it is the writer, or when
 * the deadline passed with the old writer still holding the image.
 */
static int control_resume(struct tapfs *fs, struct tapfs_group *g,
			  struct tapfs_vbd *one, control_done_cb_t done,
			  void *arg)
{
	struct control_op *op = NULL;
	struct tapfs_vbd *tv;
	struct td_list *pos;
	enum vbd_hold hold;
	int rc;

	for_each_target(g, one, tv, pos) {
		vbd_resume(tv->vbd);
		hold = vbd_hold(tv->vbd);
		if (tv->readonly || hold == VBD_HOLD_ACTIVE ||
		    (hold == VBD_HOLD_RELEASED && !one))
			continue;
		if (!op) {
			op = control_op_new(fs, g, CTL_RESUME,
					    control_count(g, one), done,
					    arg);
			if (!op)
				return control_status(g, -ENOMEM,
						      "out of memory");
			op->then = control_handover_save;
		}
		rc = vbd_activate(tv->vbd, control_handed_over,
				  control_op_wait(op));
		if (rc) {
			op->pending--;
			if (!op->err) {
				op->err = rc;
				td_msgf(op->what, sizeof(op->what), "'%s' is "
					"being released or taken over; try "
					"again", tv->name);
			}
		}
	}
	if (!op)
		return control_status(g, 0, NULL);
	return control_op_started(op);
}

int control_exec(struct tapfs *fs, struct tapfs_group *g, const char *buf,
		 size_t len, control_done_cb_t done, void *arg)
{
	struct ctl_command cmd;
	char err[TAPFS_STATUS_MAX / 2];
	struct tapfs_vbd *one, *tv;
	struct td_list *pos;
	int rc;

	rc = ctl_parse(buf, len, &cmd, err, sizeof(err));
	if (rc)
		return control_status(g, rc, "%s", err);
	switch (cmd.verb) {
	case CTL_CREATE:
		return control_create(fs, g, &cmd);
	case CTL_OPEN:
		return control_open(fs, g, &cmd);
	case CTL_CLOSE:
		return control_close(fs, g, &cmd);
	case CTL_FAULT:
		return control_fault(g, &cmd);
	case CTL_PAUSE:
	case CTL_RESUME:
	case CTL_FLUSH:
	case CTL_SNAPSHOT:
	case CTL_RESET_STATS:
	case CTL_RELEASE:
		break;
	}
	rc = control_targets(g, cmd.name, &one);
	if (rc)
		return rc;
	if (cmd.verb == CTL_PAUSE)
		return control_pause(fs, g, one, done, arg);
	if (cmd.verb == CTL_FLUSH)
		return control_flush(fs, g, one, done, arg);
	if (cmd.verb == CTL_SNAPSHOT)
		return control_snapshot(fs, g, one, done, arg);
	if (cmd.verb == CTL_RELEASE)
		return control_release(fs, g, one, done, arg);
	if (cmd.verb == CTL_RESUME)
		return control_resume(fs, g, one, done, arg);
	for_each_target(g, one, tv, pos)
		vbd_reset_stats(tv->vbd);
	return control_status(g, 0, NULL);
}

/* ---- rendering -------------------------------------------------------- */

struct text {
	char	*buf;
	size_t	 len, cap;
	bool	 oom;
};

static void text_printf(struct text *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void text_printf(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		size_t room = t->cap - t->len;

		va_start(ap, fmt);
		n = vsnprintf(t->buf ? t->buf + t->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->oom = true;
			return;
		}
		if ((size_t)n < room) {
			t->len += (size_t)n;
			return;
		}
		t->cap = (t->cap + (size_t)n + 1) * 2;
		char *nb = realloc(t->buf, t->cap);

		if (!nb) {
			t->oom = true;
			return;
		}
		t->buf = nb;
	}
}

/* What the VBD holds its image for: reader, active (the writer), ... */
static const char *hold_name(const struct tapfs_vbd *tv)
{
	if (tv->readonly)
		return "reader";
	switch (vbd_hold(tv->vbd)) {
	case VBD_HOLD_ACTIVE:
		return "active";
	case VBD_HOLD_STANDBY:
		return "standby";
	case VBD_HOLD_RELEASED:
		return "released";
	}
	return "?";
}

static const char *state_name(const struct tapfs_vbd *tv)
{
	if (!tv->vbd || vbd_failed(tv->vbd))
		return "failed";
	/* Not the writer (docs/locking.md): whether running or paused. */
	if (!tv->readonly && vbd_hold(tv->vbd) != VBD_HOLD_ACTIVE)
		return hold_name(tv);
	switch (vbd_state(tv->vbd)) {
	case VBD_RUNNING:
		return "running";
	case VBD_PAUSING:
		return "pausing";
	case VBD_PAUSED:
		return "paused";
	}
	return "?";
}

static char *text_finish(struct text *t, size_t *len)
{
	if (t->oom) {
		free(t->buf);
		return NULL;
	}
	if (!t->buf)
		t->buf = calloc(1, 1);
	*len = t->len;
	return t->buf;
}

char *control_render_ctl(struct tapfs *fs, struct tapfs_group *g,
			 size_t *len)
{
	struct text t = { 0 };
	struct td_list *pos;
	char about[TD_ERROR_MAX];
	unsigned i;

	(void)fs;
	text_printf(&t, "status: %s\n", g->status);
	for (pos = g->vbds.next; pos != &g->vbds; pos = pos->next) {
		struct tapfs_vbd *tv = td_container_of(pos, struct tapfs_vbd,
						       link);
		if (!tv->vbd) {
			text_printf(&t, "%s failed %s 0 %s %s (%s)\n",
				    tv->name, tv->format,
				    tv->readonly ? "ro" : "rw", tv->spec,
				    tv->error);
			continue;
		}
		text_printf(&t, "%s %s %s %llu %s", tv->name, state_name(tv),
			    tv->format,
			    (unsigned long long)vbd_size(tv->vbd),
			    tv->readonly ? "ro" : "rw");
		for (i = 0; i < vbd_chain_length(tv->vbd); i++) {
			td_driver_t *d = vbd_image(tv->vbd, i);
			unsigned users = vbd_image_users(tv->vbd, i);

			text_printf(&t, "%s%s:%s", i ? " -> " : " ",
				    d->ops->name, d->name);
			if (users > 1)	/* one open image for all of them */
				text_printf(&t, " (shared by %u)", users);
			td_drv_describe(d, about, sizeof(about));
			if (about[0])
				text_printf(&t, " %s", about);
		}
		if (vbd_failed(tv->vbd))
			text_printf(&t, " (%s)", vbd_fail_reason(tv->vbd));
		if (vbd_takeover_error(tv->vbd)[0])
			text_printf(&t, " (take-over: %s)",
				    vbd_takeover_error(tv->vbd));
		/* What a driver refuses since (a corrupt image). */
		for (i = 0; i < vbd_chain_length(tv->vbd); i++) {
			td_driver_t *d = vbd_image(tv->vbd, i);

			if (d->error[0])
				text_printf(&t, " (%s)", d->error);
		}
		text_printf(&t, "\n");
	}
	return text_finish(&t, len);
}

/*
 * One latency histogram, KEY being e.g. "read" or "queue":
 * NAME.KEY_lat_us.p50/.p99/.p999 estimates, then cumulative buckets
 * NAME.KEY_lat_us.le_N (at most N µs) up to the first that holds them
 * all, and le_inf; nothing if it is empty.
 */
static void render_hist(struct text *t, const char *n, const char *key,
			const uint64_t *h)
{
	static const unsigned q[] = { 500, 990, 999 };
	static const char *const qname[] = { "p50", "p99", "p999" };
	uint64_t total = 0, cum = 0;
	unsigned b, i;

	for (b = 0; b < VBD_LAT_BUCKETS; b++)
		total += h[b];
	if (!total)
		return;
	for (i = 0; i < sizeof(q) / sizeof(q[0]); i++)
		text_printf(t, "%s.%s_lat_us.%s %llu\n", n, key, qname[i],
			    (unsigned long long)vbd_lat_quantile(h, q[i]));
	for (b = 0; b < VBD_LAT_BUCKETS - 1 && cum < total; b++) {
		cum += h[b];
		text_printf(t, "%s.%s_lat_us.le_%llu %llu\n", n, key,
			    1ull << b, (unsigned long long)cum);
	}
	text_printf(t, "%s.%s_lat_us.le_inf %llu\n", n, key,
		    (unsigned long long)total);
}

static uint64_t mean_us(uint64_t ns, uint64_t n)
{
	return n ? ns / n / 1000 : 0;
}

/*
 * The latency keys: per operation (completion latency, dispatch to
 * completion) and per stage of a request's life (enum vbd_stage).
 */
static void render_latency(struct text *t, const char *n,
			   const struct vbd_stats *s)
{
	static const char *const op[VBD_LAT_OPS] = {
		[TD_OP_READ] = "read", [TD_OP_WRITE] = "write",
		[TD_OP_FLUSH] = "flush", [TD_OP_DISCARD] = "discard",
	};
	static const char *const stage[VBD_STAGES] = {
		[VBD_STAGE_QUEUE] = "queue", [VBD_STAGE_IO] = "io",
		[VBD_STAGE_REPLY] = "reply", [VBD_STAGE_TOTAL] = "total",
	};
	unsigned i;

	text_printf(t, "%s.read_lat_us %llu\n%s.write_lat_us %llu\n"
		    "%s.max_lat_us %llu\n",
		    n, (unsigned long long)mean_us(s->read_ns, s->reads),
		    n, (unsigned long long)mean_us(s->write_ns, s->writes),
		    n, (unsigned long long)(s->max_ns / 1000));
	for (i = 0; i < VBD_STAGES; i++)
		text_printf(t, "%s.%s_lat_us %llu\n", n, stage[i],
			    (unsigned long long)mean_us(s->stage_ns[i],
				i <= VBD_STAGE_IO ? s->staged : s->replied));
	for (i = 0; i < VBD_LAT_OPS; i++)
		render_hist(t, n, op[i], s->lat[i]);
	for (i = 0; i < VBD_STAGES; i++)
		render_hist(t, n, stage[i], s->stage_lat[i]);
}

/*
 * The engines' aio queues (struct td_aio_stats), shared by every group:
 * keys start with '.', which no VBD name does.  Cumulative since start
 * (reset-stats leaves them): the sums and counts let a reader take the
 * means of an interval from two readings.
 */
static void render_aio(struct text *t, struct tapfs *fs)
{
	struct td_aio_stats a = { 0 }, q;
	uint64_t tenths;
	unsigned i;

	/* With -o workers=N, one queue per loop: their sums. */
	for (i = 0; i < workers_count(fs); i++) {
		td_aio_queue_get_stats(workers_engine(fs, i)->aioq, &q);
		td_aio_stats_add(&a, &q);
	}
	tenths = a.batches ? a.submitted * 10 / a.batches : 0;
	text_printf(t, ".aio.submits %llu\n.aio.iocbs %llu\n"
		    ".aio.batch %llu.%llu\n.aio.merged %llu\n"
		    ".aio.reaps %llu\n"
		    ".aio.waited %llu\n.aio.wait_total_us %llu\n"
		    ".aio.wait_us %llu\n"
		    ".aio.reaped %llu\n.aio.disk_total_us %llu\n"
		    ".aio.disk_us %llu\n",
		    (unsigned long long)a.batches,
		    (unsigned long long)a.submitted,
		    (unsigned long long)(tenths / 10),
		    (unsigned long long)(tenths % 10),
		    (unsigned long long)a.merged,
		    (unsigned long long)a.reaps,
		    (unsigned long long)a.waited,
		    (unsigned long long)(a.wait_ns / 1000),
		    (unsigned long long)mean_us(a.wait_ns, a.waited),
		    (unsigned long long)a.reaped,
		    (unsigned long long)(a.disk_ns / 1000),
		    (unsigned long long)mean_us(a.disk_ns, a.reaped));
}

char *control_render_stats(struct tapfs *fs, struct tapfs_group *g,
			   size_t *len)
{
	struct text t = { 0 };
	struct td_list *pos;
	for (pos = g->vbds.next; pos != &g->vbds; pos = pos->next) {
		struct tapfs_vbd *tv = td_container_of(pos, struct tapfs_vbd,
						       link);
		const struct vbd_stats *s;
		const char *n = tv->name;

		text_printf(&t, "%s.state %s\n", n, state_name(tv));
		if (!tv->vbd)
			continue;
		s = vbd_get_stats(tv->vbd);
		text_printf(&t, "%s.size %llu\n", n,
			    (unsigned long long)vbd_size(tv->vbd));
		text_printf(&t, "%s.hold %s\n", n, hold_name(tv));
		text_printf(&t, "%s.loop %u\n", n, tv->owner);
		text_printf(&t, "%s.reads %llu\n%s.writes %llu\n"
			    "%s.read_bytes %llu\n%s.write_bytes %llu\n"
			    "%s.flushes %llu\n%s.discards %llu\n"
			    "%s.inflight %u\n%s.queued %u\n"
			    "%s.errors %llu\n%s.retries %llu\n"
			    "%s.interrupted %llu\n",
			    n, (unsigned long long)s->reads,
			    n, (unsigned long long)s->writes,
			    n, (unsigned long long)s->read_bytes,
			    n, (unsigned long long)s->write_bytes,
			    n, (unsigned long long)s->flushes,
			    n, (unsigned long long)s->discards,
			    n, vbd_inflight(tv->vbd),
			    n, vbd_queued(tv->vbd),
			    n, (unsigned long long)s->errors,
			    n, (unsigned long long)s->retries,
			    n, (unsigned long long)s->interrupted);
		render_latency(&t, n, s);
	}
	if (fs->engine)
		render_aio(&t, fs);
	return text_finish(&t, len);
}
