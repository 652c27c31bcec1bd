/* SPDX-License-Identifier: MIT */
/*
 * The driver table, and the defaults for optional callbacks (in this one
 * place, so no driver carries stubs).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <tapfs/log.h>
#include <tapfs/tapdisk.h>

extern const struct tap_disk tapdisk_aio;
extern const struct tap_disk tapdisk_sync;
extern const struct tap_disk tapdisk_ram;
extern const struct tap_disk tapdisk_vhd;
extern const struct tap_disk tapdisk_qcow2;
extern const struct tap_disk tapdisk_fault;

/* Every built-in driver, looked up by .name. */
static const struct tap_disk *const td_drivers[] = {
	&tapdisk_aio,
	&tapdisk_sync,
	&tapdisk_ram,
	&tapdisk_vhd,
	&tapdisk_qcow2,
	&tapdisk_fault,
	NULL,
};

/* Other names users may give a driver by. */
static const struct {
	const char *alias;
	const char *name;
} td_driver_aliases[] = {
	{ "raw", "aio" },
};

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
	return 0;
}

int td_drivers_init(void)
{
	char err[256];
	size_t i, j;

	for (i = 0; td_drivers[i]; i++) {
		if (td_driver_validate(td_drivers[i], err, sizeof(err))) {
			td_log(TD_LOG_ERR, "%s", err);
			return -EINVAL;
		}
		for (j = 0; j < i; j++) {
			if (!strcmp(td_drivers[i]->name, td_drivers[j]->name)) {
				td_log(TD_LOG_ERR, "driver name %s registered "
				       "twice", td_drivers[i]->name);
				return -EINVAL;
			}
		}
	}
	return 0;
}

const struct tap_disk *td_driver_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(td_driver_aliases) /
			sizeof(td_driver_aliases[0]); i++)
		if (!strcmp(name, td_driver_aliases[i].alias))
			name = td_driver_aliases[i].name;
	for (i = 0; td_drivers[i]; i++)
		if (!strcmp(name, td_drivers[i]->name))
			return td_drivers[i];
	return NULL;
}

const struct tap_disk *const *td_driver_list(void)
{
	return td_drivers;
}

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

int td_drv_create(const struct tap_disk *d, const char *path, uint64_t size,
		  td_flag_t flags)
{
	if (!d->td_create)
		return -ENOTSUP;
	return d->td_create(path, size, flags);
}
