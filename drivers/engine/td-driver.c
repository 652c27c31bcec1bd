/* SPDX-License-Identifier: MIT */
/*
 * The driver interface of include/tapfs/tapdisk.h, engine side, in this
 * one file:
 *   - what a driver calls: td_complete_request, td_forward_request,
 *     td_prep_* and td_queue_tiocb, td_check_path, td_parent_* (a
 *     parent's path, probe and id), and the services on
 *     another driver's image, td_probe_driver and td_image_size;
 *   - what the engine calls on a driver, td_drv_*: every optional
 *     callback's default lives here, so no driver carries stubs;
 *   - the check of a driver's table (td_driver_validate).
 * The table of built-in drivers is td-registry.c; td_parse_size, pure
 * and fuzzed alone with the .ctl parser, td-util.c.  This file knows the
 * engine only through its headers (td-image.h for a chain's links): the
 * VBD code calls in here, never the other way round.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>
#include <tapfs/tapdisk.h>

#include "td-image.h"

/* ---- what a driver does with a request ----------------------------- */

void td_complete_request(td_request_t treq, int err)
{
	treq.cb(treq, err);
}

/* A request (or its tail) that lies past the base of the chain. */
static void td_past_base(td_request_t treq)
{
	switch (treq.op) {
	case TD_OP_READ:
		memset(treq.buf, 0, (size_t)treq.secs << TD_SECTOR_SHIFT);
		td_complete_request(treq, 0);
		return;
	case TD_OP_FLUSH:
	case TD_OP_DISCARD:
		td_complete_request(treq, 0);
		return;
	case TD_OP_WRITE:
		break;
	}
	td_complete_request(treq, -EROFS);
}

void td_forward_request(td_request_t treq)
{
	td_image_t *parent = treq.image ? treq.image->parent : NULL;
	uint64_t psize;

	if (!parent) {
		td_past_base(treq);
		return;
	}
	treq.image = parent;
	psize = parent->drv.info.size;
	if (treq.op != TD_OP_FLUSH && treq.sec + treq.secs > psize) {
		/* A parent smaller than its child ends early: zeros after. */
		td_request_t tail = treq;
		uint32_t n = treq.sec < psize ? (uint32_t)(psize - treq.sec) : 0;

		tail.sec += n;
		tail.secs -= n;
		if (tail.buf)
			tail.buf += (size_t)n << TD_SECTOR_SHIFT;
		treq.secs = n;
		if (n)
			td_drv_queue(&parent->drv, treq);
		td_past_base(tail);
		return;
	}
	td_drv_queue(&parent->drv, treq);
}

/* ---- asynchronous I/O ---------------------------------------------- */

void td_prep_read(struct tiocb *t, int fd, char *buf, size_t len,
		  off_t off, td_tiocb_cb_t cb, void *arg)
{
	io_prep_pread(&t->iocb, fd, buf, len, off);
	t->cb = cb;
	t->arg = arg;
	t->next = t->merged = NULL;
	t->merge_count = 1;
	t->nomerge = false;
}

void td_prep_write(struct tiocb *t, int fd, char *buf, size_t len,
		   off_t off, td_tiocb_cb_t cb, void *arg)
{
	io_prep_pwrite(&t->iocb, fd, buf, len, off);
	t->cb = cb;
	t->arg = arg;
	t->next = t->merged = NULL;
	t->merge_count = 1;
	t->nomerge = false;
}

void td_prep_fsync(struct tiocb *t, int fd, td_tiocb_cb_t cb, void *arg)
{
	io_prep_fsync(&t->iocb, fd);
	t->cb = cb;
	t->arg = arg;
	t->next = t->merged = NULL;
	t->merge_count = 1;
	t->nomerge = true;
}

static bool tiocb_is_sync(const struct tiocb *t)
{
	return t->iocb.aio_lio_opcode == IO_CMD_FSYNC ||
	       t->iocb.aio_lio_opcode == IO_CMD_FDSYNC;
}

