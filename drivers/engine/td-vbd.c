/* SPDX-License-Identifier: MIT */
/*
 * The VBD: a chain of images (leaf first) and the request machinery in
 * front of it - queueing while paused, splitting into segments, counting
 * completions by sector, retrying transient errors until a deadline, and
 * running partial-sector writes (read-modify-write) alone.
 *
 * Every vbd_request is, from vbd_submit() to its callback, either on
 * vbd->queue (waiting) or counted in vbd->inflight (dispatched, or waiting
 * for a retry).  Pause waits for inflight to reach zero.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <tapfs/engine.h>
#include <tapfs/lock.h>
#include <tapfs/log.h>

#include "common/td-fileio.h"
#include "td-image.h"

struct td_vbd {
	struct td_engine	*engine;
	/*
	 * Who holds the images, for the image locks: the VBD itself, or,
	 * while vbd_reopen() opens a new chain, the VBD being reopened.
	 */
	const td_vbd_t		*owner;
	char			 name[TD_VBD_NAME_MAX];
	struct vbd_params	 params;
	td_image_t		**images;	/* [0] = leaf */
	unsigned		 nimages;
	bool			 rdonly;
	uint32_t		 io_align;	/* bytes, the chain's largest */

	enum vbd_state		 state;
	struct td_list		 queue;		/* waiting vbd_requests */
	unsigned		 nqueued;
	unsigned		 inflight;
	bool			 exclusive;	/* an RMW request is running */
	bool			 kicking;	/* vbd_kick() is on the stack */
	bool			 kick_again;

	vbd_notify_cb_t		 pause_cb;
	void			*pause_arg;
	/*
	 * A pause that drains inside a completion is reported from the
	 * loop: the callback may close the images (snapshot), and the
	 * driver whose completion we are in must not find its state gone.
	 */
	struct td_timer		 pause_timer;

	/* Dispatched requests, oldest first: what the watchdog looks at. */
	struct td_list		 active;
	struct td_timer		 watchdog;
	bool			 failed;
	char			 fail_reason[256];
	/* Closed while failed with requests stuck: freed when they return. */
	bool			 closing;
	struct td_timer		 close_timer;

	/*
	 * Handing the image over (vbd_activate, vbd_release).  While a
	 * take-over runs, requests wait; it retries from takeover_timer.
	 */
	enum vbd_hold		 hold;
	bool			 taking_over;
	struct td_timer		 takeover_timer;
	uint64_t		 takeover_start_ns;
	unsigned		 takeover_tries;
	vbd_notify_cb_t		 takeover_cb;
	void			*takeover_arg;
	bool			 releasing;
	bool			 release_was_paused;
	int			 release_err;
	vbd_notify_cb_t		 release_cb;
	void			*release_arg;
	struct vbd_request	 release_flush;
	struct td_timer		 release_timer;
	char			 takeover_error[512];

	struct vbd_stats	 stats;
};

static void vbd_dispatch(td_vbd_t *vbd, struct vbd_request *vreq);
static void vbd_kick(td_vbd_t *vbd);
static void vbd_pause_timer(struct td_timer *t);
static void vbd_watchdog(struct td_timer *t);
static void vbd_close_timer(struct td_timer *t);
static void vbd_takeover_timer(struct td_timer *t);
static void vbd_release_timer(struct td_timer *t);
static int vbd_open_owned(struct td_engine *e, const struct tap_disk *ops,
			  const char *path, td_flag_t flags,
			  const struct vbd_params *params,
			  const td_vbd_t *owner, td_vbd_t **out, char *err,
			  size_t errlen);

void vbd_params_default(struct vbd_params *p)
{
	p->retry_max = VBD_RETRY_MAX;
	p->retry_delay_ms = VBD_RETRY_DELAY_MS;
	p->deadline_ms = VBD_DEADLINE_MS;
	p->retry_eio = false;
	p->max_segment_secs = VBD_MAX_SEGMENT_SECS;
}

/* ---- opening a chain ------------------------------------------------ */

static void vbd_image_free(td_image_t *img)
{
	if (!img)
		return;
	td_lock_release(img->lock);
	free(img->owners);
	free(img->drv.data);
	free(img->drv.name);
	free(img);
}

/* ---- shared read-only parents (td-image.h) -------------------------- */

/* The lock's name: who holds it, as other holders' refusals say. */
static void shared_name(td_image_t *img)
{
	unsigned others = img->users - 1;

	if (!others)
		td_msgf(img->lock_name, sizeof(img->lock_name), "%s",
			img->owners[0]->name);
	else
		td_msgf(img->lock_name, sizeof(img->lock_name),
			"%s (and %u other VBD%s)", img->owners[0]->name,
			others, others == 1 ? "" : "s");
}

static int shared_hold(td_image_t *img, const td_vbd_t *owner)
{
	if (img->users == img->owners_cap) {
		unsigned cap = img->owners_cap ? img->owners_cap * 2 : 4;
		const td_vbd_t **o = realloc(img->owners, cap * sizeof(*o));

		if (!o)
			return -ENOMEM;
		img->owners = o;
		img->owners_cap = cap;
	}
	img->owners[img->users++] = owner;
	shared_name(img);
	return 0;
}

static void shared_drop(td_image_t *img, const td_vbd_t *owner)
{
	unsigned i = img->users;

	while (i-- > 0)
		if (img->owners[i] == owner)
			break;
	assert(i < img->users);		/* every hold is dropped once */
	img->owners[i] = img->owners[--img->users];
	if (img->users)
		shared_name(img);
}

/* The shared image of this file, driver and flags, if the engine has one
 * whose whole chain is shared. */
static td_image_t *shared_find(struct td_engine *e, const struct tap_disk *ops,
			       td_flag_t flags, dev_t dev, ino_t ino)
{
	struct td_list *pos;
	td_image_t *img, *p;

	for (pos = e->shared_images.next; pos != &e->shared_images;
	     pos = pos->next) {
		img = td_container_of(pos, td_image_t, link);
		if (img->dev != dev || img->ino != ino ||
		    img->drv.ops != ops || img->drv.flags != flags)
			continue;
		for (p = img; p && p->shared; p = p->parent)
			;
		return p ? NULL : img;
	}
	return NULL;
}

/* Hold img and every image below it for owner. */
static int shared_hold_chain(td_image_t *img, const td_vbd_t *owner)
{
	td_image_t *p, *q;
	int rc;

	for (p = img; p; p = p->parent) {
		rc = shared_hold(p, owner);
		if (rc) {
			for (q = img; q != p; q = q->parent)
				shared_drop(q, owner);
			return rc;
		}
	}
	return 0;
}

/* Release owner's hold on img; the last one closes it. */
static int vbd_image_put(td_image_t *img, const td_vbd_t *owner)
{
	int rc;

	if (img->shared) {
		shared_drop(img, owner);
		if (img->users)
			return 0;
		td_list_del(&img->link);
	}
	rc = img->drv.ops->td_close(&img->drv);
	vbd_image_free(img);
	return rc;
}

/*
 * Take img's image lock: read-write for a writable leaf (or what a
 * writable filter stands on), read-only for the rest.  -EBUSY names who
 * holds the image, -EINVAL says it is no file; other errors read as the
 * driver's open would.
 */
