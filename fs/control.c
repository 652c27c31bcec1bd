/* SPDX-License-Identifier: MIT */
/*
 * .ctl commands turned into engine calls, and the text of .ctl and
 * .stats.  Parsing lives in ctl.c; the FUSE edge in fuse-ops.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tapfs/log.h>

#include "tapfs.h"

/* An asynchronous command: pause or flush of one or more VBDs. */
struct control_op {
	struct tapfs		*fs;
	struct tapfs_group	*g;
	enum ctl_verb		 verb;
	control_done_cb_t	 done;
	void			*arg;
	unsigned		 pending;	/* VBDs not yet done, +1 bias */
	int			 err;
	char			 what[TAPFS_STATUS_MAX / 2];
	unsigned		 nreqs;
	struct vbd_request	 reqs[];	/* flush */
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
	*one = tv;
	return 0;
}

#define for_each_target(g, one, tv, pos)				\
	for (pos = (g)->vbds.next; pos != &(g)->vbds; pos = pos->next)	\
		if ((tv = td_container_of(pos, struct tapfs_vbd, link)),	\
		    tv->vbd && (!(one) || tv == (one)))

static int control_op_finish(struct control_op *op)
{
	struct tapfs_group *g = op->g;
	int err = op->err;

	g->busy--;
	if (err)
		control_status(g, err, "%s", op->what);
	else
		control_status(g, 0, NULL);
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

static void control_paused(td_vbd_t *vbd, void *arg, int err)
{
	struct control_op *op = arg;

	(void)vbd;
	control_op_put(op, err, "VBD");
}

static void control_flushed(struct vbd_request *vreq, int err)
{
	control_op_put(vreq->cb_data, err, "VBD");
}

static struct control_op *control_op_new(struct tapfs *fs,
					 struct tapfs_group *g,
					 enum ctl_verb verb, unsigned nreqs,
					 control_done_cb_t done, void *arg)
{
	struct control_op *op = calloc(1, sizeof(*op) +
				       nreqs * sizeof(op->reqs[0]));

	if (!op)
		return NULL;
	op->fs = fs;
	op->g = g;
	op->verb = verb;
	op->done = done;
	op->arg = arg;
	op->pending = 1;	/* dropped once every VBD was started */
	op->nreqs = nreqs;
	g->busy++;
	return op;
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
	op = control_op_new(fs, g, CTL_PAUSE, 0, done, arg);
	if (!op)
		return control_status(g, -ENOMEM, "out of memory");
	for_each_target(g, one, tv, pos) {
		op->pending++;
		vbd_pause(tv->vbd, control_paused, op);
	}
	return control_op_started(op);
}

static int control_flush(struct tapfs *fs, struct tapfs_group *g,
			 struct tapfs_vbd *one, control_done_cb_t done,
			 void *arg)
{
	struct control_op *op;
	struct tapfs_vbd *tv;
	struct td_list *pos;
	unsigned n = 0;

	for_each_target(g, one, tv, pos) {
		if (vbd_state(tv->vbd) != VBD_RUNNING)
			return control_status(g, -EBUSY, "'%s' is paused; "
					      "resume it first", tv->name);
		n++;
	}
	op = control_op_new(fs, g, CTL_FLUSH, n, done, arg);
	if (!op)
		return control_status(g, -ENOMEM, "out of memory");
	n = 0;
	for_each_target(g, one, tv, pos) {
		struct vbd_request *vreq = &op->reqs[n++];

		vreq->op = TD_OP_FLUSH;
		vreq->cb = control_flushed;
		vreq->cb_data = op;
		op->pending++;
		vbd_submit(tv->vbd, vreq);
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

/* Map a user's format word to a driver. */
static const char *control_driver(const char *format, bool creating)
{
	if (!strcmp(format, "raw") || !strcmp(format, "aio"))
		return "aio";
	if (!creating && !strcmp(format, "sync"))
		return "sync";
	if (!strcmp(format, "ram"))
		return "ram";
	return NULL;
}

static int control_add(struct tapfs *fs, struct tapfs_group *g,
		       const struct ctl_command *cmd, const char *spec,
		       bool persistent, const char *created)
{
	char err[TAPFS_STATUS_MAX / 2];
	struct tapfs_vbd *tv;
	int rc;

	rc = tapfs_vbd_add(fs, g, cmd->name, cmd->format, spec,
			   cmd->readonly, persistent, &tv, err, sizeof(err));
	if (rc) {
		if (created)
			unlink(created);
		return control_status(g, rc, "%s", err);
	}
	if (persistent && control_save(fs, g)) {
		rc = -EIO;
		tapfs_vbd_remove(fs, tv);
		if (created)
			unlink(created);
		return rc;
	}
	td_log(TD_LOG_INFO, "%s/%s: %s %s (%llu bytes)", g->name, cmd->name,
	       ctl_verb_name(cmd->verb), spec,
	       (unsigned long long)vbd_size(tv->vbd));
	return control_status(g, 0, NULL);
}

static int control_create(struct tapfs *fs, struct tapfs_group *g,
			  const struct ctl_command *cmd)
{
	const char *drv = control_driver(cmd->format, true);
	char path[CTL_PATH_MAX], spec[TAPFS_SPEC_MAX];
	const struct tap_disk *ops;
	int rc;

	if (!drv)
		return control_status(g, -EINVAL, "unknown format '%s' "
				      "(create takes: raw ram)", cmd->format);
	if (tapfs_vbd_find(g, cmd->name))
		return control_status(g, -EEXIST, "VBD '%s' exists in group "
				      "'%s'", cmd->name, g->name);
	if (!strcmp(drv, "ram")) {
		snprintf(spec, sizeof(spec), "ram:%llu",
			 (unsigned long long)cmd->size);
		return control_add(fs, g, cmd, spec, false, NULL);
	}
	snprintf(path, sizeof(path), "%s/%s/%s.%s", fs->store, g->name,
		 cmd->name, cmd->format);
	ops = td_driver_find(drv);
	rc = td_drv_create(ops, path, cmd->size, 0);
	if (rc == -EEXIST)
		return control_status(g, rc, "image %s already exists "
				      "(use: open %s %s:%s)", path, cmd->name,
				      cmd->format, path);
	if (rc)
		return control_status(g, rc, "cannot create %s: %s", path,
				      strerror(-rc));
	snprintf(spec, sizeof(spec), "%s:%s", drv, path);
	return control_add(fs, g, cmd, spec, true, path);
}

static int control_open(struct tapfs *fs, struct tapfs_group *g,
			const struct ctl_command *cmd)
{
	const char *drv = control_driver(cmd->format, false);
	char spec[TAPFS_SPEC_MAX];

	if (!drv)
		return control_status(g, -EINVAL, "unknown format '%s' "
				      "(open takes: raw aio sync ram)",
				      cmd->format);
	if (tapfs_vbd_find(g, cmd->name))
		return control_status(g, -EEXIST, "VBD '%s' exists in group "
				      "'%s'", cmd->name, g->name);
	if (strcmp(drv, "ram")) {
		if (cmd->path[0] != '/')
			return control_status(g, -EINVAL, "image path '%s' "
					      "must be absolute", cmd->path);
		if (!tapfs_path_outside_mount(fs, cmd->path))
			return control_status(g, -EINVAL, "image %s lies "
					      "inside this tapfs mount",
					      cmd->path);
	}
	snprintf(spec, sizeof(spec), "%s:%s", drv, cmd->path);
	return control_add(fs, g, cmd, spec, strcmp(drv, "ram"), NULL);
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
	if (tv->vbd && (vbd_inflight(tv->vbd) || vbd_queued(tv->vbd)))
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
	case CTL_PAUSE:
	case CTL_RESUME:
	case CTL_FLUSH:
		break;
	}
	rc = control_targets(g, cmd.name, &one);
	if (rc)
		return rc;
	if (cmd.verb == CTL_PAUSE)
		return control_pause(fs, g, one, done, arg);
	if (cmd.verb == CTL_FLUSH)
		return control_flush(fs, g, one, done, arg);
	for_each_target(g, one, tv, pos)
		vbd_resume(tv->vbd);
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

static const char *state_name(const struct tapfs_vbd *tv)
{
	if (!tv->vbd)
		return "failed";
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

			text_printf(&t, "%s%s:%s", i ? " -> " : " ",
				    d->ops->name, d->name);
		}
		text_printf(&t, "\n");
	}
	return text_finish(&t, len);
}

char *control_render_stats(struct tapfs *fs, struct tapfs_group *g,
			   size_t *len)
{
	struct text t = { 0 };
	struct td_list *pos;

	(void)fs;
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
		text_printf(&t, "%s.reads %llu\n%s.writes %llu\n"
			    "%s.read_bytes %llu\n%s.write_bytes %llu\n"
			    "%s.flushes %llu\n%s.discards %llu\n"
			    "%s.inflight %u\n%s.queued %u\n"
			    "%s.errors %llu\n%s.retries %llu\n",
			    n, (unsigned long long)s->reads,
			    n, (unsigned long long)s->writes,
			    n, (unsigned long long)s->read_bytes,
			    n, (unsigned long long)s->write_bytes,
			    n, (unsigned long long)s->flushes,
			    n, (unsigned long long)s->discards,
			    n, vbd_inflight(tv->vbd),
			    n, vbd_queued(tv->vbd),
			    n, (unsigned long long)s->errors,
			    n, (unsigned long long)s->retries);
		text_printf(&t, "%s.read_lat_us %llu\n%s.write_lat_us %llu\n"
			    "%s.max_lat_us %llu\n",
			    n, (unsigned long long)(s->reads ?
				s->read_ns / s->reads / 1000 : 0),
			    n, (unsigned long long)(s->writes ?
				s->write_ns / s->writes / 1000 : 0),
			    n, (unsigned long long)(s->max_ns / 1000));
	}
	return text_finish(&t, len);
}