void td_queue_tiocb(td_driver_t *drv, struct tiocb *t)
{
	/* TD_OPEN_UNSAFE (QEMU's cache=unsafe): fsyncs never reach disk. */
	if ((drv->flags & TD_OPEN_UNSAFE) && tiocb_is_sync(t))
		td_aio_queue_complete_later(drv->engine->aioq, t);
	else
		td_aio_queue_add(drv->engine->aioq, t);
}

/* ---- helpers for drivers ------------------------------------------- */

int td_engine_check_path(struct td_engine *e, const char *path,
			 char **real, char *err, size_t errlen)
{
	*real = NULL;
	if (!e || !e->path_policy)
		return 0;
	return e->path_policy(e->path_policy_arg, path, real, err, errlen);
}

int td_check_path(td_driver_t *drv, const char *path)
{
	char *real;
	int rc;

	rc = td_engine_check_path(drv->engine, path, &real, drv->error,
				  sizeof(drv->error));
	free(real);
	return rc;
}

/* ---- drivers' settings and shared state ----------------------------- */

struct td_engine_opt {
	struct td_list	 link;
	char		*name;
	char		*value;
};

struct td_driver_state {
	struct td_list		 link;
	const struct tap_disk	*ops;
	void			*state;
	td_driver_state_fini_t	 fini;
};

static struct td_engine_opt *td_engine_opt_find(const struct td_engine *e,
						const char *name)
{
	struct td_list *pos;

	for (pos = e->options.next; pos != &e->options; pos = pos->next) {
		struct td_engine_opt *o = td_container_of(pos,
						struct td_engine_opt, link);
		if (!strcmp(o->name, name))
			return o;
	}
	return NULL;
}

int td_engine_set_option(struct td_engine *e, const char *name,
			 const char *value)
{
	struct td_engine_opt *o = td_engine_opt_find(e, name);
	char *v = strdup(value);

	if (!v)
		return -ENOMEM;
	if (o) {
		free(o->value);
		o->value = v;
		return 0;
	}
	o = calloc(1, sizeof(*o));
	if (!o || !(o->name = strdup(name))) {
		free(o);
		free(v);
		return -ENOMEM;
	}
	o->value = v;
	td_list_add_tail(&o->link, &e->options);
	return 0;
}

const char *td_engine_option(const struct td_engine *e, const char *name)
{
	const struct td_engine_opt *o = e ? td_engine_opt_find(e, name) : NULL;

	return o ? o->value : NULL;
}

static struct td_driver_state *td_driver_state_find(
	const struct td_engine *e, const struct tap_disk *ops)
{
	struct td_list *pos;

	for (pos = e->driver_states.next; pos != &e->driver_states;
	     pos = pos->next) {
		struct td_driver_state *d = td_container_of(pos,
						struct td_driver_state, link);
		if (d->ops == ops)
			return d;
	}
	return NULL;
}

void *td_engine_driver_state(const struct td_engine *e,
			     const struct tap_disk *ops)
{
	struct td_driver_state *d = td_driver_state_find(e, ops);

	return d ? d->state : NULL;
}

int td_engine_set_driver_state(struct td_engine *e,
			       const struct tap_disk *ops, void *state,
			       td_driver_state_fini_t fini)
{
	struct td_driver_state *d;

	if (td_driver_state_find(e, ops))
		return -EEXIST;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->ops = ops;
	d->state = state;
	d->fini = fini;
	td_list_add_tail(&d->link, &e->driver_states);
	return 0;
}

void td_engine_drivers_fini(struct td_engine *e)
{
	struct td_list *pos;

	while ((pos = e->driver_states.next) != &e->driver_states) {
		struct td_driver_state *d = td_container_of(pos,
						struct td_driver_state, link);
		td_list_del(&d->link);
		if (d->fini)
			d->fini(d->state);
		free(d);
	}
	while ((pos = e->options.next) != &e->options) {
		struct td_engine_opt *o = td_container_of(pos,
						struct td_engine_opt, link);
		td_list_del(&o->link);
		free(o->name);
		free(o->value);
		free(o);
	}
}