static int vbd_image_lock(td_vbd_t *vbd, td_image_t *img, const char *path,
			  int fd, const td_driver_t *child, td_flag_t flags,
			  const void *owner, const char *name, char *err,
			  size_t errlen)
{
	bool parent = child && !(td_disk_flags(child->ops) & TD_DISK_FILTER);
	struct td_lock_table *t = vbd->engine ? vbd->engine->locks : NULL;
	enum td_lock_mode mode = flags & TD_OPEN_STANDBY ? TD_LOCK_STANDBY :
				 flags & TD_OPEN_RDONLY ? TD_LOCK_READ :
				 TD_LOCK_WRITE;
	enum td_lock_role role = parent ? TD_LOCK_ROLE_PARENT :
				 TD_LOCK_ROLE_IMAGE;
	char why[512];
	int rc;

	if (flags & TD_OPEN_FORCE_SHARE)
		return 0;	/* the caller reads an idle image knowingly */
	if (fd >= 0)
		rc = td_lock_acquire_fd(t, fd, path, mode, role, owner, name,
					&img->lock, why, sizeof(why));
	else
		rc = td_lock_acquire(t, path, mode, role, owner, name,
				     &img->lock, why, sizeof(why));
	if ((rc == -EBUSY || rc == -EINVAL) && parent)
		snprintf(err, errlen, "%s: parent %s", child->name, why);
	else if (rc == -EBUSY || rc == -EINVAL)
		snprintf(err, errlen, "%s", why);
	else if (rc && child)
		snprintf(err, errlen, "%s: parent %s: %s", child->name, path,
			 strerror(-rc));
	else if (rc)
		snprintf(err, errlen, "%s: cannot open as %s: %s", path,
			 img->drv.ops->name, strerror(-rc));
	return rc;
}

/*
 * Open the canonical path the path policy approved, following no
 * symbolic link: there is none in it, so one found now was swapped in
 * since the check.  -ELOOP then, with the reason in err.
 */