/* ---- a driver's parent ---------------------------------------------- */

int td_parent_check_path(td_driver_t *drv, const char *path,
			 const char *what)
{
	char why[sizeof(drv->error)];
	int rc = td_check_path(drv, path);

	if (!rc)
		return 0;
	td_msgf(why, sizeof(why), "%s", drv->error);
	td_msgf(drv->error, sizeof(drv->error), "%s: %s %s", drv->name, what,
		why[0] ? why : strerror(-rc));
	return rc;
}

int td_parent_id_set(td_disk_id_t *id, char *path, const char *driver)
{
	id->drivertype = strdup(driver);
	if (!id->drivertype) {
		free(path);
		id->name = NULL;
		return -ENOMEM;
	}
	id->name = path;
	return 0;
}

int td_parent_probe(td_driver_t *drv, char *path, const char *what,
		    td_disk_id_t *id)
{
	const char *driver;
	int rc;

	/* Its format is probed (the file read): ask the policy first. */
	rc = td_parent_check_path(drv, path, what);
	if (!rc) {
		rc = td_probe_driver(path, &driver);
		if (rc)
			td_msgf(drv->error, sizeof(drv->error), "%s: %s %s: %s",
				drv->name, what, path, strerror(-rc));
	}
	if (rc) {
		free(path);
		return rc;
	}
	return td_parent_id_set(id, path, driver);
}

int td_parent_any(td_driver_t *drv, td_driver_t *parent, td_flag_t flags)
{
	(void)drv;
	(void)parent;
	(void)flags;
	return 0;
}

/* ---- checking a table ---------------------------------------------- */

/* Bytes of struct tap_disk that version 1 of the interface defines. */
#define TD_API_V1_SIZE	offsetof(struct tap_disk, td_create) + \
			sizeof(((struct tap_disk *)0)->td_create)

int td_driver_validate(const struct tap_disk *d, char *err, size_t errlen)
{
	const char *name = d->name ? d->name : "(unnamed)";
	const char *missing = NULL;

	if (d->api_version != TD_API_VERSION) {
		snprintf(err, errlen, "driver %s: unsupported api_version %u "
			 "(engine speaks %u)", name, d->api_version,
			 TD_API_VERSION);
		return -EINVAL;
	}
	if (d->struct_size < TD_API_V1_SIZE) {
		snprintf(err, errlen, "driver %s: struct_size %u too small "
			 "(need %zu)", name, d->struct_size,
			 (size_t)TD_API_V1_SIZE);
		return -EINVAL;
	}
	if (!d->name || !d->name[0])
		missing = ".name";
	else if (!d->td_open)
		missing = ".td_open";
	else if (!d->td_close)
		missing = ".td_close";
	else if (!d->td_queue_read)
		missing = ".td_queue_read";
	else if (!d->td_queue_write)
		missing = ".td_queue_write";
	if (missing) {
		snprintf(err, errlen, "driver %s must have a %s callback",
			 name, missing);
		return -EINVAL;
	}
	if ((td_disk_flags(d) & TD_DISK_REMOTE) &&
	    !(td_disk_flags(d) & TD_DISK_NO_FILE)) {
		snprintf(err, errlen, "driver %s: TD_DISK_REMOTE without "
			 "TD_DISK_NO_FILE", name);
		return -EINVAL;
	}
	return 0;
}

/* ---- callbacks, or their defaults ---------------------------------- */

int td_drv_get_parent_id(td_driver_t *drv, td_disk_id_t *id)
{
	id->name = NULL;
	id->drivertype = NULL;
	if (!drv->ops->td_get_parent_id)
		return TD_NO_PARENT;
	return drv->ops->td_get_parent_id(drv, id);
}