static int vbd_open_checked(const char *real, int *fd, char *err,
			    size_t errlen)
{
	struct open_how how = {
		.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY,
		.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	long r = syscall(SYS_openat2, AT_FDCWD, real, &how, sizeof(how));
	int rc;

	if (r >= 0) {
		*fd = (int)r;
		return 0;
	}
	rc = -errno;
	if (rc == -ELOOP)
		snprintf(err, errlen, "image %s changed while it was opened (a "
			 "symbolic link appeared in its path): refused", real);
	else
		snprintf(err, errlen, "%s: %s", real, strerror(-rc));
	return rc;
}

/*
 * Open one image of vbd's chain: the leaf (child NULL) or a parent child
 * names.  The path policy is asked first; the driver then opens the
 * canonical path it approved, so that nothing can be swapped in between.
 * A read-only parent the engine has open already, shared, is held again
 * instead (*reused: its own parents come with it).
 */
static int vbd_image_open(td_vbd_t *vbd, const struct tap_disk *ops,
			  const char *path, const td_driver_t *child,
			  td_flag_t flags, td_image_t **out, bool *reused,
			  char *err, size_t errlen)
{
	bool share = vbd->engine && child &&
		     !(td_disk_flags(child->ops) & TD_DISK_FILTER) &&
		     (flags & TD_OPEN_RDONLY) &&
		     !(td_disk_flags(ops) & (TD_DISK_FILTER | TD_DISK_NO_FILE));
	td_image_t *img;
	char *real = NULL, why[512];
	struct stat st;
	int rc, fd = -1;

	*reused = false;

	if (!(td_disk_flags(ops) & (TD_DISK_FILTER | TD_DISK_NO_FILE))) {
		rc = td_engine_check_path(vbd->engine, path, &real, why,
					  sizeof(why));
		if (rc == -ENOMEM)
			return rc;
		if (rc && child &&
		    !(td_disk_flags(child->ops) & TD_DISK_FILTER))
			snprintf(err, errlen, "%s: parent %s", child->name,
				 why);
		else if (rc)
			snprintf(err, errlen, "image %s", why);
		if (rc)
			return rc;
	}
	if (share && stat(real ? real : path, &st) == 0 &&
	    (img = shared_find(vbd->engine, ops, flags, st.st_dev,
			       st.st_ino))) {
		free(real);
		rc = shared_hold_chain(img, vbd->owner);
		if (rc)
			return rc;
		*out = img;
		*reused = true;
		return 0;
	}
	img = calloc(1, sizeof(*img));
	if (!img) {
		free(real);
		return -ENOMEM;
	}
	img->drv.ops = ops;
	/*
	 * With a policy, the file it approved is opened now, once, and the
	 * lock and the driver's opens all use that file (td_open_file).
	 */
	if (real && (rc = vbd_open_checked(real, &fd, err, errlen))) {
		free(real);
		free(img);
		return rc;
	}
	if (!(td_disk_flags(ops) & (TD_DISK_FILTER | TD_DISK_NO_FILE))) {
		/*
		 * Before the driver reads (or repairs) anything.  A shared
		 * image's lock is its own (it outlives any one VBD); one this
		 * VBD holds read-write too (a snapshot's old leaf) cannot be:
		 * it stays private.
		 */
		rc = -EBUSY;
		if (share) {
			snprintf(img->lock_name, sizeof(img->lock_name), "%s",
				 vbd->owner->name);
			rc = vbd_image_lock(vbd, img, real ? real : path, fd,
					    child, flags, img, img->lock_name,
					    err, errlen);
		}
		if (rc == -EBUSY) {
			share = false;
			rc = vbd_image_lock(vbd, img, real ? real : path, fd,
					    child, flags, vbd->owner,
					    vbd->owner->name, err, errlen);
		}
		if (rc) {
			if (fd >= 0)
				close(fd);
			free(real);
			free(img);
			return rc;
		}
	}
	/* Drivers never see the engine's TD_OPEN_STANDBY. */
	flags &= ~TD_OPEN_STANDBY;
	img->drv.ops = ops;
	img->drv.flags = flags;
	img->drv.engine = vbd->engine;
	img->drv.name = strdup(path);
	if (ops->private_data_size)
		img->drv.data = calloc(1, ops->private_data_size);
	if (!img->drv.name || (ops->private_data_size && !img->drv.data)) {
		if (fd >= 0)
			close(fd);
		free(real);
		vbd_image_free(img);
		return -ENOMEM;
	}
	if (share && fd >= 0 && fstat(fd, &st) < 0)
		share = false;
	if (fd >= 0)
		td_open_redirect(real, fd);
	rc = ops->td_open(&img->drv, real ? real : path, flags);
	if (fd >= 0) {
		td_open_redirect(NULL, -1);
		close(fd);
	}
	free(real);
	if (rc < 0) {
		if (img->drv.error[0])
			td_msgf(err, errlen, "%s", img->drv.error);
		else
			snprintf(err, errlen, "%s: cannot open as %s: %s",
				 path, ops->name, strerror(-rc));
		vbd_image_free(img);
		return rc;
	}
	if (!img->drv.info.size && !(td_disk_flags(ops) & TD_DISK_FILTER)) {
		snprintf(err, errlen, "%s: image has size 0", path);
		ops->td_close(&img->drv);
		vbd_image_free(img);
		return -EINVAL;
	}
	if (share && shared_hold(img, vbd->owner) == 0) {
		img->shared = true;
		img->dev = st.st_dev;
		img->ino = st.st_ino;
		td_list_add_tail(&img->link, &vbd->engine->shared_images);
	}
	*out = img;
	return 0;
}

static void vbd_free(td_vbd_t *vbd)
{
	unsigned i;

	td_timer_cancel(&vbd->pause_timer);
	td_timer_cancel(&vbd->watchdog);
	td_timer_cancel(&vbd->close_timer);
	td_timer_cancel(&vbd->takeover_timer);
	td_timer_cancel(&vbd->release_timer);
	for (i = 0; i < vbd->nimages; i++)
		vbd_image_put(vbd->images[i], vbd->owner);
	free(vbd->images);
	free(vbd);
}

/* Split "driver:path" in place-free form. */
static int vbd_parse_spec(const char *spec, char *drv, size_t drvlen,
			  const char **path)
{
	const char *colon = strchr(spec, ':');

	if (!colon || colon == spec || (size_t)(colon - spec) >= drvlen ||
	    !colon[1])
		return -EINVAL;
	memcpy(drv, spec, (size_t)(colon - spec));
	drv[colon - spec] = '\0';
	*path = colon + 1;
	return 0;
}

/* The driver and path of "driver:path", or -EINVAL and err. */
static int vbd_spec_driver(const char *spec, const struct tap_disk **ops,
			   const char **path, char *err, size_t errlen)
{
	char dname[64];

	if (vbd_parse_spec(spec, dname, sizeof(dname), path)) {
		snprintf(err, errlen, "'%s' is not DRIVER:PATH", spec);
		return -EINVAL;
	}
	*ops = td_driver_find(dname);
	if (!*ops) {
		snprintf(err, errlen, "unknown driver '%s'", dname);
		return -EINVAL;
	}
	return 0;
}

int vbd_open(struct td_engine *e, const char *spec, td_flag_t flags,
	     const struct vbd_params *params, td_vbd_t **out,
	     char *err, size_t errlen)
{
	const struct tap_disk *ops;
	const char *path;
	int rc = vbd_spec_driver(spec, &ops, &path, err, errlen);

	if (rc)
		return rc;
	return vbd_open_ops(e, ops, path, flags, params, out, err, errlen);
}

int vbd_open_ops(struct td_engine *e, const struct tap_disk *ops,
		 const char *path, td_flag_t flags,
		 const struct vbd_params *params, td_vbd_t **out,
		 char *err, size_t errlen)
{
	return vbd_open_owned(e, ops, path, flags, params, NULL, out, err,
			      errlen);
}

void vbd_set_name(td_vbd_t *vbd, const char *name)
{
	unsigned i;

	snprintf(vbd->name, sizeof(vbd->name), "%s", name);
	for (i = 0; i < vbd->nimages; i++)
		if (vbd->images[i]->shared)
			shared_name(vbd->images[i]);
}

/*
 * Open a chain whose images owner holds (NULL: the new VBD itself, named
 * after its leaf until vbd_set_name()).
 */
static int vbd_open_owned(struct td_engine *e, const struct tap_disk *ops,
			  const char *path, td_flag_t flags,
			  const struct vbd_params *params,
			  const td_vbd_t *owner, td_vbd_t **out, char *err,
			  size_t errlen)
{
	td_vbd_t *vbd;
	bool reused;
	int rc;

	vbd = calloc(1, sizeof(*vbd));
	if (!vbd)
		return -ENOMEM;
	vbd->images = calloc(TD_MAX_CHAIN, sizeof(*vbd->images));
	if (!vbd->images) {
		free(vbd);
		return -ENOMEM;
	}
	vbd->owner = owner ? owner : vbd;
	snprintf(vbd->name, sizeof(vbd->name), "the VBD of %s", path);
	vbd->engine = e;
	if (params)
		vbd->params = *params;
	else
		vbd_params_default(&vbd->params);
	if (!vbd->params.max_segment_secs)
		vbd->params.max_segment_secs = VBD_MAX_SEGMENT_SECS;
	vbd->rdonly = flags & TD_OPEN_RDONLY;
	td_list_init(&vbd->queue);
	td_list_init(&vbd->active);
	td_timer_init(&vbd->pause_timer, vbd_pause_timer, vbd);
	td_timer_init(&vbd->watchdog, vbd_watchdog, vbd);
	td_timer_init(&vbd->close_timer, vbd_close_timer, vbd);
	td_timer_init(&vbd->takeover_timer, vbd_takeover_timer, vbd);
	td_timer_init(&vbd->release_timer, vbd_release_timer, vbd);
	if (flags & TD_OPEN_STANDBY) {
		/* What is taken over is the leaf: a filter's is below it. */
		rc = vbd->rdonly ? -EINVAL : (td_disk_flags(ops) &
					      TD_DISK_FILTER) ? -ENOTSUP : 0;
		if (rc) {
			snprintf(err, errlen, "%s: %s", path, vbd->rdonly ?
				 "a read-only VBD cannot be in standby" :
				 "a filter cannot be opened in standby");
			goto fail;
		}
		vbd->hold = VBD_HOLD_STANDBY;
		flags |= TD_OPEN_RDONLY;
	}

	rc = vbd_image_open(vbd, ops, path, NULL, flags, &vbd->images[0],
			    &reused, err, errlen);
	if (rc)
		goto fail;
	vbd->nimages = 1;
	for (;;) {
		td_image_t *child = vbd->images[vbd->nimages - 1], *parent, *p;
		const struct tap_disk *pops = child->drv.ops;
		td_disk_id_t id;

		if (flags & TD_OPEN_LEAF_ONLY)
			break;
		rc = td_drv_get_parent_id(&child->drv, &id);
		if (rc == TD_NO_PARENT)
			break;
		if (rc < 0) {
			if (child->drv.error[0])
				td_msgf(err, errlen, "%s", child->drv.error);
			else
				snprintf(err, errlen, "%s: cannot read "
					 "parent: %s", child->drv.name,
					 strerror(-rc));
			goto fail;
		}
		if (vbd->nimages == TD_MAX_CHAIN) {
			snprintf(err, errlen, "%s: chain longer than %d "
				 "images (a loop?)", vbd->images[0]->drv.name,
				 TD_MAX_CHAIN);
			free(id.name);
			free(id.drivertype);
			rc = -ELOOP;
			goto fail;
		}
		if (id.drivertype && !(pops = td_driver_find(id.drivertype))) {
			snprintf(err, errlen, "%s: parent %s has unknown "
				 "driver '%s'", child->drv.name, id.name,
				 id.drivertype);
			rc = -EINVAL;
		} else {
			bool filter = td_disk_flags(child->drv.ops) &
				      TD_DISK_FILTER;

			rc = vbd_image_open(vbd, pops, id.name, &child->drv,
					    filter ? child->drv.flags :
					    (flags & ~TD_OPEN_STANDBY) |
					    TD_OPEN_RDONLY, &parent,
					    &reused, err, errlen);
		}
		free(id.name);
		free(id.drivertype);
		if (rc)
			goto fail;
		/* A shared parent comes with its own chain, held already. */
		for (p = parent; p; p = reused ? p->parent : NULL) {
			if (vbd->nimages == TD_MAX_CHAIN) {
				snprintf(err, errlen, "%s: chain longer than "
					 "%d images", vbd->images[0]->drv.name,
					 TD_MAX_CHAIN);
				for (; p; p = p->parent)
					vbd_image_put(p, vbd->owner);
				rc = -ELOOP;
				goto fail;
			}
			vbd->images[vbd->nimages++] = p;
		}
		rc = td_drv_validate_parent(&child->drv, &parent->drv, flags);
		if (rc) {
			if (child->drv.error[0])
				td_msgf(err, errlen, "%s", child->drv.error);
			else
				snprintf(err, errlen, "%s is not the parent "
					 "%s was made on: %s",
					 parent->drv.name, child->drv.name,
					 strerror(-rc));
			goto fail;
		}
		child->parent = parent;
		if (reused)
			break;
	}
	/* Filters took their size from below; an unfiltered 0 was refused. */
	for (unsigned i = vbd->nimages; i-- > 0;)
		if (td_disk_flags(vbd->images[i]->drv.ops) & TD_DISK_FILTER &&
		    vbd->images[i]->parent)
			vbd->images[i]->drv.info =
				vbd->images[i]->parent->drv.info;
	if (!vbd->images[0]->drv.info.size) {
		snprintf(err, errlen, "%s: nothing below the filter",
			 vbd->images[0]->drv.name);
		rc = -EINVAL;
		goto fail;
	}
	/* Reads go down the chain at the leaf's offsets: the largest. */
	vbd->io_align = TD_SECTOR_SIZE;
	for (unsigned i = 0; i < vbd->nimages; i++) {
		uint32_t a = vbd->images[i]->drv.info.io_align;

		if (a > TD_MAX_IO_ALIGN || (a & (a - 1)) ||
		    (a && a < TD_SECTOR_SIZE)) {
			snprintf(err, errlen, "%s: I/O alignment %u is not a "
				 "power of two from %u to %u",
				 vbd->images[i]->drv.name, a, TD_SECTOR_SIZE,
				 TD_MAX_IO_ALIGN);
			rc = -EINVAL;
			goto fail;
		}
		if (a > vbd->io_align)
			vbd->io_align = a;
	}
	/* Open: said (not a shared image's: what it refuses since stays). */
	for (unsigned i = 0; i < vbd->nimages; i++)
		if (!vbd->images[i]->shared || vbd->images[i]->users == 1)
			vbd->images[i]->drv.error[0] = '\0';
	if (vbd->images[0]->drv.info.size & ((vbd->io_align >>
					       TD_SECTOR_SHIFT) - 1)) {
		snprintf(err, errlen, "%s: size %llu is not a multiple of "
			 "the %u-byte I/O alignment of its storage",
			 vbd->images[0]->drv.name, (unsigned long long)
			 (vbd->images[0]->drv.info.size << TD_SECTOR_SHIFT),
			 vbd->io_align);
		rc = -EINVAL;
		goto fail;
	}
	*out = vbd;
	return 0;
fail:
	vbd_free(vbd);
	return rc;
}

int vbd_close(td_vbd_t *vbd)
{
	int rc = 0, r;
	unsigned i;

	if (vbd->failed && vbd->inflight && !vbd->nqueued) {
		/* Stuck in the image: the last to return frees the VBD. */
		vbd->closing = true;
		td_timer_cancel(&vbd->pause_timer);
		td_timer_cancel(&vbd->watchdog);
		return 0;
	}
	if (vbd->inflight || vbd->nqueued || vbd->releasing ||
	    (vbd->taking_over && vbd->takeover_cb))
		return -EBUSY;
	td_timer_cancel(&vbd->pause_timer);
	td_timer_cancel(&vbd->watchdog);
	td_timer_cancel(&vbd->close_timer);
	td_timer_cancel(&vbd->takeover_timer);
	for (i = 0; i < vbd->nimages; i++) {
		r = vbd_image_put(vbd->images[i], vbd->owner);
		if (r && !rc)
			rc = r;
	}
	vbd->nimages = 0;
	free(vbd->images);
	free(vbd);
	return rc;
}

int vbd_reopen(td_vbd_t *vbd, const char *spec, char *err, size_t errlen)
{
	const struct tap_disk *ops;
	const char *path;
	td_image_t **old;
	td_vbd_t *nv;
	unsigned n, i;
	int rc;

	if (vbd->inflight || vbd->state != VBD_PAUSED) {
		snprintf(err, errlen, "the VBD must be paused and drained");
		return -EBUSY;
	}
	if (vbd->hold != VBD_HOLD_ACTIVE || vbd->taking_over) {
		snprintf(err, errlen, "the VBD does not hold its image "
			 "read-write (standby or released)");
		return -EBUSY;
	}
	rc = vbd_spec_driver(spec, &ops, &path, err, errlen);
	if (rc)
		return rc;
	/* The new chain's images are held by this VBD, as the old ones. */
	rc = vbd_open_owned(vbd->engine, ops, path,
			    vbd->rdonly ? TD_OPEN_RDONLY : 0, &vbd->params,
			    vbd, &nv, err, errlen);
	if (rc)
		return rc;
	if (vbd_size(nv) != vbd_size(vbd)) {
		snprintf(err, errlen, "%s has %llu bytes, the VBD %llu", spec,
			 (unsigned long long)vbd_size(nv),
			 (unsigned long long)vbd_size(vbd));
		vbd_free(nv);
		return -EINVAL;
	}
	old = vbd->images;
	n = vbd->nimages;
	vbd->images = nv->images;
	vbd->nimages = nv->nimages;
	vbd->io_align = nv->io_align;
	nv->images = old;
	nv->nimages = n;
	rc = 0;
	for (i = 0; i < n; i++) {
		int r = vbd_image_put(old[i], vbd->owner);

		if (r && !rc)
			rc = r;
	}
	free(old);
	free(nv);
	if (rc)
		td_log(TD_LOG_WARN, "closing the old chain: %s",
		       strerror(-rc));
	return 0;
}

/* ---- request path --------------------------------------------------- */

static bool vbd_transient(const td_vbd_t *vbd, int err)
{
	return err == -EAGAIN || err == -EBUSY || err == -EINTR ||
	       (err == -EIO && vbd->params.retry_eio);
}

static void vbd_stage_add(struct vbd_stats *s, enum vbd_stage stage,
			  uint64_t ns)
{
	s->stage_ns[stage] += ns;
	s->stage_lat[stage][vbd_lat_bucket(ns / 1000)]++;
}

static void vbd_account(td_vbd_t *vbd, struct vbd_request *vreq, int err)
{
	struct vbd_stats *s = &vbd->stats;
	uint64_t ns, bytes = (uint64_t)vreq->secs << TD_SECTOR_SHIFT;

	vreq->done_ns = td_now_ns();
	ns = vreq->done_ns - vreq->start_ns;
	s->staged++;
	vbd_stage_add(s, VBD_STAGE_QUEUE, vreq->start_ns - vreq->arrive_ns);
	vbd_stage_add(s, VBD_STAGE_IO, ns);
	if (err)
		s->errors++;
	if (ns > s->max_ns)
		s->max_ns = ns;
	s->lat[vreq->op][vbd_lat_bucket(ns / 1000)]++;
	switch (vreq->op) {
	case TD_OP_READ:
		s->reads++;
		s->read_bytes += bytes;
		s->read_ns += ns;
		break;
	case TD_OP_WRITE:
		s->writes++;
		s->write_bytes += vreq->rmw_len ? vreq->rmw_len : bytes;
		s->write_ns += ns;
		break;
	case TD_OP_FLUSH:
		s->flushes++;
		break;
	case TD_OP_DISCARD:
		s->discards++;
		break;
	}
}

static void vbd_notify_paused(td_vbd_t *vbd)
{
	vbd_notify_cb_t cb = vbd->pause_cb;

	vbd->pause_cb = NULL;
	if (cb)
		cb(vbd, vbd->pause_arg, 0);
}

static void vbd_pause_timer(struct td_timer *t)
{
	vbd_notify_paused(t->arg);
}

/* defer: called from a completion, so report from the loop. */
static void vbd_check_paused(td_vbd_t *vbd, bool defer)
{
	if (vbd->state != VBD_PAUSING || vbd->inflight)
		return;
	vbd->state = VBD_PAUSED;
	if (!vbd->pause_cb)
		return;
	if (defer)
		td_timer_arm(vbd->engine->loop, &vbd->pause_timer, 0);
	else
		vbd_notify_paused(vbd);
}

static void vbd_finish(td_vbd_t *vbd, struct vbd_request *vreq, int err)
{
	if (vreq->rmw_len)
		vbd->exclusive = false;
	vbd->inflight--;
	td_list_del(&vreq->active);
	vbd_account(vbd, vreq, err);
	vreq->cb(vreq, err);
	if (vbd->closing) {
		/* From the loop: we may be inside the driver's completion. */
		if (!vbd->inflight)
			td_timer_arm(vbd->engine->loop, &vbd->close_timer, 0);
		return;
	}
	vbd_check_paused(vbd, true);
	vbd_kick(vbd);
}

static void vbd_retry_timer(struct td_timer *t)
{
	struct vbd_request *vreq = t->arg;

	vbd_dispatch(vreq->vbd, vreq);
}

/* One attempt of vreq is over: finish, retry, or go on with the RMW. */
static void vbd_attempt_done(td_vbd_t *vbd, struct vbd_request *vreq)
{
	int err = vreq->error;
	uint64_t now, delay_ms, left_ms;

	if (!err && vreq->rmw_reading) {
		memcpy(vreq->buf + vreq->rmw_off, vreq->rmw_data,
		       vreq->rmw_len);
		vreq->rmw_reading = false;
		vbd_dispatch(vbd, vreq);
		return;
	}
	if (!err || !vbd_transient(vbd, err) || vbd->failed) {
		vbd_finish(vbd, vreq, err);
		return;
	}
	now = td_now_ns();
	if (vreq->retries >= vbd->params.retry_max ||
	    now >= vreq->deadline_ns) {
		td_log(TD_LOG_ERR, "%s: %s of %u sectors at %llu failed "
		       "after %u retries: %s", vbd->images[0]->drv.name,
		       vreq->op == TD_OP_READ ? "read" : "write", vreq->secs,
		       (unsigned long long)vreq->sec, vreq->retries,
		       strerror(-err));
		vbd_finish(vbd, vreq, -EIO);
		return;
	}
	delay_ms = (uint64_t)vbd->params.retry_delay_ms <<
		   (vreq->retries < 32 ? vreq->retries : 32);
	left_ms = (vreq->deadline_ns - now + 999999) / 1000000;
	if (delay_ms > left_ms)
		delay_ms = left_ms;
	vreq->retries++;
	vbd->stats.retries++;
	td_timer_init(&vreq->retry_timer, vbd_retry_timer, vreq);
	td_timer_arm(vbd->engine->loop, &vreq->retry_timer, delay_ms);
}

static void vbd_treq_done(td_request_t treq, int err)
{
	struct vbd_request *vreq = treq.cb_data;

	if (err && !vreq->error)
		vreq->error = err;
	/* Each sector of the attempt (a flush: once) completes once. */
	assert(treq.op == TD_OP_FLUSH || (treq.sec >= vreq->sec &&
	       treq.sec - vreq->sec + treq.secs <= vreq->secs));
	assert(vreq->units_done + (treq.op == TD_OP_FLUSH ? 1 : treq.secs) <=
	       (vreq->op == TD_OP_FLUSH ? 1 : vreq->secs));
	vreq->units_done += treq.op == TD_OP_FLUSH ? 1 : treq.secs;
	if (!vreq->dispatching && vreq->units_done >= (vreq->op == TD_OP_FLUSH ?
						       1 : vreq->secs))
		vbd_attempt_done(vreq->vbd, vreq);
}

/* Hand one attempt of vreq to the leaf, in segments. */
static void vbd_dispatch(td_vbd_t *vbd, struct vbd_request *vreq)
{
	td_image_t *leaf = vbd->images[0];
	uint32_t max = vbd->params.max_segment_secs, done = 0, n;
	td_request_t treq = {
		.image = leaf,
		.cb = vbd_treq_done,
		.cb_data = vreq,
	};

	vreq->error = 0;
	vreq->units_done = 0;
	vreq->dispatching = true;
	treq.op = vreq->rmw_reading ? TD_OP_READ : vreq->op;
	if (vreq->op == TD_OP_FLUSH) {
		td_drv_queue(&leaf->drv, treq);
	} else if (vreq->op == TD_OP_DISCARD) {
		treq.sec = vreq->sec;
		treq.secs = vreq->secs;
		td_drv_queue(&leaf->drv, treq);
	} else {
		while (done < vreq->secs) {
			n = vreq->secs - done;
			if (n > max)
				n = max;
			treq.buf = vreq->buf +
				   ((size_t)done << TD_SECTOR_SHIFT);
			treq.sec = vreq->sec + done;
			treq.secs = n;
			done += n;
			td_drv_queue(&leaf->drv, treq);
		}
	}
	vreq->dispatching = false;
	if (vreq->units_done >= (vreq->op == TD_OP_FLUSH ? 1 : vreq->secs))
		vbd_attempt_done(vbd, vreq);
}

static void vbd_start(td_vbd_t *vbd, struct vbd_request *vreq)
{
	vbd->inflight++;
	vreq->start_ns = td_now_ns();
	vreq->deadline_ns = vreq->start_ns +
			    (uint64_t)vbd->params.deadline_ms * 1000000ull;
	vreq->abandoned = false;
	td_list_add_tail(&vreq->active, &vbd->active);
	if (!vbd->watchdog.armed && vbd->engine)
		td_timer_arm(vbd->engine->loop, &vbd->watchdog,
			     (uint64_t)vbd->params.deadline_ms +
			     VBD_WATCHDOG_GRACE_MS);
	if (vreq->rmw_len) {
		vbd->exclusive = true;
		vreq->rmw_reading = true;
	}
	vbd_dispatch(vbd, vreq);
}

static bool vbd_writes(const struct vbd_request *vreq)
{
	return vreq->op == TD_OP_WRITE || vreq->op == TD_OP_DISCARD;
}

static void vbd_takeover_start(td_vbd_t *vbd);

/* A VBD in standby takes its image over at the first write. */
static void vbd_takeover_on_write(td_vbd_t *vbd)
{
	struct td_list *pos;

	if (vbd->hold != VBD_HOLD_STANDBY || vbd->taking_over ||
	    vbd->state != VBD_RUNNING || vbd->failed)
		return;
	for (pos = vbd->queue.next; pos != &vbd->queue; pos = pos->next)
		if (vbd_writes(td_container_of(pos, struct vbd_request,
					       link))) {
			vbd_takeover_start(vbd);
			return;
		}
}

static void vbd_kick(td_vbd_t *vbd)
{
	if (vbd->kicking) {
		vbd->kick_again = true;
		return;
	}
	vbd->kicking = true;
	do {
		vbd->kick_again = false;
		while (vbd->state == VBD_RUNNING && !vbd->exclusive &&
		       vbd->hold != VBD_HOLD_STANDBY && !vbd->taking_over &&
		       !td_list_empty(&vbd->queue)) {
			struct vbd_request *vreq =
				td_container_of(vbd->queue.next,
						struct vbd_request, link);

			if (vreq->rmw_len && vbd->inflight)
				break;	/* runs alone: wait for the others */
			td_list_del(&vreq->link);
			vbd->nqueued--;
			/* Queued while the VBD released its image. */
			if (vbd->hold == VBD_HOLD_RELEASED &&
			    vbd_writes(vreq)) {
				vbd->stats.errors++;
				vreq->cb(vreq, -EROFS);
				continue;
			}
			vbd_start(vbd, vreq);
		}
		vbd_takeover_on_write(vbd);
	} while (vbd->kick_again);
	vbd->kicking = false;
}

static int vbd_check_request(const td_vbd_t *vbd,
			     const struct vbd_request *vreq)
{
	uint64_t size = vbd->images[0]->drv.info.size;

	if ((vreq->op == TD_OP_WRITE || vreq->op == TD_OP_DISCARD) &&
	    (vbd->rdonly || (vbd->hold == VBD_HOLD_RELEASED &&
			     !vbd->taking_over)))
		return -EROFS;
	if (vreq->op == TD_OP_FLUSH)
		return 0;
	if (!vreq->secs || vreq->sec >= size || vreq->secs > size - vreq->sec)
		return vreq->op == TD_OP_READ ? -EIO : -ENOSPC;
	/* The caller aligns (vbd_io_align); a driver never sees less. */
	if (vreq->op != TD_OP_DISCARD &&
	    ((vreq->sec | vreq->secs) &
	     ((vbd->io_align >> TD_SECTOR_SHIFT) - 1)))
		return -EINVAL;
	if (vreq->rmw_len && (vreq->op != TD_OP_WRITE ||
	    (uint64_t)vreq->rmw_off + vreq->rmw_len >
	    (uint64_t)vreq->secs << TD_SECTOR_SHIFT))
		return -EINVAL;
	return 0;
}

void vbd_replied(td_vbd_t *vbd, struct vbd_request *vreq)
{
	struct vbd_stats *s = &vbd->stats;
	uint64_t now;

	if (!vreq->done_ns)
		return;
	now = td_now_ns();
	s->replied++;
	vbd_stage_add(s, VBD_STAGE_REPLY, now - vreq->done_ns);
	vbd_stage_add(s, VBD_STAGE_TOTAL, now - vreq->arrive_ns);
	vreq->done_ns = 0;	/* once */
}

void vbd_submit(td_vbd_t *vbd, struct vbd_request *vreq)
{
	vbd_submit_at(vbd, vreq, td_now_ns());
}

void vbd_submit_at(td_vbd_t *vbd, struct vbd_request *vreq,
		   uint64_t arrived_ns)
{
	int err;

	vreq->vbd = vbd;
	vreq->arrive_ns = arrived_ns;
	vreq->done_ns = 0;
	vreq->retries = 0;
	vreq->rmw_reading = false;
	td_list_init(&vreq->link);
	td_list_init(&vreq->active);
	err = vbd->failed ? -EIO : vbd_check_request(vbd, vreq);
	if (err) {
		vbd->stats.errors++;
		vreq->cb(vreq, err);
		return;
	}
	/*
	 * Nothing to flush where this VBD wrote nothing (standby) or
	 * flushed all it wrote (released); and its leaf may be switching.
	 */
	if (vreq->op == TD_OP_FLUSH && vbd->hold != VBD_HOLD_ACTIVE) {
		vreq->cb(vreq, 0);
		return;
	}
	if (vreq->pass_pause && vreq->op == TD_OP_FLUSH &&
	    vbd->state == VBD_PAUSED) {
		vbd_start(vbd, vreq);
		return;
	}
	td_list_add_tail(&vreq->link, &vbd->queue);
	vbd->nqueued++;
	vbd_kick(vbd);
}

/* ---- the watchdog ---------------------------------------------------- */

static void vbd_fail(td_vbd_t *vbd, const struct vbd_request *stuck,
		     uint64_t now)
{
	struct td_list *pos;
	vbd_notify_cb_t cb;

	vbd->failed = true;
	snprintf(vbd->fail_reason, sizeof(vbd->fail_reason), "%s: a %s of "
		 "%u sectors at %llu has been in the image for %llu ms "
		 "(deadline_ms %u): the storage does not answer",
		 vbd->images[0]->drv.name, stuck->op == TD_OP_READ ? "read" :
		 stuck->op == TD_OP_WRITE ? "write" : stuck->op ==
		 TD_OP_FLUSH ? "flush" : "discard", stuck->secs,
		 (unsigned long long)stuck->sec,
		 (unsigned long long)((now - stuck->start_ns) / 1000000),
		 vbd->params.deadline_ms);
	td_log(TD_LOG_ERR, "%s; the VBD is failed", vbd->fail_reason);
	while (!td_list_empty(&vbd->queue)) {
		struct vbd_request *q = td_container_of(vbd->queue.next,
							struct vbd_request,
							link);
		td_list_del(&q->link);
		vbd->nqueued--;
		vbd->stats.errors++;
		q->cb(q, -EIO);
	}
	for (pos = vbd->active.next; pos != &vbd->active; pos = pos->next) {
		struct vbd_request *a = td_container_of(pos,
							struct vbd_request,
							active);
		if (a->abandon && !a->abandoned) {
			a->abandoned = true;
			a->abandon(a);
		}
	}
	cb = vbd->pause_cb;
	vbd->pause_cb = NULL;
	if (cb)
		cb(vbd, vbd->pause_arg, -EIO);
}

/* Runs while requests are dispatched, at the oldest one's deadline. */
static void vbd_watchdog(struct td_timer *t)
{
	td_vbd_t *vbd = t->arg;
	const struct vbd_request *oldest;
	uint64_t now = td_now_ns(), due;

	if (td_list_empty(&vbd->active) || vbd->failed)
		return;
	oldest = td_container_of(vbd->active.next, struct vbd_request,
				 active);
	due = oldest->deadline_ns + VBD_WATCHDOG_GRACE_MS * 1000000ull;
	if (now < due) {
		td_timer_arm(vbd->engine->loop, &vbd->watchdog,
			     (due - now + 999999) / 1000000);
		return;
	}
	vbd_fail(vbd, oldest, now);
}

static void vbd_close_timer(struct td_timer *t)
{
	vbd_free(t->arg);
}

bool vbd_failed(const td_vbd_t *vbd)
{
	return vbd->failed;
}

const char *vbd_fail_reason(const td_vbd_t *vbd)
{
	return vbd->fail_reason;
}

int vbd_cancel(td_vbd_t *vbd, struct vbd_request *vreq)
{
	/* Only a waiting request is on the queue; a dispatched one is not. */
	if (vreq->vbd != vbd || td_list_empty(&vreq->link))
		return -EBUSY;
	td_list_del(&vreq->link);
	vbd->nqueued--;
	vbd->stats.interrupted++;
	vreq->cb(vreq, -EINTR);
	/* It may have been an RMW holding back the requests behind it. */
	vbd_kick(vbd);
	return 0;
}

/* ---- pause / resume ------------------------------------------------- */

int vbd_pause(td_vbd_t *vbd, vbd_notify_cb_t cb, void *arg)
{
	if (vbd->failed) {
		/* What is stuck in the image may never drain. */
		if (cb)
			cb(vbd, arg, -EIO);
		return 0;
	}
	if (vbd->state == VBD_PAUSED) {
		if (cb)
			cb(vbd, arg, 0);
		return 0;
	}
	if (vbd->state == VBD_PAUSING && vbd->pause_cb)
		return -EBUSY;
	vbd->state = VBD_PAUSING;
	vbd->pause_cb = cb;
	vbd->pause_arg = arg;
	vbd_check_paused(vbd, false);
	return 0;
}

void vbd_resume(td_vbd_t *vbd)
{
	vbd_notify_cb_t cb = vbd->pause_cb;

	/* The release's own pause: the VBD runs again once it is done. */
	if (vbd->releasing) {
		vbd->release_was_paused = false;
		return;
	}
	td_timer_cancel(&vbd->pause_timer);
	vbd->state = VBD_RUNNING;
	vbd->pause_cb = NULL;
	if (cb)
		cb(vbd, vbd->pause_arg, -ECANCELED);
	vbd_kick(vbd);
}

/* ---- handing the image over ---------------------------------------- */

/*
 * Reopen the leaf with flags (read-write to take the image over,
 * TD_OPEN_RDONLY | TD_OPEN_STANDBY to give it up) and switch to it: the
 * new instance is open, locked and has read the image's metadata as it
 * is now before the old one closes, so the VBD never is without a leaf
 * and its lock never lapses.  On failure the old leaf stays; -EBUSY
 * names the holder in err.
 */
static int vbd_switch_leaf(td_vbd_t *vbd, td_flag_t flags, char *err,
			   size_t errlen)
{
	td_image_t *old = vbd->images[0], *img;
	bool reused;
	int rc;

	rc = vbd_image_open(vbd, old->drv.ops, old->drv.name, NULL, flags,
			    &img, &reused, err, errlen);
	if (rc)
		return rc;
	if (img->drv.info.size != old->drv.info.size) {
		snprintf(err, errlen, "%s has %llu bytes now, the VBD %llu",
			 old->drv.name, (unsigned long long)
			 (img->drv.info.size << TD_SECTOR_SHIFT),
			 (unsigned long long)vbd_size(vbd));
		rc = -EINVAL;
	} else if (img->drv.info.io_align > vbd->io_align) {
		snprintf(err, errlen, "%s: I/O alignment %u now, the VBD %u",
			 old->drv.name, img->drv.info.io_align, vbd->io_align);
		rc = -EINVAL;
	} else if (old->parent) {
		rc = td_drv_validate_parent(&img->drv, &old->parent->drv,
					    flags & ~TD_OPEN_STANDBY);
		if (rc)
			snprintf(err, errlen, "%s is not the parent %s was "
				 "made on: %s", old->parent->drv.name,
				 old->drv.name, strerror(-rc));
	}
	if (rc) {
		img->drv.ops->td_close(&img->drv);
		vbd_image_free(img);
		return rc;
	}
	img->parent = old->parent;
	img->drv.error[0] = '\0';
	vbd->images[0] = img;
	rc = vbd_image_put(old, vbd->owner);
	if (rc)
		td_log(TD_LOG_WARN, "%s: closing the old instance: %s",
		       img->drv.name, strerror(-rc));
	return 0;
}

static void vbd_takeover_done(td_vbd_t *vbd, int err)
{
	vbd_notify_cb_t cb = vbd->takeover_cb;

	vbd->taking_over = false;
	vbd->takeover_cb = NULL;
	if (err) {
		/* What waited for the take-over gives up with it. */
		while (!td_list_empty(&vbd->queue)) {
			struct vbd_request *q = td_container_of(
				vbd->queue.next, struct vbd_request, link);

			td_list_del(&q->link);
			vbd->nqueued--;
			vbd->stats.errors++;
			q->cb(q, -EIO);
		}
	}
	if (cb)
		cb(vbd, vbd->takeover_arg, err);
	vbd_kick(vbd);
}

/* One attempt to take the image over, from the loop. */
static void vbd_takeover_timer(struct td_timer *t)
{
	td_vbd_t *vbd = t->arg;
	uint64_t now, waited_ms, delay_ms;
	char why[sizeof(vbd->takeover_error) - 128];
	int rc;

	/* Reads of a released VBD still in the old leaf: let them finish. */
	if (vbd->inflight) {
		td_timer_arm(vbd->engine->loop, &vbd->takeover_timer, 1);
		return;
	}
	rc = vbd_switch_leaf(vbd, 0, why, sizeof(why));
	now = td_now_ns();
	waited_ms = (now - vbd->takeover_start_ns) / 1000000;
	if (!rc) {
		td_log(TD_LOG_INFO, "%s: took %s over (read-write) after %llu "
		       "ms", vbd->name, vbd->images[0]->drv.name,
		       (unsigned long long)waited_ms);
		vbd->hold = VBD_HOLD_ACTIVE;
		vbd->takeover_error[0] = '\0';
		vbd_takeover_done(vbd, 0);
		return;
	}
	if (rc == -EBUSY && waited_ms < vbd->params.deadline_ms) {
		/* The old writer has not released it yet: wait. */
		if (!vbd->takeover_tries)
			td_log(TD_LOG_INFO, "%s: waiting to take the image "
			       "over: %s", vbd->name, why);
		td_msgf(vbd->takeover_error, sizeof(vbd->takeover_error),
			"waiting %llu ms: %s", (unsigned long long)waited_ms,
			why);
		delay_ms = (uint64_t)vbd->params.retry_delay_ms <<
			   (vbd->takeover_tries < 16 ? vbd->takeover_tries :
			    16);
		if (delay_ms > VBD_TAKEOVER_MAX_DELAY_MS)
			delay_ms = VBD_TAKEOVER_MAX_DELAY_MS;
		if (delay_ms > vbd->params.deadline_ms - waited_ms)
			delay_ms = vbd->params.deadline_ms - waited_ms;
		vbd->takeover_tries++;
		td_timer_arm(vbd->engine->loop, &vbd->takeover_timer,
			     delay_ms ? delay_ms : 1);
		return;
	}
	if (rc == -EBUSY) {
		rc = -ETIMEDOUT;
		td_msgf(vbd->takeover_error, sizeof(vbd->takeover_error),
			"not taken over within deadline_ms %u: %s",
			vbd->params.deadline_ms, why);
	} else {
		td_msgf(vbd->takeover_error, sizeof(vbd->takeover_error),
			"cannot take the image over: %s", why);
	}
	td_log(TD_LOG_ERR, "%s: %s", vbd->name, vbd->takeover_error);
	vbd_takeover_done(vbd, rc);
}

static void vbd_takeover_start(td_vbd_t *vbd)
{
	vbd->taking_over = true;
	vbd->takeover_tries = 0;
	vbd->takeover_start_ns = td_now_ns();
	/* From the loop: the first write may come from a completion. */
	td_timer_arm(vbd->engine->loop, &vbd->takeover_timer, 0);
}

int vbd_activate(td_vbd_t *vbd, vbd_notify_cb_t cb, void *arg)
{
	if (vbd->rdonly)
		return -EROFS;
	if (vbd->failed)
		return -EIO;
	if (vbd->releasing || (vbd->taking_over && vbd->takeover_cb))
		return -EBUSY;
	if (vbd->hold == VBD_HOLD_ACTIVE) {
		if (cb)
			cb(vbd, arg, 0);
		return 0;
	}
	vbd->takeover_cb = cb;
	vbd->takeover_arg = arg;
	if (!vbd->taking_over)
		vbd_takeover_start(vbd);
	return 0;
}

static void vbd_release_done(td_vbd_t *vbd, int err, const char *why)
{
	vbd_notify_cb_t cb = vbd->release_cb;

	vbd->releasing = false;
	vbd->release_cb = NULL;
	if (err) {
		td_msgf(vbd->takeover_error, sizeof(vbd->takeover_error),
			"release failed: %s", why);
		td_log(TD_LOG_ERR, "%s: %s", vbd->name, vbd->takeover_error);
	} else {
		vbd->takeover_error[0] = '\0';
		td_log(TD_LOG_INFO, "%s: released %s (reads only)", vbd->name,
		       vbd->images[0]->drv.name);
	}
	if (!vbd->release_was_paused && !vbd->failed)
		vbd_resume(vbd);
	if (cb)
		cb(vbd, vbd->release_arg, err);
}

/* Drained and flushed: switch to a read-only leaf, from the loop. */
static void vbd_release_timer(struct td_timer *t)
{
	td_vbd_t *vbd = t->arg;
	char why[sizeof(vbd->takeover_error) - 64];
	int rc = vbd->release_err;

	if (rc) {
		snprintf(why, sizeof(why), "%s: flush: %s",
			 vbd->images[0]->drv.name, strerror(-rc));
		vbd_release_done(vbd, rc, why);
		return;
	}
	rc = vbd_switch_leaf(vbd, TD_OPEN_RDONLY | TD_OPEN_STANDBY, why,
			     sizeof(why));
	if (!rc)
		vbd->hold = VBD_HOLD_RELEASED;
	vbd_release_done(vbd, rc, why);
}

static void vbd_release_flushed(struct vbd_request *vreq, int err)
{
	td_vbd_t *vbd = vreq->cb_data;

	vbd->release_err = err;
	/* Not inside the driver's completion: the leaf closes next. */
	td_timer_arm(vbd->engine->loop, &vbd->release_timer, 0);
}

static void vbd_release_paused(td_vbd_t *vbd, void *arg, int err)
{
	struct vbd_request *f = &vbd->release_flush;

	(void)arg;
	if (err) {
		vbd_release_done(vbd, err, err == -ECANCELED ?
				 "resumed before it was drained" :
				 strerror(-err));
		return;
	}
	memset(f, 0, sizeof(*f));
	f->op = TD_OP_FLUSH;
	f->cb = vbd_release_flushed;
	f->cb_data = vbd;
	f->pass_pause = true;
	vbd_submit(vbd, f);
}

int vbd_release(td_vbd_t *vbd, vbd_notify_cb_t cb, void *arg)
{
	int rc;

	if (vbd->rdonly)
		return -EROFS;
	if (vbd->failed)
		return -EIO;
	if (vbd->hold == VBD_HOLD_STANDBY || vbd->taking_over)
		return -EINVAL;
	if (vbd->releasing || (vbd->state == VBD_PAUSING && vbd->pause_cb))
		return -EBUSY;
	if (vbd->hold == VBD_HOLD_RELEASED) {
		if (cb)
			cb(vbd, arg, 0);
		return 0;
	}
	vbd->releasing = true;
	vbd->release_cb = cb;
	vbd->release_arg = arg;
	vbd->release_err = 0;
	vbd->release_was_paused = vbd->state == VBD_PAUSED;
	rc = vbd_pause(vbd, vbd_release_paused, NULL);
	if (rc) {
		vbd->releasing = false;
		vbd->release_cb = NULL;
	}
	return rc;
}

enum vbd_hold vbd_hold(const td_vbd_t *vbd)
{
	return vbd->hold;
}

const char *vbd_takeover_error(const td_vbd_t *vbd)
{
	return vbd->takeover_error;
}

/* ---- accessors ------------------------------------------------------ */

enum vbd_state vbd_state(const td_vbd_t *vbd)
{
	return vbd->state;
}

unsigned vbd_inflight(const td_vbd_t *vbd)
{
	return vbd->inflight;
}

unsigned vbd_queued(const td_vbd_t *vbd)
{
	return vbd->nqueued;
}

uint32_t vbd_io_align(const td_vbd_t *vbd)
{
	return vbd->io_align;
}

uint64_t vbd_size(const td_vbd_t *vbd)
{
	return vbd->images[0]->drv.info.size << TD_SECTOR_SHIFT;
}

bool vbd_readonly(const td_vbd_t *vbd)
{
	return vbd->rdonly;
}

_Static_assert(TD_OP_DISCARD + 1 == VBD_LAT_OPS,
	       "one latency histogram per enum td_op");

unsigned vbd_lat_bucket(uint64_t us)
{
	unsigned b = us <= 1 ? 0 : 64 - (unsigned)__builtin_clzll(us - 1);

	return b < VBD_LAT_BUCKETS - 1 ? b : VBD_LAT_BUCKETS - 1;
}

uint64_t vbd_lat_quantile(const uint64_t *hist, unsigned permille)
{
	uint64_t total = 0, want, seen = 0, lo, hi;
	unsigned b;

	for (b = 0; b < VBD_LAT_BUCKETS; b++)
		total += hist[b];
	if (!total)
		return 0;
	/* The rank of the permille-th completion, at least the first. */
	want = (total * permille + 999) / 1000;
	if (!want)
		want = 1;
	for (b = 0; b < VBD_LAT_BUCKETS - 1; b++) {
		if (seen + hist[b] >= want)
			break;
		seen += hist[b];
	}
	lo = b ? 1ull << (b - 1) : 0;
	if (b == VBD_LAT_BUCKETS - 1)
		return lo;
	hi = 1ull << b;
	return lo + (hi - lo) * (want - seen) / hist[b];
}

void vbd_reset_stats(td_vbd_t *vbd)
{
	memset(&vbd->stats, 0, sizeof(vbd->stats));
}

const struct vbd_stats *vbd_get_stats(const td_vbd_t *vbd)
{
	return &vbd->stats;
}

td_driver_t *vbd_image(const td_vbd_t *vbd, unsigned depth)
{
	return depth < vbd->nimages ? &vbd->images[depth]->drv : NULL;
}

unsigned vbd_image_users(const td_vbd_t *vbd, unsigned depth)
{
	const td_image_t *img = depth < vbd->nimages ? vbd->images[depth] :
				NULL;

	return !img ? 0 : img->shared ? img->users : 1;
}

unsigned vbd_chain_length(const td_vbd_t *vbd)
{
	return vbd->nimages;
}