int td_drv_validate_parent(td_driver_t *drv, td_driver_t *parent,
			   td_flag_t flags)
{
	if (!drv->ops->td_validate_parent)
		return -EINVAL;
	return drv->ops->td_validate_parent(drv, parent, flags);
}

void td_drv_debug(td_driver_t *drv, FILE *out)
{
	if (drv->ops->td_debug) {
		drv->ops->td_debug(drv, out);
		return;
	}
	fprintf(out, "%s:%s size %llu sectors\n", drv->ops->name, drv->name,
		(unsigned long long)drv->info.size);
}

void td_drv_queue(td_driver_t *drv, td_request_t treq)
{
	const struct tap_disk *ops = drv->ops;

	switch (treq.op) {
	case TD_OP_READ:
		ops->td_queue_read(drv, treq);
		return;
	case TD_OP_WRITE:
		ops->td_queue_write(drv, treq);
		return;
	case TD_OP_FLUSH:
		if (ops->td_queue_flush)
			ops->td_queue_flush(drv, treq);
		else
			td_complete_request(treq, 0);
		return;
	case TD_OP_DISCARD:
		if (ops->td_queue_discard)
			ops->td_queue_discard(drv, treq);
		else
			td_complete_request(treq, -EOPNOTSUPP);
		return;
	}
	td_complete_request(treq, -EINVAL);
}

bool td_disk_can_create(const struct tap_disk *d)
{
	return d->td_create != NULL;
}

int td_drv_create(const struct tap_disk *d, const char *path, uint64_t size,
		  td_flag_t flags)
{
	if (!d->td_create)
		return -ENOTSUP;
	return d->td_create(path, size, flags);
}

/* ---- fields after version 1: read only where struct_size holds them - */

td_flag_t td_disk_flags(const struct tap_disk *d)
{
	return TD_DISK_HAS(d, disk_flags) ? d->disk_flags : 0;
}

bool td_disk_can_create_child(const struct tap_disk *d)
{
	return TD_DISK_HAS(d, td_create_child) && d->td_create_child;
}

int td_drv_create_child(const struct tap_disk *d, const char *path,
			const char *parent, const char *parent_driver,
			char *err, size_t errlen)
{
	if (!td_disk_can_create_child(d)) {
		snprintf(err, errlen, "driver %s cannot make a snapshot child",
			 d->name);
		return -ENOTSUP;
	}
	return d->td_create_child(path, parent, parent_driver, err, errlen);
}

int td_drv_control(td_driver_t *drv, const char *args, char *err,
		   size_t errlen)
{
	const struct tap_disk *d = drv->ops;

	if (!TD_DISK_HAS(d, td_control) || !d->td_control) {
		snprintf(err, errlen, "%s:%s takes no settings", d->name,
			 drv->name);
		return -ENOTSUP;
	}
	return d->td_control(drv, args, err, errlen);
}

int td_drv_probe(const struct tap_disk *d, const char *path, bool *is_mine)
{
	*is_mine = false;
	if (!TD_DISK_HAS(d, td_probe) || !d->td_probe)
		return 0;
	return d->td_probe(path, is_mine);
}

bool td_disk_can_create_remote(const struct tap_disk *d)
{
	return TD_DISK_HAS(d, td_create_remote) && d->td_create_remote;
}

int td_drv_create_remote(const struct tap_disk *d, struct td_engine *e,
			 const char *name, uint64_t size, char *target,
			 size_t targetlen, char *err, size_t errlen)
{
	if (!td_disk_can_create_remote(d)) {
		snprintf(err, errlen, "driver %s cannot create images",
			 d->name);
		return -ENOTSUP;
	}
	return d->td_create_remote(e, name, size, target, targetlen, err,
				   errlen);
}

int td_drv_remove_remote(const struct tap_disk *d, struct td_engine *e,
			 const char *target, char *err, size_t errlen)
{
	if (!TD_DISK_HAS(d, td_remove_remote) || !d->td_remove_remote) {
		snprintf(err, errlen, "driver %s cannot remove images",
			 d->name);
		return -ENOTSUP;
	}
	return d->td_remove_remote(e, target, err, errlen);
}

bool td_disk_can_snapshot_remote(const struct tap_disk *d)
{
	return TD_DISK_HAS(d, td_snapshot_remote) && d->td_snapshot_remote;
}

int td_drv_snapshot_remote(td_driver_t *drv, char *target, size_t targetlen,
			   char *err, size_t errlen)
{
	if (!td_disk_can_snapshot_remote(drv->ops)) {
		snprintf(err, errlen, "driver %s cannot snapshot images in "
			 "place", drv->ops->name);
		return -ENOTSUP;
	}
	return drv->ops->td_snapshot_remote(drv, target, targetlen, err,
					    errlen);
}

int td_drv_unsnapshot_remote(td_driver_t *drv, const char *target,
			     char *err, size_t errlen)
{
	if (!TD_DISK_HAS(drv->ops, td_unsnapshot_remote) ||
	    !drv->ops->td_unsnapshot_remote) {
		snprintf(err, errlen, "driver %s cannot remove snapshots",
			 drv->ops->name);
		return -ENOTSUP;
	}
	return drv->ops->td_unsnapshot_remote(drv, target, err, errlen);
}

void td_drv_describe(td_driver_t *drv, char *buf, size_t len)
{
	if (len)
		buf[0] = '\0';
	if (TD_DISK_HAS(drv->ops, td_describe) && drv->ops->td_describe &&
	    len)
		drv->ops->td_describe(drv, buf, len);
}

/* ---- services on another driver's image ----------------------------- */

const struct tap_disk *td_remote_parent(const char *name, const char **arg)
{
	const char *colon = strchr(name, ':');
	const struct tap_disk *d;
	char word[32];

	if (!colon || colon == name || (size_t)(colon - name) >= sizeof(word))
		return NULL;
	memcpy(word, name, (size_t)(colon - name));
	word[colon - name] = '\0';
	d = td_driver_find(word);
	if (!d || !(td_disk_flags(d) & TD_DISK_REMOTE))
		return NULL;
	*arg = colon + 1;
	return d;
}

int td_probe_driver(const char *path, const char **driver)
{
	const struct tap_disk *const *d;
	bool mine;
	int rc;

	*driver = NULL;
	for (d = td_driver_list(); *d; d++) {
		rc = td_drv_probe(*d, path, &mine);
		if (rc)
			return rc;
		if (mine) {
			*driver = (*d)->name;
			return 0;
		}
	}
	*driver = "aio";
	return 0;
}

int td_image_size(const char *driver, const char *path, uint64_t *size,
		  char *err, size_t errlen)
{
	const struct tap_disk *d = td_driver_find(driver);
	td_driver_t drv = { .flags = TD_OPEN_RDONLY };
	int rc;

	*size = 0;
	if (!d) {
		snprintf(err, errlen, "%s: no driver %s", path, driver);
		return -ENOENT;
	}
	drv.ops = d;
	drv.name = strdup(path);
	drv.data = d->private_data_size ? calloc(1, d->private_data_size) :
		   NULL;
	if (!drv.name || (d->private_data_size && !drv.data)) {
		rc = -ENOMEM;
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	rc = d->td_open(&drv, path, drv.flags);
	if (rc) {
		if (drv.error[0])
			td_msgf(err, errlen, "%s", drv.error);
		else
			snprintf(err, errlen, "%s: cannot open as %s: %s",
				 path, d->name, strerror(-rc));
		goto out;
	}
	*size = (uint64_t)drv.info.size << TD_SECTOR_SHIFT;
	d->td_close(&drv);
out:
	free(drv.data);
	free(drv.name);
	return rc;
}
